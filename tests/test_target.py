"""Target mode: fixed ranks (``DecomposeConfig.ranks``) and the MAC-budget rank allocation
(``trp.target.ranks_for_speedup``), checked against a brute-force search and a float64 SVD."""

import copy
import dataclasses
import itertools

import numpy as np
import pytest
import torch
from torch import nn

import trp
from trp.cli import main
from trp.target import criterion_for_speedup, ranks_for_speedup

EXAMPLE = torch.zeros(1, 3, 32, 32)


def small_net() -> nn.Sequential:
    """Three convs whose channel-scheme full ranks are 4, 6 and 5: 120 rank combinations."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(),
                        nn.Conv2d(6, 5, 1))
    with torch.no_grad():  # spectra that decay at different speeds, so that the ranks matter
        for index, decay in ((0, 0.3), (2, 0.8), (4, 0.5)):
            u, _, vh = torch.linalg.svd(net[index].weight.reshape(net[index].out_channels, -1), full_matrices=False)
            s = decay ** torch.arange(u.shape[1], dtype=u.dtype)
            net[index].weight.copy_((u * s @ vh).reshape(net[index].weight.shape))
    return net


def energy_lost(weight: torch.Tensor, rank: int) -> float:
    """Fraction of the squared singular values of the channel-scheme matrix beyond ``rank``
    (numpy, float64)."""
    s = np.linalg.svd(weight.detach().double().reshape(weight.shape[0], -1).numpy(), compute_uv=False)
    return float((s[rank:] ** 2).sum() / (s ** 2).sum())


def penalty(objective: str, lost: float) -> float:
    return -np.log(1 - lost) if objective == "log_kept" else lost


def brute_force(net: nn.Module, config: trp.DecomposeConfig, objective: str) -> list[tuple[float, float]]:
    """``(conv speed-up, summed penalty)`` of every rank combination, each decomposed."""
    names = ["0", "2", "4"]
    full = [4, 6, 5]
    points = []
    for ranks in itertools.product(*(range(1, f + 1) for f in full)):
        model = copy.deepcopy(net)
        report = trp.decompose_(model, dataclasses.replace(config, ranks=dict(zip(names, ranks))), EXAMPLE)
        total = sum(penalty(objective, energy_lost(net.get_submodule(layer.name).weight, layer.rank))
                    for layer in report.layers if layer.decomposed)
        points.append((report.conv_speedup, total))
    return points


@pytest.mark.parametrize("objective", trp.target.OBJECTIVES)
@pytest.mark.parametrize("keep_unprofitable", [False, True])
@pytest.mark.parametrize("target", [1.3, 2.0, 3.0])
def test_allocation_is_optimal_for_the_budget_it_spends(target, keep_unprofitable, objective):
    net = small_net()
    config = trp.DecomposeConfig(keep_unprofitable=keep_unprofitable)
    allocated = ranks_for_speedup(net, config, EXAMPLE, target, objective=objective)
    report = trp.decompose_(copy.deepcopy(net), allocated.config, EXAMPLE)
    assert report.conv_speedup == pytest.approx(allocated.speedup) and allocated.speedup >= target
    lost = [energy_lost(net.get_submodule(layer.name).weight, layer.rank) for layer in report.layers if layer.decomposed]
    # The allocation's SVD is float32.
    assert sum(lost) == pytest.approx(allocated.energy_lost, abs=1e-6)
    assert sum(penalty(objective, x) for x in lost) == pytest.approx(allocated.penalty, abs=1e-6)
    # A Lagrangian solution is optimal for the MACs it spends: nothing at least as fast costs less.
    rivals = [total for speedup, total in brute_force(net, config, objective) if speedup >= allocated.speedup - 1e-12]
    assert min(rivals) >= allocated.penalty - 1e-6


def two_maps_net(decay: float) -> nn.Sequential:
    """Convs "0" and "2" with the same spectrum (``decay ** k``), "2" on a 4x smaller feature
    map, so one unit of its rank costs a quarter of the MACs; "1" (the stride) is left dense."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.Conv2d(16, 16, 3, padding=1, stride=2),
                        nn.Conv2d(16, 16, 3, padding=1))
    with torch.no_grad():
        u, _, vh = torch.linalg.svd(torch.randn(16, 144), full_matrices=False)
        for index in (0, 2):
            net[index].weight.copy_((u * decay ** torch.arange(16.0) @ vh).reshape(16, 16, 3, 3))
    return net


TWO_MAPS = trp.DecomposeConfig(exclude=("1",))
TWO_MAPS_INPUT = torch.zeros(1, 16, 32, 32)


