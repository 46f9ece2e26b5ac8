"""Parameter names, made in one place: PyTorch's `nn.LSTM` names and the head's.

    weight_ih_l{k}  (4H, I_k)   input weights of layer k       W_ih in docs/equations.md
    weight_hh_l{k}  (4H, R)     recurrent weights              W_hh (R = P with a projection, else H)
    bias_ih_l{k}    (4H,)       input bias                     b_ih
    bias_hh_l{k}    (4H,)       recurrent bias                 b_hh
    weight_hr_l{k}  (P, H)      projection (proj_size P > 0)   W_hr
    ..._reverse                 the same for the reverse direction of a bidirectional layer
    head.weight (O, H_out), head.bias (O)
    embedding.weight (V, I)     the embedding in front of the LSTM (token ids in the data)

Gate blocks inside each 4H axis are in the order i, f, g, o. Files may store these
names under a prefix (`lstm.weight_ih_l0`); setup/weights.py matches them.
This module imports nothing: the file readers (formats/) name what they convert with it too.
"""

from __future__ import annotations

import re

KINDS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr")
HEAD_WEIGHT = "head.weight"
HEAD_BIAS = "head.bias"
EMBEDDING_WEIGHT = "embedding.weight"

_NAME = re.compile(rf"^(?P<kind>{'|'.join(KINDS)})_l(?P<layer>\d+)(?P<rev>_reverse)?$")


def suffix(layer: int, reverse: bool | int = False) -> str:
    """`_l{layer}`, or `_l{layer}_reverse` for the reverse direction (direction 1)."""
    return f"_l{layer}_reverse" if reverse else f"_l{layer}"


def param_name(kind: str, layer: int, reverse: bool | int = False) -> str:
    """`param_name("weight_hh", 0)` -> "weight_hh_l0"; with reverse=True -> "weight_hh_l0_reverse"."""
    if kind not in KINDS:
        raise ValueError(f"unknown LSTM parameter kind {kind!r}; one of {', '.join(KINDS)}")
    return kind + suffix(layer, reverse)


def parse_param_name(name: str) -> tuple[str, int, bool] | None:
    """"weight_hh_l2_reverse" -> ("weight_hh", 2, True); None for anything else (head.weight...)."""
    m = _NAME.match(name)
    if m is None:
        return None
    return m["kind"], int(m["layer"]), m["rev"] is not None


def unit_names(layer: int, reverse: bool | int = False, bias: bool = True, proj: bool = False) -> list[str]:
    """One direction of one layer, in nn.LSTM's order: weight_ih, weight_hh, bias_ih, bias_hh, weight_hr."""
    kinds = ["weight_ih", "weight_hh"]
    kinds += ["bias_ih", "bias_hh"] if bias else []
    kinds += ["weight_hr"] if proj else []
    return [param_name(k, layer, reverse) for k in kinds]
