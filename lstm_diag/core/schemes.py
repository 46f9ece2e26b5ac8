"""Initialization schemes (docs/theory.md §2-§3), registered in one table.

A scheme is one function `(rng, spec, options) -> params` decorated with
`@scheme("name")`; it returns every LSTM and head parameter under PyTorch names.
`options` carries `t_max` (chrono) and `gain` (identity); `forget_bias` and
`recurrent_scale` are applied by `init_params` after any scheme.

Every scheme fills every unit (both directions of a bidirectional layer alike) and
honours bias=False (no bias arrays). With a projection (proj_size P > 0) the recurrent
weights are (4H, P) and there is weight_hr (P, H): `pytorch` and `chrono` draw it
U(±1/√H) like nn.LSTM, the Glorot and He schemes apply their rule to it as to any
matrix; schemes built on square H x H recurrent blocks (orthogonal, identity, keras)
are refused with a projection, and `chrono` (a bias scheme) without biases.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import preview
from .engine import Spec
from .names import param_name


@dataclass(frozen=True)
class InitOptions:
    t_max: float | None = None  # chrono: expected range of dependencies, in steps
    gain: float = 1.0  # identity: scale of the recurrent identity blocks


SchemeFn = Callable[[np.random.Generator, Spec, InitOptions], dict]
SCHEMES: dict[str, SchemeFn] = {}
DESCRIPTIONS: dict[str, str] = {}
NO_PROJECTION: set[str] = set()  # schemes defined for square H x H recurrent blocks only
NEEDS_BIAS: set[str] = set()  # schemes that are about the biases


def scheme(name: str, description: str, projection: bool = True, needs_bias: bool = False):
    def register(fn: SchemeFn) -> SchemeFn:
        SCHEMES[name] = fn
        DESCRIPTIONS[name] = description
        if not projection:
            NO_PROJECTION.add(name)
        if needs_bias:
            NEEDS_BIAS.add(name)
        return fn

    return register


def unsupported_layout(name: str, proj_size: int, bias: bool) -> str | None:
    """Why scheme `name` cannot initialise this layout, or None."""
    if proj_size > 0 and name in NO_PROJECTION:
        return (
            f"scheme {name!r} is defined for square H x H recurrent blocks and cannot initialise "
            f"a projected LSTM (model.proj_size = {proj_size}); use pytorch, xavier_uniform, "
            "xavier_normal, he or chrono"
        )
    if not bias and name in NEEDS_BIAS:
        return f"scheme {name!r} sets the gate biases, but model.bias is false"
    return None


# ----------------------------------------------------------------- building blocks


def _uniform(rng, shape, bound):
    return rng.uniform(-bound, bound, shape)


def _glorot_uniform(rng, shape):
    fan_out, fan_in = shape  # PyTorch (out, in); the whole stacked matrix, docs/theory.md §3
    return _uniform(rng, shape, math.sqrt(6.0 / (fan_in + fan_out)))


def _glorot_normal(rng, shape):
    fan_out, fan_in = shape
    return rng.normal(0.0, math.sqrt(2.0 / (fan_in + fan_out)), shape)


def _orthogonal(rng, n):
    """An n x n orthogonal matrix, Haar-distributed (QR with the sign fix of Saxe et al.)."""
    A = rng.normal(size=(n, n))
    Q, R = np.linalg.qr(A)
    return Q * np.sign(np.diag(R))


def _orthonormal_columns(rng, rows, cols):
    """(rows, cols), rows >= cols, with Q^T Q = I: PyTorch `orthogonal_` on (4H, H)."""
    A = rng.normal(size=(rows, cols))
    Q, R = np.linalg.qr(A)
    return Q * np.sign(np.diag(R))


def _per_gate(block_fn):
    """Four H x H blocks stacked in gate order i, f, g, o: (4H, H)."""
    return np.concatenate([block_fn() for _ in range(4)], axis=0)


def _head(rng, spec: Spec, params: dict) -> dict:
    """`nn.Linear` default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias."""
    bound = 1.0 / math.sqrt(spec.output_width)
    params["head.weight"] = _uniform(rng, (spec.output_size, spec.output_width), bound)
    params["head.bias"] = _uniform(rng, (spec.output_size,), bound)
    return params


def _build(rng, spec: Spec, w_ih, w_hh, bias, w_hr=None) -> dict:
    """Fill every unit from per-tensor factories (w_hr defaults to w_ih's rule), then the head."""
    params = {}
    factories = {
        "weight_ih": w_ih,
        "weight_hh": w_hh,
        "bias_ih": bias,
        "bias_hh": bias,
        "weight_hr": w_hr or w_ih,
    }
    for name, shape in spec.param_shapes().items():
        if name.startswith("head."):
            continue
        params[name] = factories[name.split("_l")[0]](shape)
    return _head(rng, spec, params)


def _zeros(shape):
    return np.zeros(shape)


# ------------------------------------------------------------------------- schemes


@scheme("pytorch", "U(-1/sqrt(H), 1/sqrt(H)) for every LSTM parameter (nn.LSTM default)")
def pytorch(rng, spec, opts):
    k = 1.0 / math.sqrt(spec.hidden_size)
    u = lambda shape: _uniform(rng, shape, k)  # noqa: E731
    return _build(rng, spec, u, u, u)


@scheme("xavier_uniform", "Glorot uniform on each stacked matrix (fan_in I or H, fan_out 4H); biases 0")
def xavier_uniform(rng, spec, opts):
    gu = lambda shape: _glorot_uniform(rng, shape)  # noqa: E731
    return _build(rng, spec, gu, gu, _zeros)


@scheme("xavier_normal", "Glorot normal (untruncated) on each stacked matrix; biases 0")
def xavier_normal(rng, spec, opts):
    gn = lambda shape: _glorot_normal(rng, shape)  # noqa: E731
    return _build(rng, spec, gn, gn, _zeros)


@scheme(
    "orthogonal",
    "Glorot-uniform input weights; each recurrent gate block H x H orthogonal; biases 0",
    projection=False,
)
def orthogonal(rng, spec, opts):
    H = spec.hidden_size
    return _build(
        rng,
        spec,
        lambda shape: _glorot_uniform(rng, shape),
        lambda shape: _per_gate(lambda: _orthogonal(rng, H)),
        _zeros,
    )


@scheme(
    "keras",
    "Keras LSTM: glorot-uniform input, orthogonal (4H, H) recurrent, bias 0 with forget 1",
    projection=False,
)
def keras(rng, spec, opts):
    H = spec.hidden_size
    params = _build(
        rng,
        spec,
        lambda shape: _glorot_uniform(rng, shape),
        lambda shape: _orthonormal_columns(rng, 4 * H, H),
        _zeros,
    )
    if spec.bias:
        for k, d in spec.units():
            params[param_name("bias_ih", k, d)][H : 2 * H] = 1.0  # unit_forget_bias
    return params


@scheme("he", "He/Kaiming normal (untruncated, gain sqrt(2), fan_in) on each stacked matrix; biases 0")
def he(rng, spec, opts):
    kn = lambda shape: rng.normal(0.0, math.sqrt(2.0 / shape[1]), shape)  # noqa: E731
    return _build(rng, spec, kn, kn, _zeros)


@scheme(
    "identity",
    "Glorot-uniform input; each recurrent gate block = gain * I (IRNN-style); biases 0",
    projection=False,
)
def identity(rng, spec, opts):
    H = spec.hidden_size
    return _build(
        rng,
        spec,
        lambda shape: _glorot_uniform(rng, shape),
        lambda shape: _per_gate(lambda: opts.gain * np.eye(H)),
        _zeros,
    )


@scheme(
    "chrono",
    "Weights as `pytorch`; b_f ~ log U[1, t_max - 1], b_i = -b_f (Tallec & Ollivier 2018)",
    needs_bias=True,
)
def chrono(rng, spec, opts):
    H = spec.hidden_size
    params = pytorch(rng, spec, opts)
    for k, d in spec.units():
        b_f = np.log(rng.uniform(1.0, opts.t_max - 1.0, H))
        b = np.zeros(4 * H)
        b[:H] = -b_f  # input gate
        b[H : 2 * H] = b_f  # forget gate
        params[param_name("bias_ih", k, d)] = b
        params[param_name("bias_hh", k, d)] = np.zeros(4 * H)
    return params


def init_params(
    name: str,
    spec: Spec,
    rng: np.random.Generator,
    dtype: str = "float64",
    options: InitOptions | None = None,
    forget_bias: float | None = None,
    recurrent_scale: float = 1.0,
) -> dict[str, np.ndarray]:
    """Draw parameters with a registered scheme, then apply the overrides.

    forget_bias: the effective forget bias b_ih[f] + b_hh[f] is set to this value
    (written into bias_ih, bias_hh's forget slice set to 0; docs/theory.md §1.1).
    recurrent_scale: multiplies every weight_hh after the scheme.
    """
    problem = unsupported_layout(name, spec.proj_size, spec.bias)
    if problem:
        raise ValueError(problem)
    params = SCHEMES[name](rng, spec, options or InitOptions())
    H = spec.hidden_size
    for k, d in spec.units():
        if forget_bias is not None:
            params[param_name("bias_ih", k, d)][H : 2 * H] = forget_bias
            params[param_name("bias_hh", k, d)][H : 2 * H] = 0.0
        W_hh = param_name("weight_hh", k, d)
        params[W_hh] = params[W_hh] * recurrent_scale
    return {name: np.ascontiguousarray(v, dtype=dtype) for name, v in params.items()}


# ------------------------------------------------------------------------ init specs: text

SPEC_EXAMPLE = "e.g. pytorch,keras,chrono:t_max=500,xavier_uniform:forget_bias=1"

# Options an init spec may carry, and the schemes each applies to (None: every scheme).
OPTIONS: dict[str, tuple[str, ...] | None] = {
    "forget_bias": None,  # effective b_f, written after the scheme (init_params)
    "recurrent_scale": None,  # multiplies W_hh after the scheme
    "t_max": ("chrono",),  # chrono's T_max (default: the sequence length)
    "gain": ("identity",),  # scale of identity's recurrent blocks
}


# ------------------------------------------------------------------------ init specs


@dataclass(frozen=True)
class InitSpec:
    """One scheme with its options, e.g. `chrono:t_max=500`."""

    scheme: str
    options: tuple[tuple[str, float], ...] = ()  # in the order given

    @property
    def label(self) -> str:
        return ":".join([self.scheme, *(f"{k}={v:g}" for k, v in self.options)])

    def model_fields(self) -> dict[str, Any]:
        """The config's model fields for this spec (options not given take their defaults)."""
        fields: dict[str, Any] = {
            "init": self.scheme,
            "forget_bias": None,
            "recurrent_scale": 1.0,
            "t_max": None,
            "gain": 1.0,
        }
        fields.update(dict(self.options))
        return fields


def _valid_options(scheme: str) -> list[str]:
    return [k for k, only in OPTIONS.items() if only is None or scheme in only]


def _option_value(item: str, key: str, text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        v = math.nan
    if not math.isfinite(v):
        raise ValueError(f"{preview(item)}: {key} must be a finite number, got {preview(text)}")
    if key == "t_max" and v <= 2:
        raise ValueError(
            f"{preview(item)}: t_max must be > 2 (chrono draws b_f from log U[1, t_max - 1]), got {v:g}"
        )
    if key == "recurrent_scale" and v <= 0:
        raise ValueError(f"{preview(item)}: recurrent_scale must be positive, got {v:g}")
    return v


def parse_init_spec(item: str) -> InitSpec:
    """`scheme[:option=value[:option=value]]` -> InitSpec; ValueError with a message for people."""
    item = item.strip()
    scheme, *parts = (p.strip() for p in item.split(":"))
    if not scheme:
        raise ValueError(f"{preview(item)}: no scheme name; {SPEC_EXAMPLE}")
    if scheme not in SCHEMES:
        if "=" in scheme:
            raise ValueError(
                f"{preview(item)}: options follow a scheme and ':', e.g. xavier_uniform:forget_bias=1"
                "; several options are separated by ':' (chrono:t_max=500:recurrent_scale=0.9)"
            )
        close = difflib.get_close_matches(scheme[:100], list(SCHEMES), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown init scheme {preview(scheme)}{hint}; one of {', '.join(SCHEMES)}")
    valid = _valid_options(scheme)
    options: list[tuple[str, float]] = []
    for part in parts:
        key, sep, text = (s.strip() for s in part.partition("="))
        if not sep or not key:
            raise ValueError(
                f"{preview(item)}: expected option=value after ':', got {preview(part)}; "
                f"{scheme} takes {', '.join(valid)}"
            )
        if key not in valid:
            only = OPTIONS.get(key, ())
            if only:
                why = f"{key} applies to {', '.join(only)} only"
            else:
                close = difflib.get_close_matches(key[:100], valid, n=1)
                why = f"unknown option {preview(key)}" + (f" (did you mean {close[0]!r}?)" if close else "")
            raise ValueError(f"{preview(item)}: {why}; {scheme} takes {', '.join(valid)}")
        if any(k == key for k, _ in options):
            raise ValueError(f"{preview(item)}: {key} is given twice")
        options.append((key, _option_value(item, key, text)))
    return InitSpec(scheme, tuple(options))


def parse_init_specs(specs: str | Sequence[str]) -> list[InitSpec]:
    """'pytorch,keras,chrono:t_max=500' (or a list of items) -> InitSpecs, in order."""
    items = specs.split(",") if isinstance(specs, str) else [str(s) for s in specs]
    if not items or all(not i.strip() for i in items):
        raise ValueError(f"no init schemes given; {SPEC_EXAMPLE}")
    out: list[InitSpec] = []
    for item in items:
        if not item.strip():
            raise ValueError(f"empty entry in {preview(','.join(items))}; {SPEC_EXAMPLE}")
        spec = parse_init_spec(item)
        same = next((s for s in out if s.scheme == spec.scheme and set(s.options) == set(spec.options)), None)
        if same is not None:
            raise ValueError(f"{preview(spec.label)} is listed twice")
        out.append(spec)
    return out
