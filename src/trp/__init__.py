"""trp: Trained Rank Pruning (Xu et al., IJCAI 2020) for PyTorch models.

Factorize a trained model's conv and linear layers into low-rank pairs::

    import torch, trp
    model = trp.models.create_model("resnet20")
    report = trp.decompose_(model, trp.DecomposeConfig(scheme="spatial"), torch.randn(1, 3, 32, 32))
    print(report.table())
"""

from . import data, export, fold, latency, measured, models, target  # submodules, as torch.nn is
from .checkpoint import Checkpoint, CheckpointError, load_decomposed, read_checkpoint, save_checkpoint
from .config import DecomposeConfig
from .counting import MacCount, count_macs
from .criteria import (
    EnergyCriterion,
    FixedRankCriterion,
    FractionCriterion,
    RankCriterion,
    ValueCriterion,
    parse_criterion,
)
from .layers import ChannelWiseConv2d, LowRankLinear, SpatialWiseConv2d
from .lowrank import LowRankSolution, matrix_to_weight, truncated_svd, weight_to_matrix
from .plan import PlanEntry, RankPlan
from .rank_training import TRPConfig, TRPHandle, attach_trp
from .report import DecompositionReport, LayerReport
from .response_fit import LayerFit, decompose_on_data_
from .surgery import apply_plan_, decompose_, densify_

__version__ = "0.1.0"

__all__ = [
    "data",
    "export",
    "fold",
    "latency",
    "measured",
    "models",
    "target",
    "decompose_",
    "decompose_on_data_",
    "LayerFit",
    "apply_plan_",
    "densify_",
    "attach_trp",
    "TRPConfig",
    "TRPHandle",
    "DecomposeConfig",
    "DecompositionReport",
    "LayerReport",
    "RankPlan",
    "PlanEntry",
    "EnergyCriterion",
    "ValueCriterion",
    "FixedRankCriterion",
    "FractionCriterion",
    "RankCriterion",
    "parse_criterion",
    "ChannelWiseConv2d",
    "SpatialWiseConv2d",
    "LowRankLinear",
    "LowRankSolution",
    "truncated_svd",
    "weight_to_matrix",
    "matrix_to_weight",
    "count_macs",
    "MacCount",
    "save_checkpoint",
    "read_checkpoint",
    "load_decomposed",
    "Checkpoint",
    "CheckpointError",
]
