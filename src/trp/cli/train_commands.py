"""``trp train``, ``trp quickstart``, ``trp sweep``: commands that train or evaluate on data."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..criteria import parse_criterion
from .common import (
    add_data_arguments, add_decompose_arguments, check_calibration_size, check_fit_on_data, decompose_config, load_data,
)

__all__ = ["add_parsers"]


def _cmd_sweep(args: argparse.Namespace) -> None:
    from ..train.sweep import run_sweep

    labels = args.labels or [path.stem for path in args.checkpoints]
    args.criterion = args.criteria[0]
    config = decompose_config(args)
    check_fit_on_data(args, config)
    dataset = load_data(args)
    check_calibration_size(dataset, args.fit_on_data)
    result = run_sweep(
        args.checkpoints, labels, dataset, config, [parse_criterion(c) for c in args.criteria], args.out,
        model_name=args.model, spectrum_layers=args.spectrum_layers, calibration_images=args.fit_on_data,
    )
    print(f"{'model':<14} {'criterion':<16} {'speed-up':>8} {'accuracy':>9} {'params':>10}")
    for label, data in result["models"].items():
        print(f"{label:<14} {'dense':<16} {1.0:>7.2f}x {100 * data['dense_accuracy']:>8.2f}%")
        for point, text in zip(data["points"], args.criteria):
            print(f"{label:<14} {text:<16} {point['conv_speedup']:>7.2f}x {100 * point['accuracy']:>8.2f}% {point['params']:>10,}")
    print(f"wrote sweep.json, accuracy_vs_speedup.png, ranks.png and spectra.png to {args.out}")


def _cmd_train(args: argparse.Namespace) -> None:
    from ..train import load_train_config, run_training

    overrides = list(args.set)
    for flag, key in (("out", "run.out_dir"), ("epochs", "optim.epochs"), ("device", "run.device"), ("data_root", "data.root")):
        value = getattr(args, flag)
        if value is not None:
            overrides.append(f"{key}={json.dumps(value) if isinstance(value, str) else value}")
    if args.no_progress:
        overrides.append("run.progress=false")
    config = load_train_config(args.config, overrides)
    run_training(config, resume=args.resume)


def _cmd_quickstart(args: argparse.Namespace) -> None:
    from ..train.quickstart import run_quickstart

    run_quickstart(args.out, epochs=args.epochs, device=args.device, progress=not args.no_progress)


def add_parsers(commands: argparse._SubParsersAction) -> None:
    """Register these commands on the ``trp`` parser."""
    sweep = commands.add_parser(
        "sweep",
        help="decompose trained checkpoints at a list of criteria and evaluate each (no retraining); table and plots",
        description="For each checkpoint, decompose a copy at every criterion, evaluate it on the dataset's test "
        "split with no fine-tuning, and write a table, sweep.json, accuracy_vs_speedup.png (paper Fig. 3), "
        "ranks.png (per-layer ranks at the first criterion) and spectra.png (singular values of chosen layers).",
    )
    sweep.add_argument("checkpoints", type=Path, nargs="+", help="trained checkpoints (e.g. runs/*/dense.pt)")
    sweep.add_argument("--labels", nargs="+", help="one label per checkpoint (default: file names)")
    sweep.add_argument("--model", help="architecture, if a checkpoint does not name it")
    add_data_arguments(sweep, required=True)
    sweep.add_argument("--criteria", nargs="+", default=["energy:0.005", "energy:0.01", "energy:0.02", "energy:0.05", "energy:0.1"],
                       help="criteria to sweep (default: energy 0.005 to 0.1)")
    add_decompose_arguments(sweep)
    sweep.add_argument("--spectrum-layers", nargs="+", default=[], metavar="NAME", help="layers for spectra.png")
    sweep.add_argument("--out", type=Path, default=Path("runs/sweep"), help="output directory (default runs/sweep)")
    sweep.set_defaults(run=_cmd_sweep)

    train = commands.add_parser(
        "train",
        help="train with TRP, decompose with no fine-tuning, evaluate, save, summarize",
        description="Train a registered model (optionally with TRP projection and nuclear-norm regularization), "
        "then decompose it, evaluate dense and decomposed nets, and write checkpoints, metrics.jsonl and "
        "summary.json to run.out_dir. Every option lives in the config file (TOML or YAML; see configs/) and "
        "any of them can be overridden with --set section.key=value.",
    )
    train.add_argument("--config", type=Path, help="TOML or YAML config file (default: built-in defaults)")
    train.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                       help="override one option, e.g. --set optim.lr=0.05 --set trp.enabled=true (repeatable)")
    train.add_argument("--resume", action="store_true", help="continue the run in run.out_dir from its last epoch")
    train.add_argument("--out", help="shortcut for --set run.out_dir=...")
    train.add_argument("--epochs", type=int, help="shortcut for --set optim.epochs=...")
    train.add_argument("--device", help="shortcut for --set run.device=... (auto, cpu, cuda, cuda:1)")
    train.add_argument("--data-root", help="shortcut for --set data.root=...")
    train.add_argument("--no-progress", action="store_true", help="no progress bars (logs only)")
    train.set_defaults(run=_cmd_train)

    quickstart = commands.add_parser(
        "quickstart",
        help="train a baseline and a TRP model on a dataset that needs no download; table and plot",
        description="Train ResNet-20 on scikit-learn's handwritten digits twice (baseline; TRP2 + nuclear norm), "
        "decompose both at a range of energies with no fine-tuning, print the table and plot accuracy "
        "against conv-MAC speed-up. Finished runs in --out are reused.",
    )
    quickstart.add_argument("--out", type=Path, default=Path("runs/quickstart"), help="output directory")
    quickstart.add_argument("--epochs", type=int, default=30, help="epochs per run (default 30)")
    quickstart.add_argument("--device", default="auto", help="auto, cpu or cuda")
    quickstart.add_argument("--no-progress", action="store_true", help="no progress bars")
    quickstart.set_defaults(run=_cmd_quickstart)
