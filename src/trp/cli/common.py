"""Pieces shared by the ``trp`` commands: model loading, argument groups, checks."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from ..checkpoint import load_state_dict_, read_checkpoint
from ..config import DecomposeConfig
from ..criteria import parse_criterion
from ..lowrank import SCHEMES
from ..models import create_model, get_model_spec, list_models
from ..plan import RankPlan
from ..surgery import apply_plan_

if TYPE_CHECKING:
    from ..data import ImageDataset

__all__ = [
    "CliError", "LoadedModel", "add_model_arguments", "add_decompose_arguments", "add_data_arguments",
    "check_calibration_size", "check_fit_on_data", "check_writable", "load_model", "load_data", "decompose_config",
]


class CliError(Exception):
    """A user error: printed as one line, exit status 2."""


@dataclass
class LoadedModel:
    model: nn.Module
    entry: dict[str, Any]
    plan: RankPlan
    input_size: tuple[int, ...]
    trained: bool


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model")
    group.add_argument("--model", help=f"registered architecture ({', '.join(list_models())}); "
                       "optional when --checkpoint is a trp checkpoint, which names its model")
    group.add_argument("--checkpoint", type=Path, help="weights: a trp checkpoint or a plain state dict "
                       "(torch.save(model.state_dict(), path)); without it the weights are random")
    group.add_argument("--num-classes", type=int, help="classifier outputs (default: the model's own)")
    group.add_argument("--input-size", type=int, nargs=3, metavar=("C", "H", "W"),
                       help="input size for MAC counts (default: the model's own, e.g. 3 32 32, with the "
                       "checkpoint's input channels; with --fit-on-data, the dataset's image size)")


def check_model_arguments(args: argparse.Namespace) -> None:
    if args.input_size is not None and min(args.input_size) < 1:
        raise CliError(f"--input-size must be three positive numbers C H W, got {' '.join(map(str, args.input_size))}.")
    if args.num_classes is not None and args.num_classes < 1:
        raise CliError(f"--num-classes must be >= 1, got {args.num_classes}.")


def check_writable(path: Path | None, option: str) -> None:
    if path is None:
        return
    if path.is_dir():
        raise CliError(f"{option} {path} is a directory; give a file name, e.g. {path / 'model.pt'}.")
    if not path.parent.is_dir():
        raise CliError(f"cannot write {path}: directory {path.parent} does not exist.")


def load_model(args: argparse.Namespace, default_input_size: tuple[int, ...] | None = None) -> LoadedModel:
    """The model that ``--model``/``--checkpoint`` name. Its input size is ``--input-size``, else
    ``default_input_size`` (e.g. the images it is fitted to), else the model's own with the
    checkpoint's ``in_channels``."""
    check_model_arguments(args)
    checkpoint = read_checkpoint(args.checkpoint) if args.checkpoint else None
    entry: dict[str, Any] = dict(checkpoint.model) if checkpoint and checkpoint.model else {}
    if args.model:
        if entry and entry.get("name") != args.model:
            raise CliError(
                f"--model {args.model} does not match the checkpoint, which holds a {entry.get('name')}; "
                "drop --model or pass the right checkpoint."
            )
        entry.setdefault("name", args.model)
    if "name" not in entry:
        raise CliError("name the architecture with --model (e.g. --model resnet20): the checkpoint does not say.")
    kwargs = dict(entry.get("kwargs", {}))
    if args.num_classes is not None:
        kwargs["num_classes"] = args.num_classes
    entry["kwargs"] = kwargs
    spec = get_model_spec(entry["name"])
    model = create_model(entry["name"], **kwargs)
    plan = RankPlan()
    if checkpoint is not None:
        if checkpoint.plan is not None:
            apply_plan_(model, checkpoint.plan)
            plan = checkpoint.plan
        load_state_dict_(model, checkpoint.state_dict, source=str(args.checkpoint))
    own_size = (kwargs.get("in_channels", spec.input_size[0]), *spec.input_size[1:])
    if default_input_size and not args.input_size and default_input_size[0] != own_size[0]:
        raise CliError(f"the data has {default_input_size[0]}-channel images but the {entry['name']} takes "
                       f"{own_size[0]} channels: use the data the model was trained on.")
    input_size = tuple(args.input_size or default_input_size or own_size)
    return LoadedModel(model.eval(), entry, plan, input_size, trained=checkpoint is not None)


