"""CIFAR-10 runs for a lent GPU: ResNet-56 on the 30-epoch schedule of the ResNet-20 runs, and
ResNet-20 on the paper's 164-epoch schedule, trained side by side on one accelerator within a
time budget.

    python benchmarks/cifar10_gpu.py train --minutes 7 [--runs NAME ...] [--device cuda]
        [--data ../shared/data/cifar10-jpeg.tar.gz] [--work DIR]
    python benchmarks/cifar10_gpu.py collect [--work DIR]

``train`` starts every unfinished run at once, each as its own ``trp train`` process that
resumes from its last completed epoch, and stops them after ``--minutes``; run it again (on the
same kind of device: a run's random-number state belongs to its device) to go on. Each run's
state, logs and outputs stay in ``DIR/runs/NAME`` (default ``~/.cache/trp/cifar10-gpu``), with
the device's name in ``DIR/device-NAME.json``. ``collect`` sweeps each finished run over the
energy criteria of the ResNet-20 sweeps (on the CPU, no fine-tuning), copies the small files
to ``benchmarks/results/cifar10-gpu/`` and rewrites the CIFAR10-GPU section of RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from reproduce_cifar10 import prepare_data
from results_markdown import replace_section

from trp.train import load_train_config

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs" / "cifar10"
RESULTS = Path(__file__).parent / "results" / "cifar10-gpu"
SMALL_FILES = ("summary.json", "metrics.jsonl", "projections.jsonl")


@dataclass(frozen=True)
class GpuRun:
    """One run: a committed config, the overrides that make it this run, and what it is."""

    config: str
    overrides: tuple[str, ...]
    model: str
    method: str
    schedule: str


SHORT, PAPER = "30-epoch one-cycle", "paper: 164 epochs, steps at 82 and 122"
RUNS = {
    "resnet56-baseline": GpuRun("resnet20-baseline-cpu.toml", ("model.name=resnet56",), "ResNet-56", "baseline", SHORT),
    "resnet56-trp1-nu": GpuRun("resnet20-trp1-nu-cpu.toml", ("model.name=resnet56",), "ResNet-56", "TRP1+Nu", SHORT),
    "resnet56-trp2-nu": GpuRun("resnet20-trp2-nu-cpu.toml", ("model.name=resnet56",), "ResNet-56", "TRP2+Nu", SHORT),
    "resnet20-baseline-paper": GpuRun("resnet20-baseline.toml", (), "ResNet-20", "baseline", PAPER),
    "resnet20-trp2-nu-paper": GpuRun("resnet20-trp2-nu.toml", (), "ResNet-20", "TRP2+Nu", PAPER),
}


def _command(name: str, data_root: Path, work: Path, device: str) -> list[str]:
    run, run_dir = RUNS[name], work / "runs" / name
    overrides = [
        *run.overrides, "data.dataset=imagefolder", f"data.root={json.dumps(str(data_root))}", "data.download=false",
        f"run.out_dir={json.dumps(str(run_dir))}",
    ]
    command = [sys.executable, "-m", "trp", "train", "--config", str(CONFIGS / run.config), "--device", device, "--no-progress"]
    command += [part for override in overrides for part in ("--set", override)]
    if (run_dir / "last.pt").exists() or (run_dir / "finetune_last.pt").exists():
        command.append("--resume")
    return command


def _device_name(device: str) -> str:
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    return "CPU"


def train(names: list[str], data_root: Path, work: Path, device: str, minutes: float) -> None:
    """Train ``names`` side by side for at most ``minutes``; unfinished runs stay resumable."""
    pending = [name for name in names if not (work / "runs" / name / "summary.json").exists()]
    if not pending:
        print("every run is finished", flush=True)
        return
    (work / "logs").mkdir(parents=True, exist_ok=True)
    threads = max(1, (os.cpu_count() or 1) // len(pending))
    environment = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    deadline = time.monotonic() + 60 * minutes
    processes = {}
    for name in pending:
        (work / f"device-{name}.json").write_text(json.dumps({"device": _device_name(device), "side_by_side": pending}) + "\n")
        log = (work / "logs" / f"{name}.log").open("a")
        processes[name] = subprocess.Popen(_command(name, data_root, work, device), stdout=log, stderr=subprocess.STDOUT, env=environment)
        print(f"started {name} ({threads} CPU threads)", flush=True)
    while any(p.poll() is None for p in processes.values()) and time.monotonic() < deadline:
        time.sleep(5)
    for name, process in processes.items():
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)  # checkpoints are written atomically: the last epoch stays
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
            print(f"{name}: stopped at the time limit; resumable", flush=True)
        else:
            print(f"{name}: exited with {process.returncode}", flush=True)


def collect(work: Path) -> list[dict]:
    """Copy each run's small files to RESULTS; one progress row per run that has begun."""
    rows = []
    for name, run in RUNS.items():
        run_dir, target = work / "runs" / name, RESULTS / name
        if (work / f"device-{name}.json").exists():  # the run was started
            target.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(work / f"device-{name}.json", target / "device.json")
            for file in SMALL_FILES:
                if (run_dir / file).exists():
                    shutil.copyfile(run_dir / file, target / file)
        if (target / "device.json").exists():
            rows.append(progress_row(name, run, target))
    return rows


