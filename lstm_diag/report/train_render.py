"""What `lstm-diag train` shows and streams: the summary tables (rich) and the metrics files.

The table renderer reads the document of `TrainResult.to_dict()`; nothing is computed here
beyond layout. `MetricsWriter` appends one line per logged record to a .jsonl or .csv file
and flushes it, so a killed run keeps every line written so far.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

from rich import box
from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from .describe import init_text, model_line
from .inert import plain
from .inputs_text import what_if_line
from .text import fmt, table

KIND_STYLE = {
    "diverged": "bold red",
    "unstable": "bold red",
    "spiky": "yellow",
    "steady": "green",
    "cap": "yellow",
    "frequent": "cyan",
    "spikes": "green",
    "idle": "dim",
}
SEVERITY_STYLE = {"error": "bold red", "warning": "yellow", "info": "cyan"}

# ------------------------------------------------------------------------ metrics files

BASE_FIELDS = (
    "step",
    "setting",
    "status",
    "code",
    "loss",
    "grad_norm",
    "clipped_norm",
    "clip_coef",
    "clipped",
    "clipped_fraction",
    "cosine",
)
LAYER_FIELDS = ("horizon", "decay_rate", "forget_mean", "saturation")
METRICS_SUFFIXES = (".jsonl", ".csv")


def metrics_fields(num_layers: int, snapshots: bool = False) -> list[str]:
    """The columns of a metrics file, in order (the CSV header). With snapshots
    (--snapshot-every), a first column `record` ("snapshot" on a snapshot's row, empty on a
    step's) and the snapshot's columns that a step's row does not have."""
    per_layer = [f"{name}_l{k}" for k in range(num_layers) for name in LAYER_FIELDS]
    fields = [*BASE_FIELDS, *per_layer, "time"]
    if not snapshots:
        return fields
    from ..features.trajectory import SNAPSHOT_LAYER_FIELDS

    snap = ["verdict"] + [f"{q}_l{k}" for k in range(num_layers) for q in SNAPSHOT_LAYER_FIELDS]
    return ["record", *fields, *(f for f in snap if f not in fields)]


def _json_value(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None  # RFC 8259 has no NaN/Infinity
    return v


class MetricsWriter:
    """Streams metrics records to FILE.jsonl (one JSON object a line) or FILE.csv (header first).

    Lines go to a temporary file beside FILE (setup/outputs.StreamingOutput), each step's
    lines flushed: `commit()` renames it over FILE when the run ends (also after a clean
    Ctrl-C stop); `abandon()` keeps the partial file beside FILE and returns its path
    (an abort: second Ctrl-C, SIGTERM); `discard()` removes it (an error). A previous FILE
    is never truncated before the new one is complete.
    """

    def __init__(self, path: str | Path, num_layers: int, snapshots: bool = False):
        from ..errors import ConfigError
        from ..setup.outputs import StreamingOutput

        self.path = Path(path)
        self.kind = self.path.suffix.lower()
        if self.kind not in METRICS_SUFFIXES:
            raise ConfigError(
                f"{self.path}: a metrics file must end in .jsonl (one JSON object a line) or .csv"
            )
        self.fields = metrics_fields(num_layers, snapshots)
        self.out = StreamingOutput(self.path)
        self.lines = 0
        if self.kind == ".csv":
            self.buf = io.StringIO()
            self.csv = csv.DictWriter(self.buf, self.fields, restval="", extrasaction="ignore")
            self.csv.writeheader()
            self._flush()

    def _flush(self) -> None:
        self.out.write(self.buf.getvalue())
        self.buf.seek(0)
        self.buf.truncate()

    def write(self, records: list[dict]) -> None:
        if self.kind == ".jsonl":
            lines = (json.dumps({k: _json_value(v) for k, v in r.items()}, allow_nan=False) for r in records)
            self.out.write("".join(line + "\n" for line in lines))
        else:
            for rec in records:
                self.csv.writerow({k: "" if v is None else v for k, v in rec.items()})
            self._flush()
        self.lines += len(records)

    def commit(self) -> Path:
        return self.out.commit()

    def abandon(self) -> Path | None:
        return self.out.abandon()

    def discard(self) -> None:
        self.out.discard()

    def __enter__(self):
        return self

    def __exit__(self, kind, value, tb):
        if kind is None:
            self.commit()
        elif issubclass(kind, KeyboardInterrupt):
            self.abandon()
        else:
            self.discard()


# --------------------------------------------------------------------------------- text


def describe(doc: dict) -> list[str]:
    c = doc["config"]
    m, d, lo, t = c["model"], c["data"], c["loss"], c["train"]
    data = d["task"] + (
        f" {plain(d['path'])} (epochs, shuffled)" if d["task"] == "file" else " (new batch each step)"
    )
    opt = t["optimizer"]
    if opt == "momentum":
        opt += f" {t['momentum']:g}"
    elif opt == "adam":
        opt += f" betas {t['betas'][0]:g}, {t['betas'][1]:g}"
    if t["weight_decay"]:
        opt += f", weight decay {t['weight_decay']:g}"
    steps = f"{doc['steps_run']} of {doc['steps']} steps"
    if doc["interrupted"]:
        steps += " (interrupted)"
    n = len(doc["settings"])
    return [
        f"model  {model_line(m)}; init {plain(init_text(m))}; {c['dtype']}",
        *([f"what-if {w.removeprefix('what-if: ')}"] if (w := what_if_line(doc)) else []),
        f"data   {data}; batch {d['batch_size']}, {d['seq_len']} steps; seed {c['seed']}",
        f"loss   {lo['type']} on target '{lo['target']}'",
        f"train  {opt}, lr {t['lr']:g}; {steps}; {n} setting(s), same init and batches",
    ]


def summary_table(doc: dict):
    t = table("Per clip setting (norms: pre-clip global L2 norm of the gradient)")
    t.add_column("setting", no_wrap=True)
    t.add_column("loss¹", justify="right")
    t.add_column("best", justify="right")
    t.add_column("clipped", justify="right")
    t.add_column("median‖g‖", justify="right")
    t.add_column("max‖g‖", justify="right")
    t.add_column("diverged", justify="right")
    t.add_column("time", justify="right")
    for s in doc["summary"]:
        div = s["diverged"]
        t.add_row(
            f"[bold]{s['setting']}[/]",
            fmt(s["final_loss_mean"]),
            fmt(s["best_loss"]),
            f"{s['clipped_percent']:.0f}%" if s["mode"] != "none" else "—",
            fmt(s["grad_norm_median"]),
            fmt(s["grad_norm_max"]),
            Text(f"step {div['step']}", style="bold red") if div else Text("no"),
            f"{s['wall_time']:.1f}s",
        )
    return t


def _grid(title: str | None = None) -> Table:
    t = Table.grid(padding=(0, 2))
    t.title, t.title_justify, t.title_style = title, "left", "bold"
    t.add_column(no_wrap=True)
    t.add_column()
    return t


def verdict_lines(doc: dict) -> Table:
    t = _grid("What clipping did")
    for s in doc["summary"]:
        t.add_row(Text(s["setting"], style=KIND_STYLE.get(s["verdict_kind"], "") or "bold"), s["verdict"])
    return t


def suggestion_lines(doc: dict) -> Table | Text:
    sug = doc["suggested_max_norm"]
    if sug is None:
        return Text("Suggested max_norm: add 'none' to --clip to measure the unclipped norms.", style="dim")
    t = _grid()
    if sug["max_norm"] is None:
        t.add_row(Text("Suggested max_norm", style="bold"), Text("none", style="yellow"))
        t.add_row(Text("why", style="yellow"), Text(sug["caveat"] + ".", style="yellow"))
    else:
        value = Text(fmt(sug["max_norm"]), style="bold cyan")
        value.append(
            f"  (would clip {sug['would_clip_percent']:.0f}% of the unclipped run's steps)", style=""
        )
        t.add_row(Text("Suggested max_norm", style="bold"), value)
        lo, hi = sug["pascanu_range"]
        t.add_row(
            "from",
            f"{sug['steps']} unclipped steps: median norm {fmt(sug['median_norm'])}, "
            f"average {fmt(sug['mean_norm'])}; Pascanu's range {fmt(lo)}-{fmt(hi)}",
        )
    t.add_row("rule", Text(sug["rule"] + ".", style="dim"))
    return t


def findings_lines(doc: dict) -> Table:
    t = _grid("Findings (codes: lstm-diag codes, docs/codes.md)")
    for f in doc["findings"]:
        if f["severity"] != "info":  # LD301 says what the 'clipped' column already shows
            t.add_row(
                Text(f["code"], style=SEVERITY_STYLE[f["severity"]]),
                Text(f["message"]).append(f"\n→ {f['remedy']}", style="dim"),
            )
    return t


def render(doc: dict, console: Console) -> None:
    console.print(
        Panel(
            Group(*(Text(x) for x in describe(doc))),
            title="lstm-diag train",
            title_align="left",
            box=box.ROUNDED,
        )
    )
    console.print(summary_table(doc))
    console.print(
        Text(
            "¹ mean batch loss over the last 10% of steps; best = lowest batch loss; "
            "clipped = steps on which clipping changed the gradient",
            style="dim",
        )
    )
    console.print()
    console.print(verdict_lines(doc))
    console.print()
    console.print(suggestion_lines(doc))
    if any(f["severity"] != "info" for f in doc["findings"]):
        console.print()
        console.print(findings_lines(doc))