def decompose_config(args: argparse.Namespace) -> DecomposeConfig:
    return DecomposeConfig(
        scheme=args.scheme,
        criterion=parse_criterion(args.criterion),
        rank_multiple=args.rank_multiple,
        include=tuple(args.include),
        exclude=tuple(args.exclude),
        decompose_linear=not args.no_linear,
        grouped=args.grouped,
        keep_unprofitable=args.keep_unprofitable,
    )


def add_decompose_arguments(parser: argparse.ArgumentParser) -> None:
    """The layer-selection and scheme options of DecomposeConfig (rank criterion aside)."""
    parser.add_argument("--scheme", choices=SCHEMES, default="channel",
                        help="channel (TRP1: kxk conv to rank r, then 1x1) or spatial (TRP2: kx1 then 1xk); "
                        "default: channel")
    parser.add_argument("--rank-multiple", type=int, default=1, metavar="N",
                        help="round ranks up to a multiple of N (e.g. 8); default: 1")
    parser.add_argument("--include", action="append", default=[], metavar="REGEX",
                        help="only layers whose full name matches (repeatable)")
    parser.add_argument("--exclude", action="append", default=[], metavar="REGEX",
                        help="leave layers whose full name matches dense (repeatable)")
    parser.add_argument("--no-linear", action="store_true", help="leave nn.Linear layers dense")
    parser.add_argument("--grouped", choices=("per_group", "skip"), default="per_group",
                        help="grouped convs: factorize per group, or leave dense; default: per_group")
    parser.add_argument("--keep-unprofitable", action="store_true",
                        help="also factorize layers whose factorized form costs more MACs")


def add_data_arguments(parser: argparse.ArgumentParser, required: bool) -> None:
    """``--dataset``, ``--data-root`` and ``--data-option`` (read by :func:`load_data`), and
    ``--fit-on-data`` (checked by :func:`check_fit_on_data`)."""
    group = parser.add_argument_group("data")
    group.add_argument("--dataset", required=required, help="registered dataset (e.g. cifar10, imagefolder, digits)")
    group.add_argument("--data-root", default="data", help="dataset directory (default: data)")
    group.add_argument("--data-option", action="append", default=[], metavar="KEY=VALUE",
                       help="dataset option, e.g. image_size=32 (repeatable)")
    group.add_argument("--fit-on-data", type=int, default=0, metavar="N",
                       help="fit each layer's factors to its responses on N random training images of --dataset "
                       "(channel scheme; Zhang et al.'s linear solution) instead of the weights' SVD alone")


def check_fit_on_data(args: argparse.Namespace, config: DecomposeConfig) -> None:
    """Refuse ``--fit-on-data`` where it cannot apply, before any data is read."""
    if args.fit_on_data < 0:
        raise CliError(f"--fit-on-data takes a number of training images, got {args.fit_on_data}; e.g. 2048.")
    if not args.fit_on_data:
        return
    if config.scheme != "channel":
        raise CliError(f"--fit-on-data needs --scheme channel (got {config.scheme!r}): the spatial scheme's "
                       "factors are not a projection of the layer's output, so this fit does not apply.")
    if args.dataset is None:
        raise CliError("--fit-on-data needs --dataset (and --data-root): the training images to fit to.")


def load_data(args: argparse.Namespace) -> ImageDataset:
    """The dataset named by :func:`add_data_arguments`' options, decoded into memory."""
    from ..data import load_dataset

    options = dict(_data_option(o) for o in args.data_option)
    try:
        return load_dataset(args.dataset, args.data_root, **options)
    except FileNotFoundError as error:
        raise CliError(f"{error} (--data-root names the dataset's directory; now {args.data_root}).") from None


def _data_option(text: str) -> tuple[str, Any]:
    """``KEY=VALUE``, the value read as an int, a bool (true/false) or else a string."""
    key, sep, value = text.partition("=")
    if not sep:
        raise CliError(f"cannot read --data-option {text!r}; write KEY=VALUE, e.g. image_size=32.")
    if value.isdigit():
        return key, int(value)
    return key, {"true": True, "false": False}.get(value.lower(), value)


def check_calibration_size(dataset: ImageDataset, images: int) -> None:
    """Refuse ``--fit-on-data`` asking for more images than ``dataset`` trains on."""
    if images > len(dataset.train):
        raise CliError(f"--fit-on-data {images} asks for more than the {len(dataset.train):,} training images of "
                       f"{dataset.name}: lower it (a few thousand are plenty for a conv net).")
