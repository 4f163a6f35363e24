"""Bound constraints canonicalized without CVXPY's epigraph variables
(conelayers._rewrite): the same solutions and dual variables as CVXPY's own
solve of the user's problem, gradients against central differences, a
regular K where the bound is inactive (no free variable), the constraints that
are not rewritten left to CVXPY, and the user's problem untouched."""

from __future__ import annotations

import cvxpy as cp
import numpy as np
import pytest
from helpers import FORWARD_TOL, central_difference, inner, rel_err

from conelayers import CvxpyLayer
from conelayers._rewrite import without_free_epigraphs


def projection(kind: str):
    """min ‖x − z‖² + ‖Fx‖²-free: the projection of z onto a bound {kind(x) ≤ r},
    x of 4 entries (2×2 for the Frobenius norm); z and r parameters."""
    shape = (2, 2) if kind == "fro" else (4,)
    x, z = cp.Variable(shape), cp.Parameter(shape)
    r = cp.Parameter(nonneg=True)
    bound = {"abs": lambda: cp.abs(x) <= r, "norm_inf": lambda: cp.norm(x, "inf") <= r,
             "norm2": lambda: cp.norm(x, 2) <= r, "fro": lambda: cp.norm(x, "fro") <= r,
             "abs_vector_bound": lambda: cp.abs(x) <= r + np.arange(4.0)}[kind]()
    problem = cp.Problem(cp.Minimize(cp.sum_squares(x - z)), [bound])
    return problem, [z, r], [x, bound.dual_variables[0]], shape


