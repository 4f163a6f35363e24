"""Projection onto the dual cone K* and its sparse Jacobian.

Oracles: diffcp's projection ``diffcp.cones.pi(v, cones, dual=True)`` and its
dense Jacobian ``diffcp._diffcp.dprojection_dense``; central finite
differences of the projection; dense products for matvec/rmatvec; the
block-diagonal structure built from the layout's offsets.

Exponential cones: their projection is tested in test_expcone.py; here only
their place in a batch (``DualProjection.batch``).
"""

from __future__ import annotations

import diffcp._diffcp as dcpp
import diffcp.cones as dcones
import numpy as np
import pytest
import scipy.linalg as sla

from conelayers._cones import PSD, SOC, ConeLayout, Exp, ExpDual, Nonneg, Zero, svec, unsvec
from conelayers._dproj import DualProjection, dproject_dual
from conelayers._expcone import dproject_exp

# Agreement with diffcp: both evaluate the same closed forms (PSD through an
# eigendecomposition), so they differ by rounding only. Measured: ≤ 9e-15 over
# 200 random layouts; 1e-12 leaves margin for eigh's backward error.
DIFFCP_TOL = 1e-12
# Central differences with step h: truncation O(h²·‖D³Π‖) plus rounding O(ε/h).
# With h = 1e-6 and points kept ≥ 0.1 away from every kink both are ~1e-10..1e-9;
# measured worst entry error 2e-9 over 50 random layouts. 1e-7 still catches any
# wrong Jacobian entry (entries are O(1)).
FD_STEP = 1e-6
FD_TOL = 1e-7
# matvec/rmatvec against a dense product: rounding in sums of ≤ 10 terms.
PRODUCT_TOL = 1e-13


def random_layout(rng, psd_orders=(1, 2, 3, 4)):
    """Zero, Nonneg, several SOCs (repeated sizes, not adjacent), PSD orders 1..4."""
    soc = tuple(int(d) for d in rng.choice([1, 2, 3, 5], size=rng.integers(2, 5)))
    psd = tuple(int(k) for k in rng.permutation(psd_orders))
    return ConeLayout.from_dims(zero=int(rng.integers(0, 4)), nonneg=int(rng.integers(1, 5)),
                                soc=soc, psd=psd)


def soc_point(rng, d, region):
    """A point of ℝᵈ inside the SOC, in its polar cone, or strictly between."""
    z = rng.standard_normal(d - 1)
    nz = np.linalg.norm(z)
    if region == "inside":
        t = nz + rng.uniform(0.1, 1.0)
    elif region == "polar":
        t = -nz - rng.uniform(0.1, 1.0)
    else:  # |t| < ‖z‖, with margin from both boundaries (needs d ≥ 2)
        t = nz * rng.uniform(-0.8, 0.8)
    return np.concatenate([[t], z])


def psd_point(rng, k, margin=0.1):
    """svec of a symmetric matrix with eigenvalues |λ| ≥ margin, of both signs when k ≥ 2."""
    Q, _ = np.linalg.qr(rng.standard_normal((k, k)))
    signs = rng.permutation(np.where(np.arange(k) % 2 == 0, 1.0, -1.0))
    lam = signs * rng.uniform(margin, 2.0, size=k)
    return svec((Q * lam) @ Q.T)


def random_point(layout, rng, regions=("inside", "polar", "between")):
    """A point of ℝᵐ away from every kink: nonneg entries ≥ 0.1 from 0, SOC blocks in a
    chosen region, PSD blocks with eigenvalues ≥ 0.1 from 0 and from each other."""
    v = np.empty(layout.dim)
    for i, (off, cone) in enumerate(layout):
        if isinstance(cone, Zero):
            v[off : off + cone.dim] = rng.standard_normal(cone.dim)
        elif isinstance(cone, Nonneg):
            v[off : off + cone.dim] = rng.choice([-1, 1], cone.dim) * rng.uniform(0.1, 2, cone.dim)
        elif isinstance(cone, SOC):
            allowed = [r for r in regions if cone.dim >= 2 or r != "between"]
            v[off : off + cone.dim] = soc_point(rng, cone.dim, allowed[i % len(allowed)])
        elif isinstance(cone, PSD):
            v[off : off + cone.dim] = psd_point(rng, cone.order)
        else:
            raise AssertionError(f"unexpected cone {cone}")
    return v


def diffcp_reference(layout, v):
    cones = dcones.parse_cone_dict(layout.to_scs())
    proj = dcones.pi(v, cones, dual=True)
    jac = dcpp.dprojection_dense(v, dcones.parse_cone_dict_cpp(cones), True)
    return proj, jac


