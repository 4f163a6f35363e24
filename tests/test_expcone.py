"""Projection onto the exponential cone and its Jacobian (``conelayers._expcone``).

The projection is checked through its optimality conditions (Moreau: p ∈ K, v − p ∈ K°,
⟨p, v − p⟩ = 0) to machine precision, against values computed in 60-digit arithmetic, and
against diffcp as an independent (less accurate) oracle. The Jacobian is checked against
central differences of our projection, against the KKT system solved with
``np.linalg.solve``, against diffcp, and for the structure every projection onto a convex
set has (symmetric, eigenvalues in [0, 1], J·v = Π(v) by positive homogeneity).
"""

from __future__ import annotations

import diffcp._diffcp as dcp
import numpy as np
import pytest
from diffcp._diffcp import project_exp_cone

from conelayers import _expcone
from conelayers._expcone import dproject_exp, project_exp

KKT_TOL = 1e-12


# --------------------------------------------------------------------------- helpers


def _case(v: np.ndarray) -> np.ndarray:
    """1: v ∈ K, 2: v ∈ K° = −K*, 3: x ≤ 0 and y ≤ 0, 4: otherwise (membership in log form)."""
    x, y, z = v.T
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        in_k = ((y > 0) & (z > 0) & (np.log(y) + x / y <= np.log(z))) | (
            (y == 0) & (x <= 0) & (z >= 0))
        in_polar = ((x > 0) & (z < 0) & (np.log(x) + y / x - 1 <= np.log(-z))) | (
            (x == 0) & (y <= 0) & (z <= 0))
    case = np.full(len(v), 4)
    case[(x <= 0) & (y <= 0)] = 3
    case[in_polar] = 2
    case[in_k] = 1
    return case


def _dist_k(p: np.ndarray) -> np.ndarray:
    """An upper bound on dist(p, K): the distance to three explicit points of K.

    (p_x, p_y, max(p_z, p_y e^(p_x/p_y))), (min(p_x, p_y log(p_z/p_y)), p_y, p_z) and
    (min(p_x, 0), 0, max(p_z, 0)); the first two are accurate where e^ρ is large, resp. small.
    """
    x, y, z = p.T
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        lift_z = np.where(y > 0, np.maximum(y * np.exp(x / y) - z, 0), np.inf)
        lift_x = np.where((y > 0) & (z > 0), np.maximum(x - y * np.log(z / y), 0), np.inf)
    ray = np.sqrt(np.maximum(x, 0) ** 2 + y**2 + np.minimum(z, 0) ** 2)
    return np.minimum(np.minimum(np.nan_to_num(lift_z, nan=np.inf), lift_x), ray)


def _dist_polar(d: np.ndarray) -> np.ndarray:
    """An upper bound on dist(d, K°), likewise from three explicit points of K°."""
    x, y, z = d.T
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        lift_z = np.where(x > 0, np.maximum(z + x * np.exp(y / x - 1), 0), np.inf)
        lift_y = np.where((x > 0) & (z < 0), np.maximum(y - x * (1 + np.log(-z / x)), 0),
                          np.inf)
    ray = np.sqrt(x**2 + np.maximum(y, 0) ** 2 + np.maximum(z, 0) ** 2)
    return np.minimum(np.minimum(np.nan_to_num(lift_z, nan=np.inf), lift_y), ray)


