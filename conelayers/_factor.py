"""LU factorizations of the bordered matrix K, dense or sparse.

Which one is faster depends on size and fill, and was measured on the
benchmark problems (single-threaded BLAS, this 2-core machine): K of a
50-variable sparsemax (N = 157, 26 % dense) factors in 0.10 ms with LAPACK's
``getrf`` against 0.28 ms with SuperLU; a 128-variable dense QP (N = 389,
56 % dense) in 1.05 ms against 2.6 ms; but a 1,024-variable sparse QP
(N ≈ 3,100, 0.1 % dense) only sparse is reasonable. Per item of a layer,
where the Newton steps also pay each solve's and product's call overhead
(SuperLU's solve ~40 µs against ``getrs``' ~10 µs at N = 158): sparsemax
(N = 158) stays faster dense, the logistic regression (N = 317, 2.8 % dense)
is 10–25 % faster sparse (interleaved, 32 items, one thread). :func:`use_dense`
holds the rule. The dense factorization also gives LAPACK's ``gecon``
condition estimate; the sparse one gets the same estimator (Hager's, as in
``dlacon``) from about six solves.

SuperLU's column ordering is chosen per program (:class:`SparseOrdering`):
neither of its two candidates wins everywhere. Minimum degree on the pattern of
Kᵀ + K (K's pattern is symmetric up to the values of D: blocks A and AᵀD, the
c and b borders) gives the 1,024-variable sparse QP (order 4,103) L + U of 4.2
million entries and 1.2 s against COLAMD's 7.2 million and 2.1 s; on the
logistic regression (order 317) COLAMD gives 14,262 entries and 0.41 ms
against 26,690 and 0.83 ms, and its solves take 21 against 29 µs. (Both
measured on K as stored. SuperLU now gets large K without their stored
zeros, see :func:`_pruned`: on one sparse QP item 3.0 million entries and
0.51 s with minimum degree, 2.8 million and 0.61 s with COLAMD, so large K
keep minimum degree.)
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable

import numpy as np
import scipy.linalg as sla
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from scipy.linalg import lapack

from ._typing import FloatArray, IntArray

__all__ = ["DenseLU", "NearbyLU", "SparseLU", "SparseOrdering", "dense", "use_dense"]

# Dense below this order whatever the fill; up to _DENSE_MAX when fill is high.
_DENSE_ALWAYS = 200
_DENSE_MAX = 2500
_DENSE_FILL = 0.05


def use_dense(order: int, nnz: int) -> bool:
    """The measured rule: dense LAPACK LU for small or well-filled K."""
    return order <= _DENSE_ALWAYS or (order <= _DENSE_MAX and nnz >= _DENSE_FILL * order**2)


class DenseLU:
    """``getrf`` factors of a dense matrix; solves with ``getrs``."""

    def __init__(self, K: FloatArray) -> None:
        self.K = K
        self._lu, self._piv, info = lapack.dgetrf(K, overwrite_a=False)
        self.singular = info > 0
        self._cond: float | None = float("inf") if self.singular else None

    @property
    def order(self) -> int:
        return int(self._lu.shape[0])

    @property
    def condition(self) -> float:
        """1-norm condition number estimate (LAPACK ``gecon``)."""
        if self._cond is None:
            assert self.K is not None, "K was released before its condition was estimated"
            anorm = float(np.abs(self.K).sum(axis=0).max())
            rcond, _ = lapack.dgecon(self._lu, anorm, norm="1")
            self._cond = float("inf") if rcond == 0 else 1.0 / float(rcond)
        return self._cond

    def inverse_norm(self, norm: str = "1") -> float:
        """Estimate of ‖K⁻¹‖ in the 1-norm (``"1"``) or ∞-norm (``"I"``), by ``gecon``.

        ``gecon`` returns 1/(‖K‖·est) for the ‖K‖ it is given and its estimate
        est of ‖K⁻¹‖ from the factors alone, so ‖K‖ = 1 gives est itself and K
        is not needed (the factors of :meth:`with_pivots` have none)."""
        if self.singular:
            return float("inf")
        rcond, _ = lapack.dgecon(self._lu, 1.0, norm=norm)
        return float("inf") if rcond == 0 else 1.0 / float(rcond)

    def with_pivots(self, rows: IntArray, value: float) -> DenseLU:
        """The factors P L U' of K̂ = K + P L[:, rows] diag(value − uᵢᵢ) E_rowsᵀ:
        U's diagonal entries ``rows`` set to ``value``, a change of K in the
        columns ``rows`` only (of rank ``rows.size``). For the null spaces of a
        singular K without a new factorization (``_nullspace._pivot_null``).
        K̂ itself is not formed: no :attr:`condition`, :meth:`inverse_norm` is
        available."""
        out = DenseLU.__new__(DenseLU)
        out._lu = self._lu.copy(order="F")
        out._lu[rows, rows] = value
        out.K, out._piv, out.singular, out._cond = None, self._piv, value == 0, None
        return out

    def solve_upper(self, rhs: FloatArray) -> FloatArray:
        """U⁻¹ rhs, U the upper triangular factor."""
        return sla.solve_triangular(self._lu, rhs, lower=False, check_finite=False)

    def release_matrix(self, condition: bool = True) -> None:
        """Drop the reference to K, once its condition estimate is known (with
        ``condition``): only solves and :meth:`inverse_norm` remain (a condition
        estimate not made before needs ‖K‖ and is not available after)."""
        if condition:
            _ = self.condition
        self.K = None

    @property
    def nbytes(self) -> int:
        """Memory held by the factors."""
        return int(self._lu.nbytes + self._piv.nbytes)

    def pivots(self) -> FloatArray:
        """|diag(U)|: the magnitudes of the LU's pivots."""
        return np.abs(np.diagonal(self._lu))

    def solve(self, rhs: FloatArray, transpose: bool = False) -> FloatArray:
        # A private copy of the pivots: SciPy's ``dgetrs`` wrapper shifts them to
        # 1-based in place around the LAPACK call, with the GIL released, so two
        # threads solving with one LU (one Solution differentiated from two
        # threads) corrupted each other's pivots: wrong gradients, or heap
        # corruption that aborted the process. The copy costs ~1 µs of a ~10 µs
        # solve at order 157.
        sol, _ = lapack.dgetrs(self._lu, self._piv.copy(), rhs, trans=1 if transpose else 0)
        return sol


