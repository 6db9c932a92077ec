"""CIFAR-10 runs for a lent GPU: ResNet-56 on the 30-epoch schedule of the ResNet-20 runs, and
ResNet-20 on the paper's 164-epoch schedule, trained side by side on one accelerator within a
time budget.

    python benchmarks/cifar10_gpu.py train --minutes 7 [--runs NAME ...] [--device cuda]
        [--threads N] [--data ../shared/data/cifar10-jpeg.tar.gz] [--work DIR]
    python benchmarks/cifar10_gpu.py sweep [--runs NAME ...] [--data ...] [--work DIR]
    python benchmarks/cifar10_gpu.py collect [--work DIR]

``--data`` is the CIFAR-10 JPEG archive of ``reproduce_cifar10.py``, with its ``.sha256`` beside it;
a GPU machine that cannot see ``../shared`` needs a copy of both. On a machine that is lent for
one call at a time, send DIR with the call and bring the whole of it back in the same call, e.g.
``tar -C DIR --exclude ./cifar10-jpeg -cf - . | split -b 15M - OUT/work.tar.part`` where
returned files are capped at 16 MiB: a later call may find only part of DIR (the checkpoints
without their metrics once did), and ``collect`` then lists the epochs whose lines were lost.
``--threads`` sets each run's CPU threads (default: the cores shared out), e.g. to finish a
run on a CPU that is busy with another.

``train`` starts every unfinished run at once, each as its own ``trp train`` process that
resumes from its last completed epoch, and stops them after ``--minutes``; run it again to go
on (on another kind of device too, where the augmentation then draws other crops and flips
than the first device would have). A run whose summary is committed in
``benchmarks/results/cifar10-gpu/`` counts as finished. A run with no checkpoint in DIR (a fresh
machine) starts again from epoch 0, and says so when the results hold an earlier attempt's
epochs, which the next ``collect`` replaces. Each run's
state, logs and outputs stay in ``DIR/runs/NAME`` (default ``~/.cache/trp/cifar10-gpu``), with
each session's device, company and starting epoch in ``DIR/device-NAME.json``. ``collect``
copies the small files (per-epoch metrics, projections, the summary of a finished run, and
``sessions.json``: the sessions and the epochs completed) to
``benchmarks/results/cifar10-gpu/`` and rewrites the CIFAR10-GPU section of RESULTS.md with how
far each run got and, for a finished run, its accuracy decomposed with no fine-tuning beside the
paper's result for the same model and method.
``sweep`` decomposes every finished run's dense net at the energies of ``reproduce_cifar10.py``
with no fine-tuning (the paper's Fig. 3): a baseline with both schemes ("basic"), a TRP run with
its own; the sweeps go to ``benchmarks/results/cifar10-gpu/sweeps/RUN-SCHEME/`` and ``collect``
adds the most accurate point of each at the targets' speed-ups to its section.

ResNet-56 runs on the 30-epoch schedule, not on the paper's recipe in
``configs/cifar10/resnet56-*.toml``: measured on an H200, one TRP+Nu epoch of it takes about
30 s (``benchmarks/results/trp_overhead_cuda.json``), so 164 epochs need over an hour per method.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from report_cifar10 import CONFIGS, LAYER, PAPER_BASELINE, PAPER_TABLE, TARGET_BY_SCHEME, TRAINED
from reproduce_cifar10 import SWEEP_ENERGIES, copy_small_files, prepare_data
from results_markdown import replace_section

from trp.criteria import EnergyCriterion
from trp.data import load_dataset
from trp.plots import plot_accuracy_vs_speedup
from trp.train import TrainConfig, load_train_config
from trp.train.run import FINETUNE_STATE, has_saved_state
from trp.train.state import saved_epoch
from trp.train.sweep import run_sweep

REPO = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results" / "cifar10-gpu"


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
    # The baseline's config trained again (its first training's checkpoint was lost before its spatial
    # sweep ran); the TRP runs are still judged against the first, which they trained beside.
    "resnet56-baseline-retrained": GpuRun("resnet20-baseline-cpu.toml", ("model.name=resnet56",), "ResNet-56", "baseline", SHORT),
    "resnet20-baseline-paper": GpuRun("resnet20-baseline.toml", (), "ResNet-20", "baseline", PAPER),
    "resnet20-trp2-nu-paper": GpuRun("resnet20-trp2-nu.toml", (), "ResNet-20", "TRP2+Nu", PAPER),
}

# The paper's CIFAR-10 results after its 164 epochs, per model: method -> (top-1 %, speed-up). ResNet-20
# from its Table 1 (as report_cifar10.py has it), ResNet-56 as ../shared/TRP.md lists it; Zhang et al.
# and Jaderberg et al. decompose a normally trained net (channel-wise and spatial-wise).
PAPER_RESULTS = {
    "ResNet-20": {"baseline": (PAPER_BASELINE, 1.0),
                  **{TRAINED[method]: PAPER_TABLE[method] for method in ("trp1", "trp1-nu", "trp2", "trp2-nu")},
                  "Zhang et al.": PAPER_TABLE["basic-channel"], "Jaderberg et al.": PAPER_TABLE["basic-spatial"]},
    "ResNet-56": {"baseline": (93.14, 1.0), "TRP1": (92.77, 2.31), "TRP1+Nu": (91.85, 4.48),
                  "TRP2": (92.63, 2.43), "TRP2+Nu": (91.62, 4.51), "Zhang et al.": (91.56, 2.10),
                  "Jaderberg et al.": (91.59, 2.10)},
}

# The paper's results that use each scheme (PAPER_RESULTS' methods), and the lowest change (points)
# the sweep figures show: a sweep collapses to chance beyond its useful range.
PAPER_BY_SCHEME = {"channel": ("TRP1", "TRP1+Nu", "Zhang et al."), "spatial": ("TRP2", "TRP2+Nu", "Jaderberg et al.")}
CHANGE_FLOOR = -10.0


def _command(name: str, data_root: Path, work: Path, device: str) -> list[str]:
    run, run_dir = RUNS[name], work / "runs" / name
    overrides = [
        *run.overrides, "data.dataset=imagefolder", f"data.root={json.dumps(str(data_root))}", "data.download=false",
        f"run.out_dir={json.dumps(str(run_dir))}",
    ]
    command = [sys.executable, "-m", "trp", "train", "--config", str(CONFIGS / run.config), "--device", device, "--no-progress"]
    command += [part for override in overrides for part in ("--set", override)]
    if has_saved_state(run_dir):
        command.append("--resume")
    return command


def _device_name(device: str) -> str:
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    return "CPU"


def _train_epochs(metrics: Path) -> list[dict]:
    """The per-epoch training records of a run's ``metrics.jsonl`` (none before its first epoch)."""
    lines = metrics.read_text().splitlines() if metrics.exists() else []
    records = [json.loads(line) for line in lines if line.strip()]
    return [record for record in records if record["phase"] == "train"]