def test_allocation_keeps_more_rank_where_rank_is_cheap():
    """The allocation keeps more rank in the conv whose rank is cheap; one energy for every
    layer keeps the same rank in both, and loses more energy for the same budget."""
    net = two_maps_net(0.85)
    allocated = ranks_for_speedup(net, TWO_MAPS, TWO_MAPS_INPUT, 2.0)
    assert allocated.ranks["2"] > allocated.ranks["0"]
    found = criterion_for_speedup(net, TWO_MAPS, TWO_MAPS_INPUT, 2.0)
    uniform = trp.decompose_(copy.deepcopy(net), dataclasses.replace(TWO_MAPS, criterion=found.criterion), TWO_MAPS_INPUT)
    rank = {layer.name: layer.rank for layer in uniform.layers}
    assert rank["0"] == rank["2"] and uniform.conv_speedup >= 2.0
    assert allocated.energy_lost < energy_lost(net[0].weight, rank["0"]) + energy_lost(net[2].weight, rank["2"])


def test_the_log_of_the_kept_energy_cuts_no_layer_as_deep_as_the_sum_lost():
    """At 3x, summing the energy lost takes the expensive conv to rank 1; the log of the kept
    fraction charges a deep cut more and keeps it at rank 2."""
    net = two_maps_net(0.9)
    by = {objective: ranks_for_speedup(net, TWO_MAPS, TWO_MAPS_INPUT, 3.0, objective=objective).ranks
          for objective in trp.target.OBJECTIVES}
    assert by == {"lost": {"0": 1, "2": 8}, "log_kept": {"0": 2, "2": 6}}
    with pytest.raises(ValueError, match="objective must be one of"):
        ranks_for_speedup(net, TWO_MAPS, TWO_MAPS_INPUT, 2.0, objective="max")


@pytest.mark.parametrize("scheme", ["channel", "spatial"])
def test_allocation_reaches_the_target_on_resnet20(scheme):
    model = trp.models.create_model("resnet20")
    config = trp.DecomposeConfig(scheme=scheme, rank_multiple=4, ranks={"conv1": 3})
    allocated = ranks_for_speedup(model, config, EXAMPLE, 2.5, tolerance=0.05)
    assert 2.5 <= allocated.speedup <= 2.5 * 1.05
    assert allocated.config.ranks["conv1"] == 3 and "conv1" not in allocated.ranks and "fc" not in allocated.config.ranks
    full = {name: trp.target.factorized_class_for(module, scheme).full_rank_of(module)
            for name, module in model.named_modules() if name in allocated.ranks}
    assert all(rank % 4 == 0 or rank == full[name] for name, rank in allocated.ranks.items())
    report = trp.decompose_(copy.deepcopy(model), allocated.config, EXAMPLE)
    assert report.conv_speedup == pytest.approx(allocated.speedup)
    assert {layer.name: layer.rank for layer in report.layers if layer.name in allocated.ranks} == allocated.ranks
    with pytest.raises(ValueError, match="out of reach: the most these layers give is"):
        ranks_for_speedup(model, config, EXAMPLE, 100.0)
    with pytest.raises(ValueError, match=">= 1"):
        ranks_for_speedup(model, config, EXAMPLE, 0.5)


def test_criterion_search_keeps_fixed_ranks():
    model = trp.models.create_model("resnet20")
    config = trp.DecomposeConfig(ranks={"layer3.2.conv2": 60}, decompose_linear=False)
    found = criterion_for_speedup(model, config, EXAMPLE, 2.0, family="fraction")
    searched = trp.DecomposeConfig(ranks={"layer3.2.conv2": 60}, decompose_linear=False, criterion=found.criterion)
    report = trp.decompose_(copy.deepcopy(model), searched, EXAMPLE)
    assert report.conv_speedup == pytest.approx(found.speedup)
    assert next(layer for layer in report.layers if layer.name == "layer3.2.conv2").rank == 60


def test_fixed_ranks_in_decomposition_and_in_trp_projections():
    model = trp.models.create_model("resnet20")
    config = trp.DecomposeConfig(scheme="spatial", ranks={"layer1.0.conv1": 5, "fc": 2})
    assert trp.DecomposeConfig.from_dict(config.to_dict()) == config
    report = trp.decompose_(copy.deepcopy(model), config, EXAMPLE)
    ranks = {layer.name: layer.rank for layer in report.layers}
    assert ranks["layer1.0.conv1"] == 5 and ranks["fc"] == 2 and ranks["layer1.0.conv2"] != 5
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    handle = trp.attach_trp(model, optimizer, trp.TRPConfig(decompose=config))
    projected = handle.project_()
    assert projected["layer1.0.conv1"] == 5
    matrix = trp.weight_to_matrix(model.layer1[0].conv1.weight.detach(), "spatial")
    assert int(torch.linalg.matrix_rank(matrix, rtol=1e-4)) == 5  # float32 rounding aside


