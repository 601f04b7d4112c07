"""Depth reduction (docs/METHODS.md sections 4 and 5): EASIER and NEPENTHE
remove rectifiers (``easier.py``, ``nepenthe.py``, the random baseline in
``random_baseline.py``, their shared resumable loop in ``runner.py``), and
folding merges the linear neighbours they leave (``fold*.py``).

Importing this package registers the ``Zero`` and ``Constant`` leaves with save/load."""

# the loops themselves: entroprune.depth.easier.easier / entroprune.depth.nepenthe.nepenthe
# (not re-exported here: the function names would hide their modules)
from .easier import EasierConfig
from .fold import FoldConfig, fold, fold_summary_text
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
from .runner import DepthConfig, DepthResult

# old name, kept only until cli/fold_cmds.py imports fold_summary_text (not to be
# confused with entroprune.reporting.summarize, which returns a ModelSummary)
summarize = fold_summary_text

__all__ = ["DepthConfig", "DepthResult", "EasierConfig", "NepentheConfig",
           "Constant", "ConvGeometry", "Deviation", "FoldConfig", "FoldError", "Zero", "absorb_skip", "compose_convs",
           "compose_linears", "fold", "fold_batchnorm", "fold_summary_text", "interior_mask", "measure_merge"]
