"""The quick start: on a real dataset that needs no download (scikit-learn's handwritten
digits), train a baseline and a TRP model, decompose both at a range of energies with no
fine-tuning, print the table and plot accuracy against conv-MAC speed-up."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from ..criteria import EnergyCriterion
from ..plots import plot_accuracy_vs_speedup
from .config import TrainConfig
from .run import load_run_data, method_label, run_training
from .runtime import Runtime
from .sweep import accuracy_on, load_trained, sweep_criteria

__all__ = ["quickstart_configs", "run_quickstart", "SWEEP_ENERGIES"]

SWEEP_ENERGIES = (0.005, 0.01, 0.02, 0.04, 0.08, 0.15, 0.25)


def quickstart_configs(out_dir: Path, epochs: int, device: str, progress: bool) -> list[TrainConfig]:
    """A baseline and TRP2 + nuclear norm (spatial scheme), ResNet-20 on 8x8 digits, one-cycle."""
    configs = []
    for enabled in (False, True):
        config = TrainConfig()
        config.model.name = "resnet20"
        config.data.dataset, config.data.batch_size, config.data.crop_padding = "digits", 64, 1
        config.optim.epochs, config.optim.lr, config.optim.schedule, config.optim.warmup_epochs = epochs, 0.1, "onecycle", 1.0
        config.optim.weight_decay = 5e-4
        config.decompose.scheme, config.decompose.criterion = "spatial", "energy:0.02"
        config.trp.enabled, config.trp.period, config.trp.nuclear_weight = enabled, 10, 3e-4 if enabled else 0.0
        config.run.device, config.run.progress = device, progress
        config.run.out_dir = str(out_dir / method_label(config))
        configs.append(config)
    return configs


def run_quickstart(out_dir: str | Path, epochs: int = 30, device: str = "auto", progress: bool = True) -> dict[str, Any]:
    """Train (or reuse finished runs in ``out_dir``), sweep, and write ``quickstart.json`` and
    ``accuracy_vs_speedup.png`` there. ``quickstart.json`` records ``wall_seconds``: this
    call's time from start to the JSON, training and sweeps included (less when runs are reused)."""
    started = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    configs = quickstart_configs(out, epochs, device, progress)
    summaries, curves = {}, {}
    for config in configs:
        run_dir = Path(config.run.out_dir)
        label = method_label(config)
        if (run_dir / "summary.json").exists():
            summaries[label] = json.loads((run_dir / "summary.json").read_text())
            if summaries[label]["epochs"] != epochs:
                raise ValueError(
                    f"{run_dir} holds a finished {summaries[label]['epochs']}-epoch run, not {epochs} epochs: "
                    "pass the same --epochs to reuse it, or another --out."
                )
            print(f"{label}: reusing the finished run in {run_dir}")
        else:
            summaries[label] = run_training(config, resume=(run_dir / "last.pt").exists())
        curves[label] = _sweep(config, run_dir)
    result = {
        "summaries": {k: {key: v[key] for key in ("dense", "decomposed", "training_seconds")} for k, v in summaries.items()},
        "sweeps": curves,
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    (out / "quickstart.json").write_text(json.dumps(result, indent=2) + "\n")
    baseline = 100 * summaries["baseline"]["dense"]["accuracy"]
    plot = plot_accuracy_vs_speedup(
        {label: [(p["conv_speedup"], 100 * p["accuracy"]) for p in points] for label, points in curves.items()},
        out / "accuracy_vs_speedup.png", "ResNet-20 on digits: decomposed with no fine-tuning", baseline,
    )
    print(_table(summaries, curves))
    print(f"wrote {out / 'quickstart.json'} and {plot}")
    return result


def _sweep(config: TrainConfig, run_dir: Path) -> list[dict[str, Any]]:
    dataset = load_run_data(config, Runtime(torch.device("cpu")))
    model = load_trained(run_dir / "dense.pt", config.model.name, dataset)
    example = torch.zeros(1, *dataset.input_size)
    criteria = [EnergyCriterion(e) for e in SWEEP_ENERGIES]
    points = sweep_criteria(model, config.decompose_config(), criteria, accuracy_on(dataset, config.data.eval_batch_size), example)
    return [vars(point) for point in points]


def _table(summaries: dict[str, Any], curves: dict[str, list[dict[str, Any]]]) -> str:
    rows = [f"{'method':<10} {'dense acc':>9} | " + " | ".join(f"{'e=' + str(e):<13}" for e in SWEEP_ENERGIES)]
    for label, points in curves.items():
        cells = " | ".join(f"{100 * p['accuracy']:5.1f}% {p['conv_speedup']:5.2f}x" for p in points)
        rows.append(f"{label:<10} {100 * summaries[label]['dense']['accuracy']:>8.2f}% | {cells}")
    epochs = next(iter(summaries.values()))["epochs"]
    return "\n".join(rows) + (
        f"\n(ResNet-20 trained {epochs} epochs; each cell: accuracy of the decomposed net with no fine-tuning, "
        "conv-MAC speed-up)"
    )
