"""One training epoch and one evaluation pass over in-memory image tensors."""

from __future__ import annotations

import math
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..data import ImageSplit, TensorLoader, augment_crop_flip, normalize
from .runtime import Runtime

__all__ = ["EpochStats", "TrainingDiverged", "train_epoch", "evaluate", "Batches"]


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


def _weights_finite(model: nn.Module) -> bool:
    """All parameters finite (one fused reduction, checked after every step: a step or a TRP
    projection can leave non-finite weights behind a finite loss)."""
    return bool(torch.stack([p.detach().isfinite().all() for p in model.parameters()]).all())


@dataclass
class EpochStats:
    """``lr``: the learning rate of the epoch's last step."""

    loss: float
    accuracy: float
    images_per_second: float
    seconds: float
    lr: float


@dataclass
class Batches:
    """How to turn stored uint8 images into model inputs on the run's device."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    device: torch.device
    channels_last: bool
    bf16: bool

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        x = normalize(images.to(self.device, non_blocking=True), self.mean, self.std)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def autocast(self):
        if not self.bf16:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)


def _progress(total: int, description: str, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=description, unit="batch", file=sys.stderr, dynamic_ncols=True, leave=False)


def train_epoch(
    model: nn.Module,
    loader: TensorLoader,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    batches: Batches,
    runtime: Runtime,
    augment_generator: torch.Generator | None,
    crop_padding: int,
    description: str,
    progress: bool,
) -> EpochStats:
    """Train one epoch; the scheduler steps every batch.

    Raises:
        TrainingDiverged: the loss is NaN or infinite (nothing of this epoch is saved).
    """
    model.train()
    bar = _progress(len(loader), description, progress and runtime.is_main)
    loss_sum = correct = seen = 0.0
    lr = optimizer.param_groups[0]["lr"]
    start = time.perf_counter()
    try:
        for step, (images, labels) in enumerate(loader):
            if augment_generator is not None:
                images = augment_crop_flip(images, crop_padding, augment_generator)
            x, y = batches.prepare(images), labels.to(batches.device, non_blocking=True)
            with batches.autocast():
                logits = model(x)
                loss = F.cross_entropy(logits, y)
            value = loss.item()
            if runtime.any_rank(not math.isfinite(value)):  # every rank stops together
                raise TrainingDiverged(f"the loss became non-finite ({value} on rank {runtime.rank}) at step {step + 1} of {description}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            lr = optimizer.param_groups[0]["lr"]
            optimizer.step()
            scheduler.step()
            if runtime.any_rank(not _weights_finite(model)):
                raise TrainingDiverged(f"the weights became non-finite at step {step + 1} of {description}")
            loss_sum += value * len(y)
            correct += (logits.argmax(1) == y).sum().item()
            seen += len(y)
            if bar is not None:
                elapsed = time.perf_counter() - start
                bar.set_postfix(
                    loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}",
                    lr=f"{lr:.2e}", img_s=f"{seen * runtime.world_size / elapsed:.0f}",
                )
                bar.update()
    finally:
        if bar is not None:
            bar.close()
    seconds = time.perf_counter() - start
    loss_sum, correct, seen = runtime.all_reduce_sum([loss_sum, correct, seen])
    return EpochStats(
        loss=loss_sum / max(seen, 1),
        accuracy=correct / max(seen, 1),
        images_per_second=seen / max(seconds, 1e-9),
        seconds=seconds,
        lr=lr,
    )


@torch.no_grad()
def evaluate(model: nn.Module, split: ImageSplit, batches: Batches, runtime: Runtime, batch_size: int) -> tuple[float, float]:
    """``(mean cross-entropy, top-1 accuracy)`` over the whole split. Under DDP each rank
    takes every ``world_size``-th image and the sums are all-reduced (no image counted twice)."""
    was_training = model.training
    model.eval()
    indices = torch.arange(runtime.rank, len(split), runtime.world_size)
    loss_sum = correct = 0.0
    for first in range(0, len(indices), batch_size):
        batch = indices[first : first + batch_size]
        x = batches.prepare(split.images[batch])  # index tensors also work for streamed images
        y = split.labels[batch].to(batches.device)
        with batches.autocast():
            logits = model(x)
        loss_sum += F.cross_entropy(logits.float(), y, reduction="sum").item()
        correct += (logits.argmax(1) == y).sum().item()
    model.train(was_training)
    loss_sum, correct, seen = runtime.all_reduce_sum([loss_sum, correct, float(len(indices))])
    return loss_sum / max(seen, 1), correct / max(seen, 1)
