"""Rich tables and markdown for a compare document (`compare.compare()`, docs/compare.md).

Everything shown is read from the document; nothing is computed here beyond layout.
Each number is a median over seeds with its interquartile range [q1, q3] below it
(markdown: beside it). Tables fit 80 columns: the measurements are split over several
narrow tables rather than one wide one.
"""

from __future__ import annotations

import math

from rich import box
from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from ..core.diagnostics import GATE_SYMBOL
from .describe import model_line
from .inert import markdown
from .sweep import grid_values, heatmap_layout, panel_cells, short_names, value_text
from .text import table

VERDICT_STYLE = {"healthy": "green", "vanishing": "yellow", "exploding": "red"}
SCHEME_WIDTH = 20  # longer option lines fold


# ----------------------------------------------------------------------- helpers


def compact(v: float | None, digits: int = 3) -> str:
    """A number in little room: 0.0123, 28.5, 200, 3.9e-5 (no zero-padded exponent)."""
    if v is None:
        return "—"
    if v != v or v in (float("inf"), float("-inf")):
        return str(v)
    if v == 0:
        return "0"
    a = abs(v)
    if 1e-3 <= a < 1e5:
        d = max(digits, len(str(int(a))))  # never 2e+02 for 200
        return f"{v:.{d}g}"
    mant, exp = f"{v:.{max(digits - 2, 0)}e}".split("e")
    return f"{mant}e{int(exp)}"


def median_text(q: dict, digits: int = 3) -> str:
    return compact(q["median"], digits)


def iqr_text(q: dict, digits: int = 2) -> str:
    return f"[{compact(q['q1'], digits)}, {compact(q['q3'], digits)}]"


def cell(q: dict, digits: int = 3, style: str = "") -> Text:
    """Median on the first line, the IQR dimmed below it."""
    t = Text(median_text(q, digits), style=style)
    t.append("\n")
    t.append(iqr_text(q, digits), style="dim")
    return t


def one_line(q: dict, digits: int = 3) -> str:
    return f"{median_text(q, digits)} {iqr_text(q, digits)}"


def scheme_cell(a: dict, rank: int | None = None) -> Text:
    """The cell's scheme, its options and its grid values (if any), one per line."""
    name, _, opts = a["scheme"].partition(":")
    t = Text(f"{rank}. " if rank is not None else "", style="dim")
    t.append(name, style="bold")
    pad = " " * (len(f"{rank}. ") if rank is not None else 0)
    for opt in opts.split(":") if opts else []:  # one option per line keeps the column narrow
        t.append("\n" + pad + opt)
    for value in grid_values(a):
        t.append("\n" + pad + value, style="cyan")
    return t


def verdict_text(counts: dict) -> Text:
    t = Text()
    parts = [(v, n) for v, n in counts.items() if n]
    for j, (v, n) in enumerate(parts):
        if j:
            t.append("\n")
        t.append(f"{n} {v}", style=VERDICT_STYLE[v])
    return t


def verdict_words(counts: dict) -> str:
    return ", ".join(f"{n} {v}" for v, n in counts.items() if n)


def ranked(doc: dict, T: int, limit: int | None = None) -> list[dict]:
    """The aggregates (cells) at sequence length T, in rank order; the first `limit`."""
    aggs = sorted((a for a in doc["aggregates"] if a["seq_len"] == T), key=lambda a: a["rank"])
    return aggs[:limit]


MAX_ROWS = 12  # cells per terminal table; markdown and JSON have every cell


def _grid_axes(doc: dict) -> list[dict]:
    """The grid's axes but the sequence length (which the tables show by T)."""
    return [ax for ax in doc["axes"] if ax["field"] != "data.seq_len"]


def _more(doc: dict, T: int) -> Text | None:
    n = sum(a["seq_len"] == T for a in doc["aggregates"])
    if n <= MAX_ROWS:
        return None
    return Text(
        f"… and {n - MAX_ROWS} more cells at T = {T}: --format markdown or json lists every cell.",
        style="dim",
    )


