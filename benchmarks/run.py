"""Benchmarks: the engine's forward + BPTT against its matrix-product floor and PyTorch.

    make bench                                   # everything, as in docs/performance.md
    .venv/bin/python benchmarks/run.py --shapes S,M --dtypes float32 --repeats 3
    .venv/bin/python benchmarks/run.py --json out.json --no-startup

What is timed, for each shape, dtype and regime (1 layer, loss mse on the last step, a
linear head of one output, PyTorch's default init U(-1/sqrt(H), 1/sqrt(H)) plus a
forget-gate bias of 2 ("healthy") or 0 ("vanishing"), x ~ N(0, 1)):

  engine    `lstm_diag.core.engine.run`: forward, loss, BPTT keeping dL/dc_t, dL/dh_t and
            dL/dz_t of every step, every parameter gradient and dL/dx (the work of
            `analyze` without rendering).
  floor     the same matrix products alone, into preallocated outputs: the input
            projection (T*B, I) @ (I, 4H), T recurrent (B, H) @ (H, 4H) forward, T
            (B, 4H) @ (4H, H) backward, the two parameter-gradient GEMMs over T*B rows
            and dL/dx (T*B, 4H) @ (4H, I). No implementation can beat it by much.
  fused     torch `nn.LSTM` + `nn.Linear`, forward and backward (dL/dx too), which
            does not expose the per-step gradients.
  unrolled  torch `nn.LSTMCell` in a Python loop with `retain_grad()` on every c_t and
            h_t: the way a PyTorch user gets the same per-step gradients.

Each repeat runs every implementation once, in turn (so that drift of the machine hits
all alike), each after a short sleep (spinning BLAS/OpenMP workers) and after touching
and freeing memory (see `warm_memory`); the table shows the median over repeats. torch
runs with as many threads as the BLAS numpy uses. Start-up: the median wall time of
`lstm-diag --help` and `lstm-diag --version` as fresh processes, beside `python -c pass`.

Environment: the BLAS variables (OPENBLAS_CORETYPE, OPENBLAS_L2_SIZE, OMP_NUM_THREADS, ...)
are reported, never changed.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lstm_diag import __version__
from lstm_diag.core import engine

SHAPES = {  # name: (B, T, I, H)
    "S": (16, 100, 32, 64),
    "M": (32, 200, 128, 256),
    "L": (8, 2000, 64, 128),
    "XL": (64, 100, 256, 512),
}
OUTPUT_SIZE = 1
# Forget-gate bias added to PyTorch's default init. "healthy": b_f = 2, dL/dc_t decays
# but stays far above the subnormal range on every shape (>= 1e-24 in max |dL/dc_0|);
# "vanishing": b_f = 0 (PyTorch's default), dL/dc_t underflows into subnormal numbers on
# M and L, whose arithmetic is 10-60x slower on x86 for every implementation.
REGIMES = {"healthy": 2.0, "vanishing": 0.0}
ENV_VARS = (
    "OPENBLAS_CORETYPE",
    "OPENBLAS_L2_SIZE",
    "OPENBLAS_NUM_THREADS",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
)

# Targets of issue 7, checked on every run.
FLOOR_TARGET = 1.3  # engine / floor on these shapes
FLOOR_SHAPES = ("M", "L", "XL")
FUSED_SLACK = 1.1  # engine / fused where the engine need not be strictly faster
UNROLLED_TARGET = 3.0  # unrolled / engine


# ------------------------------------------------------------------------- problem


@dataclass
class Problem:
    name: str
    dtype: str
    spec: engine.Spec
    params: dict[str, np.ndarray]
    x: np.ndarray  # (B, T, I)
    y: np.ndarray  # (B, O)

    @property
    def dims(self) -> tuple[int, int, int, int]:
        B, T, I = self.x.shape
        return B, T, I, self.spec.hidden_size

    def result_bytes(self) -> int:
        B, T, I, H = self.dims
        return engine_result_bytes(B, T, H, self.dtype)

    def gemm_flops(self) -> float:
        """Multiply-adds x 2 of the floor's GEMMs."""
        B, T, I, H = self.dims
        N = T * B
        return 2.0 * N * 4 * H * (I + H) * 3  # forward (x, h), backward (dW_ih, dW_hh, dx, dh)


def engine_result_bytes(B: int, T: int, H: int, dtype: str) -> int:
    """What the engine allocates for its results: gates and dz (T, B, 4H); c, h,
    tanh_c, dc, dh (T(+1), B, H)."""
    return (2 * 4 * H + 5 * H) * T * B * np.dtype(dtype).itemsize