def _epochs_done(name: str, run_dir: Path) -> int:
    """The training epochs a run has completed: all of them once it is finished (or fine-tuning),
    else the later of its checkpoint's epoch and its last logged one (0 before the first), since
    a transfer can lose either file. A corrupt checkpoint stops with trp's error naming it."""
    if (run_dir / "summary.json").exists() or (run_dir / FINETUNE_STATE).exists():
        return _config(name).optim.epochs
    state, logged = run_dir / "last.pt", _train_epochs(run_dir / "metrics.jsonl")
    return max(saved_epoch(state) if state.exists() else 0, logged[-1]["epoch"] if logged else 0)


def _config(name: str) -> TrainConfig:
    run = RUNS[name]
    return load_train_config(CONFIGS / run.config, list(run.overrides))


def _epochs_without_metrics(epochs: list[dict], done: int) -> list[int]:
    """Completed epochs with no line in ``metrics.jsonl``: a session whose small files were lost
    while its checkpoint came back (its training is in the weights, its per-epoch figures are not)."""
    logged = {record["epoch"] for record in epochs}
    return [epoch for epoch in range(1, done + 1) if epoch not in logged]


def _record_session(work: Path, name: str, device: str, side_by_side: list[str]) -> None:
    """Append this session (device, the runs beside it, the epochs completed before it) to
    ``device-NAME.json``, so each epoch can be told which device and company it ran with."""
    path = work / f"device-{name}.json"
    sessions = json.loads(path.read_text())["sessions"] if path.exists() else []
    from_epoch = _epochs_done(name, work / "runs" / name)
    sessions.append({"device": _device_name(device), "side_by_side": side_by_side, "from_epoch": from_epoch})
    path.write_text(json.dumps({"sessions": sessions}, indent=2) + "\n")


