"""Derivative, adjoint and refinement of a cone program's solution.

Notation (Agrawal, Barratt, Boyd, Busseti, Moursi, "Differentiating through a
cone program", 2019; diffcp). At a solution (x, y, s) of

    minimize cᵀx  subject to  Ax + s = b,  s ∈ K          (dual y ∈ K*)

let z = (u, v, w) = (x, y − s, 1), Π the projection onto ℝⁿ × K* × ℝ₊ (so that
Π(z) = (x, y, 1) by Moreau), D = DΠ_{K*}(v), and

    Q = [[ 0,  Aᵀ, c],        M = (Q − I)·DΠ(z) + I = [[  0,    AᵀD,   c],
         [−A,  0,  b],                                 [ −A,  I − D,   b],
         [−cᵀ, −bᵀ, 0]]                                [ −cᵀ,  −bᵀD,   0]].

A solution is a zero of the residual map N(z) = (Q − I)Π(z) + z, and M = DN(z).
Differentiating N = 0 gives M dz = −dQ Π(z). The solution tangent follows from

    dx = du − x dw,   dy = D dv − y dw,   ds = D dv − dv − s dw.

Forward mode (derivative):  (dA, db, dc) → g = dQ Π(z) → solve M dz = g
                            → (dx, dy, ds) from −dz (as diffcp does).
Reverse mode (adjoint):     (dx, dy, ds) → h = [dx; Dᵀ(dy + ds) − ds; −(xᵀdx + yᵀdy + sᵀds)]
                            → solve Mᵀ r = h → dA_ij = Π_x,j r_y,i − Π_y,i r_x,j,
                              db = Π_y r_w − r_y,  dc = Π_x r_w − r_x.

M is singular at every solution: M z = N(z) = 0 and Π(z)ᵀ M = 0 (Q is skew and
DΠ(z) z = DΠ(z) Π(z) = Π(z)). Both right-hand sides are compatible (Π(z)ᵀ g = 0
because dQ is skew; zᵀ h = 0 by construction), and the part of dz along z
(and of r along Π(z)) changes nothing above. So we solve the *bordered* system

    K = [[M, Π(z)], [zᵀ, 0]]:   K [dz; λ] = [g; 0],   Kᵀ [r; μ] = [h; 0],

nonsingular exactly when the null space of M is the line through z, i.e. when
the solution map is differentiable there. One LU of K per solution (dense
LAPACK or sparse SuperLU, whichever :mod:`conelayers._factor` measured faster
for K's size and fill) serves every JVP and VJP. Each solve is checked by its
residual (with one step of iterative refinement). Where K is singular or its
condition number exceeds 1e12 (degenerate points: non-unique solutions, no
strict complementarity) the minimum-norm least-squares solution is used, as
diffcp does; a DerivativeWarning is given unless the requested outputs are
provably unaffected (see ``_outputs_determined``).

Refinement (Busseti, Moursi, Boyd, "Solution refinement at regular points of
conic problems", 2019). The same K gives Newton's method on N: solve
K [dz; λ] = [−N(z); 0], set z ← (z + dz)/w₊. Interior-point solvers stop with
x accurate only to about √gap on problems whose quadratic terms became cones
(3e-5 at Clarabel's defaults on a 2-variable QP); two or three Newton steps
reach N's rounding floor (a relative residual of at most 1e-14, where
refinement stops) at a regular point. A step is kept only if it at least halves
the relative residual (dual, primal and gap residuals each against its own
scale); where the full Newton step falls short because the iterate's active
set is wrong, refinement pivots across the first boundary on the Newton ray
(see ``refine`` and ``_step``).

diffcp's own solvers of the derivative equations (``lsqr``, ``lsmr``,
``dense``) stay selectable as ``mode``; they share everything but the solve.
"""

from __future__ import annotations

import enum
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import scipy.linalg as sla
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from ._batched import segment_sums, stack_rows
from ._bordered import BorderedPattern
from ._cones import ConeLayout
from ._dproj import DualProjection
from ._errors import DerivativeWarning, ParameterError
from ._factor import DenseLU, NearbyLU, SparseLU, SparseOrdering, dense
from ._typing import CSC, FloatArray, IntArray

__all__ = ["DerivativeMode", "ItemDerivative", "Linearization", "Structure", "batchable",
           "jvp_many", "refine", "refine_many", "values_many", "vjp_many"]


class DerivativeMode(enum.Enum):
    """How the linear system of the derivative is solved."""

    exact = "exact"  # sparse LU of the bordered system (default)
    lsqr = "lsqr"  # diffcp: LSQR on M, capped at 2N iterations
    lsmr = "lsmr"  # diffcp: SciPy LSMR on M
    dense = "dense"  # diffcp: dense normal equations

    @classmethod
    def parse(cls, value: object) -> DerivativeMode:
        if isinstance(value, cls):
            return value
        try:
            return cls(value)
        except ValueError:
            accepted = ", ".join(repr(m.value) for m in cls)
            raise ParameterError(
                f"`mode` must be one of {accepted}; got {value!r}. 'exact' (the default) "
                "solves the derivative equations exactly; the others are diffcp's "
                "least-squares solvers."
            ) from None


