"""Deployment: BatchNorm folding, ONNX/TorchScript export, target speed-up, latency CLI."""

import copy
import dataclasses
import json

import pytest
import torch
from torch import nn

import trp
from trp.cli import main
from trp.export import export_onnx, export_torchscript
from trp.fold import fold_batchnorm_
from trp.target import criterion_for_speedup

pytest.importorskip("onnxruntime", reason="export checks run the ONNX file with onnxruntime")


def resnet20_with_bn_statistics(dtype=torch.float32) -> nn.Module:
    torch.manual_seed(0)
    model = trp.models.create_model("resnet20").to(dtype)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.5, 0.5)
    return model.eval()


def decomposed(scheme: str | None, dtype=torch.float32) -> nn.Module:
    model = resnet20_with_bn_statistics(dtype)
    if scheme is not None:
        config = trp.DecomposeConfig(scheme=scheme, criterion=trp.FractionCriterion(0.5))
        trp.decompose_(model, config, torch.zeros(1, 3, 32, 32, dtype=dtype))
    return model


@pytest.mark.parametrize("scheme", [None, "channel", "spatial"])
def test_batchnorm_folding_is_exact(scheme):
    model = decomposed(scheme, torch.float64)
    x = torch.randn(3, 3, 32, 32, dtype=torch.float64)
    expected = model(x)
    folded = fold_batchnorm_(model)
    assert len(folded) == 19
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    torch.testing.assert_close(model(x), expected, rtol=1e-12, atol=1e-12)


def test_folding_needs_eval_mode_and_keeps_unfoldable_bn():
    with pytest.raises(ValueError, match="eval mode"):
        fold_batchnorm_(trp.models.create_model("resnet20").train())

    class AddThenBN(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.bn = nn.BatchNorm2d(4)

        def forward(self, x):
            return self.bn(self.conv(x) + 1.0)  # BN input is not the conv's output

    model = AddThenBN().eval()
    assert fold_batchnorm_(model) == []
    assert isinstance(model.bn, nn.BatchNorm2d)


@pytest.mark.parametrize("scheme", [None, "channel", "spatial"])
def test_onnx_and_torchscript_match_pytorch(scheme, tmp_path):
    model = decomposed(scheme)
    x = torch.randn(2, 3, 32, 32)
    assert export_onnx(model, x, tmp_path / "m.onnx") < 1e-5
    assert export_torchscript(model, x, tmp_path / "m.ts") < 1e-6
    from trp.export import onnx_outputs

    other_batch = torch.randn(5, 3, 32, 32)  # the batch axis is dynamic
    torch.testing.assert_close(onnx_outputs(tmp_path / "m.onnx", other_batch), model(other_batch).detach(), rtol=1e-4, atol=1e-4)


def test_export_bad_inputs(tmp_path):
    model, x = decomposed(None), torch.randn(1, 3, 32, 32)
    with pytest.raises(ValueError, match="opset 99 is not available"):
        export_onnx(model, x, tmp_path / "m.onnx", opset=99)
    with pytest.raises(ValueError, match="opset 11 is not available"):
        export_onnx(model, x, tmp_path / "m.onnx", opset=11)
    with pytest.raises(ValueError, match="cannot write"):
        export_onnx(model, x, tmp_path / "missing" / "m.onnx")
    with pytest.raises(ValueError, match="cannot write"):
        export_torchscript(model, x, tmp_path)


@pytest.mark.parametrize("family", ["energy", "fraction"])
@pytest.mark.parametrize("target", [1.5, 2.0, 3.0])
def test_target_mode_reaches_the_requested_speedup(family, target):
    model = trp.models.create_model("resnet20")
    example = torch.zeros(1, 3, 32, 32)
    config = trp.DecomposeConfig(scheme="spatial")
    found = criterion_for_speedup(model, config, example, target, family=family, tolerance=0.03)
    report = trp.decompose_(copy.deepcopy(model), trp.DecomposeConfig(scheme="spatial", criterion=found.criterion), example)
    assert report.conv_speedup == pytest.approx(found.speedup)
    assert target <= report.conv_speedup <= target * 1.03


def test_target_mode_says_when_it_cannot():
    with pytest.raises(ValueError, match="out of reach: the most these layers give is"):
        criterion_for_speedup(trp.models.create_model("resnet20"), trp.DecomposeConfig(), torch.zeros(1, 3, 32, 32), 100.0)
    with pytest.raises(ValueError, match=">= 1"):
        criterion_for_speedup(trp.models.create_model("resnet20"), trp.DecomposeConfig(), torch.zeros(1, 3, 32, 32), 0.5)


def test_cli_decompose_export_bench(tmp_path, capsys):
    low = tmp_path / "low.pt"
    assert main(["decompose", "--model", "resnet20", "--scheme", "spatial", "--target-speedup", "2", "-o", str(low)]) == 0
    assert main(["export", "--checkpoint", str(low), "--fold-bn", "--onnx", str(tmp_path / "m.onnx"), "--torchscript", str(tmp_path / "m.ts")]) == 0
    out = capsys.readouterr().out
    assert "folded 19 BatchNorm" in out and "max relative error" in out
    assert main(["bench", "--checkpoint", str(low), "--batches", "1", "2", "--repeats", "4", "--warmup", "1",
                 "--threads", "1", "--json", str(tmp_path / "b.json")]) == 0
    rows = json.loads((tmp_path / "b.json").read_text())["rows"]
    assert {(r["runtime"], r["batch"]) for r in rows} == {("eager", 1), ("eager", 2), ("onnxruntime", 1), ("onnxruntime", 2)}
    assert all(r["mac_speedup"] == pytest.approx(2.0, rel=0.03) and r["measured_speedup"] > 0 for r in rows)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["export", "--model", "resnet20", "--onnx", "/nonexistent/m.onnx"], "does not exist"),
        (["export", "--model", "resnet20"], "at least one output"),
        (["export", "--model", "resnet20", "--onnx", "OUT", "--opset", "16"], "opset 16 is not available"),
        (["bench", "--model", "resnet20"], "no factorized layers"),
    ],
)
def test_deploy_cli_errors(tmp_path, capsys, argv, message):
    argv = [str(tmp_path / "m.onnx") if a == "OUT" else a for a in argv]
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_checkpoint_that_is_not_a_model(tmp_path, capsys):
    path = tmp_path / "opt.pt"
    torch.save({"epoch": 3, "lr": 0.1}, path)
    assert main(["export", "--model", "resnet20", "--checkpoint", str(path), "--onnx", str(tmp_path / "m.onnx")]) == 2
    assert "not a model checkpoint" in capsys.readouterr().err


