"""The residual map N of a cone program's embedding and its bordered Jacobian
K at a point, with K's solves: what the derivative
(:mod:`conelayers._diff`) and refinement (:mod:`conelayers._refine`) share.

Notation (Agrawal, Barratt, Boyd, Busseti, Moursi, "Differentiating through a
cone program", 2019; diffcp). At a solution (x, y, s) of

    minimize cᵀx  subject to  Ax + s = b,  s ∈ K          (dual y ∈ K*)

let z = (u, v, w) = (x, y − s, 1), Π the projection onto ℝⁿ × K* × ℝ₊ (so that
Π(z) = (x, y, 1) by Moreau), D = DΠ_{K*}(v), and

    Q = [[ 0,  Aᵀ, c],        M = (Q − I)·DΠ(z) + I = [[  0,    AᵀD,   c],
         [−A,  0,  b],                                 [ −A,  I − D,   b],
         [−cᵀ, −bᵀ, 0]]                                [ −cᵀ,  −bᵀD,   0]].

A solution is a zero of the residual map N(z) = (Q − I)Π(z) + z, and M = DN(z).

M is singular at every solution: M z = N(z) = 0 and Π(z)ᵀ M = 0 (Q is skew and
DΠ(z) z = DΠ(z) Π(z) = Π(z)). The part of a solution of M dz = g along z (and
of Mᵀ r = h along Π(z)) changes nothing that is read from it, so both the
derivative and Newton's method solve the *bordered* system

    K = [[M, Π(z)], [zᵀ, 0]]:   K [dz; λ] = [g; 0],   Kᵀ [r; μ] = [h; 0],

nonsingular exactly when the null space of M is the line through z, i.e. when
the solution map is differentiable there. One LU of K per point (dense LAPACK
or sparse SuperLU, whichever :mod:`conelayers._factor` measured faster for K's
size and fill) serves every solve there (:meth:`Linearization.solve`), each
checked by its residual (with one step of iterative refinement). Where K is
singular or its condition number exceeds 1e12 (degenerate points: non-unique
solutions, no strict complementarity) the minimum-norm least-squares solution
is used, as diffcp does: through K's null spaces, which a bordering of K
certifies without an SVD where it can (:mod:`conelayers._nullspace`).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from ._batched import segment_sums, stack_rows
from ._bordered import BorderedPattern
from ._cones import ConeLayout
from ._dproj import DualProjection
from ._errors import DerivativeWarning
from ._factor import DenseLU, NearbyLU, SparseLU, SparseOrdering, dense, refined_solve
from ._nullspace import (
    _SINGULAR,
    _SOFT,
    _SVD_RCOND,
    _bordered_null,
    _CertifiedSingular,
    _guessed_null,
    _NullBasis,
    _SoftQR,
)
from ._typing import CSC, FloatArray, IntArray

__all__ = ["Linearization", "Structure", "values_many"]


# Residual of a linear solve (relative to its right-hand side) above which it
# gets one step of iterative refinement, and above which the result is reported.
_REFINE_RTOL = 1e-10
_WARN_RTOL = 1e-6
# Condition number of K above which the point counts as non-differentiable.
_COND_LIMIT = 1e12
# Largest bordered system solved densely (SVD least squares) at degenerate points.
_DENSE_LSTSQ_MAX = 1000
# Largest factorization of K an item keeps from the forward pass to the
# backward, and between derivative requests; larger ones are formed again for
# each use. A batch otherwise holds one per item: the 1,024-variable sparse QP
# (K of order 4,103; ~100 MB of factors per item when this was measured, 36 MB
# since SuperLU gets K without its stored zeros) peaked at 4.4 GB at B = 32,
# against cvxpylayers' 0.8 GB. The benchmark's other factorizations are at
# most 1.3 MB (the dense QP's, order 389).
_KEEP_BYTES = 16 * 2**20
# Up to this many stored entries, Kᵀv is formed on K's pattern: SciPy builds the
# transposed array first (~20 µs, a tenth of a small item's backward), but its
# product is faster on large K (dense QP, 85,000 entries: the backward 3.0 →
# 3.6 ms per item on the pattern).
_OWN_TRANSPOSE_NNZ = 5_000
# Relative residual an LU solve is refined to (``_refined_solve``).
_SOLVE_RTOL = 1e-15


def _warn(message: str) -> None:
    warnings.warn(message, DerivativeWarning, stacklevel=5)


@dataclass(frozen=True, eq=False)
class Structure:
    """Everything about the derivative that depends only on the program's
    structure: the dual-cone projection's pattern, K's pattern and the column
    ordering its sparse LUs use."""

    layout: ConeLayout
    dproj: DualProjection
    pattern: BorderedPattern
    a_rows: IntArray  # A's pattern: the row of each stored entry (CSC order)
    a_cols: IntArray  # ... and its column
    ordering: SparseOrdering  # (chosen on the first sparse factorization)

    @classmethod
    def of(cls, A_indices: IntArray, A_indptr: IntArray, n: int, layout: ConeLayout) -> Structure:
        dproj = DualProjection(layout, lowrank=True)
        pattern = BorderedPattern(A_indices, A_indptr, n, layout.dim, dproj)
        return cls(layout, dproj, pattern, np.asarray(A_indices, dtype=np.intp),
                   np.repeat(np.arange(n), np.diff(A_indptr)), SparseOrdering(pattern.order))


@dataclass(eq=False)
class Linearization:
    """The residual map N and its bordered Jacobian K at one point.

    ``residual`` is N(z) at z = (x, y − s, 1) with (x, y, s) the point the
    linearization was taken at (y = Π_{K*}(y − s) is re-projected, so y ∈ K*
    and s ∈ K hold exactly). :meth:`factor` forms K and its sparse LU.
    """

    structure: Structure
    A: CSC
    b: FloatArray
    c: FloatArray
    x: FloatArray
    y: FloatArray
    s: FloatArray
    pi: FloatArray  # Π(z) = (x, y, 1)
    z: FloatArray
    D_vals: FloatArray  # values of DΠ_{K*}(v) on structure.dproj's pattern
    residual: FloatArray
    scales: FloatArray = field(default_factory=lambda: np.ones(3))
    index: int = 0
    K: sp.csc_array | FloatArray | None = None
    lu: DenseLU | SparseLU | NearbyLU | _CertifiedSingular | None = None
    # The LU of a nearby point (the refinement iterate whose LU gave the last
    # Newton step), which :meth:`factor` reuses where it serves (see NearbyLU).
    nearby: SparseLU | DenseLU | None = field(default=None, repr=False)
    _svd_cache: tuple | None = field(default=None, repr=False)
    _soft: _SoftQR | None = field(default=None, repr=False)  # see _lstsq
    # Numerically null spaces of K (see ``_basis``) and those of a nearby point
    # (the previous refinement iterate), from which they are found without an SVD.
    _null: _NullBasis | None = field(default=None, repr=False)
    hint: _NullBasis | None = field(default=None, repr=False)
    _relative: float | None = field(default=None, repr=False)  # see relative_residual

    @classmethod
    def at(
        cls, structure: Structure, A: CSC, b: FloatArray, c: FloatArray, x: FloatArray,
        v: FloatArray, index: int = 0,
    ) -> Linearization:
        """Evaluate N and DΠ at z = (x, v, 1) (no factorization yet)."""
        return _linearizations(structure, [A], A.data[None], b[None], c[None], x[None],
                               v[None], [index])[0]

    @property
    def residual_norm(self) -> float:
        """‖N(z)‖∞ (absolute)."""
        return float(np.abs(self.residual).max())

    @property
    def relative_residual(self) -> float:
        """The largest of the dual, primal and gap residuals, each relative to its
        own scale: the measure refinement decreases and certificates bound
        (computed with the point, see :func:`_evaluate`)."""
        if self._relative is None:
            self._relative = float(_relative_residuals(self.residual[None], self.scales[None],
                                                       self.x.size)[0])
        return self._relative

    def row_relative_residual(self) -> float:
        """The largest primal or dual row of N, each relative to its own natural
        size: ‖Aᵢ‖∞‖x‖∞ + |bᵢ| + |sᵢ| for row i of b − Ax − s, ‖A:ⱼ‖∞‖y‖∞ + |cⱼ| for
        column j of Aᵀy + c (the row's coefficients at the point's scale, so
        that a row at an exact zero, x_j = s_j = 0, is judged as its neighbours).

        :attr:`relative_residual` divides each block by one scale, its largest
        entry, so a row scaled 1e-5 of the others counts 1e-5 as much: SCS's
        answer to a QP with rows scaled by 10^±5 refined to 6e-10 there with
        x off by more than its size and a constraint violated by 3.5 (found by
        a probe). Products with |A|: two sparse passes.
        """
        n = self.x.size
        absA = abs(sp.csc_array(self.A))
        row_max = np.zeros(absA.shape[0])
        np.maximum.at(row_max, absA.indices, absA.data)
        col_max = absA.max(axis=0).toarray().ravel() if absA.nnz else np.zeros(n)
        xs, ys = float(np.abs(self.x).max(initial=0.0)), float(np.abs(self.y).max(initial=0.0))
        primal = row_max * xs + np.abs(self.b) + np.abs(self.s)
        dual = col_max * ys + np.abs(self.c)
        r = self.residual
        with np.errstate(divide="ignore", invalid="ignore"):
            worst = max(float(np.max(np.abs(r[:n]) / dual, initial=0.0, where=dual > 0)),
                        float(np.max(np.abs(r[n:-1]) / primal, initial=0.0, where=primal > 0)))
        return worst if np.isfinite(worst) else float("inf")

    def factor(self, data: FloatArray | None = None, *, compact: bool = True) -> None:
        """Form K = [[M, Π(z)], [zᵀ, 0]] and its LU (idempotent).

        ``data``: K's values on its pattern, where already computed
        (:func:`conelayers._refine.refine_many` computes a batch's at once).
        ``compact=False`` leaves a regular dense K dense (refinement's own
        iterates, dropped after their step); see :meth:`compact`.
        """
        if self.K is not None:
            return
        pattern = self.structure.pattern
        if data is None:
            data = pattern.values(self.A.data, self.b, self.c, self.D_vals, self.pi, self.z)
        # SuperLU's factorization costs many solves (logistic, order 317: the
        # backward 1.41 → 0.60 ms per item with the nearby LU), a dense one of
        # order 158 a dozen sweeps (sparsemax: 0.35 → 0.24 ms); see NearbyLU.
        nearby, self.nearby = self.nearby, None
        if nearby is not None and (not pattern.dense or self.hint is None):
            self.K = pattern.sparse_of(data)  # (a dense K too: held by its stored entries)
            reused = NearbyLU.of(nearby, self.K, _products(pattern, self.K))
            # (A dense K near the limit takes its own LU below: the degenerate
            # paths read the dense K and its LU.)
            if reused is not None and (not pattern.dense or reused.condition <= _COND_LIMIT):
                self.lu = reused
                return
        del nearby  # (declined: not held while K factors itself)
        if not pattern.dense:
            self.K = pattern.sparse_of(data)
            self.lu = self.structure.ordering.factor(self.K)
            return
        self.K = pattern.dense_of(data)
        if self.hint is not None:
            # Near a singular point (the previous iterate's null spaces at hand):
            # where the bordering certifies K's null spaces here too, K's own LU
            # would only say that K is singular, and every solve goes through the
            # bordered LU (nnls_l1, K of order 157: one LU and condition estimate
            # fewer at the refined point and at its derivative).
            basis = _bordered_null(self, self.hint)
            if basis is not None:
                self._null, self.hint = basis, None
                self.lu = _SINGULAR
                return
            if self.hint.soft:
                self.hint = None  # (no evidence for the SVD: K's own LU guesses, see _basis)
        self.lu = DenseLU(self.K)
        if compact:
            self.compact()

    def compact(self) -> None:
        """Hold a regular dense K by its stored entries only.

        The solves need only the LU, and the residual products of their
        iterative refinement only K's stored entries (the degenerate paths
        keep the dense K). CSC instead of dense halves what every item holds
        for the backward pass (sparsemax, K of order 158: 6 % of 25,000
        entries stored; peak RSS at B = 128 was 54 MB against cvxpylayers' 39).
        """
        K = self.K
        if isinstance(K, np.ndarray) and isinstance(self.lu, DenseLU) and self.regular:
            pattern = self.structure.pattern
            self.lu.release_matrix()
            self.K = pattern.sparse_of(pattern.data_of(K))

    def unfactor(self) -> None:
        """Drop K, its factorization and what was derived from them (a later
        :meth:`factor` forms them again)."""
        self.K = self.lu = self.nearby = self._null = self._svd_cache = self._soft = None

    @property
    def heavy(self) -> bool:
        """Whether K's factorization is too large to keep between passes
        (``_KEEP_BYTES``)."""
        return self.lu is not None and self.lu.nbytes > _KEEP_BYTES

    @property
    def condition(self) -> float:
        """1-norm condition estimate of K (inf when singular); computed once."""
        assert self.lu is not None
        return self.lu.condition

    @property
    def regular(self) -> bool:
        """Whether K is (numerically) nonsingular, i.e. the derivative exists."""
        return self.lu is not None and not self.lu.singular and self.condition <= _COND_LIMIT

    def solve(self, rhs: FloatArray, transpose: bool = False, check: bool = True) -> FloatArray:
        """Solve K [sol; λ] = [rhs; 0] (Kᵀ if ``transpose``) and return ``sol``.

        Least squares (minimum norm) where K is singular or ill-conditioned.
        """
        assert self.K is not None and self.lu is not None
        N = rhs.size
        full = np.zeros(self.K.shape[0])
        full[:N] = rhs  # the border row and the SOC unknowns' rows are zero
        if self.lu.singular or (check and self.condition > _COND_LIMIT):
            return self._lstsq(full, transpose)[:N]
        if isinstance(self.lu, NearbyLU):  # (its sweeps check their residual)
            sol, rel = self.lu.solve_checked(full, transpose)
        else:
            sol, rel = self.lu.solve(full, transpose), None
        if rel is None:
            scale = max(float(np.linalg.norm(full)), np.finfo(float).tiny)
            res = full - self.product(sol, transpose)
            if np.linalg.norm(res) > _REFINE_RTOL * scale:
                sol = sol + self.lu.solve(res, transpose)
                res = full - self.product(sol, transpose)
            rel = float(np.linalg.norm(res)) / scale
        if check and not rel <= _WARN_RTOL:
            _warn(
                f"the derivative solve at batch item {self.index} has relative residual "
                f"{rel:.1e}; this item's derivative (JVP or VJP) is inaccurate."
            )
        return sol[:N]

    def product(self, v: FloatArray, transpose: bool = False) -> FloatArray:
        """K v (Kᵀ v if ``transpose``), K dense or on its pattern (CSC)."""
        assert self.K is not None
        return _product(self.structure.pattern, self.K, v, transpose)

    @property
    def accuracy(self) -> float:
        """How well this point is resolved: ‖N(z)‖∞ relative to ‖z‖∞.

        K is only known to that accuracy, so singular values, null directions
        and the like below it cannot be told from zero.
        """
        return self.relative_residual

    def _svd(self, rcond: float = _SVD_RCOND) -> tuple[FloatArray, FloatArray, FloatArray, int]:
        """Dense SVD of K (computed once): U, σ, Vᵀ and the rank at ``rcond``."""
        if self._svd_cache is None:
            assert self.K is not None
            self._svd_cache = np.linalg.svd(dense(self.K))
        U, S, Vt = self._svd_cache
        return U, S, Vt, int(np.sum(S > S[0] * max(rcond, self.accuracy)))

    def _basis(self) -> _NullBasis:
        """K's numerically null spaces (right N, left L; orthonormal columns) at
        the SVD's threshold, found once: from ``hint`` where it applies (see
        :func:`_bordered_null`), from K's own LU or a random bordering where
        there is no hint or only a soft one (:func:`_guessed_null`), else by
        the dense SVD."""
        if self._null is None:
            basis = _bordered_null(self, self.hint) if self.hint is not None else None
            if basis is None and (self.hint is None or self.hint.soft):
                basis = _guessed_null(self)
            if basis is None:
                U, S, Vt, r = self._svd()
                basis = _NullBasis(Vt[r:].T, U[:, r:], float(S[0]), None)
            self._null = basis
            self.hint = None  # done with (it holds the previous point's factors)
        return self._null

    def _lstsq(self, full: FloatArray, transpose: bool) -> FloatArray:
        """Minimum-norm least-squares solve with K (or Kᵀ); singular values
        below the point's own accuracy count as zero."""
        assert self.K is not None
        if self.K.shape[0] <= _DENSE_LSTSQ_MAX:
            if self._null is None and self.hint is None and self.accuracy > _SOFT:
                # A soft threshold: a rank-revealing QR's truncation (kept for
                # this point's later solves and the next point's hint).
                if self._soft is None:
                    self._soft = _SoftQR(dense(self.K), max(_SVD_RCOND, self.accuracy))
                return self._soft.solve(full, transpose)
            basis = self._basis()
            if basis.lu is not None:
                return basis.solve(self.K, full, transpose)
            U, S, Vt, r = self._svd()
            if transpose:  # Kᵀ = V Σ Uᵀ
                return U[:, :r] @ ((Vt[:r] @ full) / S[:r])
            return Vt[:r].T @ ((U[:, :r].T @ full) / S[:r])
        op = self.K.T if transpose else self.K
        x0 = None
        if self.lu is not None and not self.lu.singular:
            # Ill-conditioned but factored: where K is nonsingular its least-squares
            # solution is the solution, which the LU with iterative refinement
            # gives when its residual says so. Measured on sparse_qp (order 4,103,
            # condition estimate 1.5e12): unpreconditioned LSMR ran to its cap of
            # 4·order iterations, 5.2 s, where the LU solves take milliseconds.
            x0, rel = self._refined_solve(full, transpose)
            if rel <= _REFINE_RTOL:
                return x0
        # Large and singular: an iterative least-squares solve. It is the slow,
        # degenerate path (a DerivativeWarning accompanies it); cap its work.
        return spla.lsmr(op, full, atol=1e-12, btol=1e-12, maxiter=4 * op.shape[0], x0=x0)[0]

    def _refined_solve(self, full: FloatArray, transpose: bool,
                       sweeps: int = 3) -> tuple[FloatArray, float]:
        """LU solve with up to ``sweeps`` sweeps of iterative refinement
        (:func:`refined_solve`: they stop at K's rounding floor); the solution
        and its relative residual (zero and infinite where the solve broke down)."""
        assert self.lu is not None and self.K is not None
        lu = self.lu
        op = self.K.T if transpose else self.K
        sol, rel = refined_solve(lambda v: lu.solve(v, transpose), lambda v: op @ v, full,
                                 sweeps, _SOLVE_RTOL)
        if not (np.isfinite(sol).all() and np.isfinite(rel)):
            return np.zeros_like(full), float("inf")
        return sol, rel

    def hint_for_next(self) -> _NullBasis | None:
        """K's null spaces here, to seed those of a nearby point (refinement's
        next iterate, see :func:`_bordered_null`): certified ones, or those of
        a soft threshold's truncation (:class:`_SoftQR`, marked ``soft``)."""
        if self._null is not None:
            return self._null
        if self._soft is not None and isinstance(self.K, np.ndarray):
            return self._soft.hint(self.K)
        return None

    def left_null(self) -> FloatArray | None:
        """Rows r with rᵀK = 0 (first N entries): right-hand sides g with rᵀg ≠ 0
        have no exact solution. ``None`` when K is too large to decompose."""
        assert self.K is not None
        if self.K.shape[0] > _DENSE_LSTSQ_MAX:
            return None
        return self._basis().L.T[:, : self.z.size]

    def null_directions(self) -> FloatArray | None:
        """Solution tangents (dx, dy) along the null space of K, as rows ``(k, n + m)``.

        These are the directions in which the cone program's solution is not
        determined to first order. ``None`` when K is too large to decompose.
        """
        assert self.K is not None
        if self.K.shape[0] > _DENSE_LSTSQ_MAX:
            return None
        n = self.x.size
        # Drop the border multiplier and the SOC unknowns.
        null = self._basis().N.T[:, : self.z.size]
        du, dv, dw = null[:, :n], null[:, n:-1], null[:, -1:]
        dx = du - dw * self.x
        D = np.broadcast_to(self.D_vals, (len(dv), self.D_vals.size))
        dy = self.structure.dproj.matvec_many(D, dv) - dw * self.y if len(dv) else dv
        return np.concatenate([dx, dy], axis=1)