def _boundary(rho: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors along (ρ, 1, e^ρ) ∈ ∂K and along the normal (1, 1 − ρ, −e^(−ρ)) ∈ ∂K°."""
    p = np.stack([rho, np.ones_like(rho), np.exp(rho)], axis=1)
    n = np.stack([np.ones_like(rho), 1 - rho, -np.exp(-rho)], axis=1)
    return (p / np.linalg.norm(p, axis=1, keepdims=True),
            n / np.linalg.norm(n, axis=1, keepdims=True))


def _sample(rng: np.random.Generator, n: int) -> np.ndarray:
    """Points of every case, many of them close to a boundary between cases."""
    k = n // 8
    sign = rng.choice([-1.0, 1.0], size=(k, 1))
    eps = 10.0 ** rng.uniform(-9, -3, size=(k, 1))
    p_hat, n_hat = _boundary(rng.uniform(-8, 8, k))
    scale = np.exp(rng.uniform(-2, 2, size=(k, 1)))
    near_k = scale * (p_hat + sign * eps * n_hat)  # straddles ∂K (cases 1 and 4)
    near_polar = scale * (n_hat + sign * eps * p_hat)  # straddles ∂K° (cases 2 and 4)
    # Straddling the planes x = 0 and y = 0 that bound case 3.
    small = sign[:, 0] * 10.0 ** rng.uniform(-9, -1, k)
    near_x0 = np.stack([small, -np.abs(rng.standard_normal(k)), rng.standard_normal(k)], axis=1)
    near_y0 = np.stack([-np.abs(rng.standard_normal(k)), small, rng.standard_normal(k)], axis=1)
    # Entries over ten orders of magnitude.
    wide = rng.choice([-1.0, 1.0], size=(2 * k, 3)) * 10.0 ** rng.uniform(-10, 0, size=(2 * k, 3))
    normal = rng.standard_normal((n - 7 * k, 3))
    return np.concatenate([normal, near_k, near_polar, near_x0, near_y0, wide])


def _central_difference(v: np.ndarray, h: float) -> np.ndarray:
    """Central differences of our projection, with one Richardson step: (4·D(h/2) − D(h))/3.

    The plain central difference has an O(h²) error that is not small where ‖Π(v)‖ or
    ‖v − Π(v)‖ is small (the curvature grows like their inverse); the extrapolated one is
    O(h⁴) plus the rounding error O(eps/h).
    """
    def diff(step: float) -> np.ndarray:
        fd = np.empty((len(v), 3, 3))
        for j in range(3):
            e = np.zeros(3)
            e[j] = step
            fd[:, :, j] = (project_exp(v + e) - project_exp(v - e)) / (2 * step)
        return fd

    return (4 * diff(h / 2) - diff(h)) / 3


def _away_from_kinks(v: np.ndarray, r: float) -> np.ndarray:
    """Rows whose case does not change within ±r along any coordinate."""
    case = _case(v)
    keep = np.ones(len(v), dtype=bool)
    for j in range(3):
        for s in (-r, r):
            w = v.copy()
            w[:, j] += s
            keep &= _case(w) == case
    return keep


# --------------------------------------------------------------------------- projection


@pytest.mark.parametrize("scale", [1.0, 1e-3, 1e3])
def test_projection_is_optimal(scale: float) -> None:
    rng = np.random.default_rng(20230)
    v = scale * _sample(rng, 8000)
    p = project_exp(v)
    d = v - p
    nv = np.linalg.norm(v, axis=1)
    assert np.isfinite(p).all()
    assert set(np.unique(_case(v))) == {1, 2, 3, 4}

    # p ∈ K and v − p ∈ K° (distances relative to ‖v‖), and ⟨p, v − p⟩ = 0.
    assert (_dist_k(p) <= KKT_TOL * nv).all(), _dist_k(p).max()
    assert (_dist_polar(d) <= KKT_TOL * nv).all(), (_dist_polar(d) / nv).max()
    orth = np.abs(np.einsum("ij,ij->i", p, d))
    assert (orth <= KKT_TOL * nv**2).all(), (orth / nv**2).max()

    # Case 4 lands on the smooth part of ∂K: relative boundary residual.
    c4 = (_case(v) == 4) & (p[:, 1] > 1e-250 * scale)
    x, y, z = p[c4].T
    assert c4.sum() > 2000
    with np.errstate(over="ignore"):
        resid = np.abs(y * np.exp(x / y) - z)
    assert (resid <= KKT_TOL * np.maximum(z, np.linalg.norm(p[c4], axis=1))).all()


def test_closed_form_cases() -> None:
    rng = np.random.default_rng(7)
    k = 500
    p_hat, n_hat = _boundary(rng.uniform(-6, 6, k))
    lift = np.abs(rng.standard_normal((k, 1)))
    inside = p_hat * 2.0 + lift * np.array([0.0, 0.0, 1.0])
    polar = n_hat * 3.0 - lift * np.array([0.0, 0.0, 1.0])
    neg = -np.abs(rng.standard_normal((k, 3)))
    neg[:, 2] = rng.standard_normal(k)  # x < 0, y < 0, any z
    assert (_case(inside) == 1).all() and (_case(polar) == 2).all() and (_case(neg) == 3).all()

    p, jac = dproject_exp(inside)
    np.testing.assert_array_equal(p, inside)
    np.testing.assert_array_equal(jac, np.broadcast_to(np.eye(3), jac.shape))
    p, jac = dproject_exp(polar)
    np.testing.assert_array_equal(p, 0.0)
    np.testing.assert_array_equal(jac, 0.0)
    p, jac = dproject_exp(neg)
    np.testing.assert_array_equal(p, np.stack([neg[:, 0], 0 * neg[:, 0], np.maximum(neg[:, 2], 0)],
                                              axis=1))
    expected = np.zeros((k, 3, 3))
    expected[:, 0, 0] = 1.0
    expected[:, 2, 2] = neg[:, 2] > 0
    np.testing.assert_array_equal(jac, expected)


# (x, y, z) and Π_K computed with 60-digit arithmetic (mpmath, bisection on the offset of ρ from
# the end of its interval), rounded to 20 digits. They include points where α = p_y is tiny
# while e^ρ is large (rows 2 and 4), where diffcp is off by 4e-5 (row 4), and where the
# numerator β is tiny (rows 3 and 7).
REFERENCE = np.array([
    [1.0, 2.0, -1.0,
     -0.14133136793702371136, 0.58106444297485971841, 0.45560822284033395081],
    [0.00475138, -0.61127656, 1.19469718,
     7.6331827102086428594e-55, 5.887419922159885487e-57, 1.1946971799999999142],
    [-1.59366967, 0.05760446, -0.16161593,
     -1.5936696700001560292, 0.057604459995525224075, 5.5639148702415224942e-14],
    [0.15468642, -1.95902485, 2.73854687,
     0.000043377276167404651583, 3.1736224611310627283e-6, 2.7385470492113207971],
    [1.8400873785124413e-09, 1.2433737801147398e-11, 0.22582163495647556,
     1.83660108663784627e-9, 8.4616979962041148402e-11, 0.22582163495647555873],
    [0.6870711, 0.70041488, 0.94520038,
     0.37425369399674703971, 0.58703024667856475255, 1.1105533376522977391],
    [-0.34545395, 0.01218426, -0.20240586,
     -0.34545395000009838781, 0.012184259997112357081, 5.9220885345631412304e-15],
])


def test_matches_high_precision_reference() -> None:
    v, ref = REFERENCE[:, :3], REFERENCE[:, 3:]
    p = project_exp(v)
    # Componentwise relative accuracy, even for the components of size 1e-57.
    np.testing.assert_allclose(p, ref, rtol=2e-14, atol=0)


def test_agrees_with_diffcp() -> None:
    # diffcp's projection is accurate to ~1e-5 relative: on standard normal points it differs
    # from the reference values above by up to 4e-5·‖v‖ (row 4) and returns points outside K
    # by up to ~1e-7; for ‖v‖ ≲ 1e-3 its absolute tolerances make it much worse, so the
    # comparison is at unit scale and at 1e3.
    rng = np.random.default_rng(3)
    for scale in (1.0, 1e3):
        v = scale * rng.standard_normal((600, 3))
        p = project_exp(v)
        ref = np.array([np.ravel(project_exp_cone(row.copy())) for row in v])
        err = np.abs(p - ref).max(axis=1) / np.linalg.norm(v, axis=1)
        assert err.max() <= 1e-4, err.max()
        assert np.median(err) <= 1e-8


def test_scaling_and_edge_cases() -> None:
    rng = np.random.default_rng(11)
    v = _sample(rng, 800)
    p, jac = dproject_exp(v)
    # Positively homogeneous, exactly so for powers of two; the Jacobian is scale-invariant.
    normal = (np.abs(p) >= np.finfo(np.float64).tiny) | (p == 0)  # s·p is exact for these
    for s in (2.0**-900, 2.0**900, 2.0**-40):
        ps, js = dproject_exp(s * v)
        np.testing.assert_array_equal(ps[normal], s * p[normal])
        np.testing.assert_array_equal(js, jac)
    np.testing.assert_allclose(project_exp(1e-3 * v), 1e-3 * p, rtol=0,
                               atol=1e-14 * 1e-3 * np.abs(v).max())

    special = np.array([
        [0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, -1.0],
        [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [3.0, 1.0, np.exp(3.0)], [1e-300, -1.0, 1.0],
        [-1.0, 1e-300, -1.0], [1e-200, -1e-200, 1.0], [1e-300, 1e-300, -1.0],
        [-1e-300, 1e-300, -1.0], [700.0, 1.0, 0.0], [1.0, -700.0, 1e-300], [1e-320, 0.0, 1.0],
    ])
    p, jac = dproject_exp(special)
    assert np.isfinite(p).all() and np.isfinite(jac).all()
    nv = np.maximum(np.linalg.norm(special, axis=1), 1e-300)
    assert (_dist_k(p) <= KKT_TOL * nv).all()
    assert (_dist_polar(special - p) <= KKT_TOL * nv).all()
    np.testing.assert_allclose(p[8], [0.0, 0.0, 1.0], atol=1e-200)  # far tail near x = 0+
    np.testing.assert_allclose(p[9], [-1.0, 1e-300, 0.0], atol=1e-200)  # far tail near y = 0+
    np.testing.assert_allclose(p[15], [0.0, 0.0, 1.0], atol=1e-15)

    bad = np.array([[np.nan, 1.0, 1.0], [np.inf, 0.0, 0.0], [1.0, 2.0, 3.0]])
    p, jac = dproject_exp(bad)
    assert np.isnan(p[:2]).all() and np.isnan(jac[:2]).all() and np.isfinite(p[2]).all()
    assert project_exp(np.zeros((0, 3))).shape == (0, 3)
    assert dproject_exp(np.zeros((0, 3)))[1].shape == (0, 3, 3)
    with pytest.raises(ValueError):
        project_exp(np.zeros(3))


# --------------------------------------------------------------------------- Jacobian


def test_jacobian_matches_finite_differences() -> None:
    rng = np.random.default_rng(5)
    v = rng.standard_normal((3000, 3))
    v = v[_away_from_kinks(v, 1e-3)]
    case = _case(v)
    assert min((case == c).sum() for c in (1, 2, 3, 4)) > 200
    _, jac = dproject_exp(v)
    # Our projection is accurate to ~1e-15, so with h = 1e-5 the extrapolated central
    # difference is good to O(h⁴) + O(1e-16/h), about 1e-11.
    fd = _central_difference(v, 1e-5)
    err = np.abs(fd - jac).max(axis=(1, 2))
    assert err.max() <= 1e-8, (err.max(), case[np.argmax(err)])


def test_jacobian_matches_kkt_system() -> None:
    # Case 4: implicit differentiation of p − v + μ∇φ(p) = 0, φ(p) = y e^(x/y) − z = 0, with
    # μ = ‖v − p‖/‖∇φ(p)‖: J is the top-left block of the inverse of [[I + μ∇²φ, ∇φ], [∇φᵀ, 0]].
    rng = np.random.default_rng(9)
    v = rng.standard_normal((2000, 3))
    p = project_exp(v)
    v = v[(_case(v) == 4) & (np.abs(p[:, 0]) < 20 * p[:, 1])]  # |ρ| < 20: e^ρ well within range
    p, jac = dproject_exp(v)
    x, y = p[:, 0], p[:, 1]
    r = x / y
    er = np.exp(r)
    grad = np.stack([er, er * (1 - r), -np.ones_like(r)], axis=1)
    w = np.stack([np.ones_like(r), -r, np.zeros_like(r)], axis=1)
    hess = (er / y)[:, None, None] * w[:, :, None] * w[:, None, :]
    mu = np.linalg.norm(v - p, axis=1) / np.linalg.norm(grad, axis=1)
    kkt = np.zeros((len(v), 4, 4))
    kkt[:, :3, :3] = np.eye(3) + mu[:, None, None] * hess
    kkt[:, :3, 3] = grad
    kkt[:, 3, :3] = grad
    rhs = np.zeros((len(v), 4, 3))
    rhs[:, :3, :] = np.eye(3)
    expected = np.linalg.solve(kkt, rhs)[:, :3, :]
    np.testing.assert_allclose(jac, expected, rtol=0, atol=1e-10)


def test_jacobian_agrees_with_diffcp() -> None:
    rng = np.random.default_rng(13)
    v = rng.standard_normal((800, 3))
    v = v[_away_from_kinks(v, 1e-2)]
    p, jac = dproject_exp(v)
    d = v - p
    # Case 4 away from the ends of the boundary: |ρ| moderate and α/β = p_y/d_x not extreme
    # (where the projection itself is near a kink, diffcp's heuristics take over).
    case = _case(v)
    with np.errstate(divide="ignore", invalid="ignore"):
        rho = p[:, 0] / p[:, 1]
        ratio = p[:, 1] / d[:, 0]
    keep = (case != 4) | ((np.abs(rho) < 5) & (ratio > 1e-2) & (ratio < 1e2))
    assert (keep & (case == 4)).sum() > 200
    cone = [dcp.Cone(dcp.ConeType.EXP, [1])]
    ref = np.array([dcp.dprojection_dense(row.copy(), cone, False) for row in v[keep]])
    np.testing.assert_allclose(jac[keep], ref, rtol=0, atol=1e-3)


def test_jacobian_is_a_projection_derivative() -> None:
    rng = np.random.default_rng(17)
    for scale in (1.0, 1e-3, 1e3):
        v = scale * _sample(rng, 4000)
        p, jac = dproject_exp(v)
        assert np.isfinite(jac).all()
        # Symmetric, eigenvalues in [0, 1] (firmly nonexpansive).
        np.testing.assert_allclose(jac, jac.transpose(0, 2, 1), rtol=0, atol=1e-14)
        eig = np.linalg.eigvalsh(jac)
        assert eig.min() >= -1e-12 and eig.max() <= 1 + 1e-12
        # Π is positively homogeneous of degree one, so J(v)·v = Π(v) wherever it is smooth.
        nv = np.linalg.norm(v, axis=1)
        resid = np.linalg.norm(np.einsum("pij,pj->pi", jac, v) - p, axis=1)
        smooth = _case(v) != 3  # J·v = (x, 0, z·1{z>0}) = Π(v) holds in case 3 too
        assert (resid[smooth] <= 1e-12 * nv[smooth]).all(), (resid / nv).max()
        assert (resid <= 1e-12 * nv).all()


# --------------------------------------------------------------------------- fast path


def _all_orthants(rng: np.random.Generator) -> list[np.ndarray]:
    """Hard points, whole and split by the signs of (x, y, z): batches that are uniform in
    which end of (a, b) the root is measured from and in the sign of z exercise the
    specialized branches of the fast iteration, mixed ones the general branches."""
    wide = rng.standard_normal((2000, 3)) * 10.0 ** rng.uniform(-300, 300, (2000, 3))
    v = np.concatenate([s * _sample(rng, 4000) for s in (1.0, 1e-3, 1e3, 1e-200, 1e200)]
                       + [wide])
    signs = (v[:, 0] > 0).astype(int) * 4 + (v[:, 1] > 0) * 2 + (v[:, 2] >= 0)
    return [v] + [v[signs == k] for k in range(8)]


def test_fast_path_changes_no_bits(monkeypatch: pytest.MonkeyPatch) -> None:
    # The fast iteration (no bracket check, only the branches regular points take) must give
    # what the safeguarded iteration alone gives, bit for bit: with _FAST_ITER = 0 every point
    # goes through _root.
    rng = np.random.default_rng(23)
    batches = _all_orthants(rng)
    fast = [_expcone._project(v) for v in batches]
    monkeypatch.setattr(_expcone, "_FAST_ITER", 0)
    for v, got in zip(batches, fast, strict=True):
        want = _expcone._project(v)
        for g, w in zip(got, want, strict=True):
            np.testing.assert_array_equal(g, w)
    # Single points (uniform batches of one) too, for a sample of them.
    monkeypatch.undo()
    rows = batches[0][rng.choice(len(batches[0]), 300, replace=False)]
    fast = [_expcone._project(r[None]) for r in rows]
    monkeypatch.setattr(_expcone, "_FAST_ITER", 0)
    for r, got in zip(rows, fast, strict=True):
        for g, w in zip(got, _expcone._project(r[None]), strict=True):
            np.testing.assert_array_equal(g, w)


def _jacobian_by_cross_products(rho: np.ndarray, ratio: np.ndarray) -> np.ndarray:
    """J = p̂p̂ᵀ + λ·eeᵀ assembled from normalized vectors and ``np.cross`` (an independent
    evaluation of the formula in the module docstring), for |ρ| ≤ 350."""
    p_hat, n_hat = _boundary(rho)
    e = np.cross(p_hat, n_hat)
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    we2 = (1 + rho**2 + np.exp(2 * rho)) / (1 + np.exp(2 * rho) * (1 + (1 - rho) ** 2))
    with np.errstate(invalid="ignore"):
        lam = np.where(np.isinf(ratio), 1.0, ratio / (ratio + we2))
    return (p_hat[:, :, None] * p_hat[:, None, :]
            + lam[:, None, None] * e[:, :, None] * e[:, None, :])


def test_boundary_jacobian_closed_form() -> None:
    rng = np.random.default_rng(29)
    n = 4000
    rho = np.concatenate([rng.uniform(-3, 3, n), rng.uniform(-300, 300, n),
                          [0.0, 1.0, -1.0, 0.5, 2.0]])
    ratio = np.concatenate([10.0 ** rng.uniform(-300, 300, 2 * n), [0.0, np.inf, 1.0, 1e-320,
                                                                     1e300]])
    jac = _expcone._boundary_jacobian(rho, ratio)
    ref = _jacobian_by_cross_products(rho, ratio)
    np.testing.assert_allclose(jac, ref, rtol=0, atol=4 * np.finfo(np.float64).eps)
    np.testing.assert_array_equal(jac, jac.transpose(0, 2, 1))
    # The limits: α → 0 (λ = 0) leaves p̂p̂ᵀ, β → 0 (λ = 1) the projection onto span(p̂, e).
    assert np.isfinite(jac).all()
    eig = np.linalg.eigvalsh(jac)
    assert eig.min() >= -1e-15 and eig.max() <= 1 + 1e-15
