"""Measured latency: the same input through a dense and a decomposed model, in PyTorch
eager mode and in ONNX Runtime, with warm-up and many repetitions."""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .counting import count_macs
from .export import export_onnx, ort_session

__all__ = ["Timing", "time_callable", "LatencyRow", "compare_latency", "RUNTIMES"]

RUNTIMES = ("eager", "onnxruntime")


@dataclass
class Timing:
    """Wall-clock milliseconds per call over ``repeats`` calls after ``warmup`` calls."""

    median_ms: float
    min_ms: float
    max_ms: float
    repeats: int


def time_callable(fn: Callable[[], object], warmup: int, repeats: int) -> Timing:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(1000 * (time.perf_counter() - start))
    return Timing(statistics.median(samples), min(samples), max(samples), repeats)


@dataclass
class LatencyRow:
    """Dense against decomposed for one runtime and batch size. ``measured_speedup`` is the
    ratio of medians; ``efficiency`` = measured speed-up / conv-MAC speed-up."""

    runtime: str
    batch: int
    threads: int
    dense: Timing
    decomposed: Timing
    mac_speedup: float

    @property
    def measured_speedup(self) -> float:
        return self.dense.median_ms / self.decomposed.median_ms

    @property
    def efficiency(self) -> float:
        return self.measured_speedup / self.mac_speedup

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "measured_speedup": self.measured_speedup, "efficiency": self.efficiency}


def _runner(runtime: str, model: nn.Module, example: torch.Tensor, threads: int, workdir: Path, tag: str) -> Callable[[], object]:
    if runtime == "eager":
        def run_eager() -> object:
            with torch.inference_mode():
                return model(example)

        return run_eager
    path = workdir / f"{tag}.onnx"
    if not path.exists():  # one export per model: its batch axis is dynamic
        export_onnx(model, example, path)
    session = ort_session(path, threads)
    feed = {session.get_inputs()[0].name: example.numpy()}
    return lambda: session.run(None, feed)


def compare_latency(
    dense: nn.Module,
    decomposed: nn.Module,
    input_size: Sequence[int],
    batches: Sequence[int] = (1, 8),
    runtimes: Sequence[str] = RUNTIMES,
    threads: int | None = None,
    warmup: int = 10,
    repeats: int = 50,
    log: Callable[[str], None] = print,
) -> list[LatencyRow]:
    """Measure both models (eval mode, CPU) for every runtime and batch size, alternating
    dense and decomposed measurements so that machine noise hits both alike.

    ``threads``: torch intra-op threads and ONNX Runtime intra-op threads (default: torch's
    current setting).
    """
    unknown = set(runtimes) - set(RUNTIMES)
    if unknown:
        raise ValueError(f"unknown runtime(s) {sorted(unknown)}; choose from {RUNTIMES}.")
    threads = threads or torch.get_num_threads()
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    dense, decomposed = dense.eval(), decomposed.eval()
    probe = torch.zeros(1, *input_size)
    mac_speedup = count_macs(dense, probe).conv_macs / max(count_macs(decomposed, probe).conv_macs, 1)
    rows = []
    try:
        with tempfile.TemporaryDirectory() as workdir:
            for runtime in runtimes:
                for batch in batches:
                    example = torch.randn(batch, *input_size)
                    log(f"timing {runtime}, batch {batch}, {threads} thread(s): {warmup} warm-up + {repeats} runs each ...")
                    dense_run = _runner(runtime, dense, example, threads, Path(workdir), "dense")
                    low_run = _runner(runtime, decomposed, example, threads, Path(workdir), "decomposed")
                    halves = [
                        (time_callable(dense_run, warmup, repeats // 2), time_callable(low_run, warmup, repeats // 2))
                        for _ in range(2)
                    ]
                    row = LatencyRow(
                        runtime, batch, threads, _merge([h[0] for h in halves]), _merge([h[1] for h in halves]), mac_speedup
                    )
                    log(
                        f"  dense {row.dense.median_ms:.2f} ms, decomposed {row.decomposed.median_ms:.2f} ms (median): "
                        f"measured {row.measured_speedup:.2f}x vs MAC {mac_speedup:.2f}x, ratio {row.efficiency:.2f}"
                    )
                    rows.append(row)
    finally:
        torch.set_num_threads(previous)
    return rows


def _merge(parts: list[Timing]) -> Timing:
    """Combine interleaved halves: the median of their medians, the extreme min and max."""
    return Timing(
        statistics.median(p.median_ms for p in parts), min(p.min_ms for p in parts), max(p.max_ms for p in parts),
        sum(p.repeats for p in parts),
    )
