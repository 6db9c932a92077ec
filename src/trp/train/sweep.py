"""Decompose one trained model at several rank criteria and evaluate each, no retraining."""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..checkpoint import load_decomposed, read_checkpoint
from ..config import DecomposeConfig
from ..criteria import RankCriterion
from ..data import ImageDataset, calibration_batches
from ..models import create_model
from ..plots import plot_accuracy_vs_speedup, plot_layer_ranks, plot_spectra
from ..response_fit import decompose_fitted_, response_errors, response_moments
from ..surgery import decompose_, factorizable_layers, factorized_class_for
from .loop import Batches, evaluate
from .runtime import Runtime

__all__ = ["SweepPoint", "sweep_criteria", "accuracy_on", "load_trained", "run_sweep"]


@dataclass
class SweepPoint:
    """One decomposition of the sweep: ``accuracy`` as returned by the evaluation (a
    fraction), ``conv_speedup`` the paper's conv-MAC ratio, ``ranks`` the rank of each layer
    it factorized (layer name -> rank; the decomposed architecture, as a trained run's
    summary records it). ``layer_fits`` (data-fitted sweeps
    only, else empty) has each layer's relative response error for the SVD factors and for
    the fitted ones, each fed the dense net's inputs (:class:`trp.LayerFit`), and
    ``in_net_error``: the fitted layer's error inside the decomposed net, on its inputs there
    (:func:`trp.response_fit.response_errors`)."""

    criterion: dict
    conv_speedup: float
    accuracy: float
    params: int
    layers_decomposed: int
    ranks: dict[str, int]
    layer_fits: list[dict] = field(default_factory=list)


def sweep_criteria(
    model: nn.Module,
    config: DecomposeConfig,
    criteria: Sequence[RankCriterion],
    evaluate_accuracy: Callable[[nn.Module], float],
    example_input: torch.Tensor,
    calibration: Sequence[torch.Tensor] = (),
) -> list[SweepPoint]:
    """For each criterion: decompose a copy of ``model`` with ``config`` (its criterion
    replaced) and evaluate it. ``model`` itself is not changed. With ``calibration`` batches
    the factors are fitted to the layers' responses on them (:func:`trp.decompose_on_data_`;
    the responses are gathered once, not per criterion)."""
    moments = response_moments(model, dict(factorizable_layers(model, config)), calibration) if calibration else {}
    points = []
    for criterion in criteria:
        candidate = copy.deepcopy(model)
        candidate_config = dataclasses.replace(config, criterion=criterion)
        layer_fits = []
        if calibration:
            report, fits = decompose_fitted_(candidate, candidate_config, example_input, moments)
            in_net = response_errors(model, candidate, [fit.name for fit in fits], calibration)
            layer_fits = [{**dataclasses.asdict(fit), "in_net_error": in_net[fit.name]} for fit in fits]
        else:
            report = decompose_(candidate, candidate_config, example_input)
        points.append(SweepPoint(
            criterion.to_dict(), report.conv_speedup, evaluate_accuracy(candidate), report.params_after,
            len(report.decomposed), report.ranks, layer_fits,
        ))
    return points


def accuracy_on(dataset: ImageDataset, batch_size: int = 512) -> Callable[[nn.Module], float]:
    """``accuracy(model)`` on ``dataset.test`` (CPU, eval mode)."""
    runtime = Runtime(torch.device("cpu"))
    batches = Batches(dataset.mean, dataset.std, runtime.device, channels_last=False, bf16=False)
    return lambda model: evaluate(model, dataset.test, batches, runtime, batch_size)[1]


def load_trained(path: Path, model_name: str | None, dataset: ImageDataset) -> nn.Module:
    """A model from a trp checkpoint (which names its architecture) or a plain state dict
    (then ``model_name`` is needed), built for ``dataset``'s classes and channels."""
    checkpoint = read_checkpoint(path)
    entry = checkpoint.model or {}
    name = entry.get("name") or model_name
    if name is None:
        raise ValueError(f"{path} does not name its architecture: pass --model.")
    kwargs = {"num_classes": dataset.num_classes, "in_channels": dataset.input_size[0], **entry.get("kwargs", {})}
    return load_decomposed(path, create_model(name, **kwargs)).eval()


def run_sweep(
    checkpoints: Sequence[Path],
    labels: Sequence[str],
    dataset: ImageDataset,
    config: DecomposeConfig,
    criteria: Sequence[RankCriterion],
    out_dir: Path,
    model_name: str | None = None,
    spectrum_layers: Sequence[str] = (),
    calibration_images: int = 0,
) -> dict[str, Any]:
    """Sweep every checkpoint over ``criteria``; write ``sweep.json``,
    ``accuracy_vs_speedup.png``, ``ranks.png`` (per-layer ranks at the first criterion) and
    ``spectra.png`` (singular values of ``spectrum_layers``, default: the middle targeted
    layer) into ``out_dir``. Returns what ``sweep.json`` holds. ``calibration_images > 0``
    fits the factors to the responses on that many training images (channel scheme only)."""
    if len(labels) != len(checkpoints):
        raise ValueError(f"{len(checkpoints)} checkpoints but {len(labels)} labels: give one label per checkpoint.")
    if calibration_images and config.scheme != "channel":
        raise ValueError(f"fitting the factors to data needs the channel scheme, not {config.scheme!r}.")
    accuracy = accuracy_on(dataset)
    example = torch.zeros(1, *dataset.input_size)
    calibration = calibration_batches(dataset, calibration_images) if calibration_images else []
    result: dict[str, Any] = {"criteria": [c.to_dict() for c in criteria], "scheme": config.scheme,
                              "calibration_images": calibration_images, "models": {}}
    ranks, spectra = {}, {}
    for path, label in zip(checkpoints, labels):
        model = load_trained(path, model_name, dataset)
        points = sweep_criteria(model, config, criteria, accuracy, example, calibration)
        first = copy.deepcopy(model)
        report = decompose_(first, dataclasses.replace(config, criterion=criteria[0]), example)
        ranks[label] = {layer.name: layer.rank for layer in report.layers if layer.rank is not None}
        names = list(spectrum_layers) or [list(ranks[label])[len(ranks[label]) // 2]]
        for name in names:
            module = model.get_submodule(name)
            solution = factorized_class_for(module, config.scheme).solve(module, criteria[0])
            spectra[f"{label}: {name}"] = solution.singular_values.flatten().sort(descending=True).values.tolist()
        result["models"][label] = {
            "checkpoint": str(path), "dense_accuracy": accuracy(model), "points": [vars(p) for p in points],
            "ranks": ranks[label],
        }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "sweep.json").write_text(json.dumps({**result, "spectra": spectra}, indent=2) + "\n")
    curves = {label: [(p["conv_speedup"], 100 * p["accuracy"]) for p in data["points"]] for label, data in result["models"].items()}
    plot_accuracy_vs_speedup(curves, out_dir / "accuracy_vs_speedup.png", f"{config.scheme} scheme, no fine-tuning")
    plot_layer_ranks(ranks, out_dir / "ranks.png", f"per-layer rank at {criteria[0].to_dict()}")
    plot_spectra(spectra, out_dir / "spectra.png", "singular-value spectra")
    return result
