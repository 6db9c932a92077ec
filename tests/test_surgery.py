"""Model surgery on nested, shared and odd models."""

import json

import pytest
import torch
import torch.distributed as dist
from torch import nn

from trp import DecomposeConfig, apply_plan_, decompose_, densify_
from trp.counting import count_macs
from trp.criteria import FixedRankCriterion, FractionCriterion
from trp.layers import ChannelWiseConv2d, FactorizedLayer, LowRankLinear, SpatialWiseConv2d

FULL = FractionCriterion(1.0)


class Nested(nn.Module):
    """A stem, a shared conv reachable by two names and run twice, nested containers,
    a BatchNorm and a classifier."""

    def __init__(self) -> None:
        super().__init__()
        shared = nn.Conv2d(16, 16, 3, padding=1)
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.body = nn.Sequential(nn.Sequential(shared, nn.BatchNorm2d(16), nn.ReLU()), nn.ModuleDict({"down": nn.Conv2d(16, 32, 3, stride=2, padding=1)}))
        self.again = shared
        self.head = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.again(self.body[0](self.stem(x)))
        x = self.body[1]["down"](x)
        return self.head(x.mean(dim=(2, 3)))


def example(dtype=torch.float32) -> torch.Tensor:
    return torch.randn(2, 3, 12, 12, dtype=dtype)


@pytest.mark.parametrize("scheme", ["channel", "spatial"])
def test_full_rank_surgery_preserves_outputs_and_sharing(scheme):
    torch.manual_seed(0)
    model = Nested().double().eval()
    x = example(torch.float64)
    expected = model(x)
    report = decompose_(model, DecomposeConfig(scheme=scheme, criterion=FULL, keep_unprofitable=True), x)
    assert {layer.name for layer in report.decomposed} == {"stem", "body.0.0", "body.1.down", "head"}
    assert isinstance(model.again, FactorizedLayer) and model.again is model.body[0][0]
    assert report.layers[1].aliases == ("again",)
    torch.testing.assert_close(model(x), expected, rtol=1e-10, atol=1e-10)


def test_report_totals_match_a_recount_of_the_decomposed_model():
    torch.manual_seed(0)
    model = Nested()
    x = example()
    dense = count_macs(model, x)
    report = decompose_(model, DecomposeConfig(scheme="spatial", criterion=FixedRankCriterion(3)), x)
    recount = count_macs(model, x)
    assert report.conv_macs_before == dense.conv_macs and report.model_macs_before == dense.model_macs
    assert report.conv_macs_after == recount.conv_macs
    assert report.model_macs_after == recount.model_macs
    assert report.params_after == recount.params
    assert report.conv_speedup == pytest.approx(dense.conv_macs / recount.conv_macs)
    json.dumps(report.to_dict())  # serializable


def test_filter_fn_and_patterns_leave_other_layers_untouched():
    model = Nested()
    stem, head = model.stem, model.head
    stem_weight = stem.weight.clone()
    config = DecomposeConfig(criterion=FixedRankCriterion(2), exclude=(r"head",))
    report = decompose_(model, config, example(), filter_fn=lambda module, name: name != "stem")
    assert model.stem is stem and torch.equal(stem.weight, stem_weight)
    assert model.head is head
    assert {layer.name for layer in report.layers} == {"body.0.0", "body.1.down"}


def test_include_patterns_and_aliases():
    model = Nested()
    report = decompose_(model, DecomposeConfig(criterion=FixedRankCriterion(2), include=(r"again",)), example())
    assert [layer.name for layer in report.decomposed] == ["body.0.0"]
    assert isinstance(model.body[0][0], ChannelWiseConv2d)
    assert type(model.stem) is nn.Conv2d


def test_patterns_matching_nothing_are_an_error():
    with pytest.raises(ValueError, match=r"include pattern\(s\) \['layer9'\] match no conv or linear layer"):
        decompose_(Nested(), DecomposeConfig(include=("layer9",)), example())
    with pytest.raises(ValueError, match=r"exclude pattern\(s\) \['sterm'\] match no"):
        decompose_(Nested(), DecomposeConfig(exclude=("sterm",)), example())


def test_a_failing_layer_leaves_the_whole_model_unchanged():
    model = Nested()
    with torch.no_grad():
        model.body[1]["down"].weight[0, 0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match="layer 'body.1.down'.*NaN or infinite.*not changed"):
        decompose_(model, DecomposeConfig(criterion=FixedRankCriterion(2)), example())
    assert all(not isinstance(m, FactorizedLayer) for m in model.modules())


