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
