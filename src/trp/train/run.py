"""A whole ``trp train`` run: train (optionally with TRP), decompose with no fine-tuning,
evaluate both, optionally fine-tune the decomposed net, save and summarize. With
``optim.epochs = 0`` the run skips training and decomposes ``model.checkpoint`` as it is.
With ``model.plan`` the net trains factorized at the plan's ranks, and is multiplied back to
dense weights before it is saved and decomposed at the plan (``trp.train.planned``).

Files written to ``run.out_dir`` (by the main process only):

* ``last.pt`` — training state after the last completed epoch (``--resume`` continues);
* ``finetune_last.pt`` — the same for the fine-tune of the decomposed net (``--resume``
  continues it after its last completed epoch);
* ``metrics.jsonl`` — one JSON line per epoch: losses, accuracies, lr, images/s, and per
  targeted layer the rank the criterion would give now (rank dynamics);
* ``projections.jsonl`` — with TRP projection, one line per projection: the step and each
  layer's projected rank (the paper's Fig. 2);
* ``dense.pt`` / ``decomposed.pt`` (and ``finetuned.pt``) — trp checkpoints with rank plans;
* ``summary.json`` — accuracies, conv-MAC speed-up, parameters, training time.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..checkpoint import load_state_dict_, read_checkpoint, save_checkpoint
from ..config import DecomposeConfig
from ..counting import count_macs
from ..data import ImageDataset, TensorLoader, calibration_batches, load_dataset
from ..models import create_model
from ..rank_training import TRPHandle, attach_trp, criterion_ranks, projection_ranks
from ..response_fit import decompose_on_data_, fit_record, fit_table
from ..plan import RankPlan
from ..surgery import apply_plan_, decompose_, densify_
from ..target import ALLOCATE, criterion_for_speedup, ranks_for_speedup
from .config import OPTIONS_SET_BY_RUN, OptimSection, TrainConfig
from .loop import Batches, TrainingDiverged, evaluate, train_epoch
from .planned import load_training_plan, plan_config_section, plan_decompose_config, plan_ranks
from .runtime import Runtime, start_runtime
from .schedule import lr_factor_fn
from .state import restore_training_state, save_training_state

__all__ = ["run_training", "method_label", "load_run_data", "RunInterrupted"]


# Options that may differ between a run and its resumption; any other change is refused.
# ``run.channels_last`` changes only the memory layout and ``trp.svd_on_host`` where the SVDs
# run (same math, rounding aside);
# ``decompose.target_speedup``, ``allocate_ranks`` and ``fit_on_data`` only the decomposition after training.
RESUME_CHANGEABLE = (
    "run.progress", "run.stop_after_epochs", "run.device", "run.out_dir", "data.root", "data.download",
    "data.eval_batch_size", "run.channels_last", "decompose.target_speedup", "decompose.allocate_ranks",
    "decompose.fit_on_data",
    "trp.svd_on_host",
)


FINETUNE_STATE = "finetune_last.pt"  # the fine-tune's state after its last completed epoch
# Once the fine-tune has begun, the decomposition it fine-tunes is fixed too.
FINETUNE_CHANGEABLE = tuple(key for key in RESUME_CHANGEABLE if not key.startswith("decompose."))


class RunInterrupted(Exception):
    """The run stopped early on purpose (``run.stop_after_epochs``); ``--resume`` continues."""


def method_label(config: TrainConfig) -> str:
    """``baseline``, ``basic`` (a checkpoint decomposed without training), ``factorized``
    (trained at the ranks of ``model.plan``), ``Nu`` (nuclear norm alone), ``TRP1``,
    ``TRP2+Nu``, ..."""
    if config.optim.epochs == 0:
        return "basic"
    if config.model.plan:
        return "factorized"
    if not config.trp.enabled:
        return "baseline"
    scheme = "TRP1" if config.decompose.scheme == "channel" else "TRP2"
    if not config.trp.project:
        return "Nu"
    return f"{scheme}+Nu" if config.trp.nuclear_weight > 0 else scheme


def load_run_data(config: TrainConfig, runtime: Runtime) -> ImageDataset:
    """The main process loads (and downloads) first; the others then read what it wrote."""
    def load() -> ImageDataset:
        return load_dataset(config.data.dataset, config.data.root, download=config.data.download, **config.data.options)

    if not runtime.is_main:
        runtime.barrier()
    dataset = load()
    if runtime.is_main:
        runtime.barrier()
    return dataset


def _model_kwargs(config: TrainConfig, dataset: ImageDataset) -> dict[str, Any]:
    """The model's constructor options: ``model.options``, the classes and the input channels."""
    return {**config.model.options, "num_classes": config.model.num_classes or dataset.num_classes,
            "in_channels": dataset.input_size[0]}