# SuperLU's column orderings for K (see the module docstring and
# SparseOrdering): the default first, the alternative tried on small orders.
_PERMC_SPEC = "MMD_AT_PLUS_A"
_PERMC_ALTERNATIVE = "COLAMD"
# Largest order of K whose first factorization is made with both orderings.
# Above, the second factorization is expensive (the sparse QP, order 4,103:
# 3.9 s with COLAMD) and minimum degree on Kᵀ + K is what was measured to win.
_CHOOSE_MAX_ORDER = 1000
# Exactly singular K (no fill to compare) after which the default ordering stays.
_CHOOSE_TRIES = 3


class SparseLU:
    """SuperLU factors (column ordering ``spec``); condition by Hager's estimator."""

    def __init__(self, K: sp.csc_array, spec: str = _PERMC_SPEC) -> None:
        self.K, self.spec = K, spec
        try:
            self._lu = spla.splu(_pruned(K), permc_spec=spec)
            self.singular = False
            self._cond: float | None = None
        except RuntimeError:  # "Factor is exactly singular"
            self._lu = None
            self.singular = True
            self._cond = float("inf")

    @property
    def condition(self) -> float:
        """1-norm condition number estimate: ‖K‖₁ times Hager's estimate of ‖K⁻¹‖₁."""
        if self._cond is None:
            lu = self._lu
            assert lu is not None
            with np.errstate(all="ignore"):
                # ‖K‖₁ from the CSC arrays (abs(K).sum(axis=0) builds two arrays).
                csum = np.concatenate([[0.0], np.cumsum(np.abs(self.K.data))])
                norm = float(np.max(csum[self.K.indptr[1:]] - csum[self.K.indptr[:-1]],
                                    initial=0.0))
                est = norm * _inverse_norm_1(
                    lambda v: lu.solve(v), lambda v: lu.solve(v, trans="T"), self.K.shape[0])
            self._cond = est if np.isfinite(est) else float("inf")
        return self._cond

    @property
    def nbytes(self) -> int:
        """Memory held by the factors: L + U's stored entries (value and row index)."""
        return 0 if self._lu is None else int(self._lu.nnz) * 12

    def solve(self, rhs: FloatArray, transpose: bool = False) -> FloatArray:
        assert self._lu is not None
        return self._lu.solve(rhs, trans="T" if transpose else "N")


