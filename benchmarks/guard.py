"""What the subnormal guard's pieces cost, before and after scaling without ldexp
(docs/subnormal-guard.md, "What it costs").

    .venv/bin/python benchmarks/guard.py --shapes S,M,L --dtype float32

One process, one thread, the vanishing regime of benchmarks/run.py (forget bias 0), the
fast engine (the NumPy engine with --engine numpy). The two variants run interleaved on
the same problem: "before" scales with np.ldexp and checks the state's size with four
NumPy reductions (what the guard did until issue 19's vanishing-regime work), "after" with
engine.scale_pow2 and the engine's own check (compiled with the fast engine). Both give
bitwise the same results (tests/test_guard_scaling.py); this measures only their time:
the BPTT loop, the parameter gradients per run of equal exponent, the scaling back.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

from run import make_problem  # noqa: E402

from lstm_diag.core import backends, engine  # noqa: E402


def _ldexp(a, k, out=None):
    return np.ldexp(a, k, np.empty_like(a) if out is None else out)


def _numpy_check(carry, dh):
    return max(carry.max(), -carry.min(), dh.max(), -dh.min())


def measure(shape: str, dtype: str, eng: str, repeats: int) -> dict:
    backends.select(eng, dtype)
    p = make_problem(shape, dtype, "vanishing")
    P = engine.unit_params(p.params, 0)
    fwd = engine.forward(p.params, p.spec, p.x, p.y)
    cache = fwd.layers[0]
    dh_in, active = engine.head_backward(p.params["head.weight"], fwd.out, fwd.dy_hat, "last", {})
    after_scale, after_peak = engine.scale_pow2, engine._peak
    fused = engine.FUSED
    after_fused_peak = fused.PEAK if fused is not None else None
    times: dict[tuple[str, str], list[float]] = {}
    try:
        with np.errstate(all="ignore"):
            for _ in range(repeats):
                for variant in ("before", "after"):
                    old = variant == "before"
                    engine.scale_pow2 = _ldexp if old else after_scale
                    engine._peak = _numpy_check if old else after_peak
                    if fused is not None:
                        fused.PEAK = {np.dtype(dtype): _numpy_check} if old else after_fused_peak
                    t0 = time.process_time()
                    lg, exps = engine._layer_backward(P.W_hh, cache, dh_in, active, None, None)
                    t1 = time.process_time()
                    engine._param_grads(lg.dz, cache.x, cache.h[:-1], P.W_ih, exps)
                    t2 = time.process_time()
                    engine._unscale(lg, exps)
                    t3 = time.process_time()
                    for part, dt_ in (("bptt", t1 - t0), ("param_grads", t2 - t1), ("unscale", t3 - t2)):
                        times.setdefault((variant, part), []).append(1e3 * dt_)
    finally:
        engine.scale_pow2, engine._peak = after_scale, after_peak
        if fused is not None:
            fused.PEAK = after_fused_peak
    med = {k: float(np.median(v)) for k, v in times.items()}
    scaled = sum(1 for e in exps if e)
    return {
        "shape": shape,
        "ms": med,
        "scaled": scaled,
        "steps": len(exps),
        "runs": len(engine._blocks(exps)),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shapes", default="S,M,L")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--engine", default="fast", choices=("fast", "numpy"))
    ap.add_argument("--repeats", type=int, default=9)
    args = ap.parse_args(argv)
    print(f"load average at start: {os.getloadavg()}", file=sys.stderr)
    print("| shape | scaled steps | runs of equal e | BPTT loop | parameter gradients | scaling back |")
    print("|---|---:|---:|---|---|---|")
    for shape in args.shapes.split(","):
        r = measure(shape, args.dtype, args.engine, args.repeats)
        cells = [
            f"{r['ms'][('before', k)]:.1f} → {r['ms'][('after', k)]:.1f} ms"
            for k in ("bptt", "param_grads", "unscale")
        ]
        print(
            f"| {shape} | {r['scaled']} of {r['steps']} | {r['runs']} | " + " | ".join(cells) + " |",
            flush=True,
        )
    print(f"load average at end: {os.getloadavg()}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
