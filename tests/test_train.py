"""`trp train` end to end on tiny data the tests write: train -> decompose -> evaluate,
resume, divergence, DDP, configs and bad input."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

import trp

from trp.checkpoint import CheckpointError, read_checkpoint
from trp.cli import main
from trp.models import create_model
from trp.train import RunInterrupted, TrainingDiverged, load_train_config, run_training
from trp.train.config import OptimSection
from trp.train.schedule import lr_factor_fn
from trp.train.state import saved_epoch

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory) -> Path:
    """A learnable 2-class ImageFolder of 12x12 RGB PNGs: reddish vs bluish noise."""
    root = tmp_path_factory.mktemp("tiny")
    generator = torch.Generator().manual_seed(0)
    for split, count in (("train", 24), ("test", 8)):
        for label, name in enumerate(("red", "blue")):
            folder = root / split / name
            folder.mkdir(parents=True)
            for index in range(count):
                pixels = torch.randint(0, 120, (12, 12, 3), generator=generator, dtype=torch.uint8)
                pixels[..., 0 if label == 0 else 2] += 120
                Image.fromarray(pixels.numpy()).save(folder / f"{index}.png")
    return root


def tiny_overrides(root: Path, out: Path, **extra: object) -> list[str]:
    settings = {
        "model.name": "resnet20", "data.dataset": "imagefolder", "data.root": str(root), "data.batch_size": 8,
        "data.eval_batch_size": 16, "data.crop_padding": 2, "optim.epochs": 2, "optim.lr": 0.05,
        "optim.schedule": "cosine", "trp.enabled": True, "trp.period": 2, "trp.nuclear_weight": 3e-4,
        "decompose.criterion": "energy:0.3", "run.out_dir": str(out), "run.progress": False, "run.device": "cpu",
    }
    settings.update(extra)
    return [f"{key}={json.dumps(value)}" for key, value in settings.items()]


def test_cli_train_decompose_evaluate(tiny_folder, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train"] + [arg for override in tiny_overrides(tiny_folder, out) for arg in ("--set", override)]
    assert main(argv) == 0
    stdout = capsys.readouterr().out
    assert "TRP1+Nu" in stdout and "speed-up" in stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"] == "TRP1+Nu"
    assert 0.0 <= summary["decomposed"]["accuracy"] <= 1.0
    assert summary["decomposed"]["conv_macs"] <= summary["dense"]["conv_macs"]
    assert summary["decomposed"]["conv_speedup"] == pytest.approx(summary["dense"]["conv_macs"] / summary["decomposed"]["conv_macs"])
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == [1, 2]
    assert set(metrics[0]["ranks"]) >= {"layer1.0.conv1", "layer3.2.conv2"}
    assert metrics[-1]["trp_steps"] == 2 * (48 // 8)
    projections = [json.loads(line) for line in (out / "projections.jsonl").read_text().splitlines()]
    assert [p["step"] for p in projections] == [2, 4, 6, 8, 10, 12]  # period 2, 12 steps
    assert set(projections[0]["ranks"]) == set(metrics[0]["ranks"])
    decomposed = read_checkpoint(out / "decomposed.pt")
    assert decomposed.model == {"name": "resnet20", "kwargs": {"num_classes": 2, "in_channels": 3}}
    assert len(decomposed.plan.layers) == summary["decomposed"]["layers_decomposed"]


def test_resume_ends_with_the_same_weights(tiny_folder, tmp_path):
    straight = load_train_config(None, tiny_overrides(tiny_folder, tmp_path / "straight", **{"optim.epochs": 3}))
    run_training(straight)
    interrupted = load_train_config(
        None, tiny_overrides(tiny_folder, tmp_path / "split", **{"optim.epochs": 3, "run.stop_after_epochs": 1})
    )
    with pytest.raises(RunInterrupted, match="after epoch 1 of 3"):
        run_training(interrupted)
    with pytest.raises(RunInterrupted, match="after epoch 2 of 3"):
        run_training(interrupted, resume=True)
    assert saved_epoch(tmp_path / "split" / "last.pt") == 2
    with pytest.raises(CheckpointError, match="is not a trp training state"):
        saved_epoch(tmp_path / "straight" / "dense.pt")
    interrupted.run.stop_after_epochs = 0
    run_training(interrupted, resume=True)
    expected = read_checkpoint(tmp_path / "straight" / "dense.pt").state_dict
    actual = read_checkpoint(tmp_path / "split" / "dense.pt").state_dict
    assert expected.keys() == actual.keys()
    for key in expected:
        assert torch.equal(expected[key], actual[key]), key
    lines = (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3]
    assert (tmp_path / "split" / "projections.jsonl").read_text() == (tmp_path / "straight" / "projections.jsonl").read_text()


def test_a_finished_run_is_never_overwritten(tiny_folder, tmp_path):
    config = load_train_config(None, tiny_overrides(tiny_folder, tmp_path / "run", **{"optim.epochs": 1}))
    run_training(config)
    before = (tmp_path / "run" / "summary.json").read_text()
    for resume in (False, True):
        with pytest.raises(ValueError, match="already holds a finished run"):
            run_training(config, resume=resume)
    assert (tmp_path / "run" / "summary.json").read_text() == before


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_last_good_state(tiny_folder, tmp_path, monkeypatch):
    config = load_train_config(None, tiny_overrides(tiny_folder, tmp_path / "run", **{"optim.epochs": 3}))
    import trp.train.loop as loop

    real = loop.F.cross_entropy
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        calls["n"] += 1
        loss = real(*args, **kwargs)
        return loss * float("nan") if calls["n"] > 8 else loss  # epoch 1 has 6 steps

    monkeypatch.setattr(loop.F, "cross_entropy", poisoned)
    with pytest.raises(TrainingDiverged, match=r"became non-finite.*epoch 1\) is kept.*--resume"):
        run_training(config)
    monkeypatch.setattr(loop.F, "cross_entropy", real)
    state = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert state["epoch"] == 1 and all(torch.isfinite(t).all() for t in state["model"].values() if t.is_floating_point())


def test_schedules():
    optim = OptimSection(epochs=10, schedule="multistep", milestones=[5, 7.5], gamma=0.1)
    factor = lr_factor_fn(optim, steps_per_epoch=10)
    assert [factor(s) for s in (0, 49, 50, 74, 75, 99)] == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])
    cosine = lr_factor_fn(OptimSection(epochs=10, schedule="cosine"), 10)
    assert (cosine(0), cosine(50), cosine(100)) == pytest.approx((1.0, 0.5, 0.0))
    onecycle = lr_factor_fn(OptimSection(epochs=10, schedule="onecycle", warmup_epochs=2), 10)
    assert (onecycle(0), onecycle(19), onecycle(20), onecycle(100)) == pytest.approx((0.05, 1.0, 1.0, 0.0))


@pytest.mark.parametrize("path", sorted((REPO / "configs").rglob("*.toml")), ids=lambda p: p.name)
def test_shipped_configs_load(path):
    config = load_train_config(path)
    if "basic" in path.name:  # decomposes (and fine-tunes) a trained checkpoint
        assert config.optim.epochs == 0 and config.model.checkpoint and config.finetune.epochs > 0
    else:
        assert config.optim.epochs > 0
    if "trp" in path.name:  # the paper's m = 20, unless the name states another period ("-m5-")
        period = re.search(r"-m(\d+)-", path.name)
        assert config.trp.enabled and config.trp.period == (int(period.group(1)) if period else 20)
    if path.name == "resnet20-trp2-nu-m5-cpu.toml":  # the name's rule above, checked once by hand
        assert config.trp.period == 5


def test_overrides_are_typed(tmp_path):
    config = load_train_config(None, ["optim.lr=0.05", "optim.milestones=[40, 60]", "trp.enabled=true", "run.out_dir=runs/x"])
    assert (config.optim.lr, config.optim.milestones, config.trp.enabled, config.run.out_dir) == (0.05, [40, 60], True, "runs/x")
    path = tmp_path / "c.toml"
    path.write_text('[optim]\nlr = 0.2\n[model]\nname = "resnet56"\n')
    assert load_train_config(path, ["optim.lr=0.3"]).optim.lr == 0.3


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["trp.enabled=true", "trp.period=0"], "period must be a positive integer"),
        (["trp.enabled=true", "trp.period=-2"], "period must be a positive integer"),
        (["decompose.criterion=energy:1.0"], "pruned_energy must lie in"),
        (["decompose.criterion=energy:-0.1"], "pruned_energy must lie in"),
        (["optim.lr=fast"], "optim.lr must be a float"),
        (["optim.schedule=linear"], "optim.schedule must be one of"),
        (["optim.lrate=0.1"], "unknown option optim.lrate"),
        (["training.lr=0.1"], "unknown config section"),
        (["trp.enabled=yes"], "must be true or false"),
        (["optim.lr"], "section.key=value"),
        (["optim.epochs=0"], "0 is allowed only with model.checkpoint"),
        (["decompose.target_speedup=0.5"], "target_speedup must be 0"),
        (["decompose.target_speedup=2", "decompose.criterion=rank:4"], "must be one of"),
        (["decompose.allocate_ranks=true"], "set a target_speedup >= 1 too"),
        (["trp.enabled=true", "trp.max_speedup=2", "decompose.target_speedup=2"], "set one of them"),
        (["trp.enabled=true", "trp.max_speedup=0.5"], "max_speedup must be 0"),
        (["trp.enabled=true", "trp.max_speedup=2", "trp.max_speedup_tolerance=-0.1"], "max_speedup_tolerance is the"),
        (["optim.epochs=0", "model.checkpoint=x.pt", "trp.enabled=true"], "set trp.enabled = false"),
        (["decompose.fit_on_data=-1"], "number of training images"),
        (["model.plan=plan.json", "trp.enabled=true"], "model.plan trains a factorized net"),
        (["model.plan=plan.json", "decompose.target_speedup=2"], "leave decompose.target_speedup"),
        (["decompose.fit_on_data=64", "decompose.scheme=spatial"], "needs decompose.scheme = 'channel'"),
        (['model.options={width = 2}'], r"model.options: model 'resnet20' has no option 'width'"),
        (['model.options={num_classes = 5}'], "set model.num_classes instead"),
        (['model.options={in_channels = 1}'], "the dataset's images set it"),
        (['model.options="B"'], "model.options must be a dict.*write a TOML inline table"),
        (['model.options={shortcut = "C"}'], "model.options: shortcut must be 'A' or 'B'"),
    ],
)
def test_bad_options_get_clear_errors(overrides, message):
    with pytest.raises(ValueError, match=message):
        load_train_config(None, overrides)


def test_bad_inputs_through_the_cli(tiny_folder, tmp_path, capsys):
    def run(*overrides: str) -> str:
        argv = ["train", "--no-progress", "--out", str(tmp_path / "x")] + [a for o in overrides for a in ("--set", o)]
        assert main(argv) == 2
        return capsys.readouterr().err

    base = [f"data.root={json.dumps(str(tiny_folder))}", "data.dataset=imagefolder", "data.batch_size=8"]
    assert "does not exist" in run("data.dataset=imagefolder", "data.root=/nonexistent/data")
    assert "unknown model 'resnet21'" in run(*base, "model.name=resnet21")
    assert "unknown dataset" in run("data.dataset=imagenet22k")
    other = tmp_path / "resnet32.pt"
    torch.save(create_model("resnet32", num_classes=2).state_dict(), other)
    assert "does not fit this model" in run(*base, f"model.checkpoint={json.dumps(str(other))}")
    result = subprocess.run([sys.executable, "-m", "trp", "train", "--config", "/nonexistent.toml"], capture_output=True, text=True)
    assert result.returncode == 2 and "does not exist" in result.stderr


def test_ddp_two_cpu_processes_agree(tiny_folder, tmp_path):
    """torchrun with 2 gloo processes: the run checks that all replicas hold identical
    weights after training (TRP projections included) and fails otherwise."""
    out = tmp_path / "ddp"
    overrides = tiny_overrides(tiny_folder, out, **{"optim.epochs": 2, "trp.period": 1})
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "trp", "train"] + [arg for override in overrides for arg in ("--set", override)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2  # written once per epoch, by rank 0 only
    assert summary["decomposed"]["layers_decomposed"] > 0


TEARDOWN_SCRIPT = """
import os, sys, time, torch
from trp.train.runtime import start_runtime