def _n_layers(doc: dict) -> int:
    """The most layers of any cell (a grid may sweep model.num_layers)."""
    return max(len(a["layers"]) for a in doc["aggregates"])


def _having(aggs: list[dict], k: int) -> list[dict]:
    """The cells that have a layer k."""
    return [a for a in aggs if k < len(a["layers"])]


def describe(doc: dict) -> list[str]:
    c, s = doc["config"], doc["settings"]
    m, d, lo = c["model"], c["data"], c["loss"]
    seeds = doc["seed_values"]
    seed_txt = f"{seeds[0]}" if len(seeds) == 1 else f"{seeds[0]}..{seeds[-1]}"
    lens = doc["seq_lens"]
    T_txt = ", ".join(str(T) for T in lens)
    grid = _grid_axes(doc)
    points = math.prod(len(ax["values"]) for ax in doc["axes"])
    shape = f"{len(s['init'])} schemes × {len(seeds)} seeds ({seed_txt})" + (
        f" × {len(lens)} lengths" if len(lens) > 1 else ""
    )
    if grid:
        shape = f"{len(s['init'])} schemes × {points} grid points × {len(seeds)} seeds ({seed_txt})"
    lines = [
        f"model  {model_line(m)}; {c['dtype']}",
        f"data   {d['task']}; batch {d['batch_size']}, T = {T_txt} step(s); "
        f"loss {lo['type']} on '{lo['target']}'",
        f"runs   {shape} = {len(doc['runs'])} runs",
        "       every scheme sees the same data batch for a given seed",
    ]
    for ax in doc["axes"] if grid else []:
        lines.insert(-1, f"grid   {ax['field']} = {', '.join(value_text(v) for v in ax['values'])}")
    if s["train_steps"]:
        t = c["train"]
        lines.append(
            f"train  {s['train_steps']} steps of {t['optimizer']} (lr {t['lr']:g}), "
            f"clipping {c['clipping']['mode']}"
        )
    return [_swept(line, grid) for line in lines]


def _swept(line: str, grid: list[dict]) -> str:
    """A model/data/train line of the base config, marked when the grid sweeps its section."""
    section = {"model": ("model.", "dtype"), "data": ("data.", "loss."), "train": ("train.", "clipping.")}
    head = line[:5].strip()
    fields = [ax["field"] for ax in grid if head in section and ax["field"].startswith(section[head])]
    return line + (f" (base; the grid sets {', '.join(fields)})" if fields else "")


def _horizon_note(doc: dict, T: int) -> str:
    r = doc["vanishing_ratio"]
    return (
        f"horizon: steps back from the loss before ‖dL/dc_t‖ < {r:g} × its value at t = T; "
        f"{T} = reaches t = 1. decay: per step back (> 0 fades). Network = bottleneck layer "
        "(shortest horizon). Ranked by median horizon, ties by decay."
    )


# -------------------------------------------------------------------------- tables


def flow_table(doc: dict, T: int) -> Table:
    n = len(doc["seed_values"])
    what = "cell (scheme, grid values)" if _grid_axes(doc) else "scheme"
    t = table(f"Gradient flow at T = {T}, ranked (median [IQR] over {n} seeds)", show_lines=True)
    t.add_column(what, max_width=SCHEME_WIDTH, overflow="fold")
    t.add_column("horizon", justify="right", no_wrap=True)
    t.add_column("decay/step", justify="right", no_wrap=True)
    t.add_column("log10 ratio\n‖dc_1‖/‖dc_T‖", justify="right", no_wrap=True)
    t.add_column("verdicts", no_wrap=True)
    for a in ranked(doc, T, MAX_ROWS):
        h = a["horizon"]
        style = "green" if h["median"] >= T else ""
        t.add_row(
            scheme_cell(a, a["rank"]),
            cell(h, 3, style),
            cell(a["decay_rate"], 2),
            cell(a["log10_ratio_first_last"], 2),
            verdict_text(a["verdicts"]),
        )
    return t