def test_cli_sweep_runs_end_to_end(tmp_path, capsys):
    pytest.importorskip("sklearn", reason="the digits dataset comes with scikit-learn")
    pytest.importorskip("matplotlib", reason="sweep plots need matplotlib")
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = trp.models.create_model("resnet20", num_classes=10, in_channels=1)
        trp.save_checkpoint(tmp_path / f"m{seed}.pt", model, None, {"name": "resnet20", "kwargs": {"in_channels": 1}})
    argv = ["sweep", str(tmp_path / "m0.pt"), str(tmp_path / "m1.pt"), "--labels", "a", "b", "--dataset", "digits",
            "--criteria", "fraction:0.5", "fraction:0.25", "--scheme", "spatial", "--out", str(tmp_path / "out")]
    assert main(argv) == 0
    result = json.loads((tmp_path / "out" / "sweep.json").read_text())
    assert set(result["models"]) == {"a", "b"}
    speedups = [p["conv_speedup"] for p in result["models"]["a"]["points"]]
    assert speedups[0] < speedups[1]
    example = torch.zeros(1, 1, 8, 8)  # digits: 8x8 grey images
    dense_macs = trp.count_macs(trp.models.create_model("resnet20", num_classes=10, in_channels=1), example).conv_macs
    for point in result["models"]["a"]["points"]:  # each point's ranks rebuild the net it measured
        rebuilt = trp.models.create_model("resnet20", num_classes=10, in_channels=1)
        kinds = {name: "linear" if isinstance(module, nn.Linear) else "spatial" for name, module in rebuilt.named_modules()}
        trp.apply_plan_(rebuilt, trp.RankPlan([trp.PlanEntry(name, kinds[name], rank) for name, rank in point["ranks"].items()]))
        assert len(point["ranks"]) == point["layers_decomposed"] > 0
        assert dense_macs / trp.count_macs(rebuilt, example).conv_macs == pytest.approx(point["conv_speedup"])
    for name in ("accuracy_vs_speedup.png", "ranks.png", "spectra.png"):
        assert (tmp_path / "out" / name).stat().st_size > 5_000
    assert "fraction:0.25" in capsys.readouterr().out
    assert main(argv[:3] + ["--labels", "only-one", "--dataset", "digits", "--out", str(tmp_path / "o2")]) == 2


def test_cli_sweep_fitted_on_data_keeps_the_ranks_and_refuses_the_spatial_scheme(tmp_path, capsys):
    pytest.importorskip("sklearn", reason="the digits dataset comes with scikit-learn")
    pytest.importorskip("matplotlib", reason="sweep plots need matplotlib")
    model = trp.models.create_model("resnet20", num_classes=10, in_channels=1)
    trp.save_checkpoint(tmp_path / "m.pt", model, None, {"name": "resnet20", "kwargs": {"in_channels": 1}})
    argv = ["sweep", str(tmp_path / "m.pt"), "--dataset", "digits", "--criteria", "fraction:0.5", "fraction:0.25"]
    assert main(argv + ["--out", str(tmp_path / "svd")]) == 0
    assert main(argv + ["--fit-on-data", "64", "--out", str(tmp_path / "fit")]) == 0
    svd, fit = (json.loads((tmp_path / name / "sweep.json").read_text()) for name in ("svd", "fit"))
    assert (svd["calibration_images"], fit["calibration_images"]) == (0, 64)
    assert [p["conv_speedup"] for p in fit["models"]["m"]["points"]] == [p["conv_speedup"] for p in svd["models"]["m"]["points"]]
    for svd_point, fit_point in zip(svd["models"]["m"]["points"], fit["models"]["m"]["points"]):
        assert svd_point["layer_fits"] == []
        assert len(fit_point["layer_fits"]) == fit_point["layers_decomposed"] > 0
        assert all(0 <= f["fitted_error"] <= f["svd_error"] + 1e-9 for f in fit_point["layer_fits"])
        first = fit_point["layer_fits"][0]  # sees the same images in both nets, and has no bias
        assert first["name"] == "conv1" and first["in_net_error"] == pytest.approx(first["fitted_error"], rel=1e-4, abs=1e-9)
    capsys.readouterr()
    assert main(argv + ["--fit-on-data", "64", "--scheme", "spatial", "--out", str(tmp_path / "no")]) == 2
    assert "--fit-on-data needs --scheme channel" in capsys.readouterr().err