def block_mask(layout):
    """Dense 0/1 matrix of the block-diagonal pattern, from the layout's offsets."""
    blocks = []
    for _, cone in layout:
        if isinstance(cone, (Zero, Nonneg)):
            blocks.append(np.eye(cone.dim))
        else:
            blocks.append(np.ones((cone.dim, cone.dim)))
    return sla.block_diag(*blocks) if blocks else np.zeros((0, 0))


# ---------------------------------------------------------------------------
# against diffcp


@pytest.mark.parametrize("trial", range(6))
def test_projection_and_jacobian_match_diffcp_on_random_layouts(trial, rng):
    layout = random_layout(rng)
    dp = DualProjection(layout)
    for region in ("inside", "polar", "between"):
        # Each point puts the SOCs in all three regions (cycling), and generic
        # Gaussian points too (mostly 'between' for d ≥ 3, any sign for the rest).
        for v in (random_point(layout, rng, (region, "inside", "polar", "between")),
                  rng.standard_normal(layout.dim) * 2):
            proj, vals = dp(v)
            ref_proj, ref_jac = diffcp_reference(layout, v)
            assert np.abs(proj - ref_proj).max() <= DIFFCP_TOL
            assert np.abs(dp.matrix(vals).toarray() - ref_jac).max() <= DIFFCP_TOL


@pytest.mark.parametrize(
    ("d", "region"),
    [(d, r) for d in (1, 2, 3, 6) for r in ("inside", "polar", "between", "apex", "boundary")
     if not (d == 1 and r == "between")],  # SOC(1) = ℝ₊: nothing strictly between
)
def test_soc_projection_and_jacobian_match_diffcp_in_every_region(d, region, rng):
    """Including the apex (v = 0) and the boundary from inside (‖z‖ = t up to a
    relative 1e-13, on the side both implementations call inside: the identity).
    Exactly on the boundary the Jacobian is a convention (a one-sided limit), and
    diffcp's C++ decides by a rounding-dependent ‖z‖ ≤ t, so that point is not used."""
    layout = ConeLayout.from_dims(soc=(d,))
    if region == "apex":
        v = np.zeros(d)
    elif region == "boundary":
        z = rng.standard_normal(d - 1)
        v = np.concatenate([[np.linalg.norm(z) * (1 + 1e-13)], z])
    else:
        v = soc_point(rng, d, region)
    proj, jac = dproject_dual(v, layout)
    ref_proj, ref_jac = diffcp_reference(layout, v)
    assert np.abs(proj - ref_proj).max() <= DIFFCP_TOL
    assert np.abs(jac.toarray() - ref_jac).max() <= DIFFCP_TOL


def soc_closed_form(v):
    """Exact Π_SOC(v) for v = (t, z) with |t| < ‖z‖: ½(1 + t/‖z‖)·(‖z‖, z), and its Jacobian."""
    t, z = v[0], v[1:]
    nz = np.linalg.norm(z)
    u = z / nz
    proj = 0.5 * (1 + t / nz) * np.concatenate([[nz], z])
    d = v.size
    J = np.zeros((d, d))
    J[0, 0] = 0.5
    J[0, 1:] = J[1:, 0] = 0.5 * u
    J[1:, 1:] = 0.5 * (1 + t / nz) * np.eye(d - 1) - 0.5 * (t / nz) * np.outer(u, u)
    return proj, J


@pytest.mark.parametrize(("t", "excess"), [(1.0, 5e-6), (1.0, 1e-7), (100.0, 1e-4)])
def test_soc_projection_is_exact_just_outside_the_boundary(t, excess):
    """Points barely outside the cone (‖z‖ − t = excess > 0) are strictly between the
    cone and its polar: the projection is the closed form (and lies in the cone) and
    the Jacobian is diffcp's C++ one. (Regression: a boundary test written
    np.isclose(‖z‖, t, atol=1e-8) carried numpy's default rtol=1e-5 and returned such
    points unprojected, with an identity Jacobian: silently wrong gradients for, e.g.,
    a norm-ball constraint of radius 1e-5.)"""
    u = np.array([0.6, 0.8])
    v = np.concatenate([[t], (t + excess) * u])
    layout = ConeLayout.from_dims(soc=(3,))
    proj, jac = dproject_dual(v, layout)
    exact, exact_jac = soc_closed_form(v)
    _, ref_jac = diffcp_reference(layout, v)
    assert np.abs(ref_jac - exact_jac).max() <= DIFFCP_TOL  # diffcp's C++ is exact here
    assert np.linalg.norm(proj[1:]) <= proj[0] + DIFFCP_TOL * t  # in the cone
    assert np.abs(proj - exact).max() <= DIFFCP_TOL * t
    assert np.abs(jac.toarray() - ref_jac).max() <= DIFFCP_TOL


