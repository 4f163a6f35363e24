"""Cone types, the cone layout, and the svec convention.

Oracles: diffcp's own svec (``vec_symm`` / ``unvec_symm``, SCS's convention),
diffcp's lower→upper PSD row permutation for Clarabel (``permute_psd_rows``),
traces computed densely, and explicit constructions from the definitions.
"""

from __future__ import annotations

import math

import diffcp.cones as dcones
import numpy as np
import pytest
import scipy.sparse as sp
from diffcp.cone_program import permute_psd_rows

from conelayers._cones import (
    PSD,
    SOC,
    ConeLayout,
    Exp,
    ExpDual,
    Nonneg,
    Zero,
    svec,
    svec_indices,
    svec_permutation_to_upper,
    unsvec,
)

ORDERS = [1, 2, 3, 4, 5, 7]
# Rounding level for svec/unsvec: each entry is one product by √2 or 1/√2, and a
# trace of a k×k product sums k² terms of size O(1); 1e-12 leaves ample margin.
ROUND = 1e-12


def random_symmetric(rng, k, batch=()):
    M = rng.standard_normal((*batch, k, k))
    return (M + np.swapaxes(M, -1, -2)) / 2


# ---------------------------------------------------------------------------
# svec / unsvec


@pytest.mark.parametrize("k", ORDERS)
def test_svec_then_unsvec_is_identity_on_symmetric_matrices(k, rng):
    X = random_symmetric(rng, k)
    assert np.allclose(unsvec(svec(X)), X, rtol=0, atol=ROUND)
    assert np.allclose(unsvec(svec(X), k), X, rtol=0, atol=ROUND)


