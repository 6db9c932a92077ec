"""``trp decompose``, ``trp macs``, ``trp models``, ``trp export``, ``trp bench``: working on models."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

import torch

from ..checkpoint import load_state_dict_, read_checkpoint, save_checkpoint
from ..counting import count_macs
from ..data import ImageDataset, calibration_batches
from ..export import export_onnx, export_torchscript
from ..fold import fold_batchnorm_
from ..latency import RUNTIMES, compare_latency
from ..measured import decompose_measured_
from ..models import create_model, get_model_spec, list_models, model_options
from ..plan import RankPlan
from ..response_fit import decompose_on_data_, fit_record, fit_table
from ..surgery import decompose_
from ..target import ALLOCATE, FAMILIES, criterion_for_speedup, ranks_for_speedup
from .common import (
    CliError, add_data_arguments, add_decompose_arguments, add_model_arguments, check_calibration_size, check_fit_on_data,
    check_writable, decompose_config, load_data, load_model,
)

__all__ = ["add_parsers"]


def _cmd_decompose(args: argparse.Namespace) -> None:
    config = dataclasses.replace(decompose_config(args), ranks=_fixed_ranks(args.rank))
    check_fit_on_data(args, config)
    if args.fit_on_data and args.measured:
        raise CliError("--fit-on-data and --measured do not combine: run --measured alone to see which layers it "
                       "keeps dense, then --fit-on-data with --exclude for those layers.")
    if args.target_family != "energy" and args.target_speedup is None:
        raise CliError(f"--target-family {args.target_family} says how --target-speedup is reached: add "
                       "--target-speedup X, or drop --target-family.")
    if args.dataset is not None and not args.fit_on_data:
        raise CliError("--dataset is only read by --fit-on-data here: add --fit-on-data N, or drop --dataset.")
    check_writable(args.output, "--output")
    check_writable(args.report, "--report")
    dataset = load_data(args) if args.fit_on_data else None  # data errors before the slow work
    loaded = load_model(args, default_input_size=dataset.input_size if dataset else None)
    if not loaded.trained:
        print("note: no --checkpoint, so the weights are random: ranks and errors say little about a trained model.")
    example = torch.zeros(1, *loaded.input_size)
    calibration = _calibration(dataset, args.fit_on_data, loaded.input_size) if dataset else []
    if args.target_speedup is not None and args.target_family == ALLOCATE:
        allocated = ranks_for_speedup(loaded.model, config, example, args.target_speedup)
        config = allocated.config
        print(f"target {args.target_speedup:.2f}x: ranks allocated by energy per MAC give {allocated.speedup:.3f}x "
              f"({allocated.iterations} bisection steps)")
    elif args.target_speedup is not None:
        found = criterion_for_speedup(loaded.model, config, example, args.target_speedup, family=args.target_family)
        config = dataclasses.replace(config, criterion=found.criterion)
        print(f"target {args.target_speedup:.2f}x: {found.criterion} gives {found.speedup:.3f}x ({found.iterations} bisection steps)")
    described: dict[str, Any]
    if calibration:
        report, fits = decompose_on_data_(loaded.model, config, example, calibration)
        described = {**report.to_dict(), "fit_on_data": fit_record(fits, args.fit_on_data, dataset.name)}
    else:
        report = (decompose_measured_ if args.measured else decompose_)(loaded.model, config, example)
        described = report.to_dict()
    print(report.table())
    if calibration and report.decomposed:
        print(fit_table(fits, args.fit_on_data))
    if not report.decomposed:
        print("note: no layer was factorized (see the reasons above): the output equals the input model.")
    plan = RankPlan(loaded.plan.layers + report.plan.layers)
    if args.report is not None:
        args.report.write_text(json.dumps(described, indent=2) + "\n")
        print(f"wrote report {args.report}")
    if args.output is not None:
        save_checkpoint(args.output, loaded.model, plan, loaded.entry, metadata={"decomposition": described})
        print(f"wrote decomposed checkpoint {args.output} ({len(plan.layers)} factorized layers)")
    else:
        print("no --output given: nothing saved")


def _fixed_ranks(items: list[str]) -> dict[str, int]:
    """``--rank NAME=R`` options as a name-to-rank mapping."""
    ranks: dict[str, int] = {}
    for item in items:
        name, sep, value = item.rpartition("=")
        if not sep or not name or not value.isdigit() or int(value) < 1:
            raise CliError(f"cannot read --rank {item!r}: write NAME=R with a positive integer R, e.g. layer1.0.conv1=8.")
        if name in ranks:
            raise CliError(f"--rank gives {name!r} a rank twice: give each layer one --rank.")
        ranks[name] = int(value)
    return ranks


def _calibration(dataset: ImageDataset, images: int, input_size: tuple[int, ...]) -> list[torch.Tensor]:
    """``images`` random training images of ``dataset`` to fit to, checked against the model's input."""
    if tuple(dataset.input_size) != tuple(input_size):
        raise CliError(f"--dataset {dataset.name} has {'x'.join(map(str, dataset.input_size))} images but --input-size "
                       f"is {'x'.join(map(str, input_size))}: drop --input-size (it then follows the dataset) or "
                       "make the two agree.")
    check_calibration_size(dataset, images)
    return calibration_batches(dataset, images)