def _check_saved_options(config: TrainConfig, entry: dict[str, Any] | None) -> None:
    """Refuse a ``model.checkpoint`` saved from the same model with other ``model.options`` (its
    weights would not fit, or would fit another net), naming the options to set."""
    if not entry or entry.get("name") != config.model.name:
        return  # a plain state dict, or another model: the weights' own check names the problem
    saved = {key: value for key, value in entry.get("kwargs", {}).items() if key not in OPTIONS_SET_BY_RUN}
    if saved != config.model.options:
        wanted = ", ".join(f"{key} = {json.dumps(value)}" for key, value in sorted(saved.items()))
        raise ValueError(f"model.checkpoint {config.model.checkpoint} was saved from {config.model.name} with options "
                         f"{saved or 'none'}, and this run builds it with {config.model.options or 'none'}: set "
                         f"model.options = {{{wanted}}} to start from it.")


def _build_model(config: TrainConfig, dataset: ImageDataset, runtime: Runtime, plan: RankPlan | None) -> nn.Module:
    """The dense net (from ``model.checkpoint`` if given), factorized as ``plan`` says."""
    model = create_model(config.model.name, **_model_kwargs(config, dataset))
    if config.model.checkpoint:
        checkpoint = read_checkpoint(config.model.checkpoint)
        if checkpoint.plan is not None:
            raise ValueError(
                f"model.checkpoint {config.model.checkpoint} holds a decomposed model (it has a rank plan); "
                "trp train starts from dense weights: give the dense checkpoint (e.g. dense.pt of a run), "
                "and this one as model.plan to train at its ranks."
            )
        _check_saved_options(config, checkpoint.model)
        load_state_dict_(model, checkpoint.state_dict, source=str(config.model.checkpoint))
    if plan is not None:
        apply_plan_(model, plan, from_dense_weights=True)
    model = model.to(runtime.device)
    return model.to(memory_format=torch.channels_last) if config.run.channels_last else model


def _optimizer(model: nn.Module, lr: float, optim: OptimSection) -> torch.optim.SGD:
    return torch.optim.SGD(
        model.parameters(), lr=lr, momentum=optim.momentum, weight_decay=optim.weight_decay, nesterov=optim.nesterov
    )