KINDS = ["abs", "norm_inf", "norm2", "fro", "abs_vector_bound"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("active", [True, False], ids=["active", "inactive"])
def test_rewritten_bounds_match_cvxpy_and_central_differences(kind, active, rng):
    problem, params, outputs, shape = projection(kind)
    layer = CvxpyLayer(problem, params, outputs)
    reference_n = problem.get_problem_data(cp.DIFFCP)[0]["A"].shape[1]
    assert layer.program.n < reference_n  # no epigraph variable
    z = rng.standard_normal(shape) * (3.0 if active else 0.1)
    values = [z, np.array(1.0)]
    solution = layer.solve(*values)
    for p, v in zip(params, values, strict=True):
        p.value = v
    problem.solve(solver=cp.CLARABEL, tol_gap_abs=1e-10, tol_gap_rel=1e-10, tol_feas=1e-10)
    x, dual = solution.values
    np.testing.assert_allclose(x, outputs[0].value, atol=FORWARD_TOL)
    np.testing.assert_allclose(dual, problem.constraints[0].dual_value, atol=FORWARD_TOL)
    assert (np.abs(dual).max() > 1e-3) == active
    # inactive: the cone program's solution is unique, K regular (no least squares)
    if not active:
        (lin,) = solution._linearizations
        lin.factor()
        assert lin.regular
    weights = [rng.standard_normal(x.shape), rng.standard_normal(np.shape(dual))]
    direction = [rng.standard_normal(shape), np.array(rng.standard_normal())]
    exact = inner(solution.adjoint(*weights), direction)
    fd = central_difference(layer, values, direction, weights, 1e-6, {"eps": 1e-10})
    assert rel_err(exact, fd) < 1e-5, (exact, fd)


def test_what_is_not_rewritten_is_left_to_cvxpy(rng):
    """Non-affine arguments, p ≠ 2, a vector bound on a scalar norm, an axis:
    CVXPY's own canonicalization (the same columns), and its answers."""
    x, z = cp.Variable(4), cp.Parameter(4)
    r = cp.Parameter(4, nonneg=True)
    cases = [(cp.abs(cp.square(x)) <= 1, [z]), (cp.norm(x, 3) <= 1, [z]),
             (cp.norm(x, "inf") <= r, [z, r]),
             (cp.norm_inf(cp.reshape(x, (2, 2), order="F"), axis=0) <= r[:2], [z, r])]
    for bound, params in cases:
        problem = cp.Problem(cp.Minimize(cp.sum_squares(x - z)), [bound])
        assert without_free_epigraphs(problem)[0] is problem
        layer = CvxpyLayer(problem, params, [x])
        assert layer.program.n == problem.get_problem_data(cp.DIFFCP)[0]["A"].shape[1]
        values = [3.0 * rng.standard_normal(4), np.ones(4)][: len(params)]
        (got,) = layer(*values)
        for p, v in zip(params, values, strict=True):
            p.value = v
        problem.solve(solver=cp.CLARABEL, tol_gap_abs=1e-10, tol_gap_rel=1e-10, tol_feas=1e-10)
        np.testing.assert_allclose(got, x.value, atol=FORWARD_TOL)


def test_the_users_problem_is_not_touched():
    """The rewrite is a new problem, made once per problem (CVXPY's cache on it
    serves every layer built from the problem); the user's constraints stay."""
    problem, params, outputs, _ = projection("abs")
    constraints = problem.constraints
    first = CvxpyLayer(problem, params, outputs)
    second = CvxpyLayer(problem, params, outputs)
    assert [c.id for c in problem.constraints] == [c.id for c in constraints]
    assert problem._cache.param_prog is None  # CVXPY never compiled the user's problem
    target, replaced = without_free_epigraphs(problem)
    assert target is without_free_epigraphs(problem)[0] and target is not problem
    assert list(replaced) == [constraints[0].id]
    assert first.program.n == second.program.n


def nonnegative_lasso(declare: str, term: str):
    """min ‖Ax − b‖² + λ·term(x) with x kept nonnegative (``declare``): a
    declared attribute, ``x >= 0`` or ``0 <= x``; ``term`` ‖x‖₁ or Σ|xᵢ|."""
    m, n = 12, 6
    x = cp.Variable(n, nonneg=declare == "attribute")
    A, b, lam = cp.Parameter((m, n)), cp.Parameter(m), cp.Parameter(nonneg=True)
    l1 = cp.norm(x, 1) if term == "norm1" else cp.sum(cp.abs(x))
    bound = {"attribute": [], "x >= 0": [x >= 0], "0 <= x": [0 <= x]}[declare]
    problem = cp.Problem(cp.Minimize(cp.sum_squares(A @ x - b) + lam * l1), bound)
    return problem, [A, b, lam], x, bound


@pytest.mark.parametrize("declare", ["attribute", "x >= 0", "0 <= x"])
@pytest.mark.parametrize("term", ["norm1", "sum_abs"])
def test_absolute_values_of_a_nonnegative_variable(declare, term, rng):
    """|x| is x where the problem keeps x ≥ 0: no epigraph variables (whose
    three active bounds at xᵢ = 0 made K singular), the same solution as CVXPY's,
    gradients against central differences, and for ``x >= 0`` a dual that
    satisfies the optimality conditions (its subgradient at xᵢ = 0 is 1)."""
    problem, params, x, bound = nonnegative_lasso(declare, term)
    outputs = [x, bound[0].dual_variables[0]] if bound else [x]
    layer = CvxpyLayer(problem, params, outputs)
    assert layer.program.n == x.size + 1  # x and the least-squares epigraph only
    A, b = rng.standard_normal((12, 6)), rng.standard_normal(12)
    values = [A, b, np.array(2.0)]
    solution = layer.solve(*values)
    (lin,) = solution._linearizations
    lin.factor()
    got = solution.values[0]
    assert (got < 1e-9).any() and lin.regular  # zeros in x, and K regular all the same
    for p, v in zip(params, values, strict=True):
        p.value = v
    problem.solve(solver=cp.CLARABEL, tol_gap_abs=1e-10, tol_gap_rel=1e-10, tol_feas=1e-10)
    np.testing.assert_allclose(got, x.value, atol=FORWARD_TOL)
    if bound:
        dual = solution.values[1]
        gradient = 2 * A.T @ (A @ got - b)
        np.testing.assert_allclose(dual, gradient + 2.0, atol=1e-9)  # ∇f + λ·1 − μ = 0
        assert dual.min() > -1e-9 and np.abs(dual * got).max() < 1e-9
    weights = [rng.standard_normal(o.shape) for o in solution.values]
    direction = [rng.standard_normal(v.shape) for v in values]
    exact = inner(solution.adjoint(*weights), direction)
    fd = central_difference(layer, values, direction, weights, 1e-6, {"eps": 1e-10})
    assert rel_err(exact, fd) < 1e-5, (exact, fd)


@pytest.mark.parametrize("declare", ["attribute", "x <= 0"])
@pytest.mark.parametrize("term", ["norm1", "sum_abs"])
def test_absolute_values_of_a_nonpositive_variable(declare, term, rng):
    """The mirror image: |x| is −x where the problem keeps x ≤ 0 (before, the
    epigraph stayed, and SCS's answers came with a false "not strictly
    complementary" warning; found by a probe). CVXPY's solution, the dual of
    x ≤ 0 from the optimality conditions (∇f − λ·1 + μ = 0), central differences."""
    m, n = 12, 6
    x = cp.Variable(n, nonpos=declare == "attribute")
    A, b, lam = cp.Parameter((m, n)), cp.Parameter(m), cp.Parameter(nonneg=True)
    l1 = cp.norm(x, 1) if term == "norm1" else cp.sum(cp.abs(x))
    bound = [] if declare == "attribute" else [x <= 0]
    problem = cp.Problem(cp.Minimize(cp.sum_squares(A @ x - b) + lam * l1), bound)
    params = [A, b, lam]
    layer = CvxpyLayer(problem, params, [x, bound[0].dual_variables[0]] if bound else [x])
    assert layer.program.n == x.size + 1  # no epigraph variables
    values = [rng.standard_normal((m, n)), rng.standard_normal(m), np.array(2.0)]
    for solver in ("Clarabel", "SCS"):  # (DerivativeWarning is an error in this suite)
        solution = layer.solve(*values, solver_args={"solve_method": solver})
        got = solution.values[0]
        assert (got > -1e-9).any()  # zeros in x
        for p, v in zip(params, values, strict=True):
            p.value = v
        problem.solve(solver=cp.CLARABEL, tol_gap_abs=1e-10, tol_gap_rel=1e-10, tol_feas=1e-10)
        np.testing.assert_allclose(got, x.value, atol=FORWARD_TOL)
        if bound:
            gradient = 2 * values[0].T @ (values[0] @ got - values[1])
            np.testing.assert_allclose(solution.values[1], 2.0 - gradient, atol=1e-9)
        weights = [rng.standard_normal(o.shape) for o in solution.values]
        direction = [rng.standard_normal(v.shape) for v in values]
        exact = inner(solution.adjoint(*weights), direction)
        fd = central_difference(layer, values, direction, weights, 1e-6, {"eps": 1e-10})
        assert rel_err(exact, fd) < 1e-5, (exact, fd)


def test_absolute_values_are_kept_where_the_variable_may_be_negative():
    """A bound on part of x, a negative bound, |x − 1|: CVXPY's canonicalization."""
    x = cp.Variable(4)
    for extra, l1 in ((x[:2] >= 0, cp.norm(x, 1)), (x >= -1, cp.norm(x, 1)),
                      (x >= 0, cp.norm(x - 1, 1))):
        problem = cp.Problem(cp.Minimize(cp.sum_squares(x - 2) + l1), [extra])
        assert without_free_epigraphs(problem)[0] is problem


def _edge_cases(rng):
    s, X, y, u, v = (cp.Variable(), cp.Variable((2, 3)), cp.Variable(3),
                     cp.Variable(3, nonneg=True), cp.Variable(3))
    r, Z, w, z = (cp.Parameter(3, nonneg=True), cp.Parameter((2, 3)), cp.Parameter(3),
                  cp.Parameter(3))
    scalar, matrix, maxim = cp.abs(s) <= r, cp.abs(X) <= 1, cp.abs(y) <= 1
    norm1, low, box = cp.norm(u, 1) <= 1, v >= 0, cp.abs(v) <= 0.5
    return [
        ("a scalar under a vector bound", cp.Problem(cp.Minimize((s - 2) ** 2), [scalar]), [r],
         [s, scalar.dual_variables[0]], [np.array([0.5, 1.0, 3.0])]),
        ("a matrix", cp.Problem(cp.Minimize(cp.sum_squares(X - Z)), [matrix]), [Z],
         [X, matrix.dual_variables[0]], [2 * rng.standard_normal((2, 3))]),
        ("maximized", cp.Problem(cp.Maximize(w @ y - cp.sum_squares(y)), [maxim]), [w],
         [y, maxim.dual_variables[0]], [5 * rng.standard_normal(3)]),
        ("‖u‖₁ ≤ 1 of a nonnegative u", cp.Problem(cp.Minimize(cp.sum_squares(u - z)), [norm1]),
         [z], [u, norm1.dual_variables[0]], [np.array([0.9, 0.8, -0.3])]),
        ("|v| ≤ ½ beside v ≥ 0", cp.Problem(cp.Minimize(cp.sum_squares(v - z)), [low, box]),
         [z], [v, low.dual_variables[0], box.dual_variables[0]], [np.array([0.9, 0.2, -0.3])]),
    ]


def test_rewrites_with_broadcasting_matrices_maximize_and_both_kinds(rng):
    """Shapes and senses the rewrite must keep, and a constraint simplified
    (|u| → u) and then rewritten (``"same"`` duals): outputs and duals against
    CVXPY's own solve, with fewer variables than CVXPY's program."""
    for name, problem, params, outputs, values in _edge_cases(rng):
        layer = CvxpyLayer(problem, params, outputs)
        assert layer.program.n < problem.get_problem_data(cp.DIFFCP)[0]["A"].shape[1], name
        got = layer.solve(*values).values
        for p, v in zip(params, values, strict=True):
            p.value = v
        problem.solve(solver=cp.CLARABEL, tol_gap_abs=1e-10, tol_gap_rel=1e-10, tol_feas=1e-10)
        for g, o in zip(got, outputs, strict=True):
            np.testing.assert_allclose(g, o.value, atol=FORWARD_TOL, err_msg=name)