def threads():
    return len(os.listdir("/proc/self/task"))

before = threads()
runtime = start_runtime("cpu")
model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(3, 3))
model(torch.randn(2, 3)).sum().backward()
del model
runtime.close()
deadline = time.monotonic() + 2.0  # a joined thread leaves /proc a moment after the join returns
while threads() != before and time.monotonic() < deadline:
    time.sleep(0.05)
sys.stdout.write(f"rank {runtime.rank}: threads {before} before the process group, {threads()} after close\\n")
"""


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="counts threads through /proc (Linux only)")
def test_ddp_teardown_stops_gloo_threads(tmp_path):
    """After a DDP step, Runtime.close must free the process group: gloo's threads must not
    outlive it into interpreter exit, where they can abort a finished run."""
    script = tmp_path / "teardown.py"
    script.write_text(TEARDOWN_SCRIPT)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script)]
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    counts = re.findall(r"rank \d: threads (\d+) before the process group, (\d+) after close", result.stdout)
    assert len(counts) == 2, result.stdout
    assert all(before == after for before, after in counts), result.stdout


def test_bf16_and_channels_last_run(tiny_folder, tmp_path):
    overrides = tiny_overrides(tiny_folder, tmp_path / "bf16", **{"optim.epochs": 1, "run.bf16": True, "run.channels_last": True})
    summary = run_training(load_train_config(None, overrides))
    assert 0.0 <= summary["decomposed"]["accuracy"] <= 1.0


def test_model_options_build_the_net_and_travel_with_its_checkpoints(tiny_folder, tmp_path, capsys):
    overrides = tiny_overrides(tiny_folder, tmp_path / "b", **{"optim.epochs": 1})
    summary = run_training(load_train_config(None, overrides + ['model.options={shortcut = "B"}']))
    dense = read_checkpoint(tmp_path / "b" / "dense.pt")
    assert dense.model["kwargs"]["shortcut"] == "B"
    assert "layer2.0.shortcut.0.weight" in dense.state_dict  # the 1x1 conv that option B adds
    assert "layer2.0.shortcut.0" in summary["ranks"]  # decomposed like every other conv
    assert "layer2.0.shortcut.0" in [entry.name for entry in read_checkpoint(tmp_path / "b" / "decomposed.pt").plan.layers]
    assert main(["macs", "--checkpoint", str(tmp_path / "b" / "decomposed.pt")]) == 0  # rebuilt with option B
    assert "layer2.0.shortcut.0" in capsys.readouterr().out
    from_b = tiny_overrides(tiny_folder, tmp_path / "from-b", **{"optim.epochs": 1,
                                                                 "model.checkpoint": str(tmp_path / "b" / "dense.pt")})
    with pytest.raises(ValueError, match=r"saved from resnet20 with options \{'shortcut': 'B'\}.*"
                                         r'set model.options = \{shortcut = "B"\}'):
        run_training(load_train_config(None, from_b))


def test_quickstart_end_to_end(tmp_path, capsys):
    pytest.importorskip("sklearn", reason="the quick start's digits come with scikit-learn")
    pytest.importorskip("matplotlib", reason="the quick start plots with matplotlib")
    assert main(["quickstart", "--out", str(tmp_path), "--epochs", "1", "--no-progress", "--device", "cpu"]) == 0
    result = json.loads((tmp_path / "quickstart.json").read_text())
    assert set(result["sweeps"]) == {"baseline", "TRP2+Nu"}
    assert len(result["sweeps"]["TRP2+Nu"]) == 7
    trained = sum(summary["training_seconds"] for summary in result["summaries"].values())
    assert result["wall_seconds"] >= trained > 0  # both runs trained in this call
    assert (tmp_path / "accuracy_vs_speedup.png").stat().st_size > 10_000
    assert "e=0.02" in capsys.readouterr().out


def _replica_check_worker(rank: int, store: str, result_dir: str) -> None:
    import torch.distributed as dist

    from trp.train.run import _check_replicas_agree
    from trp.train.runtime import Runtime

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        model = torch.nn.Linear(3, 2)
        with torch.no_grad():
            model.weight.fill_(1.0)
            model.bias.fill_(float(rank))  # replicas disagree on the bias only
        try:
            _check_replicas_agree(model, Runtime(torch.device("cpu"), rank, 2))
            outcome = "agreed"
        except RuntimeError as error:
            outcome = str(error)
        Path(result_dir, f"rank{rank}.txt").write_text(outcome)
    finally:
        dist.destroy_process_group()


def test_replica_check_detects_disagreement(tmp_path):
    torch.multiprocessing.spawn(_replica_check_worker, args=(str(tmp_path / "store"), str(tmp_path)), nprocs=2)
    for rank in (0, 1):
        assert "replicas disagree" in (tmp_path / f"rank{rank}.txt").read_text()


def test_resume_refuses_a_changed_config_or_a_finished_run(tiny_folder, tmp_path):
    overrides = tiny_overrides(tiny_folder, tmp_path / "run", **{"optim.epochs": 2, "run.stop_after_epochs": 1})
    with pytest.raises(RunInterrupted):
        run_training(load_train_config(None, overrides))
    changed = load_train_config(None, overrides + ["optim.epochs=3", "trp.period=3"])
    with pytest.raises(ValueError, match=r"another config.*optim.epochs: 2 -> 3"):
        run_training(changed, resume=True)
    same = load_train_config(None, overrides + ["run.stop_after_epochs=0", "run.progress=false"])
    run_training(same, resume=True)
    with pytest.raises(ValueError, match="finished run"):
        run_training(same, resume=True)


def test_a_capped_run_saved_before_the_cap_had_a_tolerance_resumes_only_at_the_old_one(tiny_folder, tmp_path):
    """A state whose config has no trp.max_speedup_tolerance allocated its cap with 0.02: resuming
    it at the default 0 would change the run silently, so it is refused; 0.02 resumes it."""
    overrides = tiny_overrides(tiny_folder, tmp_path / "run", **{"trp.max_speedup": 1.3, "run.stop_after_epochs": 1})
    with pytest.raises(RunInterrupted):
        run_training(load_train_config(None, overrides))
    state_path = tmp_path / "run" / "last.pt"
    state = torch.load(state_path, weights_only=True)
    config = json.loads(state["config"])
    del config["trp"]["max_speedup_tolerance"]  # as saved before the option existed
    state["config"] = json.dumps(config)
    torch.save(state, state_path)
    resumed = overrides + ["run.stop_after_epochs=0"]
    with pytest.raises(ValueError, match=r"another config.*trp.max_speedup_tolerance: 0.02 -> 0.0"):
        run_training(load_train_config(None, resumed), resume=True)
    summary = run_training(load_train_config(None, resumed + ["trp.max_speedup_tolerance=0.02"]), resume=True)
    assert summary["config"]["trp"]["max_speedup_tolerance"] == 0.02


def test_start_checkpoint_must_be_dense_and_batches_must_fit(tiny_folder, tmp_path):
    low = tmp_path / "low.pt"
    model = create_model("resnet20", num_classes=2)
    report = trp.decompose_(model, trp.DecomposeConfig(criterion=trp.FixedRankCriterion(2)), torch.zeros(1, 3, 12, 12))
    trp.save_checkpoint(low, model, report.plan)
    with pytest.raises(ValueError, match="holds a decomposed model"):
        run_training(load_train_config(None, tiny_overrides(tiny_folder, tmp_path / "a", **{"model.checkpoint": str(low)})))
    with pytest.raises(ValueError, match="larger than the 48 training images"):
        run_training(load_train_config(None, tiny_overrides(tiny_folder, tmp_path / "b", **{"data.batch_size": 500})))
    assert not (tmp_path / "b").exists()


def test_a_plan_trains_the_factorized_net_which_decomposes_back_to_the_plan(tiny_folder, tmp_path):
    """``model.plan``: the net trains at the planned ranks (logged per epoch; resumes exactly, and
    refuses a changed plan), is saved dense, and is decomposed at the plan: its ranks and MACs,
    whatever ``[decompose]``'s criterion says."""
    fresh = create_model("resnet20", num_classes=2)
    report = trp.decompose_(fresh, trp.DecomposeConfig(scheme="spatial", criterion=trp.FixedRankCriterion(2),
                                                       decompose_linear=False), torch.zeros(1, 3, 12, 12))
    trp.save_checkpoint(tmp_path / "plan.pt", fresh, report.plan, {"name": "resnet20", "kwargs": {"num_classes": 2}})
    settings = {"model.plan": str(tmp_path / "plan.pt"), "trp.enabled": False, "decompose.scheme": "spatial",
                "decompose.criterion": "energy:0.3"}
    straight = run_training(load_train_config(None, tiny_overrides(tiny_folder, tmp_path / "straight", **settings)))
    split = load_train_config(None, tiny_overrides(tiny_folder, tmp_path / "split", **settings, **{"run.stop_after_epochs": 1}))
    with pytest.raises(RunInterrupted):
        run_training(split)
    assert any(key.endswith("layer1.0.conv1.first.weight") for key in torch.load(tmp_path / "split" / "last.pt")["model"])
    changed = tmp_path / "changed.json"
    changed.write_text(trp.RankPlan([trp.PlanEntry(e.name, e.kind, 3) for e in report.plan.layers]).to_json())
    split.model.plan = str(changed)
    with pytest.raises(CheckpointError, match=r"plan.conv1: 'spatial:2' -> 'spatial:3'"):
        run_training(split, resume=True)
    split.model.plan, split.run.stop_after_epochs = str(tmp_path / "plan.pt"), 0
    resumed = run_training(split, resume=True)
    assert resumed["dense"] == straight["dense"] and straight["method"] == "factorized"
    assert straight["ranks"] == {entry.name: 2 for entry in report.plan.layers}
    assert straight["decomposed"]["conv_macs"] == report.conv_macs_after
    assert straight["decomposed"]["accuracy"] == straight["dense"]["accuracy"]
    metrics = [json.loads(line) for line in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]
    assert metrics[0]["ranks"] == straight["ranks"]
    dense = read_checkpoint(tmp_path / "straight" / "dense.pt")
    assert dense.plan is None and torch.linalg.matrix_rank(dense.state_dict["layer3.2.conv2.weight"].permute(1, 2, 0, 3).reshape(64 * 3, -1)) == 2