def progress_row(name: str, run: GpuRun, results: Path) -> dict:
    """How far a run got (from its committed metrics) and, when finished, its summary."""
    metrics = results / "metrics.jsonl"
    epochs = [json.loads(line) for line in metrics.read_text().splitlines()] if metrics.exists() else []
    epochs = [record for record in epochs if record["phase"] == "train"]
    device = json.loads((results / "device.json").read_text())
    summary = json.loads((results / "summary.json").read_text()) if (results / "summary.json").exists() else None
    return {
        "run": name, "model": run.model, "method": run.method, "schedule": run.schedule,
        "device": device.get("device", "?"), "side_by_side": len(device.get("side_by_side", [])),
        "epochs_done": len(epochs), "epochs": load_train_config(CONFIGS / run.config).optim.epochs,
        "last_test_accuracy": epochs[-1]["test_accuracy"] if epochs else None,
        "seconds_per_epoch": sum(r["epoch_seconds"] for r in epochs) / len(epochs) if epochs else None,
        "summary": summary and {key: summary[key] for key in ("dense", "decomposed", "training_seconds")},
    }


def _percent(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.2f} %"


def _seconds(value: float | None) -> str:
    return "" if value is None else f"{value:.1f}"


def markdown(rows: list[dict]) -> str:
    lines = [
        "## CIFAR-10 on a lent GPU (ResNet-56; the paper's 164-epoch schedule)",
        "",
        "Made by `python benchmarks/cifar10_gpu.py train --minutes M` on the device named below, then "
        "`python benchmarks/cifar10_gpu.py collect`; the runs resume where they stopped. The runs shared "
        "one GPU side by side, so the seconds per epoch are those of a shared GPU, not of a run alone.",
        "",
        "| run | model | schedule | device (runs side by side) | epochs done | last test top-1 | s/epoch | decomposed top-1 | conv speed-up |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        summary = row["summary"]
        decomposed = f"{100 * summary['decomposed']['accuracy']:.2f} %" if summary else "not finished"
        speedup = f"{summary['decomposed']['conv_speedup']:.2f}x" if summary else ""
        lines.append(
            f"| {row['run']} | {row['model']} {row['method']} | {row['schedule']} | {row['device']} ({row['side_by_side']}) "
            f"| {row['epochs_done']} / {row['epochs']} | {_percent(row['last_test_accuracy'])} "
            f"| {_seconds(row['seconds_per_epoch'])} | {decomposed} | {speedup} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("train", "collect"))
    parser.add_argument("--runs", nargs="+", choices=list(RUNS), default=list(RUNS))
    parser.add_argument("--minutes", type=float, default=60.0, help="time limit for train (default %(default)s)")
    parser.add_argument("--device", default="cuda", help="run.device of every run (default %(default)s)")
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "cifar10-jpeg.tar.gz")
    parser.add_argument("--work", type=Path, default=Path.home() / ".cache" / "trp" / "cifar10-gpu")
    args = parser.parse_args()
    if args.action == "train":
        train(args.runs, prepare_data(args.data, args.work / "cifar10-jpeg"), args.work, args.device, args.minutes)
    else:
        rows = collect(args.work)
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "progress.json").write_text(json.dumps(rows, indent=2) + "\n")
        section = markdown(rows)
        replace_section("CIFAR10-GPU", section)
        print(section)


if __name__ == "__main__":
    main()
