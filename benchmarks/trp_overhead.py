"""Step-time overhead of TRP (projection every m steps + nuclear norm every step) over
plain SGD training, measured in one run with the two interleaved (this machine is noisy).

    python benchmarks/trp_overhead.py [--rounds 5]

Cases: CIFAR ResNet-20 (batch 128, 32x32) with m = 20 and m = 1, and ImageNet ResNet-50
weight shapes (batch 8 at 64x64, so that the step is cheap and the SVD share is large: a
pessimistic case). Random data; the figure is total TRP time / total plain time over
``rounds`` blocks of ``max(m, 20)`` steps each, alternating plain and TRP blocks, with the
lowest and highest ratio of one round's pair of blocks as a measure of the noise. Target:
at most 1.10 for ResNet-20 with m = 20. Writes ``benchmarks/results/trp_overhead.json``.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import trp

RESULTS = Path(__file__).parent / "results" / "trp_overhead.json"
CASES = [
    {"model": "resnet20", "batch": 128, "size": 32, "period": 20},
    {"model": "resnet20", "batch": 128, "size": 32, "period": 1},
    {"model": "resnet50", "batch": 8, "size": 64, "period": 20},
]


def block(model, optimizer, images, labels, steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(images), labels).backward()
        optimizer.step()
    return time.perf_counter() - start


def measure(case: dict, rounds: int) -> dict:
    torch.manual_seed(0)
    plain = trp.models.create_model(case["model"], num_classes=10).train()
    regularized = copy.deepcopy(plain)
    images = torch.randn(case["batch"], 3, case["size"], case["size"])
    labels = torch.randint(0, 10, (case["batch"],))
    make = lambda m: torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)  # noqa: E731
    plain_opt, trp_opt = make(plain), make(regularized)
    config = trp.TRPConfig(period=case["period"], nuclear_weight=3e-4, decompose=trp.DecomposeConfig(decompose_linear=False))
    handle = trp.attach_trp(regularized, trp_opt, config)
    steps = max(case["period"], 20)
    block(plain, plain_opt, images, labels, 2)  # warm-up both paths
    block(regularized, trp_opt, images, labels, 2)
    plain_times, trp_times = [], []
    for _ in range(rounds):
        plain_times.append(block(plain, plain_opt, images, labels, steps))
        trp_times.append(block(regularized, trp_opt, images, labels, steps))
    plain_time, trp_time, total_steps = sum(plain_times), sum(trp_times), rounds * steps
    round_ratios = sorted(t / p for t, p in zip(trp_times, plain_times))
    return {
        **case,
        "layers": len(handle.targets),
        "steps_each": total_steps,
        "plain_ms_per_step": round(1000 * plain_time / total_steps, 2),
        "trp_ms_per_step": round(1000 * trp_time / total_steps, 2),
        "ratio": round(trp_time / plain_time, 3),
        "round_ratio_min": round(round_ratios[0], 3),  # the spread between rounds shows the noise
        "round_ratio_max": round(round_ratios[-1], 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    rows = []
    for case in CASES:
        row = measure(case, args.rounds)
        rows.append(row)
        print(
            f"{row['model']:<9} batch {row['batch']:>3} at {row['size']}x{row['size']}, m = {row['period']:>2}, "
            f"{row['layers']} layers: plain {row['plain_ms_per_step']:.1f} ms/step, TRP+Nu "
            f"{row['trp_ms_per_step']:.1f} ms/step, ratio {row['ratio']:.3f} "
            f"(rounds {row['round_ratio_min']:.3f} to {row['round_ratio_max']:.3f})"
        )
    result = {"torch": torch.__version__, "threads": torch.get_num_threads(), "target_resnet20_m20": 1.10, "cases": rows}
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