def _restart_notice(name: str, work: Path) -> str | None:
    """What to tell the user when ``name`` has no saved state in ``work`` (a fresh machine, a
    lost cache) although RESULTS records epochs of it: it starts again from epoch 0, and the
    next ``collect`` replaces the earlier attempt's record. None otherwise."""
    record, run_dir = RESULTS / name / "sessions.json", work / "runs" / name
    if has_saved_state(run_dir) or not record.exists():
        return None
    done = json.loads(record.read_text())["epochs_done"]
    if not done:
        return None
    return (f"{name}: no checkpoint in {run_dir}, so it starts again from epoch 0; the {done} epochs recorded in "
            f"{RESULTS / name} are an earlier attempt's, which the next `collect` replaces (git history keeps them)")


def _stop(processes: dict[str, subprocess.Popen], grace_seconds: float = 30.0) -> None:
    """SIGTERM every child still running, then SIGKILL whatever outlives the grace period.
    Checkpoints are written atomically, so a stopped run keeps its last completed epoch."""
    running = {name: process for name, process in processes.items() if process.poll() is None}
    for process in running.values():
        process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_seconds
    for name, process in running.items():
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        print(f"{name}: stopped before finishing; resumable from its last completed epoch", flush=True)


def train(names: list[str], data_root: Path, work: Path, device: str, minutes: float, threads: int | None = None) -> None:
    """Train those of ``names`` not finished (in ``work`` or committed in RESULTS) side by side
    for at most ``minutes``, each child with ``threads`` CPU threads (default: the cores shared
    out); unfinished runs stay resumable. The children are
    stopped however this process ends (time limit, error, SIGTERM, Ctrl-C)."""
    pending = []
    for name in names:
        if (work / "runs" / name / "summary.json").exists():
            continue
        if (RESULTS / name / "summary.json").exists():
            print(f"{name}: finished, its summary is committed in {RESULTS / name}; delete that folder to train it again",
                  flush=True)
            continue
        pending.append(name)
        if notice := _restart_notice(name, work):
            print(notice, flush=True)
    if not pending:
        print("every run is finished", flush=True)
        return
    (work / "logs").mkdir(parents=True, exist_ok=True)
    threads = threads if threads is not None else max(1, (os.cpu_count() or 1) // len(pending))
    environment = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    deadline = time.monotonic() + 60 * minutes
    processes: dict[str, subprocess.Popen] = {}
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))  # so that finally runs
    try:
        for name in pending:
            _record_session(work, name, device, pending)
            with (work / "logs" / f"{name}.log").open("a") as log:
                processes[name] = subprocess.Popen(
                    _command(name, data_root, work, device), stdout=log, stderr=subprocess.STDOUT, env=environment
                )
            print(f"started {name} ({threads} CPU threads)", flush=True)
        while any(process.poll() is None for process in processes.values()) and time.monotonic() < deadline:
            time.sleep(1)
        for name, process in processes.items():
            if process.poll() is not None:
                print(f"{name}: exited with {process.returncode}", flush=True)
    finally:
        _stop(processes)
        signal.signal(signal.SIGTERM, previous)


def sweep(names: list[str], data_root: Path, work: Path) -> None:
    """Sweep every finished run of ``names`` over SWEEP_ENERGIES with no fine-tuning (see the
    module docstring); a sweep already in RESULTS is kept."""
    dataset = None
    for name in names:
        run_dir = work / "runs" / name
        if not (run_dir / "summary.json").exists():
            continue
        config = _config(name)
        decompose = config.decompose_config()
        for scheme in (decompose.scheme,) if config.trp.enabled else ("channel", "spatial"):
            out = RESULTS / "sweeps" / f"{name}-{scheme}"
            if (out / "sweep.json").exists():
                continue
            dataset = dataset or load_dataset("imagefolder", data_root)
            print(f"sweeping {name} ({scheme})", flush=True)
            run_sweep(
                [run_dir / "dense.pt"], [f"{name}-{scheme}"], dataset, dataclasses.replace(decompose, scheme=scheme),
                [EnergyCriterion(energy) for energy in SWEEP_ENERGIES], out, model_name=config.model.name,
                spectrum_layers=[LAYER],
            )


