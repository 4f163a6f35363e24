"""Points where the cone program's derivative is singular: the layer says so
when the requested outputs are affected, and stays quiet (and exact) when only
CVXPY's auxiliary variables are non-unique."""

from __future__ import annotations

import warnings

import cvxpy as cp
import numpy as np
import pytest
from helpers import central_difference, inner, rel_err

from conelayers import CvxpyLayer, DerivativeWarning


def test_inactive_norm_constraint_is_not_reported_and_gradient_is_exact(rng):
    """`norm(x) <= r` inactive: its epigraph variable is free in [‖x‖, r], so K is
    singular, but x is unique and smooth; the min-norm derivative is exact."""
    x = cp.Variable(3)
    p = cp.Parameter(3)
    r = cp.Parameter(nonneg=True)
    prob = cp.Problem(cp.Minimize(cp.sum_squares(x - p)), [cp.norm(x, 2) <= r, x >= -1])
    layer = CvxpyLayer(prob, [p, r], [x])
    values = [rng.standard_normal(3) * 0.3, np.array(5.0)]
    with warnings.catch_warnings():
        warnings.simplefilter("error", DerivativeWarning)
        sol = layer.solve(*values)
        w = [rng.standard_normal(3)]
        grads = sol.adjoint(*w)
    assert sol.residual[0] < 1e-12  # refinement converged despite the singular K
    d = [rng.standard_normal(3), np.array(1.0)]
    fd = central_difference(layer, values, d, w, 1e-5, {})
    assert rel_err(inner(grads, d), fd) <= 1e-8
    np.testing.assert_allclose(grads[0], w[0], atol=1e-9)  # x = p: dx/dp = I


def test_psd_kink_regression_is_reported():
    """The projection onto the PSD cone of a matrix with a zero eigenvalue has a
    kink (X = T₊ at T = diag(0, 1)): one element of the generalized Jacobian
    came back without a word, as the strict-complementarity check read only
    Nonneg and SOC rows (found by a probe). Off the kink: exact and quiet."""
    X, T = cp.Variable((2, 2), symmetric=True), cp.Parameter((2, 2))
    layer = CvxpyLayer(cp.Problem(cp.Minimize(cp.sum_squares(X - T)), [X >> 0]), [T], [X])
    W = np.array([[1.0, 0.0], [0.0, 0.0]])  # reads X₁₁ = max(T₁₁, 0) near T₁₁ = 0
    D = np.array([[1.0, 0.0], [0.0, 0.0]])
    def slope(T0, sign, eps=1e-6):
        return sign * np.sum(W * (layer(T0 + sign * eps * D)[0] - layer(T0)[0])) / eps
    at = np.diag([0.0, 1.0])
    with pytest.warns(DerivativeWarning, match=r"item 0 may not exist: the solution is not "
                      r"strictly complementary"):
        layer.solve(at).adjoint(W)
    assert abs(slope(at, 1) - slope(at, -1)) > 0.9  # 1 on one side, 0 on the other
    off = np.diag([0.3, 1.0])
    (grad,) = layer.solve(off).adjoint(W)  # (DerivativeWarning is an error in this suite)
    np.testing.assert_allclose(np.sum(grad * D), (slope(off, 1) + slope(off, -1)) / 2,
                               atol=1e-6)


def test_small_multiplier_regression_is_not_a_kink():
    """min cᵀx s.t. x ≥ l with c = (1e-3, 1e8): both bounds active with positive
    multipliers, strictly complementary. The check judged y + s to 1e-10 of the
    item's largest entry (1e8), so the multiplier 1e-3 read as zero and a
    DerivativeWarning said there was a kink; its margin follows the point's
    accuracy now. The JVP is exact: x = l, so dx = dl."""
    x, c, lo = cp.Variable(2), cp.Parameter(2), cp.Parameter(2)
    layer = CvxpyLayer(cp.Problem(cp.Minimize(c @ x), [x >= lo]), [c, lo], [x])
    sol = layer.solve(np.array([1e-3, 1e8]), np.zeros(2))  # (a warning would be an error)
    (dx,) = sol.derivative(None, np.array([1.0, -2.0]))
    np.testing.assert_allclose(dx, [1.0, -2.0], atol=1e-9)