def make_problem(name: str, dtype: str, regime: str = "healthy", seed: int = 0) -> Problem:
    B, T, I, H = SHAPES[name]
    spec = engine.Spec(I, H, 1, OUTPUT_SIZE)
    rng = np.random.default_rng(seed)
    bound = 1.0 / np.sqrt(H)
    params = {k: rng.uniform(-bound, bound, s).astype(dtype) for k, s in spec.param_shapes().items()}
    params["bias_ih_l0"][H : 2 * H] += REGIMES[regime]  # forget-gate bias b_f
    x = rng.normal(size=(B, T, I)).astype(dtype)
    y = rng.normal(size=(B, OUTPUT_SIZE)).astype(dtype)
    return Problem(name, dtype, spec, params, x, y)


# ------------------------------------------------------------------ implementations


def engine_fn(p: Problem) -> Callable[[], object]:
    def run():
        return engine.run(p.params, p.spec, p.x, p.y, "mse", "last")

    return run


def floor_fn(p: Problem) -> Callable[[], object]:
    """The engine's matrix products alone, with every output preallocated."""
    B, T, I, H = p.dims
    dt = p.params["weight_hh_l0"].dtype
    rng = np.random.default_rng(1)
    W_ih = p.params["weight_ih_l0"]  # (4H, I)
    W_hh = p.params["weight_hh_l0"]  # (4H, H)
    W_hh_T = np.ascontiguousarray(W_hh.T)  # (H, 4H)
    X = np.ascontiguousarray(np.swapaxes(p.x, 0, 1)).reshape(T * B, I)  # (T*B, I)
    Hs = rng.uniform(-1, 1, (T + 1, B, H)).astype(dt)  # h_0 .. h_T
    DZ = rng.normal(0, 1e-3, (T, B, 4 * H)).astype(dt)  # dL/dz_t
    Z = np.empty((T * B, 4 * H), dt)
    rec = np.empty((B, 4 * H), dt)
    dh = np.empty((B, H), dt)
    gW_ih = np.empty((4 * H, I), dt)
    gW_hh = np.empty((4 * H, H), dt)
    dX = np.empty((T * B, I), dt)
    DZ2 = DZ.reshape(T * B, 4 * H)
    H_prev = Hs[:-1].reshape(T * B, H)

    def run():
        np.matmul(X, W_ih.T, out=Z)  # (T*B, I) @ (I, 4H)   input part of eq. (1)
        for t in range(T):
            np.matmul(Hs[t], W_hh_T, out=rec)  # (B, H) @ (H, 4H)   eq. (1)
        for t in range(T - 1, -1, -1):
            np.matmul(DZ[t], W_hh, out=dh)  # (B, 4H) @ (4H, H)   eq. (8)
        np.matmul(DZ2.T, X, out=gW_ih)  # (4H, T*B) @ (T*B, I)   eq. (14)
        np.matmul(DZ2.T, H_prev, out=gW_hh)  # (4H, T*B) @ (T*B, H)   eq. (15)
        np.matmul(DZ2, W_ih, out=dX)  # (T*B, 4H) @ (4H, I)   dL/dx
        return Z

    return run


def torch_fns(p: Problem, torch) -> dict[str, Callable[[], object]]:
    """PyTorch fused nn.LSTM and unrolled LSTMCell, same parameters and data."""
    B, T, I, H = p.dims
    tdt = getattr(torch, p.dtype)
    P = {k: torch.from_numpy(v.copy()) for k, v in p.params.items()}
    lstm = torch.nn.LSTM(I, H, batch_first=True).to(tdt)
    cell = torch.nn.LSTMCell(I, H).to(tdt)
    head = torch.nn.Linear(H, OUTPUT_SIZE).to(tdt)
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(lstm, f"{name}_l0").copy_(P[f"{name}_l0"])
            getattr(cell, name).copy_(P[f"{name}_l0"])
        head.weight.copy_(P["head.weight"])
        head.bias.copy_(P["head.bias"])
    x = torch.from_numpy(p.x.copy())
    y = torch.from_numpy(p.y.copy())
    mse = torch.nn.functional.mse_loss
    modules = (lstm, cell, head)

    def zero():
        for m in modules:
            for q in m.parameters():
                q.grad = None

    def fused():
        zero()
        xr = x.detach().requires_grad_(True)
        out, _ = lstm(xr)  # (B, T, H)
        loss = mse(head(out[:, -1]), y)
        loss.backward()
        return loss, xr.grad, lstm

    def unrolled():
        zero()
        xr = x.detach().requires_grad_(True)
        h = torch.zeros(B, H, dtype=tdt)
        c = torch.zeros(B, H, dtype=tdt)
        hs, cs = [], []
        for t in range(T):
            h, c = cell(xr[:, t], (h, c))
            h.retain_grad()
            c.retain_grad()
            hs.append(h)
            cs.append(c)
        loss = mse(head(h), y)
        loss.backward()
        return loss, xr.grad, cell, hs, cs

    return {"fused": fused, "unrolled": unrolled}