def _first_baselines(rows: list[dict]) -> dict[str, float]:
    """Per model: the dense top-1 (a fraction) of its first finished baseline in ``rows``, the one
    its other runs are judged against."""
    first: dict[str, float] = {}
    for row in rows:
        if row["method"] == "baseline" and row["summary"]:
            first.setdefault(row["model"], row["summary"]["dense"]["accuracy"])
    return first


def beside_paper(rows: list[dict]) -> list[dict]:
    """Each finished run of ``rows`` beside the paper's result for its model and method (None where
    the paper has none): top-1 in % (a baseline's dense, any other run's decomposed with no
    fine-tuning), its change in points against the model's first baseline (None before one has
    finished; the paper's against its own), conv-MAC speed-up, parameters, and training hours
    summed over the run's sessions."""
    first_baselines = _first_baselines(rows)
    found = []
    for row in rows:
        summary = row["summary"]
        if not summary:
            continue
        paper_results = PAPER_RESULTS[row["model"]]
        paper = paper_results.get(row["method"])
        is_baseline = row["method"] == "baseline"
        net = summary["dense"] if is_baseline else summary["decomposed"]
        found.append({
            "run": row["run"], "model": row["model"], "method": row["method"], "schedule": row["schedule"],
            "paper": paper and {"top1": paper[0], "speedup": paper[1], "change": paper[0] - paper_results["baseline"][0]},
            "dense_top1": 100 * summary["dense"]["accuracy"], "decomposed_top1": None if is_baseline else 100 * net["accuracy"],
            "change": None if row["model"] not in first_baselines else 100 * (net["accuracy"] - first_baselines[row["model"]]),
            "speedup": 1.0 if is_baseline else net["conv_speedup"], "params": net["params"],
            "training_hours": summary["training_seconds"] / 3600,
        })
    return found


def _committed_sweeps() -> list[tuple[str, str, str, list[dict]]]:
    """Each sweep committed in RESULTS: (its label, the run it swept, the scheme, its points)."""
    found = []
    for path in sorted((RESULTS / "sweeps").glob("*/sweep.json")):
        sweep_data = json.loads(path.read_text())
        label, scheme = path.parent.name, sweep_data["scheme"]
        found.append((label, label.removesuffix(f"-{scheme}"), scheme, next(iter(sweep_data["models"].values()))["points"]))
    return found


def _sweep_references(rows: list[dict]) -> dict[str, float]:
    """Per run of ``rows``: the dense top-1 (a fraction) its sweep is judged against, a baseline's
    own (basic decomposes that very net), any other run's that of the same model's first finished
    baseline; missing while there is none."""
    first_baselines = _first_baselines(rows)
    own = {row["run"]: row["summary"]["dense"]["accuracy"] for row in rows if row["method"] == "baseline" and row["summary"]}
    references = {row["run"]: own.get(row["run"], first_baselines.get(row["model"])) for row in rows}
    return {run: top1 for run, top1 in references.items() if top1 is not None}


def sweep_rows(rows: list[dict]) -> list[dict]:
    """Per committed sweep: the most accurate point at or above its scheme's target speed-up
    (an energy chosen on the test set), against ``_sweep_references``."""
    references = _sweep_references(rows)
    found = []
    for label, run, scheme, points in _committed_sweeps():
        points_below, speedup = TARGET_BY_SCHEME[scheme]
        fast = [point for point in points if point["conv_speedup"] >= speedup]
        best = max(fast, key=lambda point: point["accuracy"]) if fast else None
        baseline = references.get(run)
        found.append({
            "sweep": label, "scheme": scheme, "min_speedup": speedup, "max_drop": points_below,
            "best": best and {"energy": best["criterion"]["pruned_energy"], "speedup": best["conv_speedup"], "accuracy": best["accuracy"]},
            "change": None if best is None or baseline is None else 100 * (best["accuracy"] - baseline),
        })
    return found