@pytest.mark.parametrize("k", ORDERS)
def test_unsvec_then_svec_is_identity_on_vectors(k, rng):
    x = rng.standard_normal(k * (k + 1) // 2)
    assert unsvec(x).shape == (k, k)
    assert np.allclose(svec(unsvec(x)), x, rtol=0, atol=ROUND)


@pytest.mark.parametrize("k", ORDERS)
def test_svec_inner_product_is_trace_of_product(k, rng):
    X, Y = random_symmetric(rng, k), random_symmetric(rng, k)
    assert svec(X) @ svec(Y) == pytest.approx(np.trace(X @ Y), rel=ROUND, abs=ROUND)


@pytest.mark.parametrize("k", ORDERS)
def test_svec_and_unsvec_agree_with_diffcp(k, rng):
    X = random_symmetric(rng, k)
    x = rng.standard_normal(k * (k + 1) // 2)
    assert np.allclose(svec(X), dcones.vec_symm(X), rtol=0, atol=ROUND)
    assert np.allclose(unsvec(x, k), dcones.unvec_symm(x, k), rtol=0, atol=ROUND)


def test_svec_and_unsvec_work_on_stacks_item_by_item(rng):
    k = 3
    X = random_symmetric(rng, k, batch=(2, 4))
    stacked = svec(X)
    assert stacked.shape == (2, 4, 6)
    for i in range(2):
        for j in range(4):
            assert np.array_equal(stacked[i, j], svec(X[i, j]))
    assert np.allclose(unsvec(stacked), X, rtol=0, atol=ROUND)


def test_svec_reads_only_the_lower_triangle(rng):
    """On a non-symmetric input, svec is svec of the symmetric matrix with X's lower triangle."""
    k = 4
    X = rng.standard_normal((k, k))
    lower = np.tril(X) + np.tril(X, -1).T
    assert np.array_equal(svec(X), svec(lower))


@pytest.mark.parametrize("k", ORDERS)
def test_svec_indices_list_the_lower_triangle_column_by_column(k):
    rows, cols = svec_indices(k)
    assert rows.size == k * (k + 1) // 2
    assert np.all(rows >= cols)
    expected = [(i, j) for j in range(k) for i in range(j, k)]  # column-major lower triangle
    assert list(zip(rows.tolist(), cols.tolist(), strict=True)) == expected


def test_svec_scales_off_diagonal_entries_by_sqrt2():
    X = np.array([[1.0, 2.0], [2.0, 3.0]])
    # Column-major lower triangle: X00, X10, X11, with X10 scaled by √2.
    assert np.allclose(svec(X), [1.0, 2.0 * math.sqrt(2.0), 3.0], rtol=0, atol=ROUND)


@pytest.mark.parametrize("d", [2, 4, 5, 7])
def test_unsvec_rejects_a_length_that_is_not_triangular(d):
    with pytest.raises(ValueError, match=f"svec length {d}"):
        unsvec(np.zeros(d))


def test_unsvec_rejects_an_order_that_does_not_match_the_length():
    with pytest.raises(ValueError):
        unsvec(np.zeros(6), order=2)


# ---------------------------------------------------------------------------
# lower (SCS) → upper (Clarabel) order


def upper_svec_explicit(X):
    """svec by the upper triangle, column by column: Clarabel's PSDTriangleConeT order."""
    k = X.shape[0]
    return np.array([X[i, j] * (1.0 if i == j else math.sqrt(2.0))
                     for j in range(k) for i in range(j + 1)])


@pytest.mark.parametrize("k", ORDERS)
def test_permutation_to_upper_matches_the_explicit_upper_triangle_order(k, rng):
    X = random_symmetric(rng, k)
    p = svec_permutation_to_upper(k)
    assert sorted(p.tolist()) == list(range(k * (k + 1) // 2))  # a permutation
    assert np.array_equal(svec(X)[p], upper_svec_explicit(X))


@pytest.mark.parametrize("k", ORDERS)
@pytest.mark.parametrize("offset", [0, 3])
def test_permutation_to_upper_matches_diffcps_clarabel_row_permutation(k, offset, rng):
    """diffcp moves row i of an SCS-ordered PSD block to row post[i] of Clarabel's data;
    ours says Clarabel's row j is our row p[j]. Apply diffcp's to a column holding
    svec(X) (after ``offset`` unrelated rows) and compare with svec(X)[p]."""
    X = random_symmetric(rng, k)
    head = rng.standard_normal(offset)
    col = np.concatenate([head, svec(X)])
    A = sp.csc_matrix(col[:, None])
    permuted, _ = permute_psd_rows(A, np.zeros(col.size), k, offset)
    permuted = permuted.toarray().ravel()
    assert np.array_equal(permuted[:offset], head)
    assert np.array_equal(permuted[offset:], svec(X)[svec_permutation_to_upper(k)])


# ---------------------------------------------------------------------------
# cones and the layout


def test_cone_dims_follow_their_definitions():
    assert Zero(4).dim == 4
    assert Nonneg(5).dim == 5
    assert SOC(3).dim == 3
    assert [PSD(k).dim for k in range(1, 6)] == [k * (k + 1) // 2 for k in range(1, 6)]
    assert Exp(2).dim == 6
    assert ExpDual(3).dim == 9


def test_cone_repr_reads_like_its_constructor():
    assert repr(SOC(3)) == "SOC(3)"
    assert repr(PSD(4)) == "PSD(4)"
    assert repr(Zero(2)) == "Zero(2)"
    assert repr(Exp(5)) == "Exp(5)"
    layout = ConeLayout.from_dims(zero=2, nonneg=3, soc=(3,), psd=(2,), exp=1)
    assert repr(layout) == "ConeLayout(Zero(2) × Nonneg(3) × SOC(3) × PSD(2) × Exp(1))"
    assert repr(ConeLayout.from_dims()) == "ConeLayout(∅)"


LAYOUT_DIMS = [
    {},
    {"zero": 3},
    {"nonneg": 4, "soc": (3, 5, 3)},
    {"zero": 1, "nonneg": 2, "soc": (1, 2), "psd": (1, 2, 3), "exp": 2, "exp_dual": 1},
    {"psd": (4, 1, 4)},
    {"exp": 3},
]


def expected_dim(zero=0, nonneg=0, soc=(), psd=(), exp=0, exp_dual=0):
    return zero + nonneg + sum(soc) + sum(k * (k + 1) // 2 for k in psd) + 3 * (exp + exp_dual)


@pytest.mark.parametrize("dims", LAYOUT_DIMS)
def test_layout_dim_is_the_sum_of_the_cone_sizes(dims):
    assert ConeLayout.from_dims(**dims).dim == expected_dim(**dims)


@pytest.mark.parametrize("dims", LAYOUT_DIMS)
def test_layout_round_trips_through_the_scs_dictionary(dims):
    layout = ConeLayout.from_dims(**dims)
    scs = layout.to_scs()
    assert ConeLayout.from_scs(scs) == layout
    assert scs == {
        "z": dims.get("zero", 0), "l": dims.get("nonneg", 0), "q": list(dims.get("soc", ())),
        "s": list(dims.get("psd", ())), "ep": dims.get("exp", 0), "ed": dims.get("exp_dual", 0),
    }


def test_from_scs_reads_the_legacy_free_key_as_zero_rows():
    layout = ConeLayout.from_scs({"f": 2, "z": 1, "l": 3})
    assert layout == ConeLayout((Zero(3), Nonneg(3)))


def test_from_scs_accepts_missing_keys():
    assert ConeLayout.from_scs({"q": [4]}) == ConeLayout((SOC(4),))


def test_from_dims_drops_empty_cones():
    layout = ConeLayout.from_dims(zero=0, nonneg=0, soc=(0, 3, 0), psd=(0,), exp=0)
    assert layout.cones == (SOC(3),)
    assert ConeLayout.from_dims().cones == ()
    assert ConeLayout.from_dims().dim == 0


def test_iteration_yields_consecutive_offsets_in_canonical_order():
    layout = ConeLayout.from_dims(zero=2, nonneg=3, soc=(3, 4), psd=(2,), exp=2, exp_dual=1)
    pairs = list(layout)
    sizes = [2, 3, 3, 4, 3, 6, 3]  # Zero, Nonneg, SOC, SOC, PSD(2), Exp(2), ExpDual(1)
    assert [c.dim for _, c in pairs] == sizes
    assert [o for o, _ in pairs] == np.concatenate([[0], np.cumsum(sizes)[:-1]]).tolist()
    assert [type(c) for _, c in pairs] == [Zero, Nonneg, SOC, SOC, PSD, Exp, ExpDual]
    assert pairs[-1][0] + pairs[-1][1].dim == layout.dim


def test_of_type_and_count_select_one_cone_kind():
    layout = ConeLayout.from_dims(nonneg=3, soc=(3, 4), psd=(2, 3))
    assert layout.of_type(SOC) == [(3, SOC(3)), (6, SOC(4))]
    assert layout.of_type(PSD) == [(10, PSD(2)), (13, PSD(3))]
    assert layout.of_type(Zero) == []
    assert layout.count(SOC) == 7
    assert layout.count(PSD) == 3 + 6
    assert layout.count(Exp) == 0


@pytest.mark.parametrize(
    "cones",
    [(Nonneg(1), Zero(1)), (PSD(2), SOC(3)), (Exp(1), SOC(2)), (ExpDual(1), Exp(1))],
    ids=repr,
)
def test_layout_rejects_cones_out_of_canonical_order(cones):
    with pytest.raises(AssertionError, match="canonical order"):
        ConeLayout(cones)


def test_layout_accepts_repeated_kinds_in_canonical_order():
    layout = ConeLayout((Zero(1), SOC(2), SOC(5), PSD(3), PSD(1)))
    assert layout.dim == 1 + 2 + 5 + 6 + 1
