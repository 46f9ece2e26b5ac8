"""Gradient clipping, with PyTorch's and Brock et al.'s semantics (docs/theory.md §6). Pure.

- norm:  N = ||all grads||_2; coef = min(1, max_norm / (N + 1e-6)); every gradient is
         multiplied by coef (as `torch.nn.utils.clip_grad_norm_`, which multiplies
         unconditionally; a non-finite N makes every gradient non-finite).
- value: elementwise clamp to [-clip_value, clip_value] (`clip_grad_value_`).
- agc:   adaptive gradient clipping (Brock, De, Smith & Simonyan 2021), unit-wise: a unit is
         a row of a (out, in) weight, a whole bias vector is one unit;
         max_i = clipping * max(||W_i||, 1e-3); if ||G_i|| >= max_i then
         G_i <- G_i * max_i / max(||G_i||, 1e-6).
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass

import numpy as np

from ..errors import preview

NORM_EPS = 1e-6  # torch clip_grad_norm_
AGC_EPS = 1e-3  # Brock et al.: floor on the parameter norm
MODES = ("none", "norm", "value", "agc")
THRESHOLD_NAME = {"norm": "max_norm", "value": "clip_value", "agc": "clipping"}


def global_norm(grads: dict[str, np.ndarray]) -> float:
    """L2 norm of all gradients concatenated (float64 accumulation)."""
    with np.errstate(over="ignore", invalid="ignore"):
        return float(np.sqrt(sum(np.sum(np.square(g, dtype=np.float64)) for g in grads.values())))


def _unit_norms(a: np.ndarray) -> np.ndarray:
    """Row norms of a matrix (one per output unit), the whole norm of a vector; keepdims."""
    a64 = a.astype(np.float64, copy=False)
    if a.ndim <= 1:
        return np.sqrt(np.sum(a64 * a64)).reshape((1,) * max(a.ndim, 1))
    return np.sqrt(np.sum(a64 * a64, axis=tuple(range(1, a.ndim)), keepdims=True))


def clip(
    grads: dict[str, np.ndarray],
    params: dict[str, np.ndarray],
    mode: str,
    max_norm: float = 1.0,
    clip_value: float = 1.0,
    clipping: float = 0.01,
) -> tuple[dict[str, np.ndarray], dict]:
    """Clipped copies of `grads` and what happened: total_norm, clip_coef, changed entries."""
    total = global_norm(grads)
    info = {"total_norm": total, "clip_coef": 1.0, "changed_fraction": 0.0}
    with np.errstate(over="ignore", invalid="ignore"):
        if mode == "norm":
            coef = min(1.0, max_norm / (total + NORM_EPS)) if not np.isnan(total) else float("nan")
            out = {k: g * g.dtype.type(coef) for k, g in grads.items()}
            info["clip_coef"] = coef
            info["changed_fraction"] = 1.0 if coef < 1.0 else 0.0
        elif mode == "value":
            out = {k: np.clip(g, -clip_value, clip_value) for k, g in grads.items()}
            changed = sum(int(np.sum(np.abs(g) > clip_value)) for g in grads.values())
            info["changed_fraction"] = changed / sum(g.size for g in grads.values())
        elif mode == "agc":
            out, changed = {}, 0
            for k, g in grads.items():
                max_i = clipping * np.maximum(_unit_norms(params[k]), AGC_EPS)
                g_norm = _unit_norms(g)
                hit = g_norm >= max_i
                scale = np.where(hit, max_i / np.maximum(g_norm, NORM_EPS), 1.0)
                out[k] = (g * scale).astype(g.dtype)
                changed += int(np.sum(np.broadcast_to(hit, g.shape)))
            info["changed_fraction"] = changed / sum(g.size for g in grads.values())
        else:
            out = {k: g.copy() for k, g in grads.items()}
    return out, info


def cosine(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    """Cosine between two gradients as flat vectors over all parameters."""
    with np.errstate(over="ignore", invalid="ignore"):
        dot = sum(float(np.sum(a[k].astype(np.float64) * b[k].astype(np.float64))) for k in a)
        na, nb = global_norm(a), global_norm(b)
        if not (na > 0 and nb > 0):
            return float("nan")
        return max(-1.0, min(1.0, dot / (na * nb)))  # round-off can step past ±1


def snapshot(
    grads: dict[str, np.ndarray],
    params: dict[str, np.ndarray],
    mode: str,
    max_norm: float = 1.0,
    clip_value: float = 1.0,
    clipping: float = 0.01,
) -> dict:
    """What clipping would do to this gradient: the `clipping` section of analyze's JSON.

    Every norm and the cosine come from one float64 sum of squares per array (and one dot
    product per array when clipping changed it): the same sums `global_norm` and `cosine`
    take, in the same order, so the same numbers bit for bit."""
    same = mode == "none"  # no clipping: the gradient itself, no copies
    with np.errstate(over="ignore", invalid="ignore"):
        ss = {k: np.sum(np.square(g, dtype=np.float64)) for k, g in grads.items()}  # per array
        total = float(np.sqrt(sum(ss.values())))  # global_norm(grads): the same sums, same order
    if same:  # what `clip` would say
        clipped, info = grads, {"total_norm": total, "changed_fraction": 0.0}
    else:
        clipped, info = clip(grads, params, mode, max_norm, clip_value, clipping)
    with np.errstate(over="ignore", invalid="ignore"):
        ss_after = ss if same else {k: np.sum(np.square(g, dtype=np.float64)) for k, g in clipped.items()}
        total, after = info["total_norm"], float(np.sqrt(sum(ss_after.values())))
        if same:
            dot = sum(float(v) for v in ss.values())
        else:
            f64 = np.float64
            dot = sum(float(np.sum(clipped[k].astype(f64) * grads[k].astype(f64))) for k in clipped)
        nb = float(np.sqrt(sum(ss.values())))
        cos = max(-1.0, min(1.0, dot / (after * nb))) if after > 0 and nb > 0 else float("nan")
    if mode == "norm":
        coef = info["clip_coef"]
    else:  # the effective scale of the whole gradient
        coef = after / total if total > 0 else 1.0
    return {
        "mode": mode,
        "max_norm": max_norm if mode == "norm" else None,
        "clip_value": clip_value if mode == "value" else None,
        "clipping": clipping if mode == "agc" else None,
        "total_norm": total,
        "clip_coef": coef,
        "norm_after": after,
        "clipped": bool(info["changed_fraction"] > 0),
        "changed_fraction": info["changed_fraction"],
        "cosine": cos,
        "parameters": {
            k: {"norm_before": float(np.sqrt(0 + ss[k])), "norm_after": float(np.sqrt(0 + ss_after[k]))}
            for k in grads
        },
    }


# ------------------------------------------------------------------------ clip settings


@dataclass(frozen=True)
class ClipSetting:
    """One way to clip: a mode of `clip` and its threshold (None for 'none')."""

    mode: str
    threshold: float | None = None

    @property
    def label(self) -> str:
        return self.mode if self.threshold is None else f"{self.mode}:{self.threshold:g}"

    @property
    def slug(self) -> str:
        """The label as a file-name part: norm:1 -> norm-1."""
        return self.label.replace(":", "-")

    def clip(self, grads: dict, params: dict) -> tuple[dict, dict]:
        t = self.threshold
        return clip(
            grads,
            params,
            self.mode,
            max_norm=t if self.mode == "norm" else 1.0,
            clip_value=t if self.mode == "value" else 1.0,
            clipping=t if self.mode == "agc" else 0.01,
        )


def parse_clip(spec: str | list[str], defaults: dict[str, float] | None = None) -> list[ClipSetting]:
    """'none,norm:1.0,value:0.1,agc:0.01' (or a list of items) -> settings, in order.

    A bare mode takes its threshold from `defaults` (the config's clipping section:
    max_norm, clip_value, clipping). Raises ValueError with a message for people.
    """
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    defaults = defaults or {"norm": 1.0, "value": 1.0, "agc": 0.01}
    example = "e.g. none,norm:1.0,value:0.1,agc:0.01"
    if not items or all(not str(i).strip() for i in items):
        raise ValueError(f"no clip settings given; {example}")
    settings: list[ClipSetting] = []
    for raw in items:
        item = str(raw).strip()
        if not item:
            raise ValueError(f"empty entry in {preview(spec)}; {example}")
        mode, sep, value = (s.strip() for s in item.partition(":"))
        mode = mode.lower()
        if mode not in MODES:
            close = difflib.get_close_matches(mode[:100], MODES, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"unknown clip mode {preview(mode)}{hint}; one of {', '.join(MODES)}; {example}")
        if mode == "none":
            if sep:
                raise ValueError(f"{preview(item)}: 'none' takes no threshold")
            threshold = None
        elif not sep:
            threshold = float(defaults[mode])
        else:
            try:
                threshold = float(value)
            except ValueError:
                threshold = float("nan")
            if not (math.isfinite(threshold) and threshold > 0):
                what = THRESHOLD_NAME[mode]
                raise ValueError(
                    f"{preview(item)}: the {what} after ':' must be a positive number, got {preview(value)}"
                )
        s = ClipSetting(mode, threshold)
        if s in settings:
            raise ValueError(f"{preview(s.label)} is listed twice")
        settings.append(s)
    return settings
