"""Failure is data: infeasible and unbounded items are reported per item and
never poison the other items of the batch."""

from __future__ import annotations

import cvxpy as cp
import numpy as np
import pytest

from conelayers import CvxpyLayer, SolverError, Status


def box_problem():
    """min cᵀx s.t. lo ≤ x ≤ 1 and Σx ≤ s: infeasible when s < Σlo; with the
    lower bound dropped it would be unbounded, so we also build that variant."""
    n = 3
    x = cp.Variable(n)
    c, lo, s = cp.Parameter(n), cp.Parameter(n), cp.Parameter()
    prob = cp.Problem(cp.Minimize(c @ x + cp.sum_squares(x)), [x >= lo, x <= 1, cp.sum(x) <= s])
    return prob, [c, lo, s], [x]


def unbounded_problem():
    """min cᵀx s.t. x ≥ lo: unbounded as soon as some c_i < 0."""
    x = cp.Variable(3)
    c, lo = cp.Parameter(3), cp.Parameter(3)
    return cp.Problem(cp.Minimize(c @ x), [x >= lo]), [c, lo], [x]


SOLVERS = ["Clarabel", "SCS", "ECOS"]


@pytest.mark.parametrize("solver", SOLVERS)
def test_infeasible_item_is_reported_and_others_are_exact(solver, rng):
    prob, params, variables = box_problem()
    layer = CvxpyLayer(prob, params, variables, solver=solver)
    B = 4
    c = rng.standard_normal((B, 3))
    lo = np.zeros((B, 3))
    s = np.array([2.0, -1.0, 2.5, 1.5])  # item 1: Σx ≤ −1 with x ≥ 0 is infeasible
    sol = layer.solve(c, lo, s, throw=False)
    assert sol.status[1] is Status.infeasible
    assert [sol.ok[i] for i in range(B)] == [True, False, True, True]
    assert np.isnan(sol.values[0][1]).all()
    for i in (0, 2, 3):
        (alone,) = layer(c[i], lo[i], s[i])
        np.testing.assert_allclose(sol.values[0][i], alone, atol=1e-8)
    # Gradients flow for the good items; the failed one contributes nothing.
    grads = sol.adjoint(np.ones((B, 3)))
    assert np.isfinite(grads[0]).all() and not grads[0][1].any()
    assert np.isfinite(sol.derivative(np.ones((B, 3)), None, None)[0][[0, 2, 3]]).all()


@pytest.mark.parametrize("solver", SOLVERS)
def test_unbounded_item_is_reported(solver):
    prob, params, variables = unbounded_problem()
    layer = CvxpyLayer(prob, params, variables, solver=solver)
    c = np.array([[1.0, 2.0, 1.0], [1.0, -1.0, 1.0]])
    sol = layer.solve(c, np.zeros(3), throw=False)
    assert sol.status[0] is Status.optimal
    assert sol.status[1] is Status.unbounded
    np.testing.assert_allclose(sol.values[0][0], 0.0, atol=1e-8)


@pytest.mark.parametrize("solver", SOLVERS)
def test_default_raises_naming_the_item_and_the_layer_keeps_working(solver, rng):
    prob, params, variables = box_problem()
    layer = CvxpyLayer(prob, params, variables, solver=solver)
    c = rng.standard_normal((3, 3))
    message = r"1 of 3 batch item\(s\).*\n  item 2: infeasible"
    with pytest.raises(SolverError, match=message) as info:
        layer(c, np.zeros(3), np.array([1.0, 2.0, -3.0]))
    assert info.value.failed == (2,)
    assert info.value.statuses[2] is Status.infeasible
    (x,) = layer(c, np.zeros(3), np.array([1.0, 2.0, 3.0]))  # next call is normal
    assert np.isfinite(x).all()


def test_solver_error_is_caught_as_diffcp_and_runtime_error():
    import diffcp

    prob, params, variables = box_problem()
    layer = CvxpyLayer(prob, params, variables)
    for exc in (diffcp.SolverError, RuntimeError):
        with pytest.raises(exc):
            layer(np.ones(3), np.zeros(3), -1.0)


@pytest.mark.parametrize(("solver", "limit"), [("Clarabel", {"max_iter": 2}),
                                               ("SCS", {"max_iters": 3}),
                                               ("ECOS", {"max_iters": 1})])
def test_iteration_limit_is_a_failure_with_its_own_status(solver, limit, rng):
    n = 8
    x = cp.Variable(n)
    F, g = cp.Parameter((12, n)), cp.Parameter(12)
    prob = cp.Problem(cp.Minimize(cp.norm(F @ x - g, 2) + cp.norm(x, 1)), [x >= -1])
    layer = CvxpyLayer(prob, [F, g], [x], solver=solver)
    sol = layer.solve(rng.standard_normal((12, n)), rng.standard_normal(12),
                      solver_args={**limit, "refine": 0}, throw=False)
    assert sol.status[0] is Status.max_iterations
    assert np.isnan(sol.values[0]).all()
