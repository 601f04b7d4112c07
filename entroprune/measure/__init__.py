"""Measurement: MACs/params per layer, CPU latency, depth."""

from .complexity import LayerCost, count_macs, count_params, layer_costs
from .depth import Depth, count_depth
from .latency import LatencyPair, compare_latency, latency_pairs, measure_latency

__all__ = ["Depth", "LatencyPair", "LayerCost", "compare_latency", "count_depth", "count_macs",
           "count_params", "latency_pairs", "layer_costs", "measure_latency"]
