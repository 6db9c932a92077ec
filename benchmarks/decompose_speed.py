"""Time ``trp.decompose_`` on ImageNet ResNet-50 (random weights) on this machine.

    python benchmarks/decompose_speed.py [--model resnet50] [--repeats 5]

Prints and saves ``benchmarks/results/decompose_speed.json``: wall-clock seconds of the
whole call (shape tracing forward pass, one truncated SVD per layer, building and swapping
the layers) for both schemes, the first (cold) call and the median of the warm repeats.
Target: under 2 s for ResNet-50 on 2 CPU cores. ``keep_unprofitable=True`` so that every
layer is factorized and timed (random weights are full rank, so by default most layers
would stay dense and the figure would flatter the tool).

It also times trp's SVD (``trp.lowrank.thin_svd``, through the Gram matrix) against
LAPACK's (``torch.linalg.svd``, thin, float32) on the conv matrices of CIFAR ResNet-20 and
ImageNet ResNet-50 under each scheme, batched by shape as trp batches them: per distinct
shape the ratio of their median times, and the ratio of their totals over all layers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch
from torch import nn

import trp
from trp.lowrank import thin_svd, weight_to_matrix

RESULTS = Path(__file__).parent / "results" / "decompose_speed.json"
TARGET_SECONDS = 2.0
SVD_MODELS = ("resnet20", "resnet50")


def time_once(model_name: str, scheme: str) -> tuple[float, int]:
    torch.manual_seed(0)
    model = trp.models.create_model(model_name).eval()
    example = torch.randn(1, *trp.models.get_model_spec(model_name).input_size)
    config = trp.DecomposeConfig(scheme=scheme, criterion=trp.EnergyCriterion(0.02), keep_unprofitable=True)
    start = time.perf_counter()
    report = trp.decompose_(model, config, example)
    return time.perf_counter() - start, len(report.decomposed)


def _median_seconds(function, matrix: torch.Tensor, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function(matrix)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def svd_speedups(model_name: str, scheme: str, repeats: int) -> dict[str, object]:
    """LAPACK SVD time / trp SVD time on the model's conv matrices under ``scheme``, each
    shape (``"m x k"``) as one batch of as many random matrices as the model has layers of it,
    and for all layers together."""
    model = trp.models.create_model(model_name)
    counts: dict[tuple[int, int], int] = {}
    for module in model.modules():
        if isinstance(module, nn.Conv2d) and module.groups == 1:
            shape = tuple(weight_to_matrix(module.weight.detach(), scheme).shape[-2:])
            counts[shape] = counts.get(shape, 0) + 1
    per_shape, total_trp, total_lapack = {}, 0.0, 0.0
    for (rows, cols), count in sorted(counts.items()):
        batch = torch.randn(count, rows, cols)
        ours = _median_seconds(thin_svd, batch, repeats)
        lapack = _median_seconds(lambda m: torch.linalg.svd(m, full_matrices=False), batch, repeats)
        per_shape[f"{rows} x {cols}"] = {"layers": count, "trp_ms": round(1e3 * ours, 3),
                                         "lapack_ms": round(1e3 * lapack, 3), "speedup": round(lapack / ours, 2)}
        total_trp, total_lapack = total_trp + ours, total_lapack + lapack
    ratios = [entry["speedup"] for entry in per_shape.values()]
    return {"per_shape": per_shape, "min_speedup": min(ratios), "max_speedup": max(ratios),
            "total_speedup": round(total_lapack / total_trp, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    results = {
        "model": args.model,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "target_seconds": TARGET_SECONDS,
        "schemes": {},
        "svd_vs_lapack": {},
    }
    for scheme in ("channel", "spatial"):
        cold, layers = time_once(args.model, scheme)
        warm = [time_once(args.model, scheme)[0] for _ in range(args.repeats)]
        entry = {
            "layers_factorized": layers,
            "cold_seconds": round(cold, 3),
            "warm_median_seconds": round(statistics.median(warm), 3),
            "warm_min_seconds": round(min(warm), 3),
            "warm_max_seconds": round(max(warm), 3),
            "meets_target": statistics.median(warm) < TARGET_SECONDS,
        }
        results["schemes"][scheme] = entry
        print(
            f"{args.model} {scheme:<8} {layers} layers: cold {cold:.2f} s, warm median "
            f"{entry['warm_median_seconds']:.2f} s (min {entry['warm_min_seconds']:.2f}, max "
            f"{entry['warm_max_seconds']:.2f}) on {results['threads']} threads; target < {TARGET_SECONDS} s: "
            f"{'met' if entry['meets_target'] else 'missed'}"
        )
    for model_name in SVD_MODELS:
        for scheme in ("channel", "spatial"):
            svd = svd_speedups(model_name, scheme, args.repeats)
            results["svd_vs_lapack"].setdefault(model_name, {})[scheme] = svd
            print(f"{model_name} {scheme:<8} LAPACK SVD time / trp SVD time over {len(svd['per_shape'])} matrix "
                  f"shapes: {svd['min_speedup']:.2f} to {svd['max_speedup']:.2f}, {svd['total_speedup']:.2f} in total")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
