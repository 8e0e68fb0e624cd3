"""Loss-landscape slices (Li et al. 2018): grids, evaluation (vmap / sequential), resumable results."""

from flatkit.analyses.landscape.core import LandscapeResult, landscape
from flatkit.analyses.landscape.grid import axis, grid_coefficients, parse_span

__all__ = ["LandscapeResult", "landscape", "axis", "grid_coefficients", "parse_span"]