# Smallest order of K that SuperLU gets without its stored zeros (_pruned): the
# orders where the ordering is not chosen but minimum degree on Kᵀ + K.
_PRUNE_MIN_ORDER = _CHOOSE_MAX_ORDER + 1


def _pruned(K: sp.csc_array) -> sp.csc_array:
    """K without its stored zeros, for SuperLU, on large K
    (``_PRUNE_MIN_ORDER``); smaller K as they are.

    SuperLU takes every stored entry as a structural nonzero: the ordering sees
    it and L + U keep its fill. K's pattern is the program's, so it stores the
    zeros of the item's D (an inactive inequality's column of AᵀD, I − D where
    a constraint is active): 23 % of the sparse QP's 71,630 entries. Minimum
    degree on Kᵀ + K (the ordering from this order up) on three sparse QP
    items (order 4,103): L + U 4.2 → 3.1 million entries, the factorization
    1.2 → 0.42 s. Below, where :class:`SparseOrdering` chooses between it and
    COLAMD by fill on the first K, pruning did not pay: on the logistic
    regression (order 317, 12 items' K, 9 % stored zeros) COLAMD took 0.49 ms
    either way and minimum degree 1.00 → 0.75 ms, but the choice then went to
    minimum degree (fewer entries on the first item's K), and the layer was
    9 % slower per item (forward + backward, B = 128, interleaved). K itself
    keeps its pattern, which its products and the condition estimate read.
    """
    if K.indptr.size - 1 < _PRUNE_MIN_ORDER or K.data.all():  # (order: K is square)
        return K
    pruned = K.copy()
    pruned.eliminate_zeros()
    return pruned


class SparseOrdering:
    """SuperLU's column ordering for one program's K, chosen on the first K
    factored: for K of order up to ``_CHOOSE_MAX_ORDER`` that K is factored with
    both candidates and the one with fewer entries in L + U (they set the cost
    of the factorization and of every solve) is kept for the program's later
    factorizations; larger K use minimum degree on Kᵀ + K.

    The choice is made on an item's K, not on K's pattern with random values:
    K's values decide the fill through pivoting and through D's zeros
    (logistic regression, order 317: COLAMD 14,262 and 13,363 entries against
    26,690 and 27,933 on two items' K, but 22,671 against 24,171 on random
    values). A K that either candidate finds exactly singular (a degenerate
    solution) decides nothing; after ``_CHOOSE_TRIES`` such K, the default
    stays. In the default engine the first K is the batch's first item's
    (refinement factors groups in order on the calling thread); where items
    factor on several threads, whichever comes first decides. Either way the
    LU is K's own: the ordering changes rounding, not the solves' accuracy.
    """

    def __init__(self, order: int) -> None:
        self.spec: str | None = None if order <= _CHOOSE_MAX_ORDER else _PERMC_SPEC
        self._tries = 0
        self._lock = threading.Lock()

    def factor(self, K: sp.csc_array) -> SparseLU:
        """SuperLU's LU of K with the program's ordering (chosen here if not yet)."""
        if self.spec is not None:
            return SparseLU(K, self.spec)
        with self._lock:
            if self.spec is not None:
                return SparseLU(K, self.spec)
            lus = [SparseLU(K, spec) for spec in (_PERMC_SPEC, _PERMC_ALTERNATIVE)]
            regular = [lu for lu in lus if not lu.singular]
            self._tries += 1
            if len(regular) == len(lus):
                best = min(regular, key=lambda lu: lu.nbytes)  # (ties: the default)
                self.spec = best.spec
                return best
            if self._tries >= _CHOOSE_TRIES:
                self.spec = _PERMC_SPEC
            return regular[0] if regular else lus[0]

    def __getstate__(self) -> dict:
        return {"spec": self.spec, "_tries": self._tries}  # (a lock does not pickle)

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()


# Smallest order of a dense K whose nearby K₀'s LU serves it. getrf's n³ against
# the sweeps' n² (each one ``getrs`` and a product with K's stored entries):
# measured on the benchmark (B = 128, PyTorch layer, interleaved), the backward
# per item went 0.35 → 0.24 ms on sparsemax (order 158) but 0.19 → 0.24 on the
# QP (order 62) and 0.20 → 0.22 on the SDP (order 86); on random K with 6 %
# stored entries the two broke even between orders 80 and 120.
_NEARBY_DENSE_MIN_ORDER = 120

