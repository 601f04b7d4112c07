"""The one compression pipeline, ``entroprune.compress``, and its settings (``CompressConfig``)."""

from .config import CompressConfig, CompressError, parse_target
from .pipeline import compress

__all__ = ["CompressConfig", "CompressError", "compress", "parse_target"]
