"""Assembly of the bordered derivative matrix K on its fixed pattern.

Oracles: the same matrix built block by block with ``scipy.sparse.bmat``, and
diffcp's own dense M (``diffcp._diffcp.M_dense``: (Q − I)·DΠ(z) + I).
"""

from __future__ import annotations

import diffcp._diffcp as dcpp
import diffcp.cones as dcones
import numpy as np
import pytest
import scipy.sparse as sp

from conelayers._bordered import BorderedPattern
from conelayers._cones import ConeLayout
from conelayers._dproj import DualProjection
from conelayers._factor import dense

# K's entries are single products or sums of ≤ m products of O(1) numbers, summed
# in a different order than bmat's; measured difference: 0 (bit-identical) on these
# cases, but summation order is not guaranteed. 1e-12 is rounding
# level with margin, and far below any misplaced entry (O(1)).
ASSEMBLY_TOL = 1e-12

LAYOUTS = {
    "nonneg": {"nonneg": 6},
    "zero_nonneg": {"zero": 2, "nonneg": 4},
    "socs": {"nonneg": 1, "soc": (3, 1, 4, 3)},
    "psd": {"zero": 1, "psd": (1, 2, 3)},
    "everything": {"zero": 2, "nonneg": 3, "soc": (2, 5, 2), "psd": (3, 2)},
}


