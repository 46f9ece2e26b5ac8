"""Benchmark: what the dynamics section (docs/dynamics.md) adds to `lstm-diag analyze`.

    make bench-dynamics                                   # every shape, both dtypes
    .venv/bin/python benchmarks/dynamics.py --shapes default,M --dtypes float64 --repeats 5

For each shape and dtype (the built-in default config with the batch, length and sizes
of the shape, default diagnostics settings), each repeat times, in turn:

  fwd+bwd    `lstm_diag.core.engine.run`: forward, loss and BPTT (the forward/backward time)
  dynamics   `analysis.dynamics_section` on that forward/backward pass: the whole
             section `analyze` adds, for every layer (what `--no-dynamics` removes)

Medians over repeats. The stated bound (docs/dynamics.md, "Cost") is checked on every row:

  dynamics <= 1.0 x fwd+bwd + 15 ms

that is, at most the forward+backward time itself, plus a fixed NumPy call overhead
that only matters when the forward+backward pass takes a few ms. The section works on
a fixed number of samples (4 for the Lyapunov spectrum, 1 for the per-step norms and
the window), so its share shrinks as the batch grows. Exit status 1 if a row misses.
Timing method and environment report: benchmarks/run.py.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

from run import blas_info, blas_threads, engine_result_bytes, limit_threads, listed, machine, time_round_robin

from lstm_diag.core import engine
from lstm_diag.features.analysis import dynamics_section
from lstm_diag.setup.config import load_config
from lstm_diag.setup.problem import build

SHAPES = {  # name: (B, T, I, H)
    "default": (16, 100, 8, 32),  # the built-in default config
    "S": (16, 100, 32, 64),  # benchmarks/run.py's S, M, L, XL
    "M16": (16, 200, 128, 256),  # M with the default batch
    "M": (32, 200, 128, 256),
    "T1000": (16, 1000, 32, 64),
    "L": (8, 2000, 64, 128),
    "XL": (64, 100, 256, 512),
}
BOUND_FRACTION = 1.0  # the stated bound: this fraction of the forward+backward time ...
BOUND_FIXED_S = 0.015  # ... plus this many seconds


def bound_s(fwd_bwd_s: float) -> float:
    return BOUND_FRACTION * fwd_bwd_s + BOUND_FIXED_S


def problem(name: str, dtype: str):
    B, T, I, H = SHAPES[name]
    sets = [f"dtype={dtype}", f"data.batch_size={B}", f"data.seq_len={T}"]
    sets += [f"model.input_size={I}", f"model.hidden_size={H}"]
    return build(load_config(None, sets)[0])


def measure(name: str, dtype: str, args) -> dict:
    p = problem(name, dtype)
    B, T, I, H = SHAPES[name]
    fwd, bwd = engine.run(p.params, p.spec, p.x, p.y, p.loss, p.target)
    fns = {
        "fwd+bwd": lambda: engine.run(p.params, p.spec, p.x, p.y, p.loss, p.target),
        "dynamics": lambda: dynamics_section(p, fwd, bwd),
    }
    prefault = 2 * engine_result_bytes(B, T, H, dtype)  # as run.py does for the engine
    times = time_round_robin(fns, args.repeats, args.warmup, args.settle, prefault)
    fb = statistics.median(times["fwd+bwd"])
    dyn = statistics.median(times["dynamics"])
    return {
        "shape": name,
        "dtype": dtype,
        "dims": dict(zip("BTIH", SHAPES[name], strict=True)),
        "fwd_bwd_ms": 1e3 * fb,
        "dynamics_ms": 1e3 * dyn,
        "dynamics/fwd_bwd": dyn / fb,
        "bound_ms": 1e3 * bound_s(fb),
        "within_bound": dyn <= bound_s(fb),
    }


def markdown(rows: list[dict]) -> str:
    out = [
        "| shape | B, T, I, H | dtype | fwd+bwd | dynamics | / fwd+bwd | bound: fwd+bwd + 15 ms |",
        "|---|---|---|---:|---:|---:|---|",
    ]
    for r in rows:
        d = r["dims"]
        ok = "ok" if r["within_bound"] else "**MISS**"
        out.append(
            f"| {r['shape']} | {d['B']}, {d['T']}, {d['I']}, {d['H']} | {r['dtype']} | "
            f"{r['fwd_bwd_ms']:.1f} ms | {r['dynamics_ms']:.1f} ms | {r['dynamics/fwd_bwd']:.2f}x | "
            f"{r['bound_ms']:.1f} ms {ok} |"
        )
    return "\n".join(out)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--shapes", default=",".join(SHAPES), help="comma-separated, from " + ",".join(SHAPES))
    ap.add_argument("--dtypes", default="float64,float32")
    ap.add_argument("--repeats", type=int, default=9, help="timed runs of each (median)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--settle", type=float, default=0.05, help="seconds of sleep before each timed run")
    ap.add_argument("--threads", type=int, help="BLAS threads (needs threadpoolctl); default: what BLAS uses")
    args = ap.parse_args(argv)
    args.shapes = listed(ap, args.shapes, SHAPES, "shapes")
    args.dtypes = listed(ap, args.dtypes, ("float32", "float64"), "dtypes")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    with limit_threads(args.threads):
        m = machine(None)
        threads = args.threads or blas_threads(blas_info())
        load = [round(v, 2) for v in os.getloadavg()]
        print(f"{m['cpu']}, {m['cores']} cores, BLAS threads {threads}; load average {load}", file=sys.stderr)
        if load[0] > 0.5:
            print("warning: other processes are using the CPU; timings will be noisy", file=sys.stderr)
        rows = []
        for dtype in args.dtypes:
            for name in args.shapes:
                r = measure(name, dtype, args)
                rows.append(r)
                print(
                    f"{name} {dtype}: fwd+bwd {r['fwd_bwd_ms']:.1f} ms, dynamics {r['dynamics_ms']:.1f} ms "
                    f"({r['dynamics/fwd_bwd']:.2f}x), bound {r['bound_ms']:.1f} ms",
                    file=sys.stderr,
                    flush=True,
                )
    print(markdown(rows))
    print(f"\nload average (1, 5, 15 min): {load} at start, {[round(v, 2) for v in os.getloadavg()]} at end")
    return 0 if all(r["within_bound"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