# Largest contraction ‖I − K₀⁻¹K‖ (estimated on one random vector) at which a
# nearby matrix K₀'s LU serves K's solves: each sweep of iterative refinement
# then gains at least three digits, so ``_NEARBY_SWEEPS`` reach rounding.
_NEARBY_CONTRACTION = 1e-3
_NEARBY_SWEEPS = 8
# Relative residual a nearby solve refines to, and the most it may end at
# before K gets its own LU after all.
_NEARBY_RTOL = 1e-15
_NEARBY_ACCEPT = 1e-12
# A sweep that does not at least halve the residual finds it at its rounding
# floor, where ``_NEARBY_RTOL`` may be out of reach: the sweeps stop there
# (LAPACK's ``gerfs`` rule). Measured before this rule (64 items each): on
# sparsemax 19 of 64 solves ran all 8 sweeps, ending at a median relative
# residual of 7e-16; on the dense QP every one did, at 1.6e-14.
_NEARBY_STALL = 0.5


def refined_solve(solve: Callable[[FloatArray], FloatArray],
                  product: Callable[[FloatArray], FloatArray], rhs: FloatArray,
                  sweeps: int, rtol: float) -> tuple[FloatArray, float]:
    """``solve(rhs)`` with up to ``sweeps`` sweeps of iterative refinement
    against ``product`` (v ↦ Kv), to a relative residual of ``rtol`` or until a
    sweep no longer halves the residual (``_NEARBY_STALL``: its rounding floor;
    the better of the last two stands). The solution and its relative residual
    (infinite where the solve broke down)."""
    scale = max(float(np.linalg.norm(rhs)), np.finfo(float).tiny)
    with np.errstate(all="ignore"):
        sol = solve(rhs)
        res = rhs - product(sol)
        rel = float(np.linalg.norm(res)) / scale
        for _ in range(sweeps):
            if not rel > rtol:
                break
            new = sol + solve(res)
            res_new = rhs - product(new)
            rel_new = float(np.linalg.norm(res_new)) / scale
            if not rel_new <= _NEARBY_STALL * rel:
                if rel_new < rel:
                    sol, rel = new, rel_new
                break
            sol, res, rel = new, res_new, rel_new
    return sol, (rel if np.isfinite(rel) else float("inf"))


