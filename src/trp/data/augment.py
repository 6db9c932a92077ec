"""Batched, vectorized augmentation and normalization of in-memory image tensors."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = ["augment_crop_flip", "normalize"]


def augment_crop_flip(images: torch.Tensor, padding: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random crop with zero padding plus random horizontal flip, drawn independently per image.

    Each image is padded by ``padding`` zero pixels on every side, cropped back to its
    ``H x W`` at a uniformly random offset in ``[0, 2 * padding]`` per axis, and mirrored
    left-right with probability 1/2. One ``gather`` over the flattened pixels does the whole
    batch on ``images.device``.

    Args:
        images: ``(B, C, H, W)`` tensor of any dtype (uint8 or float).
        padding: pixels of zero padding per side, ``>= 0``.
        generator: source of randomness; its device may differ from ``images.device``.

    Returns:
        ``(B, C, H, W)`` tensor of ``images.dtype`` on ``images.device``.
    """
    if images.dim() != 4:
        raise ValueError(f"images must be (B, C, H, W), got shape {tuple(images.shape)}.")
    if padding < 0:
        raise ValueError(f"padding must be >= 0, got {padding}.")
    batch, channels, height, width = images.shape
    device = images.device
    draw_device = generator.device if generator is not None else device
    top = torch.randint(0, 2 * padding + 1, (batch, 1, 1), generator=generator, device=draw_device).to(device)
    left = torch.randint(0, 2 * padding + 1, (batch, 1, 1), generator=generator, device=draw_device).to(device)
    flip = (torch.rand((batch, 1, 1), generator=generator, device=draw_device) < 0.5).to(device)
    columns = torch.arange(width, device=device)
    rows = top + torch.arange(height, device=device).view(1, height, 1)  # (B, H, 1) rows of the padded image
    cols = left + torch.where(flip, width - 1 - columns, columns)  # (B, 1, W) columns, mirrored if flipped
    source = (rows * (width + 2 * padding) + cols).view(batch, 1, height * width)
    padded = F.pad(images, (padding, padding, padding, padding)) if padding else images
    return padded.flatten(2).gather(2, source.expand(batch, channels, height * width)).view_as(images)


def normalize(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """``(images / 255 - mean) / std`` per channel.

    Args:
        images: ``(B, C, H, W)`` uint8 tensor, pixel values 0..255.
        mean, std: ``C`` floats in [0, 1] units, e.g. ``ImageDataset.mean`` / ``.std``.

    Returns:
        ``(B, C, H, W)`` float32 tensor on ``images.device``.
    """
    if images.dim() != 4 or images.dtype != torch.uint8:
        raise ValueError(
            f"images must be a (B, C, H, W) uint8 tensor, got {images.dtype} of shape {tuple(images.shape)}."
        )
    if len(mean) != images.shape[1] or len(std) != images.shape[1]:
        raise ValueError(
            f"mean and std need one value per channel ({images.shape[1]}), got {len(mean)} and {len(std)}."
        )
    std_t = torch.tensor(std, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
    mean_t = torch.tensor(mean, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
    return images.float().mul_(1 / (255 * std_t)).sub_(mean_t / std_t)
