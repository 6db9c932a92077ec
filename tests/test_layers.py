"""Factorized layers reproduce the dense layer: exact at full rank, the truncated weight below."""

import random

import pytest
import torch
from torch import nn

from trp.criteria import FixedRankCriterion
from trp.layers import ChannelWiseConv2d, LowRankLinear, SpatialWiseConv2d
from trp.lowrank import matrix_to_weight

CONV_CLASSES = [ChannelWiseConv2d, SpatialWiseConv2d]
KERNELS = [(1, 1), (3, 3), (3, 5), (1, 7), (2, 2)]
PADDING_MODES = ["zeros", "reflect", "replicate", "circular"]


def random_conv_configs(count: int, seed: int = 0) -> list[dict]:
    """Seeded random Conv2d configurations covering stride, dilation, every padding kind,
    padding modes, bias and groups."""
    rng = random.Random(seed)
    configs = []
    for index in range(count):
        kernel = KERNELS[index % len(KERNELS)]
        stride = rng.choice([1, 2, (2, 1), (1, 2)])
        dilation = rng.choice([1, 2, (2, 1)])
        stride_one = stride == 1
        padding = rng.choice([0, 1, 2, (1, 3), (2, 0), "valid"] + (["same"] if stride_one else []))
        groups = rng.choice([1, 1, 2])
        configs.append(
            dict(
                in_channels=4 * groups,
                out_channels=6 * groups,
                kernel_size=kernel,
                stride=stride,
                padding=padding,
                dilation=dilation,
                groups=groups,
                bias=rng.random() < 0.5,
                padding_mode=rng.choice(PADDING_MODES),
            )
        )
    return configs


CONFIGS = random_conv_configs(40)


@pytest.mark.parametrize("cls", CONV_CLASSES, ids=lambda c: c.scheme)
@pytest.mark.parametrize("config", CONFIGS, ids=[f"conv{i}" for i in range(len(CONFIGS))])
def test_full_rank_conv_is_exact_in_float64(cls, config):
    torch.manual_seed(0)
    conv = nn.Conv2d(**config, dtype=torch.float64)
    x = torch.randn(2, config["in_channels"], 19, 17, dtype=torch.float64)
    factorized = cls.from_dense(conv)
    assert factorized.rank == cls.full_rank_of(conv)
    with torch.no_grad():
        expected, actual = conv(x), factorized(x)
    assert actual.shape == expected.shape
    assert float((actual - expected).norm() / expected.norm()) < 1e-10


@pytest.mark.parametrize("cls", CONV_CLASSES, ids=lambda c: c.scheme)
def test_asymmetric_same_padding_with_even_kernel(cls):
    conv = nn.Conv2d(3, 5, (2, 4), padding="same", dilation=(1, 3), dtype=torch.float64)
    x = torch.randn(1, 3, 9, 10, dtype=torch.float64)
    with torch.no_grad():
        expected, actual = conv(x), cls.from_dense(conv)(x)
    assert float((actual - expected).norm() / expected.norm()) < 1e-10


@pytest.mark.parametrize("cls", CONV_CLASSES, ids=lambda c: c.scheme)
@pytest.mark.parametrize("config", CONFIGS[:10], ids=[f"conv{i}" for i in range(10)])
def test_truncated_conv_computes_the_truncated_weight(cls, config):
    torch.manual_seed(1)
    conv = nn.Conv2d(**config, dtype=torch.float64)
    solution = cls.solve(conv, FixedRankCriterion(2))
    factorized = cls.from_solution(conv, solution)
    reference = nn.Conv2d(**config, dtype=torch.float64)
    with torch.no_grad():
        reference.weight.copy_(matrix_to_weight(solution.reconstruct(), tuple(conv.weight.shape), cls.scheme))
        if conv.bias is not None:
            reference.bias.copy_(conv.bias)
    x = torch.randn(2, config["in_channels"], 18, 18, dtype=torch.float64)
    torch.testing.assert_close(factorized(x), reference(x), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("cls", CONV_CLASSES, ids=lambda c: c.scheme)
def test_to_dense_round_trip(cls):
    conv = nn.Conv2d(8, 12, (3, 5), stride=2, padding=(1, 2), groups=2, dtype=torch.float64)
    dense = cls.from_dense(conv).to_dense()
    torch.testing.assert_close(dense.weight, conv.weight, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(dense.bias, conv.bias)
    for attribute in ("stride", "padding", "dilation", "groups", "padding_mode", "kernel_size"):
        assert getattr(dense, attribute) == getattr(conv, attribute)


def test_linear_round_trip_and_truncation():
    linear = nn.Linear(20, 12, dtype=torch.float64)
    x = torch.randn(5, 3, 20, dtype=torch.float64)
    full = LowRankLinear.from_dense(linear)
    with torch.no_grad():
        assert float((full(x) - linear(x)).norm() / linear(x).norm()) < 1e-10
    torch.testing.assert_close(full.to_dense().weight, linear.weight)
    low = LowRankLinear.from_dense(linear, FixedRankCriterion(4))
    assert (low.first.weight.shape, low.second.weight.shape) == ((4, 20), (12, 4))
    assert torch.linalg.matrix_rank(low.dense_weight()) == 4


def test_linear_without_bias():
    linear = nn.Linear(6, 4, bias=False)
    layer = LowRankLinear.from_dense(linear)
    assert layer.second.bias is None and layer.to_dense().bias is None


def test_grouped_conv_factorized_per_group():
    conv = nn.Conv2d(8, 12, 3, padding=1, groups=4, dtype=torch.float64)
    layer = ChannelWiseConv2d.from_dense(conv, FixedRankCriterion(2))
    assert layer.first.groups == layer.second.groups == 4
    assert layer.first.out_channels == 4 * 2


def test_depthwise_conv_is_refused_with_a_reason():
    with pytest.raises(ValueError, match="depthwise"):
        ChannelWiseConv2d.from_dense(nn.Conv2d(8, 8, 3, groups=8))


def test_wrong_layer_types_are_refused():
    class MyConv(nn.Conv2d):
        pass

    with pytest.raises(TypeError, match="nn.Conv2d"):
        SpatialWiseConv2d.from_dense(MyConv(3, 4, 3))
    with pytest.raises(TypeError, match="nn.Linear"):
        LowRankLinear.from_dense(nn.Conv2d(3, 4, 3))


@pytest.mark.parametrize("cls", CONV_CLASSES, ids=lambda c: c.scheme)
def test_like_keeps_dtype_mode_and_zeroes_weights(cls):
    conv = nn.Conv2d(4, 6, 3, dtype=torch.float64).eval()
    layer = cls.like(conv, 3)
    assert not layer.training
    assert all(p.dtype == torch.float64 and not p.any() for p in layer.parameters())


def test_frozen_layer_stays_frozen():
    conv = nn.Conv2d(4, 6, 3).requires_grad_(False)
    layer = ChannelWiseConv2d.from_dense(conv, FixedRankCriterion(2))
    assert not any(p.requires_grad for p in layer.parameters())


def test_half_precision_layer():
    conv = nn.Conv2d(4, 6, 3).half()
    layer = SpatialWiseConv2d.from_dense(conv)
    assert all(p.dtype == torch.float16 for p in layer.parameters())
