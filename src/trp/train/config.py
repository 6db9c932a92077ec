"""Training configuration: dataclasses, read from TOML (or YAML), overridable by ``key=value``.

Every option lives in one of the sections below; a config file may set any subset and the
command line overrides single keys with ``--set section.key=value`` (the value is read as
TOML, so ``--set optim.lr=0.05``, ``--set optim.milestones=[40,60]``, ``--set trp.enabled=false``).
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from ..config import DecomposeConfig
from ..data import list_datasets
from ..models import create_model, get_model_spec
from ..criteria import parse_criterion
from ..rank_training import TRPConfig
from ..target import ALLOCATE, FAMILIES

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

__all__ = ["TrainConfig", "load_train_config", "apply_overrides"]

SCHEDULES = ("multistep", "cosine", "onecycle", "constant")


# Model constructor options a run sets itself (from model.num_classes and the dataset), never
# model.options: option -> what to do instead.
OPTIONS_SET_BY_RUN = {"num_classes": "set model.num_classes instead", "in_channels": "the dataset's images set it"}


@dataclass
class ModelSection:
    """``name``: a registered model; ``num_classes``: 0 means the dataset's; ``checkpoint``:
    start from these weights (a trp checkpoint or plain state dict), e.g. to fine-tune;
    ``plan``: train the net factorized at these ranks (a rank-plan JSON as
    :meth:`trp.RankPlan.to_json` writes it, or a trp checkpoint holding one, such as a run's
    ``decomposed.pt``) of this model, whose scheme ``decompose.scheme`` must name: each
    planned layer of the built (or loaded) dense net is replaced by its truncated SVD at the
    planned rank before training. This trains the architecture a TRP run found with no TRP
    (the "from scratch" control of pruning studies). After training the factors are
    multiplied back, so the net is saved and swept like any other, and it is decomposed at
    the plan (:mod:`trp.train.planned`). ``options``: passed to the model's constructor,
    e.g. ``{shortcut = "B"}`` for a CIFAR ResNet with 1x1-conv shortcuts where the shape
    changes (``trp.models.model_options`` lists a model's)."""

    name: str = "resnet20"
    num_classes: int = 0
    checkpoint: str = ""
    plan: str = ""
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class DataSection:
    """``dataset``: a registered dataset; ``root``: where it lives; ``options``: passed to the
    dataset loader (e.g. ``image_size``, ``url``, ``md5``)."""

    dataset: str = "cifar10"
    root: str = "data"
    download: bool = False
    batch_size: int = 128
    eval_batch_size: int = 512
    augment: bool = True
    crop_padding: int = 4
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class OptimSection:
    """SGD with momentum. ``schedule``: multistep (``lr * gamma`` at each milestone epoch),
    cosine (to 0 over all epochs), onecycle (linear warm-up over ``warmup_epochs`` to ``lr``,
    then cosine to 0) or constant. Epoch milestones may be fractional. ``epochs = 0`` (only
    with ``model.checkpoint``) skips training: the checkpoint is decomposed as it is and, if
    ``[finetune]`` asks, fine-tuned (the paper's "decompose a trained net" comparison)."""

    epochs: int = 164
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    nesterov: bool = False
    schedule: str = "multistep"
    milestones: list[float] = field(default_factory=lambda: [82, 122])
    gamma: float = 0.1
    warmup_epochs: float = 0.0


@dataclass
class TRPSection:
    """TRP during training; the layers and the rank criterion come from ``[decompose]``."""

    enabled: bool = False
    period: int = 20
    project: bool = True
    nuclear_weight: float = 0.0
    nuclear_every: int = 1
    svd_on_host: bool = True  # per-step SVDs of accelerator weights on the CPU (trp.TRPConfig)
    max_speedup: float = 0.0  # projections stop near this conv-MAC speed-up (trp.TRPConfig); 0: off
    max_speedup_tolerance: float = 0.0  # fraction above max_speedup the projections may land at (trp.TRPConfig)


@dataclass
class DecomposeSection:
    """How the trained net is decomposed (and which layers TRP acts on). ``target_speedup``:
    0 decomposes with ``criterion``; a value >= 1 instead decomposes the trained net at the
    ``criterion`` family's (energy or fraction) setting that reaches that conv-MAC speed-up
    (TRP during training still uses ``criterion``), or, with ``allocate_ranks``, at a rank per
    conv layer allocated by energy per MAC (:func:`trp.target.ranks_for_speedup`). ``fit_on_data``: 0 takes each layer's
    factors from its weight's truncated SVD; N > 0 keeps those ranks but fits the factors to
    the layer's responses on N random training images (channel scheme only;
    :func:`trp.decompose_on_data_`), which helps a net not trained with TRP."""

    scheme: str = "channel"
    criterion: str = "energy:0.02"
    target_speedup: float = 0.0
    allocate_ranks: bool = False
    rank_multiple: int = 1
    include: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    decompose_linear: bool = False
    grouped: str = "per_group"
    keep_unprofitable: bool = False
    fit_on_data: int = 0


@dataclass
class FinetuneSection:
    """Optional fine-tune of the decomposed net (cosine schedule from ``lr``); 0 epochs = none."""

    epochs: int = 0
    lr: float = 0.01


@dataclass
class RunSection:
    """``device``: auto (CUDA when present, else CPU), cpu or cuda[:N]; ``bf16``: autocast to
    bfloat16; ``stop_after_epochs``: stop this invocation after that many epochs (0: never),
    to split a long run across sessions (``--resume`` continues)."""

    out_dir: str = "runs/default"
    device: str = "auto"
    bf16: bool = False
    channels_last: bool = False
    seed: int = 0
    progress: bool = True
    stop_after_epochs: int = 0


@dataclass
class TrainConfig:
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    optim: OptimSection = field(default_factory=OptimSection)
    trp: TRPSection = field(default_factory=TRPSection)
    decompose: DecomposeSection = field(default_factory=DecomposeSection)
    finetune: FinetuneSection = field(default_factory=FinetuneSection)
    run: RunSection = field(default_factory=RunSection)

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first impossible option."""
        if self.optim.epochs < 0 or (self.optim.epochs == 0 and not self.model.checkpoint):
            raise ValueError(
                f"optim.epochs must be >= 1, got {self.optim.epochs} (0 is allowed only with model.checkpoint, "
                "to decompose and fine-tune a trained net without training it)."
            )
        positive = {
            "data.batch_size": self.data.batch_size,
            "data.eval_batch_size": self.data.eval_batch_size,
        }
        for key, value in positive.items():
            if value < 1:
                raise ValueError(f"{key} must be >= 1, got {value}.")
        if not self.optim.lr > 0:
            raise ValueError(f"optim.lr must be > 0, got {self.optim.lr}.")
        if self.optim.schedule not in SCHEDULES:
            raise ValueError(f"optim.schedule must be one of {SCHEDULES}, got {self.optim.schedule!r}.")
        if self.finetune.epochs < 0 or self.run.stop_after_epochs < 0 or self.data.crop_padding < 0:
            raise ValueError("finetune.epochs, run.stop_after_epochs and data.crop_padding must be >= 0.")
        get_model_spec(self.model.name)
        self._check_model_options()
        if self.data.dataset not in list_datasets():
            raise ValueError(f"unknown dataset {self.data.dataset!r}; registered datasets: {', '.join(list_datasets())}.")
        self.decompose_config()
        self.target_family()  # raises for an impossible target
        if self.decompose.fit_on_data < 0:
            raise ValueError(f"decompose.fit_on_data is a number of training images (0: off), got {self.decompose.fit_on_data}.")
        if self.decompose.fit_on_data and self.decompose.scheme != "channel":
            raise ValueError(f"decompose.fit_on_data needs decompose.scheme = 'channel' (got {self.decompose.scheme!r}): "
                             "the spatial scheme's factors are not a projection of the layer's output.")
        if self.model.plan and (self.trp.enabled or self.optim.epochs == 0):
            raise ValueError("model.plan trains a factorized net as it is, so it needs optim.epochs >= 1 and "
                             "trp.enabled = false (TRP acts on dense layers).")
        if self.model.plan and (self.decompose.target_speedup or self.decompose.fit_on_data):
            raise ValueError("model.plan decomposes the trained net at the plan's ranks: leave "
                             "decompose.target_speedup and decompose.fit_on_data at 0.")
        if self.optim.epochs == 0 and self.trp.enabled:
            raise ValueError("optim.epochs = 0 trains nothing, so TRP cannot act: set trp.enabled = false.")
        if self.trp.enabled:
            self.trp_config()
        if self.trp.enabled and self.trp.max_speedup and self.decompose.target_speedup:
            raise ValueError("trp.max_speedup decomposes the trained net at the ranks its projections keep, and "
                             "decompose.target_speedup at others: set one of them.")

    def decompose_config(self) -> DecomposeConfig:
        section = self.decompose
        return DecomposeConfig(
            scheme=section.scheme,  # type: ignore[arg-type]
            criterion=parse_criterion(section.criterion),
            rank_multiple=section.rank_multiple,
            include=tuple(section.include),
            exclude=tuple(section.exclude),
            decompose_linear=section.decompose_linear,
            grouped=section.grouped,  # type: ignore[arg-type]
            keep_unprofitable=section.keep_unprofitable,
        )

    def target_family(self) -> str | None:
        """How ``decompose.target_speedup`` is reached: the criterion family it searches, or
        ``"allocate"`` (``decompose.allocate_ranks``); None when unset."""
        target = self.decompose.target_speedup
        if target == 0:
            if self.decompose.allocate_ranks:
                raise ValueError("decompose.allocate_ranks allocates ranks for decompose.target_speedup: set a "
                                 "target_speedup >= 1 too, or drop allocate_ranks.")
            return None
        if not target >= 1:
            raise ValueError(f"decompose.target_speedup must be 0 (off) or >= 1, got {target}.")
        if self.decompose.allocate_ranks:
            return ALLOCATE
        family = parse_criterion(self.decompose.criterion).kind
        if family not in FAMILIES:
            raise ValueError(
                f"decompose.target_speedup searches the criterion's family, which must be one of {FAMILIES}; "
                f"got decompose.criterion = {self.decompose.criterion!r}: use e.g. 'energy:0.02', or set "
                "decompose.allocate_ranks = true."
            )
        return family

    def _check_model_options(self) -> None:
        """``model.options`` must be options of the model, and not the two a run sets itself."""
        if clash := sorted(set(self.model.options) & set(OPTIONS_SET_BY_RUN)):
            raise ValueError(f"model.options.{clash[0]} cannot be set: {OPTIONS_SET_BY_RUN[clash[0]]}.")
        if not self.model.options:
            return
        try:
            with torch.device("meta"):  # names unknown options, and runs the model's own checks of the values
                create_model(self.model.name, **self.model.options)
        except (TypeError, ValueError) as error:
            raise ValueError(f"model.options: {error}") from None

    def trp_config(self) -> TRPConfig:
        return TRPConfig(
            period=self.trp.period,
            project=self.trp.project,
            nuclear_weight=self.trp.nuclear_weight,
            nuclear_every=self.trp.nuclear_every,
            svd_on_host=self.trp.svd_on_host,
            decompose=self.decompose_config(),
            max_speedup=self.trp.max_speedup,
            max_speedup_tolerance=self.trp.max_speedup_tolerance,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        config = cls()
        for section_name, values in data.items():
            section = _section(config, section_name)
            if not isinstance(values, dict):
                raise ValueError(f"[{section_name}] must be a table of options, got {values!r}.")
            for key, value in values.items():
                _set(section, section_name, key, value)
        return config


def _section(config: TrainConfig, name: str) -> Any:
    known = [item.name for item in fields(config)]
    if name not in known:
        raise ValueError(f"unknown config section [{name}]; sections are {known}.")
    return getattr(config, name)


def _set(section: Any, section_name: str, key: str, value: Any) -> None:
    types = {item.name: item for item in fields(section)}
    if key not in types:
        raise ValueError(f"unknown option {section_name}.{key}; [{section_name}] has {sorted(types)}.")
    current = getattr(section, key)
    if isinstance(current, bool) and not isinstance(value, bool):
        raise ValueError(f"{section_name}.{key} must be true or false, got {value!r}.")
    if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    elif isinstance(current, int) and not isinstance(current, bool) and isinstance(value, float) and value.is_integer():
        value = int(value)
    if type(current) is not type(value) and not (isinstance(current, list) and isinstance(value, list)):
        raise ValueError(
            f"{section_name}.{key} must be a {type(current).__name__}, got {value!r} ({type(value).__name__})"
            + (f"; write a TOML inline table, e.g. {section_name}.{key}={{name = \"value\"}}." if isinstance(current, dict)
               else ".")
        )
    if isinstance(current, list):
        numeric = bool(current) and all(isinstance(item, (int, float)) for item in current)
        wanted = (int, float) if numeric else str
        if not all(isinstance(item, wanted) and not isinstance(item, bool) for item in value):
            raise ValueError(f"{section_name}.{key} must be a list of {'numbers' if numeric else 'strings'}, got {value!r}.")
    setattr(section, key, value)


def _read_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ValueError(f"config file {path} does not exist; see configs/ for examples.")
    text = path.read_text()
    if path.suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise ValueError(f"{path} is YAML: install PyYAML (pip install pyyaml) or use a .toml config.") from None
        data = yaml.safe_load(text) or {}
    else:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as error:
            raise ValueError(f"{path} is not valid TOML: {error}.") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a table of sections, e.g. [optim] lr = 0.1.")
    return data


def apply_overrides(config: TrainConfig, overrides: list[str]) -> TrainConfig:
    """Apply ``section.key=value`` strings; the value is parsed as a TOML value, falling back
    to a plain string (so ``run.out_dir=runs/x`` needs no quotes)."""
    for override in overrides:
        key, sep, text = override.partition("=")
        section_name, dot, option = key.strip().partition(".")
        if not sep or not dot:
            raise ValueError(f"cannot read override {override!r}; write section.key=value, e.g. optim.lr=0.05.")
        try:
            value = tomllib.loads(f"value = {text}")["value"]
        except tomllib.TOMLDecodeError:
            value = text
        _set(_section(config, section_name), section_name, option, value)
    return config


def load_train_config(path: str | Path | None, overrides: list[str] = ()) -> TrainConfig:
    """Defaults, then the file (if any), then the overrides; validated."""
    config = TrainConfig.from_dict(_read_file(Path(path))) if path else TrainConfig()
    apply_overrides(config, list(overrides))
    config.validate()
    return config