def check_agreement(p: Problem, fns: dict[str, Callable[[], object]]) -> dict[str, float]:
    """Largest relative difference of the engine's results from PyTorch's: proof that
    the timed implementations do the same work."""
    fwd, bwd = fns["engine"]()
    scale = {k: float(np.abs(v).max()) for k, v in bwd.params.items()}
    out = {}
    if "fused" in fns:
        loss, dx, lstm = fns["fused"]()
        err = max(
            float(np.abs(bwd.params[f"{n}_l0"] - getattr(lstm, f"{n}_l0").grad.numpy()).max())
            / scale[f"{n}_l0"]
            for n in ("weight_ih", "weight_hh", "bias_ih")
        )
        out["fused_param_grads"] = err
    if "unrolled" in fns:
        loss, dx, cell, hs, cs = fns["unrolled"]()
        dc = np.stack([c.grad.numpy() for c in cs])  # (T, B, H)
        dh = np.stack([h.grad.numpy() for h in hs])
        lg = bwd.layers[0]
        out["unrolled_dc"] = float(np.abs(lg.dc - dc).max() / np.abs(dc).max())
        out["unrolled_dh"] = float(np.abs(lg.dh - dh).max() / np.abs(dh).max())
    return out


# ------------------------------------------------------------------------- timing