class _Run:
    """State shared by the phases of one run."""

    def __init__(self, config: TrainConfig, runtime: Runtime) -> None:
        self.config = config
        self.runtime = runtime
        self.out = Path(config.run.out_dir)
        self.dataset = load_run_data(config, runtime)
        self.batches = Batches(
            self.dataset.mean, self.dataset.std, runtime.device, config.run.channels_last, config.run.bf16
        )
        self.shuffle = torch.Generator().manual_seed(config.run.seed)
        self.augment = torch.Generator(device=runtime.device)
        self.loader = TensorLoader(
            self.dataset.train, config.data.batch_size, shuffle=True, drop_last=True, generator=self.shuffle,
            rank=runtime.rank, world_size=runtime.world_size,
        )
        if len(self.loader) == 0:
            raise ValueError(
                f"data.batch_size {config.data.batch_size} is larger than the {self.loader.samples_per_rank} training "
                f"images each process gets: lower data.batch_size."
            )
        self.example = torch.zeros(1, *self.dataset.input_size, device=runtime.device)
        self.plan = None
        if config.model.plan:  # checked before anything is trained or written
            self.plan = load_training_plan(config.model.plan, config.model.name, _model_kwargs(config, self.dataset),
                                           config.decompose.scheme)
        if config.decompose.fit_on_data > len(self.dataset.train):
            raise ValueError(f"decompose.fit_on_data = {config.decompose.fit_on_data} asks for more than the "
                             f"{len(self.dataset.train):,} training images: lower it to at most that.")

    def saved_config(self) -> dict[str, Any]:
        """The config saved with the training state (with a plan, the plan too), which a
        resumed run must match."""
        config = self.config.to_dict()
        return {**config, "plan": plan_config_section(self.plan)} if self.plan is not None else config

    def log(self, message: str) -> None:
        if self.runtime.is_main:
            print(message, flush=True)

    def wrap(self, model: nn.Module) -> nn.Module:
        if not self.runtime.distributed:
            return model
        device_ids = [self.runtime.device.index] if self.runtime.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=device_ids)

    def epochs(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        epochs: range,
        total_epochs: int,
        phase: str,
        after_epoch,
    ) -> None:
        """Train ``model`` (maybe DDP-wrapped) over ``epochs``; ``after_epoch(epoch, record)``
        saves and logs."""
        for epoch in epochs:
            self.loader.set_epoch(epoch)
            # Augmentation is reseeded from (seed, rank, epoch), so every rank resumes exactly.
            self.augment.manual_seed(self.config.run.seed + 1000 + 7919 * self.runtime.rank + epoch)
            description = f"{phase} epoch {epoch + 1}/{total_epochs}"
            generator = self.augment if self.config.data.augment else None
            stats = train_epoch(
                model, self.loader, optimizer, scheduler, self.batches, self.runtime, generator,
                self.config.data.crop_padding, description, self.config.run.progress,
            )
            test_loss, test_accuracy = evaluate(model, self.dataset.test, self.batches, self.runtime, self.config.data.eval_batch_size)
            record = {
                "phase": phase, "epoch": epoch + 1, "train_loss": stats.loss, "train_accuracy": stats.accuracy,
                "test_loss": test_loss, "test_accuracy": test_accuracy, "lr": stats.lr,
                "images_per_second": stats.images_per_second, "epoch_seconds": stats.seconds,
            }
            after_epoch(epoch + 1, record, stats.seconds)
            self.log(
                f"{description}: loss {stats.loss:.4f}, train acc {stats.accuracy:.4f}, test acc {test_accuracy:.4f}, "
                f"lr {stats.lr:.2e}, {stats.images_per_second:.0f} img/s, {stats.seconds:.1f} s"
            )


def _append_metrics(path: Path, record: dict[str, Any]) -> None:
    with path.open("a") as stream:
        stream.write(json.dumps(record) + "\n")


def _truncate_metrics(path: Path, phase: str, completed_epochs: int) -> None:
    """Drop the ``phase`` ("train" or "finetune") lines of epochs that the resumed state does
    not contain; a resumed training also drops every fine-tune line (the fine-tune follows it)."""
    if not path.exists():
        return
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    kept = [record for record in records if (record["phase"] == phase and record["epoch"] <= completed_epochs)
            or (phase == "finetune" and record["phase"] == "train")]
    path.write_text("".join(json.dumps(record) + "\n" for record in kept))


def _truncate_projections(path: Path, steps: int) -> None:
    """Drop projections logged after the resumed state's step (they will happen again)."""
    if not path.exists():
        return
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    path.write_text("".join(json.dumps(record) + "\n" for record in records if record["step"] <= steps))


def has_saved_state(out_dir: Path) -> bool:
    """Whether ``out_dir`` holds the state of a started run (its training's or its fine-tune's),
    which ``resume=True`` continues."""
    return (out_dir / "last.pt").exists() or (out_dir / FINETUNE_STATE).exists()


