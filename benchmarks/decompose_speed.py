"""Time ``trp.decompose_`` on ImageNet ResNet-50 (random weights) on this machine.

    python benchmarks/decompose_speed.py [--model resnet50] [--repeats 5]

Prints and saves ``benchmarks/results/decompose_speed.json``: wall-clock seconds of the
whole call (shape tracing forward pass, one truncated SVD per layer, building and swapping
the layers) for both schemes, the first (cold) call and the median of the warm repeats.
Target: under 2 s for ResNet-50 on 2 CPU cores. ``keep_unprofitable=True`` so that every
layer is factorized and timed (random weights are full rank, so by default most layers
would stay dense and the figure would flatter the tool).
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

import trp

RESULTS = Path(__file__).parent / "results" / "decompose_speed.json"
TARGET_SECONDS = 2.0


def time_once(model_name: str, scheme: str) -> tuple[float, int]:
    torch.manual_seed(0)
    model = trp.models.create_model(model_name).eval()
    example = torch.randn(1, *trp.models.get_model_spec(model_name).input_size)
    config = trp.DecomposeConfig(scheme=scheme, criterion=trp.EnergyCriterion(0.02), keep_unprofitable=True)
    start = time.perf_counter()
    report = trp.decompose_(model, config, example)
    return time.perf_counter() - start, len(report.decomposed)


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
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
