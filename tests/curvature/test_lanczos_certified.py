"""Issue 16: the preallocated Lanczos basis, the certified stopping rule and block Lanczos (float64 oracles)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from flatkit import budget
from flatkit.curvature.lanczos import (
    Certifier,
    LanczosProcess,
    relative_residuals,
    ritz_bounds,
    top_eigenvalues,
)
from flatkit.curvature.vectors import cpu_generator, gaussian

from .helpers import quadratic, symmetric_with_spectrum


class MatOp:
    """H v for an explicit matrix, with the HVP interface Lanczos uses (device, dtype, count)."""

    def __init__(self, A: torch.Tensor) -> None:
        self.A, self.device, self.dtype, self.count = A, A.device, A.dtype, 0

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        self.count += 1
        return self.A @ v


class StackedLanczos:
    """The previous implementation: the basis a list, stacked into a fresh matrix at every reorthogonalisation."""

    def __init__(self, op, q1, generator):
        self.op, self.generator = op, generator
        self.Q, self.alpha, self.beta = [], [], []
        self._next = q1 / torch.linalg.vector_norm(q1)

    def _orthogonalise(self, w):
        for _ in range(2):
            if not self.Q:
                break
            Q = torch.stack(self.Q)
            w = w - Q.T @ (Q @ w)
        return w

    def step(self):
        q = self._next
        self.Q.append(q)
        w = self.op(q)
        self.alpha.append(float(torch.dot(q.to(torch.float64), w.to(torch.float64))))
        w = self._orthogonalise(w)
        b = float(torch.linalg.vector_norm(w.to(torch.float64)))
        scale = max(abs(x) for x in self.alpha) + max(self.beta, default=0.0)
        n = q.numel()
        if b <= 10 * math.sqrt(n) * torch.finfo(q.dtype).eps * max(scale, 1e-300) and len(self.alpha) < n:
            for _ in range(3):
                r = self._orthogonalise(gaussian((n,), self.generator, q.dtype, q.device))
                if float(torch.linalg.vector_norm(r)) > 1e-8:
                    break
            self.beta.append(0.0)
            self._next = r / torch.linalg.vector_norm(r)
        else:
            self.beta.append(b)
            self._next = w / b if b > 0 else w


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("low_rank", [False, True])
def test_preallocated_basis_is_bit_identical_to_the_stacked_one(dtype, low_rank):
    eigs = torch.linspace(-2.0, 9.0, 70, dtype=torch.float64)
    if low_rank:  # rank 3: breakdowns and random restarts
        eigs = torch.zeros(70, dtype=torch.float64)
        eigs[:3] = torch.tensor([5.0, 2.0, -1.0])
    A = symmetric_with_spectrum(eigs, seed=2).to(dtype)
    q1 = torch.randn(70, generator=torch.Generator().manual_seed(5), dtype=torch.float64).to(dtype)
    old = StackedLanczos(MatOp(A), q1.clone(), cpu_generator(9))
    for capacity in (40, None):  # exact size, and the doubling buffer
        new = LanczosProcess(MatOp(A), q1.clone(), generator=cpu_generator(9), capacity=capacity)
        for _ in range(40):
            new.step()
        assert new.Q.shape == (40, 70)
    for _ in range(40):
        old.step()
    assert new.alpha == old.alpha and new.beta == old.beta
    assert torch.equal(new.Q, torch.stack(old.Q))


def test_the_buffer_is_what_the_budget_estimates():
    n, steps = 50, 30
    proc = LanczosProcess(MatOp(torch.eye(n, dtype=torch.float64)), torch.ones(n, dtype=torch.float64),
                          capacity=steps)
    assert proc._buf.numel() * proc._buf.element_size() == budget.lanczos_bytes(steps, n, itemsize=8)
    assert budget.lanczos_bytes(steps, n) == (steps + 1) * n * 4  # float32 by default


def _hessian_like(rng: np.random.Generator, n: int) -> np.ndarray:
    """A bulk near 0 and 2-8 outliers, some in clusters of close eigenvalues (relative gaps 3-10 %), some
    farther apart."""
    e = rng.standard_normal(n) * rng.uniform(0.05, 0.3) + rng.exponential(0.1, n)
    c = int(rng.integers(2, 9))
    gaps = np.where(rng.random(c) < 0.5, 10 ** rng.uniform(-1.5, -1, c), rng.uniform(0.05, 0.4, c))
    e[:c] = rng.uniform(1, 10) * np.cumprod(np.r_[1, 1 - gaps[:-1]])
    return e


# Spectrum 196 of the generator's stream: λ_5 and λ_6 0.09 % apart. There, with k = 5, the Ritz value sits between
# them for many steps while its gap bound (gap to θ_6, not yet resolved) under-reports the error 20x; a move
# guard of a tenth of the claimed bound let it through, a twentieth does not (measured on 1,000 spectra).
HARD = (196,)


def _ritz_histories(runs: int = 30, steps: int = 36, extra: tuple[int, ...] = HARD):
    """Ritz values and residuals at every step of Lanczos on the first ``runs`` spectra of a seeded stream of
    clustered spectra, plus the spectra numbered ``extra`` further down the same stream."""
    rng = np.random.default_rng(1)
    out = []
    for i in range(max(runs, max(extra, default=-1) + 1)):
        n = int(rng.integers(60, 110))
        e = _hessian_like(rng, n)
        U, _ = np.linalg.qr(rng.standard_normal((n, n)))
        q1 = rng.standard_normal(n)
        if i >= runs and i not in extra:
            continue  # drawn only to keep the stream's spectra numbered as before
        proc = LanczosProcess(MatOp(torch.tensor((U * e) @ U.T)), torch.tensor(q1), capacity=steps)
        hist = []
        for _ in range(steps):
            proc.step()
            theta, _, res = proc.ritz()
            hist.append((theta, res))
        out.append((np.sort(e)[::-1], hist))
    return out


@pytest.fixture(scope="module")
def histories():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: threads only add overhead
    try:
        return _ritz_histories()
    finally:
        torch.set_num_threads(threads)


def _holds(err, bound):
    return bool(np.all(err <= bound * (1 + 1e-9) + 1e-12))


def test_certified_bounds_bound_the_true_error_where_the_plain_gap_rule_fails(histories):
    """At every step of many random clustered spectra, at loose and tight tolerances: wherever the residual bound
    holds (each Ritz value paired with its eigenvalue), the guarded bound holds too; the unguarded
    min(r, r²/gap) under-reports somewhere (one of two close eigenvalues still missing), and so does its stop."""
    plain_wrong = plain_stop_wrong = checked = certified = 0
    for lam, hist in histories:
        for k in (1, 2, 3, 5):
            for tol in (1e-1, 1e-2, 1e-3, 1e-4):
                cert = Certifier(k, tol)
                for m, (theta, res) in enumerate(hist, 1):
                    if m < k:
                        continue
                    done = cert.update(theta, res)
                    err = np.abs(lam[:k] - cert.theta)
                    if not _holds(err, cert.residuals):
                        continue  # a Ritz value not yet paired with its eigenvalue: no residual bound holds
                    checked += 1
                    assert _holds(err, cert.bounds), (k, tol, m, err, cert.bounds)
                    th, r, gapb = ritz_bounds(theta, res, k)
                    plain = np.minimum(r, gapb)
                    plain_wrong += not _holds(err, plain)
                    plain_stop_wrong += bool(np.all(plain <= tol * np.abs(th)) and np.any(err > tol * np.abs(lam[:k])))
                    if done:
                        certified += 1
                        assert np.all(err <= tol * np.abs(lam[:k]))
                        break
    assert checked > 1000 and certified > 200
    assert plain_wrong > 0 and plain_stop_wrong > 0


def _worst_under_report(lam, hist, k, tol):
    """The largest true error / reported bound over the steps where the residual bound holds (> 1: a bound
    below the true error; a 1e-12 slack for rounding, as :func:`_holds`)."""
    cert, worst = Certifier(k, tol), 0.0
    for m, (theta, res) in enumerate(hist, 1):
        if m < k:
            continue
        done = cert.update(theta, res)
        err = np.abs(lam[:k] - cert.theta)
        if _holds(err, cert.residuals):
            worst = max(worst, float(np.max(err / (cert.bounds + 1e-12))))  # 1e-12: _holds' rounding slack
        if done:
            break
    return worst


def test_the_move_guard_catches_a_ritz_value_between_two_close_eigenvalues(histories, monkeypatch):
    """Spectrum 196 (λ_5, λ_6 0.09 % apart), top 5 at 1e-3: with moves allowed up to a tenth of the claimed
    bound, the gap bound is taken while θ_5 still sits between the two and under-reports 20x; the shipped
    guard (a twentieth) keeps the residual bound there."""
    lam, hist = histories[-len(HARD)]
    assert (lam[4] - lam[5]) / lam[4] < 1e-3
    assert _worst_under_report(lam, hist, 5, 1e-3) <= 1 + 1e-9
    monkeypatch.setattr(Certifier, "MOVE", 0.1)
    assert _worst_under_report(lam, hist, 5, 1e-3) > 10


def test_certified_stop_needs_no_more_hvps_than_the_residual_rule(histories):
    saved = 0
    for _lam, hist in histories:
        for k in (1, 2, 3, 5):
            for tol in (1e-1, 1e-2, 1e-3, 1e-5):
                cert, new, old = Certifier(k, tol), None, None
                for m, (theta, res) in enumerate(hist, 1):
                    if m < k:
                        continue
                    if new is None and cert.update(theta, res):
                        new = m
                    if old is None and np.all(relative_residuals(theta, res)[np.argsort(theta)[::-1][:k]] < tol):
                        old = m
                old, new = old or len(hist) + 1, new or len(hist) + 1
                assert new <= old
                saved += old - new
    assert saved > 0


def test_top_eigenvalues_reports_certified_bounds_and_stops_no_later():
    eigs = torch.cat([torch.tensor([50.0, 31.0, 20.0, 12.5, 9.0], dtype=torch.float64),
                      torch.linspace(-3.0, 4.0, 195, dtype=torch.float64)])
    obj = quadratic(symmetric_with_spectrum(eigs))
    res = top_eigenvalues(obj, k=5, tol=1e-8, check=False)
    exact = np.array([50.0, 31.0, 20.0, 12.5, 9.0])
    assert res.certified and res.converged and res.meta["stop"] == "certified"
    assert np.all(np.abs(res.eigenvalues - exact) <= res.error_bounds + 1e-12)
    assert np.all(res.relative_bounds <= 1e-8)
    # the previous rule (every relative residual below tol) on the same Krylov space
    op = MatOp(symmetric_with_spectrum(eigs))
    proc = LanczosProcess(op, gaussian((200,), cpu_generator(0), torch.float64, torch.device("cpu")))
    while True:
        proc.step()
        theta, _, r = proc.ritz()
        if proc.m >= 5 and np.all(relative_residuals(theta, r)[np.argsort(theta)[::-1][:5]] < 1e-8):
            break
    assert res.hvp_count <= proc.m


def test_block_lanczos_finds_the_multiplicity_of_a_repeated_top_eigenvalue():
    eigs = torch.cat([torch.tensor([10.0, 10.0, 10.0, 7.0]), torch.linspace(-2.0, 4.0, 56)]).double()
    obj = quadratic(symmetric_with_spectrum(eigs))
    # tol 1e-6: single-vector Lanczos certifies before rounding errors grow the other copies of 10 (at 1e-8 it
    # runs on until they show up, through rounding alone)
    single = top_eigenvalues(obj, k=4, tol=1e-6, check=False)
    assert single.certified
    assert not np.allclose(single.eigenvalues, [10.0, 10.0, 10.0, 7.0], atol=1e-6)  # a copy of 10 is missed
    block = top_eigenvalues(obj, k=4, tol=1e-6, block_size=3, check=False)
    np.testing.assert_allclose(block.eigenvalues, [10.0, 10.0, 10.0, 7.0], atol=1e-7)
    assert block.certified and block.block_size == 3 and block.meta["method"] == "block lanczos"
    assert block.hvp_count < 60 and block.hvp_count % 3 == 0
    assert np.all(np.abs(block.eigenvalues - [10.0, 10.0, 10.0, 7.0]) <= block.error_bounds + 1e-9)


def test_block_lanczos_on_a_simple_spectrum_and_bad_block_size():
    eigs = torch.cat([torch.tensor([9.0, 6.0, 5.0]), torch.linspace(-1.0, 3.0, 37)]).double()
    obj = quadratic(symmetric_with_spectrum(eigs, seed=3))
    res = top_eigenvalues(obj, k=3, tol=1e-9, block_size=2, check=False)
    np.testing.assert_allclose(res.eigenvalues, [9.0, 6.0, 5.0], rtol=1e-8)
    from flatkit.errors import UsageError

    with pytest.raises(UsageError, match="--block-size"):
        top_eigenvalues(obj, k=1, block_size=0)
