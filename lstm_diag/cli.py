"""The `lstm-diag` command line: thin. Parse, call, render, exit code.

Only click is imported here; each command imports its work when it runs, so
`lstm-diag --help` starts fast.
"""

from __future__ import annotations

import click

from . import __version__
from .commands.analyze import analyze_cmd
from .commands.codes import codes_cmd
from .commands.compare import compare_cmd
from .commands.convert import convert_cmd
from .commands.diff import diff_cmd
from .commands.explain import explain_cmd
from .commands.gradcheck import gradcheck_cmd
from .commands.inspect import inspect_cmd
from .commands.plot import plot_cmd
from .commands.report import report_cmd
from .commands.track import track_cmd
from .commands.train import train_cmd


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "--version", prog_name="lstm-diag")
def main() -> None:
    """Gradient-flow diagnostics for LSTMs.

    Loads an LSTM described by a YAML config (CONFIG is optional: a built-in default
    is used without it), runs the forward pass and backpropagation through time in
    exact NumPy, and explains what it sees. Every command takes --set KEY=VALUE to
    override a config field; `lstm-diag COMMAND --help` shows its options.

    \b
    Examples:
      lstm-diag analyze                          # the built-in default model
      lstm-diag analyze configs/vanishing.yaml --format json > out.json
      lstm-diag analyze cfg.yaml --set model.hidden_size=64 --set data.seq_len=500
      lstm-diag analyze cfg.yaml --fail-on LD101 # exit 1 if the gradient vanishes
      lstm-diag plot cfg.yaml -o figs/           # the figures; `report` for one HTML file
      lstm-diag compare cfg.yaml --init pytorch,keras,chrono --seeds 5
      lstm-diag train configs/adding.yaml --clip none,norm:1.0
      lstm-diag track runs/ckpt_*.pt --config cfg.yaml -o figs/   # flow over training
      lstm-diag diff ckpt_100.pt ckpt_900.pt --config cfg.yaml
      lstm-diag explain --toy                    # the equations with real numbers
      lstm-diag convert model.keras --to model.safetensors  # Keras/ONNX -> nn.LSTM names
      lstm-diag inspect model.pt                 # the arrays and the model found in a file

    \b
    Exit codes: 0 ok, 1 a --fail-on finding or a failed check, 2 bad usage or
    input, 3 internal error (a bug: rerun with --debug and report it).
    """


for command in (
    analyze_cmd,
    gradcheck_cmd,
    plot_cmd,
    report_cmd,
    compare_cmd,
    train_cmd,
    track_cmd,
    diff_cmd,
    explain_cmd,
    codes_cmd,
    convert_cmd,
    inspect_cmd,
):
    main.add_command(command)
