"""What the commands compute: analysis (+ trace), compare, train, gradcheck, explain,
and the findings with their stable codes. Plain results; rendering is in report/."""
