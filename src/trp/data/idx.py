"""Reading IDX files (the MNIST container format), plain or gzipped."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np
import torch

__all__ = ["read_idx"]

_UBYTE = 0x08  # IDX type code of unsigned bytes, the only one MNIST-style files use


def read_idx(path: Path, ndim: int) -> torch.Tensor:
    """Read an unsigned-byte IDX file with ``ndim`` dimensions into a uint8 tensor of its shape.

    Layout: bytes ``00 00 08 ndim``, then ``ndim`` big-endian uint32 sizes, then the data.
    ``path`` is decompressed first if its name ends with ``.gz``.

    Raises:
        ValueError: bad magic number, wrong ``ndim``, or a payload that does not match the sizes.
    """
    hint = "the file is corrupt or not an IDX file; re-download it."
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error) as err:
        raise ValueError(f"cannot decompress {path} ({err}); {hint}") from None
    magic = raw[:4]
    if len(magic) < 4 or magic[:2] != b"\0\0" or magic[2] != _UBYTE or magic[3] != ndim:
        raise ValueError(
            f"{path}: bad IDX magic number {magic.hex()}, expected 0000{_UBYTE:02x}{ndim:02x} "
            f"(unsigned bytes, {ndim} dimensions); {hint}"
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: truncated IDX header ({len(raw)} bytes, expected {header}); {hint}")
    shape = tuple(int(size) for size in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = header + int(np.prod(shape))
    if len(raw) != expected:
        raise ValueError(f"{path}: IDX file of shape {shape} should be {expected} bytes but is {len(raw)}; {hint}")
    return torch.frombuffer(bytearray(raw[header:]), dtype=torch.uint8).reshape(shape)
