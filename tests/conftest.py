"""Shared test settings and fixtures.

- In CI (CI=true) hypothesis draws the same examples every run, so a red build always means a
  change broke something; locally it explores new examples each run.
- `run(*args)` (`from conftest import run`): the CLI in-process (click's CliRunner); the
  result has `.exit_code`, and `.stdout` and `.stderr` apart (`.output` interleaves them).
- `tiny_config`: a YAML file for a model small enough that a full CLI round (analysis,
  figures at low dpi) costs little; `TINY` holds the same settings as --set overrides.
"""

import os

import pytest
from hypothesis import settings

settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

TINY = ("model.input_size=3", "model.hidden_size=4", "data.seq_len=12", "data.batch_size=2")
TINY_YAML = """\
# tests/conftest.py: a tiny model for CLI round trips
seed: 3
model: {input_size: 3, hidden_size: 4, num_layers: 1}
data: {task: random, batch_size: 2, seq_len: 12}
"""


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


@pytest.fixture(autouse=True)
def _signal_handlers_restored():
    """A command stopped by Ctrl-C in-process ignores further signals while it exits
    (commands/common.py); the test process gets its handlers back after each test."""
    import signal

    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)