def test_unbatched_inputs_count_as_one_example():
    model = nn.Sequential(nn.Conv2d(4, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3))
    report = decompose_(model, DecomposeConfig(criterion=FractionCriterion(0.25)), torch.randn(4, 12, 12))
    assert report.conv_macs_before == 10 * 10 * 8 * 4 * 9 + 8 * 8 * 8 * 8 * 9
    assert report.conv_macs_before == sum(layer.macs_before for layer in report.layers)
    assert 0 < report.conv_macs_after < report.conv_macs_before


def test_an_input_the_model_cannot_take_is_a_clear_error():
    with pytest.raises(ValueError, match=r"example input \(1, 4, 12, 12\) does not run through the model"):
        decompose_(Nested(), DecomposeConfig(), torch.randn(1, 4, 12, 12))


def test_device_dtype_and_modes_are_kept():
    model = Nested().double().train()
    model.body[0][1].eval()  # a frozen BatchNorm
    running_mean = model.body[0][1].running_mean.clone()
    decompose_(model, DecomposeConfig(criterion=FixedRankCriterion(2)), example(torch.float64))
    assert all(p.dtype == torch.float64 for p in model.parameters())
    assert model.training and model.stem.training and not model.body[0][1].training
    assert torch.equal(model.body[0][1].running_mean, running_mean)


def _laid_out(model: nn.Module, memory_format: torch.memory_format) -> bool:
    """Every 4-D weight of ``model`` has exactly the strides ``memory_format`` gives its shape."""
    weights = [w for w in model.parameters() if w.dim() == 4]
    return bool(weights) and all(w.stride() == torch.empty(w.shape, memory_format=memory_format).stride() for w in weights)


def gray_net() -> nn.Module:
    """Weights with size-1 dimensions, whose layout ``is_contiguous`` cannot tell apart: a
    one-channel stem, a 1x3 conv, a 1x1 conv."""
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.Conv2d(8, 8, (1, 3), padding=(0, 1)), nn.Conv2d(8, 4, 1))


@pytest.mark.parametrize("scheme", ["channel", "spatial"])
@pytest.mark.parametrize("memory_format", [torch.channels_last, torch.contiguous_format])
@pytest.mark.parametrize("make, channels", [(Nested, 3), (gray_net, 1)])
def test_the_weight_layout_is_kept_through_decompose_apply_plan_and_densify(scheme, memory_format, make, channels):
    """A channels_last net decomposes into channels_last factors (else each factorized conv would
    switch layouts in a net laid out for speed), a plan applied to it builds them so, and it
    densifies back into channels_last convs; a contiguous net stays contiguous. Each computes
    the same function in float64."""
    torch.manual_seed(0)
    model = make().double().eval().to(memory_format=memory_format)
    x = torch.randn(2, channels, 12, 12, dtype=torch.float64).to(memory_format=memory_format)
    expected = model(x)
    config = DecomposeConfig(scheme=scheme, criterion=FULL, keep_unprofitable=True)
    report = decompose_(model, config, x)
    assert len(report.decomposed) >= 3 and _laid_out(model, memory_format)
    torch.testing.assert_close(model(x), expected, rtol=1e-10, atol=1e-10)
    planned = apply_plan_(make().double().to(memory_format=memory_format), report.plan)
    assert _laid_out(planned, memory_format)
    densify_(model)
    assert not any(isinstance(module, FactorizedLayer) for module in model.modules()) and _laid_out(model, memory_format)
    torch.testing.assert_close(model(x), expected, rtol=1e-10, atol=1e-10)


def test_densify_refuses_a_layer_with_forward_hooks_and_changes_nothing():
    model = Nested().eval()
    decompose_(model, DecomposeConfig(criterion=FixedRankCriterion(2)), example())
    factorized = model.body[1]["down"]
    for register in (lambda: factorized.second.register_forward_hook(lambda module, inputs, output: None),
                     lambda: factorized.register_forward_pre_hook(lambda module, inputs: None)):
        handle = register()  # one hook at a time
        with pytest.raises(ValueError, match=r"cannot densify 'body.1.down'.*forward hooks.*handle.remove\(\)"):
            densify_(model)
        assert all(isinstance(model.get_submodule(name), FactorizedLayer) for name in ("stem", "body.0.0", "body.1.down"))
        handle.remove()
    densify_(model)
    assert type(model.body[1]["down"]) is nn.Conv2d


def test_unprofitable_layers_stay_dense_with_a_reason():
    model = Nested()
    report = decompose_(model, DecomposeConfig(criterion=FULL), example())
    assert report.decomposed == []
    assert all("not fewer" in layer.reason for layer in report.layers)
    assert report.conv_speedup == 1.0
    assert type(model.stem) is nn.Conv2d


