"""`lstm-diag inspect FILE`: what a weights file holds and which model lstm-diag finds in it."""

from __future__ import annotations

import click

from .common import debug_option, emit_json, format_option, handle_errors, stdout_console

EPILOG = """\b
Examples:
  lstm-diag inspect model.pt
  lstm-diag inspect checkpoint.pt --weights-key ema
  lstm-diag inspect model.safetensors --format json
"""


@click.command("inspect", epilog=EPILOG)
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--weights-key", help="The checkpoint section holding the state dict (as model.weights_key).")
@click.option("--lstm", help="Which LSTM, by prefix, when the file has several (as model.lstm).")
@click.option("--head", help="Which linear layer is the head (as model.head).")
@click.option("--embedding", help="Which matrix is the embedding (as model.embedding).")
@format_option("table", "json", "markdown")
@debug_option
@handle_errors
def inspect_cmd(file, weights_key, lstm, head, embedding, fmt):
    """Show every array in FILE and the model found in it.

    FILE is recognised by its content, whatever its extension: a PyTorch torch.save
    file (.pt/.pth/.bin: a state dict or a checkpoint dict, read without PyTorch and
    without running any code from it), .safetensors, .npz, Keras or ONNX. Shown: the
    format, every array (name, shape, dtype, role), the nn.LSTM found and its sizes
    (input_size, hidden_size, num_layers, proj_size, bidirectional, bias), the linear
    head, the embedding, what is left unused and why, and scalar metadata such as the
    epoch or step. Nothing but names and shapes is read.

    Use what it prints as `model.weights` (and `model.weights_key`, `model.lstm`,
    `model.head`, `model.embedding` when there is a choice); the sizes need not be
    repeated in the config. Exit 2 when FILE cannot be read.
    """
    from ..features.inspect import inspect_file

    doc = inspect_file(file, weights_key=weights_key, lstm=lstm, head=head, embedding=embedding)
    if fmt == "json":
        from ..features.inspect import SCHEMA_VERSION

        emit_json(doc, "inspect", SCHEMA_VERSION)
    elif fmt == "markdown":
        from ..report.inspect_render import render_markdown

        click.echo(render_markdown(doc), nl=False)
    else:
        from ..report.inspect_render import render_table

        stdout_console().print(render_table(doc))