def init_table(doc: dict, T: int, k: int) -> Table:
    L = _n_layers(doc)
    where = f", layer {k}" if L > 1 else ""
    t = table(f"Loss and forget gate at init{where}", show_lines=True)
    t.add_column("scheme", max_width=SCHEME_WIDTH, overflow="fold")
    t.add_column("loss", justify="right", no_wrap=True)
    t.add_column("forget mean f̄", justify="right", no_wrap=True)
    t.add_column("τ = 1/(1−f) steps", justify="right", no_wrap=True)
    for a in _having(ranked(doc, T, MAX_ROWS), k):
        lay = a["layers"][k]
        t.add_row(
            scheme_cell(a),
            cell(a["loss"]),
            cell(lay["forget_mean"]),
            cell(lay["forget_time_constant"]),
        )
    return t


def saturation_table(doc: dict, T: int, k: int) -> Table:
    L = _n_layers(doc)
    where = f", layer {k}" if L > 1 else ""
    eps = doc["config"]["diagnostics"]["saturation_threshold"]
    t = table(f"Gate saturation (share of entries < {eps:g} or > {1 - eps:g}){where}", show_lines=True)
    t.add_column("scheme", max_width=SCHEME_WIDTH, overflow="fold")
    for g, s in GATE_SYMBOL.items():
        t.add_column(f"{s} ({g})", justify="right", no_wrap=True)
    for a in _having(ranked(doc, T, MAX_ROWS), k):
        sat = a["layers"][k]["saturation"]
        t.add_row(scheme_cell(a), *(cell(sat[g], 2) for g in GATE_SYMBOL))
    return t


def sigma_table(doc: dict, T: int, k: int) -> Table:
    L = _n_layers(doc)
    where = f", layer {k}" if L > 1 else ""
    t = table(f"Largest singular value σ_max of each recurrent block U = W_hh[gate]{where}", show_lines=True)
    t.add_column("scheme", max_width=SCHEME_WIDTH, overflow="fold")
    for s in GATE_SYMBOL.values():
        t.add_column(f"U_{s}", justify="right", no_wrap=True)
    for a in _having(ranked(doc, T, MAX_ROWS), k):
        sig = a["layers"][k]["sigma_max"]
        t.add_row(scheme_cell(a), *(cell(sig[g], 2) for g in GATE_SYMBOL))
    return t


def lyapunov_table(doc: dict, T: int, k: int) -> Table | None:
    aggs = _having(ranked(doc, T, MAX_ROWS), k)
    if not all(a["layers"][k]["lyapunov"] for a in aggs):
        return None
    where = f", layer {k}" if _n_layers(doc) > 1 else ""
    t = table(f"State dynamics at init{where}: Lyapunov exponents (natural log per step)", show_lines=True)
    t.add_column("scheme", max_width=SCHEME_WIDTH, overflow="fold")
    t.add_column("λ₁", justify="right", no_wrap=True)
    t.add_column("λ₂", justify="right", no_wrap=True)
    t.add_column("e^λ₁ per step", justify="right", no_wrap=True)
    for a in aggs:
        lay = a["layers"][k]
        spec = lay["lyapunov"]
        lam2 = cell(spec[1], 2) if len(spec) > 1 else Text("—")
        factor = (
            math.exp(lay["lyapunov_max"]["median"])
            if math.isfinite(lay["lyapunov_max"]["median"])
            else math.nan
        )
        t.add_row(scheme_cell(a), cell(lay["lyapunov_max"], 2), lam2, Text(compact(factor)))
    return t