def warm_memory(nbytes: int) -> None:
    """Touch and free nbytes, so that the next allocations get pages the OS has at hand.

    Virtual machines with free page reporting (virtio-balloon, as here) hand memory that
    stayed free for ~2 s back to the host; touching it again costs ~1.5-2 ms per MB,
    ten times a normal page fault. Every implementation allocates its results, and the
    runs here are seconds apart, so without this each would start on such cold memory.
    """
    if nbytes > 0:
        a = np.empty(nbytes // 8)
        a.fill(0.0)
        del a


def time_round_robin(
    fns: dict[str, Callable[[], object]], repeats: int, warmup: int, settle: float, prefault: int
) -> dict[str, list]:
    """Each repeat runs every implementation once, in turn. Before each timed run: a
    `settle` s sleep (BLAS and OpenMP worker threads spin for a while after a call,
    OpenBLAS up to ~0.1 s, stealing a core from whatever runs next), then
    `warm_memory(prefault)`."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    gc_was = gc.isenabled()
    gc.disable()
    try:
        for _ in range(repeats):
            for name, fn in fns.items():
                time.sleep(settle)
                warm_memory(prefault)
                t0 = time.perf_counter()
                result = fn()
                times[name].append(time.perf_counter() - t0)
                del result
            gc.collect()
    finally:
        if gc_was:
            gc.enable()
    return times


def time_command(argv: list[str], repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        out.append(time.perf_counter() - t0)
    return out


def startup(repeats: int) -> dict[str, dict]:
    exe = shutil.which("lstm-diag", path=str(Path(sys.executable).parent)) or shutil.which("lstm-diag")
    cmds = {"python -c pass": [sys.executable, "-c", "pass"]}
    if exe:
        cmds["lstm-diag --help"] = [exe, "--help"]
        cmds["lstm-diag --version"] = [exe, "--version"]
    res = {}
    for label, argv in cmds.items():
        time_command(argv, 2)  # warm the page cache
        ts = time_command(argv, repeats)
        res[label] = {"median_s": statistics.median(ts), "min_s": min(ts), "max_s": max(ts), "runs": repeats}
    return res


# -------------------------------------------------------------------------- machine


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def blas_info() -> list[dict]:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        cfg = getattr(np, "__config__", None)
        blas = getattr(cfg, "CONFIG", {}).get("Build Dependencies", {}).get("blas", {})
        return [{"internal_api": blas.get("name"), "version": blas.get("version"), "num_threads": None}]
    keep = ("user_api", "internal_api", "version", "num_threads", "architecture", "threading_layer", "prefix")
    return [{k: d.get(k) for k in keep} for d in threadpool_info()]


def blas_threads(info: list[dict]) -> int:
    for d in info:
        if d.get("user_api") == "blas" and d.get("num_threads"):
            return int(d["num_threads"])
    return os.cpu_count() or 1


def machine(torch) -> dict:
    info = blas_info()
    m = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "lstm_diag": __version__,
        "blas": info,
        "env": {k: os.environ.get(k) for k in ENV_VARS},
    }
    if torch is not None:
        m["torch"] = torch.__version__
        m["torch_threads"] = torch.get_num_threads()
        m["torch_blas"] = "MKL" if torch.backends.mkl.is_available() else "other"
    return m


# ---------------------------------------------------------------------- reporting


def verdicts(name: str, dtype: str, r: dict) -> list[str]:
    """The issue-7 targets this row meets (ok) or misses (MISS)."""
    out = []

    def mark(ok: bool, text: str) -> None:
        out.append(("ok " if ok else "MISS ") + text)

    if name in FLOOR_SHAPES:
        mark(r["engine/floor"] <= FLOOR_TARGET, f"floor<={FLOOR_TARGET}")
    if "engine/fused" in r:
        if name == "M" or dtype == "float64":
            mark(r["engine/fused"] < 1.0, "<fused")
        else:
            mark(r["engine/fused"] <= FUSED_SLACK, f"fused<={FUSED_SLACK}")
    if "unrolled/engine" in r:
        mark(r["unrolled/engine"] >= UNROLLED_TARGET, f"unrolled>={UNROLLED_TARGET:g}x")
    return out


def markdown(results: list[dict], start: dict | None) -> str:
    has_torch = any("fused_ms" in r for r in results)
    head = ["regime", "shape (B, T, I, H)", "dtype", "engine ms", "floor ms", "engine/floor"]
    if has_torch:
        head += ["fused ms", "engine/fused", "unrolled ms", "unrolled/engine"]
    head += ["targets"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        B, T, I, H = SHAPES[r["shape"]]
        row = [
            r["regime"],
            f"{r['shape']} ({B}, {T}, {I}, {H})",
            r["dtype"],
            f"{r['engine_ms']:.1f}",
            f"{r['floor_ms']:.1f}",
            f"{r['engine/floor']:.2f}",
        ]
        if has_torch:
            row += [
                f"{r['fused_ms']:.1f}" if "fused_ms" in r else "-",
                f"{r['engine/fused']:.2f}" if "engine/fused" in r else "-",
                f"{r['unrolled_ms']:.1f}" if "unrolled_ms" in r else "-",
                f"{r['unrolled/engine']:.1f}" if "unrolled/engine" in r else "-",
            ]
        row.append(", ".join(r["targets"]))
        lines.append("| " + " | ".join(row) + " |")
    if start:
        lines += ["", "| start-up (fresh process) | median s | min s | max s |", "|---|---|---|---|"]
        for label, st in start.items():
            lines.append(f"| `{label}` | {st['median_s']:.3f} | {st['min_s']:.3f} | {st['max_s']:.3f} |")
    return "\n".join(lines)


def describe(m: dict, args) -> str:
    blas = "; ".join(
        f"{d.get('internal_api')} {d.get('version')} ("
        + (f"{d['architecture']}, {d['num_threads']} threads" if d.get("num_threads") else "no threadpoolctl")
        + ")"
        for d in m["blas"]
        if d.get("user_api", "blas") == "blas"
    )
    env = ", ".join(f"{k}={v}" for k, v in m["env"].items() if v is not None) or "none set"
    lines = [
        f"machine: {m['cpu']}, {m['cores']} cores; {m['platform']}",
        f"python {m['python']}, numpy {m['numpy']}, BLAS: {blas}",
        f"BLAS environment variables: {env}",
    ]
    if "torch" in m:
        lines.append(f"torch {m['torch']} ({m['torch_blas']}), torch threads {m['torch_threads']}")
    lines.append(
        f"repeats {args.repeats} (median), warm-up {args.warmup}, settle {args.settle} s, "
        f"prefault {args.prefault:g}x; "
        f"load average {m['load_start']}"
    )
    return "\n".join(lines)


# ----------------------------------------------------------------------------- main


def parse_args(argv=None):
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--shapes", default="S,M,L,XL", help="comma-separated, from " + ",".join(SHAPES))
    ap.add_argument("--dtypes", default="float32,float64")
    ap.add_argument("--regimes", default="healthy,vanishing", help="from " + ",".join(REGIMES))
    ap.add_argument("--repeats", type=int, default=5, help="timed runs per implementation (median)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument(
        "--settle", type=float, default=0.25, help="seconds of sleep before each timed run (default 0.25)"
    )
    ap.add_argument(
        "--threads", type=int, help="BLAS and torch threads (needs threadpoolctl); default: what BLAS uses"
    )
    ap.add_argument(
        "--prefault",
        type=float,
        default=2.0,
        help="before each timed run, touch and free this many times the engine's result size "
        "(0: off; see warm_memory)",
    )
    ap.add_argument("--no-torch", action="store_true", help="skip PyTorch even if importable")
    ap.add_argument("--no-startup", action="store_true", help="skip the start-up timing")
    ap.add_argument("--startup-repeats", type=int, default=20)
    ap.add_argument("--json", type=Path, help="also write all results and timings here")
    args = ap.parse_args(argv)
    args.shapes = listed(ap, args.shapes, SHAPES, "shapes", upper=True)
    args.dtypes = listed(ap, args.dtypes, ("float32", "float64"), "dtypes")
    args.regimes = listed(ap, args.regimes, REGIMES, "regimes")
    return args


def listed(ap: argparse.ArgumentParser, value: str, allowed, what: str, upper: bool = False) -> list[str]:
    """A comma-separated option as a list, every item one of `allowed` (else a usage error)."""
    items = [v.strip().upper() if upper else v.strip() for v in value.split(",") if v.strip()]
    for v in items:
        if v not in allowed:
            ap.error(f"--{what}: unknown {v!r}; choose from {', '.join(allowed)}")
    return items


def limit_threads(n: int | None):
    """A context that holds the BLAS to n threads (threadpoolctl), or does nothing."""
    if n is None:
        return contextlib.nullcontext()
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        sys.exit("--threads needs threadpoolctl: .venv/bin/pip install threadpoolctl")
    return threadpool_limits(n, user_api="blas")


def measure(p: Problem, regime: str, torch, args) -> dict:
    fns = {"engine": engine_fn(p), "floor": floor_fn(p)}
    if torch is not None:
        fns.update(torch_fns(p, torch))
    check = check_agreement(p, fns) if torch is not None else {}
    prefault = int(p.result_bytes() * args.prefault)
    times = time_round_robin(fns, args.repeats, args.warmup, args.settle, prefault)
    med = {k: statistics.median(v) for k, v in times.items()}
    r = {
        "regime": regime,
        "shape": p.name,
        "dtype": p.dtype,
        "dims": dict(zip("BTIH", p.dims, strict=True)),
        "times_s": times,
        "engine_ms": 1e3 * med["engine"],
        "floor_ms": 1e3 * med["floor"],
        "floor_gflops": p.gemm_flops() / med["floor"] / 1e9,
        "engine/floor": med["engine"] / med["floor"],
        "agreement": check,
    }
    if "fused" in med:
        r["fused_ms"] = 1e3 * med["fused"]
        r["engine/fused"] = med["engine"] / med["fused"]
        r["unrolled_ms"] = 1e3 * med["unrolled"]
        r["unrolled/engine"] = med["unrolled"] / med["engine"]
    r["targets"] = verdicts(p.name, p.dtype, r)
    return r


def main(argv=None) -> int:
    args = parse_args(argv)
    torch = None
    if not args.no_torch:
        try:
            import torch
        except ImportError:
            print("torch not importable: timing the engine and the floor only", file=sys.stderr)
    with limit_threads(args.threads):
        threads = args.threads or blas_threads(blas_info())
        if torch is not None:
            torch.set_num_threads(threads)
        m = machine(torch)
        m["load_start"] = [round(v, 2) for v in os.getloadavg()]
        print(describe(m, args), file=sys.stderr)
        if m["load_start"][0] > 0.5:
            print("warning: other processes are using the CPU; timings will be noisy", file=sys.stderr)

        results = []
        for regime in args.regimes:
            for dtype in args.dtypes:
                for name in args.shapes:
                    r = measure(make_problem(name, dtype, regime), regime, torch, args)
                    results.append(r)
                    line = f"{regime} {name} {dtype}: engine {r['engine_ms']:.1f} ms"
                    line += f", floor {r['floor_ms']:.1f} ms"
                    if "fused_ms" in r:
                        line += f", fused {r['fused_ms']:.1f} ms, unrolled {r['unrolled_ms']:.1f} ms"
                    print(line, file=sys.stderr, flush=True)
    start = None if args.no_startup else startup(args.startup_repeats)
    m["load_end"] = [round(v, 2) for v in os.getloadavg()]
    print(markdown(results, start))
    print(f"\nload average (1, 5, 15 min): {m['load_start']} at start, {m['load_end']} at end")
    if args.json:
        doc = {"machine": m, "args": {k: str(v) for k, v in vars(args).items()}, "results": results}
        doc["startup"] = start
        args.json.write_text(json.dumps(doc, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