def test_bad_plans_fail_before_anything_is_written(tiny_folder, tmp_path):
    fresh = create_model("resnet20", num_classes=2)
    report = trp.decompose_(fresh, trp.DecomposeConfig(scheme="spatial", criterion=trp.FixedRankCriterion(2)),
                            torch.zeros(1, 3, 12, 12))
    trp.save_checkpoint(tmp_path / "plan.pt", fresh, report.plan, {"name": "resnet20", "kwargs": {"num_classes": 2}})
    (tmp_path / "empty.json").write_text(trp.RankPlan([]).to_json())
    (tmp_path / "ten.json").write_text(trp.RankPlan([trp.PlanEntry("fc", "linear", 5)]).to_json())
    (tmp_path / "mixed.json").write_text(trp.RankPlan([trp.PlanEntry("conv1", "channel", 2),
                                                        trp.PlanEntry("layer1.0.conv1", "spatial", 2)]).to_json())
    trp.save_checkpoint(tmp_path / "dense.pt", create_model("resnet20", num_classes=2))
    cases = {
        "missing.json": ("model.plan: rank plan .* does not exist", {}),
        "dense.pt": ("holds no rank plan", {}),
        "empty.json": ("factorizes no layer", {}),
        "ten.json": ("above its full rank 2 .* with 2 classes", {}),
        "mixed.json": (r"another scheme than decompose.scheme = 'spatial' \(channel and spatial\)", {}),
        "plan.pt": ("was made from a resnet20, and this run trains a resnet32", {"model.name": "resnet32"}),
    }
    for name, (message, extra) in cases.items():
        settings = {"model.plan": str(tmp_path / name), "trp.enabled": False, "decompose.scheme": "spatial", **extra}
        with pytest.raises(ValueError, match=message):
            run_training(load_train_config(None, tiny_overrides(tiny_folder, tmp_path / "out", **settings)))
    with pytest.raises(ValueError, match="another scheme than decompose.scheme = 'channel'"):
        run_training(load_train_config(None, tiny_overrides(
            tiny_folder, tmp_path / "out", **{"model.plan": str(tmp_path / "plan.pt"), "trp.enabled": False})))
    assert not (tmp_path / "out").exists()