def draw_sweeps_beside_paper(rows: list[dict]) -> list[Path]:
    """Per model and scheme with a committed sweep of a run in ``rows``: each such sweep as its
    change in points against ``_sweep_references`` over conv-MAC speed-up (the paper's Fig. 3, but
    in points, since the baselines differ), beside the paper's results for that model and scheme
    against its own baseline; written to RESULTS/MODEL-SCHEME.png. Returns the paths written."""
    references, runs = _sweep_references(rows), {row["run"]: row for row in rows}
    curves: dict[tuple[str, str], dict[str, list[tuple[float, float]]]] = {}
    schedules: dict[tuple[str, str], set[str]] = {}
    for _, run, scheme, points in _committed_sweeps():
        if run in references:
            row = runs[run]
            name = f"{'basic' if row['method'] == 'baseline' else row['method']} ({run})"
            curves.setdefault((row["model"], scheme), {})[name] = [
                (point["conv_speedup"], 100 * (point["accuracy"] - references[run])) for point in points]
            schedules.setdefault((row["model"], scheme), set()).add(row["schedule"])
    written = []
    for (model, scheme), lines in sorted(curves.items()):
        paper_results = PAPER_RESULTS[model]
        paper_baseline = paper_results["baseline"][0]
        paper = {f"paper {method}": [(paper_results[method][1], paper_results[method][0] - paper_baseline)]
                 for method in PAPER_BY_SCHEME[scheme] if method in paper_results}
        written.append(plot_accuracy_vs_speedup(
            lines, RESULTS / f"{model.lower().replace('-', '')}-{scheme}.png",
            f"{model}, CIFAR-10, {scheme} scheme, no fine-tuning: ours ({'; '.join(sorted(schedules[model, scheme]))}) "
            "and the paper's",
            baseline=0.0, references=paper, floor=CHANGE_FLOOR, y_label="change against its own baseline (points)",
            y_unit="points",
        ))
    return written


def collect(work: Path) -> list[dict]:
    """Copy each run's small files to RESULTS, with ``sessions.json`` (its sessions and the epochs
    it has completed); one progress row per run that has begun."""
    rows = []
    for name, run in RUNS.items():
        run_dir, target = work / "runs" / name, RESULTS / name
        if (work / f"device-{name}.json").exists():  # the run was started
            target.mkdir(parents=True, exist_ok=True)
            sessions = json.loads((work / f"device-{name}.json").read_text())["sessions"]
            progress = {"sessions": sessions, "epochs_done": _epochs_done(name, run_dir)}
            (target / "sessions.json").write_text(json.dumps(progress, indent=2) + "\n")
            copy_small_files(run_dir, target)
        if (target / "sessions.json").exists():
            rows.append(progress_row(name, run, target))
    return rows


def progress_row(name: str, run: GpuRun, results: Path) -> dict:
    """How far a run got (from its committed ``sessions.json`` and metrics) and, when finished,
    its summary."""
    epochs = _train_epochs(results / "metrics.jsonl")
    progress = json.loads((results / "sessions.json").read_text())
    done = progress["epochs_done"]
    summary = json.loads((results / "summary.json").read_text()) if (results / "summary.json").exists() else None
    return {
        "run": name, "model": run.model, "method": run.method, "schedule": run.schedule,
        "sessions": _session_rows(progress["sessions"], epochs, done),
        "epochs_done": done, "epochs_without_metrics": _epochs_without_metrics(epochs, done),
        "epochs": _config(name).optim.epochs,
        "last_test_accuracy": epochs[-1]["test_accuracy"] if epochs else None,
        "summary": summary and {key: summary[key] for key in ("dense", "decomposed", "training_seconds")},
    }


