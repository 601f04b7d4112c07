"""Training, evaluation and data-parallel helpers."""

from .batchnorm import recalibrate_batchnorm
from .trainer import TrainConfig, evaluate, lr_at, train

__all__ = ["TrainConfig", "evaluate", "lr_at", "recalibrate_batchnorm", "train"]
