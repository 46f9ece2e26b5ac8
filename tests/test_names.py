"""Parameter names come from one function (lstm_diag.core.names), and they are nn.LSTM's."""

import pytest

from lstm_diag.core.engine import Spec
from lstm_diag.core.names import HEAD_BIAS, HEAD_WEIGHT, param_name, parse_param_name, suffix, unit_names


def test_names_and_their_inverse():
    assert param_name("weight_hh", 0) == "weight_hh_l0"
    assert param_name("bias_ih", 3, reverse=True) == "bias_ih_l3_reverse"
    assert param_name("weight_hr", 1) == "weight_hr_l1"
    assert suffix(2, 1) == "_l2_reverse" and suffix(2) == "_l2"
    for name in ("weight_ih_l0", "bias_hh_l12_reverse", "weight_hr_l1"):
        kind, layer, reverse = parse_param_name(name)
        assert param_name(kind, layer, reverse) == name
    assert parse_param_name(HEAD_WEIGHT) is None and parse_param_name("weight_ih_l0x") is None
    with pytest.raises(ValueError, match="unknown LSTM parameter kind 'weight_xx'"):
        param_name("weight_xx", 0)


def test_the_engine_layout_uses_these_names():
    shapes = Spec(3, 4, 2, 5).param_shapes()
    assert list(shapes) == [*unit_names(0), *unit_names(1), HEAD_WEIGHT, HEAD_BIAS]


@pytest.mark.parametrize(
    "bidirectional, proj_size, bias", [(False, 0, True), (True, 0, True), (True, 2, False)]
)
def test_names_are_those_of_torch_nn_lstm(bidirectional, proj_size, bias):
    torch = pytest.importorskip("torch", reason="the reference names come from torch.nn.LSTM")
    lstm = torch.nn.LSTM(3, 4, num_layers=2, bidirectional=bidirectional, proj_size=proj_size, bias=bias)
    ours = [
        name
        for k in range(2)
        for d in range(2 if bidirectional else 1)
        for name in unit_names(k, reverse=d, bias=bias, proj=proj_size > 0)
    ]
    assert ours == [n for n, _ in lstm.named_parameters()]