def test_cli_decompose_fitted_on_data_saves_what_the_library_fits(tmp_path, capsys):
    pytest.importorskip("sklearn", reason="the digits dataset comes with scikit-learn")
    from trp.data import calibration_batches, load_dataset

    torch.manual_seed(0)
    model = trp.models.create_model("resnet20", num_classes=10, in_channels=1)
    trp.save_checkpoint(tmp_path / "m.pt", model, None, {"name": "resnet20", "kwargs": {"in_channels": 1}})
    argv = ["decompose", "--checkpoint", str(tmp_path / "m.pt"), "--input-size", "1", "8", "8", "--criterion", "fraction:0.5"]
    assert main(argv + ["-o", str(tmp_path / "svd.pt")]) == 0
    assert main(argv + ["--dataset", "digits", "--fit-on-data", "64", "-o", str(tmp_path / "fit.pt"),
                        "--report", str(tmp_path / "fit.json")]) == 0
    assert "fitted error" in capsys.readouterr().out

    config = trp.DecomposeConfig(criterion=trp.FractionCriterion(0.5))
    calibration = calibration_batches(load_dataset("digits", None), 64)
    expected, fits = trp.decompose_on_data_(model, config, torch.zeros(1, 1, 8, 8), calibration)
    fit, svd = (trp.read_checkpoint(tmp_path / name) for name in ("fit.pt", "svd.pt"))
    assert fit.plan == svd.plan  # the same ranks, other factors
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(fit.state_dict[name], tensor)
    assert any(not torch.equal(fit.state_dict[name], svd.state_dict[name]) for name in svd.state_dict)
    reported = json.loads((tmp_path / "fit.json").read_text())["fit_on_data"]
    assert (reported["dataset"], reported["images"]) == ("digits", 64)
    assert reported["layers"] == [dataclasses.asdict(f) for f in fits]
    assert all(layer["fitted_error"] <= layer["svd_error"] + 1e-9 for layer in reported["layers"])

    assert main(argv[:3] + ["--dataset", "digits", "--fit-on-data", "64"]) == 0  # the input follows the dataset
    assert "input (1, 1, 8, 8)" in capsys.readouterr().out
    trp.save_checkpoint(tmp_path / "rgb.pt", trp.models.create_model("resnet20"), None, {"name": "resnet20"})
    assert main(["decompose", "--checkpoint", str(tmp_path / "rgb.pt"), "--dataset", "digits", "--fit-on-data", "64"]) == 2
    assert "the data has 1-channel images but the resnet20 takes 3 channels" in capsys.readouterr().err
    for extra, message in ((["--input-size", "1", "16", "16"], "has 1x8x8 images but --input-size is 1x16x16"),
                           (["--fit-on-data", "100000"], "--fit-on-data 100000 asks for more than the 1,438 training images")):
        assert main(argv[:3] + ["--dataset", "digits", "--fit-on-data", "64", *extra]) == 2
        assert message in capsys.readouterr().err


def test_measured_mode_keeps_slower_layers_dense(monkeypatch):
    import trp.measured as measured

    def fake(module, shape, warmup, repeats):
        factorized = isinstance(module, trp.layers.FactorizedLayer)
        return 0.5 if factorized and module.rank % 2 == 0 else 1.0  # pairs of even rank "faster"

    monkeypatch.setattr(measured, "best_ms", fake)
    model = trp.models.create_model("resnet20")
    report = measured.decompose_measured_(model, trp.DecomposeConfig(criterion=trp.FixedRankCriterion(5)), torch.zeros(1, 3, 32, 32))
    slower = [layer for layer in report.layers if layer.reason.startswith("measured slower")]
    assert slower and not report.decomposed  # rank 5 is odd: every pair "measured" slower
    assert all(type(model.get_submodule(layer.name)) in (nn.Conv2d, nn.Linear) for layer in slower)
    report = measured.decompose_measured_(model, trp.DecomposeConfig(criterion=trp.FixedRankCriterion(4)), torch.zeros(1, 3, 32, 32))
    assert report.decomposed and not any(layer.reason.startswith("measured") for layer in report.layers)
