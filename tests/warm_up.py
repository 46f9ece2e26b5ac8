"""What every test worker would otherwise do for itself in a fresh checkout, done once before
the workers start (tests/conftest.py, pytest_configure runs it):

    python tests/warm_up.py float64|float32   numba's on-disk cache: the fast engine's kernels
                                              of that dtype and the kernels' own exp, tanh and
                                              log that test_fused checks (~8 s a dtype)
    python tests/warm_up.py package           bytecode of every module of the package and of
                                              the test files (assert-rewritten, as pytest
                                              imports them), matplotlib's font list on a new
                                              machine, and hypothesis's caches: the
                                              constants it reads from local modules and its
                                              Unicode table (.hypothesis)

Nothing here changes a result: a missing or stale cache entry is made where it is needed, as
without the warm-up.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the package, installed or not


def kernels(dtype: str) -> None:
    import numpy as np

    from lstm_diag.core.backends import select
    from lstm_diag.core.fused_kernels import elementwise

    select("fast", dtype)
    for name in ("exp", "tanh", "log") if dtype == "float64" else ("exp", "tanh"):
        elementwise(name, np.ones(1, dtype))


def package() -> None:
    import importlib
    import pkgutil

    from hypothesis import find, settings
    from hypothesis import strategies as st

    import lstm_diag

    skip = {"lstm_diag.__main__", "lstm_diag.capture"}  # runs the CLI; imports torch (~3 s)
    for info in pkgutil.walk_packages(lstm_diag.__path__, "lstm_diag."):
        if info.name not in skip:
            try:
                importlib.import_module(info.name)
            except ImportError:  # an optional library (numba: the fast engine) is not installed
                pass
    _test_bytecode()
    try:  # matplotlib's font list (its config folder): made at its first import on a new machine
        import matplotlib.font_manager  # noqa: F401
    except ImportError:
        pass
    # The first draw reads the constants of every local module imported so far and keeps them
    # in .hypothesis/constants, keyed by the module's source (hypothesis 6.170 does; an older
    # one skips it); the first text draw builds its table of Unicode categories
    # (.hypothesis/unicode_data).
    find(st.text(), lambda _: True, settings=settings(database=None))


def _test_bytecode() -> None:
    """The test files' bytecode, assert-rewritten by pytest (tests/__pycache__): what each
    worker would make for itself when it collects them (~3 s of CPU a worker for ~11,000
    lines). Collected here with pytest's own import hook, printing nothing; a file that does
    not import is reported by the workers, as without the warm-up."""
    import contextlib
    import os

    import pytest

    tests = Path(__file__).resolve().parent
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
        pytest.main(["--collect-only", "-q", "-n", "0", "-p", "no:cacheprovider", str(tests)])


if __name__ == "__main__":
    if sys.argv[1] == "package":
        package()
    else:
        kernels(sys.argv[1])
