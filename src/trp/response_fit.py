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

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from .config import DecomposeConfig
from .layers import FactorizedLayer
from .lowrank import thin_svd
from .report import DecompositionReport
from .surgery import FilterFn, decompose_, factorizable_layers, factorized_class_for

__all__ = [
    "LayerFit", "decompose_on_data_", "decompose_fitted_", "fit_record", "fit_table", "response_errors", "response_moments",
]


@dataclass
class LayerFit:
    """How well one layer's rank-``rank`` factors reproduce its responses on the
    calibration data: ``E||y - y_r||^2 / E||y||^2`` (``y`` the dense layer's output without
    bias), for the weight's truncated SVD and for the fitted factors (never larger)."""

    name: str
    rank: int
    svd_error: float
    fitted_error: float


def fit_record(fits: list[LayerFit], images: int, dataset: str) -> dict[str, Any]:
    """What was fitted to what, as JSON-ready data: ``{"dataset", "images", "layers"}``."""
    return {"dataset": dataset, "images": images, "layers": [asdict(fit) for fit in fits]}


def fit_table(fits: list[LayerFit], images: int) -> str:
    """A fixed-width table: per fitted layer, its rank and relative response errors (SVD, fitted)."""
    header = f"{'layer':<34} {'rank':>5} {'SVD error':>10} {'fitted error':>13}"
    rows = [f"response error E||y - y_r||^2 / E||y||^2 on {images} training images", header, "-" * len(header)]
    rows += [f"{fit.name:<34} {fit.rank:>5} {fit.svd_error:>10.4f} {fit.fitted_error:>13.4f}" for fit in fits]
    if fits:
        mean_svd, mean_fitted = (sum(getattr(f, key) for f in fits) / len(fits) for key in ("svd_error", "fitted_error"))
        rows += ["-" * len(header), f"{'mean':<34} {'':>5} {mean_svd:>10.4f} {mean_fitted:>13.4f}"]
    return "\n".join(rows)


def _first_tensor(batch: torch.Tensor | tuple | list) -> torch.Tensor:
    return batch[0] if isinstance(batch, (tuple, list)) else batch


@contextmanager
def _recording(model: nn.Module, layers: dict[str, nn.Module],
               record: Callable[[str, nn.Module, torch.Tensor], None]) -> Iterator[None]:
    """Within the block, ``model`` is in eval mode without gradients and every forward pass
    calls ``record(name, module, output)`` for each of ``layers``; all restored afterwards."""
    handles = [module.register_forward_hook(lambda module, inputs, output, name=name: record(name, module, output))
               for name, module in layers.items()]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()


def _calibration_inputs(calibration: Iterable[torch.Tensor | tuple | list]) -> Iterator[tuple[int, torch.Tensor]]:
    """``(number, inputs)`` of each batch (a tensor, or a tuple whose first item is the input).

    Raises:
        TypeError: ``calibration`` is one tensor (it would be iterated image by image).
        ValueError: it yields no batch.
    """
    if isinstance(calibration, torch.Tensor):
        raise TypeError("calibration must be an iterable of batches (a list of tensors or a DataLoader), "
                        "not one tensor: pass [inputs].")
    number = 0
    for number, batch in enumerate(calibration, start=1):
        yield number, _first_tensor(batch)
    if number == 0:
        raise ValueError("the calibration data yielded no batch: pass at least one input batch.")


def _run(model: nn.Module, inputs: torch.Tensor, number: int) -> None:
    """``model(inputs)``, with an error naming the batch if the model cannot run it."""
    try:
        model(inputs)
    except (RuntimeError, TypeError, ValueError) as error:
        raise ValueError(
            f"calibration batch {number} ({_describe(inputs)}) does not run through the model: {error} "
            "Calibration batches must be inputs the model accepts, on its device and dtype, normalized "
            "as in training."
        ) from None


def _check_all_ran(counts: dict[str, int], fix: str) -> None:
    silent = [name for name, count in counts.items() if count == 0]
    if silent:
        raise ValueError(f"layers {silent} did not run on the calibration data (in eval mode): {fix}")


