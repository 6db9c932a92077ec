"""Decompose with factors fitted to the layers' responses on data, not to the weights alone.

The channel scheme's truncated SVD keeps ``W_r = U_r U_r^T W``: it projects each output
vector ``y = W x`` (one per position, ``n`` channels) onto the top-``r`` left singular
vectors of the weight, whatever inputs the layer actually sees. With calibration data the
best rank-``r`` projection is instead onto the top-``r`` eigenvectors ``P`` of the output
second moment ``E[y y^T]`` (``y`` without the bias): it minimizes ``E||y - P P^T y||^2``
over every rank-``r`` linear map of ``y`` (Eckart–Young on the responses). This is the
linear solution of Zhang et al. (2015, "Accelerating very deep convolutional networks for
classification and detection"), uncentered (so no new bias is needed, and bias-free convs
followed by BatchNorm stay bias-free), with each layer fitted to the dense net's own
responses (no asymmetric or nonlinear refinement).

The factorized architecture is the one :func:`trp.decompose_` builds, at the same ranks
(chosen by the config's criterion on the weights): only the factors differ, so a fitted net
saves, loads and exports like any other and its MACs are unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from .config import DecomposeConfig
from .layers import ChannelWiseConv2d, FactorizedLayer, LowRankLinear
from .lowrank import thin_svd
from .report import DecompositionReport
from .surgery import FilterFn, decompose_, factorizable_layers

__all__ = ["LayerFit", "decompose_on_data_", "response_moments"]


@dataclass
class LayerFit:
    """How well one layer's rank-``rank`` factors reproduce its responses on the
    calibration data: ``E||y - y_r||^2 / E||y||^2`` (``y`` the dense layer's output without
    bias), for the weight's truncated SVD and for the fitted factors (never larger)."""

    name: str
    rank: int
    svd_error: float
    fitted_error: float


def _first_tensor(batch: torch.Tensor | tuple | list) -> torch.Tensor:
    return batch[0] if isinstance(batch, (tuple, list)) else batch