def _evaluate(structure: Structure, As: list[CSC], A_vals: FloatArray, b: FloatArray,
              c: FloatArray, x: FloatArray, v: FloatArray) -> tuple[FloatArray, ...]:
    """N and DΠ at z = (x, v, 1) for B points of one program at once (rows of
    every argument; ``A_vals`` on A's fixed pattern, ``As`` the same as arrays):
    ``(proj, D_vals, pi, z, residual, scales, relative residual)``, each with
    one row per point.

    One point costs the same NumPy calls as B of them: refinement evaluates
    a whole batch's iterates together (:func:`conelayers._refine.refine_many`).
    """
    (B, n), m = x.shape, v.shape[1]
    proj, D_vals = structure.dproj.batch(v)
    rows, cols = structure.a_rows, structure.a_cols
    # Aᵀy and Ax on A's CSC arrays (no SciPy matrix per point).
    Aty = segment_sums(A_vals * np.take(proj, rows, axis=1), cols, n)
    # (One point: SciPy's CSC product, 3x faster than the gather and bincount on
    # the dense QP's 32,770 entries, whose items are refined one at a time.)
    Ax = (As[0] @ x[0])[None] if B == 1 else segment_sums(A_vals * np.take(x, cols, axis=1),
                                                           rows, m)
    cx, by = (c * x).sum(axis=1), (b * proj).sum(axis=1)
    pi = np.empty((B, n + m + 1))
    pi[:, :n], pi[:, n:-1], pi[:, -1] = x, proj, 1.0
    z = pi.copy()
    z[:, n:-1] = v
    Qpi = np.empty_like(pi)
    Qpi[:, :n], Qpi[:, n:-1], Qpi[:, -1] = Aty + c, b - Ax, -cx - by
    # Each block of N relative to the size of what it balances (as SCS
    # measures its own residuals): dual Aᵀy + c, primal b − Ax − s, gap.
    scales = np.empty((B, 3))
    top = lambda a: np.abs(a).max(axis=1, initial=0.0)  # noqa: E731
    scales[:, 0] = np.maximum(top(Aty), top(c))
    scales[:, 1] = np.maximum(top(b), top(Ax))
    scales[:, 2] = np.abs(cx) + np.abs(by)
    scales += 1.0
    residual = Qpi - pi + z
    return proj, D_vals, pi, z, residual, scales, _relative_residuals(residual, scales, n)