def _train(run: _Run, resume: bool) -> tuple[nn.Module, float]:
    config, runtime = run.config, run.runtime
    state_path, metrics_path = run.out / "last.pt", run.out / "metrics.jsonl"
    in_progress = has_saved_state(run.out)
    if (run.out / "summary.json").exists():
        raise ValueError(f"{run.out} already holds a finished run (summary.json), so there is nothing to resume and "
                         "nothing was overwritten: choose another run.out_dir.")
    if not resume and in_progress:
        raise ValueError(
            f"{run.out} already holds a run: pass --resume to continue it, or choose another run.out_dir "
            "(nothing was overwritten)."
        )
    if resume and not in_progress:
        raise ValueError(f"--resume: neither {state_path} nor {run.out / FINETUNE_STATE} exists, so there is nothing "
                         "to resume; drop --resume.")
    torch.manual_seed(config.run.seed)
    model = _build_model(config, run.dataset, runtime, run.plan)
    if config.target_family() is not None:  # an unreachable target fails now, not after training
        _final_decompose_config(run, model)
    if config.optim.epochs == 0:  # decompose the checkpoint as it is (validate() required one)
        return model, 0.0
    optimizer = _optimizer(model, config.optim.lr, config.optim)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor_fn(config.optim, len(run.loader)))
    handle: TRPHandle | None = (attach_trp(model, optimizer, config.trp_config(), example_input=run.example)
                                if config.trp.enabled else None)
    generators = {"shuffle": run.shuffle}
    wrapped = run.wrap(model)  # before restoring: wrapping broadcasts (rewrites) the weights
    completed, elapsed = 0, 0.0
    if resume:
        completed, elapsed = restore_training_state(
            state_path, model=model, optimizer=optimizer, scheduler=scheduler, trp_handle=handle,
            generators=generators, config=run.saved_config(), changeable=RESUME_CHANGEABLE,
        )
        if runtime.is_main and completed < config.optim.epochs:
            _truncate_metrics(metrics_path, "train", completed)
        run.log(f"resumed {run.out} after epoch {completed}")
    projections_path = run.out / "projections.jsonl"
    if handle is not None and runtime.is_main:
        _truncate_projections(projections_path, handle.steps)
        handle.projection_listeners.append(
            lambda steps, ranks: _append_metrics(projections_path, {"step": steps, "ranks": ranks})
        )
    decompose_config = config.decompose_config()
    stop_after = config.run.stop_after_epochs
    last = config.optim.epochs if not stop_after else min(config.optim.epochs, completed + stop_after)

    def after_epoch(epoch: int, record: dict[str, Any], seconds: float) -> None:
        nonlocal elapsed
        elapsed += seconds
        if handle is not None:
            record["ranks"] = handle.energy_ranks()
        else:
            record["ranks"] = plan_ranks(run.plan) if run.plan is not None else criterion_ranks(model, decompose_config)
        record["trp_steps"] = handle.steps if handle else 0
        if runtime.is_main:  # the line first: a resume drops lines past the saved state, never adds them
            _append_metrics(metrics_path, record)
            save_training_state(
                state_path, epoch=epoch, model=model, optimizer=optimizer, scheduler=scheduler, trp_handle=handle,
                generators=generators, config=run.saved_config(), elapsed_seconds=elapsed,
            )

    try:
        run.epochs(wrapped, optimizer, scheduler, range(completed, last), config.optim.epochs, "train", after_epoch)
    except TrainingDiverged as error:
        if state_path.exists():
            advice = f"the last good state (epoch {_last_logged_epoch(metrics_path)}) is kept in {state_path}; lower optim.lr or trp.nuclear_weight in the config and start a new run from it, or --resume to retry"
        else:
            advice = "no epoch had completed, so nothing was saved; lower optim.lr or trp.nuclear_weight and start again"
        raise TrainingDiverged(f"{error}; {advice}.") from None
    if last < config.optim.epochs:
        raise RunInterrupted(f"stopped after epoch {last} of {config.optim.epochs} (run.stop_after_epochs); continue with --resume.")
    if handle is not None:
        handle.remove()
    return model, elapsed


def _last_logged_epoch(metrics_path: Path) -> int:
    lines = metrics_path.read_text().splitlines() if metrics_path.exists() else []
    return json.loads(lines[-1])["epoch"] if lines else 0


