"""Rendering of `lstm_diag.features.explain` results: rich (terminal) and markdown with LaTeX math.

Both renderers lay out the same data: each equation symbolically, then one row per
shown unit with the numbers substituted, aligned at "=" like a derivation.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

from rich.cells import cell_len
from rich.console import Console, Group
from rich.padding import Padding
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from ..core.names import param_name
from ..features.explain import (
    CONTRIBUTION_RULE,
    CONTRIBUTION_SUMS,
    Contribution,
    Equation,
    Explanation,
    StepView,
    Toy,
    sub,
    sup,
)
from .describe import model_line
from .inert import markdown as md_text
from .inert import plain
from .text import fmt, table

DIGITS = 4  # significant digits of every number shown
_PLACEHOLDER = re.compile(r"\{(\d+)\}")
# an operand subtracted from 1 in a template: `1 - {0}`, `(1 - {0})`, `1 - {0}^2`, `1 - {0}²`
_COMPLEMENT = re.compile(r"1\s*[-−]\s*\(?\{(\d+)\}")
NEAR_ONE = 0.1  # in `1 - v`, |v| closer to 1 than this is shown with its distance to 1


# ------------------------------------------------------------------- numbers


def num(v: float, complement: bool = False) -> str:
    """A number for the terminal: 4 significant digits, e-notation when tiny or huge.

    A value near ±1 is shown with enough decimals that its distance from ±1 reads to 4
    significant digits, so no rounded identity reads as false: wherever 4 digits would
    print a value that is not ±1 as "1" (σ(12.13) = 0.999994628, not 1), and, with
    `complement`, wherever 1 - v is taken (σ′ = 0.999994628 · (1 - 0.999994628) = 5.372e-06,
    not 1 · (1 - 1) = 5.372e-06).
    """
    v = float(v)
    s = fmt(v, DIGITS)
    d = 1.0 - abs(v)  # the distance from ±1, exact in float64 for |v| in [0.5, 1]
    if math.isfinite(v) and 0.0 < d and (s in ("1", "-1") or (complement and d < NEAR_ONE)):
        return f"{v:.{DIGITS - 1 - math.floor(math.log10(d))}f}"
    return s


def num_tex(v: float, complement: bool = False) -> str:
    """The same number as LaTeX: 1.234e-05 -> 1.234 \\times 10^{-5}."""
    s = num(v, complement)
    mant, e, exp = s.partition("e")
    if not e:
        return s
    return rf"{mant} \times 10^{{{int(exp)}}}"


def fill(template: str, values: list[float], number=num) -> str:
    """Substitute numbers into a template; a negative number is bracketed unless it opens
    the expression or a function's argument: `1 - {0}²` -> `1 - (-0.25)²`. An operand that
    the template subtracts from 1 anywhere is shown near ±1 with its distance to 1 (`num`)."""
    near = {int(k) for k in _COMPLEMENT.findall(template)}

    def one(m: re.Match) -> str:
        k = int(m.group(1))
        s = number(float(values[k]), k in near)
        before = template[: m.start()].rstrip()
        if s.startswith("-") and before and not before.endswith("("):
            return f"({s})"
        return s

    return _PLACEHOLDER.sub(one, template)


def numeric_rhs(eq: Equation, row: int, number=num) -> tuple[str, str]:
    """(substituted expression, value) of one numeric row; the expression is empty
    when it would only repeat the value."""
    values = [v[row] for _, v in eq.operands]
    assert eq.subst is not None and eq.value is not None
    template = eq.subst.text if number is num else eq.subst.tex
    if _PLACEHOLDER.fullmatch(template.strip()):
        return "", number(eq.value[row])
    return fill(template, values, number), number(eq.value[row])


def token_text(inputs: dict, tok_id: int, token: str | None) -> str:
    """One token as shown: its string (control characters escaped, quoted) with its id, or the id."""
    if inputs["vocab"] is None:
        return f"id {tok_id}"
    return f"{plain(repr(token))} (id {tok_id})"


def input_context(inputs: dict) -> str:
    """The sample's input tokens around step t, step t in brackets: `…the q[u]ick…` for single
    characters, `… the [quick] brown …` for longer tokens; ids when there is no vocabulary."""
    first, t = inputs["context_first_step"], inputs["step"]
    raw = inputs["context_tokens"] or [str(i) for i in inputs["context_ids"]]
    chars = inputs["context_tokens"] is not None and all(len(w) == 1 for w in raw)
    words = [plain(w) for w in raw]  # control characters escaped: a newline shows as \n
    j = t - first  # position of step t in the context
    words[j] = f"[{words[j]}]"
    sep = "" if chars else " "
    head = "…" + sep if first > 1 else ""
    tail = sep + "…" if first - 1 + len(words) < inputs["T"] else ""
    return head + sep.join(words) + tail


def input_lines(ex: Explanation) -> list[str]:
    """What the step reads (token-id data only): its token, and the sample's tokens around it."""
    inp = ex.inputs
    if inp is None:
        return []
    t = inp["step"]
    inp = {**inp, "T": ex.sizes["T"]}
    tok = token_text(inp, inp["id"], inp["token"])
    where = f" of {plain(Path(inp['vocab']).name)}" if inp["vocab"] else " (no --vocab: ids)"
    last = inp["context_first_step"] + len(inp["context_ids"]) - 1
    return [
        f"x{sub(t)} = E[{inp['id']}] (eq. 24): token {tok}{where}",
        f"sample {ex.view.sample}, t = {inp['context_first_step']}..{last}: {input_context(inp)}",
    ]