def response_moments(
    model: nn.Module, layers: dict[str, nn.Module], calibration: Iterable[torch.Tensor | tuple | list]
) -> dict[str, torch.Tensor]:
    """``E[y y^T]`` per layer, float64 ``(out, out)``, over every output position of every
    calibration batch; ``y`` is the layer's output minus its bias. ``model`` runs in eval
    mode without gradients; a batch may be a tensor or a tuple whose first item is the input.

    Raises:
        ValueError: no batch, or a layer that never ran.
    """
    sums = {name: None for name in layers}
    counts = dict.fromkeys(layers, 0)

    def hook(name: str):
        def record(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            y = output.detach().double()
            if isinstance(module, nn.Conv2d):
                y = y.movedim(1, -1)  # (B, H, W, n): channels last, like a linear layer's output
            if module.bias is not None:
                y = y - module.bias.detach().double()
            rows = y.reshape(-1, y.shape[-1])  # one row per position (or per token)
            moment = rows.T @ rows
            sums[name] = moment if sums[name] is None else sums[name] + moment
            counts[name] += rows.shape[0]

        return record

    handles = [module.register_forward_hook(hook(name)) for name, module in layers.items()]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for batch in calibration:
                model(_first_tensor(batch))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    if not any(counts.values()):
        raise ValueError("the calibration data yielded no batch: pass at least one input batch.")
    silent = [name for name, count in counts.items() if count == 0]
    if silent:
        raise ValueError(f"layers {silent} did not run on the calibration data, so they cannot be fitted to it.")
    return {name: sums[name] / counts[name] for name in layers}


def _projection_error(moment: torch.Tensor, basis: torch.Tensor) -> float:
    """``E||y - Q Q^T y||^2 / E||y||^2`` from ``moment = E[y y^T]`` (blocks ``(g, m, m)``)
    and orthonormal ``basis`` ``Q`` ``(g, m, r)``."""
    total = moment.diagonal(dim1=-2, dim2=-1).sum()
    kept = (basis.transpose(-2, -1) @ moment @ basis).diagonal(dim1=-2, dim2=-1).sum()
    return float((total - kept).clamp_min(0.0) / total) if total > 0 else 0.0


def _group_blocks(moment: torch.Tensor, groups: int) -> torch.Tensor:
    """The ``groups`` diagonal blocks ``(g, n/g, n/g)`` of ``moment``: a grouped layer's
    outputs in group ``i`` depend only on its own filters."""
    size = moment.shape[0] // groups
    return torch.stack([moment[i * size : (i + 1) * size, i * size : (i + 1) * size] for i in range(groups)])


def _refit(layer: FactorizedLayer, dense_matrix: torch.Tensor, moment: torch.Tensor) -> tuple[float, float]:
    """Replace ``layer``'s factors by the response-fitted ones; returns the relative response
    errors (truncated SVD, fitted)."""
    groups = dense_matrix.shape[0]
    blocks = _group_blocks(moment, groups)
    matrix = dense_matrix.double()
    eigenvalues, eigenvectors = torch.linalg.eigh(blocks)
    basis = eigenvectors.flip(-1)[..., : layer.rank]  # top-r response directions, (g, m, r)
    svd_basis = thin_svd(matrix)[0][..., : layer.rank]
    # Balance the two factors (as the SVD path does) through the SVD of the small P^T W.
    u, s, vh = thin_svd(basis.transpose(-2, -1) @ matrix)
    left = (basis @ u) * s.sqrt().unsqueeze(-2)
    right = s.sqrt().unsqueeze(-1) * vh
    with torch.no_grad():
        layer._set_factors(left.to(dense_matrix.dtype), right.to(dense_matrix.dtype))
    return _projection_error(blocks, svd_basis), _projection_error(blocks, basis)


def decompose_on_data_(
    model: nn.Module,
    config: DecomposeConfig,
    example_input: torch.Tensor | tuple[torch.Tensor, ...],
    calibration: Iterable[torch.Tensor | tuple | list],
    filter_fn: FilterFn | None = None,
) -> tuple[DecompositionReport, list[LayerFit]]:
    """:func:`trp.decompose_`, then refit every factorized layer to its responses on
    ``calibration`` (the same ranks and architecture, new factors; see the module docstring).

    Args:
        model, config, example_input, filter_fn: as for :func:`trp.decompose_`. The config's
            scheme must be ``"channel"`` (linear layers are fitted too).
        calibration: input batches (tensors, or tuples whose first item is the input),
            already normalized as the model expects, on its device; a few thousand images
            are plenty. Iterated once, through the dense model, before decomposing.

    Returns:
        The decomposition report, and per factorized layer a :class:`LayerFit`.

    Raises:
        ValueError: the spatial scheme (its two factors are not a projection of the output,
            so this fit does not apply: use :func:`trp.decompose_`), empty calibration data,
            or a targeted layer that does not run on it.
    """
    if config.scheme != "channel":
        raise ValueError(
            f"decompose_on_data_ fits the channel scheme (output-space projections, Zhang et al.); "
            f"scheme {config.scheme!r} is not supported: use trp.decompose_ for it."
        )
    layers = dict(factorizable_layers(model, config, filter_fn))
    dense_matrices = {
        name: (ChannelWiseConv2d if isinstance(module, nn.Conv2d) else LowRankLinear).dense_matrix(module).clone()
        for name, module in layers.items()
    }
    moments = response_moments(model, layers, calibration)
    report = decompose_(model, config, example_input, filter_fn)
    fits = []
    for layer_report in report.decomposed:
        layer = model.get_submodule(layer_report.name)
        svd_error, fitted_error = _refit(layer, dense_matrices[layer_report.name], moments[layer_report.name])
        fits.append(LayerFit(layer_report.name, layer.rank, svd_error, fitted_error))
    return report, fits
