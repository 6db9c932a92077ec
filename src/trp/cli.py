"""The ``trp`` command line: ``decompose``, ``macs``, ``export``, ``bench``, ``models``,
``train``, ``quickstart``.

Every command prints what it did; errors are one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .checkpoint import CheckpointError, load_state_dict_, read_checkpoint, save_checkpoint
from .config import DecomposeConfig
from .counting import count_macs
from .criteria import parse_criterion
from .lowrank import SCHEMES
from .measured import decompose_measured_
from .models import create_model, get_model_spec, list_models
from .plan import RankPlan
from .export import ExportMismatch, export_onnx, export_torchscript
from .fold import fold_batchnorm_
from .latency import RUNTIMES, compare_latency
from .surgery import apply_plan_, decompose_
from .target import FAMILIES, criterion_for_speedup

__all__ = ["main", "build_parser"]


class CliError(Exception):
    """A user error: printed as one line, exit status 2."""


@dataclass
class LoadedModel:
    model: nn.Module
    entry: dict[str, Any]
    plan: RankPlan
    input_size: tuple[int, ...]
    trained: bool


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model")
    group.add_argument("--model", help=f"registered architecture ({', '.join(list_models())}); "
                       "optional when --checkpoint is a trp checkpoint, which names its model")
    group.add_argument("--checkpoint", type=Path, help="weights: a trp checkpoint or a plain state dict "
                       "(torch.save(model.state_dict(), path)); without it the weights are random")
    group.add_argument("--num-classes", type=int, help="classifier outputs (default: the model's own)")
    group.add_argument("--input-size", type=int, nargs=3, metavar=("C", "H", "W"),
                       help="input size for MAC counts (default: the model's own, e.g. 3 32 32)")


def _check_model_arguments(args: argparse.Namespace) -> None:
    if args.input_size is not None and min(args.input_size) < 1:
        raise CliError(f"--input-size must be three positive numbers C H W, got {' '.join(map(str, args.input_size))}.")
    if args.num_classes is not None and args.num_classes < 1:
        raise CliError(f"--num-classes must be >= 1, got {args.num_classes}.")


def _check_writable(path: Path | None, option: str) -> None:
    if path is None:
        return
    if path.is_dir():
        raise CliError(f"{option} {path} is a directory; give a file name, e.g. {path / 'model.pt'}.")
    if not path.parent.is_dir():
        raise CliError(f"cannot write {path}: directory {path.parent} does not exist.")


def _load_model(args: argparse.Namespace) -> LoadedModel:
    _check_model_arguments(args)
    checkpoint = read_checkpoint(args.checkpoint) if args.checkpoint else None
    entry: dict[str, Any] = dict(checkpoint.model) if checkpoint and checkpoint.model else {}
    if args.model:
        if entry and entry.get("name") != args.model:
            raise CliError(
                f"--model {args.model} does not match the checkpoint, which holds a {entry.get('name')}; "
                "drop --model or pass the right checkpoint."
            )
        entry.setdefault("name", args.model)
    if "name" not in entry:
        raise CliError("name the architecture with --model (e.g. --model resnet20): the checkpoint does not say.")
    kwargs = dict(entry.get("kwargs", {}))
    if args.num_classes is not None:
        kwargs["num_classes"] = args.num_classes
    entry["kwargs"] = kwargs
    spec = get_model_spec(entry["name"])
    model = create_model(entry["name"], **kwargs)
    plan = RankPlan()
    if checkpoint is not None:
        if checkpoint.plan is not None:
            apply_plan_(model, checkpoint.plan)
            plan = checkpoint.plan
        load_state_dict_(model, checkpoint.state_dict, source=str(args.checkpoint))
    input_size = tuple(args.input_size) if args.input_size else spec.input_size
    return LoadedModel(model.eval(), entry, plan, input_size, trained=checkpoint is not None)


def _cmd_decompose(args: argparse.Namespace) -> None:
    config = _decompose_config(args)
    _check_writable(args.output, "--output")
    _check_writable(args.report, "--report")
    loaded = _load_model(args)
    if not loaded.trained:
        print("note: no --checkpoint, so the weights are random: ranks and errors say little about a trained model.")
    example = torch.zeros(1, *loaded.input_size)
    if args.target_speedup is not None:
        found = criterion_for_speedup(loaded.model, config, example, args.target_speedup, family=args.target_family)
        config = dataclasses.replace(config, criterion=found.criterion)
        print(f"target {args.target_speedup:.2f}x: {found.criterion} gives {found.speedup:.3f}x ({found.iterations} bisection steps)")
    if args.measured:
        report = decompose_measured_(loaded.model, config, example)
    else:
        report = decompose_(loaded.model, config, example)
    print(report.table())
    if not report.decomposed:
        print("note: no layer was factorized (see the reasons above): the output equals the input model.")
    plan = RankPlan(loaded.plan.layers + report.plan.layers)
    if args.report is not None:
        args.report.write_text(json.dumps(report.to_dict(), indent=2) + "\n")
        print(f"wrote report {args.report}")
    if args.output is not None:
        save_checkpoint(args.output, loaded.model, plan, loaded.entry, metadata={"decomposition": report.to_dict()})
        print(f"wrote decomposed checkpoint {args.output} ({len(plan.layers)} factorized layers)")
    else:
        print("no --output given: nothing saved")


def _decompose_config(args: argparse.Namespace) -> DecomposeConfig:
    return DecomposeConfig(
        scheme=args.scheme,
        criterion=parse_criterion(args.criterion),
        rank_multiple=args.rank_multiple,
        include=tuple(args.include),
        exclude=tuple(args.exclude),
        decompose_linear=not args.no_linear,
        grouped=args.grouped,
        keep_unprofitable=args.keep_unprofitable,
    )


def _cmd_macs(args: argparse.Namespace) -> None:
    _check_writable(args.json, "--json")
    loaded = _load_model(args)
    counted = count_macs(loaded.model, torch.zeros(1, *loaded.input_size))
    if args.json is not None:
        data = {
            "model": loaded.entry,
            "input_size": list(loaded.input_size),
            "conv_macs": counted.conv_macs,
            "model_macs": counted.model_macs,
            "params": counted.params,
            "layers": [
                {"name": c.name, "kind": c.kind, "macs": c.macs, "params": c.params, "calls": c.calls}
                for c in counted.layers
            ],
        }
        args.json.write_text(json.dumps(data, indent=2) + "\n")
    if not args.totals_only:
        header = f"{'layer':<40} {'kind':<6} {'MACs':>15} {'params':>12}"
        print(header)
        print("-" * len(header))
        for c in counted.layers:
            print(f"{c.name:<40} {c.kind:<6} {c.macs:>15,} {c.params:>12,}")
        print("-" * len(header))
    print(f"{loaded.entry['name']}, input {tuple(loaded.input_size)}, per example (1 MAC = 1 multiply-accumulate):")
    print(f"conv MACs   {counted.conv_macs:>16,}  ({counted.conv_macs / 1e6:,.2f} M)")
    print(f"model MACs  {counted.model_macs:>16,}  ({counted.model_macs / 1e6:,.2f} M; conv + linear)")
    print(f"parameters  {counted.params:>16,}  ({counted.params / 1e6:,.3f} M)")
    if loaded.plan.layers:
        print(f"{len(loaded.plan.layers)} layers are factorized (from the checkpoint's rank plan)")


def _cmd_models(args: argparse.Namespace) -> None:
    for name in sorted(list_models(), key=lambda n: (len(n), n)):
        spec = get_model_spec(name)
        print(f"{name:<12} input {spec.input_size}  classes {spec.num_classes}  {spec.builder.__doc__ or ''}")


def _cmd_export(args: argparse.Namespace) -> None:
    if args.onnx is None and args.torchscript is None:
        raise CliError("name at least one output: --onnx PATH and/or --torchscript PATH.")
    for path, option in ((args.onnx, "--onnx"), (args.torchscript, "--torchscript")):
        _check_writable(path, option)
    loaded = _load_model(args)
    if args.fold_bn:
        folded = fold_batchnorm_(loaded.model)
        print(f"folded {len(folded)} BatchNorm layers into their convs")
    example = torch.randn(args.batch, *loaded.input_size)
    if args.onnx is not None:
        error = export_onnx(loaded.model, example, args.onnx, opset=args.opset, tolerance=args.tolerance)
        print(f"wrote {args.onnx} (ONNX opset {args.opset}); ONNX Runtime vs PyTorch max relative error {error:.2e}")
    if args.torchscript is not None:
        error = export_torchscript(loaded.model, example, args.torchscript, tolerance=args.tolerance)
        print(f"wrote {args.torchscript} (TorchScript); reloaded vs PyTorch max relative error {error:.2e}")


def _cmd_bench(args: argparse.Namespace) -> None:
    _check_writable(args.json, "--json")
    loaded = _load_model(args)
    if not loaded.plan.layers:
        raise CliError(f"{args.checkpoint} has no factorized layers: bench a checkpoint written by trp decompose or trp train.")
    dense = create_model(loaded.entry["name"], **loaded.entry.get("kwargs", {}))
    if args.dense_checkpoint is not None:
        load_state_dict_(dense, read_checkpoint(args.dense_checkpoint).state_dict, source=str(args.dense_checkpoint))
    else:
        print("note: the dense model has random weights (latency does not depend on them); --dense-checkpoint loads real ones.")
    dense.eval()
    if not args.no_fold_bn:
        fold_batchnorm_(dense)
        fold_batchnorm_(loaded.model)
    rows = compare_latency(
        dense, loaded.model, loaded.input_size, batches=args.batches, runtimes=args.runtimes,
        threads=args.threads, warmup=args.warmup, repeats=args.repeats,
    )
    header = f"{'runtime':<12} {'batch':>5} {'dense ms':>9} {'decomp ms':>9} {'measured':>9} {'MACs':>7} {'ratio':>6}"
    print(header)
    for row in rows:
        print(
            f"{row.runtime:<12} {row.batch:>5} {row.dense.median_ms:>9.2f} {row.decomposed.median_ms:>9.2f} "
            f"{row.measured_speedup:>8.2f}x {row.mac_speedup:>6.2f}x {row.efficiency:>6.2f}"
        )
    print("(medians; ratio = measured speed-up / conv-MAC speed-up)")
    if args.json is not None:
        args.json.write_text(json.dumps({"model": loaded.entry, "rows": [r.to_dict() for r in rows]}, indent=2) + "\n")
        print(f"wrote {args.json}")


def _cmd_sweep(args: argparse.Namespace) -> None:
    from .data import load_dataset
    from .train.sweep import run_sweep

    labels = args.labels or [path.stem for path in args.checkpoints]
    args.criterion = args.criteria[0]
    config = _decompose_config(args)
    dataset = load_dataset(args.dataset, args.data_root, **dict(_option(o) for o in args.data_option))
    result = run_sweep(
        args.checkpoints, labels, dataset, config, [parse_criterion(c) for c in args.criteria], args.out,
        model_name=args.model, spectrum_layers=args.spectrum_layers,
    )
    print(f"{'model':<14} {'criterion':<16} {'speed-up':>8} {'accuracy':>9} {'params':>10}")
    for label, data in result["models"].items():
        print(f"{label:<14} {'dense':<16} {1.0:>7.2f}x {100 * data['dense_accuracy']:>8.2f}%")
        for point, text in zip(data["points"], args.criteria):
            print(f"{label:<14} {text:<16} {point['conv_speedup']:>7.2f}x {100 * point['accuracy']:>8.2f}% {point['params']:>10,}")
    print(f"wrote sweep.json, accuracy_vs_speedup.png, ranks.png and spectra.png to {args.out}")


def _option(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep:
        raise CliError(f"cannot read --data-option {text!r}; write KEY=VALUE, e.g. image_size=32.")
    return key, int(value) if value.isdigit() else value


def _cmd_train(args: argparse.Namespace) -> None:
    from .train import load_train_config, run_training

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
    from .train.quickstart import run_quickstart

    run_quickstart(args.out, epochs=args.epochs, device=args.device, progress=not args.no_progress)


def _add_decompose_arguments(parser: argparse.ArgumentParser) -> None:
    """The layer-selection and scheme options of DecomposeConfig (rank criterion aside)."""
    parser.add_argument("--scheme", choices=SCHEMES, default="channel",
                        help="channel (TRP1: kxk conv to rank r, then 1x1) or spatial (TRP2: kx1 then 1xk); "
                        "default: channel")
    parser.add_argument("--rank-multiple", type=int, default=1, metavar="N",
                        help="round ranks up to a multiple of N (e.g. 8); default: 1")
    parser.add_argument("--include", action="append", default=[], metavar="REGEX",
                        help="only layers whose full name matches (repeatable)")
    parser.add_argument("--exclude", action="append", default=[], metavar="REGEX",
                        help="leave layers whose full name matches dense (repeatable)")
    parser.add_argument("--no-linear", action="store_true", help="leave nn.Linear layers dense")
    parser.add_argument("--grouped", choices=("per_group", "skip"), default="per_group",
                        help="grouped convs: factorize per group, or leave dense; default: per_group")
    parser.add_argument("--keep-unprofitable", action="store_true",
                        help="also factorize layers whose factorized form costs more MACs")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trp",
        description="Trained Rank Pruning: factorize CNN layers into low-rank pairs and count what it saves.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    decompose = commands.add_parser(
        "decompose",
        help="factorize a model's conv/linear layers; print a per-layer table; save a decomposed checkpoint",
        description="Factorize the conv and linear layers of a registered model (optionally with weights "
        "from --checkpoint) by truncated SVD, print what each layer became, and save the result with "
        "its rank plan.",
    )
    _add_model_arguments(decompose)
    _add_decompose_arguments(decompose)
    decompose.add_argument("--criterion", default="energy:0.02",
                           help="rank criterion KIND:VALUE: energy:E (prune fraction E of the singular-value "
                           "energy), value:V (drop singular values < V), rank:R, fraction:F; default: energy:0.02")
    decompose.add_argument("--target-speedup", type=float, metavar="X",
                           help="instead of --criterion's value: find the criterion that gives X-fold fewer conv MACs")
    decompose.add_argument("--target-family", choices=FAMILIES, default="energy",
                           help="what --target-speedup searches: the energy e or the rank fraction; default: energy")
    decompose.add_argument("--measured", action="store_true",
                           help="keep a layer dense unless its factorized form is measured faster here (PyTorch eager, CPU)")
    decompose.add_argument("--output", "-o", type=Path, help="write the decomposed checkpoint here")
    decompose.add_argument("--report", type=Path, help="write the per-layer report as JSON here")
    decompose.set_defaults(run=_cmd_decompose)

    macs = commands.add_parser(
        "macs",
        help="count MACs and parameters, per layer and in total",
        description="Count multiply-accumulates (1 MAC = 1 multiply + 1 add) per example and parameters of a "
        "registered model or a (decomposed) checkpoint, by a forward pass with hooks.",
    )
    _add_model_arguments(macs)
    macs.add_argument("--totals-only", action="store_true", help="print only the totals")
    macs.add_argument("--json", type=Path, help="also write the counts as JSON here")
    macs.set_defaults(run=_cmd_macs)

    export = commands.add_parser(
        "export",
        help="export a dense or decomposed model to ONNX and/or TorchScript, checked against PyTorch",
        description="Export to ONNX (opset 17 or newer, dynamic batch) and/or TorchScript, then run the export "
        "(ONNX Runtime on the CPU; the reloaded TorchScript module) and compare with PyTorch: the command fails "
        "when the maximum relative error exceeds --tolerance.",
    )
    _add_model_arguments(export)
    export.add_argument("--onnx", type=Path, help="write ONNX here")
    export.add_argument("--torchscript", type=Path, help="write TorchScript here")
    export.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    export.add_argument("--fold-bn", action="store_true", help="fold BatchNorm into the preceding convs first (exact)")
    export.add_argument("--batch", type=int, default=1, help="batch size of the example input (default 1)")
    export.add_argument("--tolerance", type=float, default=1e-4, help="largest accepted relative error (default 1e-4)")
    export.set_defaults(run=_cmd_export)

    bench = commands.add_parser(
        "bench",
        help="measure latency of a decomposed checkpoint against its dense model (eager and ONNX Runtime)",
        description="Time the dense and the decomposed model on this CPU in PyTorch eager mode and ONNX Runtime, "
        "for each batch size, with warm-up and repetitions (dense and decomposed interleaved), and report the "
        "median (min, max), the measured speed-up, the conv-MAC speed-up and their ratio.",
    )
    _add_model_arguments(bench)
    bench.add_argument("--dense-checkpoint", type=Path, help="weights for the dense model (default: random; latency does not depend on them)")
    bench.add_argument("--batches", type=int, nargs="+", default=[1, 8], help="batch sizes (default: 1 8)")
    bench.add_argument("--runtimes", nargs="+", choices=RUNTIMES, default=list(RUNTIMES), help="default: both")
    bench.add_argument("--threads", type=int, help="intra-op threads for both runtimes (default: torch's setting)")
    bench.add_argument("--warmup", type=int, default=10, help="warm-up calls (default 10)")
    bench.add_argument("--repeats", type=int, default=50, help="timed calls per model (default 50)")
    bench.add_argument("--no-fold-bn", action="store_true", help="keep BatchNorm layers (default: fold them, as deployed)")
    bench.add_argument("--json", type=Path, help="write the measurements as JSON here")
    bench.set_defaults(run=_cmd_bench)

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
    sweep.add_argument("--dataset", required=True, help="registered dataset to evaluate on")
    sweep.add_argument("--data-root", default="data", help="dataset directory")
    sweep.add_argument("--data-option", action="append", default=[], metavar="KEY=VALUE", help="dataset option (repeatable)")
    sweep.add_argument("--criteria", nargs="+", default=["energy:0.005", "energy:0.01", "energy:0.02", "energy:0.05", "energy:0.1"],
                       help="criteria to sweep (default: energy 0.005 to 0.1)")
    _add_decompose_arguments(sweep)
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

    models = commands.add_parser("models", help="list the registered models", description="List the registered models.")
    models.set_defaults(run=_cmd_models)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from .train import RunInterrupted, TrainingDiverged

    try:
        args.run(args)
    except RunInterrupted as stop:
        if os.environ.get("RANK", "0") == "0":
            print(f"trp {args.command}: {stop}", file=sys.stderr)
    except TrainingDiverged as error:
        print(f"trp {args.command}: training diverged: {error}", file=sys.stderr)
        return 3
    except (CliError, CheckpointError, ValueError, OSError, ExportMismatch) as error:
        print(f"trp {args.command}: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
