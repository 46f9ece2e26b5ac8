"""Shared test settings and fixtures.

- In CI (CI=true) hypothesis draws the same examples every run, so a red build always means a
  change broke something; locally it explores new examples each run.
- `run(*args)` (`from conftest import run`): the CLI in-process (click's CliRunner); the
  result has `.exit_code`, and `.stdout` and `.stderr` apart (`.output` interleaves them).
- `figures_not_drawn`: figures built but not drawn, for tests that never look at them.
- `tiny_config`: a YAML file for a model small enough that a full CLI round (analysis,
  figures at low dpi) costs little; `TINY` holds the same settings as --set overrides.
- With several workers (pytest-xdist, `-n 2` in pyproject's addopts), in a fresh checkout,
  the numba kernels of the fast engine are compiled once, before the workers start, one
  process per dtype in parallel, into numba's on-disk cache (lstm_diag/core/__pycache__):
  every worker and every subprocess a test starts then loads them (~1 s) instead of
  compiling (~8 s a dtype). A third process writes the package's bytecode and hypothesis's
  caches (the constants it reads from local modules, its Unicode table), which each worker
  would otherwise make for itself (tests/warm_up.py).
- What lives after the test files are imported, and after a test that imported a library, is
  frozen out of the garbage collector's full collections (`_freeze_what_lives`).
"""

import gc
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import settings

# One BLAS/OpenMP thread per test process, set before numpy or torch is imported (pytest and
# hypothesis import neither); subprocesses that tests start inherit it. Two workers with two
# threads each on two cores busy-wait on each other: measured on this 2-core machine under
# load, the PyTorch-reference tests took 154 s of CPU with the default threads and 20 s with
# one. No test depends on the count.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

# Python's bytecode cache on, whatever PYTHONDONTWRITEBYTECODE says (some machines set it): the
# test files' compiled, assert-rewritten code and the package's go to __pycache__ folders
# (git-ignored), so the next run, each worker and each CLI process a test starts loads them
# instead of compiling again (~3 s of CPU per worker and run for the tests' assert rewriting).
sys.dont_write_bytecode = False

settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

ROOT = Path(__file__).resolve().parents[1]
KERNELS = ROOT / "lstm_diag" / "core" / "fused_kernels.py"


def _kernels_cached() -> bool:
    """numba's cache holds both dtypes' kernels for the current source (its index files are
    newer than the source, forward_step has an entry per dtype). A wrong guess costs time only:
    a stale or missing entry is compiled where it is used, as without the warm-up."""
    cache = KERNELS.parent / "__pycache__"
    index = list(cache.glob("fused_kernels.*.nbi"))
    source = KERNELS.stat().st_mtime
    return (
        bool(index)
        and all(p.stat().st_mtime >= source for p in index)
        and len(list(cache.glob("fused_kernels.forward_step-*.nbc"))) >= 2
    )


def pytest_configure(config):
    """xdist's controller, before the workers start, in a fresh checkout: fill numba's cache,
    write the package's bytecode and hypothesis's caches once (tests/warm_up.py) instead of
    in every worker."""
    import importlib.util

    workers = getattr(config.option, "numprocesses", None)
    if hasattr(config, "workerinput") or not workers:
        return
    jobs = [] if (ROOT / ".hypothesis" / "constants").is_dir() else ["package"]
    if importlib.util.find_spec("numba") is not None and not _kernels_cached():
        jobs += ["float64", "float32"]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    script = str(ROOT / "tests" / "warm_up.py")
    procs = [subprocess.Popen([sys.executable, script, job], cwd=ROOT, env=env) for job in jobs]
    for p in procs:
        p.wait()


# How the two xdist workers share the files (the order changes when each worker finishes, never
# a result):
# - the files that import PyTorch form one unit of work, so that one worker imports torch
#   (~3 s of CPU each time), not both;
# - the heaviest units start first (seconds of test time on a quiet machine, ninth session), then
#   the rest in collection order: the run ends when the last unit ends, and a long unit
#   started last keeps one worker busy while the other is idle.
TORCH_FILES = frozenset(
    f"test_{n}.py"
    for n in ("discover", "inputs", "keras_onnx", "layouts_vs_torch", "names", "readme_routes", "track")
)
TORCH_UNIT = "tests/(the PyTorch-reference files)"
SECONDS = {
    "test_plots.py": 14, "TORCH": 11, "test_bad_input.py": 7, "test_compare_grid.py": 3,
    "test_compare.py": 3, "test_properties.py": 3, "test_train.py": 2, "test_executor.py": 2,
    "test_explain.py": 2, "test_guard_scaling.py": 2, "test_every_field.py": 2, "test_dynamics.py": 2,
}  # fmt: skip


def _unit_seconds(filename: str) -> int:
    return SECONDS.get("TORCH" if filename in TORCH_FILES else filename, 0)


def pytest_collection_modifyitems(config, items):
    """Heaviest units first (above); a stable sort keeps each file's tests in their order."""
    items.sort(key=lambda item: -_unit_seconds(item.path.name))


