"""LU factorizations of the bordered matrix K, dense or sparse.

Which one is faster depends on size and fill, and was measured on the
benchmark problems (single-threaded BLAS, this 2-core machine): K of a
50-variable sparsemax (N = 157, 26 % dense) factors in 0.10 ms with LAPACK's
``getrf`` against 0.28 ms with SuperLU; a 128-variable dense QP (N = 389,
56 % dense) in 1.05 ms against 2.6 ms; but a 1,024-variable sparse QP
(N ≈ 3,100, 0.1 % dense) only sparse is reasonable. :func:`use_dense` holds
the rule. The dense factorization also gives LAPACK's ``gecon`` condition
estimate for O(N²), where the sparse one needs several extra solves.

SuperLU orders K's columns by minimum degree on the pattern of Kᵀ + K: K's
pattern is symmetric up to the values of D (blocks A and AᵀD, the c and b
borders), and on the 1,024-variable sparse QP (order 4,103) that ordering
gives L + U 3.0 million entries and 1.6 s against COLAMD's 7.0 million and
3.9 s (same residual, 2e-8 on that ill-conditioned K).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from scipy.linalg import lapack

from ._typing import FloatArray

__all__ = ["DenseLU", "SparseLU", "dense", "factor", "use_dense"]

# Dense below this order whatever the fill; up to _DENSE_MAX when fill is high.
_DENSE_ALWAYS = 600
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
    def condition(self) -> float:
        """1-norm condition number estimate (LAPACK ``gecon``)."""
        if self._cond is None:
            anorm = float(np.abs(self.K).sum(axis=0).max())
            rcond, _ = lapack.dgecon(self._lu, anorm, norm="1")
            self._cond = float("inf") if rcond == 0 else 1.0 / float(rcond)
        return self._cond

    def inverse_norm(self, norm: str = "1") -> float:
        """Estimate of ‖K⁻¹‖ in the 1-norm (``"1"``) or ∞-norm (``"I"``), by ``gecon``."""
        if self.singular:
            return float("inf")
        anorm = float(np.abs(self.K).sum(axis=0 if norm == "1" else 1).max())
        rcond, _ = lapack.dgecon(self._lu, anorm, norm=norm)
        return float("inf") if rcond == 0 else 1.0 / (float(rcond) * anorm)

    def solve(self, rhs: FloatArray, transpose: bool = False) -> FloatArray:
        sol, _ = lapack.dgetrs(self._lu, self._piv, rhs, trans=1 if transpose else 0)
        return sol


# SuperLU's column ordering for K (see the module docstring).
_PERMC_SPEC = "MMD_AT_PLUS_A"


class SparseLU:
    """SuperLU factors (minimum degree on Kᵀ + K); condition by ``onenormest``."""

    def __init__(self, K: sp.csc_array) -> None:
        self.K = K
        try:
            self._lu = spla.splu(K, permc_spec=_PERMC_SPEC)
            self.singular = False
            self._cond: float | None = None
        except RuntimeError:  # "Factor is exactly singular"
            self._lu = None
            self.singular = True
            self._cond = float("inf")

    @property
    def condition(self) -> float:
        if self._cond is None:
            lu = self._lu
            assert lu is not None
            inv = spla.LinearOperator(self.K.shape, matvec=lambda v: lu.solve(v),
                                      rmatvec=lambda v: lu.solve(v, trans="T"),
                                      dtype=np.float64)
            try:
                est = float(spla.norm(self.K, 1) * spla.onenormest(inv))
            except (ValueError, RuntimeError):  # onenormest needs a few columns
                est = float(np.linalg.cond(self.K.toarray(), 1))
            self._cond = est if np.isfinite(est) else float("inf")
        return self._cond

    def solve(self, rhs: FloatArray, transpose: bool = False) -> FloatArray:
        assert self._lu is not None
        return self._lu.solve(rhs, trans="T" if transpose else "N")


def factor(K: FloatArray | sp.csc_array) -> DenseLU | SparseLU:
    """Factor K (a dense array or a CSC array)."""
    return DenseLU(K) if isinstance(K, np.ndarray) else SparseLU(K)


def dense(K: FloatArray | sp.csc_array) -> FloatArray:
    """K as a dense array (for SVD-based least squares)."""
    return K if isinstance(K, np.ndarray) else K.toarray()