def response_moments(
    model: nn.Module, layers: dict[str, nn.Module], calibration: Iterable[torch.Tensor | tuple | list]
) -> dict[str, torch.Tensor]:
    """``E[y y^T]`` per layer, float64 ``(out, out)``, over every output position of every
    calibration batch; ``y`` is the layer's output minus its bias. ``model`` runs in eval
    mode without gradients; a batch may be a tensor or a tuple whose first item is the input
    (the rest, e.g. labels, is ignored).

    Raises:
        TypeError: ``calibration`` is one tensor (it would be iterated image by image).
        ValueError: no batch, a batch the model cannot run, a layer that never ran, or
            responses that are not finite.
    """
    sums: dict[str, torch.Tensor] = {}
    counts = dict.fromkeys(layers, 0)

    def record(name: str, module: nn.Module, output: torch.Tensor) -> None:
        y = _channels_last(module, output.detach().double())
        if module.bias is not None:
            y = y - module.bias.detach().double()
        rows = y.reshape(-1, y.shape[-1])  # one row per position (or per token)
        sums[name] = sums[name] + rows.T @ rows if name in sums else rows.T @ rows
        counts[name] += rows.shape[0]

    with _recording(model, layers, record):
        for number, inputs in _calibration_inputs(calibration):
            _run(model, inputs, number)
    _check_all_ran(counts, "they cannot be fitted to it; leave them out with DecomposeConfig(exclude=...) or a filter_fn.")
    moments = {name: sums[name] / counts[name] for name in layers}
    broken = [name for name, moment in moments.items() if not torch.isfinite(moment).all()]
    if broken:
        raise ValueError(f"the responses of layers {broken} on the calibration data contain NaN or infinite "
                         "values: check the calibration batches.")
    return moments


def _channels_last(module: nn.Module, y: torch.Tensor) -> torch.Tensor:
    """A conv's output ``(B, n, H, W)`` as ``(B, H, W, n)``, like a linear layer's output."""
    return y.movedim(1, -1) if isinstance(module, nn.Conv2d) else y


def response_errors(
    reference: nn.Module, approximation: nn.Module, names: Sequence[str],
    calibration: Iterable[torch.Tensor | tuple | list],
) -> dict[str, float]:
    """How far each named layer's output in ``approximation`` (e.g. the decomposed net) is
    from its output in ``reference`` (the dense net), both run on the same calibration
    batches: ``E||y_a - y||^2 / E||y||^2`` over every output, bias included. Unlike
    :class:`LayerFit`'s errors, which feed each layer the dense net's inputs, this includes
    what the layers before it changed: the error the approximated net really carries there.

    Raises:
        TypeError, ValueError: as :func:`response_moments`, or a name missing from either net.
    """
    in_both = dict(reference.named_modules()).keys() & dict(approximation.named_modules()).keys()
    missing = [name for name in names if name not in in_both]
    if missing:
        raise ValueError(f"layers {missing} are not in both nets: name layers that both have (model.named_modules()).")
    dense: dict[str, list[torch.Tensor]] = {name: [] for name in names}  # outputs not yet compared, in call order
    error, energy = dict.fromkeys(names, 0.0), dict.fromkeys(names, 0.0)
    counts = dict.fromkeys(names, 0)

    def keep(name: str, module: nn.Module, output: torch.Tensor) -> None:
        dense[name].append(output.detach().double())

    def compare(name: str, module: nn.Module, output: torch.Tensor) -> None:
        if not dense[name]:
            raise ValueError(f"{name} runs more often in the approximation than in the reference: compare nets "
                             "that call their layers alike.")
        y = dense[name].pop(0)
        error[name] += float((output.detach().double() - y).square().sum())
        energy[name] += float(y.square().sum())
        counts[name] += 1

    with (_recording(reference, {n: reference.get_submodule(n) for n in names}, keep),
          _recording(approximation, {n: approximation.get_submodule(n) for n in names}, compare)):
        for number, inputs in _calibration_inputs(calibration):
            _run(reference, inputs, number)
            _run(approximation, inputs, number)
    _check_all_ran(counts, "name layers that the nets use in eval mode.")
    return {name: error[name] / energy[name] if energy[name] > 0 else 0.0 for name in names}


def _describe(inputs: object) -> str:
    if isinstance(inputs, torch.Tensor):
        return f"shape {tuple(inputs.shape)}, {inputs.dtype}, on {inputs.device}"
    return type(inputs).__name__


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


TIE_BREAK = 1e-9  # weight of W W^T added to the response moment, relative to trace ratios