def test_zero_epochs_decomposes_a_checkpoint_at_a_target_and_finetunes(tiny_folder, tmp_path):
    """The paper's "basic" comparison: a trained net decomposed (at a conv-MAC target) with no
    training, then fine-tuned."""
    trained = run_training(load_train_config(None, tiny_overrides(tiny_folder, tmp_path / "trained", **{"trp.enabled": False})))
    overrides = tiny_overrides(tiny_folder, tmp_path / "basic", **{
        "trp.enabled": False, "optim.epochs": 0, "model.checkpoint": str(tmp_path / "trained" / "dense.pt"),
        "decompose.target_speedup": 1.5, "finetune.epochs": 1,
    })
    basic = run_training(load_train_config(None, overrides))
    assert basic["method"] == "basic" and basic["training_seconds"] == 0.0
    assert basic["dense"] == trained["dense"]  # the checkpoint, untouched
    assert basic["decomposed"]["conv_speedup"] >= 1.5
    assert basic["decomposed"]["criterion"]["kind"] == "energy"
    assert basic["decomposed"]["criterion"] != trained["decomposed"]["criterion"]
    assert basic["finetuned"]["conv_macs"] == basic["decomposed"]["conv_macs"]
    assert not (tmp_path / "basic" / "last.pt").exists()
    phases = [json.loads(line)["phase"] for line in (tmp_path / "basic" / "metrics.jsonl").read_text().splitlines()]
    assert phases == ["finetune"]


