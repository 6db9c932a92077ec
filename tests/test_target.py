"""Target mode: fixed ranks (``DecomposeConfig.ranks``) and the MAC-budget rank allocation
(``trp.target.ranks_for_speedup``), checked against a brute-force search and a float64 SVD."""

import copy
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


def brute_force(net: nn.Module, config: trp.DecomposeConfig) -> list[tuple[float, float]]:
    """``(conv speed-up, summed energy lost)`` of every rank combination, each decomposed."""
    names = ["0", "2", "4"]
    full = [4, 6, 5]
    points = []
    for ranks in itertools.product(*(range(1, f + 1) for f in full)):
        model = copy.deepcopy(net)
        report = trp.decompose_(model, trp.DecomposeConfig(ranks=dict(zip(names, ranks)), keep_unprofitable=config.keep_unprofitable), EXAMPLE)
        lost = sum(energy_lost(net.get_submodule(layer.name).weight, layer.rank) for layer in report.layers if layer.decomposed)
        points.append((report.conv_speedup, lost))
    return points


@pytest.mark.parametrize("keep_unprofitable", [False, True])
@pytest.mark.parametrize("target", [1.3, 2.0, 3.0])
def test_allocation_is_optimal_for_the_budget_it_spends(target, keep_unprofitable):
    net = small_net()
    config = trp.DecomposeConfig(keep_unprofitable=keep_unprofitable)
    allocated = ranks_for_speedup(net, config, EXAMPLE, target)
    report = trp.decompose_(copy.deepcopy(net), allocated.config, EXAMPLE)
    assert report.conv_speedup == pytest.approx(allocated.speedup) and allocated.speedup >= target
    lost = sum(energy_lost(net.get_submodule(layer.name).weight, layer.rank) for layer in report.layers if layer.decomposed)
    assert lost == pytest.approx(allocated.energy_lost, abs=1e-6)  # the allocation's SVD is float32
    # A Lagrangian solution is optimal for the MACs it spends: nothing at least as fast loses less.
    rivals = [point_lost for speedup, point_lost in brute_force(net, config) if speedup >= allocated.speedup - 1e-12]
    assert min(rivals) >= allocated.energy_lost - 1e-6


def test_allocation_keeps_more_rank_where_rank_is_cheap():
    """Two convs with the same spectrum, the second on a 4x smaller feature map: one unit of its
    rank costs a quarter of the MACs, so the allocation keeps more of it; one energy for every
    layer keeps the same rank in both."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.Conv2d(16, 16, 3, padding=1, stride=2),
                        nn.Conv2d(16, 16, 3, padding=1))
    with torch.no_grad():
        u, _, vh = torch.linalg.svd(torch.randn(16, 144), full_matrices=False)
        spectrum = 0.85 ** torch.arange(16.0)
        for index in (0, 2):
            net[index].weight.copy_((u * spectrum @ vh).reshape(16, 16, 3, 3))
    config = trp.DecomposeConfig(exclude=("1",))
    example = torch.zeros(1, 16, 32, 32)
    allocated = ranks_for_speedup(net, config, example, 2.0)
    assert allocated.ranks["2"] > allocated.ranks["0"]
    found = criterion_for_speedup(net, config, example, 2.0)
    uniform = trp.decompose_(copy.deepcopy(net), trp.DecomposeConfig(exclude=("1",), criterion=found.criterion), example)
    rank = {layer.name: layer.rank for layer in uniform.layers}
    assert rank["0"] == rank["2"] and uniform.conv_speedup >= 2.0
    assert allocated.energy_lost < energy_lost(net[0].weight, rank["0"]) + energy_lost(net[2].weight, rank["2"])


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
