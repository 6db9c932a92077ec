"""Decomposed checkpoints reload into a fresh model, and bad files get clear errors."""

import pytest
import torch
from torch import nn

from trp import DecomposeConfig, RankPlan, apply_plan_, decompose_, densify_
from trp.checkpoint import CheckpointError, load_decomposed, read_checkpoint, read_rank_plan, save_checkpoint
from trp.criteria import EnergyCriterion, FixedRankCriterion
from trp.layers import FactorizedLayer
from trp.models import create_model
from trp.plan import PlanEntry

from test_surgery import Nested, example


@pytest.mark.parametrize("scheme", ["channel", "spatial"])
def test_save_load_round_trip_gives_identical_outputs(tmp_path, scheme):
    torch.manual_seed(0)
    model = create_model("resnet20").eval()
    x = torch.randn(4, 3, 32, 32)
    report = decompose_(model, DecomposeConfig(scheme=scheme, criterion=FixedRankCriterion(6)), x)
    path = save_checkpoint(tmp_path / "r20.pt", model, report.plan, {"name": "resnet20", "kwargs": {}})
    fresh = create_model("resnet20").eval()
    load_decomposed(path, fresh)
    assert torch.equal(fresh(x), model(x))
    assert [type(m) for m in fresh.modules()] == [type(m) for m in model.modules()]
    checkpoint = read_checkpoint(path)
    assert checkpoint.model == {"name": "resnet20", "kwargs": {}}
    assert checkpoint.plan == report.plan


def test_shared_modules_survive_the_round_trip(tmp_path):
    model = Nested().eval()
    report = decompose_(model, DecomposeConfig(criterion=FixedRankCriterion(3)), example())
    path = save_checkpoint(tmp_path / "nested.pt", model, report.plan)
    fresh = load_decomposed(path, Nested().eval())
    assert fresh.again is fresh.body[0][0]
    x = example()
    assert torch.equal(fresh(x), model(x))


def test_plan_json_round_trip():
    plan = RankPlan([PlanEntry("a.b", "spatial", 4, ("c",)), PlanEntry("fc", "linear", 2)])
    assert RankPlan.from_json(plan.to_json()) == plan
    with pytest.raises(ValueError, match="version"):
        RankPlan.from_dict({"version": 7, "layers": []})
    with pytest.raises(ValueError, match="kind"):
        PlanEntry("x", "tucker", 3)
    with pytest.raises(ValueError, match="twice"):
        RankPlan([PlanEntry("a", "channel", 2), PlanEntry("b", "channel", 2, ("a",))])


def test_plan_from_another_model_is_a_clear_error(tmp_path):
    model = create_model("resnet20")
    report = decompose_(model, DecomposeConfig(criterion=EnergyCriterion(0.3)), torch.randn(1, 3, 32, 32))
    path = save_checkpoint(tmp_path / "r20.pt", model, report.plan)
    with pytest.raises(CheckpointError, match="does not have"):
        load_decomposed(path, Nested())
    with pytest.raises(CheckpointError, match="does not fit this model"):
        load_decomposed(path, create_model("resnet32"))  # same names for 20 layers, more weights
    wrong_classes = create_model("resnet20", num_classes=100)
    with pytest.raises(CheckpointError, match="shape mismatch"):
        load_decomposed(path, wrong_classes)
    assert all(type(m).__name__ != "ChannelWiseConv2d" for m in wrong_classes.modules())  # left unchanged
    decomposed = load_decomposed(path, create_model("resnet20"))
    with pytest.raises(CheckpointError, match="already factorized"):
        load_decomposed(path, decomposed)


def test_plan_that_does_not_fit_leaves_the_model_unchanged():
    model = Nested()
    bad = RankPlan([PlanEntry("stem", "channel", 2), PlanEntry("head", "channel", 2)])
    with pytest.raises(ValueError, match="'head' as channel, but in this model it is a Linear"):
        apply_plan_(model, bad)
    assert type(model.stem) is nn.Conv2d
    with pytest.raises(ValueError, match="above its full rank"):
        apply_plan_(model, RankPlan([PlanEntry("stem", "channel", 17)]))
    with pytest.raises(ValueError, match="shares"):
        apply_plan_(model, RankPlan([PlanEntry("stem", "channel", 2, ("again",))]))


def test_decomposed_weights_without_a_plan_do_not_load(tmp_path):
    model = Nested()
    decompose_(model, DecomposeConfig(criterion=FixedRankCriterion(3)), example())
    torch.save(model.state_dict(), tmp_path / "raw.pt")
    with pytest.raises(CheckpointError, match="without its rank plan"):
        load_decomposed(tmp_path / "raw.pt", Nested())


def test_plain_and_ddp_state_dicts_load(tmp_path):
    model = Nested()
    torch.save({f"module.{k}": v for k, v in model.state_dict().items()}, tmp_path / "ddp.pt")
    torch.save({"state_dict": model.state_dict(), "epoch": 3}, tmp_path / "nested.pt")
    for name in ("ddp.pt", "nested.pt"):
        fresh = load_decomposed(tmp_path / name, Nested())
        assert torch.equal(fresh.stem.weight, model.stem.weight)