class NearbyLU:
    """The LU factors of a nearby matrix K₀ serving K's solves, by iterative
    refinement against K itself (Wilkinson's refinement with an inexact
    factorization); K₀'s factors are SuperLU's or, for K of order at least
    ``_NEARBY_DENSE_MIN_ORDER``, dense LAPACK's (see :meth:`serves`).

    With E = I − K₀⁻¹K and ρ = ‖E‖ < 1, the iterates x ← x + K₀⁻¹(b − Kx)
    converge to K⁻¹b with error ρᵏ: the solves are K's to rounding (each is
    checked by its residual against K; one that does not get there makes K
    factor itself, and every later solve uses that LU). K = K₀(I − E) also
    bounds ‖K⁻¹‖ ≤ ‖K₀⁻¹‖/(1 − ρ) and ‖K‖ ≤ ‖K₀‖(1 + ρ), which gives the
    condition estimate from K₀'s.

    Refinement leaves such a K₀ behind: the last iterate whose LU gave a Newton
    step is one or two steps from the point returned, where the derivative
    needs K (measured median ρ, 32 items each: SDP 2e-7, sparsemax 6e-6, QP
    4e-5, the dense QP 2e-4, where 25 of the 32 were above the 1e-3 limit);
    this saves that point's factorization (measured in the CHANGELOG's
    entries for this class).
    K is held by its stored entries (CSC) either way: its products are what
    the sweeps need (``product(v, transpose)``, K v or Kᵀ v; by default
    SciPy's, whose ``K.T`` builds a transposed array per solve: 17 against
    4 µs for K v at order 158).
    """

    def __init__(self, base: SparseLU | DenseLU, K: sp.csc_array, contraction: float,
                 product: Callable[[FloatArray, bool], FloatArray] | None = None) -> None:
        self.base, self.K, self._rho = base, K, contraction
        self._product = product or (lambda v, transpose: K.T @ v if transpose else K @ v)
        self._own: SparseLU | DenseLU | None = None

    @staticmethod
    def serves(base: object) -> bool:
        """Whether ``base`` is worth keeping for a nearby K: SuperLU's factors
        always (they cost many solves), dense ones from ``_NEARBY_DENSE_MIN_ORDER``."""
        if isinstance(base, SparseLU):
            return True
        return isinstance(base, DenseLU) and base.order >= _NEARBY_DENSE_MIN_ORDER

    @classmethod
    def of(cls, base: SparseLU | DenseLU, K: sp.csc_array,
           product: Callable[[FloatArray, bool], FloatArray] | None = None) -> NearbyLU | None:
        """``base``'s LU for K, or None where it is not close enough to converge fast."""
        if base.singular:
            return None
        v = _probe(K.shape[0])
        with np.errstate(all="ignore"):
            rho = float(np.linalg.norm(base.solve(K @ v) - v) / np.linalg.norm(v))
        return cls(base, K, rho, product) if rho <= _NEARBY_CONTRACTION else None

    @property
    def singular(self) -> bool:
        return self._own.singular if self._own is not None else False

    @property
    def nbytes(self) -> int:
        """Memory held by the factors in use."""
        return (self._own or self.base).nbytes

    @property
    def condition(self) -> float:
        """1-norm condition estimate: K₀'s, widened by (1 + ρ)/(1 − ρ)."""
        if self._own is not None:
            return self._own.condition
        return self.base.condition * (1.0 + self._rho) / (1.0 - self._rho)

    def solve(self, rhs: FloatArray, transpose: bool = False) -> FloatArray:
        return self.solve_checked(rhs, transpose)[0]

    def solve_checked(self, rhs: FloatArray,
                      transpose: bool = False) -> tuple[FloatArray, float | None]:
        """The solve and its relative residual against K where the sweeps
        checked it (None where K's own LU solved: unchecked, as any LU's)."""
        if self._own is not None:
            return self._own.solve(rhs, transpose), None
        sol, rel = refined_solve(lambda v: self.base.solve(v, transpose),
                                 lambda v: self._product(v, transpose), rhs,
                                 _NEARBY_SWEEPS, _NEARBY_RTOL)
        if rel <= _NEARBY_ACCEPT:
            return sol, rel
        # Slower convergence than the estimate promised: K factors itself.
        # (Later solves see ``singular`` where that LU is; this one keeps its best
        # effort, whose residual the caller checks.)
        base = self.base
        self._own = (SparseLU(self.K, base.spec) if isinstance(base, SparseLU)
                     else DenseLU(np.asfortranarray(self.K.toarray())))
        return (sol if self._own.singular else self._own.solve(rhs, transpose)), None


@functools.lru_cache(maxsize=16)
def _probe(order: int) -> FloatArray:
    """The fixed random vector of :meth:`NearbyLU.of`'s contraction test (a
    Generator costs ~11 µs to make, a tenth of the test at order 158)."""
    v = np.random.default_rng(order).standard_normal(order)
    v.flags.writeable = False
    return v


# Iterations of Hager's estimator (LAPACK's ``dlacon`` stops after five).
_HAGER_ITERATIONS = 5


def _inverse_norm_1(solve, solve_t, order: int) -> float:
    """Estimate of ‖K⁻¹‖₁ from solves with K and Kᵀ: Hager's method (1984) with
    Higham's extra test vector (1988), the algorithm of LAPACK's ``dlacon``,
    which ``gecon`` runs on the dense LU. A lower bound, almost always within a
    factor 3. About ten solves; SciPy's ``onenormest`` (block size 2, its
    LinearOperator wrapping) cost 1.2 ms on top of a 0.3 ms SuperLU
    factorization of sparsemax's K (order 158), this 0.1 ms."""
    x = np.full(order, 1.0 / order)
    est, previous = 0.0, -1
    for _ in range(_HAGER_ITERATIONS):
        y = solve(x)
        est = float(np.abs(y).sum())
        z = solve_t(np.where(y >= 0, 1.0, -1.0))
        j = int(np.argmax(np.abs(z)))
        if not np.isfinite(est) or j == previous or abs(z[j]) <= z @ x:
            break
        x = np.zeros(order)
        x[j], previous = 1.0, j
    # Higham's safeguard: a vector with alternating signs and growing entries,
    # which catches the matrices that fool the iteration.
    alt = np.arange(order, dtype=float)
    alt = (-1.0) ** alt * (1.0 + alt / max(order - 1, 1))
    return max(est, 2.0 * float(np.abs(solve(alt)).sum()) / (3.0 * order))


def dense(K: FloatArray | sp.csc_array) -> FloatArray:
    """K as a dense array (for SVD-based least squares)."""
    return K if isinstance(K, np.ndarray) else K.toarray()