def _session_rows(sessions: list[dict], epochs: list[dict], done: int) -> list[dict]:
    """Each session in the order they ran: its device, how many runs shared it, the epochs it
    trained (``first``..``last``; none where ``last < first``, e.g. a final evaluation) and the
    median seconds of those with a metrics line (None without one). Session i trained the epochs
    after its ``from_epoch`` up to the next session's, the last one up to ``done``."""
    ends = [session["from_epoch"] for session in sessions[1:]] + [done]
    rows = []
    for session, last in zip(sessions, ends):
        first = session["from_epoch"] + 1
        seconds = [record["epoch_seconds"] for record in epochs if first <= record["epoch"] <= last]
        rows.append({
            "device": session["device"], "side_by_side": len(session["side_by_side"]), "first": first, "last": last,
            "median_epoch_seconds": statistics.median(seconds) if seconds else None, "epochs_logged": len(seconds),
        })
    return rows


def _percent(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.2f} %"


def _epoch_ranges(epochs: list[int]) -> str:
    """[2, 3, 4, 9] -> "2-4, 9"."""
    runs: list[list[int]] = []
    for epoch in epochs:
        if runs and epoch == runs[-1][-1] + 1:
            runs[-1].append(epoch)
        else:
            runs.append([epoch])
    return ", ".join(str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}" for run in runs)


def _session_text(session: dict) -> str:
    """ "NVIDIA H200 × 3: epochs 2-18, 22.5 s/epoch (9 logged)"."""
    head = f"{session['device']} × {session['side_by_side']}: "
    if session["last"] < session["first"]:
        return head + "no epoch"
    first, last = session["first"], session["last"]
    epochs = f"epoch {first}" if first == last else f"epochs {first}-{last}"
    seconds = session["median_epoch_seconds"]
    timing = f"{seconds:.1f} s/epoch ({session['epochs_logged']} logged)" if seconds is not None else "none logged"
    return head + f"{epochs}, {timing}"


