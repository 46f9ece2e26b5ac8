"""Diagnostics: pure functions of engine results. They measure and judge; they never print.

- Gate statistics (Karpathy, Johnson & Fei-Fei 2015 §4 saturation; docs/theory.md §5), accumulated
  segment by segment so a long sequence never needs a second copy of all activations.
- Gradient flow: norms of dL/dc_t, dL/dh_t, dL/dz per gate over time, the per-step decay rate
  (Theil-Sen fit of ln ||dL/dc_t|| against steps back), the gradient horizon, the forget-gate
  retention along the cell path (eq. 9).
- Verdicts and findings with stable codes (catalogue in codes.py, docs/codes.md).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import numpy as np

GATE_NAMES = ("input", "forget", "cell", "output")  # i, f, g, o of docs/equations.md
GATE_SYMBOL = {"input": "i", "forget": "f", "cell": "g", "output": "o"}


# ------------------------------------------------------------------- gate statistics

# Streaming passes work on chunks of whole steps of about this many elements, so that a
# chunk and its float64 working copy stay in the core's L2 cache (docs/performance.md).
STREAM_CHUNK = 1 << 16
_HIST_BINS = 50  # forget-gate histogram: 50 equal bins on [0, 1]
_HIST_EDGES = np.linspace(0.0, 1.0, _HIST_BINS + 1)  # np.histogram's edges for them (read-only)
_HIST_EDGES.flags.writeable = False

# With the fast engine selected (core/backends.py), core/fused_kernels.py: the passes below
# each run as one compiled kernel over the engine's arrays (same results up to the order of
# float64 additions, docs/performance.md); None: the NumPy passes, the reference.
FUSED = None


def _rows_per_chunk(n_rows: int, row: int) -> int:
    return max(1, min(n_rows, STREAM_CHUNK // max(row, 1)))


@dataclass
class GateAccumulator:
    """Running statistics of one layer's gate activations over (time, batch, unit).

    `add` takes a segment of activations (T_s, B, 4H) in gate order i, f, g, o; the
    candidate g is mapped to (g + 1) / 2 before applying the saturation threshold.

    One streaming pass per segment, a chunk of steps at a time (`STREAM_CHUNK` elements,
    cache-resident): each chunk is widened into one reused float64 buffer, its per-gate
    mean and sum of squared deviations are computed there (two-pass within the chunk) and
    merged into the running ones (Chan, Golub & LeVeque); the 0/1 saturation indicators
    are summed by BLAS in float32, exact because a chunk has far fewer than 2^24 rows; the
    forget histogram is bin arithmetic + `np.bincount`, with the same bins as `np.histogram`.
    """

    hidden_size: int
    eps: float = 0.1
    n: int = 0  # entries per gate seen so far
    mean: np.ndarray = field(default=None)  # (4,)
    m2: np.ndarray = field(default=None)  # (4,) sum of squared deviations (Chan et al.)
    sat_per_step: list = field(default_factory=list)  # (T_s, 4) low + high counts, per segment
    low_per_unit: np.ndarray = field(default=None)  # (4, H) counts
    high_per_unit: np.ndarray = field(default=None)
    log_f_sum: float = 0.0
    log_f_unit: np.ndarray = field(default=None)  # (H,) sum of ln f per unit
    f_hist_edges: np.ndarray = field(default=None)
    f_hist: np.ndarray = field(default=None)
    batch: int = 0
    keep_step_mean: bool = False  # keep each step's batch mean (for `gate_heatmap`)
    step_mean: np.ndarray | None = None  # (T, 4H) in the gates' dtype, of the latest `add`

    def __post_init__(self):
        H = self.hidden_size
        self.mean = np.zeros(4)
        self.m2 = np.zeros(4)
        self.low_per_unit = np.zeros((4, H), np.int64)
        self.high_per_unit = np.zeros((4, H), np.int64)
        self.log_f_unit = np.zeros(H)
        self.f_hist_edges = _HIST_EDGES
        self.f_hist = np.zeros(_HIST_BINS, np.int64)

    def _thresholds(self, dt) -> tuple[np.ndarray, np.ndarray]:
        """(4H,) low and high thresholds per column, in the activations' dtype."""
        e, H = self.eps, self.hidden_size
        lo = np.repeat(np.array([e, e, 2 * e - 1, e], dt), H)
        hi = np.repeat(np.array([1 - e, 1 - e, 1 - 2 * e, 1 - e], dt), H)
        return lo, hi

    def add(self, gates: np.ndarray) -> None:
        T, B, H4 = gates.shape
        H = H4 // 4
        self.batch = B
        if FUSED is not None:
            return self._add_fused(gates)
        if self.keep_step_mean:  # (T, 4H): NumPy's mean over the batch axis, its sum / B in the dtype
            self.step_mean = np.divide(gates.reshape(T, B, H4).sum(axis=1), gates.dtype.type(B))
        a2 = gates.reshape(T * B, H4)  # (T*B, 4H), one row per (step, sample)
        R = _rows_per_chunk(T * B, H4)
        buf = np.empty(R * H4)  # float64 working copy of one chunk, reused
        ind = buf.view(np.float32).reshape(R, 2 * H4)  # 0/1 indicators [low | high] of one chunk, in buf
        y = np.empty(R * H)  # float64 scratch for the forget gate's logarithms and bins
        ones = np.ones(R)  # float64, for column sums
        ones32 = np.ones(max(R, H), np.float32)  # for counts
        lo, hi = self._thresholds(gates.dtype)
        sat_rows = np.empty((T * B, 4), np.float32)  # low + high count of each row and gate
        low_u = np.zeros(H4)
        high_u = np.zeros(H4)
        for r0 in range(0, T * B, R):
            r1 = min(T * B, r0 + R)
            rows = r1 - r0
            a = a2[r0:r1]  # (rows, 4H)
            x = buf[: rows * H4].reshape(rows, H4)
            w = a  # (rows, 4H) float64 values: the gates, or x holding them widened (exactly)
            if a.dtype != np.float64:
                np.copyto(x, a)
                w = x
            self._forget(a[:, H : 2 * H], w[:, H : 2 * H], y[: rows * H].reshape(rows, H))
            self._moments(w, x, ones[:rows])  # overwrites x
            # saturation: sigmoid gates directly, the tanh candidate through (g + 1) / 2
            c = ind[:rows]
            np.less(a, lo, out=c[:, :H4])
            np.greater(a, hi, out=c[:, H4:])
            per_unit = ones32[:rows] @ c  # (2*4H,) exact: rows < 2^24
            low_u += per_unit[:H4]
            high_u += per_unit[H4:]
            per_block = c.reshape(rows * 8, H) @ ones32[:H]  # (rows*8,) exact: H < 2^24
            np.add(*per_block.reshape(rows, 2, 4).transpose(1, 0, 2), out=sat_rows[r0:r1])
        self.sat_per_step.append(sat_rows.reshape(T, B, 4).sum(axis=1, dtype=np.int64))
        self.low_per_unit += low_u.reshape(4, H).astype(np.int64)
        self.high_per_unit += high_u.reshape(4, H).astype(np.int64)

    def _add_fused(self, gates: np.ndarray) -> None:
        """`add` as one compiled pass (`fused_kernels.gate_pass`): the same chunks, counts, bins
        and step means; sums in another order, ln f by the kernels' own log (<= 2 ulp):
        mean ln f overall and per unit agree with the NumPy pass to 1e-13 relative in float64."""
        T, B, H4 = gates.shape
        H = H4 // 4
        a2 = np.ascontiguousarray(gates).reshape(T * B, H4)
        lo, hi = self._thresholds(gates.dtype)
        state = np.array([self.n, *self.mean, *self.m2, self.log_f_sum], np.float64)
        low_u, high_u = np.zeros(H4, np.int64), np.zeros(H4, np.int64)
        sat_steps = np.empty((T, 4), np.int64)  # low + high count of each step and gate
        hist = np.zeros(_HIST_BINS, np.int64)
        R = _rows_per_chunk(T * B, H4)
        step_sum = np.empty((T if self.keep_step_mean else 0, H4), gates.dtype)
        edges64 = gates.dtype != np.float32
        log_u = self.log_f_unit  # (H,) added to in place
        FUSED.gate_pass(a2, B, lo, hi, R, edges64, state, low_u, high_u, sat_steps, hist, log_u, step_sum)
        self.n, self.mean, self.m2 = int(state[0]), state[1:5].copy(), state[5:9].copy()
        self.log_f_sum = float(state[9])
        self.f_hist += hist
        self.sat_per_step.append(sat_steps)
        self.low_per_unit += low_u.reshape(4, H)
        self.high_per_unit += high_u.reshape(4, H)
        if self.keep_step_mean:  # sum / B in the dtype: NumPy's mean over the batch axis
            self.step_mean = np.divide(step_sum, gates.dtype.type(B), out=step_sum)

    def _moments(self, w: np.ndarray, x: np.ndarray, ones: np.ndarray) -> None:
        """Merge the per-gate count, mean and M2 of one chunk w (rows, 4H), float64 (the gates,
        or x holding them widened); x: float64 scratch of w's shape, overwritten."""
        rows, H4 = w.shape
        H = H4 // 4
        cnt = rows * H
        col = ones @ w  # (4H,) column sums
        c_mean = col.reshape(4, H).sum(axis=1) / cnt  # (4,)
        np.subtract(w, np.repeat(c_mean, H), out=x)
        np.multiply(x, x, out=x)
        c_m2 = (ones @ x).reshape(4, H).sum(axis=1)  # (4,)
        if self.n == 0:
            self.mean, self.m2 = c_mean, c_m2
        else:  # merge two (count, mean, M2) summaries
            tot = self.n + cnt
            delta = c_mean - self.mean
            self.mean = self.mean + delta * cnt / tot
            self.m2 = self.m2 + c_m2 + delta**2 * self.n * cnt / tot
        self.n += cnt

    def _forget(self, f: np.ndarray, fw: np.ndarray, y: np.ndarray) -> None:
        """Sum of ln f and the histogram of one chunk of the forget gate f (rows, H); fw: its
        values in float64 (f itself, or widened); y: float64 scratch of f's shape. Float32 f:
        one log for two rows, ln(f_r f_{r+1}), the product of two float32 numbers being exact
        in float64 (docs/fused-diagnostics.md)."""
        rows = f.shape[0]
        f32 = f.dtype == np.float32
        with np.errstate(divide="ignore", invalid="ignore"):
            if f32 and rows > 1:
                q = y[: rows - rows % 2 : 2]  # (rows // 2, H): rows 0, 2, ... of y
                np.multiply(fw[: len(q) * 2 : 2], fw[1 : len(q) * 2 : 2], out=q)  # f_r f_{r+1}, exact
                if rows % 2:
                    y[-1] = fw[-1]
                    q = y[::2]  # the odd row left over: its own log
                logs = np.log(q, out=q)
            else:
                logs = np.log(fw, out=y)
        self.log_f_unit += logs.sum(axis=0)  # (H,)
        s = float(logs.sum())
        self.log_f_sum += s
        if s != s:  # NaN in the chunk: np.histogram leaves NaN out; do exactly that
            self.f_hist += np.histogram(f, bins=self.f_hist_edges)[0]
            return
        self.f_hist += unit_interval_bincount(fw, _HIST_BINS, y, exact=f32)

    def result(self, stuck_fraction: float = 0.9) -> dict:
        """Plain data for `layers[k].gates` (fractions in [0, 1])."""
        sat_t = self.sat_per_step[0] if len(self.sat_per_step) == 1 else np.concatenate(self.sat_per_step)
        T = sat_t.shape[0]  # sat_t (T, 4)
        per_step = self.batch * self.hidden_size
        per_unit = T * self.batch
        std = np.sqrt(self.m2 / self.n).tolist()
        u_low, u_high = self.low_per_unit / per_unit, self.high_per_unit / per_unit  # (4, H)
        low = self.low_per_unit.sum(axis=1).tolist()  # (4,) exact ints
        high = self.high_per_unit.sum(axis=1).tolist()
        stuck = ((u_low + u_high) > stuck_fraction).sum(axis=1).tolist()  # (4,) unit counts
        stuck_low = (u_low > stuck_fraction).sum(axis=1).tolist()
        stuck_high = (u_high > stuck_fraction).sum(axis=1).tolist()
        sat_time = (sat_t / per_step).T.tolist()  # (4, T)
        mean, u_low, u_high = self.mean.tolist(), u_low.tolist(), u_high.tolist()
        out = {}
        for k, name in enumerate(GATE_NAMES):
            out[name] = {
                "mean": mean[k],
                "std": std[k],
                "saturated_low": low[k] / self.n,
                "saturated_high": high[k] / self.n,
                "saturation_over_time": sat_time[k],
                "unit_saturated_low": u_low[k],
                "unit_saturated_high": u_high[k],
                "stuck_units": stuck[k],
                "stuck_low": stuck_low[k],
                "stuck_high": stuck_high[k],
            }
        out["forget"]["unit_log_mean"] = self.forget_unit_log_mean().tolist()
        return out

    def forget_log_mean(self) -> float:
        """Mean of ln f_t over (time, batch, unit)."""
        return self.log_f_sum / self.n

    def forget_unit_log_mean(self) -> np.ndarray:
        """(H,) mean of ln f_t per unit over (time, batch)."""
        return self.log_f_unit / (self.n // self.hidden_size)

    def forget_histogram(self) -> dict:
        return {"edges": self.f_hist_edges.tolist(), "counts": self.f_hist.tolist()}


def unit_interval_bincount(v: np.ndarray, nb: int, y: np.ndarray | None = None, *, exact: bool) -> np.ndarray:
    """What `np.histogram(v, np.linspace(0, 1, nb + 1))` counts, for v in [0, 1] without NaN:
    bin k = [edges[k], edges[k+1]), the last one closed, by arithmetic instead of a search.
    y: float64 scratch of v's shape; exact: v holds float32 values (in any dtype).

    `linspace` makes edges[k] = fl(k * step), step = fl(1 / nb) (and edges[nb] = 1). For
    float32 v, v * nb is exact in float64 (24 + 7 bits) and never lands within rounding of
    an integer it is not (k / nb has no short binary expansion), so its floor is the bin.
    For float64 v the floor of the rounded product can be one off next to an edge: it is
    corrected by comparing v with fl(k * step) exactly as `np.histogram` compares.
    """
    y = np.empty(v.shape) if y is None else y
    np.multiply(v, float(nb), out=y, dtype=np.float64)
    k = y.astype(np.intp)
    np.minimum(k, nb - 1, out=k)
    if not exact:
        step = 1.0 / nb
        np.multiply(k, step, out=y)  # edges[k]
        k -= v < y
        np.add(k, 1, out=k)
        np.multiply(k, step, out=y)  # edges[k + 1] (k < nb here where it matters)
        k -= (v < y) | (k == nb)
    return np.bincount(k.ravel(), minlength=nb)


def gate_statistics(
    gates: np.ndarray, eps: float, stuck_fraction: float = 0.9
) -> tuple[dict, GateAccumulator]:
    acc = GateAccumulator(gates.shape[2] // 4, eps)
    acc.add(gates)
    return acc.result(stuck_fraction), acc


HEATMAP_ROWS = 64  # gate heatmap rows; more units are averaged in bins of consecutive units
HEATMAP_COLUMNS = 600  # gate heatmap columns; more steps are averaged in bins of consecutive steps


def _bin_mean(a: np.ndarray, axis: int, max_bins: int) -> tuple[np.ndarray, int]:
    """Mean over bins of k consecutive entries along `axis` when it is longer than max_bins
    (the last bin may hold fewer); returns (binned array, k).

    The sums are `np.add.reduceat`'s, in a's dtype: a bin's first entry plus the sum of the
    others, which NumPy adds in order when they are fewer than 8 (its pairwise sum); done
    here as k strided adds instead of reduceat's gather (a partial last bin, and k > 8, by
    reduceat itself). The means divide by the counts in float64."""
    n = a.shape[axis]
    k = math.ceil(n / max_bins)
    if k == 1:
        return a, 1
    starts = np.arange(0, n, k)
    counts = np.diff(np.append(starts, n)).astype(np.float64)
    shape = [1] * a.ndim
    shape[axis] = len(starts)
    if k > 8:
        return np.add.reduceat(a, starts, axis=axis) / counts.reshape(shape), k

    def along(*s):  # a slice along `axis`
        return (slice(None),) * axis + (slice(*s),)

    full = n // k  # bins with k entries
    sums = np.empty(a.shape[:axis] + (len(starts),) + a.shape[axis + 1 :], a.dtype)
    rest = a[along(1, full * k, k)].copy()  # entries 1.. of the full bins, added in order
    for j in range(2, k):
        rest += a[along(j, full * k, k)]
    np.add(a[along(0, full * k, k)], rest, out=sums[along(0, full)])
    if full < len(starts):  # the last bin holds fewer entries
        sums[along(full, None)] = np.add.reduceat(a[along(full * k, None)], [0], axis=axis)
    return sums / counts.reshape(shape), k


def gate_heatmap(
    gates: np.ndarray | None,
    max_rows: int = HEATMAP_ROWS,
    max_columns: int = HEATMAP_COLUMNS,
    step_mean: np.ndarray | None = None,
    batch: int | None = None,
) -> dict:
    """`layers[k].gate_heatmap`: each gate's batch-mean activation, units x time, binned.

    gates: one layer's activations (T, B, 4H) in gate order i, f, g, o; or None with
    step_mean, their batch mean per step (T, 4H) as `GateAccumulator(keep_step_mean=True)`
    keeps it, and batch = B. Units are averaged in bins of `units_per_row` consecutive units
    when H > max_rows, steps in bins of `steps_per_column` consecutive steps when
    T > max_columns. Values are rounded to 4 decimals (1e-4 of a gate's 0..1 range; a colour
    map has 256 levels): display data, a third of the JSON of full floats. Each gate's image
    is a float64 array (rows, columns); `heatmap_document` makes the JSON lists.
    """
    if step_mean is None:
        T, B, H4 = gates.shape
        step_mean = gates.reshape(T, B, H4).mean(axis=1)  # (T, 4H): batch mean
    else:
        T, H4 = step_mean.shape
        B = batch
    H = H4 // 4
    mean = step_mean.reshape(T, 4, H)
    img, k_units = _bin_mean(mean, 2, max_rows)  # (T, 4, rows): the four gates binned at once
    img, k_steps = _bin_mean(img, 0, max_columns)  # (columns, 4, rows)
    out: dict = {"batch": B, "units_per_row": k_units, "steps_per_column": k_steps}
    img = np.round(img.astype(np.float64), 4)  # (columns, 4, rows), each gate's image a view of it
    for j, name in enumerate(GATE_NAMES):
        out[name] = img[:, j].T  # (rows, columns)
    return out


def heatmap_document(heat: dict) -> dict:
    """`gate_heatmap`'s result with its images as nested lists (the JSON document's form)."""
    return {key: v.tolist() if isinstance(v, np.ndarray) else v for key, v in heat.items()}


# --------------------------------------------------------------------- gradient flow


def theil_sen_slope(y: np.ndarray, max_points: int = 400) -> float:
    """Median of pairwise slopes of y against its index (robust to spikes); nan if < 2 points.

    Non-finite entries are ignored; long series are thinned evenly to `max_points`.
    """
    y = np.asarray(y, np.float64)
    keep = np.isfinite(y)
    t = None  # the points' steps; None: 0, 1, 2, ..., whose differences j - i _pairs gives
    if not keep.all():
        t, y = np.nonzero(keep)[0].astype(np.float64), y[keep]
    if len(y) < 2:
        return float("nan")
    if len(y) > max_points:
        idx = np.unique(np.linspace(0, len(y) - 1, max_points).round().astype(int))
        t, y = (idx.astype(np.float64) if t is None else t[idx]), y[idx]
    i, j, steps = _pairs(len(y))
    return _median_of(np.subtract(y[j], y[i]) / (steps if t is None else t[j] - t[i]))


def _median_of(x: np.ndarray) -> float:
    """`np.median(x)` of a 1-D float64 temporary (partitioned in place): the middle order
    statistic, or the mean (a + b) / 2 of the middle two, as np.median computes it; nan if x
    has a NaN."""
    n = len(x)
    h = n // 2
    x.partition([h - 1, h, n - 1] if n % 2 == 0 else [h, n - 1])  # n - 1: a NaN sorts last
    if x[-1] != x[-1]:
        return float("nan")
    return float(x[h]) if n % 2 else float((x[h - 1] + x[h]) / 2)


@functools.lru_cache(maxsize=8)
def _pairs(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`np.triu_indices(n, k=1)` and the steps j - i (float64), read-only, made once per
    length (at 400 points building them costs as much as the slopes)."""
    i, j = np.triu_indices(n, k=1)
    steps = (j - i).astype(np.float64)  # = t[j] - t[i] for t = 0, 1, ... (exact)
    i.flags.writeable = j.flags.writeable = steps.flags.writeable = False
    return i, j, steps


def frob_over_time(a: np.ndarray) -> np.ndarray:
    """(T, B, H) -> (T,) Frobenius norm over (batch, hidden), computed in float64.

    Streaming: a chunk of rows at a time is squared into one reused float64 buffer and
    summed by a BLAS matrix-vector product; no full-size copy."""
    T, B, H = a.shape
    return np.sqrt(_sum_squares(a.reshape(T * B, H)).reshape(T, B).sum(axis=1))


def gate_grad_norms(dz: np.ndarray) -> np.ndarray:
    """(T, B, 4H) -> (T, 4): ||dL/dz^gate_t||_F over (batch, unit) per gate i, f, g, o,
    eqs. (10)-(13), computed in float64 (streaming, like `frob_over_time`)."""
    T, B, H4 = dz.shape
    return np.sqrt(_sum_squares(dz.reshape(T * B * 4, H4 // 4)).reshape(T, B, 4).sum(axis=1))


def count_abs_above(a: np.ndarray, level: float) -> int:
    """How many entries of a have |a| > level, a chunk at a time (no full-size mask)."""
    rows = a.reshape(-1, a.shape[-1]) if a.ndim else a.reshape(1, 1)
    R = _rows_per_chunk(*rows.shape)
    mask = np.empty((R, rows.shape[1]), bool)
    total = 0
    for r0 in range(0, rows.shape[0], R):
        r1 = min(rows.shape[0], r0 + R)
        m = mask[: r1 - r0]
        np.greater(rows[r0:r1], level, out=m)
        total += int(np.count_nonzero(m))
        np.less(rows[r0:r1], -level, out=m)
        total += int(np.count_nonzero(m))
    return total


def state_extremes(c: np.ndarray, h: np.ndarray, tanh_c: np.ndarray, level: float) -> tuple:
    """Per step of c, h, tanh_c (T, B, ·): max |c_t| (NaN if any entry is NaN), whether every
    h_t is finite, and how many |tanh c| > level over all steps: from per-step max and min
    (NaN propagates through both), no full-size temporaries."""
    T = c.shape[0]
    c2, h2 = c.reshape(T, -1), h.reshape(T, -1)
    if FUSED is not None and c2.size and h2.size:
        abs_c, h_ok = np.empty(T), np.empty(T, bool)
        t2 = np.ascontiguousarray(tanh_c).reshape(T, -1)
        n = FUSED.state_pass(
            np.ascontiguousarray(c2), np.ascontiguousarray(h2), t2, t2.dtype.type(level), abs_c, h_ok
        )
        return abs_c, h_ok, int(n)
    abs_c = np.maximum(c2.max(axis=1), -c2.min(axis=1)) if c2.size else np.zeros(T)  # (T,) max |c_t|
    h_ok = np.isfinite(h2.max(axis=1)) & np.isfinite(h2.min(axis=1)) if h2.size else np.ones(T, bool)
    return abs_c, h_ok, count_abs_above(tanh_c, level)


def _sum_squares(a: np.ndarray) -> np.ndarray:
    """a (n, m) -> (n,) float64 sum of squares of each row, a chunk of rows at a time."""
    n, m = a.shape
    out = np.zeros(n)
    if not m:
        return out
    if FUSED is not None:
        FUSED.sum_squares(np.ascontiguousarray(a), out)
        return out
    R = _rows_per_chunk(n, m)
    buf = np.empty(R * m)  # float64, reused
    ones = np.ones(m)
    with np.errstate(over="ignore", invalid="ignore"):
        for r0 in range(0, n, R):
            r1 = min(n, r0 + R)
            x = buf[: (r1 - r0) * m].reshape(r1 - r0, m)
            if a.dtype == np.float64:
                np.multiply(a[r0:r1], a[r0:r1], out=x)
            else:  # widen, then square: the same numbers as a mixed-type multiply, without its buffered casts
                np.copyto(x, a[r0:r1])
                np.multiply(x, x, out=x)
            np.matmul(x, ones, out=out[r0:r1])
    return out


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
    decay_fit: dict = field(default_factory=dict)  # `decay_segments`: the decay within the horizon window
    cell_path_open_units: int | None = None  # units whose own prod f stays above vanishing_ratio over T
    cell_path_horizon_max: float | None = None  # the longest per-unit cell-path horizon (steps)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


FIT_MIN_POINTS = 3  # points per fitted segment
FIT_RESOLUTION = 1e-3  # residuals of ln ||dL/dc|| below this (0.1%) count as a perfect fit
FIT_RATE_CHANGE = 0.25  # two segments only if their rates differ by more than this fraction


def _line_sse(k: np.ndarray, y: np.ndarray) -> tuple[float, float, float, np.ndarray]:
    """Least-squares line y ≈ a + s k: (intercept a, slope s, sum of squared residuals, residuals)."""
    A = np.empty((len(k), 2))  # (n, 2) [1 | k]
    A[:, 0], A[:, 1] = 1.0, k
    coef, *_ = np.linalg.lstsq(A, y, rcond=None)
    r = y - A @ coef
    return float(coef[0]), float(coef[1]), float(r @ r), r


def _hinge_sse(k: np.ndarray, y: np.ndarray, b: float) -> tuple[float, float, float, float]:
    """Continuous two-piece line with its corner at k = b: (intercept, slope before, slope after, SSE)."""
    A = np.empty((len(k), 3))  # (n, 3) [1 | k | max(k - b, 0)]
    A[:, 0], A[:, 1] = 1.0, k
    np.maximum(k - b, 0.0, out=A[:, 2])
    coef, *_ = np.linalg.lstsq(A, y, rcond=None)
    r = y - A @ coef
    return float(coef[0]), float(coef[1]), float(coef[1] + coef[2]), float(r @ r)


def _corner_candidates(k: np.ndarray, y: np.ndarray, r: np.ndarray, sse1: float) -> np.ndarray:
    """The corners b = k[i] (i = 2 .. m-3) whose hinge fit can have the smallest SSE, found for
    all b at once; `_hinge_sse` (a least-squares solve per corner) then decides among them.

    Adding the regressor u = max(k - b, 0) to the line [1, k] lowers the SSE by
    (r·u)^2 / ||u_perp||^2, r the line's residuals (orthogonal to 1 and k) and u_perp the part
    of u orthogonal to them; every sum over u is a suffix sum over the points after b. The
    estimates agree with the solver's SSE to ~1e-12 of sse1 (and ~1e-14 ||r|| ||y|| of its
    rounding); every corner within a much wider margin of the smallest estimate is kept, so
    the solver sees every corner that can win and picks the same one as trying them all.
    """
    m = len(k)
    kc = k - k.sum() / m  # centred steps (k's mean): span(1, k) = span(1, kc), 1 ⊥ kc
    v = np.empty((m + 1, 4))  # columns kc, kc², r kc, r; row m: 0
    v[:m, 0], v[:m, 2], v[:m, 3], v[m] = kc, r, r, 0.0
    np.multiply(kc, kc, out=v[:m, 1])
    v[:m, 2] *= kc
    # sum of each column over j > i, for each i (the same additions, from the last, as a cumsum of each)
    s1, s2, s_rkc, s_r = np.cumsum(v[:0:-1], axis=0)[::-1].T
    n_after = np.arange(m - 1, -1, -1, dtype=np.float64)  # points after b
    su = s1 - kc * n_after  # Σ u
    suu = s2 - 2 * kc * s1 + kc * kc * n_after  # Σ u²
    sku = s2 - kc * s1  # Σ kc u
    den = suu - su * su / m - sku * sku / (kc @ kc)  # ||u_perp||²
    ru = s_rkc - kc * s_r  # r·u
    with np.errstate(divide="ignore", invalid="ignore"):
        est = sse1 - ru * ru / den  # (m,) hinge SSE with its corner at k[i]
    idx = np.arange(FIT_MIN_POINTS - 1, m - FIT_MIN_POINTS + 1)
    e = est[idx]
    if not np.isfinite(e).all():
        return idx  # cannot rank them: try every corner
    margin = 1e-6 * abs(sse1) + 1e-9 * math.sqrt(abs(sse1)) * float(np.sqrt(y @ y)) + 1e-300
    return idx[e <= e.min() + margin]


def _bic(sse: float, n: int, params: int) -> float:
    return n * math.log(max(sse, n * FIT_RESOLUTION**2) / n) + params * math.log(n)


def _segment(k0: int, k1: int, y0: float, slope: float) -> dict:
    """One fitted piece over k0..k1 steps back; y0: the fitted ln ||dL/dc|| at k0."""
    rate = -slope
    return {
        "steps_back": [k0, k1],
        "rate": rate,
        "factor_per_step": math.exp(-rate) if rate > -700 else math.inf,
        "fitted_norm": [math.exp(y0), math.exp(y0 + slope * (k1 - k0))],  # at k0 and k1 (for drawing)
    }


def decay_segments(grad_c_norm: np.ndarray, horizon: int, reaches_start: bool) -> dict:
    """How ||dL/dc|| decays within the horizon window, as one or two exponentials.

    The window is k = 0..K steps back from the loss (K = the horizon, where the norm first
    drops below the threshold, or T - 1 when it never does). ln ||dL/dc|| is fitted there by
    least squares with one line, and with two lines joined at a change point k = b (every
    b leaving >= 3 points on each side is tried); two are kept when the BIC prefers them and
    their rates differ by more than a quarter. A trained model's decay is often fast near
    the loss and slow further back (or the reverse), which no single rate describes.

    Returns {"window_steps_back": [0, K], "segments": [{"steps_back": [k0, k1], "rate",
    "factor_per_step", "fitted_norm": [at k0, at k1]}, ...] (0, 1 or 2; rate per step back,
    > 0 decays),
    "change_steps_back": b or None, "rms_residual": of ln ||dL/dc|| about the fit}.
    """
    n = np.asarray(grad_c_norm, np.float64)[::-1]  # index k = steps back from the loss
    with np.errstate(divide="ignore", invalid="ignore"):
        return _decay_fit(np.log(n), horizon, reaches_start)


def _decay_fit(log_back: np.ndarray, horizon: int, reaches_start: bool) -> dict:
    """`decay_segments` from ln ||dL/dc|| by steps back (T,), non-finite where the norm is 0,
    inf or NaN (those points are left out)."""
    T = len(log_back)
    K = T - 1 if reaches_start else min(int(horizon), T - 1)
    out: dict = {"window_steps_back": [0, K], "segments": [], "change_steps_back": None, "rms_residual": None}
    y = log_back[: K + 1]
    keep = np.isfinite(y)
    if keep.all():
        k = np.arange(K + 1, dtype=np.float64)
    else:
        k, y = np.nonzero(keep)[0].astype(np.float64), y[keep]
    m = len(k)
    if m < FIT_MIN_POINTS:
        return out
    a, slope, sse1, r = _line_sse(k, y)
    best = None
    # At or below the resolution floor one line fits as well as the BIC can tell (`_bic`
    # floors both SSEs), and two lines cost more parameters: no corner can win.
    if m >= 2 * FIT_MIN_POINTS and sse1 > m * FIT_RESOLUTION**2:
        for b in k[_corner_candidates(k, y, r, sse1)]:  # in order, as trying every corner would
            fit = _hinge_sse(k, y, float(b))
            if best is None or fit[3] < best[4]:
                best = (float(b), *fit)
    if best is not None:
        b, a2, s1, s2, sse2 = best
        differ = abs(s1 - s2) > FIT_RATE_CHANGE * max(abs(s1), abs(s2))
        if differ and _bic(sse2, m, 4) < _bic(sse1, m, 2):
            out["segments"] = [_segment(0, int(b), a2, s1), _segment(int(b), int(k[-1]), a2 + s1 * b, s2)]
            out["change_steps_back"] = int(b)
            out["rms_residual"] = math.sqrt(sse2 / m)
            return out
    out["segments"] = [_segment(0, int(k[-1]), a, slope)]
    out["rms_residual"] = math.sqrt(sse1 / m)
    return out


def flow_summary(
    grad_c_norm: np.ndarray,
    forget_log_mean: float,
    vanishing_ratio: float,
    source: str,
    forget_unit_log_mean: np.ndarray | None = None,
) -> FlowSummary:
    """Decay rate, ratio, horizon and cell-path retention from ||dL/dc_t||, t = 1..T;
    with the per-unit mean ln f (H,), how many units keep their own cell path open over T."""
    n = np.asarray(grad_c_norm, np.float64)
    T = len(n)
    bad = ~np.isfinite(n)
    first_bad = int(np.nonzero(bad)[0].max()) + 1 if bad.any() else None
    with np.errstate(divide="ignore", invalid="ignore"):
        back = np.log(n[::-1])  # index k = steps back from the loss; not finite where n is 0, inf or NaN
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
    open_units = longest = None
    if forget_unit_log_mean is not None:
        mlf = np.asarray(forget_unit_log_mean, np.float64)  # (H,) mean ln f per unit, <= 0
        with np.errstate(divide="ignore", invalid="ignore"):
            unit_h = np.where(mlf < 0, math.log(vanishing_ratio) / mlf, math.inf)  # (H,) steps
        unit_h = np.where(np.isnan(unit_h), 0.0, unit_h)
        open_units, longest = int(np.sum(unit_h >= T)), float(unit_h.max()) if unit_h.size else None
    return FlowSummary(
        decay_fit=_decay_fit(back, horizon, reaches),
        cell_path_open_units=open_units,
        cell_path_horizon_max=longest,
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


def unit_label(layer: int | None, direction: str | None = None) -> str:
    """ "layer 0", or "layer 0 forward" / "layer 0 reverse" for one direction of a bidirectional layer."""
    if layer is None:
        return ""
    return f"layer {layer}" if direction is None else f"layer {layer} {direction}"
