"""Generalized entropic sparsification (GES; T. Barisin, I. Horenko, arXiv
2404.04734): per-layer entropic feature weights on input channels, structural
removal of the unweighted ones, least-squares refit (METHODS.md section 6)."""

from .entropic import EntropicConfig, EntropicResult, refit, relative_error, solve
from .layerwise import SparsifyConfig, SparsifyError, find_producer, select_channels, sparsify

__all__ = ["EntropicConfig", "EntropicResult", "SparsifyConfig", "SparsifyError", "find_producer", "refit",
           "relative_error", "select_channels", "solve", "sparsify"]