def ref_label(ref: str) -> str:
    """An equation number of docs/equations.md: "6" -> "(6)", "8 at t-1" -> "(8) at t-1"."""
    if not ref:
        return ""
    n, _, rest = ref.partition(" ")
    return f"({n})" + (f" {rest}" if rest else "")


# --------------------------------------------------------------- terminal


def equation_grid(eqs: list[Equation], width: int, symbolic: bool = True) -> Table:
    """lhs = rhs, the symbolic line (with its equation number at the right margin),
    then one numeric line per unit; `width` is what the grid may fill."""
    lines: list[tuple[Text, Text, str]] = []  # lhs, rhs, ref to place at the margin
    for eq in eqs:
        if symbolic or eq.value is None:
            lines.append((Text(eq.lhs.text, style="bold cyan"), Text(eq.rhs.text), ref_label(eq.ref)))
        if eq.value is None:
            continue
        for r, lhs in enumerate(eq.rows):
            expr, value = numeric_rhs(eq, r)
            rhs = Text(f"{expr} = " if expr else "")
            rhs.append(value, style="bold")
            lines.append((Text(lhs.text), rhs, "" if symbolic else ref_label(eq.ref)))
    lhs_w = max((cell_len(lhs.plain) for lhs, _, _ in lines), default=0)
    avail = width - lhs_w - 3  # "lhs = rhs"
    grid = Table.grid(padding=(0, 1))
    grid.add_column(justify="right", no_wrap=True)
    grid.add_column(no_wrap=True)
    grid.add_column(overflow="fold", max_width=max(avail, 20))
    for lhs, rhs, ref in lines:
        if ref:
            gap = avail - cell_len(rhs.plain) - cell_len(ref)
            rhs.append(" " * gap if gap >= 2 else "  ")
            rhs.append(ref, style="dim")
        grid.add_row(lhs, "=", rhs)
    return grid


def _section(console: Console, title: str, *body) -> None:
    console.print()
    console.print(Text(title, style="bold underline"))
    for b in body:
        console.print(Padding(b, (0, 0, 0, INDENT)))


INDENT = 2  # section bodies are indented by this much


def _width(console: Console) -> int:
    return console.width - INDENT


def contribution_intro(c: Contribution, width: int, full: bool = True) -> Group:
    """Eqs. (14)-(16) and what one step adds to them (when `full`), and the x_t, h_{t-1}
    entries that the table multiplies δz_t by."""
    tt, tp = sub(c.t), sub(c.t - 1)
    x = "x" if c.layer == 0 else f"h{sup(f'({c.layer - 1})')}"  # the layer's input x_t
    xs = ", ".join(f"{x}{tt}[{j}] = {num(v)}" for j, v in zip(c.x_cols, c.x, strict=True))
    hs = ", ".join(f"h{tp}[{v}] = {num(h)}" for v, h in zip(c.h_cols, c.h_prev, strict=True))
    lines = [CONTRIBUTION_RULE.text] if full else []
    lines.append(f"Here {xs}; {hs}.")
    lines.append(f"Entries of the first table: δz{tt}[r]·{x}{tt}[j], δz{tt}[r]·h{tp}[v], δz{tt}[r].")
    text = Text("\n".join(lines), style="dim")
    return Group(equation_grid(CONTRIBUTION_SUMS, width), text) if full else Group(text)


