"""The sparsity pattern of the bordered derivative matrix K, fixed per program.

K = [[M, Π(z)], [zᵀ, 0]] with M = [[0, AᵀD, c], [−A, I − D, b], [−cᵀ, −bᵀD, 0]]
(see :mod:`conelayers._linearization`). A's pattern and D = DΠ_{K*}'s pattern never
change for a given program, so neither does K's. We list K's entries once as
*slots* (row, col, and a recipe for the value), sort them into CSC order, and
per solution only compute the slot values and sum them into place with one
``np.bincount``: no SciPy constructor, no sorting, no Python loop over entries.
Measured on a 10-variable QP: 0.05 ms per assembly against 2 ms for
``scipy.sparse.bmat``.

Second-order cones enter through D = diag(δ) + W S Wᵀ (two columns per cone,
see :func:`conelayers._dproj._soc_lowrank`). Instead of the dense d×d block
that D would put into K (and, through AᵀD, into every column of A that meets
the cone), K is *expanded* with two unknowns ξ per cone:

    [[K₀, E], [F, I]] [x; ξ] = [rhs; 0],   E = [AᵀW; −W; −bᵀW; 0],  F = [0, −S Wᵀ, 0, 0],

where K₀ is K with D replaced by diag(δ). Eliminating ξ = −F x gives
(K₀ − E F) x = K x = rhs: the expanded matrix has K as its Schur complement,
so it solves the same equations (and its transpose the transposed ones), and
it stays sparse. For a QP with 1,024 variables (an SOC of dimension 1,026)
this takes K from 2.2 million stored entries and a 200 s SuperLU
factorization down to about 60,000 entries.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ._batched import segment_sums
from ._dproj import DualProjection
from ._factor import use_dense
from ._typing import FloatArray, IntArray

__all__ = ["BorderedPattern"]


def _expand_pairs(keys_a: IntArray, keys_b: IntArray, n_keys: int) -> tuple[IntArray, IntArray]:
    """All pairs (i, j) with keys_a[i] == keys_b[j], vectorized (a sparse join)."""
    order_b = np.argsort(keys_b, kind="stable")
    counts = np.bincount(keys_b, minlength=n_keys)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    per_a = counts[keys_a]
    left = np.repeat(np.arange(keys_a.size), per_a)
    # offset of each pair inside its group: 0..per_a[i]-1
    within = np.arange(left.size) - np.repeat(np.cumsum(per_a) - per_a, per_a)
    right = order_b[starts[keys_a[left]] + within]
    return left, right


def _unique_inverse(keys: IntArray, bound: int) -> tuple[IntArray, IntArray]:
    """``np.unique(keys, return_inverse=True)`` for keys in ``[0, bound)``.

    Where the range is not much larger than the number of keys, marking them in
    a table of ``bound`` flags and numbering the marked places is linear, and
    several times faster than the sort inside ``np.unique`` (85,000 keys of the
    dense QP with 128 variables: ~1.5 ms against 5.9 ms; the whole pattern,
    4.7 ms against 6.9 ms).
    """
    if bound > 16 * keys.size:
        unique, inverse = np.unique(keys, return_inverse=True)
        return unique, inverse.ravel()
    mark = np.zeros(bound, dtype=bool)
    mark[keys] = True
    unique = np.flatnonzero(mark)
    rank = np.empty(bound, dtype=np.intp)  # read only at the marked places
    rank[unique] = np.arange(unique.size)
    return unique, rank[keys]


class BorderedPattern:
    """K's CSC pattern for one program, and assembly of K from per-item values.

    Parameters
    ----------
    A_indices, A_indptr : the program's fixed CSC pattern of A, shape (m, n).
    n, m : sizes.
    dproj : the program's :class:`DualProjection` (fixes D's pattern; with
        ``lowrank=True`` its SOCs are expanded as described above).

    Attributes
    ----------
    N : int
        n + m + 1, the size of M; solutions are the first N entries.
    order : int
        The size of the assembled matrix: N + 1 + 2·(number of SOCs in low-rank form).
    """

    def __init__(self, A_indices: IntArray, A_indptr: IntArray, n: int, m: int,
                 dproj: DualProjection) -> None:
        self.n, self.m = n, m
        self.N = N = n + m + 1
        self.dproj = dproj
        q = dproj.q
        self.order = order = N + 1 + 2 * q
        ra = np.asarray(A_indices, dtype=np.intp)
        ca = np.repeat(np.arange(n), np.diff(A_indptr))
        rd, cd = dproj.rows, dproj.cols
        # AᵀD (block part): entry (i, j) gets A[k, i]·D[k, j] for every k with both stored.
        self._ad_a, self._ad_d = _expand_pairs(ra, rd, m)
        self._rd = rd
        ar_m, ar_n, ar_N = np.arange(m), np.arange(n), np.arange(N)
        rows = [ca[self._ad_a], n + ra, n + rd, n + ar_m, ar_n, n + ar_m,
                np.full(n, n + m), np.full(rd.size, n + m), ar_N, np.full(N, N)]
        cols = [n + cd[self._ad_d], ca, n + cd, n + ar_m, np.full(n, n + m), np.full(m, n + m),
                ar_n, n + cd, np.full(N, N), ar_N]
        if q:
            heads, tails, tcone = dproj.heads, dproj.tail_rows, dproj.tail_cone
            xi0 = N + 1 + 2 * np.arange(q)  # ξ_j0, ξ_j1 = ξ_j0 + 1
            cone_of_head = np.full(m, -1)
            cone_of_head[heads] = np.arange(q)
            tail_pos = np.full(m, -1)
            tail_pos[tails] = np.arange(tails.size)
            self._a_head = np.flatnonzero(cone_of_head[ra] >= 0)
            self._a_tail = np.flatnonzero(tail_pos[ra] >= 0)
            self._a_tail_pos = tail_pos[ra[self._a_tail]]
            self._heads, self._tail_cone = heads, tcone
            tail_xi1 = xi0[tcone] + 1
            rows += [ca[self._a_head], ca[self._a_tail],  # AᵀW₀, AᵀW₁
                     n + heads, n + tails,  # −W₀, −W₁
                     np.full(q, n + m), np.full(tails.size, n + m),  # −bᵀW₀, −bᵀW₁
                     xi0, xi0 + 1,  # identity on ξ
                     xi0, xi0[tcone], xi0 + 1, tail_xi1]  # F = −S Wᵀ on dv
            cols += [xi0[cone_of_head[ra[self._a_head]]], xi0[tcone[self._a_tail_pos]] + 1,
                     xi0, tail_xi1,
                     xi0, tail_xi1,
                     xi0, xi0 + 1,
                     n + heads, n + tails, n + heads, n + tails]
        rows_all = np.concatenate(rows)
        cols_all = np.concatenate(cols)
        keys = cols_all.astype(np.intp) * order + rows_all
        unique, self._slot = _unique_inverse(keys, order * order)
        self.indices = (unique % order).astype(np.int32)
        self.indptr = np.searchsorted(unique // order, np.arange(order + 1)).astype(np.int32)
        self.nnz = int(unique.size)
        self._ones_m, self._ones_q = np.ones(m), np.ones(q)
        self.dense = use_dense(order, self.nnz)
        self._flat = unique  # row + order·col of each entry, in CSC order
        self._entry_cols = (unique // order).astype(np.intp)

    def assemble(self, A_vals: FloatArray, b: FloatArray, c: FloatArray, D_vals: FloatArray,
                 pi: FloatArray, z: FloatArray) -> sp.csc_array | FloatArray:
        """K (expanded) at one point: a CSC array with the fixed pattern, or a
        dense (Fortran-ordered) array where :func:`use_dense` says dense is faster."""
        data = self.values(A_vals, b, c, D_vals, pi, z)
        return self.dense_of(data) if self.dense else self.sparse_of(data)

    def dense_of(self, data: FloatArray) -> FloatArray:
        """K as a dense (Fortran-ordered) array from its values on the pattern."""
        order = self.order
        out = np.zeros(order * order)
        out[self._flat] = data
        return out.reshape((order, order), order="F")

    def data_of(self, K: FloatArray) -> FloatArray:
        """The values on the pattern of a dense K (:meth:`dense_of`'s inverse)."""
        return K.ravel(order="F")[self._flat]

    def transpose_product(self, data: FloatArray, v: FloatArray) -> FloatArray:
        """Kᵀv for K with ``data`` on the pattern (SciPy's ``K.T @ v`` builds the
        transposed array first: a tenth of a small item's backward)."""
        return np.bincount(self._entry_cols, weights=data * v[self.indices],
                           minlength=self.order).astype(np.float64, copy=False)

    def sparse_of(self, data: FloatArray) -> sp.csc_array:
        """K as a CSC array from its values on the pattern (no copy)."""
        return sp.csc_array((data, self.indices, self.indptr), shape=(self.order, self.order))

    def values(self, A_vals: FloatArray, b: FloatArray, c: FloatArray, D_vals: FloatArray,
               pi: FloatArray, z: FloatArray) -> FloatArray:
        """K's values on the fixed pattern (CSC order) at one point."""
        return self.values_many(A_vals[None], b[None], c[None], D_vals[None], pi[None],
                                z[None])[0]

    def values_many(self, A_vals: FloatArray, b: FloatArray, c: FloatArray,
                    D_vals: FloatArray, pi: FloatArray, z: FloatArray) -> FloatArray:
        """:meth:`values` at B points at once: every argument has one row per
        point; returns (B, nnz)."""
        B = A_vals.shape[0]
        dproj = self.dproj
        nb, nt, q = dproj.nblock, dproj.tail_rows.size, dproj.q
        block = D_vals[:, :nb]
        wide = lambda a: a[None] if B == 1 else np.broadcast_to(a, (B, a.size))  # noqa: E731
        take = lambda a, idx: np.take(a, idx, axis=1)  # noqa: E731  (a[:, idx] is 3x slower)
        parts = [
            take(A_vals, self._ad_a) * take(block, self._ad_d),  # AᵀD (block part)
            -A_vals,  # −A
            -block,  # −D (with the identity below: I − D)
            wide(self._ones_m),
            c,  # c column
            b,  # b column
            -c,  # −cᵀ row
            -take(b, self._rd) * block,  # −bᵀD row
            pi,  # border column Π(z)
            z,  # border row zᵀ
        ]
        if q:
            u = D_vals[:, nb:nb + nt]
            S = D_vals[:, nb + nt:].reshape(B, q, 2, 2)
            tails, tcone = dproj.tail_rows, self._tail_cone
            ones_q = wide(self._ones_q)
            parts += [
                take(A_vals, self._a_head), take(A_vals, self._a_tail) * take(u, self._a_tail_pos),
                -ones_q, -u,  # −W₀, −W₁
                -take(b, self._heads), -take(b, tails) * u,  # −bᵀW₀, −bᵀW₁
                ones_q, ones_q,  # identity on ξ
                -S[:, :, 0, 0], -S[:, tcone, 0, 1] * u,  # row ξ_j0
                -S[:, :, 1, 0], -S[:, tcone, 1, 1] * u,  # row ξ_j1
            ]
        return segment_sums(np.concatenate(parts, axis=1), self._slot, self.nnz)

    def schur(self, K: sp.csc_array | FloatArray) -> FloatArray:
        """The bordered K itself (dense), eliminating the SOC unknowns ξ (for tests)."""
        Kd = K if isinstance(K, np.ndarray) else K.toarray()
        b = self.N + 1
        return Kd[:b, :b] - Kd[:b, b:] @ Kd[b:, :b]
