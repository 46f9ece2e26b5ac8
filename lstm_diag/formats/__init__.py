"""File readers at the border: bytes on disk -> named NumPy arrays.

They depend on numpy and lstm_diag.errors only (optional libraries imported lazily)
and raise `InputError` naming the file."""