@pytest.mark.parametrize("train_epochs", [0, 2])  # a basic run, and a trained run's fine-tune
def test_a_killed_finetune_resumes_after_its_last_epoch_with_the_same_weights(tiny_folder, tmp_path, monkeypatch, capsys, train_epochs):
    import trp.train.run as run_module

    run_training(load_train_config(None, tiny_overrides(tiny_folder, tmp_path / "trained", **{"trp.enabled": False})))
    settings = {"trp.enabled": False, "optim.epochs": train_epochs, "decompose.target_speedup": 1.5, "finetune.epochs": 3}
    if train_epochs == 0:
        settings["model.checkpoint"] = str(tmp_path / "trained" / "dense.pt")
    straight = run_training(load_train_config(None, tiny_overrides(tiny_folder, tmp_path / "straight", **settings)))

    epochs = run_module._Run.epochs

    def killed_in_third_finetune_epoch(self, model, optimizer, scheduler, span, total, phase, after_epoch):
        if phase != "finetune":
            return epochs(self, model, optimizer, scheduler, span, total, phase, after_epoch)
        epochs(self, model, optimizer, scheduler, range(span.start, min(span.stop, 2)), total, phase, after_epoch)
        raise KeyboardInterrupt  # as if the session ended during the third epoch

    monkeypatch.setattr(run_module._Run, "epochs", killed_in_third_finetune_epoch)
    overrides = tiny_overrides(tiny_folder, tmp_path / "split", **settings)
    with pytest.raises(KeyboardInterrupt):
        run_training(load_train_config(None, overrides))
    monkeypatch.setattr(run_module._Run, "epochs", epochs)
    with pytest.raises(ValueError, match="already holds a run"):  # never overwritten without --resume
        run_training(load_train_config(None, overrides))
    with pytest.raises(ValueError, match=r"another config.*decompose.fit_on_data: 0 -> 8"):  # the fine-tuned net is fixed
        run_training(load_train_config(None, overrides + ["decompose.fit_on_data=8"]), resume=True)
    capsys.readouterr()
    resumed = run_training(load_train_config(None, overrides), resume=True)
    log = capsys.readouterr().out
    assert "resumed the fine-tune" in log and "after epoch 2" in log
    assert "finetune epoch 3/3" in log and "finetune epoch 1/3" not in log  # only the lost epoch is redone

    assert resumed["finetuned"] == straight["finetuned"]
    expected, actual = (read_checkpoint(tmp_path / name / "finetuned.pt").state_dict for name in ("straight", "split"))
    for name, tensor in expected.items():
        assert torch.equal(actual[name], tensor), name
    records = [json.loads(line) for line in (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()]
    expected_records = [("train", 1), ("train", 2)][:train_epochs] + [("finetune", 1), ("finetune", 2), ("finetune", 3)]
    assert [(r["phase"], r["epoch"]) for r in records] == expected_records


def test_basic_with_factors_fitted_to_data(tiny_folder, tmp_path, capsys):
    """decompose.fit_on_data: the same ranks as the SVD decomposition, the factors that
    trp.decompose_on_data_ fits on the same training images, and each layer's errors."""
    run_training(load_train_config(None, tiny_overrides(tiny_folder, tmp_path / "trained", **{"trp.enabled": False})))
    dense_path = tmp_path / "trained" / "dense.pt"
    basic = {"trp.enabled": False, "optim.epochs": 0, "model.checkpoint": str(dense_path), "decompose.target_speedup": 1.5}
    svd = run_training(load_train_config(None, tiny_overrides(tiny_folder, tmp_path / "svd", **basic)))
    fitted = run_training(load_train_config(None, tiny_overrides(tiny_folder, tmp_path / "fit", **basic, **{"decompose.fit_on_data": 20})))
    assert svd["decomposed"]["fit_on_data"] is None
    assert fitted["ranks"] == svd["ranks"] and fitted["decomposed"]["conv_speedup"] == svd["decomposed"]["conv_speedup"]
    layers = fitted["decomposed"]["fit_on_data"]["layers"]
    assert len(layers) == fitted["decomposed"]["layers_decomposed"] > 0
    assert all(0 <= layer["fitted_error"] <= layer["svd_error"] + 1e-9 for layer in layers)
    assert "fitted error" in capsys.readouterr().out
    described = read_checkpoint(tmp_path / "fit" / "decomposed.pt").metadata["decomposition"]
    assert described["fit_on_data"] == fitted["decomposed"]["fit_on_data"]

    model = trp.load_decomposed(dense_path, trp.models.create_model("resnet20", num_classes=2))
    energy = fitted["decomposed"]["criterion"]["pruned_energy"]
    config = trp.DecomposeConfig(criterion=trp.EnergyCriterion(energy), decompose_linear=False)  # the run's [decompose]
    calibration = trp.data.calibration_batches(trp.data.load_dataset("imagefolder", tiny_folder), 20)
    trp.decompose_on_data_(model, config, torch.zeros(1, 3, 12, 12), calibration)
    saved = read_checkpoint(tmp_path / "fit" / "decomposed.pt").state_dict
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(saved[name], tensor)

    overrides = tiny_overrides(tiny_folder, tmp_path / "many", **basic, **{"decompose.fit_on_data": 1000})
    with pytest.raises(ValueError, match="more than the 48 training images"):
        run_training(load_train_config(None, overrides))


def test_basic_with_allocated_ranks(tiny_folder, tmp_path):
    """decompose.allocate_ranks: the trained net decomposes at trp.target.ranks_for_speedup's
    ranks, and the summary gives those ranks, not a criterion."""
    run_training(load_train_config(None, tiny_overrides(tiny_folder, tmp_path / "trained", **{"trp.enabled": False})))
    dense_path = tmp_path / "trained" / "dense.pt"
    basic = {"trp.enabled": False, "optim.epochs": 0, "model.checkpoint": str(dense_path), "decompose.target_speedup": 1.5,
             "decompose.allocate_ranks": True}
    summary = run_training(load_train_config(None, tiny_overrides(tiny_folder, tmp_path / "allocated", **basic)))
    model = trp.load_decomposed(dense_path, trp.models.create_model("resnet20", num_classes=2))
    allocated = trp.target.ranks_for_speedup(model, trp.DecomposeConfig(decompose_linear=False), torch.zeros(1, 3, 12, 12), 1.5)
    assert summary["decomposed"]["criterion"] is None
    assert summary["decomposed"]["conv_speedup"] == pytest.approx(allocated.speedup)
    assert allocated.speedup >= 1.5 and summary["ranks"]
    assert all(allocated.ranks[name] == rank for name, rank in summary["ranks"].items())


def test_trp_with_a_speedup_cap_decomposes_at_the_ranks_its_projections_keep(tiny_folder, tmp_path):
    """trp.max_speedup: e = 0.3 alone cuts far past 1.3x in two epochs; with the cap the run
    stops near it, logs the capped ranks, and decomposes at them."""
    free = run_training(load_train_config(None, tiny_overrides(tiny_folder, tmp_path / "free")))
    capped = run_training(load_train_config(None, tiny_overrides(tiny_folder, tmp_path / "capped", **{"trp.max_speedup": 1.3})))
    assert free["decomposed"]["conv_speedup"] > 2.0
    assert capped["decomposed"]["conv_speedup"] <= 1.3 * 1.1 and capped["decomposed"]["criterion"] is None
    model = trp.load_decomposed(tmp_path / "capped" / "dense.pt", trp.models.create_model("resnet20", num_classes=2))
    config = load_train_config(None, tiny_overrides(tiny_folder, tmp_path / "x", **{"trp.max_speedup": 1.3})).trp_config()
    expected = trp.rank_training.projection_ranks(model, config, torch.zeros(1, 3, 12, 12))
    assert capped["ranks"] == {name: rank for name, rank in expected.items() if name in capped["ranks"]}
    metrics = [json.loads(line) for line in (tmp_path / "capped" / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["ranks"] == {name: rank for name, rank in expected.items()}


def test_an_unreachable_target_fails_before_training(tiny_folder, tmp_path):
    overrides = tiny_overrides(tiny_folder, tmp_path / "run", **{"decompose.target_speedup": 500.0})
    with pytest.raises(ValueError, match="out of reach"):
        run_training(load_train_config(None, overrides))
    assert not (tmp_path / "run" / "last.pt").exists()


def test_list_options_are_typed():
    with pytest.raises(ValueError, match="list of numbers"):
        load_train_config(None, ['optim.milestones=["a"]'])
    with pytest.raises(ValueError, match="list of strings"):
        load_train_config(None, ["decompose.exclude=[1]"])


def test_streamed_imagefolder_matches_memory_and_trains(tiny_folder, tmp_path):
    from trp.data import load_dataset

    memory = load_dataset("imagefolder", tiny_folder, image_size=12)
    streamed = load_dataset("imagefolder", tiny_folder, image_size=12, stream=True)
    index = torch.tensor([0, 5, 47])
    assert torch.equal(streamed.train.images[index], memory.train.images[index])
    assert streamed.mean == pytest.approx(memory.mean) and streamed.input_size == memory.input_size
    overrides = tiny_overrides(tiny_folder, tmp_path / "s", **{"optim.epochs": 1}) + ["data.options={ image_size = 12, stream = true }"]
    summary = run_training(load_train_config(None, overrides))
    assert 0.0 <= summary["decomposed"]["accuracy"] <= 1.0
    with pytest.raises(ValueError, match="needs image_size"):
        load_dataset("imagefolder", tiny_folder, stream=True)