def layer_horizon_table(doc: dict, T: int) -> Table:
    t = table(f"Horizon per layer at T = {T} (network: the shortest)", show_lines=True)
    t.add_column("scheme", max_width=SCHEME_WIDTH, overflow="fold")
    for k in range(_n_layers(doc)):
        t.add_column(f"layer {k}", justify="right", no_wrap=True)
    t.add_column("bottleneck", justify="right", no_wrap=True)
    for a in ranked(doc, T, MAX_ROWS):
        counts = a["bottleneck_layers"]
        most = max(range(len(counts)), key=lambda j: counts[j])
        t.add_row(
            scheme_cell(a),
            *(cell(lay["horizon"]) for lay in a["layers"]),
            *("—" for _ in range(_n_layers(doc) - len(a["layers"]))),
            f"layer {most}\n({counts[most]}/{a['runs']} seeds)",
        )
    return t


def sweep_table(doc: dict) -> Table:
    lens = doc["seq_lens"]
    T_last = doc["detail_seq_len"]
    t = table("Horizon against T (median [IQR]; = T: reaches t = 1)", show_lines=True)
    t.add_column("scheme", max_width=SCHEME_WIDTH, overflow="fold")
    for T in lens:
        t.add_column(f"T = {T}", justify="right", no_wrap=True)
    by = {(a["label"], a["seq_len"]): a for a in doc["aggregates"]}
    for a in ranked(doc, T_last, MAX_ROWS):
        cells = []
        for T in lens:
            h = by[(a["label"], T)]["horizon"] if (a["label"], T) in by else None
            cells.append(cell(h, 3, "green" if h["median"] >= T else "") if h else Text("—"))
        t.add_row(scheme_cell(a), *cells)
    return t


def train_table(doc: dict, T: int) -> Table:
    K = doc["settings"]["train_steps"]
    t = table(f"After {K} training steps (loss on the init batch)", show_lines=True)
    t.add_column("scheme", max_width=SCHEME_WIDTH, overflow="fold")
    t.add_column("loss\nat init", justify="right", no_wrap=True)
    t.add_column(f"loss\nafter {K}", justify="right", no_wrap=True)
    t.add_column("horizon\nat init", justify="right", no_wrap=True)
    t.add_column(f"horizon\nafter {K}", justify="right", no_wrap=True)
    for a in ranked(doc, T, MAX_ROWS):
        af = a["after_training"]
        t.add_row(
            scheme_cell(a),
            cell(a["loss"], 2),
            cell(af["loss"], 2),
            cell(a["horizon"]),
            cell(af["horizon"]),
        )
    return t


def diverged_note(doc: dict, T: int) -> Text:
    runs = [
        r
        for r in doc["runs"]
        if r["seq_len"] == T and r["after_training"] and r["after_training"]["diverged"]
    ]
    if not runs:
        return Text("No run diverged in training.", style="dim")
    t = Text("Diverged in training: ", style="bold red")
    t.append(
        "; ".join(
            f"{_run_name(doc, r)} seed {r['seed']} at step {r['after_training']['diverged']['step']} "
            f"({r['after_training']['diverged']['code']})"
            for r in runs
        )
    )
    return t


def _run_name(doc: dict, r: dict) -> str:
    return next(a["label"] for a in doc["aggregates"] if a["cell"] == r["cell"])


def reproduce_command(doc: dict, invocation: str = "CONFIG") -> str:
    """The one `analyze` command that rebuilds the best cell's representative run:
    `invocation` (the config and the user's --set options, as compare was called), then the
    run's own --set overrides (each quoted for a POSIX shell when it needs it)."""
    import shlex

    sets = [f"--set {shlex.quote(x)}" for x in doc["best"]["reproduce"]]
    return " ".join(["lstm-diag analyze", *([invocation] if invocation else []), *sets])


def best_line(doc: dict, invocation: str = "CONFIG") -> Text:
    b = doc["best"]
    a = next(a for a in doc["aggregates"] if a["cell"] == b["cell"])
    return Text.assemble(
        ("best at T = ", "bold"),
        (f"{b['seq_len']}: ", "bold"),
        (b["label"], "bold green"),
        f" (median horizon {compact(a['horizon']['median'], 4)} steps over {a['runs']} seeds). "
        f"Its seed {b['seed']} (horizon {b['horizon']}) in detail:\n",
        (reproduce_command(doc, invocation), "cyan"),
    )


