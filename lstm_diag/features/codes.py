"""The catalogue of finding codes: stable, documented in docs/codes.md, listed by `lstm-diag codes`.

LD1xx gradient flow, LD2xx saturation, LD3xx clipping, LD4xx numerics, LD5xx changes over
training (`track`, `diff`: a later checkpoint against an earlier one).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Code:
    code: str
    name: str
    severity: str
    summary: str


CODES = {
    c.code: c
    for c in [
        Code(
            "LD101",
            "vanishing-gradient",
            "error",
            "||dL/dc_t|| falls below diagnostics.vanishing_ratio of its value at the loss "
            "before reaching the first step.",
        ),
        Code(
            "LD102",
            "exploding-gradient",
            "error",
            "||dL/dc_1|| / ||dL/dc_T|| exceeds diagnostics.exploding_ratio, or gradients "
            "overflow: the gradient grows going back in time.",
        ),
        Code(
            "LD103",
            "short-forget-memory",
            "warning",
            "The forget gates' retention e^{mean ln f} bounds the cell path (eq. 9): the product "
            "of f falls below vanishing_ratio in fewer steps than the sequence has.",
        ),
        Code(
            "LD104",
            "lower-layers-starved",
            "warning",
            "In a stacked LSTM, ||dL/dh_t|| of the bottom layer is below 1% of the top "
            "layer's at the median step.",
        ),
        Code(
            "LD105",
            "chaotic-dynamics",
            "warning",
            "The largest Lyapunov exponent of the state (c_t, h_t) is positive: nearby trajectories "
            "diverge and backpropagated gradients grow like e^{λ1 k} (docs/dynamics.md).",
        ),
        Code(
            "LD201",
            "saturated-gate",
            "warning",
            "More than diagnostics.saturated_gate_fraction of a gate's activations are "
            "saturated (< eps or > 1 - eps): its derivative factor is at most eps(1 - eps).",
        ),
        Code(
            "LD202",
            "stuck-units",
            "warning",
            "Units whose gate is saturated more than diagnostics.stuck_fraction of the time "
            "(input, cell, output gates; forget gates stuck closed).",
        ),
        Code(
            "LD203",
            "integrator-units",
            "info",
            "Forget gates right-saturated (f > 1 - eps) most of the time: these units keep "
            "their cell almost unchanged, and pass gradient back almost unscaled.",
        ),
        Code(
            "LD204",
            "cell-state-saturation",
            "warning",
            "|c_t| is so large that tanh(c_t) is saturated for most entries: dL/dh_t reaches "
            "c_t only through the factor 1 - tanh^2(c_t) of eq. (9).",
        ),
        Code(
            "LD301",
            "clipping-engaged",
            "info",
            "The configured clipping changes this gradient (norm: the global norm exceeds "
            "max_norm; value/agc: some entries or units are clipped).",
        ),
        Code(
            "LD302",
            "clipping-bends-direction",
            "warning",
            "Value or adaptive clipping changes the gradient's direction: cosine(clipped, raw) < 0.99.",
        ),
        Code(
            "LD303", "exploding-without-clipping", "warning", "Gradients explode and clipping.mode is none."
        ),
        Code(
            "LD401",
            "nonfinite-forward",
            "error",
            "The forward pass produced NaN or Inf in c_t or h_t (overflow).",
        ),
        Code(
            "LD402",
            "nonfinite-gradient",
            "error",
            "BPTT produced NaN or Inf in dL/dc_t, dL/dh_t or a parameter gradient.",
        ),
        Code("LD403", "nonfinite-loss", "error", "The loss is NaN or Inf."),
        Code(
            "LD501",
            "horizon-shrank",
            "warning",
            "A unit's gradient horizon at the later checkpoint is below 0.9 x the earlier one's "
            "(track: latest against first; diff: B against A).",
        ),
        Code(
            "LD502",
            "verdict-worse",
            "error",
            "A unit's verdict went from healthy to vanishing or exploding between the checkpoints.",
        ),
        Code(
            "LD503",
            "loss-rose",
            "warning",
            "The loss on the same data is above 1.01 x the earlier checkpoint's.",
        ),
        Code(
            "LD504",
            "more-stuck-units",
            "warning",
            "A unit's stuck units (over all four gates) grew above 1.1 x the earlier count, by at least one.",
        ),
    ]
}