def test_two_identical_active_bounds_are_reported():
    """max x s.t. x ≤ h₁, x ≤ h₂ at h₁ = h₂: x = min(h₁, h₂) has a kink there."""
    x = cp.Variable()
    h1, h2 = cp.Parameter(), cp.Parameter()
    prob = cp.Problem(cp.Maximize(x), [x <= h1, x <= h2])
    layer = CvxpyLayer(prob, [h1, h2], [x])
    sol = layer.solve(np.array(1.0), np.array(1.0))
    np.testing.assert_allclose(sol.values[0], 1.0, atol=1e-10)
    with pytest.warns(DerivativeWarning, match=r"batch item 0 does not exist for the requested "
                      r"outputs"):
        grads = sol.adjoint(np.array(1.0))
    # The least-squares answer is the symmetric element of the subdifferential.
    np.testing.assert_allclose(grads, [0.5, 0.5], atol=1e-8)


def test_distinct_bounds_are_differentiable():
    x = cp.Variable()
    h1, h2 = cp.Parameter(), cp.Parameter()
    layer = CvxpyLayer(cp.Problem(cp.Maximize(x), [x <= h1, x <= h2]), [h1, h2], [x])
    grads = layer.solve(np.array(1.0), np.array(2.0)).adjoint(np.array(1.0))
    np.testing.assert_allclose(grads, [1.0, 0.0], atol=1e-10)


def _one_sided(layer, values, i, w, sign, eps=1e-6):
    """One-sided difference of ⟨w, outputs⟩ in each entry of values[i]."""
    base = np.ravel(layer.solve(*values).values[0])
    g = np.zeros_like(values[i])
    for k in range(g.size):
        moved = [v.copy() for v in values]
        moved[i].flat[k] += sign * eps
        g.flat[k] = sign * w @ (np.ravel(layer.solve(*moved).values[0]) - base) / eps
    return g


@pytest.mark.parametrize("case", ["min(c, h) at c = h", "sparsemax of a one-hot input",
                                  "a QP with a redundant equality"])
def test_kink_with_a_zero_multiplier_regression_is_reported(case):
    """A constraint active with a zero multiplier (K regular, so the singular
    path's check never ran) gave one element of the generalized Jacobian
    without a word (found by a probe, 2026-12-04). One-sided differences show
    the kink; a point off it is exact and not reported."""
    if case == "min(c, h) at c = h":
        x, c, h = cp.Variable(), cp.Parameter(), cp.Parameter()
        layer = CvxpyLayer(cp.Problem(cp.Minimize((x - c) ** 2), [x <= h]), [c, h], [x])
        at, off, w, i = [np.array(1.0), np.array(1.0)], [np.array(0.7), np.array(1.0)], \
            np.array([1.0]), 0
    elif case == "a QP with a redundant equality":
        # K singular (the equality twice) with outputs determined: that path skipped
        # the complementarity check (found by a probe of OptNet-style layers).
        x, q, h = cp.Variable(3), cp.Parameter(3), cp.Parameter()
        ones, g = np.ones(3), np.array([1.0, -1.0, 0.0])
        layer = CvxpyLayer(cp.Problem(cp.Minimize(0.5 * cp.sum_squares(x) + q @ x),
                                      [ones @ x == 1, 2 * ones @ x == 2, g @ x <= h]), [q, h], [x])
        at, off = [np.array([-1.0, 1.0, 0.3]), np.array(2.0)], \
            [np.array([-1.0, 1.0, 0.3]), np.array(2.5)]
        w, i = np.array([1.0, 0.0, 0.0]), 1
    else:
        p, z = cp.Variable(3), cp.Parameter(3)
        layer = CvxpyLayer(cp.Problem(cp.Minimize(cp.sum_squares(p - z)),
                                      [cp.sum(p) == 1, p >= 0]), [z], [p])
        at, off, w, i = [np.array([1.0, 0.0, 0.0])], [np.array([1.0, 0.3, -0.5])], \
            np.array([1.0, 2.0, -1.0]), 0
    sol = layer.solve(*at)
    with pytest.warns(DerivativeWarning, match=r"item 0 may not exist: the solution is not "
                      r"strictly complementary"):
        sol.adjoint(w if w.size > 1 else w[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DerivativeWarning)
        right, left = (_one_sided(layer, at, i, w, s) for s in (1, -1))
    assert np.abs(right - left).max() > 0.3  # a kink indeed
    # Off the kink: no warning (DerivativeWarning is an error in this suite), and exact.
    grads = layer.solve(*off).adjoint(w if w.size > 1 else w[0])
    fd = (_one_sided(layer, off, i, w, 1) + _one_sided(layer, off, i, w, -1)) / 2
    np.testing.assert_allclose(grads[i], fd, atol=1e-5)