def test_nonneg_jacobian_is_half_at_zero_like_diffcp():
    layout = ConeLayout.from_dims(nonneg=3)
    v = np.array([-1.0, 0.0, 2.0])
    proj, jac = dproject_dual(v, layout)
    ref_proj, ref_jac = diffcp_reference(layout, v)
    assert np.array_equal(proj, ref_proj)
    assert np.array_equal(jac.toarray(), ref_jac)


def test_free_part_is_the_identity():
    """K = {0} has K* = ℝᵈ: Π is the identity and so is its Jacobian."""
    layout = ConeLayout.from_dims(zero=4)
    v = np.array([-3.0, 0.0, 1.5, 2.0])
    proj, jac = dproject_dual(v, layout)
    assert np.array_equal(proj, v)
    assert np.array_equal(jac.toarray(), np.eye(4))


@pytest.mark.parametrize("k", [1, 2, 3, 4])
@pytest.mark.parametrize("kind", ["mixed", "repeated_positive", "repeated_negative", "psd", "nsd"])
def test_psd_projection_and_jacobian_match_diffcp(k, kind, rng):
    """Away from zero eigenvalues, including repeated ones (the tie branch)."""
    Q, _ = np.linalg.qr(rng.standard_normal((k, k)))
    lam = {
        "mixed": np.sort(rng.uniform(0.2, 2.0, k) * np.where(np.arange(k) % 2, 1, -1)),
        "repeated_positive": np.full(k, 1.3),
        "repeated_negative": np.full(k, -0.7),
        "psd": rng.uniform(0.2, 2.0, k),
        "nsd": -rng.uniform(0.2, 2.0, k),
    }[kind]
    layout = ConeLayout.from_dims(psd=(k,))
    v = svec((Q * lam) @ Q.T)
    proj, jac = dproject_dual(v, layout)
    ref_proj, ref_jac = diffcp_reference(layout, v)
    assert np.abs(proj - ref_proj).max() <= DIFFCP_TOL
    assert np.abs(jac.toarray() - ref_jac).max() <= DIFFCP_TOL


def test_psd_projection_is_the_positive_part_of_the_eigendecomposition(rng):
    """Closed form: Π(V) = Q max(Λ, 0) Qᵀ, in svec coordinates."""
    k = 4
    v = psd_point(rng, k)
    lam, Q = np.linalg.eigh(unsvec(v))
    proj, _ = dproject_dual(v, ConeLayout.from_dims(psd=(k,)))
    assert np.allclose(unsvec(proj), (Q * np.maximum(lam, 0)) @ Q.T, rtol=0, atol=DIFFCP_TOL)


# ---------------------------------------------------------------------------
# against finite differences


def central_difference_jacobian(fun, v, h):
    cols = []
    for j in range(v.size):
        e = np.zeros(v.size)
        e[j] = h
        cols.append((fun(v + e) - fun(v - e)) / (2 * h))
    return np.stack(cols, axis=1)


@pytest.mark.parametrize("d", [2, 3, 5])
def test_soc_jacobian_matches_central_differences_between_the_cones(d, rng):
    layout = ConeLayout.from_dims(soc=(d,))
    dp = DualProjection(layout)
    v = soc_point(rng, d, "between")
    _, vals = dp(v)
    fd = central_difference_jacobian(lambda u: dp(u)[0], v, FD_STEP)
    assert np.abs(dp.matrix(vals).toarray() - fd).max() <= FD_TOL


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_psd_jacobian_matches_central_differences_away_from_zero_eigenvalues(k, rng):
    layout = ConeLayout.from_dims(psd=(k,))
    dp = DualProjection(layout)
    v = psd_point(rng, k)
    _, vals = dp(v)
    fd = central_difference_jacobian(lambda u: dp(u)[0], v, FD_STEP)
    assert np.abs(dp.matrix(vals).toarray() - fd).max() <= FD_TOL


def test_mixed_layout_jacobian_matches_central_differences(rng):
    layout = random_layout(rng)
    dp = DualProjection(layout)
    v = random_point(layout, rng)
    _, vals = dp(v)
    fd = central_difference_jacobian(lambda u: dp(u)[0], v, FD_STEP)
    assert np.abs(dp.matrix(vals).toarray() - fd).max() <= FD_TOL