def markdown(rows: list[dict], sweeps: list[dict], figures: Sequence[Path] = ()) -> str:
    """The CIFAR10-GPU section of RESULTS.md: each run's progress, the finished ones beside the
    paper (``beside_paper``), the ``sweep_rows`` and the ``figures`` of ``draw_sweeps_beside_paper``."""
    lines = [
        "## CIFAR-10 on a lent GPU (ResNet-56 on the 30-epoch schedule, ResNet-20 on the paper's 164 epochs)",
        "",
        "Made by `python benchmarks/cifar10_gpu.py train --minutes M`, once or more, then "
        "`python benchmarks/cifar10_gpu.py collect`; the runs resume where they stopped. Each session "
        "is listed as device × runs sharing it: the epochs it trained, and the median seconds of a training "
        "epoch (evaluation left out) over those with a metrics line. Epochs with no metrics line trained "
        "(their checkpoint came back) but their per-epoch figures were lost. A finished run's last logged "
        "top-1 is left out: its dense top-1 is the figure. A run may go on from one kind of device on "
        "another (`--device`), with the same config: on an NVIDIA GPU of the Ampere generation or later (the "
        "H200 here) cuDNN computes the convolutions in TF32 (PyTorch's default), on the CPU in float32.",
        "",
        "| run | model | schedule | sessions | epochs done | epochs with no metrics line | last logged test top-1 "
        "| dense top-1 | decomposed top-1 | conv speed-up |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        summary = row["summary"]
        dense = _percent(summary["dense"]["accuracy"]) if summary else ""
        decomposed = _percent(summary["decomposed"]["accuracy"]) if summary else "not finished"
        speedup = f"{summary['decomposed']['conv_speedup']:.2f}x" if summary else ""
        last_logged = "" if summary else _percent(row["last_test_accuracy"])
        sessions = "; ".join(_session_text(session) for session in row["sessions"])
        lines.append(
            f"| {row['run']} | {row['model']} {row['method']} | {row['schedule']} | {sessions} "
            f"| {row['epochs_done']} / {row['epochs']} | {_epoch_ranges(row['epochs_without_metrics'])} "
            f"| {last_logged} | {dense} | {decomposed} | {speedup} |"
        )
    beside = beside_paper(rows)
    if beside:
        lines += [
            "",
            "The finished runs beside the paper's results for the same model and method (after its 164 epochs; "
            "ResNet-56 as `../shared/TRP.md` lists them). Top-1 is a baseline's dense net and any other run's "
            "net decomposed with no fine-tuning at its config's criterion; the change is against the first "
            "finished baseline of the same model above (the paper's against its own); params are those of the net "
            "whose top-1 is given; training hours add up the run's sessions, on whatever device each ran.",
            "",
            "| run | method | paper top-1 | paper speed-up | paper change | our schedule | dense top-1 "
            "| decomposed top-1 | change vs our baseline | conv MAC speed-up | params | training h |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for row in beside:
            paper = row["paper"]
            paper_cells = (f"{paper['top1']:.2f} | {paper['speedup']:.2f}x | {paper['change']:+.2f}" if paper else " |  | ")
            decomposed = "" if row["decomposed_top1"] is None else f"{row['decomposed_top1']:.2f}"
            change = "no baseline yet" if row["change"] is None else f"{row['change']:+.2f}"
            lines.append(
                f"| {row['run']} | {row['model']} {row['method']} | {paper_cells} | {row['schedule']} "
                f"| {row['dense_top1']:.2f} | {decomposed} | {change} | {row['speedup']:.2f}x "
                f"| {row['params']:,} | {row['training_hours']:.2f} |"
            )
    if sweeps:
        lines += [
            "",
            "Swept with no fine-tuning by `python benchmarks/cifar10_gpu.py sweep` (each finished run's dense net "
            "decomposed at every energy of `reproduce_cifar10.py`; a baseline with both schemes, \"basic\"): the "
            "most accurate point at or above the target's speed-up for the scheme (an energy chosen on the test "
            "set), against the dense top-1 of the baseline it is judged by (a baseline's own for its sweeps, the model's "
            "first finished baseline for any other run's). Curves: `results/cifar10-gpu/sweeps/*/accuracy_vs_speedup.png`.",
            "",
            "| sweep | scheme | needed | most accurate point there (e, speed-up) | top-1 | change | allowed |",
            "|---|---|---|---|---|---|---|",
        ]
        for row in sweeps:
            best = row["best"]
            point = f"e = {best['energy']}, {best['speedup']:.2f}x" if best else "none reaches it"
            change = "" if row["change"] is None else f"{row['change']:+.2f}"
            lines.append(
                f"| {row['sweep']} | {row['scheme']} | ≥ {row['min_speedup']}x | {point} "
                f"| {_percent(best and best['accuracy'])} | {change} | ≥ -{row['max_drop']} |"
            )
    if figures:
        names = ", ".join(f"`results/cifar10-gpu/{path.name}`" for path in figures)
        lines += [
            "",
            f"The same sweeps over speed-up, each as its change against the baseline it is judged by, beside the "
            f"paper's results for the model and scheme against the paper's baseline (the paper gives points, not "
            f"curves, for ResNet-56): {names}.",
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("train", "sweep", "collect"))
    parser.add_argument("--runs", nargs="+", choices=list(RUNS), default=list(RUNS))
    parser.add_argument("--minutes", type=float, default=60.0, help="time limit for train (default %(default)s)")
    parser.add_argument("--device", default="cuda", help="run.device of every run (default %(default)s)")
    parser.add_argument("--threads", type=int, help="CPU threads per run, at least 1 (default: the cores shared out)")
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "cifar10-jpeg.tar.gz")
    parser.add_argument("--work", type=Path, default=Path.home() / ".cache" / "trp" / "cifar10-gpu")
    args = parser.parse_args()
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads must be at least 1, not {args.threads}")
    if args.action == "train":
        train(args.runs, prepare_data(args.data, args.work / "cifar10-jpeg"), args.work, args.device, args.minutes, args.threads)
    elif args.action == "sweep":
        sweep(args.runs, prepare_data(args.data, args.work / "cifar10-jpeg"), args.work)
    else:
        rows = collect(args.work)
        sweeps = sweep_rows(rows)
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "progress.json").write_text(json.dumps({"runs": rows, "sweeps": sweeps}, indent=2) + "\n")
        section = markdown(rows, sweeps, draw_sweeps_beside_paper(rows))
        replace_section("CIFAR10-GPU", section)
        print(section)


if __name__ == "__main__":
    main()