@pytest.mark.parametrize(
    "ranks, config, message",
    [
        ({"layer1.0.convX": 3}, {}, "is not a conv or linear layer of this model"),
        ({"fc": 3}, {"decompose_linear": False}, "leaves out"),
        ({"layer1.0.conv1": 17}, {}, "above its full rank 16"),
    ],
)
def test_fixed_ranks_that_cannot_apply_are_refused(ranks, config, message):
    model = trp.models.create_model("resnet20")
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError, match=message):
        trp.decompose_(model, trp.DecomposeConfig(ranks=ranks, **config), EXAMPLE)
    assert all(torch.equal(before[key], value) for key, value in model.state_dict().items())
    with pytest.raises(ValueError, match=message):
        trp.attach_trp(model, torch.optim.SGD(model.parameters(), lr=0.1), trp.TRPConfig(decompose=trp.DecomposeConfig(ranks=ranks, **config)))
    with pytest.raises(ValueError, match="positive integers"):
        trp.DecomposeConfig(ranks={"conv1": 0})


def test_fixed_rank_of_a_shared_layer_is_keyed_by_its_first_name():
    shared = nn.Conv2d(8, 8, 3, padding=1)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), shared, shared)
    example = torch.zeros(1, 3, 8, 8)
    with pytest.raises(ValueError, match="key its rank by '1'"):
        trp.decompose_(copy.deepcopy(model), trp.DecomposeConfig(ranks={"2": 3}), example)
    report = trp.decompose_(model, trp.DecomposeConfig(ranks={"1": 3}), example)
    assert model[1] is model[2] and model[1].rank == 3 and report.layers[1].aliases == ("2",)


def test_cli_decompose_allocates_and_fixes_ranks(tmp_path, capsys):
    report = tmp_path / "report.json"
    assert main(["decompose", "--model", "resnet20", "--scheme", "spatial", "--no-linear", "--target-speedup", "2.5",
                 "--target-family", "allocate", "--rank", "conv1=4", "--report", str(report)]) == 0
    assert "ranks allocated by energy per MAC give" in capsys.readouterr().out
    data = __import__("json").loads(report.read_text())
    assert data["config"]["ranks"]["conv1"] == 4 and len(data["config"]["ranks"]) == 19
    assert data["totals"]["conv_speedup"] >= 2.5
    assert next(layer for layer in data["layers"] if layer["name"] == "conv1")["rank"] == 4
    for bad, message in ((["--rank", "conv1=x"], "write NAME=R"), (["--rank", "conv1=2", "--rank", "conv1=3"], "twice"),
                         (["--rank", "conv9=2"], "is not a conv or linear layer")):
        assert main(["decompose", "--model", "resnet20", *bad]) == 2
        assert message in capsys.readouterr().err


def test_a_target_of_one_keeps_every_layer_dense_at_full_rank():
    """On a tie (every rank too high to pay off costs the dense MACs and loses nothing) the
    largest rank wins, so a layer left dense is given its full rank."""
    net = small_net()
    allocated = ranks_for_speedup(net, trp.DecomposeConfig(), EXAMPLE, 1.0)
    assert allocated.speedup == 1.0 and allocated.ranks == {"0": 4, "2": 6, "4": 5}


def test_fixed_ranks_on_layers_that_cannot_be_factorized_are_refused():
    depthwise = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.Conv2d(16, 16, 3, padding=1, groups=16))
    with pytest.raises(ValueError, match="'1', which cannot be factorized: depthwise"):
        trp.decompose_(depthwise, trp.DecomposeConfig(ranks={"1": 1}), torch.zeros(1, 3, 8, 8))

    class Unused(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.used, self.unused = nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.used(x)

    with pytest.raises(ValueError, match="'unused', which cannot be factorized: did not run"):
        trp.decompose_(Unused(), trp.DecomposeConfig(ranks={"unused": 2}), torch.zeros(1, 3, 8, 8))


def test_a_filter_fn_may_turn_down_a_layer_with_a_fixed_rank():
    model = trp.models.create_model("resnet20")
    config = trp.DecomposeConfig(ranks={"conv1": 2, "layer1.0.conv1": 3}, decompose_linear=False)
    report = trp.decompose_(model, config, EXAMPLE, filter_fn=lambda module, name: name != "conv1")
    assert "conv1" not in {layer.name for layer in report.layers} and isinstance(model.conv1, nn.Conv2d)
    assert model.layer1[0].conv1.rank == 3


def test_target_searches_refuse_what_they_cannot_do():
    model = trp.models.create_model("resnet20")
    for search in (ranks_for_speedup, criterion_for_speedup):
        with pytest.raises(ValueError, match="no conv layer to decompose"):
            search(model, trp.DecomposeConfig(include=("fc",)), EXAMPLE, 1.5)
        with pytest.raises(ValueError, match="tolerance"):
            search(model, trp.DecomposeConfig(), EXAMPLE, 1.5, tolerance=-0.1)
        with pytest.raises(ValueError, match="at rank 64, the rank multiple.*lower rank_multiple"):
            search(model, trp.DecomposeConfig(rank_multiple=64), EXAMPLE, 3.0)
    with pytest.raises(ValueError, match="must be a dict"):
        trp.DecomposeConfig(ranks=None)
    assert main(["decompose", "--model", "resnet20", "--target-family", "allocate"]) == 2