class NotAWeight:
    pass


@pytest.mark.parametrize(
    "write, message",
    [
        (lambda path: None, "does not exist"),
        (lambda path: path.write_bytes(b"\x00garbage" * 10), "cannot read"),
        (lambda path: path.write_bytes(b"truncated"), "cannot read"),  # legacy-pickle bytes: IndexError inside torch
        (lambda path: path.write_bytes(b""), "cannot read"),
        (lambda path: torch.save({"net": NotAWeight()}, path), "never unpickles code"),
        (lambda path: torch.save({"epoch": 3, "lr": 0.1}, path), "not a model checkpoint"),
        (lambda path: torch.save({"format": "trp-checkpoint", "version": 9}, path), "version 9"),
        (
            lambda path: torch.save({"format": "trp-checkpoint", "version": 1, "plan": "{bad", "state_dict": {}}, path),
            "not valid JSON",
        ),
    ],
    ids=["missing", "corrupt", "stray-bytes", "empty", "pickled-code", "foreign", "future-version", "bad-plan"],
)
def test_bad_files_get_clear_errors(tmp_path, write, message):
    path = tmp_path / "bad.pt"
    write(path)
    with pytest.raises(CheckpointError, match=message):
        load_decomposed(path, Nested())


def test_save_is_atomic_and_checks_the_directory(tmp_path, monkeypatch):
    model = Nested()
    path = save_checkpoint(tmp_path / "a.pt", model)
    original = path.read_bytes()

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, Nested())
    assert path.read_bytes() == original
    assert [p.name for p in tmp_path.iterdir()] == ["a.pt"]  # no temporary file left
    with pytest.raises(CheckpointError, match="does not exist"):
        save_checkpoint(tmp_path / "missing" / "b.pt", model)


@pytest.mark.parametrize("scheme", ["channel", "spatial"])
def test_a_plan_from_dense_weights_is_their_truncated_svd_and_densify_inverts_it(scheme):
    """``apply_plan_(from_dense_weights=True)`` gives each layer the best rank-r approximation
    of its dense weight (Eckart-Young: the error is the dropped singular values, checked in
    float64 against ``torch.linalg.svdvals``); ``densify_`` turns the layers back into dense
    ones computing the same function, shared modules staying shared."""
    torch.manual_seed(0)
    model = Nested().double().eval()
    dense_weights = {name: model.get_submodule(name).weight.detach().clone() for name in ("stem", "body.1.down", "head")}
    plan = RankPlan([PlanEntry("stem", scheme, 2), PlanEntry("body.0.0", scheme, 3, ("again",)),
                     PlanEntry("body.1.down", scheme, 5), PlanEntry("head", "linear", 4)])
    apply_plan_(model, plan, from_dense_weights=True)
    assert model.again is model.body[0][0] and model.again.rank == 3
    for name, rank in (("stem", 2), ("body.1.down", 5), ("head", 4)):
        layer, weight = model.get_submodule(name), dense_weights[name]
        error = (layer.dense_weight() - weight).flatten()
        singular = torch.linalg.svdvals(type(layer).dense_matrix(_with_weight(weight)))
        assert error.norm().item() == pytest.approx(singular[0, rank:].norm().item(), rel=1e-9)
    x = example(torch.float64)
    expected = model(x)
    model.head.requires_grad_(False)
    densify_(model)
    assert not model.head.weight.requires_grad and model.stem.weight.requires_grad
    assert not any(isinstance(module, FactorizedLayer) for module in model.modules())
    assert type(model.stem) is nn.Conv2d and type(model.head) is nn.Linear and model.again is model.body[0][0]
    torch.testing.assert_close(model(x), expected, rtol=1e-10, atol=1e-10)


def _with_weight(weight: torch.Tensor) -> nn.Module:
    """A dense layer holding ``weight`` (to reshape it as a factorized class does)."""
    out_features, in_features = weight.shape[:2]
    layer = nn.Conv2d(in_features, out_features, tuple(weight.shape[2:])) if weight.dim() == 4 else nn.Linear(in_features, out_features)
    layer.weight = nn.Parameter(weight)
    return layer


def test_rank_plans_are_read_from_json_or_a_decomposed_checkpoint(tmp_path):
    model = Nested()
    report = decompose_(model, DecomposeConfig(criterion=FixedRankCriterion(3)), example())
    save_checkpoint(tmp_path / "low.pt", model, report.plan)
    (tmp_path / "plan.json").write_text(report.plan.to_json())
    assert read_rank_plan(tmp_path / "low.pt") == report.plan == read_rank_plan(tmp_path / "plan.json")
    save_checkpoint(tmp_path / "dense.pt", Nested(), None)
    with pytest.raises(CheckpointError, match="holds no rank plan"):
        read_rank_plan(tmp_path / "dense.pt")
    with pytest.raises(CheckpointError, match="does not exist"):
        read_rank_plan(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="bad.json: rank plan is not valid JSON"):
        read_rank_plan(tmp_path / "bad.json")
