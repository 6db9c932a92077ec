"""Loading trusted-format pickles (the CIFAR batches) without running arbitrary code."""

from __future__ import annotations

import _codecs
import pickle
from pathlib import Path
from typing import Any

import numpy as np

try:  # numpy >= 2
    from numpy._core.multiarray import _reconstruct
    from numpy._core.numeric import _frombuffer
except ImportError:  # numpy 1.x
    from numpy.core.multiarray import _reconstruct
    from numpy.core.numeric import _frombuffer

__all__ = ["UnsafePickleError", "load_numpy_pickle"]

# The only callables a pickle of dicts, lists, bytes and numpy arrays needs: array
# reconstruction under numpy 1.x and 2.x module names, and ``_codecs.encode``, which
# protocol-2 pickles written by Python 3 use to rebuild ``bytes``.
_ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _codecs.encode,
}


class UnsafePickleError(ValueError):
    """A pickle asked for a global outside the numpy-array allow-list."""


class _NumpyUnpickler(pickle.Unpickler):
    def __init__(self, file: Any, path: Path) -> None:
        super().__init__(file, encoding="bytes")
        self._path = path

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[module, name]
        except KeyError:
            raise UnsafePickleError(
                f"refusing to load {self._path}: it references {module}.{name}, and only numpy arrays, "
                "dicts, lists and bytes are allowed; the file is not a genuine CIFAR batch, re-download it."
            ) from None


def load_numpy_pickle(path: Path) -> Any:
    """Unpickle ``path`` (``encoding="bytes"``, so Python 2 strings become ``bytes``),
    allowing only numpy array reconstruction; raise :class:`UnsafePickleError` otherwise."""
    with open(path, "rb") as f:
        try:
            return _NumpyUnpickler(f, path).load()
        except UnsafePickleError:
            raise
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as err:
            raise ValueError(
                f"cannot unpickle {path} ({err}); the file is corrupt or truncated, re-download it."
            ) from None