def _refit(layer: FactorizedLayer, dense_matrix: torch.Tensor, moment: torch.Tensor) -> tuple[float, float]:
    """Replace ``layer``'s factors by the response-fitted ones; returns the relative response
    errors (truncated SVD, fitted).

    Where the calibration responses span fewer than ``rank`` directions (too few images for
    a wide layer, or constant inputs), the eigenvectors of the rest would be arbitrary: a
    tiny multiple of ``W W^T`` (the moment under white inputs) fills them with the weight's
    own singular directions instead, leaving the fitted ones unchanged to working precision."""
    groups = dense_matrix.shape[0]
    blocks = _group_blocks(moment, groups)
    matrix = dense_matrix.double()
    gram = matrix @ matrix.transpose(-2, -1)
    response_energy = float(blocks.diagonal(dim1=-2, dim2=-1).sum())
    weight_energy = float(gram.diagonal(dim1=-2, dim2=-1).sum())
    # With no response energy at all (all-zero responses) this is the weight's SVD alone.
    scale = TIE_BREAK * response_energy / weight_energy if response_energy > 0 and weight_energy > 0 else 1.0
    _, eigenvectors = torch.linalg.eigh(blocks + scale * gram)
    basis = eigenvectors.flip(-1)[..., : layer.rank]  # top-r response directions, (g, m, r)
    svd_basis = thin_svd(matrix)[0][..., : layer.rank]
    # Balance the two factors (as the SVD path does) through the SVD of the small P^T W.
    u, s, vh = thin_svd(basis.transpose(-2, -1) @ matrix)
    left = (basis @ u) * s.sqrt().unsqueeze(-2)
    right = s.sqrt().unsqueeze(-1) * vh
    with torch.no_grad():
        layer._set_factors(left.to(dense_matrix.dtype), right.to(dense_matrix.dtype))
    return _projection_error(blocks, svd_basis), _projection_error(blocks, basis)


def _check_scheme(config: DecomposeConfig) -> None:
    if config.scheme != "channel":
        raise ValueError(
            f"decompose_on_data_ fits the channel scheme (output-space projections, Zhang et al.); "
            f"scheme {config.scheme!r} is not supported: use trp.decompose_ for it."
        )


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
        calibration: an iterable of input batches (tensors, or tuples whose first item is
            the input, e.g. a DataLoader's ``(images, labels)``), normalized as the model
            expects, on its device and dtype. Iterated once, through the dense model, before
            decomposing. A conv gets one response per output position, so a few thousand
            images are plenty; a linear layer gets one per image (or token), so give it many
            more than its width. The fit is optimal on these data: draw them from the
            training distribution.

    Returns:
        The decomposition report, and per factorized layer a :class:`LayerFit`.

    Raises:
        ValueError: the spatial scheme (its two factors are not a projection of the output,
            so this fit does not apply: use :func:`trp.decompose_`), empty calibration data,
            a batch the model cannot run, non-finite responses, or a targeted layer that does
            not run on the data. The model is left unchanged.
        TypeError: ``calibration`` is one tensor instead of an iterable of batches.
    """
    _check_scheme(config)
    layers = dict(factorizable_layers(model, config, filter_fn))
    moments = response_moments(model, layers, calibration) if layers else {}
    return decompose_fitted_(model, config, example_input, moments, filter_fn)


def decompose_fitted_(
    model: nn.Module,
    config: DecomposeConfig,
    example_input: torch.Tensor | tuple[torch.Tensor, ...],
    moments: dict[str, torch.Tensor],
    filter_fn: FilterFn | None = None,
) -> tuple[DecompositionReport, list[LayerFit]]:
    """:func:`decompose_on_data_` from response moments computed beforehand by
    :func:`response_moments` on this dense model's ``factorizable_layers`` (e.g. once for
    a sweep over criteria, on copies of the model)."""
    _check_scheme(config)
    layers = dict(factorizable_layers(model, config, filter_fn))
    missing = sorted(set(layers) - set(moments))
    if missing:
        raise ValueError(f"no response moments for layers {missing}: compute them with response_moments "
                         "on this model and config.")
    dense_matrices = {
        name: factorized_class_for(module, config.scheme).dense_matrix(module).clone() for name, module in layers.items()
    }
    report = decompose_(model, config, example_input, filter_fn)
    fits = []
    for layer_report in report.decomposed:
        layer = model.get_submodule(layer_report.name)
        dense_matrix = dense_matrices[layer_report.name]
        svd_error, fitted_error = _refit(layer, dense_matrix, moments[layer_report.name])
        fits.append(LayerFit(layer_report.name, layer.rank, svd_error, fitted_error))
        layer_report.relative_error = _weight_error(layer, dense_matrix)  # of the factors installed, not the SVD's
    return report, fits


def _weight_error(layer: FactorizedLayer, dense_matrix: torch.Tensor) -> float:
    """``||W - W_r||_F / ||W||_F`` of ``layer``'s factors against the dense ``(g, m, n)`` matrix."""
    left, right = (factor.detach().double() for factor in layer._factors())
    matrix = dense_matrix.double()
    norm = matrix.norm()
    return float((matrix - left @ right).norm() / norm) if norm > 0 else 0.0
