"""Where the engine's time goes: a workload for a sampling profiler, and a summary of its output.

    .venv/bin/py-spy record -r 1000 -f raw -o /tmp/M64.txt -- \\
        .venv/bin/python benchmarks/profile_engine.py run M float64 --repeats 10
    .venv/bin/python benchmarks/profile_engine.py summarize /tmp/M64.txt

`run` times `engine.run` on one benchmark shape (healthy regime, see run.py) and prints
the median. `summarize` reads py-spy's raw (collapsed-stack) output, charges every sample
to the innermost line of lstm_diag/core/engine.py on its stack, and prints the share of each
line with its source text, plus the share of the lines that call BLAS (`np.matmul` or
`@`). Time inside a BLAS call is charged to the line that made it.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

from lstm_diag.core import engine

FRAME = re.compile(r"\((?P<file>[^()]*engine\.py):(?P<line>\d+)\)$")


def run(shape: str, dtype: str, repeats: int, regime: str) -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from run import make_problem  # the sibling script

    p = make_problem(shape, dtype, regime)
    engine.run(p.params, p.spec, p.x, p.y)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        engine.run(p.params, p.spec, p.x, p.y)
        times.append(time.perf_counter() - t0)
    print(f"{shape} {dtype} {regime}: median {1e3 * statistics.median(times):.1f} ms over {repeats} runs")


def summarize(path: Path, top: int) -> None:
    src = Path(engine.__file__).read_text().splitlines()
    per_line: Counter[int] = Counter()
    total = outside = 0
    for raw in path.read_text().splitlines():
        stack, _, count = raw.rpartition(" ")
        n = int(count)
        total += n
        lines = [m for f in stack.split(";") if (m := FRAME.search(f))]
        if lines:
            per_line[int(lines[-1]["line"])] += n
        else:
            outside += n
    inside = total - outside
    print(f"{total} samples, {100 * inside / total:.1f}% inside lstm_diag/core/engine.py")
    blas = sum(n for ln, n in per_line.items() if "matmul" in src[ln - 1] or " @ " in src[ln - 1])
    print(f"lines calling BLAS: {100 * blas / inside:.1f}% of the engine's samples\n")
    print(" share  line  source")
    for ln, n in per_line.most_common(top):
        print(f"{100 * n / inside:5.1f}%  {ln:4d}  {src[ln - 1].strip()[:90]}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="time engine.run on one benchmark shape")
    r.add_argument("shape", choices=("S", "M", "L", "XL"))
    r.add_argument("dtype", choices=("float32", "float64"))
    r.add_argument("--repeats", type=int, default=10)
    r.add_argument("--regime", default="healthy", choices=("healthy", "vanishing"))
    s = sub.add_parser("summarize", help="per-line shares from py-spy's raw output")
    s.add_argument("path", type=Path)
    s.add_argument("--top", type=int, default=20)
    args = ap.parse_args(argv)
    if args.cmd == "run":
        run(args.shape, args.dtype, args.repeats, args.regime)
    else:
        summarize(args.path, args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
