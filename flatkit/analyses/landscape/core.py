"""``landscape(obj, ...)``: the loss on a 1-D or 2-D slice ``L(θ + a·d1 + b·d2)`` (Li et al. 2018, Sec. 4).

The grid is computed in blocks of grid points; after each block the partial result (values with NaN where not
computed yet, and a ``done`` mask) is written to the output folder, so a killed run resumes where it stopped.
Blocks have fixed boundaries and each block is computed by the same path whatever happened before, so a resumed
grid equals an uninterrupted one bit for bit. The configuration hash covers every input (grid, direction kind,
the directions' and parameters' bytes, the evaluation banks); a resume with another hash is refused.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from flatkit import distributed as dist
from flatkit.analyses.directions import (
    ParamDict,
    Plane,
    direction_fingerprint,
    eigen_directions,
    gaussian_like,
    interpolation_direction,
    normalize_direction,
    plane_directions,
    random_direction,
)
from flatkit.analyses.landscape.evaluate import (
    PointBuffer,
    calibrate,
    check_mode,
    loss_float64,
    losses_sequential,
    losses_vmap,
)
from flatkit.analyses.landscape.grid import axis, grid_coefficients, parse_span
from flatkit.config import config_hash
from flatkit.errors import UsageError
from flatkit.results import Result
from flatkit.settings import BANK_FIELDS, LandscapeSettings, takes

DIRECTION_KINDS = ("random", "eigen", "interp", "pca", "given")


@dataclass
class LandscapeResult(Result):
    """A 1-D / 2-D loss slice for one or several models (``values[m]`` is model m's grid).

    ``values`` has shape (M, P) for 1-D and (M, P, Q) for 2-D, ``values[m, i, j] = L_m(θ_m + a_i d1 + b_j d2)``;
    NaN where ``done`` is False (not computed yet) and where the loss itself was not finite (``done`` True).
    """

    name = "landscape"
    dims: int = 2
    points: int = 0
    coords_a: np.ndarray = field(default_factory=lambda: np.zeros(0))
    coords_b: np.ndarray = field(default_factory=lambda: np.zeros(0))
    values: np.ndarray = field(default_factory=lambda: np.zeros(0))
    done: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    labels: list = field(default_factory=list)
    loss_centre: list = field(default_factory=list)  # L_m(θ_m) at (0, 0), from the grid
    loss0: list = field(default_factory=list)  # L_m(θ_m) evaluated at θ_m itself (also when the grid misses 0)
    directions: str = "random"
    norm: str = "filter"
    bias: str = "zero"
    seed: int = 0
    span: list = field(default_factory=list)  # [lo, hi]
    marks: list = field(default_factory=list)  # [[label, a, b?], ...]: the checkpoints on an interp line/plane
    eigenvalues: list = field(default_factory=list)  # per model, for eigen directions
    explained_variance: list = field(default_factory=list)  # PCA directions: variance ratio of each
    direction_norms: list = field(default_factory=list)  # per model [‖d1‖, ‖d2‖], and ‖θ‖ below
    param_norms: list = field(default_factory=list)
    mode: str = "sequential"
    batch_points: int = 1
    timing: dict = field(default_factory=dict)
    config_hash: str = ""
    complete: bool = False
    n_evaluations: int = 0
    wall_time_s: float = 0.0
    meta: dict = field(default_factory=dict)

    @property
    def L_theta(self) -> list:
        """L(θ_m) of each model on the result's bank (the loss-based results' common name: ``loss0``)."""
        return list(self.loss0)

    @property
    def coords(self) -> tuple[np.ndarray, ...]:
        return (self.coords_a,) if self.dims == 1 else (self.coords_a, self.coords_b)

    @classmethod
    def load(cls, directory: str | Path, name: str | None = None) -> LandscapeResult:
        """``landscape.json`` + ``landscape.npz`` from a folder (what ``--replot`` and ``--resume`` read)."""
        if not (Path(directory) / f"{name or cls.name}.npz").is_file():
            raise UsageError(f"{directory}: no landscape.json / landscape.npz in this folder")
        res = super().load(directory, name)
        res.values = np.asarray(res.values, dtype=np.float64)
        res.done = np.asarray(res.done, dtype=bool)
        res.coords_a = np.asarray(res.coords_a, dtype=np.float64)
        res.coords_b = np.asarray(res.coords_b, dtype=np.float64)
        return res


# ---------------------------------------------------------------------------------------------------------


def _theta(obj: Any) -> ParamDict:
    return {k: v.detach() for k, v in obj.params.items()}


def _resolve_directions(objs: Sequence[Any], dims: int, directions: Any, norm: str, bias: str, seed: int,
                        ) -> tuple[str, list[list[ParamDict]], list[list[float]], list, list[Any]]:
    """Per model: its direction list; plus eigenvalues, marks, and the objectives whose grids are computed."""
    thetas = [_theta(o) for o in objs]
    g = torch.Generator(device="cpu")
    g.manual_seed(int(seed))
    if directions is None or directions == "random":
        # one Gaussian draw, normalised to each model's own weights (Li et al. 2018: comparable across models)
        raw = [gaussian_like(thetas[0], g) for _ in range(dims)]
        per = [[normalize_direction({k: r[k].to(th[k].device) for k in r}, th, norm=norm, bias=bias)
                for r in raw] for th in thetas]
        return "random", per, [], [], list(objs)
    if directions == "eigen":
        per, eig = [], []
        for o in objs:
            vecs, lam = eigen_directions(o, k=dims, seed=seed)
            per.append(vecs)
            eig.append([float(x) for x in lam])
        return "eigen", per, eig, [], list(objs)
    if directions == "interp":
        if len(objs) < 2:
            raise UsageError("directions interp: needs a second checkpoint (--compare CKPT2 [CKPT3])")
        if len(objs) > 3:
            raise UsageError("directions interp: takes two checkpoints (a line) or three (a plane)")
        if len(objs) == 3:
            if dims != 2:
                raise UsageError("dims: the plane through three checkpoints needs --dims 2")
            plane = plane_directions(*thetas)
        else:
            plane = interpolation_direction(thetas[0], thetas[1])
            if dims == 2:  # the line and a random filter-normalised second direction
                d2 = random_direction(thetas[0], g, norm=norm if norm != "none" else "filter", bias=bias)
                plane = Plane(plane.directions + [d2], np.array([[0.0, 0.0], [1.0, 0.0]]))
        marks = [[f"ckpt{i}", *map(float, row)] for i, row in enumerate(plane.points)]
        return "interp", [plane.directions], [], marks, [objs[0]]
    if isinstance(directions, Plane):
        dirs = directions.directions
        names = directions.names or [f"point{i}" for i in range(len(directions.points))]
        marks = [[names[i], *map(float, row)] for i, row in enumerate(directions.points)]
    else:
        dirs, marks = list(directions), []
    if len(dirs) != dims:
        raise UsageError(f"directions: {len(dirs)} direction(s) given for --dims {dims}")
    for d in dirs:
        from flatkit.analyses.directions import check_compatible

        check_compatible(thetas[0], d, "--directions")
    return "given", [[{k: v.to(device=thetas[0][k].device, dtype=thetas[0][k].dtype) for k, v in d.items()}
                      for d in dirs]], [], marks, [objs[0]]


def _objective_config(o: Any) -> Any:
    cfg = getattr(o, "config", None)
    return cfg.to_dict() if hasattr(cfg, "to_dict") else cfg


def _check_memory(obj: Any, compare: Sequence[Any], s: LandscapeSettings) -> None:
    """Refuse a grid (or a vmapped block of grid points) the device cannot hold, before allocating it."""
    from flatkit import budget

    dev = getattr(obj, "device", "cpu")
    budget.check_landscape(s.points, s.dims, 1 if s.directions == "interp" else 1 + len(compare), dev)
    if s.batch_points is not None and s.mode != "sequential":  # a vmapped block: a parameter copy per point
        n_params = sum(v.numel() for v in obj.params.values())
        budget.check("batch_points", s.batch_points, f"a vmapped block of {s.batch_points} grid points",
                     budget.landscape_block_bytes(s.batch_points, n_params), dev)


@takes(LandscapeSettings, skip=(*BANK_FIELDS, "directions"))
def landscape(
    obj: Any,
    directions: Any = LandscapeSettings.directions,
    compare: Sequence[Any] = (),
    labels: Sequence[str] | None = None,
    out: str | Path | None = None,
    resume: bool = False,
    progress: Callable[[int, int], None] | None = None,
    check: bool = True,
    *,
    settings: LandscapeSettings,
) -> LandscapeResult:
    """The loss on a grid ``θ + a·d1 (+ b·d2)``, a, b over ``span``, for ``obj`` and each objective in ``compare``.

    ``directions``: "random" (Gaussian, normalised per model by ``norm`` / ``bias``), "eigen" (each
    model's top Hessian eigenvectors, unit norm), "interp" (the line from ``obj`` to ``compare[0]``, or the plane
    through ``obj``, ``compare[0]``, ``compare[1]``; one grid), a list of parameter dicts or a
    :class:`~flatkit.analyses.directions.Plane` (used as given; e.g. from
    :func:`~flatkit.analyses.directions.pca_directions`). ``span``: R for [−R, R] (default 1) or (lo, hi)
    (default (−0.5, 1.5) for "interp"). ``mode``: "vmap" (``batch_points`` grid points per forward),
    "sequential", or "auto" (time both on one block and keep the faster). ``out``: folder where the partial
    result is written after every block; ``resume=True`` continues the partial result found there (refused
    when its configuration hash differs). ``check``: first verify that two evaluations of each objective
    agree bit for bit. ``settings``: a :class:`~flatkit.settings.LandscapeSettings` instead of the keywords.
    """
    given, s = None, settings
    if directions is not None and not isinstance(directions, str):  # a Plane or a list of direction dicts
        given, s = directions, settings.replace(directions="random")
    elif directions not in (None, LandscapeSettings.directions):
        s = settings.replace(directions=directions)
    t_start = time.perf_counter()
    check_mode(s.mode)
    if s.directions == "pca" and given is None:
        raise UsageError("directions 'pca': pass the PCA directions as a Plane (see pca_directions)")
    span = s.span if s.span is not None else (-0.5, 1.5) if s.directions == "interp" else 1.0
    lo, hi = parse_span(span)
    _check_memory(obj, compare, s)
    ax = axis(lo, hi, s.points)
    coeffs = grid_coefficients([ax] * s.dims)
    objs = [obj, *compare]
    warn_non_finite_all(objs)  # NaN weights: their losses are recorded as null (a mask), with a warning
    if check:
        for o in objs:
            if hasattr(o, "check_determinism"):
                o.check_determinism()
    kind, per_dirs, eigvals, marks, grid_objs = _resolve_directions(
        objs, s.dims, given if given is not None else s.directions, s.norm, s.bias, s.seed)
    labels, marks = _grid_labels(labels, objs, len(grid_objs), kind, marks)
    thetas = [_theta(o) for o in grid_objs]
    for d_list in per_dirs:
        for d in d_list:
            for k, v in d.items():
                if v.shape != thetas[0][k].shape:
                    raise UsageError(f"directions: parameter {k} has the wrong shape")
    dev = next(iter(thetas[0].values())).device
    bp = s.batch_points if s.batch_points is not None else 32 if dev.type == "cuda" else 8
    cfg = _hash_config(s, lo, hi, kind, bp, grid_objs, thetas, per_dirs)
    chash = config_hash(cfg)
    outdir = Path(out) if out is not None else None
    # several ranks (torchrun): same inputs everywhere, rank 0 reads the saved run and times the modes
    dist.check_agreement({"configuration hash (checkpoints, bank, directions)": chash}, "landscape",
                         options=False)
    shape = (len(grid_objs),) + (len(ax),) * s.dims
    values, done, mode, timing = np.full(shape, np.nan, dtype=np.float64), np.zeros(shape, dtype=bool), s.mode, {}
    if resume:
        prev = _read_previous(outdir, chash)
        if prev is not None:
            values, done, mode, timing = prev
    first_block = None  # model 0's first block, when the calibration computed it completely
    if mode == "auto":
        block = coeffs[: min(bp, len(coeffs))]
        mode, timing, first_block = dist.run_on_main(
            lambda: calibrate(grid_objs[0], thetas[0], per_dirs[0], block, return_values=True))
    res = LandscapeResult(
        dims=s.dims, points=int(s.points), coords_a=ax, coords_b=ax if s.dims == 2 else np.zeros(0),
        values=values, done=done, labels=labels, directions=kind, norm=s.norm, bias=s.bias, seed=int(s.seed),
        span=[lo, hi], marks=marks, eigenvalues=eigvals,
        direction_norms=[[_norm(d) for d in dl] for dl in per_dirs], param_norms=[_norm(t) for t in thetas],
        mode=mode, batch_points=int(bp), timing=timing, config_hash=chash,
        meta={"config": s.to_dict(), "grid": cfg, "objective": cfg["objectives"][0]})
    n_eval = _compute(res, grid_objs, thetas, per_dirs, coeffs, bp, first_block, outdir, progress)
    _finish(res, grid_objs, ax, n_eval, bp if mode == "vmap" else 1, cfg)
    res.wall_time_s = time.perf_counter() - t_start
    if outdir is not None and dist.is_main():
        res.save(outdir)
    return res


def _grid_labels(labels: Sequence[str] | None, objs: list, M: int, kind: str, marks: list) -> tuple[list, list]:
    """The labels of the grids (one per model; an interpolation's one grid is labelled "A → B") and the marks."""
    labels = list(labels) if labels is not None else [f"model{m}" for m in range(len(objs))]
    if len(labels) < M:
        raise UsageError(f"labels: {len(labels)} given for {M} models")
    if kind == "interp":  # one grid through the checkpoints; the marks carry their labels
        marks = [[labels[i], *mk[1:]] for i, mk in enumerate(marks)]
        labels = [" → ".join(labels[:len(objs)])]
    return labels[:M], marks


def _hash_config(s: LandscapeSettings, lo: float, hi: float, kind: str, bp: int, grid_objs: list, thetas: list,
                 per_dirs: list) -> dict:
    """Every input of the grid (its hash guards ``resume``)."""
    cfg = {
        "dims": s.dims, "points": int(s.points), "span": [lo, hi], "directions": kind, "norm": s.norm,
        "bias": s.bias, "seed": int(s.seed), "batch_points": int(bp),
        "objectives": [_objective_config(o) for o in grid_objs],
        "fingerprint": direction_fingerprint(thetas + [d for dl in per_dirs for d in dl]),
    }
    precision = getattr(grid_objs[0], "precision", "fp32")
    channels_last = bool(getattr(grid_objs[0], "channels_last", False))
    if precision != "fp32" or channels_last:  # (absent for fp32: the hashes of earlier runs stay valid)
        cfg["precision"] = {"precision": precision, "channels_last": channels_last}
    return cfg


def _read_previous(outdir: Path | None, chash: str) -> tuple | None:
    """(values, done, mode, timing) of the interrupted run in ``outdir`` (rank 0 reads; None: nothing there)."""
    if outdir is None:
        raise UsageError("resume: needs the folder of the interrupted run (--out DIR)")

    def read_prev() -> tuple | None:
        if not (outdir / "landscape.json").is_file():
            return None
        prev = LandscapeResult.load(outdir)
        if prev.config_hash != chash:
            raise UsageError(f"resume {outdir}: the configuration differs from the saved run's "
                             f"(hash {chash} vs {prev.config_hash}); use a new --out")
        return prev.values.copy(), prev.done.copy(), prev.mode, dict(prev.timing)

    return dist.run_on_main(read_prev)


def _compute(res: LandscapeResult, grid_objs: list, thetas: list, per_dirs: list, coeffs: np.ndarray, bp: int,
             first_block: Any, outdir: Path | None, progress: Callable[[int, int], None] | None) -> int:
    """Fill ``res.values`` / ``res.done`` block by block (saving after each round); returns the points computed.

    Fixed block boundaries (multiples of ``bp``), whatever the mode, so resumes are bit-exact; the blocks still
    to compute are dealt round-robin to the ranks (one rank: one block per round) and each round's blocks are
    gathered (float64) into every rank's grid before rank 0 saves the partial result."""
    total = int(res.done.size)
    n_eval = 0
    pending = [(m, start, min(start + bp, len(coeffs))) for m in range(len(grid_objs))
               for start in range(0, len(coeffs), bp)
               if not res.done[m].reshape(-1)[start:min(start + bp, len(coeffs))].all()]
    W = dist.world()
    points: dict[int, Any] = {}  # the current model's PointBuffer, built once per grid, not per block (one kept)
    for r0 in range(0, len(pending), W):
        round_blocks = pending[r0:r0 + W]
        mine = round_blocks[dist.rank()] if dist.rank() < len(round_blocks) else None
        computed = None
        if mine is not None:
            m, start, stop = mine
            block = coeffs[start:stop]
            if first_block is not None and m == 0 and start == 0 and len(first_block) == stop:
                computed = (mine, first_block)  # the same path and inputs: the values it would compute
            elif res.mode == "vmap":
                computed = (mine, losses_vmap(grid_objs[m], thetas[m], per_dirs[m], block))
            else:
                if m not in points:
                    points = {m: PointBuffer.build(thetas[m], per_dirs[m])}
                computed = (mine, losses_sequential(grid_objs[m], thetas[m], per_dirs[m], block, points[m]))
        for item in dist.all_gather_objects(computed):
            if item is None:
                continue
            (m, start, stop), v = item
            flat_vals = res.values[m].reshape(-1)
            flat_done = res.done[m].reshape(-1)
            flat_vals[start:stop] = v
            flat_done[start:stop] = True
            n_eval += stop - start
            res.values[m] = flat_vals.reshape(res.values[m].shape)
            res.done[m] = flat_done.reshape(res.done[m].shape)
        if outdir is not None and dist.is_main():
            res.save(outdir)
        if progress is not None and dist.is_main():
            progress(int(res.done.sum()), total)
    return n_eval


def _finish(res: LandscapeResult, grid_objs: list, ax: np.ndarray, n_eval: int, batch_points_used: int,
            cfg: dict) -> None:
    """Completion, the centre loss L_m(θ_m) and the run's meta."""
    res.complete = bool(res.done.all())
    centre = tuple(int(np.argmin(np.abs(ax))) for _ in range(res.dims))
    res.loss_centre = [float(res.values[(m, *centre)]) if ax[centre[0]] == 0.0 else float("nan")
                       for m in range(len(grid_objs))]
    res.loss0 = [loss_float64(o, _theta(o)) for o in grid_objs]  # L(θ) itself, whatever the grid
    res.n_evaluations = n_eval
    res.meta["batch_points_used"] = batch_points_used
    res.meta["precision"] = getattr(grid_objs[0], "precision", "fp32")
    res.meta["channels_last"] = bool(getattr(grid_objs[0], "channels_last", False))
    sizes = {"batch_size": getattr(grid_objs[0], "batch_size", None),
             "vmap_points": getattr(grid_objs[0], "_vmap_points", None)}
    asked = getattr(getattr(grid_objs[0], "config", None), "batch_size", None)
    if (sizes["batch_size"] is not None and sizes["batch_size"] != asked) or sizes["vmap_points"] is not None:
        res.meta["out_of_memory_sizes"] = sizes  # halved after running out of memory
    res.meta["non_finite_points"] = int((res.done & ~np.isfinite(res.values)).sum())
    if dist.world() > 1:
        res.meta["ranks"] = dist.world()


def warn_non_finite_all(objs: Sequence[Any]) -> None:
    from flatkit.finite import warn_non_finite

    for o in objs:
        warn_non_finite(o)


def _norm(d: ParamDict) -> float:
    return math.sqrt(sum(float((v.double() ** 2).sum()) for v in d.values()))
