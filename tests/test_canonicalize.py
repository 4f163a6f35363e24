"""Canonicalization: parameter attributes, variable attributes, outputs in any
order, objective values; each checked against CVXPY's own solve or a closed
form, and gradients against central differences."""

from __future__ import annotations

import cvxpy as cp
import numpy as np
import pytest
from helpers import central_difference, inner, rel_err

from conelayers import CvxpyLayer

TIGHT = {"eps": 1e-10}


def cvxpy_values(problem, params, values, outputs):
    for p, v in zip(params, values, strict=True):
        p.value = v
    problem.solve(solver=cp.CLARABEL, tol_gap_abs=1e-10, tol_gap_rel=1e-10, tol_feas=1e-10)
    values = [o.value.toarray() if hasattr(o.value, "toarray") else o.value for o in outputs]
    return [np.asarray(v, dtype=float) for v in values], problem.value


def check_gradient(layer, values, rng, symmetric=(), masks=None):
    """⟨adjoint, d⟩ against central differences along a random d that keeps the
    parameters' declared structure (symmetric, or zero off a ``masks`` pattern)."""
    sol = layer.solve(*values, solver_args=TIGHT)
    w = [rng.standard_normal(np.shape(o)) for o in sol.values]
    grads = sol.adjoint(*w)
    d = [rng.standard_normal(np.shape(v)) for v in values]
    for i in symmetric:
        d[i] = (d[i] + d[i].T) / 2
    for i, mask in (masks or {}).items():
        d[i] = np.where(mask, d[i], 0.0)
    fd = central_difference(layer, values, d, w, 1e-5, TIGHT)
    assert rel_err(inner(grads, d), fd) <= 1e-6
    return grads


def test_diag_parameter_is_supported(rng):
    x = cp.Variable(3)
    D = cp.Parameter((3, 3), diag=True)
    g = cp.Parameter(3)
    prob = cp.Problem(cp.Minimize(cp.sum_squares(D @ x - g) + cp.sum_squares(x)), [x >= -0.5])
    layer = CvxpyLayer(prob, [D, g], [x])
    Dv, gv = np.diag(rng.uniform(0.5, 2, 3)), rng.standard_normal(3)
    (ours,) = layer(Dv, gv)
    np.testing.assert_allclose(ours, np.maximum(Dv.diagonal() * gv / (Dv.diagonal() ** 2 + 1),
                                                -0.5), atol=1e-10)
    grads = check_gradient(layer, [Dv, gv], rng, masks={0: np.eye(3, dtype=bool)})
    assert not grads[0][~np.eye(3, dtype=bool)].any()  # off-diagonal entries are not inputs


def test_sparsity_parameter_is_supported(rng):
    x = cp.Variable(3)
    S = cp.Parameter((4, 3), sparsity=([0, 1, 3, 2], [0, 1, 2, 0]))
    g = cp.Parameter(4)
    prob = cp.Problem(cp.Minimize(cp.sum_squares(S @ x - g) + 0.1 * cp.sum_squares(x)))
    layer = CvxpyLayer(prob, [S, g], [x])
    Sv = np.zeros((4, 3))
    Sv[[0, 1, 3, 2], [0, 1, 2, 0]] = rng.uniform(0.5, 2, 4)
    gv = rng.standard_normal(4)
    (ours,) = layer(Sv, gv)
    np.testing.assert_allclose(ours, np.linalg.solve(Sv.T @ Sv + 0.1 * np.eye(3), Sv.T @ gv),
                               atol=1e-10)
    check_gradient(layer, [Sv, gv], rng, masks={0: Sv != 0})


def test_symmetric_parameter_gradient_covers_the_whole_matrix(rng):
    """A perturbation of the full symmetric matrix is matched by ⟨grad, dS⟩."""
    x = cp.Variable(3)
    S = cp.Parameter((3, 3), symmetric=True)
    g = cp.Parameter(3)
    prob = cp.Problem(cp.Minimize(cp.sum_squares(S @ x - g) + cp.sum_squares(x)), [x <= 1])
    layer = CvxpyLayer(prob, [S, g], [x])
    M = rng.standard_normal((3, 3))
    grads = check_gradient(layer, [(M + M.T) / 2, rng.standard_normal(3)], rng, symmetric=(0,))
    np.testing.assert_allclose(grads[0], grads[0].T, atol=1e-14)