# ---------------------------------------------------------------------------
# properties any projection onto a closed convex cone has


@pytest.mark.parametrize("trial", range(3))
def test_projection_is_idempotent_and_jacobian_is_symmetric_with_spectrum_in_unit_interval(
    trial, rng
):
    """Π is the gradient of a convex function with 1-Lipschitz gradient, so
    DΠ is symmetric with eigenvalues in [0, 1]; and Π∘Π = Π."""
    layout = random_layout(rng)
    dp = DualProjection(layout)
    v = rng.standard_normal(layout.dim) * 2
    proj, vals = dp(v)
    assert np.abs(dp(proj)[0] - proj).max() <= DIFFCP_TOL
    J = dp.matrix(vals).toarray()
    assert np.abs(J - J.T).max() <= DIFFCP_TOL
    eig = np.linalg.eigvalsh((J + J.T) / 2)
    assert eig.min() >= -DIFFCP_TOL and eig.max() <= 1 + DIFFCP_TOL


def test_psd_jacobian_stays_symmetric_at_a_near_tie_across_zero():
    """Eigenvalues ±1e-15 count as tied (B_ij = 1{λᵢ > 0}, not symmetric in i, j);
    only B's symmetric part reaches the Jacobian, which must stay symmetric."""
    v = svec(np.diag([1e-15, -1e-15, 1.0]))
    _, jac = dproject_dual(v, ConeLayout.from_dims(psd=(3,)))
    J = jac.toarray()
    assert np.abs(J - J.T).max() <= DIFFCP_TOL


# ---------------------------------------------------------------------------
# the sparse representation


@pytest.mark.parametrize("trial", range(3))
def test_matvec_and_rmatvec_agree_with_the_matrix(trial, rng):
    layout = random_layout(rng)
    dp = DualProjection(layout)
    _, vals = dp(random_point(layout, rng))
    J = dp.matrix(vals).toarray()
    x = rng.standard_normal(layout.dim)
    assert np.abs(dp.matvec(vals, x) - J @ x).max() <= PRODUCT_TOL
    assert np.abs(dp.rmatvec(vals, x) - J.T @ x).max() <= PRODUCT_TOL


def test_rmatvec_is_the_adjoint_of_matvec_on_a_nonsymmetric_value_array(rng):
    """matvec/rmatvec are products with the matrix the (rows, cols) pattern defines,
    for any values, not only symmetric Jacobians: ⟨D x, w⟩ = ⟨x, Dᵀ w⟩."""
    layout = random_layout(rng)
    dp = DualProjection(layout)
    vals = rng.standard_normal(dp.nnz)
    x, w = rng.standard_normal(layout.dim), rng.standard_normal(layout.dim)
    J = dp.matrix(vals).toarray()
    assert np.abs(dp.matvec(vals, x) - J @ x).max() <= PRODUCT_TOL
    assert np.abs(dp.rmatvec(vals, w) - J.T @ w).max() <= PRODUCT_TOL
    lhs, rhs = dp.matvec(vals, x) @ w, x @ dp.rmatvec(vals, w)
    assert abs(lhs - rhs) <= PRODUCT_TOL * layout.dim * (1 + abs(lhs))


@pytest.mark.parametrize("trial", range(3))
def test_pattern_is_the_block_diagonal_of_the_layout_without_duplicates(trial, rng):
    layout = random_layout(rng)
    dp = DualProjection(layout)
    pairs = np.stack([dp.rows, dp.cols], axis=1)
    assert np.unique(pairs, axis=0).shape[0] == dp.nnz  # no entry listed twice
    pattern = np.zeros((layout.dim, layout.dim))
    pattern[dp.rows, dp.cols] = 1
    assert np.array_equal(pattern, block_mask(layout))


