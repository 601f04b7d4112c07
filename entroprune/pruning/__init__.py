"""Pruning: criteria (what to remove) separated from the structural pruner
(how to remove it to a MACs target)."""

from .entropy_importance import EntropyImportance  # (importing registers the aura and mass criteria)
from .greedy_refit import GreedyRefitCriterion  # (importing registers it)
from .importance import CRITERIA, Criterion, get_criterion, register_criterion
from .prune import MacsCost, prune_to_macs, prune_to_target
from .structural import PruneConfig, PruningError, parse_macs_target

__all__ = ["CRITERIA", "Criterion", "EntropyImportance", "GreedyRefitCriterion", "MacsCost", "PruneConfig",
           "PruningError", "get_criterion", "parse_macs_target", "prune_to_macs", "prune_to_target",
           "register_criterion"]