# Residual of a linear solve (relative to its right-hand side) above which it
# gets one step of iterative refinement, and above which the result is reported.
_REFINE_RTOL = 1e-10
_WARN_RTOL = 1e-6
# Condition number of K above which the point counts as non-differentiable.
_COND_LIMIT = 1e12
# Largest bordered system solved densely (SVD least squares) at degenerate points.
_DENSE_LSTSQ_MAX = 1000
# Relative singular value below which a direction counts as null.
_SVD_RCOND = 1e-11
# Relative residual at which refinement stops: N's rounding floor (measured
# floors 1e-16 to 7e-15). Below it a step that "halves" the residual moves
# the last few units: on qp, sparsemax and the SDP of the benchmark suite
# (8 items each) refinement to 1e-15 took one to two more residual
# evaluations per item (0.2–0.3 ms each, 4.9 per item in all on qp) for
# 1e-14 → 2e-15, and sometimes a factorization and Newton step that failed.
_REFINED = 1e-14
# Largest factorization of K an item keeps from the forward pass to the
# backward, and between derivative requests; larger ones are formed again for
# each use. A batch otherwise holds one per item: the 1,024-variable sparse QP
# (K of order 4,103, 3 million entries in L + U, ~100 MB per item) peaked at
# 4.4 GB at B = 32, against cvxpylayers' 0.8 GB. The benchmark's other
# factorizations are at most 1.3 MB (the dense QP's, order 389).
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
    # step), which :meth:`factor` reuses where it serves (see NearbyLU).
    nearby: SparseLU | None = field(default=None, repr=False)
    _svd_cache: tuple | None = field(default=None, repr=False)
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

    def factor(self, data: FloatArray | None = None, *, compact: bool = True) -> None:
        """Form K = [[M, Π(z)], [zᵀ, 0]] and its LU (idempotent).

        ``data``: K's values on its pattern, where already computed
        (:func:`refine_many` computes a batch's at once). ``compact=False``
        leaves a regular dense K dense (refinement's own iterates, dropped
        after their step); see :meth:`compact`.
        """
        if self.K is not None:
            return
        pattern = self.structure.pattern
        if data is None:
            data = pattern.values(self.A.data, self.b, self.c, self.D_vals, self.pi, self.z)
        if not pattern.dense:
            self.K = pattern.sparse_of(data)
            nearby, self.nearby = self.nearby, None
            # SuperLU's factorization costs many solves (logistic, order 317: the
            # backward 1.41 → 0.60 ms per item with the nearby LU). A dense LU
            # of K's small orders costs about the refinement sweeps it would save
            # (sparsemax, QP, SDP: no change measured), so it is not reused.
            reused = NearbyLU.of(nearby, self.K) if nearby is not None else None
            del nearby  # (declined: not held while K factors itself)
            self.lu = reused if reused is not None else self.structure.ordering.factor(self.K)
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
        self.K = self.lu = self.nearby = self._null = self._svd_cache = None

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
        sol = self.lu.solve(full, transpose)
        scale = max(float(np.linalg.norm(full)), np.finfo(float).tiny)
        res = full - self.product(sol, transpose)
        if np.linalg.norm(res) > _REFINE_RTOL * scale:
            sol = sol + self.lu.solve(res, transpose)
            res = full - self.product(sol, transpose)
        rel = float(np.linalg.norm(res)) / scale
        if check and not rel <= _WARN_RTOL:
            _warn(
                f"the derivative solve at batch item {self.index} has relative residual "
                f"{rel:.1e}; this item's gradient is inaccurate."
            )
        return sol[:N]

    def product(self, v: FloatArray, transpose: bool = False) -> FloatArray:
        """K v (Kᵀ v if ``transpose``), K dense or on its pattern (CSC)."""
        K = self.K
        assert K is not None
        if isinstance(K, np.ndarray):
            return K.T @ v if transpose else K @ v
        if transpose and K.nnz <= _OWN_TRANSPOSE_NNZ:
            return self.structure.pattern.transpose_product(K.data, v)
        return K.T @ v if transpose else K @ v

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
        :func:`_bordered_null`), from a random bordering where there is no hint
        (:func:`_guessed_null`), else by the dense SVD."""
        if self._null is None:
            basis = _bordered_null(self, self.hint) if self.hint is not None else None
            if basis is None and self.hint is None:
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
                return _rank_revealing_lstsq(self, full, transpose)
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
            x0 = self._refined_solve(full, transpose)
            res = full - op @ x0
            if np.linalg.norm(res) <= _REFINE_RTOL * max(float(np.linalg.norm(full)),
                                                         np.finfo(float).tiny):
                return x0
        # Large and singular: an iterative least-squares solve. It is the slow,
        # degenerate path (a DerivativeWarning accompanies it); cap its work.
        return spla.lsmr(op, full, atol=1e-12, btol=1e-12, maxiter=4 * op.shape[0], x0=x0)[0]

    def _refined_solve(self, full: FloatArray, transpose: bool, sweeps: int = 3) -> FloatArray:
        """LU solve with up to ``sweeps`` steps of iterative refinement."""
        assert self.lu is not None and self.K is not None
        op = self.K.T if transpose else self.K
        with np.errstate(all="ignore"):
            sol = self.lu.solve(full, transpose)
            target = _SOLVE_RTOL * max(float(np.linalg.norm(full)), np.finfo(float).tiny)
            for _ in range(sweeps):
                res = full - op @ sol
                if not np.linalg.norm(res) > target:
                    break
                sol = sol + self.lu.solve(res, transpose)
        if not np.isfinite(sol).all():
            return np.zeros_like(full)
        return sol

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


class _CertifiedSingular:
    """The factorization of a dense K whose null spaces the bordering certified
    (:meth:`Linearization.factor`): singular, so every solve is a least-squares
    one through the null basis, and K itself is never factored."""

    singular = True
    condition = float("inf")
    nbytes = 0

    def solve(self, rhs: FloatArray, transpose: bool = False) -> FloatArray:
        raise AssertionError("K is singular: solves go through its null basis")


_SINGULAR = _CertifiedSingular()


def _evaluate(structure: Structure, As: list[CSC], A_vals: FloatArray, b: FloatArray,
              c: FloatArray, x: FloatArray, v: FloatArray) -> tuple[FloatArray, ...]:
    """N and DΠ at z = (x, v, 1) for B points of one program at once (rows of
    every argument; ``A_vals`` on A's fixed pattern, ``As`` the same as arrays):
    ``(proj, D_vals, pi, z, residual, scales, relative residual)``, each with
    one row per point.

    One point costs the same NumPy calls as B of them: refinement evaluates
    a whole batch's iterates together (:func:`refine_many`).
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


@dataclass(frozen=True, eq=False)
class _NullBasis:
    """K's numerically null spaces: N (right) and L (left), orthonormal columns
    of K's full order, at threshold ``sigma``·max(``_SVD_RCOND``, accuracy)
    with ``sigma`` ≈ ‖K‖₂. ``lu`` factors the bordered K̂ = K + sigma·L Nᵀ
    (None where the basis came from the SVD, which then does the solves).

    With K = U Σ Vᵀ, U = [U₁ L], V = [V₁ N]: K̂ = U diag(Σ₁, sigma·I) Vᵀ, so
    K̂⁻¹ = K⁺ + N Lᵀ/sigma and K⁺b = K̂⁻¹(b − L Lᵀb): the minimum-norm
    least-squares solution costs one LU solve and two projections.
    """

    N: FloatArray
    L: FloatArray
    sigma: float
    lu: DenseLU | None

    def solve(self, K: FloatArray, full: FloatArray, transpose: bool) -> FloatArray:
        """K⁺ full (Kᵀ⁺ if ``transpose``: the roles of N and L swap)."""
        assert self.lu is not None
        right, left = (self.L, self.N) if transpose else (self.N, self.L)
        rhs = full - left @ (left.T @ full)  # the part in K's range
        x = self.lu.solve(rhs, transpose)
        x -= right @ (right.T @ x)
        op = K.T if transpose else K
        res = rhs - op @ x
        res -= left @ (left.T @ res)
        # One step of iterative refinement always (one more solve): measured on
        # nnls_l1, gradient error against the benchmark's reference (Clarabel at
        # eps 1e-12, 5 refinement steps), 4 batches of 8 items: 7e-16 to 2e-15
        # with it, 2e-13 to 5e-13 refining only above _REFINE_RTOL (benchmark
        # run), 2e-14 to 8e-14 on the SVD path.
        d = self.lu.solve(res, transpose)
        x += d - right @ (right.T @ d)
        return x


# The null directions the bordering accepts are below this fraction of the
# SVD's threshold (nnls_l1's refinement iterates measured: null singular values
# 5e-17 to 5e-14 of ‖K‖ against thresholds of 1e-11 to 2e-5), so that its minimum-norm solution and
# the truncated SVD's agree to rounding, not only up to the dropped σ's.
_NULL_GAP = 1e-3


def _null_within(K: FloatArray, W: FloatArray, thr: float) -> FloatArray | None:
    """Orthonormal basis of the directions in span(W) that K maps below ``thr``."""
    if not np.isfinite(W).all():
        return None
    try:
        Q, _ = np.linalg.qr(W)
        KQ = K @ Q
        if not np.isfinite(KQ).all():
            return None
        if np.linalg.norm(KQ) <= _NULL_GAP * thr:  # all of span(W) (‖·‖_F ≥ ‖·‖₂)
            return Q
        _, S, Vt = np.linalg.svd(KQ, full_matrices=False)
    except np.linalg.LinAlgError:
        return None
    null = S <= thr
    if np.any(null & (S > _NULL_GAP * thr)):
        return None  # not clearly null: the truncated SVD's answer differs, let it decide
    return Q @ Vt[null].T


def _bordered_null(lin: Linearization, hint: _NullBasis) -> _NullBasis | None:
    """K's null spaces from those of a nearby point (``hint``), without an SVD
    of K; None where that does not apply (then the SVD decides).

    With K̂ = K + sigma·L̃ Ñᵀ nonsingular (L̃, Ñ the hint's), every null vector n
    of K satisfies K̂ n = sigma·L̃ (Ñᵀn), so null(K) ⊆ span(K̂⁻¹L̃) exactly
    (likewise null(Kᵀ) ⊆ span(K̂⁻ᵀÑ)), however far the hint is off: an SVD
    of the thin K·Q (Q an orthonormal basis of that span) picks them out at
    the SVD's own threshold. That the rest of K's singular values lie above
    the threshold (so that the rank equals the SVD's) is checked on the
    bordered matrix built from the bases found: by Weyl's inequality for a
    rank-k change, σ_{N−k}(K) ≥ σ_min(K + sigma·L Nᵀ) = 1/‖K̂⁻¹‖₂, bounded
    with LAPACK's ``gecon`` estimates of ‖K̂⁻¹‖₁ and ‖K̂⁻¹‖∞.

    Measured (nnls_l1 of the benchmark suite, K of order 157, rank 145–146 at
    the refined points): the dense SVD of K 3.0 ms; this, one LU (0.1–0.3
    ms; two where the rank changed), 2k solves, two QRs of 157×k matrices
    (and their thin SVDs where not all of the span is null). Refinement and
    the derivative took 4 SVDs per item; now the first iterate's only.
    """
    K = lin.K
    if not isinstance(K, np.ndarray) or hint.N.shape[0] != K.shape[0] or not hint.N.shape[1]:
        return None
    sigma = hint.sigma
    thr = sigma * max(_SVD_RCOND, lin.accuracy)
    with np.errstate(all="ignore"):
        lu = DenseLU(K + sigma * (hint.L @ hint.N.T))
        if lu.singular:
            return None
        N = _null_within(K, lu.solve(hint.L), thr)
        L = _null_within(K.T, lu.solve(hint.N, True), thr)
    return _certified(K, N, L, sigma, thr, lu, hint.N.shape[1])


def _certified(K: FloatArray, N: FloatArray | None, L: FloatArray | None, sigma: float,
               thr: float, lu: DenseLU, width: int) -> _NullBasis | None:
    """The null basis (N, L) of K, certified, from candidates found with the
    factors ``lu`` of a bordered K̂ = K + (rank ``width``); None where they fail.

    Where the rank is ``width``, span(K̂⁻¹L̃) is null(K) itself and K̂ serves
    the solves as it is: the identities of _NullBasis hold with any such border,
    since K̂⁻¹(b − L Lᵀb) = K⁺b + (a null vector), projected out. (One LU
    fewer: 0.29 ms each, 2.8 calls per item on nnls_l1, one thread.) Where it
    is not, K is bordered with the bases found. Either way the rest of K's
    singular values are certified above the threshold by Weyl's inequality for
    a rank-k change, σ_{N−k}(K) ≥ σ_min(K̂) = 1/‖K̂⁻¹‖₂ (see _bordered_null)."""
    if N is None or L is None or not N.shape[1] or N.shape[1] != L.shape[1]:
        return None
    with np.errstate(all="ignore"):
        if N.shape[1] != width:
            lu = DenseLU(K + sigma * (L @ N.T))
            if lu.singular:
                return None
        # ‖K̂⁻¹‖₂ ≤ (‖K̂⁻¹‖₁‖K̂⁻¹‖∞)^½, both from gecon (estimates, within a
        # small factor: the margin 3).
        inv_1 = lu.inverse_norm("1")
        inv_inf = lu.inverse_norm("I")
    lu.release_matrix(condition=False)  # K̂ itself is not needed for the solves
    if not 3.0 * np.sqrt(inv_1 * inv_inf) * thr < 1.0:
        return None
    return _NullBasis(N, L, sigma, lu)


# Accuracy of a point above which its SVD threshold (‖K‖·accuracy) is soft:
# it falls among K's genuine small singular values. Measured at Clarabel's
# answers to nnls_l1 (accuracy 5e-5 to 3e-3): 7 to 28 values below the
# threshold, and in 27 of 32 items some of them within a factor 1e3 of it, so
# that no bordering can match the SVD's rank (_bordered_null declines).
_SOFT = 1e-6


def _rank_revealing_lstsq(lin: Linearization, full: FloatArray, transpose: bool) -> FloatArray:
    """Minimum-norm least squares at a soft threshold, by a rank-revealing QR
    (LAPACK ``gelsy``: QR with column pivoting, then a complete orthogonal
    factorization) instead of the SVD: the same truncation up to the rank
    estimate's small factors, at less than half the cost (order 157: 1.8
    against 6.4 ms, one thread). Used for the refinement step at a solver's
    answer, whose outcome the step's own test decides; no null basis is kept
    (the next iterate finds its own, see :func:`_guessed_null`)."""
    assert lin.K is not None
    K = dense(lin.K)
    with np.errstate(all="ignore"):
        sol = sla.lstsq(K.T if transpose else K, full, cond=max(_SVD_RCOND, lin.accuracy),
                        lapack_driver="gelsy", check_finite=False)[0]
    return sol if np.isfinite(sol).all() else np.zeros_like(full)


# Power iterations for the estimate of ‖K‖₂ a guessed bordering is scaled by.
_NORM_SWEEPS = 12


# Pivots of K's LU at most this fraction of the largest count as small: where
# the null directions are looked for (:func:`_pivot_null`, :func:`_guessed_null`).
_SMALL_PIVOT = 1e-6


def _pivot_null(lin: Linearization, sigma: float) -> _NullBasis | None:
    """K's null spaces from its own singular LU, K = P L U, with no new
    factorization where the small pivots number the nullity.

    Set U's small pivots uⱼⱼ (j ∈ J) to the largest: K̂ = P L U' is K changed
    in the columns J only, K̂ − K = P L E_J diag(δ − u_JJ) E_Jᵀ, a bordering
    of rank |J|. So, as in :func:`_bordered_null`, every null vector n of K has
    K̂ n ∈ span(P L E_J), i.e. n ∈ span(U'⁻¹E_J) (a triangular solve), and
    every left null vector l has K̂ᵀl ∈ span(E_J), i.e. l ∈ span(K̂⁻ᵀE_J);
    :func:`_null_within` picks the null directions out of those spans and
    :func:`_certified` certifies the rank, with U' itself where |J| is the
    nullity. An LU need not reveal the rank, but nothing here assumes it does:
    a K̂ that is nearly singular too fails the certificate (None: the random
    bordering then decides).

    Measured (nnls_l1, 64 items, the first iterate without a hint): |J| was the
    nullity on 41 and one more on 23; this agreed with the random bordering on
    55 (null-space projectors within 3e-11), and took 0.47 ms against its 1.85
    (median, one thread, before the certificate).
    """
    K, lu = lin.K, lin.lu
    assert isinstance(K, np.ndarray) and isinstance(lu, DenseLU)
    pivots = lu.pivots()
    top = float(pivots.max())
    J = np.flatnonzero(pivots <= _SMALL_PIVOT * top)
    if not J.size or J.size > K.shape[0] // 2 or not top > 0:
        return None
    thr = sigma * max(_SVD_RCOND, lin.accuracy)
    hat = lu.with_pivots(J, top)
    E = np.zeros((K.shape[0], J.size))
    E[J, np.arange(J.size)] = 1.0
    with np.errstate(all="ignore"):
        N = _null_within(K, hat.solve_upper(E), thr)
        L = _null_within(K.T, hat.solve(E, True), thr)
    return _certified(K, N, L, sigma, thr, hat, J.size)


def _guessed_null(lin: Linearization) -> _NullBasis | None:
    """K's null spaces at a point with no nearby hint: from K's own LU
    (:func:`_pivot_null`), else :func:`_bordered_null` with random orthonormal
    bases as the hint. Its inclusion argument needs only
    a nonsingular bordered K̂ = K + σ·L̃Ñᵀ, which a random border of at least
    the nullity gives with probability one; its gap and ``gecon`` checks then
    certify the rank as they do for any hint, so the basis agrees with the
    SVD's to rounding, or None is returned and the SVD decides. The width is
    guessed from the LU's small pivots (|uᵢᵢ| ≤ 1e-6·max), plus two; once more
    at twice that. σ is ‖K‖₂ by power iteration (a lower bound, within a few
    per cent). Seeded by K's order: reproducible.

    Measured (nnls_l1, 32 items, the first iterate after the solver's answer,
    accuracy 1e-11 to 1e-7): accepted on 32 of 32, against one SVD each.
    """
    K, lu = lin.K, lin.lu
    if not isinstance(K, np.ndarray) or not isinstance(lu, DenseLU) or lin.accuracy > _SOFT:
        return None
    order = K.shape[0]
    rng = np.random.default_rng(order)
    with np.errstate(all="ignore"):
        u = rng.standard_normal(order)
        for _ in range(_NORM_SWEEPS):
            u = K.T @ (K @ u)
            u /= np.linalg.norm(u)
        sigma = float(np.linalg.norm(K @ u))
        pivots = lu.pivots()
    if not (np.isfinite(sigma) and sigma > 0):
        return None
    basis = _pivot_null(lin, sigma)
    if basis is not None:
        return basis
    small = int(np.sum(pivots <= _SMALL_PIVOT * pivots.max()))
    for width in (small + 2, 2 * small + 4):
        if width > order // 2:
            break
        L = np.linalg.qr(rng.standard_normal((order, width)))[0]
        N = np.linalg.qr(rng.standard_normal((order, width)))[0]
        basis = _bordered_null(lin, _NullBasis(N, L, sigma, None))
        if basis is not None:
            return basis
    return None


def refine(
    structure: Structure, A: CSC, b: FloatArray, c: FloatArray, x: FloatArray, y: FloatArray,
    s: FloatArray, *, max_steps: int = 3, index: int = 0, start: Linearization | None = None,
) -> Linearization:
    """Newton refinement of a solution; returns the linearization at the result.

    ``start``: the linearization at the solver's answer where already made
    (:func:`refine_many` hands over an item it factored there).

    Its ``x, y, s`` are the refined solution and ``residual`` its N(z). It is
    factored only if a derivative asks for it later. ``max_steps`` bounds the
    factorizations of K.

    A step is kept only in Newton's regime: when it at least halves the
    relative residual (``_DECISIVE``; at a regular point Newton's steps do far
    better, the error squares). The relative residual is a poor guide further
    out: it is the largest of three blocks, and a step can lower it while making
    the answer worse (at |b| = 1e9, 0.32 → 0.25 while x₂ went from the right
    +1e9 to −1e9). A step that falls short is not damped or line-searched: N
    is piecewise smooth, with a piece per active set, and from an iterate whose
    active set is wrong the residual *rises* along the Newton ray past the
    piece's boundary and falls again inside the right piece; backtracking
    only finds the tiny steps that stay in the wrong piece (measured: a factor
    0.999 per step on SCS's answer to an LP). Instead, two other steps are
    tried, under the same test (see ``_step``).
    """
    lin = start if start is not None else _start(structure, A, b, c, x, y, s, index)
    steps = chords = 0
    base: Linearization | None = None  # the last point whose LU gave a Newton step
    while steps < max_steps and lin.relative_residual > _REFINED:
        if base is not None and chords < _CHORD_MAX:
            trial = _chord_step(structure, base, lin)
            if trial is not None:
                chords += 1
                lin = trial
                continue
            if lin.relative_residual <= _ROUNDING:
                # Short at N's rounding level: a Newton step would factor K for the
                # last units, and falls short there too (the sparse QP of the
                # benchmark, every item: a chord step to 4e-14, then a 1 s SuperLU
                # factorization and a step that failed). The point stands.
                break
        base = None
        lin.factor(compact=False)  # (an iterate: dropped after its step)
        steps += 1
        try:
            trial, extra = _step(structure, lin, budget=max_steps - steps)
        except np.linalg.LinAlgError:
            # A step that cannot be computed falls short like any other: the
            # point reached so far stands. (Seen once, not reproduced, on the
            # code before the chord steps: "SVD did not converge", LAPACK's
            # DLASCL rejecting a non-finite K, inside a step on a sparsemax
            # batch of 128 items, which took the whole batch down.)
            break
        if trial is None:
            break
        steps += extra
        assert lin.lu is not None and lin.K is not None
        if extra == 0 and not lin.lu.singular and not (
                lin.K.shape[0] <= _DENSE_LSTSQ_MAX and lin.condition > _COND_LIMIT):
            base = lin  # _step took the plain LU Newton step (condition cached there)
        lin = trial
    # The factorization at the returned point is left to the first derivative
    # request (Linearization.factor is idempotent): a forward-only call pays
    # for the Newton steps only, and that request may use the LU that gave the
    # last step instead of a new one (NearbyLU).
    if lin.K is None and base is not None and isinstance(base.lu, SparseLU) and not base.heavy:
        lin.nearby = base.lu
    _keep(lin)
    return lin


def _keep(lin: Linearization) -> None:
    """Prepare the point refinement returns for keeping until the derivative:
    K compact (:meth:`Linearization.compact`), or not kept at all where its
    factorization is heavy (``_KEEP_BYTES``: the derivative forms it again)."""
    if lin.heavy:
        lin.unfactor()
    else:
        lin.compact()


# Chord steps (Newton with the last factored K) allowed per refinement.
_CHORD_MAX = 3

# Largest programs whose items are refined together (:func:`refine_many`),
# in stored entries of A and order of K. Above, per-item overhead is a small
# part of refinement and the batch's arrays outgrow the caches: the dense QP
# (32,770 entries, order 391) refined 24 % slower together than one by one
# (16 items). And the batch holds every item's LU at once, where :func:`refine`
# holds one (the sparse QP's SuperLU factors, order 4,103, ~100 MB each).
_MANY_MAX_NNZ = 10_000
_MANY_MAX_ORDER = 1000


def batchable(structure: Structure) -> bool:
    """Whether items of this program are worked on in groups (refinement, the
    derivative's factorizations): ``_MANY_MAX_NNZ``, ``_MANY_MAX_ORDER``."""
    return (structure.pattern.order <= _MANY_MAX_ORDER
            and structure.a_rows.size <= _MANY_MAX_NNZ)


def refine_many(
    structure: Structure, As: list[CSC], A_vals: FloatArray, b: FloatArray, c: FloatArray,
    x: FloatArray, y: FloatArray, s: FloatArray, *, max_steps: int = 3,
    indices: list[int],
) -> list[Linearization]:
    """:func:`refine` for several items of one program (rows of the arrays;
    ``As[k]`` is item k's A, ``A_vals`` the values of all): the same steps,
    taken together.

    Refinement of a small program is a few dozen NumPy calls per residual
    evaluation, on arrays of a few hundred entries: per item, call overhead
    is most of its cost (QP, n = 20: 0.5 ms, of which the LU and its solves
    are ~0.05 ms). Here every evaluation of N covers all the items that take
    a step (:func:`_evaluate`); what stays per item is the LU and its solves.
    The path is :func:`refine`'s main one: the start, Newton steps with the
    LU of a regular K, chord steps. An item that leaves it (K singular or
    ill-conditioned, a Newton step that falls short above rounding level:
    where :func:`refine` tries pivots and least squares) is refined again
    from the solver's answer by :func:`refine` itself (handed the factored
    start where no step was taken yet), so every item ends where
    :func:`refine` would take it.
    """
    B = len(As)
    if B == 0:
        return []
    if not batchable(structure):
        return [refine(structure, As[k], b[k], c[k], x[k], y[k], s[k], max_steps=max_steps,
                       index=indices[k]) for k in range(B)]
    lins = _start_many(structure, As, A_vals, b, c, x, y, s, indices)
    starts = list(lins)
    steps, chords = [0] * B, [0] * B
    base: list[Linearization | None] = [None] * B
    stopped, alone = [False] * B, [False] * B

    def running(k: int) -> bool:
        return (not (stopped[k] or alone[k]) and steps[k] < max_steps
                and lins[k].relative_residual > _REFINED)

    active = [k for k in range(B) if running(k)]
    while active:
        moves: list[tuple[int, FloatArray, bool]] = []  # (item, new z, chord step?)
        newton = [k for k in active if base[k] is None or chords[k] >= _CHORD_MAX]
        data = dict(zip(newton, values_many(structure, [lins[k] for k in newton]),
                        strict=True))
        for k in active:
            lin, prior = lins[k], base[k]
            if prior is not None and chords[k] < _CHORD_MAX:
                moves.append((k, lin.z + _chord_direction(prior, lin), True))
                continue
            base[k] = None
            lin.factor(data[k], compact=False)
            steps[k] += 1
            assert lin.lu is not None and lin.K is not None
            if lin.lu.singular or (lin.K.shape[0] <= _DENSE_LSTSQ_MAX
                                   and lin.condition > _COND_LIMIT):
                alone[k] = True  # least squares and pivots: refine's own path
                continue
            moves.append((k, lin.z + _newton_direction(lin, least_squares=False), False))
        trials = _points_many(structure, [lins[k] for k, _, _ in moves],
                              [z for _, z, _ in moves])
        for (k, _, chord), trial in zip(moves, trials, strict=True):
            lin = lins[k]
            if trial is not None and trial.relative_residual <= _DECISIVE * lin.relative_residual:
                if chord:
                    chords[k] += 1
                else:
                    base[k] = lin  # a plain LU Newton step: its LU serves chord steps
                lins[k] = trial
            elif lin.relative_residual <= _ROUNDING:
                stopped[k] = True  # short at N's rounding level: the point stands
            elif chord:
                base[k] = None  # the next round factors K here
            else:
                alone[k] = True  # refine would try pivots now
        active = [k for k in range(B) if running(k)]
    for k in range(B):
        if alone[k]:
            # From the start, as refine alone would go; where no step was taken
            # yet, the start (factored here) is handed over instead of formed again.
            start = lins[k] if lins[k] is starts[k] else None
            lins[k] = refine(structure, As[k], b[k], c[k], x[k], y[k], s[k],
                             max_steps=max_steps, index=indices[k], start=start)
            continue
        lin, prior = lins[k], base[k]
        if lin.K is None and prior is not None and isinstance(prior.lu, SparseLU) \
                and not prior.heavy:
            lin.nearby = prior.lu
        _keep(lin)
    return lins


def values_many(structure: Structure, lins: list[Linearization]) -> FloatArray:
    """K's values on its pattern at several points of one program (rows)."""
    if not lins:
        return np.zeros((0, structure.pattern.nnz))
    rows = lambda f: stack_rows(lins, f)  # noqa: E731
    A_vals = stack_rows([lin.A for lin in lins], "data")
    return structure.pattern.values_many(A_vals, rows("b"), rows("c"), rows("D_vals"),
                                         rows("pi"), rows("z"))


def _points_many(structure: Structure, lins: list[Linearization],
                 zs: list[FloatArray]) -> list[Linearization | None]:
    """:func:`_point` for several items at once: the linearization of item
    ``lins[k]``'s program at ``zs[k]`` normalized to w = 1, None where not
    finite with w > 0."""
    out: list[Linearization | None] = [None] * len(lins)
    keep = [k for k, z in enumerate(zs) if np.isfinite(z).all() and z[-1] > 0]
    if not keep:
        return out
    n = lins[0].x.size
    Z = np.stack([zs[k] / zs[k][-1] for k in keep])
    group = [lins[k] for k in keep]
    As = [lin.A for lin in group]
    new = _linearizations(structure, As, stack_rows(As, "data"), stack_rows(group, "b"),
                          stack_rows(group, "c"), Z[:, :n], Z[:, n:-1],
                          [lin.index for lin in group])
    for k, lin in zip(keep, new, strict=True):
        out[k] = lin
    return out


def _chord_direction(base: Linearization, lin: Linearization) -> FloatArray:
    """dz with K₀ [dz; λ] = [−N(z); 0] at ``lin``'s z, K₀ factored at ``base``."""
    assert base.lu is not None and base.K is not None
    full = np.zeros(base.K.shape[0])
    full[: lin.z.size] = -lin.residual
    with np.errstate(all="ignore"):
        return base.lu.solve(full)[: lin.z.size]


def _chord_step(structure: Structure, base: Linearization,
                lin: Linearization) -> Linearization | None:
    """The Newton step from ``lin`` with ``base``'s LU (a chord step), kept
    under the same test as any step (it at least halves the relative
    residual); None otherwise, and then ``lin`` is factored after all.

    After the first Newton step from an accurate solver answer the iterate is
    within ~1e-8 of the solution and on the same piece of N (same D on the
    nonnegative rows), so K has barely moved and the old factors serve:
    measured on sparsemax (n = 50, B = 128, one thread) refinement factored K
    3.3 times per item (0.44 ms per LU and condition estimate at 0.19 ms) for
    2 Newton steps; now the second step is a chord step, one LU fewer per
    item. The derivative still factors the point refinement returns (the
    exact K there), so gradients are unchanged.
    """
    trial = _point(structure, lin, lin.z + _chord_direction(base, lin))
    if trial is not None and trial.relative_residual <= _DECISIVE * lin.relative_residual:
        return trial
    return None


def _start(structure: Structure, A: CSC, b: FloatArray, c: FloatArray, x: FloatArray,
           y: FloatArray, s: FloatArray, index: int) -> Linearization:
    """The linearization at the solver's answer, z = (x, v, 1) with v = y − s.

    The embedding needs y and s complementary (yᵀs = 0, so that
    Π_{K*}(y − s) = y); an interior-point answer is not: yᵢsᵢ = μ > 0 on every
    row. Then on a row of the nonnegative cone y − s keeps whichever of yᵢ, sᵢ
    is larger in absolute terms, and on badly scaled data that is the wrong
    one: at |b| = 1e9 (box LP, Clarabel) an active row had sᵢ = 0.52 (zero at
    the primal scale 1e9) against yᵢ = 0.5, so v = y − s made it inactive,
    and the relative residual of a right answer was 0.32 instead of 6e-10.
    So each of yᵢ and sᵢ is also measured against its own scale (the dual
    and primal scales of the residual, σ_d and σ_p): v'ᵢ = yᵢ/σ_d − sᵢ/σ_p,
    and the complementary pair σ_d·max(v'ᵢ, 0), σ_p·max(−v'ᵢ, 0) gives vᵢ.
    Where that changes the sign of some vᵢ, the balanced start is used only if
    its relative residual is decisively (``_DECISIVE``) lower: a marginal gain
    is no evidence that the active set it implies is the right one. (A
    sparsemax item, n = 50, Clarabel: y − s at 3.5e-4 converged in two Newton
    steps to 1e-15; the balanced start, at 2.7e-4, sat on a wrong piece and
    three factorizations left it there.) Elsewhere (always when y and s are
    complementary, as SCS's are) v = y − s. (Other cones keep y − s: their
    pieces are not a sign per row.)
    """
    return _start_many(structure, [A], A.data[None], b[None], c[None], x[None], y[None],
                       s[None], [index])[0]


def _start_many(structure: Structure, As: list[CSC], A_vals: FloatArray, b: FloatArray,
                c: FloatArray, x: FloatArray, y: FloatArray, s: FloatArray,
                indices: list[int]) -> list[Linearization]:
    """:func:`_start` for B items at once (rows of the arrays)."""
    v = y - s
    evaluated = _evaluate(structure, As, A_vals, b, c, x, v)
    scales = evaluated[5]
    rows = structure.dproj.nonneg
    scaled = y[:, rows] / scales[:, :1] - s[:, rows] / scales[:, 1:2]
    starts = _wrap(structure, As, b, c, x, v, evaluated, indices)
    differ = np.flatnonzero(~np.all((scaled > 0) == (v[:, rows] > 0), axis=1))
    if differ.size:
        vb = v[differ].copy()
        sd, sp_ = scales[differ, :1], scales[differ, 1:2]
        vb[:, rows] = sd * np.maximum(scaled[differ], 0.0) - sp_ * np.maximum(-scaled[differ], 0.0)
        balanced = _linearizations(structure, [As[k] for k in differ], A_vals[differ],
                                   b[differ], c[differ], x[differ], vb,
                                   [indices[k] for k in differ])
        for k, bal in zip(differ, balanced, strict=True):
            if bal.relative_residual <= _DECISIVE * starts[k].relative_residual:
                starts[k] = bal
    return starts


# A step is kept when it lowers the relative residual at least by this factor.
_DECISIVE = 0.5
# Relative residual below which a Newton step that falls short is rounding in
# N itself (measured floors: 1e-16 to 7e-15), not a wrong model: no other step
# is tried there (the least-squares one costs an SVD of K).
_ROUNDING = 1e-13


def _step(structure: Structure, lin: Linearization, *,
          budget: int) -> tuple[Linearization | None, int]:
    """One refinement step from ``lin`` (factored): the point it reaches, or
    None where no step reduces the residual decisively, and the number of
    extra factorizations it used (at most ``budget``).

    1. The Newton step, K [dz; λ] = [−N(z); 0] by LU; least squares where K is
       exactly or numerically singular (condition above ``_COND_LIMIT``; K of
       a Clarabel answer to a small PSD/exp-cone problem had condition 1.8e16,
       rank 38 of 39 from a non-unique CVXPY auxiliary variable: the LU step
       failed, the least-squares one went 1.5e-6 → 5e-12 → 4e-16, while the
       old order, LU then a pivot then least squares, spent the three
       factorizations and stopped at 7e-10; outputs 1e-10 off then, enough to
       put central differences of re-solves 7e-5 off the, correct, adjoint).
    2. Where the full Newton step falls short, the active set of the iterate
       is wrong: on the nonnegative rows of an LP, N is linear on each piece
       (a sign pattern of v) and the solver's answer can sit on a neighbouring
       piece, with one row too many or too few active. Such a piece is nearly
       degenerate: K has a nearly null direction, and along it lies the
       neighbouring piece's boundary, as along an edge in a simplex pivot.
       SCS's 1e-4 answers measured (6 LPs of the failure-injection family, one
       in ~1,000 draws, multipliers ~1e-4 or a row active to 4e-4): K's smallest
       singular value 1e-6…5e-8 of the largest; its direction, one way or the
       other, crossed the one wrong row first, and one Newton step from the
       middle of the next piece reached 1e-16 every time (x had been up to 1.1
       off: on an edge whose reduced cost was the tolerance). So each way along
       that direction (``_null_direction``) is tried: across the first
       boundary, to the middle of the next piece, one Newton step from there,
       kept if decisive.
    3. The same pivot along the Newton ray itself (the first sign change of a
       row of v on the full step), where budget is left.
    4. The minimum-norm least-squares step, singular values below the point's
       accuracy dropped (K is numerically singular, typically because
       CVXPY's auxiliary variables are not unique; a minimum-norm step still
       converges on the determined components).
    Each pivot costs a factorization, counted against ``budget``.
    """
    assert lin.lu is not None and lin.K is not None
    target = _DECISIVE * lin.relative_residual
    small = lin.K.shape[0] <= _DENSE_LSTSQ_MAX
    # Where K is numerically singular (as for the derivative: condition above
    # _COND_LIMIT) the LU step is rounding noise along the null direction; the
    # least-squares step is Newton's step on the determined components.
    least_squares = lin.lu.singular or (small and lin.condition > _COND_LIMIT)
    dz = _newton_direction(lin, least_squares=least_squares)
    trial = _point(structure, lin, lin.z + dz)
    if trial is not None and trial.relative_residual <= target:
        return trial, 0
    if lin.relative_residual <= _ROUNDING:
        return None, 0
    used = 0
    if structure.dproj.nonneg.size:
        null = _null_direction(lin)
        rays = [] if null is None else [(null, np.inf), (-null, np.inf)]
        for direction, reach in [*rays, (dz, 1.0)]:
            if used >= budget:
                break
            across = _across_boundary(structure, lin, direction, reach)
            if across is None:
                continue
            used += 1
            across.factor(compact=False)
            assert across.lu is not None
            step = _newton_direction(across, least_squares=across.lu.singular)
            pivoted = _point(structure, across, across.z + step)
            if pivoted is not None and pivoted.relative_residual <= target:
                return pivoted, used
    if not least_squares and small:
        dz = _newton_direction(lin, least_squares=True)
        trial = _point(structure, lin, lin.z + dz)
        if trial is not None and trial.relative_residual <= target:
            return trial, used
    return None, used


# Inverse-iteration sweeps for K's smallest singular direction, and the ratio
# of singular values below which that direction counts as nearly null.
_NULL_SWEEPS = 3
_NULL_RATIO = 1e-4


def _null_direction(lin: Linearization) -> FloatArray | None:
    """The z-part of K's right singular vector of the smallest singular value,
    by inverse iteration on KᵀK with the LU at hand (the SVD where K is
    exactly singular and small); None unless that singular value is below
    ``_NULL_RATIO`` of ‖K‖ (a nearly degenerate piece)."""
    assert lin.lu is not None and lin.K is not None
    N, size = lin.z.size, lin.K.shape[0]
    if lin.lu is _SINGULAR:  # certified null spaces: a null vector is at hand
        assert lin._null is not None
        return lin._null.N[:N, 0]
    if lin.lu.singular:
        if size > _DENSE_LSTSQ_MAX:
            return None
        _, S, Vt, _ = lin._svd()
        return Vt[-1, :N] if S[-1] <= _NULL_RATIO * S[0] else None
    u = np.random.default_rng(0).standard_normal(size)
    for _ in range(_NULL_SWEEPS):
        u = lin.lu.solve(lin.lu.solve(u, True), False)
        norm = float(np.linalg.norm(u))
        if not (np.isfinite(norm) and norm > 0):
            return None
        u /= norm
    sigma = float(np.linalg.norm(lin.K @ u))
    scale = float(abs(lin.K).max())  # dense or sparse K
    return u[:N] if sigma <= _NULL_RATIO * scale else None


def _newton_direction(lin: Linearization, *, least_squares: bool) -> FloatArray:
    """dz with K [dz; λ] = [−N(z); 0] (LU, or minimum-norm least squares)."""
    assert lin.lu is not None and lin.K is not None
    N = lin.z.size
    full = np.zeros(lin.K.shape[0])
    full[:N] = -lin.residual  # the border row and the SOC unknowns' rows are zero
    return (lin._lstsq(full, transpose=False) if least_squares else lin.lu.solve(full))[:N]


def _point(structure: Structure, lin: Linearization,
           z_new: FloatArray) -> Linearization | None:
    """The linearization at z_new / w (N is positively homogeneous: the
    embedding's solutions are rays, normalized to w = 1); None unless finite
    with w > 0."""
    new = _points_many(structure, [lin], [z_new])[0]
    if new is not None:
        # Where K was singular here, its null spaces seed the next point's (see
        # _bordered_null): no SVD there unless the rank changed.
        new.hint = lin._null
    return new


def _across_boundary(structure: Structure, lin: Linearization, dz: FloatArray,
                     reach: float) -> Linearization | None:
    """The point in the middle of the next piece of N along the ray
    z + t·dz, 0 < t < ``reach``, across its first sign change of a
    nonnegative-cone entry of v (one row entering or leaving the active set);
    None if there is none. (The next piece ends at the second sign change, or
    at ``reach``, or where there is neither at twice the first.)"""
    rows = lin.x.size + structure.dproj.nonneg
    v, dv = lin.z[rows], dz[rows]
    with np.errstate(divide="ignore", invalid="ignore"):
        t = -v / dv
    t = np.sort(t[np.isfinite(t) & (t > 0) & (t < reach)])
    if not t.size:
        return None
    t_next = t[1] if t.size > 1 else min(reach, 2.0 * t[0])
    return _point(structure, lin, lin.z + 0.5 * (t[0] + t_next) * dz)


@dataclass(eq=False)
class ItemDerivative:
    """The derivative of the solution map at one solved item.

    Build with :meth:`at` (optionally from the :class:`Linearization` that
    refinement left behind); then :func:`jvp_many` and :func:`vjp_many` (one
    item or a group) may use it any number of times: the factorization is
    computed once and kept (callers drop a ``heavy`` one after use, see
    ``_KEEP_BYTES``).
    """

    x: FloatArray
    y: FloatArray
    s: FloatArray
    pi: FloatArray
    D_vals: FloatArray  # values of DΠ_{K*} on structure.dproj's pattern
    solve: Callable[[FloatArray], FloatArray]  # dz with M dz = g
    solve_t: Callable[[FloatArray], FloatArray]  # r with Mᵀ r = h
    heavy: bool = False  # its factorization is above _KEEP_BYTES: not worth keeping

    @classmethod
    def at(
        cls, structure: Structure, A: CSC, b: FloatArray, c: FloatArray, x: FloatArray,
        y: FloatArray, s: FloatArray, mode: DerivativeMode = DerivativeMode.exact,
        index: int = 0, linearization: Linearization | None = None,
        outputs: Callable[[FloatArray], FloatArray] | None = None,
        parameters: Callable[[FloatArray, FloatArray, FloatArray], FloatArray] | None = None,
    ) -> ItemDerivative:
        """The derivative at (x, y, s).

        Where K is singular, ``outputs`` (solution tangents, rows of [dx, dy] →
        output tangents) and ``parameters`` ((dA, db, dc) → dθ, the adjoint of
        the parameter map, on rows: (k, nnz), (k, m), (k, n) → (k, p)) decide
        whether the requested outputs still have a derivative along every
        parameter direction; a warning is given if not.
        """
        lin = linearization or Linearization.at(structure, A, b, c, x, y - s, index)
        if mode is DerivativeMode.exact:
            lin.factor()
            if not lin.regular and not _outputs_determined(lin, outputs, parameters):
                _warn(
                    f"the derivative at batch item {index} does not exist for the requested "
                    f"outputs (condition number of the derivative system ≈ "
                    f"{lin.condition:.1e}): the solution is not unique or not strictly "
                    "complementary there (e.g. a constraint active with a zero multiplier). "
                    "A minimum-norm least-squares derivative is used instead; treat this "
                    "item's gradient with care."
                )
            solve = lin.solve
            solve_t = lambda h: lin.solve(h, transpose=True)  # noqa: E731
        else:
            solve, solve_t = _diffcp_solvers(A, b, c, x, y, s, structure.layout, mode)
        return cls(lin.x, lin.y, lin.s, lin.pi, lin.D_vals, solve, solve_t,
                   heavy=mode is DerivativeMode.exact and lin.heavy)


def vjp_many(structure: Structure, derivs: list[ItemDerivative], dx: FloatArray,
             dy: FloatArray, ds: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
    """The adjoint at one or several solved items of one program:
    ``(dx, dy, ds) → (dA on A's pattern, db, dc)``, one row per item (item k
    is ``derivs[k]``). The products with the projection's Jacobian and the
    formulas for (dA, db, dc) run once for all rows; the linear solve with Mᵀ
    item by item (each with its own checks and degenerate paths)."""
    rows, cols, n = structure.a_rows, structure.a_cols, derivs[0].x.size
    stack = lambda f: stack_rows(derivs, f)  # noqa: E731
    X, Y, S, P = stack("x"), stack("y"), stack("s"), stack("pi")
    dw = -((X * dx).sum(axis=1) + (Y * dy).sum(axis=1) + (S * ds).sum(axis=1))
    H = np.concatenate([dx, structure.dproj.rmatvec_many(stack("D_vals"), dy + ds) - ds,
                        dw[:, None]], axis=1)
    R = np.zeros_like(H)
    for k, d in enumerate(derivs):
        if np.any(H[k]):
            R[k] = d.solve_t(H[k])
    rx, ry, rw = R[:, :n], R[:, n:-1], R[:, -1:]
    px, py = P[:, :n], P[:, n:-1]
    take = lambda a, idx: np.take(a, idx, axis=1)  # noqa: E731  (a[:, idx] is 3x slower)
    dA = take(px, cols) * take(ry, rows) - take(py, rows) * take(rx, cols)
    return dA, py * rw - ry, px * rw - rx


def jvp_many(structure: Structure, derivs: list[ItemDerivative], dA: FloatArray,
             db: FloatArray, dc: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
    """The derivative at one or several solved items of one program:
    ``(dA on A's pattern, db, dc) → (dx, dy, ds)``, one row per item, batched
    as :func:`vjp_many` is."""
    rows, cols = structure.a_rows, structure.a_cols
    n, m = derivs[0].x.size, derivs[0].y.size
    stack = lambda f: stack_rows(derivs, f)  # noqa: E731
    X, Y, S, P = stack("x"), stack("y"), stack("s"), stack("pi")
    px, py = P[:, :n], P[:, n:-1]
    G = np.concatenate([segment_sums(dA * np.take(py, rows, axis=1), cols, n) + dc,
                        db - segment_sums(dA * np.take(px, cols, axis=1), rows, m),
                        (-(dc * px).sum(axis=1) - (db * py).sum(axis=1))[:, None]], axis=1)
    Z = np.zeros_like(G)
    for k, d in enumerate(derivs):
        if np.any(G[k]):
            Z[k] = d.solve(G[k])
    du, dv, dw = Z[:, :n], Z[:, n:-1], Z[:, -1:]
    Ddv = structure.dproj.matvec_many(stack("D_vals"), dv)
    return -(du - X * dw), -(Ddv - Y * dw), -(Ddv - dv - S * dw)


def _outputs_determined(
    lin: Linearization,
    outputs: Callable[[FloatArray], FloatArray] | None,
    parameters: Callable[[FloatArray, FloatArray, FloatArray], FloatArray] | None,
) -> bool:
    """Whether the requested outputs have a derivative although K is singular.

    Two things can go wrong at a singular K. (1) The solution tangent is not
    unique: K has null directions; harmless if none of them moves an output.
    (2) The equations have no solution for some perturbations: a left null
    vector r of K with rᵀ(dQ Π(z)) ≠ 0 for some parameter direction; harmless
    if rᵀ(dQ Π(z)) vanishes for every dθ, i.e. if the parameter-space image
    of r (the adjoint formulas applied to r, then Cᵀ) is zero.

    Both are harmless, for instance, for the epigraph variable t of an
    inactive ``norm(x) <= r``, free in [‖x‖, r]: it moves no output and no
    parameter reaches its equation. Then the minimum-norm derivative is the
    outputs' derivative and no warning is due. Two identical active bounds
    x ≤ h₁, x ≤ h₂ fail (2): x = min(h₁, h₂) has a kink there.
    """
    if outputs is None or parameters is None:
        return False
    null = lin.null_directions()
    left = lin.left_null()
    if null is None or left is None:
        return False
    # Nothing finer than the point's own accuracy can be resolved (an unrefined
    # interior-point answer is ~1e-6 off; a refined one ~1e-15).
    tol = max(1e-8, 100.0 * lin.accuracy)
    if null.shape[0]:
        moved = outputs(null)
        if np.abs(moved).max(initial=0.0) > tol * (1.0 + float(np.abs(null).max())):
            return False
    n = lin.x.size
    rows, cols = lin.structure.a_rows, lin.structure.a_cols
    px, py = lin.pi[:n], lin.pi[n:-1]
    if not left.shape[0]:
        return True
    # All left null vectors at once (rows), one call of the parameter adjoint:
    # one call per vector was 0.35 ms each on nnls_l1 (12 vectors per item).
    rx, ry, rw = left[:, :n], left[:, n:-1], left[:, -1:]
    dA = px[cols] * ry[:, rows] - py[rows] * rx[:, cols]
    dtheta = np.asarray(parameters(dA, py * rw - ry, px * rw - rx))
    limit = tol * (1.0 + np.abs(left).max(axis=1))
    return bool(np.all(np.abs(dtheta).max(axis=1, initial=0.0) <= limit))


def _diffcp_solvers(A, b, c, x, y, s, layout, mode):
    """diffcp's solvers of M dz = g and Mᵀ r = h (its operators, its settings)."""
    import diffcp._diffcp as _diffcp
    import diffcp.cones as cone_lib

    cones = cone_lib.parse_cone_dict_cpp(cone_lib.parse_cone_dict(layout.to_scs()))
    m, n = A.shape
    Q = sp.bmat(
        [[None, A.T, c[:, None]], [-A, None, b[:, None]], [-c[None, :], -b[None, :], None]],
        format="csc",
    )
    u, v, w = x, y - s, 1.0
    if mode is DerivativeMode.dense:
        Mdense = _diffcp.M_dense(Q.toarray(), cones, u, v, w)
        MT = Mdense.T
        return (lambda g: _diffcp._solve_derivative_dense(Mdense, MT, g),
                lambda h: _diffcp._solve_adjoint_derivative_dense(Mdense, MT, h))
    M = _diffcp.M_operator(sp.csc_matrix(Q), cones, u, v, w)
    MT = M.transpose()
    if mode is DerivativeMode.lsqr:
        return (lambda g: _diffcp.lsqr(M, g).solution, lambda h: _diffcp.lsqr(MT, h).solution)
    shape = (n + m + 1, n + m + 1)
    Mop = spla.LinearOperator(shape, matvec=M.matvec, rmatvec=M.rmatvec, dtype=np.float64)
    MTop = spla.LinearOperator(shape, matvec=MT.matvec, rmatvec=MT.rmatvec, dtype=np.float64)
    return (
        lambda g: spla.lsmr(Mop, g, maxiter=10 * shape[0], atol=1e-12, btol=1e-12)[0],
        lambda h: spla.lsmr(MTop, h, maxiter=10 * shape[0], atol=1e-10, btol=1e-10)[0],
    )
