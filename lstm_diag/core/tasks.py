"""Synthetic tasks generated from a seed (docs/theory.md §7). Pure: no file I/O here.

Every generator returns x (B, T, I) and y shaped for its loss and target:
(B, O) / (B,) for target "last", (B, T, O) / (B, T) for target "all".
"""

from __future__ import annotations

import numpy as np

COPY_SYMBOLS = 8  # a_0..a_7 carry data
COPY_BLANK = 8  # a_8
COPY_DELIM = 9  # a_9
COPY_CLASSES = 10
COPY_LENGTH = 10  # symbols to remember


def random_task(rng, batch_size, seq_len, input_size, output_size, loss, target):
    """Gaussian inputs; Gaussian targets (mse) or uniform class ids (cross_entropy)."""
    x = rng.normal(size=(batch_size, seq_len, input_size))
    lead = (batch_size,) if target == "last" else (batch_size, seq_len)
    if loss == "mse":
        y = rng.normal(size=lead + (output_size,))
    else:
        y = rng.integers(0, output_size, size=lead)
    return x, y


def adding_task(rng, batch_size, seq_len):
    """Adding problem, Arjovsky et al. (2016) variant: steps of (value, marker).

    values ~ U[0, 1]; one marker uniformly in the first half, one in the second;
    target = the sum of the two marked values, (B, 1).
    """
    B, T = batch_size, seq_len
    values = rng.uniform(0.0, 1.0, (B, T))
    markers = np.zeros((B, T))
    rows = np.arange(B)
    first = rng.integers(0, T // 2, B)
    second = rng.integers(T // 2, T, B)
    markers[rows, first] = 1.0
    markers[rows, second] = 1.0
    x = np.stack([values, markers], axis=-1)  # (B, T, 2)
    y = (values[rows, first] + values[rows, second])[:, None]  # (B, 1)
    return x, y


def copy_task(rng, batch_size, seq_len):
    """Copy memory (Arjovsky et al. 2016), one-hot over 10 categories.

    seq_len is the whole length T + 20: 10 symbols from a_0..a_7, T - 1 blanks, the
    delimiter a_9, 10 blanks. Targets: T + 10 blanks, then the 10 symbols. (B, T+20) ids.
    """
    B, delay = batch_size, seq_len - 2 * COPY_LENGTH
    symbols = rng.integers(0, COPY_SYMBOLS, (B, COPY_LENGTH))
    ids = np.concatenate(
        [
            symbols,
            np.full((B, delay - 1), COPY_BLANK),
            np.full((B, 1), COPY_DELIM),
            np.full((B, COPY_LENGTH), COPY_BLANK),
        ],
        axis=1,
    )  # (B, T+20)
    y = np.concatenate([np.full((B, delay + COPY_LENGTH), COPY_BLANK), symbols], axis=1)
    x = np.eye(COPY_CLASSES)[ids]  # (B, T+20, 10)
    return x, y



def generate(task, rng, batch_size, seq_len, input_size, output_size, loss, target):
    """One batch of a synthetic task (config validation has checked the sizes)."""
    if task == "adding":
        return adding_task(rng, batch_size, seq_len)
    if task == "copy":
        return copy_task(rng, batch_size, seq_len)
    return random_task(rng, batch_size, seq_len, input_size, output_size, loss, target)
