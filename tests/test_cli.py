"""The command line, end to end, in process and through the installed entry point."""

import json
import subprocess
import sys

import pytest
import torch

from trp.checkpoint import read_checkpoint, save_checkpoint
from trp.counting import count_macs
from trp.cli import main
from trp.models import create_model


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("command", [[], ["decompose"], ["macs"], ["models"]])
def test_help_for_every_command(command):
    result = subprocess.run([sys.executable, "-m", "trp", *command, "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    assert "usage: trp" in result.stdout


def test_decompose_then_count_a_trained_checkpoint(tmp_path, capsys):
    torch.manual_seed(0)
    model = create_model("resnet20")
    torch.save(model.state_dict(), tmp_path / "dense.pt")
    out, report_path = tmp_path / "low.pt", tmp_path / "report.json"
    code, stdout, _ = run(
        capsys, "decompose", "--model", "resnet20", "--checkpoint", str(tmp_path / "dense.pt"),
        "--scheme", "spatial", "--criterion", "fraction:0.3", "--rank-multiple", "4",
        "--exclude", "conv1", "-o", str(out), "--report", str(report_path),
    )
    assert code == 0
    assert "layer1.0.conv1" in stdout and "speed-up" in stdout
    report = json.loads(report_path.read_text())
    names = {layer["name"] for layer in report["layers"]}
    assert "conv1" not in names and "layer3.2.conv2" in names
    assert all(layer["rank"] % 4 == 0 for layer in report["layers"] if layer["decomposed"])

    code, stdout, _ = run(capsys, "macs", "--checkpoint", str(out), "--json", str(tmp_path / "macs.json"))
    counted = json.loads((tmp_path / "macs.json").read_text())
    assert code == 0 and counted["model"]["name"] == "resnet20"
    assert counted["conv_macs"] == report["totals"]["conv_macs_after"]
    assert f"{counted['conv_macs']:,}" in stdout

    checkpoint = read_checkpoint(out)
    assert len(checkpoint.plan.layers) == report["totals"]["layers_decomposed"]


def test_decomposing_a_decomposed_checkpoint_keeps_the_old_plan(tmp_path, capsys):
    first, second = tmp_path / "a.pt", tmp_path / "b.pt"
    assert run(capsys, "decompose", "--model", "resnet20", "--criterion", "rank:4", "--include", r"layer1\..*", "-o", str(first))[0] == 0
    assert run(capsys, "decompose", "--checkpoint", str(first), "--criterion", "rank:4", "--include", r"layer2\..*", "-o", str(second))[0] == 0
    names = {entry.name for entry in read_checkpoint(second).plan.layers}
    assert "layer1.0.conv1" in names and "layer2.0.conv1" in names


def test_default_input_follows_the_checkpoints_channels(tmp_path, capsys):
    gray = create_model("resnet20", in_channels=1)
    save_checkpoint(tmp_path / "gray.pt", gray, None, {"name": "resnet20", "kwargs": {"in_channels": 1}})
    code, stdout, _ = run(capsys, "macs", "--checkpoint", str(tmp_path / "gray.pt"), "--totals-only")
    assert code == 0 and "input (1, 32, 32)" in stdout
    assert f"{count_macs(gray, torch.zeros(1, 1, 32, 32)).conv_macs:,}" in stdout


def test_macs_of_a_registered_model(capsys):
    code, stdout, _ = run(capsys, "macs", "--model", "resnet56", "--totals-only")
    assert code == 0 and "125,485,056" in stdout


@pytest.mark.parametrize(
    "argv, message",
    [
        (["decompose", "--model", "resnet21"], "unknown model 'resnet21'"),
        (["decompose", "--model", "resnet20", "--checkpoint", "/nonexistent/x.pt"], "does not exist"),
        (["decompose", "--model", "resnet20", "--criterion", "energy:1.2"], "pruned_energy must lie in"),
        (["decompose", "--model", "resnet20", "--criterion", "entropy"], "KIND:VALUE"),
        (["decompose", "--model", "resnet20", "-o", "/nonexistent/dir/x.pt"], "does not exist"),
        (["decompose", "--model", "resnet20", "--include", "layer9"], "match no conv or linear layer"),
        (["decompose", "--model", "resnet20", "--rank-multiple", "0"], "rank_multiple"),
        (["macs"], "--model"),
        (["decompose", "--model", "resnet20", "--input-size", "4", "32", "32"], "does not run through the model"),
        (["macs", "--model", "resnet20", "--input-size", "0", "32", "32"], "--input-size must be"),
        (["macs", "--model", "resnet20", "--num-classes", "-3"], "--num-classes must be"),
        (["decompose", "--model", "resnet20", "--report", "/nonexistent/r.json"], "does not exist"),
        (["decompose", "--model", "resnet20", "--output", "/tmp"], "is a directory"),
        (["decompose", "--model", "resnet20", "--fit-on-data", "64"], "--fit-on-data needs --dataset"),
        (["decompose", "--model", "resnet20", "--fit-on-data", "64", "--dataset", "digits", "--scheme", "spatial"],
         "--fit-on-data needs --scheme channel"),
        (["decompose", "--model", "resnet20", "--fit-on-data", "64", "--dataset", "digits", "--measured"], "do not combine"),
        (["decompose", "--model", "resnet20", "--fit-on-data", "-5", "--dataset", "digits"], "takes a number of training images"),
        (["decompose", "--model", "resnet20", "--dataset", "digits"], "only read by --fit-on-data"),
        (["decompose", "--model", "resnet20", "--fit-on-data", "-5", "--dataset", "digits", "--scheme", "spatial"],
         "takes a number of training images"),
        (["decompose", "--model", "resnet20", "--fit-on-data", "8", "--dataset", "cifar10", "--data-root", "/nonexistent",
          "--data-option", "download=false"], "--data-root names the dataset's directory"),  # "false" is no download
    ],
)
def test_bad_input_gets_one_clear_line(capsys, argv, message):
    code, _, stderr = run(capsys, *argv)
    assert code == 2
    assert message in stderr
    assert "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1


def test_checkpoint_of_another_model_is_refused(tmp_path, capsys):
    torch.save(create_model("resnet20", num_classes=100).state_dict(), tmp_path / "c100.pt")
    code, _, stderr = run(capsys, "macs", "--model", "resnet20", "--checkpoint", str(tmp_path / "c100.pt"))
    assert code == 2 and "shape mismatch" in stderr and "fc.weight" in stderr


def test_console_script_is_installed():
    result = subprocess.run([sys.executable, "-m", "trp", "models"], capture_output=True, text=True)
    assert result.returncode == 0 and "resnet50" in result.stdout
    assert "options: num_classes, shortcut, in_channels" in result.stdout  # resnet20's model.options


def test_a_closed_stdout_pipe_stops_quietly():
    """`trp models | head -1`: the reader goes before trp writes; no error line, status 1."""
    command = subprocess.Popen([sys.executable, "-m", "trp", "models"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    command.stdout.close()
    stderr = command.stderr.read().decode()
    assert command.wait() == 1 and stderr == ""


def test_a_broken_pipe_that_is_not_stdout_is_reported(capsys, monkeypatch):
    from trp.cli import model_commands

    def lose_a_worker(args):
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(model_commands, "_cmd_models", lose_a_worker)
    code, _, stderr = run(capsys, "models")
    assert code == 2 and "Broken pipe" in stderr
