"""MAC and parameter counts against hand counts."""

import pytest
import torch
from torch import nn

from trp.counting import count_macs, layer_macs
from trp.criteria import FixedRankCriterion
from trp.layers import ChannelWiseConv2d, LowRankLinear, SpatialWiseConv2d
from trp.models import create_model, get_model_spec, list_models


def dense_and_factorized_counts(layer: nn.Module, shape: tuple[int, ...]) -> tuple[int, int]:
    """(hook-counted, formula) MACs of ``layer`` for one input shape."""
    return count_macs(layer, torch.randn(*shape)).model_macs, layer_macs(layer, shape)


def test_single_conv_by_hand():
    conv = nn.Conv2d(16, 32, 3, stride=2, padding=1)
    # 15x17 input -> 8x9 output; each output element: 16 * 3 * 3 MACs
    assert dense_and_factorized_counts(conv, (2, 16, 15, 17)) == (8 * 9 * 32 * 16 * 9,) * 2


def test_channel_wise_conv_by_hand():
    layer = ChannelWiseConv2d.from_dense(nn.Conv2d(16, 32, 3, stride=2, padding=1), FixedRankCriterion(5))
    # first: 3x3 conv 16 -> 5 at the 8x9 output; second: 1x1 conv 5 -> 32 at 8x9
    expected = 8 * 9 * 5 * 16 * 9 + 8 * 9 * 32 * 5
    assert dense_and_factorized_counts(layer, (1, 16, 15, 17)) == (expected, expected)


def test_spatial_wise_conv_by_hand():
    layer = SpatialWiseConv2d.from_dense(nn.Conv2d(16, 32, 3, stride=2, padding=1), FixedRankCriterion(5))
    # first: 3x1 conv, stride (2, 1), padding (1, 0): 15x17 -> 8x17, 16 * 3 MACs per element of 5 channels
    # second: 1x3 conv, stride (1, 2), padding (0, 1): 8x17 -> 8x9, 5 * 3 MACs per element of 32 channels
    expected = 8 * 17 * 5 * 16 * 3 + 8 * 9 * 32 * 5 * 3
    assert dense_and_factorized_counts(layer, (1, 16, 15, 17)) == (expected, expected)


def test_grouped_and_dilated_conv_by_hand():
    conv = nn.Conv2d(8, 12, (3, 5), dilation=2, padding="same", groups=4)
    assert dense_and_factorized_counts(conv, (1, 8, 10, 10)) == (10 * 10 * 12 * 2 * 15,) * 2


def test_linear_by_hand():
    layer = LowRankLinear.from_dense(nn.Linear(20, 12), FixedRankCriterion(4))
    # a (3, 7, 20) input is 3 examples of 7 rows; counts are per example
    assert dense_and_factorized_counts(nn.Linear(20, 12), (3, 7, 20)) == (7 * 240, 7 * 240)
    assert dense_and_factorized_counts(layer, (3, 7, 20)) == (7 * 4 * 32, 7 * 4 * 32)


def test_shared_module_counted_at_every_call():
    shared = nn.Conv2d(4, 4, 3, padding=1)
    model = nn.Sequential(shared, nn.ReLU(), shared)
    counted = count_macs(model, torch.randn(1, 4, 6, 6))
    assert counted.layers[0].calls == 2
    assert counted.conv_macs == 2 * 36 * 4 * 4 * 9
    assert counted.params == 4 * 4 * 9 + 4  # parameters counted once


def test_counting_leaves_batchnorm_and_modes_alone():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).train()
    model[0].eval()
    before = model[1].running_mean.clone()
    count_macs(model, torch.randn(2, 3, 8, 8))
    assert torch.equal(model[1].running_mean, before)
    assert model.training and model[1].training and not model[0].training


# Hand counts. CIFAR ResNet-(6n+2): stem 3->16 at 32x32, then per stage conv pairs; the first
# conv of stages 2 and 3 halves the resolution; option-A shortcuts cost nothing.
def cifar_resnet_conv_macs(depth: int) -> int:
    n = (depth - 2) // 6
    conv3x3 = lambda c_in, c_out, size: size * size * c_out * c_in * 9  # noqa: E731
    total = conv3x3(3, 16, 32)
    for index, (c, size) in enumerate(((16, 32), (32, 16), (64, 8))):
        c_in = 16 if index == 0 else c // 2
        total += conv3x3(c_in, c, size) + (2 * n - 1) * conv3x3(c, c, size)
    return total


def imagenet_resnet_conv_macs(blocks: tuple[int, ...], bottleneck: bool) -> int:
    conv = lambda c_in, c_out, k, size: size * size * c_out * c_in * k * k  # noqa: E731
    total, c_in, size = conv(3, 64, 7, 112), 64, 56
    for stage, count in enumerate(blocks):
        c = 64 * 2**stage
        for position in range(count):
            out_size = size // 2 if stage > 0 and position == 0 else size
            if bottleneck:
                total += conv(c_in, c, 1, size) + conv(c, c, 3, out_size) + conv(c, 4 * c, 1, out_size)
                c_out = 4 * c
            else:
                total += conv(c_in, c, 3, out_size) + conv(c, c, 3, out_size)
                c_out = c
            if c_in != c_out or out_size != size:
                total += conv(c_in, c_out, 1, out_size)
            c_in, size = c_out, out_size
    return total


HAND_COUNTS = {
    "resnet20": cifar_resnet_conv_macs(20),
    "resnet32": cifar_resnet_conv_macs(32),
    "resnet44": cifar_resnet_conv_macs(44),
    "resnet56": cifar_resnet_conv_macs(56),
    "resnet110": cifar_resnet_conv_macs(110),
    "resnet18": imagenet_resnet_conv_macs((2, 2, 2, 2), bottleneck=False),
    "resnet34": imagenet_resnet_conv_macs((3, 4, 6, 3), bottleneck=False),
    "resnet50": imagenet_resnet_conv_macs((3, 4, 6, 3), bottleneck=True),
}
# Published figures (TRP paper section 4; He et al. 2016 Table 1: 1.8, 3.6, 3.8 GFLOPs = GMACs).
PUBLISHED = {"resnet20": 41e6, "resnet56": 125e6, "resnet18": 1.82e9, "resnet34": 3.6e9, "resnet50": 4.1e9}


@pytest.mark.parametrize("name", list_models())
def test_registered_models_match_hand_counts(name):
    spec = get_model_spec(name)
    counted = count_macs(create_model(name), torch.randn(1, *spec.input_size))
    assert counted.conv_macs == HAND_COUNTS[name]
    fc_macs = 64 * 10 if spec.input_size[1] == 32 else (512 if name != "resnet50" else 2048) * 1000
    assert counted.model_macs == HAND_COUNTS[name] + fc_macs
    if name in PUBLISHED:
        assert counted.conv_macs == pytest.approx(PUBLISHED[name], rel=0.02)


def test_cifar_resnet20_hand_count_value():
    assert HAND_COUNTS["resnet20"] == 40_550_400
