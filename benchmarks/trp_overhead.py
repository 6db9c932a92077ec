"""Step-time overhead of TRP (projection every m steps + nuclear norm every step) over
plain SGD training, measured in one run with the two interleaved (this machine is noisy).

    python benchmarks/trp_overhead.py [--rounds 5] [--device cuda] [--out FILE]

Cases on the CPU: CIFAR ResNet-20 (batch 128, 32x32) with m = 20 and m = 1, and ImageNet
ResNet-50 weight shapes (batch 8 at 64x64, so that the step is cheap and the SVD share is
large: a pessimistic case). On a GPU: CIFAR ResNet-20 and ResNet-56 with each scheme, m = 20,
and the time of one SVD of every targeted weight on the GPU and, for comparison, on the CPU.
Random data; the figure is total TRP time / total plain time over
``rounds`` blocks of ``max(m, 20)`` steps each, alternating plain and TRP blocks, with the
lowest and highest ratio of one round's pair of blocks as a measure of the noise. Target:
at most 1.10 for ResNet-20 with m = 20. Writes ``benchmarks/results/trp_overhead.json``.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F

import trp
from trp.lowrank import batched_thin_svd
from trp import rank_training
from trp.rank_training import svds_on_host

RESULTS = Path(__file__).parent / "results" / "trp_overhead.json"
CASES = [
    {"model": "resnet20", "batch": 128, "size": 32, "period": 20},
    {"model": "resnet20", "batch": 128, "size": 32, "period": 1},
    {"model": "resnet50", "batch": 8, "size": 64, "period": 20},
]
GPU_CASES = [
    {"model": model, "batch": 128, "size": 32, "period": 20, "scheme": scheme}
    for model in ("resnet20", "resnet56") for scheme in ("channel", "spatial")
]


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def block(model, optimizer, images, labels, steps: int) -> float:
    _synchronize(images.device)
    start = time.perf_counter()
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(images), labels).backward()
        optimizer.step()
    _synchronize(images.device)
    return time.perf_counter() - start


def svd_ms(svds: Callable[[list[torch.Tensor]], list], matrices: list[torch.Tensor], repeats: int = 5) -> float:
    """Milliseconds for one call of ``svds(matrices)`` (after a warm-up call)."""
    svds(matrices)
    _synchronize(matrices[0].device)
    start = time.perf_counter()
    for _ in range(repeats):
        svds(matrices)
    _synchronize(matrices[0].device)
    return 1000 * (time.perf_counter() - start) / repeats


def svd_times(matrices: list[torch.Tensor]) -> dict:
    """One SVD of every matrix: on their device, on the CPU alone, and through the host as TRP
    does it (copies included), with the largest relative reconstruction error of the last."""
    host = [matrix.cpu() for matrix in matrices]
    errors = [
        float(torch.linalg.matrix_norm(u @ torch.diag_embed(s) @ vh - m).max() / torch.linalg.matrix_norm(m).max())
        for m, (u, s, vh) in zip(matrices, svds_on_host(matrices))
    ]
    return {
        "svd_ms_on_device": round(svd_ms(batched_thin_svd, matrices), 2),
        "svd_ms_on_cpu": round(svd_ms(batched_thin_svd, host), 2),
        "svd_ms_through_host": round(svd_ms(svds_on_host, matrices), 2),
        "svd_through_host_max_rel_error": max(errors),
    }


@contextmanager
def svds_where_the_weights_lie():
    """TRP with its per-step SVDs on the weights' device, as ``TRPConfig(svd_on_host=False)``
    runs them (and as trp did before they moved to the host), for the same model and handle."""
    through_host = rank_training.svds_on_host
    rank_training.svds_on_host = batched_thin_svd
    try:
        yield
    finally:
        rank_training.svds_on_host = through_host


def measure(case: dict, rounds: int, device: torch.device) -> dict:
    torch.manual_seed(0)
    plain = trp.models.create_model(case["model"], num_classes=10).train().to(device)
    regularized = copy.deepcopy(plain)
    images = torch.randn(case["batch"], 3, case["size"], case["size"], device=device)
    labels = torch.randint(0, 10, (case["batch"],), device=device)
    make = lambda m: torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)  # noqa: E731
    plain_opt, trp_opt = make(plain), make(regularized)
    scheme = case.get("scheme", "channel")
    decompose = trp.DecomposeConfig(scheme=scheme, decompose_linear=False)
    config = trp.TRPConfig(period=case["period"], nuclear_weight=3e-4, decompose=decompose)
    handle = trp.attach_trp(regularized, trp_opt, config)
    steps = max(case["period"], 20)
    block(plain, plain_opt, images, labels, 2)  # warm-up both paths
    block(regularized, trp_opt, images, labels, 2)
    plain_times, trp_times, device_svd_times = [], [], []
    for _ in range(rounds):
        plain_times.append(block(plain, plain_opt, images, labels, steps))
        trp_times.append(block(regularized, trp_opt, images, labels, steps))
        if device.type != "cpu":
            with svds_where_the_weights_lie():
                device_svd_times.append(block(regularized, trp_opt, images, labels, steps))
    plain_time, trp_time, total_steps = sum(plain_times), sum(trp_times), rounds * steps
    round_ratios = sorted(t / p for t, p in zip(trp_times, plain_times))
    matrices = [target.matrix(scheme).detach() for target in handle.targets]
    svds = {}
    if device.type != "cpu":
        svds = {
            "trp_svds_on_device_ms_per_step": round(1000 * sum(device_svd_times) / total_steps, 2),
            "ratio_svds_on_device": round(sum(device_svd_times) / plain_time, 3),
            **svd_times(matrices),
        }
    return {
        **case,
        "layers": len(handle.targets),
        "steps_each": total_steps,
        "plain_ms_per_step": round(1000 * plain_time / total_steps, 2),
        "trp_ms_per_step": round(1000 * trp_time / total_steps, 2),
        "ratio": round(trp_time / plain_time, 3),
        "round_ratio_min": round(round_ratios[0], 3),  # the spread between rounds shows the noise
        "round_ratio_max": round(round_ratios[-1], 3),
        **svds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default %(default)s)")
    parser.add_argument("--out", type=Path, help=f"result file (default {RESULTS.name}, or trp_overhead_cuda.json on a GPU)")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device}: no CUDA device is available here; use --device cpu.")
    out = args.out or (RESULTS if device.type == "cpu" else RESULTS.with_name("trp_overhead_cuda.json"))
    rows = []
    for case in CASES if device.type == "cpu" else GPU_CASES:
        row = measure(case, args.rounds, device)
        rows.append(row)
        print(
            f"{row['model']:<9} {row.get('scheme', 'channel'):<8} batch {row['batch']:>3} at {row['size']}x{row['size']}, m = {row['period']:>2}, "
            f"{row['layers']} layers: plain {row['plain_ms_per_step']:.1f} ms/step, TRP+Nu "
            f"{row['trp_ms_per_step']:.1f} ms/step, ratio {row['ratio']:.3f} "
            f"(rounds {row['round_ratio_min']:.3f} to {row['round_ratio_max']:.3f})"
        )
        if "svd_ms_on_device" in row:
            print(
                f"{'':<9} with every SVD on {device} instead: TRP+Nu {row['trp_svds_on_device_ms_per_step']:.1f} ms/step, "
                f"ratio {row['ratio_svds_on_device']:.3f}"
            )
            print(
                f"{'':<9} one SVD of every targeted weight: {row['svd_ms_on_device']:.1f} ms on {device}, "
                f"{row['svd_ms_on_cpu']:.1f} ms on the CPU, {row['svd_ms_through_host']:.1f} ms through the host "
                f"(copies included; relative error at most {row['svd_through_host_max_rel_error']:.1e})"
            )
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    result = {"torch": torch.__version__, "device": device_name, "threads": torch.get_num_threads(),
              "target_resnet20_m20": 1.10, "cases": rows}
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