def pytest_xdist_make_scheduler(config, log):
    """xdist's per-file scheduling (`--dist loadfile`) with the PyTorch files as one unit and
    the units in the order of the collection (heaviest first, above)."""
    from xdist.scheduler import LoadFileScheduling

    class Scheduling(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = super()._split_scope(nodeid)
            return TORCH_UNIT if Path(path).name in TORCH_FILES else path

    config.option.loadscopereorder = False  # xdist's default orders units by their number of tests
    return Scheduling(config, log)


TINY = ("model.input_size=3", "model.hidden_size=4", "data.seq_len=12", "data.batch_size=2")
TINY_YAML = """\
# tests/conftest.py: a tiny model for CLI round trips
seed: 3
model: {input_size: 3, hidden_size: 4, num_layers: 1}
data: {task: random, batch_size: 2, seq_len: 12}
"""


# For tests of a real process's signals, kills and exit codes, where the engine does not matter:
# the NumPy engine spares each process (and each compare worker) the fast engine's start-up,
# numba's import and the load of its cached kernels, about 0.9 s of CPU on this machine.
NUMPY_ENGINE = ("--set", "engine=numpy")


def _default_ctrl_c() -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(tmp_path, *args) -> subprocess.Popen:
    """`lstm-diag ARGS` as a real process in its own session (signals go to its group), with
    Ctrl-C at its default: a pytest-xdist worker can run with SIGINT ignored, a child inherits
    that, and Python then installs no KeyboardInterrupt handler (Ctrl-C would do nothing)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "lstm_diag", *map(str, args)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path, env=env,
        start_new_session=True, preexec_fn=_default_ctrl_c,
    )  # fmt: skip


def gradient_step(model, loss, lr: float) -> None:
    """One step of plain gradient descent on a PyTorch module, from `loss` (a scalar tensor).
    Tests that train a reference model use this, not torch.optim: its first step imports
    torch._dynamo (~2 s of CPU), which nothing here needs."""
    import torch

    model.zero_grad()
    loss.backward()
    with torch.no_grad():
        for p in model.parameters():
            p -= lr * p.grad


def run(*args, env=None):
    """The CLI, in-process: run("analyze", cfg, "--format", "json").stdout (arguments str()-ed;
    env: environment variables set while it runs)."""
    from click.testing import CliRunner

    from lstm_diag.cli import main

    return CliRunner(env=env).invoke(main, [str(a) for a in args])


@pytest.fixture(scope="session")
def tiny_config(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny") / "tiny.yaml"
    path.write_text(TINY_YAML)
    return path


@pytest.fixture
def figures_not_drawn(monkeypatch):
    """For tests about what a command writes around its figures (page text, file names), not
    about the figures: they are built as always, but `figure_bytes` returns a stub PNG instead
    of drawing them (drawing is most of a figure's cost, about a second each). Every figure kind
    is drawn and checked elsewhere: analyze's and report's in test_plots, compare's in
    test_compare and test_compare_grid, train's in test_train, track's in test_track."""
    from lstm_diag.report.figures import style

    def stub(fig, fmt="png", dpi=style.DPI):
        assert fmt in style.FORMATS and fig.axes, (fmt, fig)
        return b"\x89PNG\r\n\x1a\n not drawn: tests/conftest.py figures_not_drawn"

    monkeypatch.setattr(style, "figure_bytes", stub)


@pytest.fixture(autouse=True)
def _signal_handlers_restored():
    """A command stopped by Ctrl-C in-process ignores further signals while it exits
    (commands/common.py); the test process gets its handlers back after each test."""
    import signal

    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)


_FROZEN_AT_MODULES = [0]  # len(sys.modules) at the last freeze


def _freeze_what_lives() -> None:
    """Python's cyclic garbage collector walks, at each full collection, every object that
    lives: in a worker that has imported numba, matplotlib, hypothesis and torch, about half
    a million, ~0.27 s a collection on a quiet host. Most of them come with the modules:
    what lives once the test files are imported, and again after a test that imported a
    library (torch, keras, onnx...), is collected first (no garbage is kept), then frozen
    (gc.freeze: left out of later collections). Objects the tests make are collected as
    always (a module fixture alive at a freeze is freed when released, unless it sits in a
    reference cycle: then it stays until the worker ends). The workers' time in the
    collector went from 8.0-9.0 s to 3.6-4.8 s of CPU a run (alternating runs, same phases
    of the host)."""
    gc.collect()
    gc.freeze()
    _FROZEN_AT_MODULES[0] = len(sys.modules)


@pytest.hookimpl(trylast=True)
def pytest_collection_finish(session):
    _freeze_what_lives()


def pytest_runtest_logfinish(nodeid, location):
    """After a test and its teardown: freeze again if it imported a library (torch...)."""
    if len(sys.modules) > _FROZEN_AT_MODULES[0] + 50:
        _freeze_what_lives()


@pytest.hookimpl(tryfirst=True)
def pytest_unconfigure(config):
    """An xdist worker ends here, without the interpreter's shutdown: by now it has sent its
    last report and `workerfinished` to the controller (pytest_sessionfinish), and what is
    left is tearing down a heap that holds torch, numba and matplotlib, and pytest's
    end-of-run garbage collections. The controller waits for the worker processes to end;
    that wait was ~3 s of every run's time, measured, and is now ~0.5 s. Nothing is written
    after this point (bytecode, numba's cache and hypothesis's database are written as they
    are made)."""
    if hasattr(config, "workerinput"):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
