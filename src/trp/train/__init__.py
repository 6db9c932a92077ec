"""``trp train``: training with TRP, then decomposition and evaluation with no fine-tuning."""

from .config import TrainConfig, apply_overrides, load_train_config
from .loop import TrainingDiverged
from .run import RunInterrupted, method_label, run_training

__all__ = ["TrainConfig", "load_train_config", "apply_overrides", "run_training", "method_label", "TrainingDiverged", "RunInterrupted"]