def contribution_tables(c: Contribution, batch_size: int) -> list[Table]:
    """This step's share of ∂L/∂θ at the shown entries (eqs. 14-16), and the totals."""
    k = c.layer
    ih, hh, bias = param_name("weight_ih", k), param_name("weight_hh", k), param_name("bias_ih", k)

    def grid(title: str, parts: dict) -> Table:
        t = table(Text(title))
        t.add_column(Text("gate[u] r" if "[" in c.row_labels[0] else "gate r"), no_wrap=True)
        for j in c.x_cols:
            t.add_column(Text(f"Wᵢₕ[r,{j}]"), justify="right", no_wrap=True)
        for v in c.h_cols:
            t.add_column(Text(f"Wₕₕ[r,{v}]"), justify="right", no_wrap=True)
        t.add_column(Text("b[r]"), justify="right", no_wrap=True)
        for r, label in enumerate(c.row_labels):
            cells = [f"{label} {c.rows[r]}"]
            cells += [num(v) for v in parts[ih][r]] + [num(v) for v in parts[hh][r]] + [num(parts[bias][r])]
            t.add_row(*(Text(x) for x in cells))
        return t

    who = f"sample {c.sample_index}, " if batch_size > 1 else ""
    out = [grid(f"{who}step t = {c.t}", c.sample)]
    if batch_size > 1:
        out.append(grid(f"summed over the batch (B = {batch_size}) at step t = {c.t}", c.batch))
        out.append(grid("∂L/∂θ: all steps and samples (the engine's gradient)", c.total))
    return out


def render_step(ex: Explanation, console: Console) -> None:
    s, v, n = ex.step, ex.view, ex.sizes
    cfg = ex.config
    units = ", ".join(map(str, v.units))
    head = Text()
    head.append("model  ", style="bold")
    head.append(
        f"{model_line(cfg.model.model_dump())}, {cfg.dtype}, B = {n['B']}, T = {n['T']}\n"
    )
    head.append("loss   ", style="bold")
    head.append(f"{cfg.loss.type} on '{cfg.loss.target}', L = {num(ex.loss)}\n")
    head.append("shown  ", style="bold")
    head.append(f"step t = {v.step}, layer {v.layer}, sample {v.sample}, units {units}\n")
    for k, line in enumerate(input_lines(ex)):
        head.append("input  " if k == 0 else "       ", style="bold")
        head.append(line + "\n")  # Text.append: no markup parsed; plain() escaped
    head.append(
        "δx = dL/dx, the total derivative of the loss; ⊙ elementwise; [u] unit u;\n"
        "(n) docs/equations.md eq. n. Numbers: the engine's caches and gradients, 4\n"
        "significant digits; near ±1, enough digits to show the distance from 1.",
        style="dim",
    )
    console.print(Panel(head, title="lstm-diag explain", title_align="left"))
    w, t = _width(console), s.t
    _section(console, f"Forward, step t = {t} (eqs. 1-7)", equation_grid(s.forward, w))
    _section(console, f"Backward, step t = {t} (eqs. 8-13)", equation_grid(s.backward, w))
    _section(
        console,
        f"Parameter gradients: step t = {t}'s share (eqs. 14-16)",
        contribution_intro(s.contributions, w),
        *contribution_tables(s.contributions, n["B"]),
    )
    where = f"step t-1 = {t - 1}" if t > 1 else "the initial state h₀, c₀"
    _section(console, f"Sent back to {where} (eqs. 8, 9 at t-1)", equation_grid(s.previous, w))


GATE_NAMES = {"i": "i (input)", "f": "f (forget)", "g": "g (candidate)", "o": "o (output)"}


