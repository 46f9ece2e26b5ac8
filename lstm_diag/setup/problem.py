"""From a validated config to arrays: parameters (init scheme or weight file) and data.

Seeds: `seed` is split into independent streams for initialization and data, so
changing the init scheme never changes the data batch (compare relies on it).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from ..core import tasks as data_mod
from ..core.engine import Spec
from ..core.schemes import InitOptions, init_params
from ..errors import ConfigError
from .config import Config
from .datafile import load_data, read_logits
from .guard import verify
from .weights import SELECTORS, load_weights


@dataclass
class Problem:
    """Everything one analysis runs on."""

    config: Config
    spec: Spec
    params: dict[str, np.ndarray]
    x: np.ndarray  # (B, T, I)
    y: np.ndarray

    @property
    def loss(self) -> str:
        return self.config.loss.type

    @property
    def target(self) -> str:
        return self.config.loss.target


def spec_of(config: Config) -> Spec:
    m = config.model
    return Spec(
        m.input_size, m.hidden_size, m.num_layers, m.output_size, m.bidirectional, m.proj_size, m.bias
    )


def rngs(seed: int) -> tuple[np.random.Generator, np.random.Generator]:
    """(init rng, data rng), independent streams of one seed."""
    init_seq, data_seq = np.random.SeedSequence(seed).spawn(2)
    return np.random.default_rng(init_seq), np.random.default_rng(data_seq)


def make_params(config: Config, rng: np.random.Generator) -> dict[str, np.ndarray]:
    m, spec = config.model, spec_of(config)
    if m.weights is not None:
        return load_weights(m.weights, spec, config.dtype, **{k: getattr(m, k) for k in SELECTORS})
    options = InitOptions(t_max=config.chrono_t_max(), gain=m.gain)
    return init_params(
        m.init,
        spec,
        rng,
        config.dtype,
        options,
        forget_bias=m.forget_bias,
        recurrent_scale=m.recurrent_scale,
    )


def make_data(config: Config, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    d, spec = config.data, spec_of(config)
    if d.task == "file":
        return load_data(d.path, spec, config.loss.type, config.loss.target, config.dtype)
    x, y = data_mod.generate(
        d.task,
        rng,
        d.batch_size,
        d.seq_len,
        spec.input_size,
        spec.output_size,
        config.loss.type,
        config.loss.target,
    )
    y = y.astype(config.dtype) if config.loss.type == "mse" else y.astype(np.int64)
    return x.astype(config.dtype), y


def estimated_bytes(config: Config, T: int | None = None, B: int | None = None, mode: str = "full") -> int:
    """Rough peak memory of one analysis, in bytes.

    full: per layer and step the forward keeps 4H gates and c, h, tanh c (H each); backward
    adds 4H for dL/dz and about 4H more of dL/dc, dL/dh and temporaries; diagnostics one
    more gate-sized temporary: ~20 (T B H) numbers per layer. checkpoint: the same for one
    segment of ~sqrt(T) steps, plus the states at segment starts. Both: the data, 3 (T B I).
    """
    m, d = config.model, config.data
    itemsize = 4 if config.dtype == "float32" else 8
    T = d.seq_len if T is None else T
    B = d.batch_size if B is None else B
    H = m.hidden_size
    data = 3 * T * B * max(m.input_size, m.output_size)
    steps = T if mode == "full" else 2 * (int(T**0.5) + 1)
    return itemsize * (20 * steps * B * H * m.num_layers + data)


def dynamics_bytes(config: Config, T: int | None = None, B: int | None = None) -> int:
    """Peak extra memory of the Jacobian/Lyapunov analysis: it works one layer at a time, in
    the model's dtype, on the first diagnostics.dynamics_samples samples of the batch, with
    ~11 numbers per (t, sample, unit) (local derivatives a, f, d, d_{t-1} and the work arrays)."""
    T = config.data.seq_len if T is None else T
    B = config.data.batch_size if B is None else B
    S = min(config.diagnostics.dynamics_samples, B)
    itemsize = 4 if config.dtype == "float32" else 8
    return itemsize * 11 * T * S * config.model.hidden_size


def physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(config: Config) -> None:
    d = config.diagnostics
    mode = "full" if d.memory == "full" else "checkpoint"
    need, have = estimated_bytes(config, mode=mode), physical_memory()
    dyn = dynamics_bytes(config)
    if mode == "full" and d.dynamics and dyn <= d.memory_budget_mb * 2**20:
        need += dyn  # dynamics runs on full caches when it fits the budget
    if have and need > 0.8 * have:
        raise ConfigError(
            f"data.batch_size x data.seq_len x model.hidden_size x model.num_layers: this analysis "
            f"needs about {need / 2**30:.1f} GiB, more than 80% of this machine's "
            f"{have / 2**30:.1f} GiB; make one of them smaller"
        )


def build(config: Config) -> Problem:
    """Parameters and data for a config (file sizes win over data.batch_size/seq_len)."""
    if config.data.task != "file":
        check_memory(config)
    init_rng, data_rng = rngs(config.seed)
    x, y = make_data(config, data_rng)
    params = make_params(config, init_rng)
    if config.data.task == "file":
        config = config.patched({"data.batch_size": x.shape[0], "data.seq_len": x.shape[1]})
        check_memory(config)
    problem = Problem(config=config, spec=spec_of(config), params=params, x=x, y=y)
    logits = read_logits(config.data.path) if config.data.task == "file" else None
    verify(problem, logits, config.data.path)
    return problem