def test_pattern_and_value_layout_do_not_depend_on_the_point(rng):
    """Two points where every SOC/PSD block changes branch (identity vs zero
    Jacobian) still give values of the same length and the same CSR pattern."""
    layout = ConeLayout.from_dims(zero=1, nonneg=3, soc=(3, 4, 3), psd=(2, 3))
    dp = DualProjection(layout)
    inside = random_point(layout, rng, ("inside",))
    polar = random_point(layout, rng, ("polar",))
    for psd_off, cone in layout.of_type(PSD):  # make PSD blocks PSD resp. NSD
        X = unsvec(inside[psd_off : psd_off + cone.dim])
        inside[psd_off : psd_off + cone.dim] = svec(X @ X.T + np.eye(cone.order))
        polar[psd_off : psd_off + cone.dim] = -svec(X @ X.T + np.eye(cone.order))
    rows, cols = dp.rows.copy(), dp.cols.copy()
    _, vals_in = dp(inside)
    _, vals_polar = dp(polar)
    assert vals_in.shape == vals_polar.shape == (dp.nnz,)
    assert np.array_equal(dp.rows, rows) and np.array_equal(dp.cols, cols)
    # the second point's Jacobian is zero on every SOC/PSD block: entries stay stored
    _, J_in = dproject_dual(inside, layout)
    _, J_polar = dproject_dual(polar, layout)
    assert np.array_equal(J_in.indptr, J_polar.indptr)
    assert np.array_equal(J_in.indices, J_polar.indices)
    assert J_polar.nnz == dp.nnz
    soc_psd = slice(1 + 3, layout.dim)
    assert not np.any(J_polar.toarray()[soc_psd, soc_psd])


def test_dproject_dual_equals_the_reusable_projection(rng):
    layout = random_layout(rng)
    v = rng.standard_normal(layout.dim)
    dp = DualProjection(layout)
    proj, vals = dp(v)
    proj2, jac = dproject_dual(v, layout)
    assert np.array_equal(proj, proj2)
    assert jac.shape == (layout.dim, layout.dim)
    assert np.array_equal(jac.toarray(), dp.matrix(vals).toarray())


def test_empty_layout_projects_nothing():
    layout = ConeLayout.from_dims()
    proj, jac = dproject_dual(np.zeros(0), layout)
    assert proj.shape == (0,) and jac.shape == (0, 0)


@pytest.mark.parametrize("lowrank", [False, True])
@pytest.mark.parametrize("trial", range(4))
def test_batch_rows_match_diffcp_point_by_point(trial, lowrank, rng):
    """``batch`` (refinement evaluates a group of items at once) projects every
    row as diffcp projects that point alone, and lays its values out as one
    point's: the matrix built from row k is row k's Jacobian."""
    layout = random_layout(rng)
    dp = DualProjection(layout, lowrank=lowrank)
    V = np.stack([random_point(layout, rng) for _ in range(3)]
                 + [2 * rng.standard_normal(layout.dim) for _ in range(3)])
    proj, vals = dp.batch(V)
    assert proj.shape == V.shape and vals.shape == (6, dp.nnz)
    for k, v in enumerate(V):
        ref_proj, ref_jac = diffcp_reference(layout, v)
        assert np.abs(proj[k] - ref_proj).max() <= DIFFCP_TOL
        assert np.abs(dp.matrix(vals[k]).toarray() - ref_jac).max() <= DIFFCP_TOL


def test_batch_rows_of_exponential_cones_are_each_points_own_projection(rng):
    """Exponential and dual exponential cones in a batch: each row's blocks are
    those of :func:`dproject_exp` at that point's cone alone (by Moreau,
    Π_{Exp*}(v) = v + Π_Exp(−v) for the dual of Exp), next to an SOC and a PSD
    block checked against diffcp."""
    layout = ConeLayout.from_dims(nonneg=2, soc=(3,), psd=(2,), exp=2, exp_dual=1)
    dp = DualProjection(layout)
    V = 2 * rng.standard_normal((5, layout.dim))
    proj, vals = dp.batch(V)
    for k, v in enumerate(V):
        jac = dp.matrix(vals[k]).toarray()
        for off, c in layout:
            if isinstance(c, (Exp, ExpDual)):
                for j in range(c.count):
                    r = slice(off + 3 * j, off + 3 * j + 3)
                    if isinstance(c, Exp):  # K = Exp: project onto Exp*
                        p, J = dproject_exp(-v[r][None])
                        p, J = v[r] + p[0], np.eye(3) - J[0]
                    else:
                        p, J = dproject_exp(v[r][None])
                        p, J = p[0], J[0]
                    np.testing.assert_allclose(proj[k, r], p, rtol=0, atol=1e-14)
                    np.testing.assert_allclose(jac[r, r], J, rtol=0, atol=1e-14)
        head = slice(0, 2 + 3 + 3)  # nonneg, SOC, PSD(2): checked against diffcp
        sub = ConeLayout.from_dims(nonneg=2, soc=(3,), psd=(2,))
        ref_proj, ref_jac = diffcp_reference(sub, v[head])
        assert np.abs(proj[k, head] - ref_proj).max() <= DIFFCP_TOL
        assert np.abs(jac[head, head] - ref_jac).max() <= DIFFCP_TOL