def _check_replicas_agree(model: nn.Module, runtime: Runtime) -> None:
    """Under DDP every rank must hold the same weights (TRP projections included)."""
    if not runtime.distributed:
        return
    import torch.distributed as dist

    flat = torch.cat([p.detach().flatten().double() for p in model.parameters()])
    reference = flat.clone()
    dist.broadcast(reference, src=0)
    difference = (flat - reference).abs().max()
    dist.all_reduce(difference, op=dist.ReduceOp.MAX)
    if difference.item() != 0.0:
        raise RuntimeError(f"DDP replicas disagree after training (max weight difference {difference.item():.3e}).")


def _evaluate_model(run: _Run, model: nn.Module) -> dict[str, Any]:
    loss, accuracy = evaluate(model, run.dataset.test, run.batches, run.runtime, run.config.data.eval_batch_size)
    counted = count_macs(model, run.example)
    return {"accuracy": accuracy, "loss": loss, "conv_macs": counted.conv_macs, "model_macs": counted.model_macs, "params": counted.params}


def _finetune(run: _Run, model: nn.Module) -> nn.Module:
    """Fine-tune the decomposed ``model`` in place, saving its state after every epoch and
    continuing from that state when an earlier attempt left one (``finetune_last.pt``)."""
    config, state_path, metrics_path = run.config, run.out / FINETUNE_STATE, run.out / "metrics.jsonl"
    section = copy.deepcopy(config.optim)
    section.epochs, section.schedule, section.warmup_epochs = config.finetune.epochs, "cosine", 0.0
    optimizer = _optimizer(model, config.finetune.lr, section)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor_fn(section, len(run.loader)))
    generators = {"shuffle": run.shuffle}
    wrapped = run.wrap(model)  # before restoring: wrapping broadcasts (rewrites) the weights
    state = {"model": model, "optimizer": optimizer, "scheduler": scheduler, "trp_handle": None, "generators": generators}
    completed = 0
    if state_path.exists():
        completed, _ = restore_training_state(state_path, **state, config=run.saved_config(), changeable=FINETUNE_CHANGEABLE)
        run.log(f"resumed the fine-tune in {run.out} after epoch {completed}")
    if run.runtime.is_main:
        _truncate_metrics(metrics_path, "finetune", completed)

    def after_epoch(epoch: int, record: dict[str, Any], seconds: float) -> None:
        if run.runtime.is_main:  # the line first, as in training
            _append_metrics(metrics_path, record)
            save_training_state(state_path, epoch=epoch, **state, config=run.saved_config(), elapsed_seconds=0.0)

    run.epochs(wrapped, optimizer, scheduler, range(completed, section.epochs), section.epochs, "finetune", after_epoch)
    return model


def _summary_table(summary: dict[str, Any]) -> str:
    dense, low = summary["dense"], summary["decomposed"]
    rows = [
        f"{'method':<10} {'dense acc':>9} {'decomp acc':>10} {'change':>7} {'conv MACs':>14} {'speed-up':>8} {'params':>10} {'train s':>8}",
        f"{summary['method']:<10} {100 * dense['accuracy']:>8.2f}% {100 * low['accuracy']:>9.2f}% "
        f"{100 * (low['accuracy'] - dense['accuracy']):>+6.2f} {low['conv_macs']:>14,} {low['conv_speedup']:>7.2f}x "
        f"{low['params']:>10,} {summary['training_seconds']:>8.0f}",
    ]
    if summary.get("finetuned"):
        tuned = summary["finetuned"]
        rows.append(f"{'+finetune':<10} {'':>9} {100 * tuned['accuracy']:>9.2f}% {100 * (tuned['accuracy'] - dense['accuracy']):>+6.2f}")
    return "\n".join(rows)


def _final_decompose_config(run: _Run, model: nn.Module) -> DecomposeConfig:
    """``[decompose]`` as written, or with the criterion (or the allocated ranks) that
    reaches ``target_speedup``, or at the ranks TRP's projections keep under
    ``trp.max_speedup``, or with a plan, the plan's layers and ranks."""
    config = run.config
    if run.plan is not None:
        return plan_decompose_config(run.plan)
    decompose_config = config.decompose_config()
    if config.trp.enabled and config.trp.max_speedup:  # the criterion alone would cut past the cap
        ranks = projection_ranks(model, config.trp_config(), run.example)
        return dataclasses.replace(decompose_config, ranks={**decompose_config.ranks, **ranks})
    family = config.target_family()
    if family is None:
        return decompose_config
    target = config.decompose.target_speedup
    if family == ALLOCATE:
        return ranks_for_speedup(model, decompose_config, run.example, target).config
    found = criterion_for_speedup(model, decompose_config, run.example, target, family)
    return dataclasses.replace(decompose_config, criterion=found.criterion)


