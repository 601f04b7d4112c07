"""Files: atomic writes and the pruned-model file format."""

from .atomic import atomic_torch_save, atomic_write, atomic_write_json, atomic_write_text
from .model_file import ModelFileError, load, read_metadata, save

__all__ = ["ModelFileError", "atomic_torch_save", "atomic_write", "atomic_write_json",
           "atomic_write_text", "load", "read_metadata", "save"]
