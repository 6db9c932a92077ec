"""Export a dense or decomposed model to ONNX and TorchScript, and check each export
against the PyTorch model's output.

The check reports the maximum relative error ``max |y_export - y_torch| / max |y_torch|``
on the example input and fails above ``tolerance`` (default 1e-4).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

__all__ = ["ExportMismatch", "MIN_OPSET", "export_onnx", "export_torchscript", "max_relative_error", "onnx_outputs", "ort_session"]

MIN_OPSET = 17


class ExportMismatch(RuntimeError):
    """An exported model does not reproduce the PyTorch output within tolerance."""


def max_relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """``max |actual - expected| / max |expected|`` (0 when both are all zero)."""
    scale = float(expected.abs().max())
    difference = float((actual.double() - expected.double()).abs().max())
    return difference / scale if scale > 0 else difference


def _check_writable(path: Path) -> None:
    if path.is_dir() or not path.parent.is_dir():
        raise ValueError(f"cannot write {path}: give a file name in an existing directory.")


def _max_opset() -> int:
    from torch.onnx import _constants

    return int(getattr(_constants, "ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET", _constants.ONNX_MAX_OPSET))


def onnx_outputs(path: Path, example: torch.Tensor, threads: int | None = None) -> torch.Tensor:
    """Run the ONNX file with ONNX Runtime on the CPU."""
    session = ort_session(path, threads)
    return torch.from_numpy(session.run(None, {session.get_inputs()[0].name: example.cpu().numpy()})[0])


def ort_session(path: Path, threads: int | None = None):
    """An ONNX Runtime CPU session (``threads``: intra-op threads; ``None`` = its default)."""
    try:
        import onnxruntime
    except ImportError:
        raise ValueError("ONNX checks need onnxruntime: pip install onnxruntime (or trp's 'deploy' extra).") from None
    options = onnxruntime.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def export_onnx(
    model: nn.Module, example: torch.Tensor, path: str | Path, opset: int = MIN_OPSET, tolerance: float = 1e-4
) -> float:
    """Write ``model`` (in eval mode) as ONNX with a dynamic batch axis, then run it with
    ONNX Runtime and compare. Returns the maximum relative error.

    Raises:
        ValueError: an opset outside what this exporter supports, an unwritable path,
            missing onnx/onnxruntime.
        ExportMismatch: the error exceeds ``tolerance``.
    """
    path = Path(path)
    _check_writable(path)
    highest = _max_opset()
    if not MIN_OPSET <= opset <= highest:
        raise ValueError(f"opset {opset} is not available: this exporter writes opsets {MIN_OPSET} to {highest}.")
    model = model.eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation chatter
        torch.onnx.export(
            model, (example,), str(path), opset_version=opset, dynamo=False,
            input_names=["input"], output_names=["output"],
            dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
        )
        expected = model(example)
    error = max_relative_error(onnx_outputs(path, example), expected.cpu())
    if error > tolerance:
        raise ExportMismatch(f"ONNX Runtime output differs from PyTorch by {error:.2e} (relative), above {tolerance:.0e}.")
    return error


def export_torchscript(model: nn.Module, example: torch.Tensor, path: str | Path, tolerance: float = 1e-4) -> float:
    """Trace ``model`` (eval mode) to TorchScript, save it, reload it and compare.
    Returns the maximum relative error; raises :class:`ExportMismatch` above ``tolerance``."""
    path = Path(path)
    _check_writable(path)
    model = model.eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, (example,))
        traced.save(str(path))
        reloaded = torch.jit.load(str(path), map_location=example.device)
        error = max_relative_error(reloaded(example), model(example))
    if error > tolerance:
        raise ExportMismatch(f"TorchScript output differs from PyTorch by {error:.2e} (relative), above {tolerance:.0e}.")
    return error