def _finish(run: _Run, model: nn.Module, elapsed: float) -> dict[str, Any]:
    config, runtime = run.config, run.runtime
    _check_replicas_agree(model, runtime)
    entry = {"name": config.model.name, "kwargs": _model_kwargs(config, run.dataset)}
    dense = _evaluate_model(run, model)
    if runtime.is_main:  # first, so that no later failure can lose the trained net
        save_checkpoint(run.out / "dense.pt", model, None, entry)
    decomposed_model = copy.deepcopy(model)
    decompose_config = _final_decompose_config(run, model)
    fit_images = config.decompose.fit_on_data
    fitted = None
    if fit_images:
        calibration = [batch.to(runtime.device) for batch in calibration_batches(run.dataset, fit_images)]
        report, fits = decompose_on_data_(decomposed_model, decompose_config, run.example, calibration)
        fitted = fit_record(fits, fit_images, config.data.dataset)
        run.log(fit_table(fits, fit_images))
    else:
        report = decompose_(decomposed_model, decompose_config, run.example)
    decomposed = _evaluate_model(run, decomposed_model)
    decomposed.update(
        conv_speedup=report.conv_speedup, model_speedup=report.model_speedup, layers_decomposed=len(report.decomposed),
        # Null where every decomposed layer has a rank fixed by a plan or allocated for a target
        # (the summary's "ranks"), so that no criterion chose any.
        criterion=(None if {layer.name for layer in report.decomposed} <= set(decompose_config.ranks)
                   else decompose_config.criterion.to_dict()),
        fit_on_data=fitted,
    )
    summary: dict[str, Any] = {
        "method": method_label(config), "model": config.model.name, "dataset": config.data.dataset,
        "epochs": config.optim.epochs, "training_seconds": elapsed, "device": str(runtime.device),
        "world_size": runtime.world_size, "dense": dense, "decomposed": decomposed, "finetuned": None,
        "ranks": report.ranks, "config": config.to_dict(),
    }
    if runtime.is_main:
        described = {**report.to_dict(), **({"fit_on_data": fitted} if fitted else {})}
        save_checkpoint(run.out / "decomposed.pt", decomposed_model, report.plan, entry, {"decomposition": described})
        run.log(report.table())
    if config.finetune.epochs > 0:
        finetuned = _finetune(run, decomposed_model)
        summary["finetuned"] = _evaluate_model(run, finetuned)
        if runtime.is_main:
            save_checkpoint(run.out / "finetuned.pt", finetuned, report.plan, entry)
    if runtime.is_main:
        (run.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        run.log(_summary_table(summary))
        run.log(f"wrote {run.out / 'summary.json'}")
    return summary


def run_training(config: TrainConfig, resume: bool = False) -> dict[str, Any]:
    """Run ``config`` end to end and return the summary (see the module docstring).

    Raises:
        ValueError: impossible options, a run directory that already holds a run (without
            ``resume``), missing data.
        TrainingDiverged: NaN/infinite loss; the last good epoch stays on disk.
        RunInterrupted: ``run.stop_after_epochs`` reached before the end.
    """
    config.validate()
    runtime = start_runtime(config.run.device)
    try:
        run = _Run(config, runtime)  # loads the data first: a bad path leaves no empty run directory
        if runtime.is_main:
            run.out.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        model, elapsed = _train(run, resume)
        run.log(f"training took {time.perf_counter() - start:.0f} s in this invocation")
        if run.plan is not None:  # saved dense, then decomposed at the plan like any trained net
            densify_(model)
        return _finish(run, model, elapsed)
    finally:
        runtime.close()