def render(doc: dict, console: Console, invocation: str = "CONFIG") -> None:
    T = doc["detail_seq_len"]
    console.print(
        Panel(
            Group(*(Text(x) for x in describe(doc))),
            title="lstm-diag compare",
            title_align="left",
            box=box.ROUNDED,
        )
    )
    console.print(flow_table(doc, T))
    more = _more(doc, T)
    if more is not None:
        console.print(more)
    console.print(Text(_horizon_note(doc, T), style="dim"))
    console.print()
    if _n_layers(doc) > 1:
        console.print(layer_horizon_table(doc, T))
    if len(doc["seq_lens"]) > 1:
        console.print(sweep_table(doc))
        console.print(Text(f"Detail tables are at the longest T = {T}; the JSON has every T.", style="dim"))
        console.print()
    for k in range(_n_layers(doc)):
        console.print(init_table(doc, T, k))
        console.print(saturation_table(doc, T, k))
        console.print(sigma_table(doc, T, k))
        lyap = lyapunov_table(doc, T, k)
        if lyap is not None:
            console.print(lyap)
    if doc["settings"]["train_steps"]:
        console.print(train_table(doc, T))
        console.print(diverged_note(doc, T))
        console.print()
    console.print(best_line(doc, invocation))


# ------------------------------------------------------------------------ markdown


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _md_head(doc: dict) -> str:
    return "cell" if _grid_axes(doc) else "scheme"


def _md_name(a: dict) -> str:
    """A cell's label for a markdown table: in backticks, unless it holds a backtick or a bar."""
    return markdown(a["label"]) if "`" in a["label"] or "|" in a["label"] else f"`{a['label']}`"


def _md_ranked(doc: dict, T: int) -> list[str]:
    """The ranked table of every cell at T: one column per grid axis."""
    grid = _grid_axes(doc)
    short = short_names([ax["field"] for ax in grid])
    rows = [
        [
            str(a["rank"]),
            f"`{a['scheme']}`",
            *(markdown(value_text(a["point"][ax["field"]])) for ax in grid),
            one_line(a["horizon"]),
            one_line(a["decay_rate"]),
            one_line(a["log10_ratio_first_last"]),
            verdict_words(a["verdicts"]),
        ]
        for a in ranked(doc, T)
    ]
    head = ["#", "scheme", *(short[ax["field"]] for ax in grid), "horizon", "decay/step"]
    return [_md_table([*head, "log10 ‖dc_1‖/‖dc_T‖", "verdicts"], rows), ""]


def _md_heatmaps(doc: dict) -> list[str]:
    """With two or more varying axes: per panel (scheme, other axes' values), the median
    horizon [IQR] over the two axes of the heatmap figure, as a table."""
    hm = heatmap_layout(doc)
    if hm is None:
        return []
    xs, ys = short_names([hm.x["field"], hm.y["field"]]).values()
    out = [f"### Horizon over {ys} × {xs} (median [IQR] over seeds; **bold**: reaches t = 1)", ""]
    for panel in hm.panels:
        rows = []
        for yv, row in zip(hm.y["values"], panel_cells(doc, hm, panel), strict=True):
            texts = []
            for c in row:
                reach = c is not None and c["horizon"]["median"] >= c["seq_len"]
                text = "—" if c is None else one_line(c["horizon"])
                texts.append(f"**{text}**" if reach else text)
            rows.append([f"{ys}={markdown(value_text(yv))}", *texts])
        header = [markdown(panel.title()), *(f"{xs}={markdown(value_text(v))}" for v in hm.x["values"])]
        out += [_md_table(header, rows), ""]
    return out


