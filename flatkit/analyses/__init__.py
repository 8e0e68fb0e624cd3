"""The analyses: each takes an Objective (or a Run, for the sampling-based ones) and a settings dataclass and
returns a typed Result (see :mod:`flatkit.results`).

- :mod:`~flatkit.analyses.hessian`: top eigenvalues, trace, spectral density, per-timestep curvature;
- :mod:`~flatkit.analyses.sharpness`: Keskar / L2 / average / adaptive sharpness;
- :mod:`~flatkit.analyses.perturb`: the loss under random and worst-case weight perturbation;
- :mod:`~flatkit.analyses.landscape`: 1-D / 2-D slices (with :mod:`~flatkit.analyses.directions`);
- :mod:`~flatkit.analyses.robustness`: prior perturbation, exposure bias, quantization.
"""
