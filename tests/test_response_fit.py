"""decompose_on_data_: factors fitted to a layer's responses, checked against the float64
optimum computed independently (the SVD of the stacked responses)."""

import copy

import pytest
import torch
from torch import nn

import trp


def correlated_batches(channels: int, count: int = 4, size: int = 6, seed: int = 0) -> list[torch.Tensor]:
    """Inputs whose channels are mixed and scaled unevenly, so the responses' principal
    directions differ from the weight's singular vectors."""
    generator = torch.Generator().manual_seed(seed)
    mixing = torch.randn(channels, channels, generator=generator) * torch.logspace(0, -2, channels)
    return [torch.einsum("dc,bchw->bdhw", mixing, torch.randn(8, channels, size, size, generator=generator))
            for _ in range(count)]


def responses(layer: nn.Module, batches: list[torch.Tensor], bias: torch.Tensor | None) -> torch.Tensor:
    """Output rows (one per position) of ``layer`` in float64, minus ``bias``."""
    layer = copy.deepcopy(layer).double()
    rows = []
    with torch.no_grad():
        for x in batches:
            y = layer(x.double())
            if bias is not None:
                y = y - bias.double().view(1, -1, *([1] * (y.dim() - 2)))
            rows.append(y.movedim(1, -1).reshape(-1, y.shape[1]))
    return torch.cat(rows)


def optimal_error(y: torch.Tensor, rank: int, groups: int) -> float:
    """Eckart–Young: the least ``||Y - Y_r||^2 / ||Y||^2`` over rank-``rank`` maps, per group."""
    tail = sum(torch.linalg.svdvals(block)[rank:].square().sum() for block in y.chunk(groups, dim=1))
    return float(tail / y.square().sum())


@pytest.mark.parametrize("groups", [1, 2])
def test_fitted_conv_reaches_the_float64_optimum_and_beats_the_weight_svd(groups):
    torch.manual_seed(0)
    dense = nn.Conv2d(8, 16, 3, padding=1, groups=groups, bias=True)
    model = nn.Sequential(dense)
    batches = correlated_batches(8)
    reference = responses(nn.Sequential(dense), batches, dense.bias)
    bias = dense.bias.detach().clone()
    config = trp.DecomposeConfig(criterion=trp.FixedRankCriterion(3), keep_unprofitable=True)

    report, fits = trp.decompose_on_data_(model, config, batches[0][:1], batches)

    (fit,) = fits
    layer = model[0]
    assert isinstance(layer, trp.ChannelWiseConv2d) and layer.rank == 3 and report.decomposed[0].rank == 3
    achieved = responses(layer, batches, bias)
    measured = float((reference - achieved).square().sum() / reference.square().sum())
    assert measured == pytest.approx(optimal_error(reference, 3, groups), rel=1e-4)
    assert fit.fitted_error == pytest.approx(measured, rel=1e-4)
    svd_model = nn.Sequential(trp.ChannelWiseConv2d.from_dense(dense, trp.FixedRankCriterion(3)))
    svd_measured = float((reference - responses(svd_model, batches, bias)).square().sum() / reference.square().sum())
    assert fit.svd_error == pytest.approx(svd_measured, rel=1e-4)
    assert fit.fitted_error < 0.9 * fit.svd_error  # the uneven inputs make the data matter
    assert torch.equal(layer.second.bias.detach(), bias)
    # the report's weight error is that of the factors installed, which the SVD beats in weight space
    weight = dense.weight.detach().double()
    installed = float((weight - layer.dense_weight().detach().double()).norm() / weight.norm())
    assert report.decomposed[0].relative_error == pytest.approx(installed, rel=1e-6)
    svd_report = trp.decompose_(copy.deepcopy(nn.Sequential(dense)), config, batches[0][:1]).decomposed[0]
    assert report.decomposed[0].relative_error > svd_report.relative_error


def test_a_linear_layer_over_tokens_is_fitted_per_token():
    torch.manual_seed(0)
    dense = nn.Linear(6, 5)
    tokens = correlated_batches(6, count=1)[0].flatten(2).transpose(1, 2)  # (8, 36, 6): batch, token, feature
    reference = dense(tokens).detach().double() - dense.bias.detach().double()
    model = nn.Sequential(dense)
    config = trp.DecomposeConfig(criterion=trp.FixedRankCriterion(2), keep_unprofitable=True)
    _, (fit,) = trp.decompose_on_data_(model, config, tokens[:1], [tokens])
    assert fit.fitted_error == pytest.approx(optimal_error(reference.reshape(-1, 5), 2, 1), rel=1e-4)


