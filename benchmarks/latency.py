"""Latency of decomposed against dense models on this machine's CPU: measured speed-up
against conv-MAC speed-up, in PyTorch eager mode and ONNX Runtime.

    python benchmarks/latency.py [--repeats 30] [--threads 2]

CIFAR ResNet-20 (32x32) and ImageNet ResNet-18 (224x224), both schemes, at the rank
fraction that the target mode (trp.target) finds for 2x and 3x conv-MAC speed-up.
Weights are random: latency does not depend on their values, and the fraction criterion
gives every layer the same share of its full rank. BatchNorm is folded into the convs of
both models before timing, as deployed. Writes benchmarks/results/latency.json and the
latency section of benchmarks/RESULTS.md (between its LATENCY markers).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import platform
from pathlib import Path

import torch

import trp
from trp.fold import fold_batchnorm_
from trp.latency import compare_latency
from trp.measured import best_ms
from trp.target import criterion_for_speedup

from results_markdown import RESULTS_MD, replace_section

HERE = Path(__file__).parent
RESULTS_JSON = HERE / "results" / "latency.json"
CASES = [("resnet20", (1, 32)), ("resnet18", (1, 8))]
TARGETS = (2.0, 3.0)


def measure(model_name: str, batches: tuple[int, ...], scheme: str, target: float, args: argparse.Namespace) -> list[dict]:
    torch.manual_seed(0)
    spec = trp.models.get_model_spec(model_name)
    dense = trp.models.create_model(model_name).eval()
    example = torch.zeros(1, *spec.input_size)
    config = trp.DecomposeConfig(scheme=scheme, decompose_linear=False)
    found = criterion_for_speedup(dense, config, example, target, family="fraction")
    decomposed = copy.deepcopy(dense)
    report = trp.decompose_(decomposed, dataclasses.replace(config, criterion=found.criterion), example)
    slower = slower_layers(dense, decomposed, [layer.name for layer in report.decomposed], example)
    fold_batchnorm_(dense)
    fold_batchnorm_(decomposed)
    print(f"{model_name} {scheme} target {target}x: fraction {found.criterion.fraction:.3f}, conv-MAC speed-up "
          f"{report.conv_speedup:.2f}x; {len(slower)} of {len(report.decomposed)} factorized layers slower alone (eager, batch 1)")
    rows = compare_latency(dense, decomposed, spec.input_size, batches=batches, threads=args.threads,
                           warmup=args.warmup, repeats=args.repeats)
    return [
        {"model": model_name, "scheme": scheme, "target": target, "fraction": found.criterion.fraction,
         "layers_factorized": len(report.decomposed), "layers_slower_eager_batch1": slower, **row.to_dict()}
        for row in rows
    ]


def slower_layers(dense: torch.nn.Module, decomposed: torch.nn.Module, names: list[str], example: torch.Tensor) -> list[str]:
    """Factorized layers that are not faster than their dense layer on their own input (PyTorch
    eager, batch 1, fastest of 15 runs: the measured mode's test)."""
    shapes = {layer.name: layer.input_shapes for layer in trp.count_macs(dense, example).layers}
    return [
        name for name in names
        if sum(best_ms(decomposed.get_submodule(name), s, 3, 15) for s in shapes[name])
        >= sum(best_ms(dense.get_submodule(name), s, 3, 15) for s in shapes[name])
    ]


def markdown(rows: list[dict], meta: dict) -> str:
    lines = [
        "## Latency: measured against conv-MAC speed-up",
        "",
        f"Produced by `python benchmarks/latency.py` (torch {meta['torch']}, {meta['threads']} threads, "
        f"{meta['machine']}, no GPU); random weights, BatchNorm folded in both models; medians of "
        f"{meta['repeats']} timed runs after {meta['warmup']} warm-up runs, dense and decomposed interleaved.",
        "",
        "| model | scheme | target | MAC speed-up | runtime | batch | dense ms | decomposed ms | measured speed-up | measured / MAC |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['scheme']} | {r['target']:.0f}x | {r['mac_speedup']:.2f}x | {r['runtime']} | {r['batch']} | "
            f"{r['dense']['median_ms']:.2f} | {r['decomposed']['median_ms']:.2f} | {r['measured_speedup']:.2f}x | "
            f"{r['efficiency']:.2f} |"
        )
    met = sum(r["efficiency"] >= 0.8 for r in rows)
    lines += ["", f"Rows at or above the 0.8 target: {met} of {len(rows)}.", "",
              "Factorized layers that are not faster than their dense layer when timed alone (eager, batch 1):", ""]
    seen = set()
    for r in rows:
        key = (r["model"], r["scheme"], r["target"])
        if key not in seen:
            seen.add(key)
            names = ", ".join(r["layers_slower_eager_batch1"]) or "none"
            lines.append(f"- {r['model']} {r['scheme']} {r['target']:.0f}x: {len(r['layers_slower_eager_batch1'])} of "
                         f"{r['layers_factorized']} ({names})")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    rows = []
    for model_name, batches in CASES:
        for scheme in ("channel", "spatial"):
            for target in TARGETS:
                rows += measure(model_name, batches, scheme, target, args)
    meta = {"torch": torch.__version__, "threads": args.threads, "machine": platform.machine(),
            "repeats": args.repeats, "warmup": args.warmup}
    RESULTS_JSON.write_text(json.dumps({**meta, "rows": rows}, indent=2) + "\n")
    section = markdown(rows, meta)
    replace_section("LATENCY", section)
    print(section)
    print(f"wrote {RESULTS_JSON} and {RESULTS_MD}")


if __name__ == "__main__":
    main()
