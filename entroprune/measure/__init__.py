"""Measurement: MACs/params per layer, CPU latency (eager torch or ONNX Runtime), per-layer latency
tables, depth."""

from .complexity import LayerCost, count_macs, count_params, layer_costs
from .depth import Depth, count_depth
from .latency import LatencyPair, compare_latency, latency_pairs, measure_latency
from .latency_table import LatencyTable, LayerConfig, candidate_widths, layer_configs
from .runtime import OnnxRuntime, Runtime, TorchRuntime, get_runtime, time_models

__all__ = ["Depth", "LatencyPair", "LatencyTable", "LayerConfig", "LayerCost", "OnnxRuntime", "Runtime",
           "TorchRuntime", "candidate_widths", "compare_latency", "count_depth", "count_macs", "count_params",
           "get_runtime", "latency_pairs", "layer_configs", "layer_costs", "measure_latency", "time_models"]
