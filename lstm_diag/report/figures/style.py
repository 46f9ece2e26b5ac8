"""The one figure style of lstm-diag: palette, figure factory, byte-stable encoding.

Every figure (analyze, compare, train) is built here: on a `matplotlib.figure.Figure`
with the Agg canvas, never through pyplot, so no display, GUI backend or global figure
state is involved and drawing works on a headless server whatever MPLBACKEND says.
Renderers return figures; `figure_bytes` encodes one, and the commands write the bytes
(atomically). The same figure gives the same bytes, in any process and on any day:
no date, no version in the PNG, SVG or PDF metadata, fixed SVG element ids.

matplotlib is imported inside the functions that need it, so the palette can be used
by text renderers (the HTML page) without loading it.
"""

from __future__ import annotations

import functools
import io
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# Okabe & Ito (2008), "Color Universal Design": distinguishable with any common colour-vision deficiency.
OKABE_ITO = {
    "black": "#000000",
    "orange": "#E69F00",
    "sky_blue": "#56B4E9",
    "bluish_green": "#009E73",
    "yellow": "#F0E442",
    "blue": "#0072B2",
    "vermillion": "#D55E00",
    "reddish_purple": "#CC79A7",
}
GREY = "#6E6E6E"
VERDICT_COLOR = {
    "healthy": OKABE_ITO["bluish_green"],
    "vanishing": OKABE_ITO["orange"],
    "exploding": OKABE_ITO["vermillion"],
    "no_flow": GREY,  # a reverse direction with no flow through time to measure
}
GATE_COLOR = {
    "input": OKABE_ITO["blue"],
    "forget": OKABE_ITO["bluish_green"],
    "cell": OKABE_ITO["reddish_purple"],
    "output": OKABE_ITO["orange"],
}
NONFINITE_COLOR = OKABE_ITO["vermillion"]
# Colours of compared series (init schemes, clip settings) in the order given; black (kept for
# reference lines) and a darkened yellow (plain yellow is faint on white) come last.
_ORDER = ("blue", "orange", "bluish_green", "vermillion", "reddish_purple", "sky_blue", "black")
SERIES = [OKABE_ITO[k] for k in _ORDER] + ["#B8A800"]
# Colour maps of heatmaps: sequential (cividis: perceptually uniform, readable with any common
# colour-vision deficiency and in grey) and diverging around a meaningful zero.
SEQUENTIAL_CMAP = "cividis"
DIVERGING_CMAP = "PuOr_r"
LINE_STYLES = ["-", "--", "-.", ":"]  # cycled when there are more series than colours
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")

FORMATS = ("png", "svg", "pdf")
DPI = 110  # png resolution of every figure unless --dpi says otherwise

RC = {
    "font.size": 9.5,
    "axes.titlesize": 10.5,
    "axes.labelsize": 9.5,
    "legend.fontsize": 8.5,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.25,
    "grid.linewidth": 0.6,
    # Titles sit at the top of their axes (plus axes.titlepad) instead of being placed above any
    # top-side tick labels by a search over the figure's axes at every draw and layout pass
    # (about a tenth of the drawing time, measured). A panel with a top axis (the forget gate's τ
    # axis) gives its title the room by its `pad`.
    "axes.titley": 1.0,
    # Text is never mathtext: a `$` in a file name or a config value is shown as written
    # (report/inert.py). No figure uses mathtext; symbols are Unicode.
    "text.parse_math": False,
}
# What the encoders would otherwise stamp: matplotlib's version and the date.
_METADATA = {
    "png": {"Software": None},
    "svg": {"Date": None, "Creator": None},
    "pdf": {"CreationDate": None, "Creator": None, "Producer": None},
}


def series_style(labels: list[str]) -> dict[str, tuple[str, str]]:
    """label -> (colour, line style), fixed by the order of the labels."""
    return {
        lab: (SERIES[i % len(SERIES)], LINE_STYLES[(i // len(SERIES)) % len(LINE_STYLES)])
        for i, lab in enumerate(labels)
    }


def new_figure(width: float, height: float) -> Figure:
    """A constrained-layout figure on the Agg canvas (size in inches). Build it under `styled`."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def header(fig: Figure, text: str, fontsize: float = 9.5) -> None:
    """A left-aligned multi-line title whose lines are wrapped at spaces to the figure's width
    (DejaVu Sans averages ~0.55 em a character; 0.6 leaves a margin), so that a long field name
    or config line never runs off the right edge."""
    import textwrap

    chars = max(30, int((fig.get_figwidth() - 0.2) * 72 / (0.6 * fontsize)))
    wrap = functools.partial(textwrap.fill, width=chars, break_long_words=False, break_on_hyphens=False)
    lines = [wrap(line) for line in text.split("\n")]
    fig.suptitle("\n".join(lines), x=0.01, ha="left", fontsize=fontsize, linespacing=1.5)


def styled(fn):
    """Build the figure under the shared rc settings (fonts and grid are fixed at creation)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        import matplotlib as mpl

        with mpl.rc_context(RC):
            return fn(*args, **kwargs)

    return wrapper


def figure_bytes(fig: Figure, fmt: str = "png", dpi: int = DPI) -> bytes:
    """The figure encoded as png, svg or pdf: the same figure gives the same bytes.

    One draw per encoding: savefig draws a figure that has a layout engine twice (once without
    rendering, to lay it out, then again to render); the format's own canvas lays the figure
    out within its one draw. The figure keeps its Agg canvas and its dpi.
    """
    import matplotlib as mpl
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if fmt == "svg":
        from matplotlib.backends.backend_svg import FigureCanvasSVG as Canvas
    elif fmt == "pdf":
        from matplotlib.backends.backend_pdf import FigureCanvasPdf as Canvas
    else:
        Canvas = FigureCanvasAgg
    buf = io.BytesIO()
    canvas, dpi_before = fig.canvas, fig.dpi
    fig.set_dpi(dpi)  # the png resolution; svg and pdf draw at 72 and embed images at dpi
    try:
        with mpl.rc_context({"svg.hashsalt": "lstm-diag"}):  # stable SVG element ids
            printer = canvas if isinstance(canvas, Canvas) else Canvas(fig)
            getattr(printer, f"print_{fmt}")(buf, metadata=_METADATA[fmt])
    finally:
        fig.set_canvas(canvas)
        fig.set_dpi(dpi_before)
    return buf.getvalue()
