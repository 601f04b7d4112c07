"""Reporting: before/after summaries, Markdown tables, figures."""

from .plots import layer_widths, plot_widths, save_figure
from .summary import ModelSummary, before_after_table, latency_dict, summarize
from .tables import markdown_table

__all__ = ["ModelSummary", "before_after_table", "latency_dict", "layer_widths", "markdown_table",
           "plot_widths", "save_figure", "summarize"]