def random_sparse_A(rng, m, n, density=0.4):
    """Random CSC A with sorted indices, at least one empty row and column (when
    m, n ≥ 3), and some stored entries that are explicit zeros."""
    A = sp.random(m, n, density=density, random_state=rng, format="csc",
                  data_rvs=rng.standard_normal)
    A = A.tolil()
    if n >= 3:
        A[:, int(rng.integers(n))] = 0
    if m >= 3:
        A[int(rng.integers(m)), :] = 0
    A = sp.csc_array(A)
    A.eliminate_zeros()
    A.sort_indices()
    if A.nnz:
        zeros = rng.choice(A.nnz, size=max(1, A.nnz // 5), replace=False)
        A.data[zeros] = 0.0  # explicit zeros stay in the pattern
    return A


def reference_K(A, b, c, D, pi, z):
    """K = [[M, Π(z)], [zᵀ, 0]], M = [[0, AᵀD, c], [−A, I − D, b], [−cᵀ, −bᵀD, 0]], by bmat."""
    m, n = A.shape
    A = sp.csc_matrix(A)
    D = sp.csc_matrix(D)
    M = sp.bmat([
        [sp.csc_matrix((n, n)), A.T @ D, c[:, None]],
        [-A, sp.eye(m) - D, b[:, None]],
        [-c[None, :], sp.csc_matrix(-(D.T @ b)[None, :]), sp.csc_matrix((1, 1))],
    ])
    return sp.bmat([[M, pi[:, None]], [z[None, :], sp.csc_matrix((1, 1))]]).toarray()


def point(rng, A, layout):
    m, n = A.shape
    dp = DualProjection(layout)
    x = rng.standard_normal(n)
    v = rng.standard_normal(m) * 2
    proj, D_vals = dp(v)
    pi = np.concatenate([x, proj, [1.0]])
    z = np.concatenate([x, v, [1.0]])
    return dp, D_vals, pi, z


@pytest.mark.parametrize("name", list(LAYOUTS))
@pytest.mark.parametrize("n", [1, 4, 9])
def test_assembled_K_equals_the_bmat_reference(name, n, rng):
    layout = ConeLayout.from_dims(**LAYOUTS[name])
    m = layout.dim
    A = random_sparse_A(rng, m, n)
    b, c = rng.standard_normal(m), rng.standard_normal(n)
    dp, D_vals, pi, z = point(rng, A, layout)
    pattern = BorderedPattern(A.indices, A.indptr, n, m, dp)
    K = pattern.assemble(A.data, b, c, D_vals, pi, z)
    assert K.shape == (n + m + 2, n + m + 2)
    ref = reference_K(A, b, c, dp.matrix(D_vals), pi, z)
    assert np.abs(dense(K) - ref).max() <= ASSEMBLY_TOL


@pytest.mark.parametrize("name", ["socs", "psd", "everything"])
def test_assembled_M_block_equals_diffcps_dense_M(name, rng):
    """diffcp builds M = (Q − I)·DΠ(z) + I from Q = [[0, Aᵀ, c], [−A, 0, b], [−cᵀ, −bᵀ, 0]]
    and its own projection derivative; our K's leading block must be that M."""
    layout = ConeLayout.from_dims(**LAYOUTS[name])
    m, n = layout.dim, 5
    A = random_sparse_A(rng, m, n)
    b, c = rng.standard_normal(m), rng.standard_normal(n)
    dp, D_vals, pi, z = point(rng, A, layout)
    K = BorderedPattern(A.indices, A.indptr, n, m, dp).assemble(A.data, b, c, D_vals, pi, z)
    Ad = A.toarray()
    Q = np.block([
        [np.zeros((n, n)), Ad.T, c[:, None]],
        [-Ad, np.zeros((m, m)), b[:, None]],
        [-c[None, :], -b[None, :], np.zeros((1, 1))],
    ])
    cones = dcones.parse_cone_dict_cpp(dcones.parse_cone_dict(layout.to_scs()))
    M = dcpp.M_dense(Q, cones, z[:n], z[n:-1], 1.0)
    assert np.abs(dense(K)[:-1, :-1] - M).max() <= ASSEMBLY_TOL


def test_pattern_is_fixed_sorted_and_free_of_duplicates(rng):
    """Different values (even all-zero ones) give the same CSC structure, in
    canonical form, so that a factorization's symbolic analysis could be reused."""
    layout = ConeLayout.from_dims(**LAYOUTS["everything"])
    m, n = layout.dim, 6
    A = random_sparse_A(rng, m, n)
    dp = DualProjection(layout)
    pattern = BorderedPattern(A.indices, A.indptr, n, m, dp)
    pattern.dense = False  # the sparse output's pattern is what is checked here
    Ks = []
    for scale in (1.0, -3.0, 0.0):
        b, c = scale * rng.standard_normal(m), scale * rng.standard_normal(n)
        _proj, D_vals = dp(scale * rng.standard_normal(m))
        pi, z = scale * rng.standard_normal(n + m + 1), scale * rng.standard_normal(n + m + 1)
        Ks.append(pattern.assemble(scale * A.data, b, c, D_vals, pi, z))
    for K in Ks:
        assert np.array_equal(K.indptr, pattern.indptr)
        assert np.array_equal(K.indices, pattern.indices)
        assert K.nnz == pattern.nnz
        starts, ends = K.indptr[:-1], K.indptr[1:]
        for j in range(K.shape[1]):  # strictly increasing row indices in every column
            assert np.all(np.diff(K.indices[starts[j] : ends[j]]) > 0)


def test_pattern_covers_every_entry_the_reference_can_have(rng):
    """With all values random and nonzero, K's stored entries include every nonzero
    of the reference; nothing is dropped from the pattern."""
    layout = ConeLayout.from_dims(**LAYOUTS["everything"])
    m, n = layout.dim, 7
    A = random_sparse_A(rng, m, n)
    A.data = rng.standard_normal(A.nnz)  # no explicit zeros for this check
    dp = DualProjection(layout)
    pattern = BorderedPattern(A.indices, A.indptr, n, m, dp)
    pattern.dense = False  # the stored pattern is what is checked here
    D_vals = rng.standard_normal(dp.nnz)  # any values on D's pattern
    b, c = rng.standard_normal(m), rng.standard_normal(n)
    pi, z = rng.standard_normal(n + m + 1), rng.standard_normal(n + m + 1)
    K = pattern.assemble(A.data, b, c, D_vals, pi, z)
    stored = np.zeros(K.shape, dtype=bool)
    stored[K.tocoo().row, K.tocoo().col] = True
    ref = reference_K(A, b, c, dp.matrix(D_vals), pi, z)
    assert np.all(stored[ref != 0])
    assert np.abs(dense(K) - ref).max() <= ASSEMBLY_TOL


def test_empty_A_gives_the_reference_K(rng):
    layout = ConeLayout.from_dims(nonneg=2, soc=(3,))
    m, n = layout.dim, 3
    A = sp.csc_array((m, n))
    b, c = rng.standard_normal(m), rng.standard_normal(n)
    dp, D_vals, pi, z = point(rng, A, layout)
    K = BorderedPattern(A.indices, A.indptr, n, m, dp).assemble(A.data, b, c, D_vals, pi, z)
    assert np.abs(dense(K) - reference_K(A, b, c, dp.matrix(D_vals), pi, z)).max() \
        <= ASSEMBLY_TOL


@pytest.mark.parametrize("dense_output", [True, False])
def test_dense_and_sparse_assembly_agree(dense_output, rng):
    """The dense path (chosen for small or well-filled K) holds the same matrix."""
    layout = ConeLayout.from_dims(**LAYOUTS["everything"])
    m, n = layout.dim, 6
    A = random_sparse_A(rng, m, n)
    dp = DualProjection(layout)
    pattern = BorderedPattern(A.indices, A.indptr, n, m, dp)
    pattern.dense = dense_output
    b, c = rng.standard_normal(m), rng.standard_normal(n)
    _proj, D_vals = dp(rng.standard_normal(m))
    pi, z = rng.standard_normal(n + m + 1), rng.standard_normal(n + m + 1)
    K = pattern.assemble(A.data, b, c, D_vals, pi, z)
    assert isinstance(K, np.ndarray) == dense_output
    ref = reference_K(A, b, c, dp.matrix(D_vals), pi, z)
    assert np.abs(dense(K) - ref).max() <= ASSEMBLY_TOL


@pytest.mark.parametrize("bound_factor", [1, 4, 1000])  # the table branch and np.unique's
def test_unique_inverse_equals_numpys(bound_factor, rng):
    from conelayers._bordered import _unique_inverse

    keys = rng.integers(0, 500, size=2000) * bound_factor
    unique, inverse = _unique_inverse(keys, 500 * bound_factor)
    ref_unique, ref_inverse = np.unique(keys, return_inverse=True)
    np.testing.assert_array_equal(unique, ref_unique)
    np.testing.assert_array_equal(inverse, ref_inverse)
