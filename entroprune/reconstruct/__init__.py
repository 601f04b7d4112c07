"""Feature-map reconstruction of pruned models (docs/METHODS.md section 7) and
the ridge least squares it shares with the other refits of the package."""

from .least_squares import Moments, NonFiniteError, moments, refit, relative_error
from .reconstruct import ReconstructConfig, ReconstructError, Reconstructor, reconstruct

__all__ = ["Moments", "NonFiniteError", "ReconstructConfig", "ReconstructError", "Reconstructor", "moments",
           "reconstruct", "refit", "relative_error"]
