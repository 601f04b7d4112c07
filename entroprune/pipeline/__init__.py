"""The one compression pipeline (``compress``) and its settings."""

from .config import CompressConfig, CompressError, parse_target
from .pipeline import compress

__all__ = ["CompressConfig", "CompressError", "compress", "parse_target"]
