"""`lstm-diag convert`: any readable model -> PyTorch-named arrays in an .npz or .safetensors file."""

from __future__ import annotations

import click

from .common import debug_option, emit_json, format_option, handle_errors, stderr_console, stdout_console

EPILOG = """\b
Examples:
  lstm-diag convert model.keras --to model.safetensors
  lstm-diag convert model.onnx --to lstm.npz --prefix '' --lstm-only
  lstm-diag convert checkpoint.pt --to weights.npz --prefix rnn.

\b
Then, in PyTorch (the names are nn.LSTM's; gate order i, f, g, o):
  from safetensors.torch import load_file
  model.load_state_dict(load_file("model.safetensors"), strict=True)
where `model` has submodules `lstm` (nn.LSTM(batch_first=True)) and `head`
(nn.Linear), and `embedding` (nn.Embedding) when the file has one.
"""


@click.command("convert", epilog=EPILOG)
@click.argument("source", type=click.Path(dir_okay=False))
@click.option(
    "--to",
    "target",
    required=True,
    type=click.Path(),
    help="Output file: .npz or .safetensors (the extension decides); a folder (out/) gets SOURCE's name "
    "with .npz.",
)
@click.option(
    "--prefix",
    default="lstm.",
    show_default=True,
    help="Prefix of the nn.LSTM's names ('' for an nn.LSTM on its own).",
)
@click.option("--lstm-only", is_flag=True, help="Write only the nn.LSTM's arrays (no head, no embedding).")
@format_option("table", "json")
@debug_option
@handle_errors
def convert_cmd(source, target, prefix, lstm_only, fmt):
    """Write the model in SOURCE as PyTorch nn.LSTM-named arrays, ready for load_state_dict.

    SOURCE is any file lstm-diag reads, recognised by content: Keras (.keras,
    .weights.h5, .h5), ONNX, PyTorch torch.save, .safetensors, .npz. Keras and ONNX
    layouts are converted exactly (transposes, gate blocks reordered to i, f, g, o,
    Keras' single bias as bias_ih with bias_hh = 0; docs/formats.md). The output is
    written atomically (a temporary file, then a rename). The table lists every array
    written and where it came from; the written path goes to stderr.
    """
    from pathlib import Path

    from ..formats.sniff import read_arrays
    from ..setup.outputs import into_folder
    from ..setup.state_dict import state_dict, write_state_dict

    name = f"{Path(source).name.split('.')[0] or 'model'}.npz"  # of --to FOLDER/
    target = into_folder(target, name)
    loaded = read_arrays(source)
    sd = state_dict(loaded, prefix, lstm_only)
    path = write_state_dict(target, sd, loaded)
    if fmt == "json":
        doc = {
            "source": str(loaded.path),
            "format": loaded.format,
            "written": str(path),
            "arrays": {
                k: {"shape": list(v.shape), "dtype": str(v.dtype), "from": sd.origin[k]}
                for k, v in sd.arrays.items()
            },
            "left_out": sd.left_out,
        }
        emit_json(doc, "convert", 1)
    else:
        from ..report.text import table

        t = table(f"{loaded.path.name} ({loaded.format}) -> {path.name}")
        for col in ("array", "shape", "dtype", "from"):
            t.add_column(col, no_wrap=col != "from")
        for k, v in sd.arrays.items():
            t.add_row(k, str(tuple(v.shape)), str(v.dtype), sd.origin[k])
        stdout_console().print(t)
    err = stderr_console()
    if sd.left_out:
        err.print(
            f"left out {len(sd.left_out)} array(s) that are not part of the model (LSTM, head, embedding): "
            + ", ".join(sd.left_out[:8])
            + (" ..." if len(sd.left_out) > 8 else ""),
            markup=False,
        )
    err.print(f"wrote {path}", markup=False)
