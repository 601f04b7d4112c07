"""Training, evaluation and data-parallel helpers."""

from .trainer import TrainConfig, evaluate, lr_at, train

__all__ = ["TrainConfig", "evaluate", "lr_at", "train"]