def test_skips_are_reported_with_reasons():
    class Odd(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.depthwise = nn.Conv2d(8, 8, 3, groups=8)
            self.grouped = nn.Conv2d(8, 8, 3, groups=2)
            self.conv1d = nn.Conv1d(8, 8, 3)
            self.hooked = nn.Conv2d(8, 8, 1)
            self.hooked.register_forward_hook(lambda module, inputs, output: None)
            self.unused = nn.Conv2d(8, 8, 3)
            self.big = nn.Conv2d(8, 8, 3)

        def forward(self, x):
            x = self.hooked(self.grouped(self.depthwise(x)))
            return self.big(x).flatten(2) + self.conv1d(torch.zeros(x.shape[0], 8, 18)).sum()

    model = Odd()
    report = decompose_(model, DecomposeConfig(criterion=FixedRankCriterion(12), grouped="skip"), torch.randn(1, 8, 11, 11))
    reasons = {layer.name: layer.reason for layer in report.layers}
    assert "depthwise" in reasons["depthwise"]
    assert "grouped" in reasons["grouped"]
    assert "unsupported layer type Conv1d" in reasons["conv1d"]
    assert "hooks" in reasons["hooked"]
    assert "did not run" in reasons["unused"]
    assert "exceeds the full rank 8" in reasons["big"]
    assert not report.decomposed


def test_decomposing_twice_leaves_factorized_layers_alone():
    model = Nested()
    decompose_(model, DecomposeConfig(criterion=FixedRankCriterion(2), include=("stem",)), example())
    first = model.stem
    report = decompose_(model, DecomposeConfig(criterion=FixedRankCriterion(2)), example())
    assert model.stem is first
    assert "stem" not in {layer.name for layer in report.layers}
    assert not any(layer.name.startswith("stem.") for layer in report.layers)


def test_linear_layers_can_be_left_out():
    model = Nested()
    decompose_(model, DecomposeConfig(criterion=FixedRankCriterion(2), decompose_linear=False), example())
    assert type(model.head) is nn.Linear
    decompose_(model, DecomposeConfig(criterion=FixedRankCriterion(2)), example())
    assert isinstance(model.head, LowRankLinear)


def test_bad_calls_get_clear_errors():
    with pytest.raises(TypeError, match="example_input"):
        decompose_(Nested(), DecomposeConfig())
    with pytest.raises(ValueError, match="single layer"):
        decompose_(nn.Conv2d(3, 8, 3), DecomposeConfig(), torch.randn(1, 3, 8, 8))
    with pytest.raises(TypeError, match="Decompose model.module"):
        decompose_(nn.DataParallel(Nested()), DecomposeConfig(), example())


def test_ddp_wrapped_model_is_refused(tmp_path):
    # Imported before the group, as trp.train.runtime does: imported by DDP, after it, its
    # torch.distributed.nn.functional would hold the group (and gloo's threads) until pytest exits.
    import torch._dynamo  # noqa: F401

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        wrapped = nn.parallel.DistributedDataParallel(Nested())
        with pytest.raises(TypeError, match="DistributedDataParallel-wrapped.*model.module"):
            decompose_(wrapped, DecomposeConfig(), example())
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"scheme": "tucker"},
        {"rank_multiple": 0},
        {"grouped": "sometimes"},
        {"include": ("(",)},
        {"criterion": 0.02},
    ],
)
def test_impossible_configs_are_rejected(kwargs):
    with pytest.raises((ValueError, TypeError)):
        DecomposeConfig(**kwargs)


def test_config_json_round_trip_and_version_check():
    config = DecomposeConfig(scheme="spatial", criterion=FixedRankCriterion(8), rank_multiple=4, exclude=("fc",))
    assert DecomposeConfig.from_json(config.to_json()) == config
    data = config.to_dict()
    data["version"] = 99
    with pytest.raises(ValueError, match="version 99"):
        DecomposeConfig.from_dict(data)
    with pytest.raises(ValueError, match="unknown decomposition config keys"):
        DecomposeConfig.from_dict({"schema": "channel"})


def test_rank_multiple_applies_to_every_layer():
    model = Nested()
    report = decompose_(model, DecomposeConfig(criterion=FractionCriterion(0.2), rank_multiple=4, keep_unprofitable=True), example())
    assert all(layer.rank % 4 == 0 or layer.rank == layer.full_rank for layer in report.decomposed)
    assert isinstance(model.body[1]["down"], ChannelWiseConv2d)


def test_spatial_scheme_builds_spatial_layers():
    model = Nested()
    decompose_(model, DecomposeConfig(scheme="spatial", criterion=FixedRankCriterion(2)), example())
    assert isinstance(model.body[1]["down"], SpatialWiseConv2d)