def _relative_residuals(residual: FloatArray, scales: FloatArray, n: int) -> FloatArray:
    """Per row: the largest of the dual, primal and gap blocks of N, each
    divided by its scale (:attr:`Linearization.relative_residual`)."""
    top = lambda a: np.abs(a).max(axis=1, initial=0.0)  # noqa: E731
    return np.maximum(np.maximum(top(residual[:, :n]) / scales[:, 0],
                                 top(residual[:, n:-1]) / scales[:, 1]),
                      np.abs(residual[:, -1]) / scales[:, 2])


def _linearizations(structure: Structure, As: list[CSC], A_vals: FloatArray, b: FloatArray,
                    c: FloatArray, x: FloatArray, v: FloatArray,
                    indices: list[int]) -> list[Linearization]:
    """:meth:`Linearization.at` for B points at once (rows; ``As[k]`` is A of
    row k, ``A_vals`` their values)."""
    return _wrap(structure, As, b, c, x, v, _evaluate(structure, As, A_vals, b, c, x, v), indices)


def _wrap(structure: Structure, As: list[CSC], b: FloatArray, c: FloatArray, x: FloatArray,
          v: FloatArray, evaluated: tuple[FloatArray, ...],
          indices: list[int]) -> list[Linearization]:
    """One Linearization per row of :func:`_evaluate`'s result."""
    proj, D_vals, pi, z, residual, scales, relative = evaluated
    return [Linearization(structure, As[k], b[k], c[k], x[k], proj[k], proj[k] - v[k], pi[k],
                          z[k], D_vals[k], residual[k], scales[k], index=indices[k],
                          _relative=float(relative[k]))
            for k in range(x.shape[0])]


