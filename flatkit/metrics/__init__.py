"""Sample-quality metrics: FID / KID with a FID library's detector or the user's, and weight-free distances.

- :mod:`flatkit.metrics.frechet`: Fréchet distance between Gaussians (Dowson & Landau 1982; Heusel et al.
2017) in
  float64 with an eigen-decomposition square root, feature statistics, pytorch-fid style ``mu``/``sigma``
  files.
- :mod:`flatkit.metrics.kid`: kernel inception distance (Bińkowski et al. 2018), unbiased MMD² with the cubic
  polynomial kernel, averaged over subsets.
- :mod:`flatkit.metrics.detector`: pytorch-fid's, clean-fid's or torch-fidelity's Inception (from their local
  caches), or the user's detector (torch.export ``.pt2``, TorchScript, ``MODULE:FACTORY``), run on uint8 images.
- :mod:`flatkit.metrics.distances`: weight-free distances on pixels (sliced Wasserstein-2, Fréchet distance on
  average-pooled pixels). These are never called FID.
"""

from flatkit.metrics.distances import (
    pixel_frechet_distance,
    sliced_wasserstein,
    sliced_wasserstein_gaussian,
    wasserstein2_1d,
    weight_free_distances,
)
from flatkit.metrics.frechet import (
    feature_statistics,
    frechet_distance,
    load_statistics,
    save_statistics,
    sqrtm_psd,
    trace_sqrt_product,
)
from flatkit.metrics.kid import kernel_inception_distance, polynomial_mmd2_unbiased

__all__ = [
    "feature_statistics",
    "frechet_distance",
    "kernel_inception_distance",
    "load_statistics",
    "pixel_frechet_distance",
    "polynomial_mmd2_unbiased",
    "save_statistics",
    "sliced_wasserstein",
    "sliced_wasserstein_gaussian",
    "sqrtm_psd",
    "trace_sqrt_product",
    "wasserstein2_1d",
    "weight_free_distances",
]