def _cmd_macs(args: argparse.Namespace) -> None:
    check_writable(args.json, "--json")
    loaded = load_model(args)
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
        options = ", ".join(model_options(name))
        print(f"{name:<12} input {spec.input_size}  classes {spec.num_classes}  {spec.builder.__doc__ or ''}  "
              f"options: {options}")


def _cmd_export(args: argparse.Namespace) -> None:
    if args.onnx is None and args.torchscript is None:
        raise CliError("name at least one output: --onnx PATH and/or --torchscript PATH.")
    for path, option in ((args.onnx, "--onnx"), (args.torchscript, "--torchscript")):
        check_writable(path, option)
    loaded = load_model(args)
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
    check_writable(args.json, "--json")
    loaded = load_model(args)
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


def add_parsers(commands: argparse._SubParsersAction) -> None:
    """Register these commands on the ``trp`` parser."""
    decompose = commands.add_parser(
        "decompose",
        help="factorize a model's conv/linear layers; print a per-layer table; save a decomposed checkpoint",
        description="Factorize the conv and linear layers of a registered model (optionally with weights "
        "from --checkpoint) by truncated SVD, print what each layer became, and save the result with "
        "its rank plan. With --fit-on-data N --dataset NAME the factors (same ranks) are fitted to each "
        "layer's responses on N training images instead: better for a net that was not trained with TRP.",
    )
    add_model_arguments(decompose)
    add_decompose_arguments(decompose)
    decompose.add_argument("--criterion", default="energy:0.02",
                           help="rank criterion KIND:VALUE: energy:E (prune fraction E of the singular-value "
                           "energy), value:V (drop singular values < V), rank:R, fraction:F; default: energy:0.02")
    decompose.add_argument("--rank", action="append", default=[], metavar="NAME=R",
                           help="fix the rank of the layer NAME to R, whatever the criterion (repeatable)")
    decompose.add_argument("--target-speedup", type=float, metavar="X",
                           help="instead of --criterion's value: find the ranks that give X-fold fewer conv MACs")
    decompose.add_argument("--target-family", choices=(*FAMILIES, ALLOCATE), default="energy",
                           help="how --target-speedup finds them: one energy e or one rank fraction for every layer, "
                           f"or {ALLOCATE!r}: a rank per conv layer, keeping the singular values that hold the most "
                           "energy per MAC over the whole net; default: energy")
    decompose.add_argument("--measured", action="store_true",
                           help="keep a layer dense unless its factorized form is measured faster here (PyTorch eager, CPU)")
    add_data_arguments(decompose, required=False)
    decompose.add_argument("--output", "-o", type=Path, help="write the decomposed checkpoint here")
    decompose.add_argument("--report", type=Path, help="write the per-layer report as JSON here")
    decompose.set_defaults(run=_cmd_decompose)

    macs = commands.add_parser(
        "macs",
        help="count MACs and parameters, per layer and in total",
        description="Count multiply-accumulates (1 MAC = 1 multiply + 1 add) per example and parameters of a "
        "registered model or a (decomposed) checkpoint, by a forward pass with hooks.",
    )
    add_model_arguments(macs)
    macs.add_argument("--totals-only", action="store_true", help="print only the totals")
    macs.add_argument("--json", type=Path, help="also write the counts as JSON here")
    macs.set_defaults(run=_cmd_macs)

    models = commands.add_parser("models", help="list the registered models", description="List the registered models.")
    models.set_defaults(run=_cmd_models)

    export = commands.add_parser(
        "export",
        help="export a dense or decomposed model to ONNX and/or TorchScript, checked against PyTorch",
        description="Export to ONNX (opset 17 or newer, dynamic batch) and/or TorchScript, then run the export "
        "(ONNX Runtime on the CPU; the reloaded TorchScript module) and compare with PyTorch: the command fails "
        "when the maximum relative error exceeds --tolerance.",
    )
    add_model_arguments(export)
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
    add_model_arguments(bench)
    bench.add_argument("--dense-checkpoint", type=Path, help="weights for the dense model (default: random; latency does not depend on them)")
    bench.add_argument("--batches", type=int, nargs="+", default=[1, 8], help="batch sizes (default: 1 8)")
    bench.add_argument("--runtimes", nargs="+", choices=RUNTIMES, default=list(RUNTIMES), help="default: both")
    bench.add_argument("--threads", type=int, help="intra-op threads for both runtimes (default: torch's setting)")
    bench.add_argument("--warmup", type=int, default=10, help="warm-up calls (default 10)")
    bench.add_argument("--repeats", type=int, default=50, help="timed calls per model (default 50)")
    bench.add_argument("--no-fold-bn", action="store_true", help="keep BatchNorm layers (default: fold them, as deployed)")
    bench.add_argument("--json", type=Path, help="write the measurements as JSON here")
    bench.set_defaults(run=_cmd_bench)