def _product(pattern: BorderedPattern, K: sp.csc_array | FloatArray, v: FloatArray,
             transpose: bool) -> FloatArray:
    """K v (Kᵀ v if ``transpose``) for K dense or on ``pattern`` (CSC)."""
    if isinstance(K, np.ndarray):
        return K.T @ v if transpose else K @ v
    if transpose and K.nnz <= _OWN_TRANSPOSE_NNZ:
        return pattern.transpose_product(K.data, v)
    return K.T @ v if transpose else K @ v


def _products(pattern: BorderedPattern,
              K: sp.csc_array) -> Callable[[FloatArray, bool], FloatArray]:
    """:func:`_product` with this K, for a factorization to hold (a bound
    :meth:`Linearization.product` would tie the linearization and its LU in a
    reference cycle, freed only by the cyclic collector)."""
    return lambda v, transpose: _product(pattern, K, v, transpose)


def values_many(structure: Structure, lins: list[Linearization]) -> FloatArray:
    """K's values on its pattern at several points of one program (rows)."""
    if not lins:
        return np.zeros((0, structure.pattern.nnz))
    rows = lambda f: stack_rows(lins, f)  # noqa: E731
    A_vals = stack_rows([lin.A for lin in lins], "data")
    return structure.pattern.values_many(A_vals, rows("b"), rows("c"), rows("D_vals"),
                                         rows("pi"), rows("z"))
