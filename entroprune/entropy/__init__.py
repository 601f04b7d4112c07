"""Entropy engine (docs/METHODS.md sections 1, 4 and 5): estimators on tensors,
measuring sites and rectifiers, streaming statistics."""

from .estimators import (
                         aura_matrices,
                         binary_entropy,
                         layer_state_entropy,
                         mass_entropy,
                         quantize,
                         spatial_aura_entropy,
                         state_entropy,
)
from .sites import Site, conv_sites, rectifiers
from .stats import ActivationStats, EntropyConfig, RectifierStats

__all__ = ["ActivationStats", "EntropyConfig", "RectifierStats", "Site", "aura_matrices", "binary_entropy",
           "conv_sites", "layer_state_entropy", "mass_entropy", "quantize", "rectifiers",
           "spatial_aura_entropy", "state_entropy"]
