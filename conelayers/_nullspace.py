"""K's null spaces where it is singular (degenerate points: a solution that
is not unique, or not strictly complementary), found without an SVD of K
where a bordering of K can certify them.

Notation as in :mod:`conelayers._linearization`. Where K is singular or its
condition number is above 1e12, the derivative and refinement solve in the
minimum-norm least-squares sense, through K's numerically null spaces N
(right) and L (left): :class:`_NullBasis` holds them with the LU of a
bordered K̂ = K + σ·L Nᵀ, so that a least-squares solve costs one LU solve
and two projections. They come from the nearby point's null spaces
(:func:`_bordered_null`: refinement's previous iterate), from K's own LU
with its small pivots replaced (:func:`_pivot_null`), or from a random
bordering (:func:`_guessed_null`); each is certified (:func:`_certified`)
or declined, and then the dense SVD decides
(:meth:`Linearization._basis`). At a solver's coarse answer, where no
threshold separates K's null singular values from its small ones, the
least-squares step is a rank-revealing QR's (:class:`_SoftQR`), whose
truncation seeds the next iterate's null spaces.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import scipy.linalg as sla
from scipy.linalg import lapack

from ._factor import DenseLU
from ._typing import FloatArray

if TYPE_CHECKING:
    from ._linearization import Linearization

# Relative singular value below which a direction counts as null.
_SVD_RCOND = 1e-11


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
    # From a soft threshold's truncation (_SoftQR.hint), not a certified basis:
    # where the bordering declines it, K's own LU and a guess decide, not the SVD.
    soft: bool = False

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


class _SoftQR:
    """Minimum-norm least squares at a soft threshold, by a rank-revealing QR
    of K (LAPACK ``geqp3``: K P = Q R, column pivoting), kept for the point's
    later solves and for its null spaces, which seed the next point's
    (:meth:`hint`, see :func:`_bordered_null`).

    The rank r is the number of R's diagonal entries above ``rcond``·|r₁₁|
    (they decrease). With R = [[R₁₁, R₁₂], [0, R₂₂]] and R₂₂ dropped, the
    truncated K has the null space N = P·[−R₁₁⁻¹R₁₂; I] (orthonormalized) and
    the left null space L = Q[:, r:]; its minimum-norm least-squares solutions
    are x = (I − NNᵀ)·P·[R₁₁⁻¹(Qᵀb)₁; 0] and, transposed,
    x = Q·[R₁₁⁻ᵀ(Pᵀ(I − NNᵀ)b)₁; 0]. That is the truncation LAPACK's ``gelsy``
    makes (QR with column pivoting, then a complete orthogonal factorization;
    used here before), and the SVD's up to the rank estimate's small factors.
    Used for the refinement step at a solver's answer, whose outcome the
    step's own test decides.

    Against ``gelsy`` (2026-12-02, nnls_l1, 64 items, one thread,
    interleaved): ``geqp3`` costs 0.43 ms at order 157 against ``gelsy``'s
    1.07, and the next iterate, seeded with the truncation's null spaces,
    finds its own by one bordering instead of K's LU, its condition estimate,
    a power iteration and the pivot bordering: refinement 2.59 → 2.25 ms per
    item, the same solutions (to 9e-16) and gradients (to 3e-12, relative,
    at these degenerate points).

    Tried instead and dropped (2026-12-02, nnls_l1, 6 × 32 items, one
    thread): the basic step with K's own LU, its small pivots replaced
    (:meth:`DenseLU.with_pivots`, no new factorization) was decisive at 136
    of 148 starts and ended at the same outputs and gradients (to 5e-15), but
    the iterates after it took more factorizations and null-space work (dense
    LUs 2.5 → 3.4 per item): forward CPU time 3.96 → 3.90 ms per item.
    """

    def __init__(self, K: FloatArray, rcond: float) -> None:
        order = K.shape[0]
        with np.errstate(all="ignore"):
            qr, jpvt, tau, _, info = lapack.dgeqp3(K, lwork=2 * order + (order + 1) * 32)
        diag = np.abs(np.diagonal(qr))
        self.ok = info == 0 and bool(np.isfinite(qr).all()) and diag.size > 0 and diag[0] > 0
        self._qr, self._tau, self._perm = qr, tau, jpvt - 1
        self.rank = int(np.sum(diag > rcond * diag[0])) if self.ok else 0
        self._N: FloatArray | None = None
        self._hint: _NullBasis | None = None

    @property
    def N(self) -> FloatArray:
        """Orthonormal basis of the truncated K's null space."""
        if self._N is None:
            r, order = self.rank, self._qr.shape[0]
            W = np.zeros((order, order - r))
            if r < order:
                W[:r] = -sla.solve_triangular(self._qr[:r, :r], self._qr[:r, r:],
                                              check_finite=False)
                W[r:] = np.eye(order - r)
            out = np.empty_like(W)
            out[self._perm] = W
            self._N = np.linalg.qr(out)[0] if W.shape[1] else out
        return self._N

    def _q(self, c: FloatArray, transpose: bool) -> FloatArray:
        """Q c (Qᵀ c if ``transpose``), c a vector or columns."""
        cols = c.reshape(c.shape[0], -1)
        out, _, _ = lapack.dormqr("L", "T" if transpose else "N", self._qr, self._tau, cols,
                                  lwork=max(1, cols.shape[1]) * 64)
        return out.reshape(c.shape)

    def solve(self, full: FloatArray, transpose: bool) -> FloatArray:
        """K⁺ full (Kᵀ⁺ full if ``transpose``) at the truncation (zero where
        K was not finite)."""
        if not self.ok:
            return np.zeros_like(full)
        r, N = self.rank, self.N
        with np.errstate(all="ignore"):
            if not transpose:
                w = sla.solve_triangular(self._qr[:r, :r], self._q(full, True)[:r],
                                         check_finite=False)
                x = np.zeros_like(full)
                x[self._perm[:r]] = w
                x -= N @ (N.T @ x)
            else:
                b = full - N @ (N.T @ full)
                w = np.zeros_like(full)
                w[:r] = sla.solve_triangular(self._qr[:r, :r], b[self._perm[:r]], trans=1,
                                             check_finite=False)
                x = self._q(w, False)
        return x if np.isfinite(x).all() else np.zeros_like(full)

    def hint(self, K: FloatArray) -> _NullBasis | None:
        """The truncation's null spaces, to seed the next point's (no factors;
        found once: every trial point from this one gets them)."""
        order = self._qr.shape[0]
        if not self.ok or self.rank == order:
            return None
        if self._hint is None:
            E = np.zeros((order, order - self.rank))
            E[self.rank:] = np.eye(order - self.rank)
            self._hint = _NullBasis(self.N, self._q(E, False),
                                    _norm_2(K, np.random.default_rng(order)), None, soft=True)
        return self._hint


def _norm_2(K: FloatArray, rng: np.random.Generator) -> float:
    """‖K‖₂ by power iteration from a random start (a lower bound, within a
    few per cent)."""
    with np.errstate(all="ignore"):
        u = rng.standard_normal(K.shape[0])
        for _ in range(_NORM_SWEEPS):
            u = K.T @ (K @ u)
            u /= np.linalg.norm(u)
        return float(np.linalg.norm(K @ u))


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
    sigma = _norm_2(K, rng)
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