def render_markdown(doc: dict, invocation: str = "CONFIG") -> str:
    T = doc["detail_seq_len"]
    n = len(doc["seed_values"])
    out = ["## lstm-diag compare", "", *(f"- {markdown(x.strip())}" for x in describe(doc)), ""]
    out += [f"### Gradient flow at T = {T}, ranked (median [IQR] over {n} seeds)", ""]
    out += _md_ranked(doc, T)
    out += [_horizon_note(doc, T), ""]
    b = doc["best"]
    out += [f"Best at T = {b['seq_len']}: `{b['label']}`; its seed {b['seed']} in detail:", ""]
    out += ["```bash", reproduce_command(doc, invocation), "```", ""]
    out += _md_heatmaps(doc)
    if _n_layers(doc) > 1:
        rows = [
            [_md_name(a), *(one_line(lay["horizon"]) for lay in a["layers"]),
             *("—" for _ in range(_n_layers(doc) - len(a["layers"])))]
            for a in ranked(doc, T)
        ]  # fmt: skip
        out += [f"### Horizon per layer at T = {T}", ""]
        out += [_md_table([_md_head(doc), *(f"layer {k}" for k in range(_n_layers(doc)))], rows), ""]
    hm = heatmap_layout(doc)
    on_map = hm is not None and "data.seq_len" in (hm.x["field"], hm.y["field"])
    if len(doc["seq_lens"]) > 1 and not on_map:  # else the heatmap tables show it
        by = {(a["label"], a["seq_len"]): a for a in doc["aggregates"]}
        rows = [
            [_md_name(a), *(one_line(by[(a["label"], t)]["horizon"]) if (a["label"], t) in by else "—"
                            for t in doc["seq_lens"])]
            for a in ranked(doc, T)
        ]  # fmt: skip
        out += ["### Horizon against sequence length T (= T reaches t = 1)", ""]
        out += [_md_table([_md_head(doc), *(f"T = {t}" for t in doc["seq_lens"])], rows), ""]
    eps = doc["config"]["diagnostics"]["saturation_threshold"]
    for k in range(_n_layers(doc)):
        where = f", layer {k}" if _n_layers(doc) > 1 else ""
        rows = []
        for a in _having(ranked(doc, T), k):
            lay = a["layers"][k]
            rows.append(
                [
                    _md_name(a),
                    one_line(a["loss"]),
                    one_line(lay["forget_mean"]),
                    one_line(lay["forget_time_constant"]),
                    one_line(lay["lyapunov_max"]) if lay["lyapunov"] else "—",
                    *(one_line(lay["saturation"][g], 2) for g in GATE_SYMBOL),
                    *(one_line(lay["sigma_max"][g]) for g in GATE_SYMBOL),
                ]
            )
        header = [_md_head(doc), "loss", "forget mean", "τ (steps)", "λ₁ (per step)"]
        header += [f"sat. {s}" for s in GATE_SYMBOL.values()] + [f"σ_max U_{s}" for s in GATE_SYMBOL.values()]
        out += [f"### At init{where}", "", _md_table(header, rows), ""]
        out += [
            f"Saturation: share of gate entries < {eps:g} or > {1 - eps:g}. σ_max: largest singular value.",
            "",
        ]
    if doc["settings"]["train_steps"]:
        rows = [
            [
                _md_name(a),
                one_line(a["loss"]),
                one_line(a["after_training"]["loss"]),
                one_line(a["horizon"]),
                one_line(a["after_training"]["horizon"]),
                f"{a['after_training']['diverged']}/{a['runs']}",
            ]
            for a in ranked(doc, T)
        ]
        out += [f"### After {doc['settings']['train_steps']} training steps (loss on the init batch)", ""]
        out += [
            _md_table(
                [_md_head(doc), "loss init", "loss after", "horizon init", "horizon after", "diverged"], rows
            ),
            "",
        ]
    return "\n".join(out) + "\n"