@pytest.mark.parametrize("attr", ["PSD", "NSD", "symmetric", "nonneg", "diag"])
def test_variable_attributes_match_cvxpy(attr, rng):
    k = 3
    X = cp.Variable((k, k), **{attr: True})
    P = cp.Parameter((k, k))
    prob = cp.Problem(cp.Minimize(cp.sum_squares(X - P)))
    layer = CvxpyLayer(prob, [P], [X])
    Pv = rng.standard_normal((k, k))
    (ours,) = layer(Pv)
    (ref,), _ = cvxpy_values(prob, [P], [Pv], [X])
    assert ours.shape == (k, k)
    np.testing.assert_allclose(ours, ref, atol=2e-5)


@pytest.mark.filterwarnings("ignore::cvxpy.utilities.warn.CvxpyDeprecationWarning")  # NonPos
def test_outputs_in_any_order_with_duals_of_every_constraint_kind(rng):
    x = cp.Variable(3)
    p, a = cp.Parameter(3), cp.Parameter(3)
    cons = [cp.sum(x) == 1, x >= a, cp.NonPos(x - 1), cp.norm(x, 2) <= 2]
    prob = cp.Problem(cp.Minimize(cp.sum_squares(x - p)), cons)
    outputs = [cons[3].dual_variables[0], x, cons[1].dual_variables[0],
               cons[0].dual_variables[0], cons[2].dual_variables[0]]
    layer = CvxpyLayer(prob, [p, a], outputs)
    values = [rng.standard_normal(3) * 2, np.full(3, 0.1)]
    ours = layer(*values)
    ref, _ = cvxpy_values(prob, [p, a], values, outputs)
    for o, r in zip(ours, ref, strict=True):
        np.testing.assert_allclose(o, np.reshape(r, np.shape(o)), atol=2e-5)
    check_gradient(layer, values, rng)


@pytest.mark.parametrize("sense", [cp.Minimize, cp.Maximize])
def test_objective_value_matches_cvxpy(sense, rng):
    x = cp.Variable(3)
    p = cp.Parameter(3)
    c = cp.Parameter()
    expr = cp.sum_squares(x - p) + c if sense is cp.Minimize else -cp.sum_squares(x - p) + c
    prob = cp.Problem(sense(expr), [cp.sum(x) == 1])
    layer = CvxpyLayer(prob, [p, c], [x])
    values = [rng.standard_normal((2, 3)), np.array(0.7)]
    sol = layer.solve(*values)
    for i in range(2):
        _, value = cvxpy_values(prob, [p, c], [values[0][i], values[1]], [x])
        np.testing.assert_allclose(sol.objective[i], value, rtol=1e-7)


def test_gp_parameters_need_no_initial_value_and_objective_is_exp_of_log(rng):
    x, y = cp.Variable(pos=True), cp.Variable(pos=True)
    a = cp.Parameter(pos=True)
    prob = cp.Problem(cp.Minimize(x * y), [x >= a, y >= a * x])
    layer = CvxpyLayer(prob, [a], [x, y], gp=True)  # a.value is None here
    sol = layer.solve(np.array([1.5, 2.0]))
    np.testing.assert_allclose(sol.values[0], [1.5, 2.0], rtol=1e-10)
    np.testing.assert_allclose(sol.values[1], [1.5 ** 2, 2.0 ** 2], rtol=1e-10)
    np.testing.assert_allclose(sol.objective, [1.5 ** 3, 2.0 ** 3], rtol=1e-10)
    (grad,) = sol.adjoint(np.ones(2), np.zeros(2))  # d x / d a = 1
    np.testing.assert_allclose(grad, [1.0, 1.0], rtol=1e-9)


def test_layer_holds_no_cvxpy_objects_and_can_be_copied(rng):
    import copy
    import pickle

    x = cp.Variable(2)
    p = cp.Parameter(2)
    layer = CvxpyLayer(cp.Problem(cp.Minimize(cp.sum_squares(x - p)), [x >= 0]), [p], [x])
    clone = pickle.loads(pickle.dumps(layer))
    twin = copy.deepcopy(layer)
    v = rng.standard_normal(2)
    for other in (clone, twin):
        np.testing.assert_allclose(other(v)[0], layer(v)[0], atol=1e-14)
