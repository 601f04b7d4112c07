"""Depth reduction: folding the linear neighbours left when EASIER / NEPENTHE
replace rectifiers by the identity (METHODS.md sections 4 and 5).

Importing this package registers the ``Zero`` and ``Constant`` leaves with save/load."""

# the loops themselves: entroprune.depth.easier.easier / entroprune.depth.nepenthe.nepenthe
# (not re-exported here: the function names would hide their modules)
from .easier import DepthResult, EasierConfig
from .fold import FoldConfig, fold, summarize
from .fold_layers import (
    Constant,
    ConvGeometry,
    Deviation,
    FoldError,
    Zero,
    absorb_skip,
    compose_convs,
    compose_linears,
    fold_batchnorm,
    interior_mask,
    measure_merge,
)
from .nepenthe import NepentheConfig

__all__ = ["DepthResult", "EasierConfig", "NepentheConfig",
           "Constant", "ConvGeometry", "Deviation", "FoldConfig", "FoldError", "Zero", "absorb_skip", "compose_convs",
           "compose_linears", "fold", "fold_batchnorm", "interior_mask", "measure_merge", "summarize"]
