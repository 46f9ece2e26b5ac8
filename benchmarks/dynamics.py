"""Benchmark: what the dynamics section (docs/dynamics.md) adds to `lstm-diag analyze`.

    make bench-dynamics                                    # S, M, L, XL; float32 and float64
    .venv/bin/python benchmarks/dynamics.py --shapes M --dtypes float32 --rounds 5
    .venv/bin/python benchmarks/dynamics.py --parts        # where the section's time goes

Ratios (the default): the issue-19 budget, the section at most DYNAMICS_BUDGET (0.4) x
`engine.run` at the default settings, against both engines. Each contender runs in its own
fresh process, one thread, timed in process CPU time (benchmarks/isolated.py's `cpu` mode,
contenders engine-numpy, engine-fast and dynamics: `analysis.dynamics_section` on one
engine.run's caches, what `--no-dynamics` removes); rounds alternate the order; a ratio is
the median of the per-round ratios. The load average is printed with every row.

Parts (`--parts`): one process per shape and dtype, one thread, CPU time, median of
`--repeats`: the pieces of `core.dynamics.layer_dynamics` at the section's settings
(local derivatives, Lyapunov sweep with its QR factorizations, per-step norms, gradient
fit, and the window product, which is off by default, timed at window_k = 4 for reference),
beside engine.run on both engines.

Exit status 1 if a ratio misses the budget (docs/dynamics.md, "Cost", says where it does).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SHAPES = ("S", "M", "L", "XL")  # benchmarks/run.py's
DYNAMICS_BUDGET = 0.4  # issue 19: the section at most this fraction of engine.run
THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")


def load() -> str:
    return "load " + " ".join(f"{v:.2f}" for v in os.getloadavg())


# ------------------------------------------------------------------ ratios (isolated)


def ratios(args) -> list[dict]:
    sys.path.insert(0, str(HERE))
    import importlib.util

    from isolated import measure

    contenders = ["engine-numpy", "dynamics"]
    if importlib.util.find_spec("numba") is not None:
        contenders.insert(1, "engine-fast")
    rows = []
    for dtype in args.dtypes:
        for shape in args.shapes:
            before = load()
            r = measure(contenders, shape, dtype, "healthy", "cpu", args.rounds, args.repeats)
            r["load"] = [before, load()]
            rows.append(r)
            line = ", ".join(f"{c} {v:.1f} ms" for c, v in r["ms"].items())
            line += "; " + ", ".join(f"{k} {v:.2f}" for k, v in r["ratios"].items())
            print(f"{shape} {dtype}: {line} ({before} -> {r['load'][1]})", file=sys.stderr, flush=True)
    return rows


def ratio_table(rows: list[dict]) -> str:
    out = [
        "| shape | dtype | engine numpy | engine fast | dynamics | / engine numpy | / engine fast "
        "| load (1, 5, 15 min) |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        ms, q = r["ms"], r["ratios"]
        cells = []
        for key in ("dynamics/engine-numpy", "dynamics/engine-fast"):
            v = q.get(key)
            cells.append("-" if v is None else f"{v:.2f}" if v <= DYNAMICS_BUDGET else f"**{v:.2f}**")
        fast = f"{ms['engine-fast']:.1f} ms" if "engine-fast" in ms else "-"
        out.append(
            f"| {r['shape']} | {r['dtype']} | {ms['engine-numpy']:.1f} ms | {fast} | "
            f"{ms['dynamics']:.1f} ms | {cells[0]} | {cells[1]} | {r['load'][0][5:]} |"
        )
    return "\n".join(out)


# ------------------------------------------------------------------- parts (in process)


def parts_worker(shape: str, dtype: str, repeats: int) -> dict:
    """One thread (set by the caller's environment), CPU time, median of repeats."""
    sys.path.insert(0, str(HERE))
    import numpy as np
    from run import make_problem

    from lstm_diag.core import backends, engine
    from lstm_diag.core import dynamics as dy
    from lstm_diag.setup.config import Config

    d = Config().diagnostics
    p = make_problem(shape, dtype)
    B, T, I, H = p.dims
    fwd, bwd = engine.run(p.params, p.spec, p.x, p.y, "mse", "last")
    W = p.params["weight_hh_l0"]
    S = slice(0, min(d.dynamics_samples, B))
    cache = dy._samples(fwd.layers[0], S.stop)
    dc = bwd.layers[0].dc[:, S]
    dt = dy._computed_in(cache, W, np.float32 if d.dynamics_dtype == "float32" else None)
    sweep = min(T, d.lyapunov_steps or T)
    t0, warm = T - sweep, sweep // 4
    stride = -(-T // d.norm_points)
    steps = np.arange(T - 1, -1, -stride)[::-1]
    W_T = np.ascontiguousarray(np.asarray(W, dt).T)
    one = dy._samples(cache, 1)
    jac = dy.StateJacobians.from_cache(cache, W, slice(t0, T), W_T, dt)
    sub = dy.StateJacobians.from_cache(one, W, steps, W_T, dt)
    last = dy.StateJacobians.from_cache(one, W, slice(T - d.window, T), W_T, dt)
    k = min(d.lyapunov_k, 2 * H)

    def engine_on(name):
        def run():
            backends.select(name, dtype)
            engine.run(p.params, p.spec, p.x, p.y, "mse", "last")

        return run

    def local():
        dy.StateJacobians.from_cache(cache, W, slice(t0, T), W_T, dt)
        dy.StateJacobians.from_cache(one, W, steps, W_T, dt)

    fns = {
        "engine numpy": engine_on("numpy"),
        "engine fast": engine_on("fast") if backends.fast_installed() else None,
        "local derivatives": local,
        "Lyapunov sweep": lambda: dy.lyapunov_spectrum(jac, k, warm, None, 0),
        "per-step norms": lambda: (dy.spectral_norms(sub, 12, 0), dy.dcdc_norms(sub, 12, 0)),
        "gradient fit": lambda: dy.gradient_growth_rates(dc, t0 + warm, T),
        "whole layer_dynamics": lambda: dy.layer_dynamics(
            cache,
            W,
            k=k,
            window=d.window,
            window_k=d.window_k,
            window_samples=1,
            norm_samples=1,
            norm_points=d.norm_points,
            grad_c=dc,
            lyapunov_steps=d.lyapunov_steps,
            dtype=dt,
        ),  # fmt: skip
        "window (off by default; window_k=4)": lambda: dy.window_singular_values(last, 4, d.window),
    }
    qr = {"s": 0.0}
    real_qr = np.linalg.qr

    def timed_qr(*a, **kw):
        t = time.process_time()
        out = real_qr(*a, **kw)
        qr["s"] += time.process_time() - t
        return out

    out = {"shape": shape, "dtype": dtype, "dims": [B, T, I, H], "compute_dtype": dt.name, "ms": {}}
    for name, fn in fns.items():
        if fn is None:
            continue
        fn()
        times, qrs = [], []
        for _ in range(repeats):
            qr["s"] = 0.0
            np.linalg.qr = timed_qr
            t = time.process_time()
            fn()
            times.append(time.process_time() - t)
            np.linalg.qr = real_qr
            qrs.append(qr["s"])
        out["ms"][name] = 1e3 * statistics.median(times)
        if name == "Lyapunov sweep":
            out["ms"]["  of which QR"] = 1e3 * statistics.median(qrs)
    return out


def parts(args) -> list[dict]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    env.update({v: "1" for v in THREAD_VARS})
    rows = []
    for dtype in args.dtypes:
        for shape in args.shapes:
            argv = [sys.executable, str(Path(__file__).resolve()), "--parts-worker", shape, dtype]
            argv += ["--repeats", str(args.repeats)]
            before = load()
            res = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
            if res.returncode != 0:
                raise RuntimeError(f"parts {shape} {dtype} failed:\n{res.stderr[-2000:]}")
            r = json.loads(res.stdout.strip().splitlines()[-1])
            r["load"] = before
            rows.append(r)
            print(f"{shape} {dtype} ({before}): {r['ms']}", file=sys.stderr, flush=True)
    return rows


def parts_table(rows: list[dict]) -> str:
    names = list(rows[0]["ms"])
    out = ["| shape | dtype (computed in) | " + " | ".join(names) + " | load |"]
    out.append("|---|---|" + "---:|" * len(names) + "---|")
    for r in rows:
        ref = r["ms"].get("engine fast", r["ms"]["engine numpy"])
        cells = []
        for n in names:
            v = r["ms"].get(n)
            share = "" if n.startswith("engine") or v is None else f" ({v / ref:.2f}x)"
            cells.append("-" if v is None else f"{v:.1f}{share}")
        head = f"| {r['shape']} | {r['dtype']} ({r['compute_dtype']}) | "
        out.append(head + " | ".join(cells) + f" | {r['load'][5:]} |")
    note = "(x): the part's time / engine fast (engine numpy without numba); one thread, CPU time"
    return "\n".join(out) + "\n\n" + note


# ------------------------------------------------------------------------------ main


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shapes", default=",".join(SHAPES))
    ap.add_argument("--dtypes", default="float32,float64")
    ap.add_argument("--rounds", type=int, default=3, help="fresh processes per contender (median of ratios)")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs inside each process (median)")
    ap.add_argument("--parts", action="store_true", help="where the section's time goes, part by part")
    ap.add_argument("--parts-worker", nargs=2, help=argparse.SUPPRESS)
    ap.add_argument("--json", type=Path, help="also write the rows here")
    args = ap.parse_args(argv)
    if args.parts_worker:
        print(json.dumps(parts_worker(*args.parts_worker, args.repeats)))
        return 0
    args.shapes = [s.strip() for s in args.shapes.split(",") if s.strip()]
    args.dtypes = [s.strip() for s in args.dtypes.split(",") if s.strip()]
    print(f"{load()} at start", file=sys.stderr)
    if args.parts:
        rows = parts(args)
        print(parts_table(rows))
    else:
        rows = ratios(args)
        print(ratio_table(rows))
    print(f"\n{load()} at end (1, 5, 15 min)")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    if args.parts:
        return 0
    missed = [
        f"{r['shape']} {r['dtype']} {k} {v:.2f}"
        for r in rows
        for k, v in r["ratios"].items()
        if k.startswith("dynamics/") and v > DYNAMICS_BUDGET
    ]
    for m in missed:
        print(f"MISSES the budget {DYNAMICS_BUDGET}: {m}", file=sys.stderr)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
