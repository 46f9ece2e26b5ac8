"""Diagnostics: pure functions of engine results. They measure and judge; they never print.

- Gate statistics (Karpathy, Johnson & Fei-Fei 2015 §4 saturation; theory.md §5), accumulated
  segment by segment so a long sequence never needs a second copy of all activations.
- Gradient flow: norms of dL/dc_t, dL/dh_t, dL/dz per gate over time, the per-step decay rate
  (Theil-Sen fit of ln ||dL/dc_t|| against steps back), the gradient horizon, the forget-gate
  retention along the cell path (eq. 9).
- Verdicts and findings with stable codes (catalogue in codes.py, docs/codes.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

GATE_NAMES = ("input", "forget", "cell", "output")  # i, f, g, o of theory.md
GATE_SYMBOL = {"input": "i", "forget": "f", "cell": "g", "output": "o"}


# ------------------------------------------------------------------- gate statistics


@dataclass
class GateAccumulator:
    """Running statistics of one layer's gate activations over (time, batch, unit).

    `add` takes a segment of activations (T_s, B, 4H) in gate order i, f, g, o; the
    candidate g is mapped to (g + 1) / 2 before applying the saturation threshold.
    """

    hidden_size: int
    eps: float = 0.1
    n: int = 0  # entries per gate seen so far
    mean: np.ndarray = field(default=None)  # (4,)
    m2: np.ndarray = field(default=None)  # (4,) sum of squared deviations (Chan et al.)
    low_per_step: list = field(default_factory=list)  # (T_s, 4) counts, per segment
    high_per_step: list = field(default_factory=list)
    low_per_unit: np.ndarray = field(default=None)  # (4, H) counts
    high_per_unit: np.ndarray = field(default=None)
    log_f_sum: float = 0.0
    f_hist_edges: np.ndarray = field(default=None)
    f_hist: np.ndarray = field(default=None)
    batch: int = 0

    def __post_init__(self):
        H = self.hidden_size
        self.mean = np.zeros(4)
        self.m2 = np.zeros(4)
        self.low_per_unit = np.zeros((4, H), np.int64)
        self.high_per_unit = np.zeros((4, H), np.int64)
        self.f_hist_edges = np.linspace(0.0, 1.0, 51)
        self.f_hist = np.zeros(50, np.int64)

    def add(self, gates: np.ndarray) -> None:
        T, B, H4 = gates.shape
        H = H4 // 4
        self.batch = B
        a = gates.reshape(T, B, 4, H)
        cnt = T * B * H
        seg_mean = a.mean(axis=(0, 1, 3), dtype=np.float64)  # (4,)
        dev = a - seg_mean[None, None, :, None].astype(a.dtype)  # (T, B, 4, H), one segment
        seg_m2 = np.einsum("tbgh,tbgh->g", dev, dev, dtype=np.float64)
        if self.n == 0:
            self.mean, self.m2 = seg_mean, seg_m2
        else:  # merge two (count, mean, M2) summaries
            tot = self.n + cnt
            delta = seg_mean - self.mean
            self.mean = self.mean + delta * cnt / tot
            self.m2 = self.m2 + seg_m2 + delta**2 * self.n * cnt / tot
        self.n += cnt
        # saturation: sigmoid gates directly, the tanh candidate through (g + 1) / 2
        lo_thr = np.array([self.eps, self.eps, 2 * self.eps - 1, self.eps], a.dtype)[:, None]
        hi_thr = np.array([1 - self.eps, 1 - self.eps, 1 - 2 * self.eps, 1 - self.eps], a.dtype)[:, None]
        low = a < lo_thr  # (T, B, 4, H)
        high = a > hi_thr
        self.low_per_step.append(low.sum(axis=(1, 3)))  # (T, 4)
        self.high_per_step.append(high.sum(axis=(1, 3)))
        self.low_per_unit += low.sum(axis=(0, 1))  # (4, H)
        self.high_per_unit += high.sum(axis=(0, 1))
        f = a[:, :, 1]
        with np.errstate(divide="ignore"):
            self.log_f_sum += float(np.log(f, dtype=np.float64).sum())
        self.f_hist += np.histogram(f, bins=self.f_hist_edges)[0]

    def result(self, stuck_fraction: float = 0.9) -> dict:
        """Plain data for `layers[k].gates` (fractions in [0, 1])."""
        low_t = np.concatenate(self.low_per_step)  # (T, 4)
        high_t = np.concatenate(self.high_per_step)
        T = low_t.shape[0]
        per_step = self.batch * self.hidden_size
        per_unit = T * self.batch
        std = np.sqrt(self.m2 / self.n)
        out = {}
        for k, name in enumerate(GATE_NAMES):
            u_low = self.low_per_unit[k] / per_unit
            u_high = self.high_per_unit[k] / per_unit
            out[name] = {
                "mean": float(self.mean[k]),
                "std": float(std[k]),
                "saturated_low": float(self.low_per_unit[k].sum() / self.n),
                "saturated_high": float(self.high_per_unit[k].sum() / self.n),
                "saturation_over_time": ((low_t[:, k] + high_t[:, k]) / per_step).tolist(),
                "unit_saturated_low": u_low.tolist(),
                "unit_saturated_high": u_high.tolist(),
                "stuck_units": int(np.sum(u_low + u_high > stuck_fraction)),
                "stuck_low": int(np.sum(u_low > stuck_fraction)),
                "stuck_high": int(np.sum(u_high > stuck_fraction)),
            }
        return out

    def forget_log_mean(self) -> float:
        """Mean of ln f_t over (time, batch, unit)."""
        return self.log_f_sum / self.n

    def forget_histogram(self) -> dict:
        return {"edges": self.f_hist_edges.tolist(), "counts": self.f_hist.tolist()}


def gate_statistics(
    gates: np.ndarray, eps: float, stuck_fraction: float = 0.9
) -> tuple[dict, GateAccumulator]:
    acc = GateAccumulator(gates.shape[2] // 4, eps)
    acc.add(gates)
    return acc.result(stuck_fraction), acc


# --------------------------------------------------------------------- gradient flow


def theil_sen_slope(y: np.ndarray, max_points: int = 400) -> float:
    """Median of pairwise slopes of y against its index (robust to spikes); nan if < 2 points.

    Non-finite entries are ignored; long series are thinned evenly to `max_points`.
    """
    t = np.arange(len(y), dtype=np.float64)
    keep = np.isfinite(y)
    t, y = t[keep], np.asarray(y, np.float64)[keep]
    if len(y) < 2:
        return float("nan")
    if len(y) > max_points:
        idx = np.unique(np.linspace(0, len(y) - 1, max_points).round().astype(int))
        t, y = t[idx], y[idx]
    i, j = np.triu_indices(len(y), k=1)
    return float(np.median((y[j] - y[i]) / (t[j] - t[i])))


def frob_over_time(a: np.ndarray) -> np.ndarray:
    """(T, B, H) -> (T,) Frobenius norm over (batch, hidden), computed in float64."""
    a64 = a.astype(np.float64, copy=False)
    with np.errstate(over="ignore", invalid="ignore"):
        return np.sqrt(np.einsum("tbh,tbh->t", a64, a64))


def gate_grad_norms(dz: np.ndarray) -> np.ndarray:
    """(T, B, 4H) -> (T, 4): ||dL/dz^gate_t||_F over (batch, unit) per gate i, f, g, o,
    eqs. (10)-(13), computed in float64."""
    T, B, H4 = dz.shape
    d = dz.reshape(T, B, 4, H4 // 4).astype(np.float64, copy=False)
    with np.errstate(over="ignore", invalid="ignore"):
        return np.sqrt(np.einsum("tbgh,tbgh->tg", d, d))


@dataclass
class FlowSummary:
    """How far gradient travels back from the loss in one layer."""

    decay_rate: float  # per step back: -d ln||dL/dc|| / d(steps back); > 0 vanishes, < 0 grows
    factor_per_step: float  # e^{-decay_rate}: ||dL/dc_{t-1}|| / ||dL/dc_t|| (typical)
    ratio_first_last: float  # ||dL/dc_1|| / ||dL/dc_T||
    horizon: int  # steps back from the loss before ||dL/dc|| < vanishing_ratio * ||dL/dc_T||
    horizon_reaches_start: bool  # never dropped below: horizon = T
    forget_log_mean: float  # mean ln f_t
    forget_retention: float  # e^{mean ln f}: the cell path's per-step factor (eq. 9)
    cell_path_horizon: float  # steps for prod f to fall below vanishing_ratio (inf if f = 1)
    forget_time_constant: float  # tau = 1 / (1 - e^{mean ln f})
    first_nonfinite_step: int | None  # 1-based t of the latest step whose dL/dc is not finite
    source: str  # "loss" or "last_step_loss_term"

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def flow_summary(
    grad_c_norm: np.ndarray, forget_log_mean: float, vanishing_ratio: float, source: str
) -> FlowSummary:
    """Decay rate, ratio, horizon and cell-path retention from ||dL/dc_t||, t = 1..T."""
    n = np.asarray(grad_c_norm, np.float64)
    T = len(n)
    bad = ~np.isfinite(n)
    first_bad = int(np.nonzero(bad)[0].max()) + 1 if bad.any() else None
    with np.errstate(divide="ignore", invalid="ignore"):
        log_n = np.where(n > 0, np.log(np.where(n > 0, n, 1.0)), np.nan)
    back = log_n[::-1]  # index k = steps back from the loss
    slope = theil_sen_slope(back)
    ref = n[-1]
    if not np.isfinite(ref) or ref == 0:
        horizon, reaches = 0, False
    else:
        below = np.nonzero(~(n[::-1] >= vanishing_ratio * ref))[0]  # nan counts as below
        horizon = int(below[0]) if below.size else T
        reaches = below.size == 0
    retention = math.exp(forget_log_mean) if np.isfinite(forget_log_mean) else 0.0
    if retention >= 1.0:
        cell_h = math.inf
    elif retention <= 0.0:
        cell_h = 0.0
    else:
        cell_h = math.log(vanishing_ratio) / forget_log_mean
    return FlowSummary(
        decay_rate=-slope if np.isfinite(slope) else float("nan"),
        factor_per_step=math.exp(slope) if np.isfinite(slope) and slope < 700 else float("nan"),
        ratio_first_last=float(n[0] / n[-1]) if n[-1] != 0 and np.isfinite(n[-1]) else float("nan"),
        horizon=horizon,
        horizon_reaches_start=bool(reaches),
        forget_log_mean=float(forget_log_mean),
        forget_retention=retention,
        cell_path_horizon=float(cell_h),
        forget_time_constant=1.0 / (1.0 - retention) if retention < 1.0 else math.inf,
        first_nonfinite_step=first_bad,
        source=source,
    )


def verdict(flow: FlowSummary, T: int, exploding_ratio: float) -> str:
    """healthy | vanishing | exploding, for one layer (thresholds in docs/codes.md)."""
    if flow.first_nonfinite_step is not None:
        return "exploding"
    if np.isfinite(flow.ratio_first_last) and flow.ratio_first_last > exploding_ratio:
        return "exploding"
    if not flow.horizon_reaches_start and flow.horizon < T:
        return "vanishing"
    return "healthy"


# ------------------------------------------------------------------------- findings


@dataclass
class Finding:
    code: str
    severity: str  # "error" | "warning" | "info"
    layer: int | None
    message: str
    remedy: str

    def to_dict(self) -> dict:
        return dict(self.__dict__)


SEVERITY_RANK = {"info": 0, "warning": 1, "error": 2}


def matches(finding: Finding, selectors: list[str]) -> bool:
    """--fail-on: codes (LD101), prefixes (LD1), or severities (warning = warning or worse)."""
    for s in selectors:
        s = s.strip()
        if s.lower() in SEVERITY_RANK:
            if SEVERITY_RANK[finding.severity] >= SEVERITY_RANK[s.lower()]:
                return True
        elif s and finding.code.upper().startswith(s.upper()):
            return True
    return False