def toy_weights_table(toy: Toy) -> Table:
    P = toy.params
    t = table("Weights, chosen by hand")
    for col in ("gate", "Wᵢₕ", "Wₕₕ", "bᵢₕ", "bₕₕ", "b = bᵢₕ + bₕₕ"):
        t.add_column(col, justify="left" if col == "gate" else "right")
    for j, q in enumerate("ifgo"):
        b_ih, b_hh = P["bias_ih_l0"][j], P["bias_hh_l0"][j]
        cells = (P["weight_ih_l0"][j, 0], P["weight_hh_l0"][j, 0], b_ih, b_hh, b_ih + b_hh)
        t.add_row(GATE_NAMES[q], *(num(x) for x in cells))
    return t


def toy_check_table(toy: Toy) -> Table:
    t = table(f"Gradient check (finite differences, tolerance {toy.tol:g})")
    for col, just in (
        ("θ", "left"),
        ("Σₜ shares", "right"),
        ("engine", "right"),
        ("finite diff.", "right"),
        ("rel. error", "right"),
        ("", "left"),
    ):
        t.add_column(col, justify=just, no_wrap=True)
    for c in toy.checks:
        ok = c.rel_error <= toy.tol
        t.add_row(
            Text(c.label),
            "—" if c.summed is None else num(c.summed),
            num(c.analytic),
            num(c.numeric),
            fmt(c.rel_error, 2),
            Text("ok", style="green") if ok else Text("FAIL", style="bold red"),
        )
    return t


def render_toy(toy: Toy, console: Console) -> None:
    T, P, w = len(toy.x), toy.params, _width(console)
    xs = ", ".join(f"x{sub(t + 1)} = {num(v)}" for t, v in enumerate(toy.x))
    intro = Text(
        f"A scalar LSTM: input, hidden and output size 1, T = {T} steps, h₀ = c₀ = 0.\n"
        f"Inputs {xs}; target y = {num(toy.y)} at the last step.\n"
        f"Head ŷ = W_head h{sub(T)} + b_head, W_head = {num(P['head.weight'][0, 0])}, "
        f"b_head = {num(P['head.bias'][0])}; loss L = (ŷ - y)².\n"
    )
    intro.append(
        "δx = dL/dx, the total derivative of the loss; (n) = docs/equations.md eq. n. Every\n"
        "number is the engine's, rounded to 4 digits: redo any line with a calculator.",
        style="dim",
    )
    console.print(Panel(intro, title="lstm-diag explain --toy", title_align="left"))
    console.print(toy_weights_table(toy))
    for s in toy.steps:
        first = s.t == 1
        _section(
            console,
            f"Forward, step t = {s.t}" + (" (eqs. 1-7)" if first else ""),
            equation_grid(s.forward if first else s.forward[1:], w, symbolic=first),
        )
    _section(console, f"Loss at t = {T}, and the head's gradients", equation_grid(toy.head, w))
    for s in reversed(toy.steps):
        last = s.t == T
        _section(
            console,
            f"Backward, step t = {s.t}" + (" (eqs. 8-13)" if last else ""),
            equation_grid(s.backward, w, symbolic=last),
        )
        _section(
            console,
            f"Step t = {s.t}'s share of the parameter gradients (eqs. 14-16)",
            contribution_intro(s.contributions, w, full=last),
            *contribution_tables(s.contributions, 1),
        )
    _section(
        console,
        "Sent back to the initial state (eqs. 8, 9 at t = 0)",
        equation_grid(toy.steps[0].previous, w),
    )
    console.print()
    console.print(toy_check_table(toy))
    if toy.passed:
        console.print(
            Text(
                "The per-step shares add up to the engine's gradient, and every entry agrees\n"
                f"with finite differences within {toy.tol:g}.",
                style="green",
            )
        )
    else:
        bad = [c.label for c in toy.checks if c.rel_error > toy.tol]
        console.print(Text(f"{len(bad)} entries above tolerance: {', '.join(bad)}", style="bold red"))


# ---------------------------------------------------------------- markdown


