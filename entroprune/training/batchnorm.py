"""Re-estimating BatchNorm statistics after pruning ("adaptive BN", as in
B. Li et al., "EagleEye: Fast Sub-net Evaluation for Efficient Neural Network
Pruning", ECCV 2020).

A pruned, not fine-tuned network keeps the running means and variances of
the unpruned one, although the inputs of its BatchNorm layers changed; its
accuracy is then often at chance and says little about how well it will
fine-tune. Recomputing the statistics on a few hundred training images (no
gradient step) is cheap and restores a meaningful accuracy.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..data import iterate_batches

_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, images: torch.Tensor, batch_size: int = 256) -> int:
    """Replace the running statistics of every BatchNorm layer of ``model`` (in
    place) by their cumulative average over ``images`` (N, C, H, W), computed in
    training mode without any gradient step; returns the number of layers reset.
    Each batch's variance is the unbiased one, as in PyTorch's own running update."""
    layers = [m for m in model.modules() if isinstance(m, _BN) and m.track_running_stats]
    if not layers:
        return 0
    if images.shape[0] < 2:
        raise ValueError("BatchNorm recalibration needs at least 2 images")
    was_training = model.training
    saved = [m.momentum for m in layers]
    for m in layers:
        m.reset_running_stats()
        m.momentum = None                    # cumulative moving average: an equal weight per batch
    model.train()
    for xb, _ in iterate_batches(images, torch.zeros(len(images)), batch_size):
        if xb.shape[0] > 1:                  # a single-image batch has no variance
            model(xb)
    for m, momentum in zip(layers, saved):
        m.momentum = momentum
    model.train(was_training)
    return len(layers)