def test_with_white_inputs_the_fit_is_the_weight_svd():
    torch.manual_seed(0)
    dense = nn.Linear(12, 10)
    inputs = torch.linalg.qr(torch.randn(48, 12)).Q * 48**0.5  # E[x x^T] = I exactly
    model = nn.Sequential(dense)
    config = trp.DecomposeConfig(criterion=trp.FixedRankCriterion(4), keep_unprofitable=True)
    svd_layer = trp.LowRankLinear.from_dense(dense, trp.FixedRankCriterion(4))

    _, (fit,) = trp.decompose_on_data_(model, config, inputs[:1], [inputs])

    assert fit.fitted_error == pytest.approx(fit.svd_error, rel=1e-6)
    torch.testing.assert_close(model[0].dense_weight(), svd_layer.dense_weight(), atol=1e-5, rtol=1e-4)


def test_calibration_batches_may_carry_labels_and_the_model_keeps_its_mode():
    model = trp.models.create_model("resnet20", num_classes=3).train()
    images = torch.randn(4, 3, 16, 16)
    config = trp.DecomposeConfig(criterion=trp.EnergyCriterion(0.3), exclude=(r"conv1",))
    report, fits = trp.decompose_on_data_(model, config, images[:1], [(images, torch.zeros(4, dtype=torch.long))])
    assert model.training and len(fits) == len(report.decomposed) > 0
    assert all(fit.fitted_error <= fit.svd_error + 1e-9 for fit in fits)
    assert model(images).shape == (4, 3)


def test_responses_that_span_too_few_directions_fall_back_to_the_weights_svd():
    torch.manual_seed(0)
    dense = nn.Linear(16, 12)
    svd_weight = trp.LowRankLinear.from_dense(dense, trp.FixedRankCriterion(6)).dense_weight()
    config = trp.DecomposeConfig(criterion=trp.FixedRankCriterion(6), keep_unprofitable=True)
    zero = nn.Sequential(nn.Linear(16, 12))
    zero[0].load_state_dict(dense.state_dict())
    _, (fit,) = trp.decompose_on_data_(zero, config, torch.zeros(1, 16), [torch.zeros(8, 16)])
    torch.testing.assert_close(zero[0].dense_weight(), svd_weight, atol=1e-5, rtol=1e-4)
    assert (fit.svd_error, fit.fitted_error) == (0.0, 0.0)
    # Inputs in a 3-dimensional subspace: the fit reproduces them exactly; the other 3 of the
    # 6 directions come from the weight (deterministic), so the fit keeps the weight's own
    # energy outside the data far better than arbitrary directions would.
    low = nn.Sequential(nn.Linear(16, 12))
    low[0].load_state_dict(dense.state_dict())
    inputs = torch.randn(64, 3) @ torch.randn(3, 16)
    _, (fit,) = trp.decompose_on_data_(low, config, inputs[:1], [inputs])
    assert fit.fitted_error < 1e-9
    fitted = low[0].dense_weight().detach()
    outside = torch.linalg.matrix_norm(fitted - dense.weight.detach()) / torch.linalg.matrix_norm(dense.weight.detach())
    weight_svd = torch.linalg.matrix_norm(svd_weight - dense.weight.detach()) / torch.linalg.matrix_norm(dense.weight.detach())
    assert outside < 1.5 * weight_svd


def test_bad_calibration_and_spatial_scheme_are_refused_and_leave_the_model_alone():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten(), nn.Linear(8 * 4 * 4, 2))
    x = torch.randn(2, 3, 6, 6)
    with pytest.raises(ValueError, match="scheme 'spatial' is not supported"):
        trp.decompose_on_data_(model, trp.DecomposeConfig(scheme="spatial"), x, [x])
    with pytest.raises(ValueError, match="yielded no batch"):
        trp.decompose_on_data_(model, trp.DecomposeConfig(), x, [])
    branch = nn.ModuleDict({"used": nn.Linear(4, 4), "unused": nn.Linear(4, 4)})
    only_used = type("OnlyUsed", (nn.Module,), {"forward": lambda self, x: branch["used"](x)})()
    only_used.branch = branch
    with pytest.raises(ValueError, match=r"\['branch.unused'\] did not run"):
        trp.decompose_on_data_(only_used, trp.DecomposeConfig(), torch.randn(2, 4), [torch.randn(2, 4)])
    with pytest.raises(TypeError, match=r"not one tensor: pass \[inputs\]"):
        trp.decompose_on_data_(model, trp.DecomposeConfig(), x, x)
    with pytest.raises(ValueError, match=r"calibration batch 2 \(shape \(2, 5, 6, 6\).*does not run through the model"):
        trp.decompose_on_data_(model, trp.DecomposeConfig(), x, [x, torch.randn(2, 5, 6, 6)])
    poisoned = x.clone()
    poisoned[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="contain NaN or infinite values"):
        trp.decompose_on_data_(model, trp.DecomposeConfig(), x, [x, poisoned])
    assert all(type(m) in (nn.Conv2d, nn.Flatten, nn.Linear) for m in model)
    # Nothing to factorize: an empty fit, as decompose_ gives an empty report.
    report, fits = trp.decompose_on_data_(model, trp.DecomposeConfig(exclude=(r"0",), decompose_linear=False), x, [x])
    assert fits == [] and report.decomposed == []