def _tex_block(eqs: list[Equation], symbolic: bool = True) -> str:
    lines = []
    for eq in eqs:
        tag = rf" && \text{{{ref_label(eq.ref)}}}" if eq.ref else ""
        if symbolic or eq.value is None:
            lines.append(rf"{eq.lhs.tex} &= {eq.rhs.tex}{tag}")
        if eq.value is None:
            continue
        for r, lhs in enumerate(eq.rows):
            expr, value = numeric_rhs(eq, r, num_tex)
            rhs = f"{expr} = " if expr else ""
            lines.append(rf"{lhs.tex} &= {rhs}\mathbf{{{value}}}" + ("" if symbolic else tag))
    return "$$\n\\begin{aligned}\n" + " \\\\\n".join(lines) + "\n\\end{aligned}\n$$\n"


def _md_contributions(c: Contribution, batch_size: int, full: bool = True) -> str:
    k = c.layer
    ih, hh, bias = param_name("weight_ih", k), param_name("weight_hh", k), param_name("bias_ih", k)
    x = "x" if c.layer == 0 else f"h^{{({c.layer - 1})}}"  # the layer's input x_t
    xs = ", ".join(rf"${x}_{{{c.t}}}[{j}] = {num_tex(v)}$" for j, v in zip(c.x_cols, c.x, strict=True))
    hs = ", ".join(rf"$h_{{{c.t - 1}}}[{v}] = {num_tex(h)}$" for v, h in zip(c.h_cols, c.h_prev, strict=True))
    out = []
    if full:
        out.append(_tex_block(CONTRIBUTION_SUMS) + "\n" + CONTRIBUTION_RULE.tex)
    out.append(f"Here {xs}; {hs}.\n")

    def md_table(title: str, parts: dict) -> str:
        head = ["gate[u] r" if "[" in c.row_labels[0] else "gate r"]
        head += [rf"$W_{{ih}}[r,{j}]$" for j in c.x_cols] + [rf"$W_{{hh}}[r,{v}]$" for v in c.h_cols]
        head.append("$b[r]$")
        rows = [f"**{title}**\n", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r, label in enumerate(c.row_labels):
            cells = [f"{label} {c.rows[r]}"]
            cells += [num(v) for v in parts[ih][r]] + [num(v) for v in parts[hh][r]] + [num(parts[bias][r])]
            rows.append("| " + " | ".join(cells) + " |")
        return "\n".join(rows) + "\n"

    t, tp = c.t, c.t - 1
    who = f"sample {c.sample_index}, " if batch_size > 1 else ""
    dz = rf"\delta z_{{{t}}}[r]"
    title = rf"{who}step t = {t}: ${dz}\, {x}_{{{t}}}[j]$, ${dz}\, h_{{{tp}}}[v]$, ${dz}$"
    out.append(md_table(title, c.sample))
    if batch_size > 1:
        out.append(md_table(f"summed over the batch (B = {batch_size}) at step t = {c.t}", c.batch))
        out.append(md_table("∂L/∂θ: all steps and samples (the engine's gradient)", c.total))
    return "\n".join(out)


def _md_step(s: StepView, batch_size: int) -> list[str]:
    t = s.t
    where = f"step t-1 = {t - 1}" if t > 1 else "the initial state"
    return [
        f"## Forward, step t = {t} (eqs. 1-7)\n",
        _tex_block(s.forward),
        f"## Backward, step t = {t} (eqs. 8-13)\n",
        _tex_block(s.backward),
        f"## Parameter gradients: step t = {t}'s share (eqs. 14-16)\n",
        _md_contributions(s.contributions, batch_size),
        f"## Sent back to {where} (eqs. 8, 9 at t-1)\n",
        _tex_block(s.previous),
    ]


def markdown_step(ex: Explanation) -> str:
    v, n, cfg = ex.view, ex.sizes, ex.config
    units = ", ".join(map(str, v.units))
    parts = [
        f"# lstm-diag explain: step t = {v.step}, layer {v.layer}, sample {v.sample}\n",
        f"{model_line(cfg.model.model_dump())}, {cfg.dtype}; loss {cfg.loss.type} on "
        f"'{cfg.loss.target}', $L = {num_tex(ex.loss)}$. Step {v.step} of {n['T']}, layer {v.layer} of "
        f"{n['L']} (0-based), sample {v.sample} of {n['B']}, units {units} of {n['H']}. "
        r"$\delta x = dL/dx$; $\odot$ elementwise; $[u]$ hidden unit $u$; (n) is docs/equations.md eq. n. "
        "Values: the engine's caches and gradients, 4 significant digits (near ±1, enough digits "
        "to show the distance from 1).\n",
        *([f"Input: {md_text('; '.join(input_lines(ex)))}\n"] if ex.inputs else []),
        *_md_step(ex.step, n["B"]),
    ]
    return "\n".join(parts)


def markdown_toy(toy: Toy) -> str:
    T, P = len(toy.x), toy.params
    xs = ", ".join(rf"$x_{{{t + 1}}} = {num_tex(v)}$" for t, v in enumerate(toy.x))
    W, b = r"W_{\text{head}}", r"b_{\text{head}}"
    w = ["| gate | $W_{ih}$ | $W_{hh}$ | $b_{ih}$ | $b_{hh}$ |", "|---|---|---|---|---|"]
    for j, q in enumerate("ifgo"):
        cells = (P["weight_ih_l0"][j, 0], P["weight_hh_l0"][j, 0], P["bias_ih_l0"][j], P["bias_hh_l0"][j])
        w.append(f"| {GATE_NAMES[q]} | " + " | ".join(num(x) for x in cells) + " |")
    parts = [
        "# lstm-diag explain --toy: a scalar LSTM by hand\n",
        f"Input, hidden and output size 1, $T = {T}$ steps, $h_0 = c_0 = 0$. Inputs {xs}; target "
        rf"$y = {num_tex(toy.y)}$ at the last step. Head $\hat y = {W}\, h_T + {b}$ with "
        rf"${W} = {num_tex(P['head.weight'][0, 0])}$, ${b} = {num_tex(P['head.bias'][0])}$; loss "
        r"$L = (\hat y - y)^2$."
        "\n",
        r"$\delta x = dL/dx$ is the total derivative of the loss; (n) is equation n of docs/equations.md. "
        "Every number is the engine's, rounded to 4 significant digits.\n",
        "\n".join(w) + "\n",
    ]
    for s in toy.steps:
        first = s.t == 1
        parts += [f"## Forward, step t = {s.t}\n", _tex_block(s.forward if first else s.forward[1:], first)]
    parts += [f"## Loss at t = {T}, and the head's gradients\n", _tex_block(toy.head)]
    for s in reversed(toy.steps):
        last = s.t == T
        parts += [
            f"## Backward, step t = {s.t}\n",
            _tex_block(s.backward, last),
            f"### Step t = {s.t}'s share of the parameter gradients (eqs. 14-16)\n",
            _md_contributions(s.contributions, 1, full=last),
        ]
    parts += ["## Sent back to the initial state\n", _tex_block(toy.steps[0].previous)]
    rows = [
        r"| $\theta$ | $\sum_t$ shares | engine $\partial L/\partial\theta$ | finite diff. | rel. error |",
        "|---|---|---|---|---|",
    ]
    for c in toy.checks:
        summed = "—" if c.summed is None else num(c.summed)
        cells = (f"${c.label_tex}$", summed, num(c.analytic), num(c.numeric), fmt(c.rel_error, 2))
        rows.append("| " + " | ".join(cells) + " |")
    verdict = (
        f"The per-step shares add up to the engine's gradient, and all {len(toy.checks)} entries agree "
        f"with finite differences within {toy.tol:g}."
        if toy.passed
        else f"{sum(c.rel_error > toy.tol for c in toy.checks)} entries above tolerance {toy.tol:g}."
    )
    parts += [f"## Gradient check (finite differences, tolerance {toy.tol:g})\n", "\n".join(rows) + "\n"]
    parts.append(verdict + "\n")
    return "\n".join(parts)


def render(obj: Explanation | Toy, console: Console) -> None:
    if isinstance(obj, Toy):
        render_toy(obj, console)
    else:
        render_step(obj, console)


def markdown(obj: Explanation | Toy) -> str:
    return markdown_toy(obj) if isinstance(obj, Toy) else markdown_step(obj)