def test_moments_gathered_once_give_the_same_fit_at_every_rank():
    from trp.response_fit import decompose_fitted_, response_moments
    from trp.surgery import factorizable_layers

    torch.manual_seed(0)
    dense = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1))
    batches = correlated_batches(8)
    config = trp.DecomposeConfig(criterion=trp.FixedRankCriterion(3), keep_unprofitable=True)
    moments = response_moments(dense, dict(factorizable_layers(dense, config)), batches)
    for rank in (2, 5):
        ranked = trp.DecomposeConfig(criterion=trp.FixedRankCriterion(rank), keep_unprofitable=True)
        once, direct = copy.deepcopy(dense), copy.deepcopy(dense)
        _, fits_once = decompose_fitted_(once, ranked, batches[0][:1], moments)
        _, fits_direct = trp.decompose_on_data_(direct, ranked, batches[0][:1], batches)
        assert fits_once == fits_direct
        torch.testing.assert_close(once(batches[0]), direct(batches[0]))
    with pytest.raises(ValueError, match=r"no response moments for layers \['2'\]"):
        decompose_fitted_(copy.deepcopy(dense), config, batches[0][:1], {"0": moments["0"]})


def test_response_errors_match_a_float64_forward_of_both_nets():
    torch.manual_seed(0)
    dense = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 4, 1))
    batches = correlated_batches(8)
    approximation = copy.deepcopy(dense)
    with torch.no_grad():
        approximation[0].weight.add_(0.05 * torch.randn_like(approximation[0].weight))

    errors = trp.response_fit.response_errors(dense, approximation, ["0", "2"], [(x, None) for x in batches])

    def outputs(net: nn.Module) -> list[list[torch.Tensor]]:
        net = copy.deepcopy(net).double()
        with torch.no_grad():
            return [[net[0](x.double()), net(x.double())] for x in batches]

    ref, approx = outputs(dense), outputs(approximation)
    for index, name in enumerate(["0", "2"]):
        expected = sum((a[index] - r[index]).square().sum() for a, r in zip(approx, ref)) / sum(
            r[index].square().sum() for r in ref)
        assert errors[name] == pytest.approx(float(expected), rel=1e-6)  # the nets run in float32
    assert errors["0"] > 0 and errors["2"] > 0  # the error reaches the layer after the perturbed one
    assert trp.response_fit.response_errors(dense, copy.deepcopy(dense), ["0", "2"], batches) == {"0": 0.0, "2": 0.0}
    with pytest.raises(ValueError, match=r"\['1\.weight'\] are not in both nets"):
        trp.response_fit.response_errors(dense, approximation, ["1.weight"], batches)


def test_in_the_decomposed_net_the_first_layer_carries_exactly_its_fitted_error():
    """The first layer sees the same images in both nets and has no bias, so its error in the
    net is the fit's own; later layers also carry what the layers before them changed."""
    torch.manual_seed(0)
    dense = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
                          nn.Conv2d(16, 16, 3, padding=1, bias=False)).eval()
    batches = correlated_batches(3)
    model = copy.deepcopy(dense)
    config = trp.DecomposeConfig(criterion=trp.FixedRankCriterion(4), keep_unprofitable=True)
    _, fits = trp.decompose_on_data_(model, config, batches[0][:1], batches)

    errors = trp.response_fit.response_errors(dense, model, [fit.name for fit in fits], batches)

    first, second = fits
    assert errors[first.name] == pytest.approx(first.fitted_error, rel=1e-6)
    assert errors[second.name] != pytest.approx(second.fitted_error, rel=1e-3)
