"""Canonicalization: parameter attributes, variable attributes, outputs in any
order, objective values; each checked against CVXPY's own solve or a closed
form, and gradients against central differences."""

from __future__ import annotations

import pathlib
import sys
import warnings

import cvxpy as cp
import numpy as np
import pytest
import scipy.sparse as sp
from helpers import central_difference, inner, rel_err

from conelayers import CvxpyLayer
from conelayers._rewrite import without_free_epigraphs

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


def _gp_exponent_cases():
    x, y, z = (cp.Variable(pos=True) for _ in range(3))
    p, a, b = (cp.Parameter(pos=True) for _ in range(3))
    return [
        ("p·x^p + 1/x", cp.Problem(cp.Minimize(p * x ** p + 1 / x)), [p], [x],
         [np.array(2.0)]),
        ("y^a + (a + b)/y", cp.Problem(cp.Minimize(y ** a + (a + b) / y)), [a, b], [y],
         [np.array(2.0), np.array(3.0)]),
        ("y^a + 1/y + z, z >= a", cp.Problem(cp.Minimize(y ** a + 1 / y + z), [z >= a]), [a],
         [y, z], [np.array(2.0)]),
        ("exponent only: y^a + b/y", cp.Problem(cp.Minimize(y ** a + b / y)), [a, b], [y],
         [np.array(2.0), np.array(3.0)]),
    ]


@pytest.mark.parametrize("case", range(4), ids=[c[0] for c in _gp_exponent_cases()])
def test_gp_parameter_in_an_exponent_and_elsewhere_regression(case, rng):
    """A GP parameter used as an exponent (x**p, which the log-log
    transformation keeps as p) and elsewhere (where it becomes log p): only the
    log copy got the value, the exponent read 0, and x**p + ... was solved as
    1 + ..., "optimal" (x = 2.6e11 for p·x^p + 1/x at p = 2, where x = 0.63;
    found by a probe). Values against CVXPY's gp=True solve, gradients and
    tangents against central differences."""
    _, problem, params, variables, values = _gp_exponent_cases()[case]
    layer = CvxpyLayer(problem, params, variables, gp=True)
    sol = layer.solve(*values)
    for prm, v in zip(params, values, strict=True):
        prm.value = v
    problem.solve(gp=True, solver=cp.CLARABEL, tol_gap_abs=1e-12, tol_gap_rel=1e-12,
                  tol_feas=1e-12)
    for got, var in zip(sol.values, variables, strict=True):
        np.testing.assert_allclose(got, var.value, rtol=1e-6)
    weights = [rng.standard_normal(np.shape(o)) for o in sol.values]
    direction = [rng.standard_normal(np.shape(v)) for v in values]
    fd = central_difference(layer, values, direction, weights, 1e-6, {})
    assert rel_err(inner(sol.adjoint(*weights), direction), fd) < 1e-6
    assert rel_err(inner(sol.derivative(*direction), weights), fd) < 1e-6


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


# ---------------------------------------------------------------------------
# The row formatting we do ourselves (``_cone_program``) against CVXPY's own
# (``get_problem_data(solver=cp.DIFFCP)``, the path taken before).

_BENCH = pathlib.Path(__file__).resolve().parents[1] / "benchmarks"


def _stored_zeros_problem():
    """Sparse constants with stored zeros, in SOC rows (which CVXPY's formatting
    drops) and in linear rows (which it keeps)."""
    M = sp.csc_array((np.array([0.0, 1.0, 2.0, 0.0]), ([0, 1, 2, 0], [0, 1, 2, 1])),
                     shape=(3, 3))
    x, t = cp.Variable(3), cp.Variable()
    p, P = cp.Parameter(3), cp.Parameter((3, 3))
    cons = [cp.SOC(t, M @ (P @ x) + p), M @ x <= p + 1, cp.sum(x) == 1]
    return cp.Problem(cp.Minimize(t + p @ x), cons), [p, P]


def _structured_problems():
    """Problems with every parameter/variable storage the embedding knows."""
    out = {}
    S, D = cp.Parameter((3, 3), symmetric=True), cp.Parameter((3, 3), diag=True)
    Z = cp.Parameter((4, 3), sparsity=([0, 1, 3, 2], [0, 1, 2, 0]))
    X, x = cp.Variable((3, 3), PSD=True), cp.Variable(3)
    g = cp.Parameter(3)
    out["structured"] = cp.Problem(
        cp.Minimize(cp.trace(S @ X) + cp.sum_squares(D @ x - g) + cp.sum_squares(Z @ x)),
        [cp.trace(X) == 1, X[0, 0] >= x[0]])
    y = cp.Variable(3, nonneg=True)
    out["maximize_exp"] = cp.Problem(
        cp.Maximize(cp.sum(cp.entr(y)) + g @ y), [cp.sum(y) == 1, y <= 0.9])
    out["stored_zeros"] = _stored_zeros_problem()[0]
    # Every cone kind the row map knows, several per constraint: k SOCs of one
    # constraint (column norms), a scalar-x SOC, vector exponential cones, a PSD
    # constraint on a parameter-dependent matrix, equalities and inequalities.
    W, v, u = cp.Variable((3, 4)), cp.Variable(4), cp.Variable(4, pos=True)
    G, h = cp.Parameter((3, 3)), cp.Parameter(4)
    Y = cp.Variable((3, 3), symmetric=True)
    out["every_cone"] = cp.Problem(
        cp.Minimize(cp.sum(v) - cp.sum(cp.log(u)) + cp.trace(G @ Y) + h @ v),
        [cp.norm(W, 2, axis=0) <= v, cp.SOC(v[0], W[0, 0]), cp.ExpCone(W[1], v, u),
         Y + G + G.T >> 0, cp.sum(W, axis=0) == h, u <= 2, cp.trace(Y) == 1,
         cp.abs(W) <= 3])
    return out


def _zoo():
    """(name, factory) → (problem, parameters, outputs, gp) with fresh objects per call."""
    sys.path.insert(0, str(_BENCH))
    from bench_problems import PROBLEMS
    from problems import CASES

    def case(f):
        def build():
            c = f()
            return c.problem, c.parameters, c.variables, c.gp
        return build

    def bench(f):
        def build():
            b = f()
            return b.problem, b.parameters, b.variables, False
        return build

    def structured(name):
        def build():
            prob = _structured_problems()[name]
            return prob, prob.parameters(), prob.variables(), False
        return build

    zoo = {f"zoo-{k}": case(f) for k, f in CASES.items()}
    zoo |= {f"bench-{k}": bench(f) for k, f in PROBLEMS.items() if k != "sparse_qp"}
    zoo |= {k: structured(k) for k in _structured_problems()}
    return zoo


ZOO = _zoo()


def _with_all_duals(problem, outputs, gp):
    """The outputs, plus every variable and every dual variable (not for GP)."""
    extra = list(problem.variables())
    if not gp:
        extra += [dv for con in problem.constraints for dv in con.dual_variables]
    seen = {v.id for v in outputs}
    return list(outputs) + [v for v in extra if v.id not in seen and not seen.add(v.id)]


def _assert_same_program(new, old):
    assert (new.n, new.m, new.layout) == (old.n, old.m, old.layout)
    assert (new.objective_sign, new.gp) == (old.objective_sign, old.gp)
    np.testing.assert_array_equal(new.A_indices, old.A_indices)
    np.testing.assert_array_equal(new.A_indptr, old.A_indptr)
    assert new.C.shape == old.C.shape
    new_C, old_C = sp.csr_array(new.C), sp.csr_array(old.C)
    new_C.sort_indices()
    old_C.sort_indices()
    np.testing.assert_array_equal(new_C.indptr, old_C.indptr)
    np.testing.assert_array_equal(new_C.indices, old_C.indices)
    # The same entries summed in the same order: equal to rounding (in fact exactly).
    scale = 1.0 + np.abs(old_C.data).max(initial=0.0)
    assert np.abs(new_C.data - old_C.data).max(initial=0.0) <= 1e-15 * scale
    assert len(new.parameters) == len(old.parameters)
    for a, b in zip(new.parameters, old.parameters, strict=True):
        assert (a.name, a.shape, a.offset, a.checks, a.log) == (b.name, b.shape, b.offset,
                                                                 b.checks, b.log)
        assert (a.mask is None) == (b.mask is None)
        if a.mask is not None:
            np.testing.assert_array_equal(a.mask, b.mask)
    assert len(new.outputs) == len(old.outputs)
    for a, b in zip(new.outputs, old.outputs, strict=True):
        assert (a.name, a.shape, a.exp, a.dual) == (b.name, b.shape, b.exp, b.dual)
        assert a.R.shape == b.R.shape
        assert abs(sp.csr_array(a.R) - sp.csr_array(b.R)).max() == 0


@pytest.mark.parametrize("name", list(ZOO))
def test_rows_formatted_ourselves_give_the_program_cvxpys_formatting_gives(name, monkeypatch):
    from conelayers import _canonicalize
    from conelayers.internal import canonicalize

    measured = []
    row_map = _canonicalize._row_map

    def spy(prob, solver):
        result = row_map(prob, solver)
        measured.append(result is not None)
        return result

    monkeypatch.setattr(_canonicalize, "_row_map", spy)
    problem, params, outputs, gp = ZOO[name]()
    outputs = _with_all_duals(problem, outputs, gp)
    new = canonicalize(problem, params, outputs, gp=gp)
    assert measured == [True]  # the fast path was taken
    again = canonicalize(problem, params, outputs, gp=gp)  # from the problem's cache
    assert len(measured) == (2 if gp else 1)  # (GP compiles a fresh problem each time)
    _assert_same_program(again, new)

    # (the problem canonicalized: the user's, or its rewrite, see _rewrite)
    target = problem if gp else without_free_epigraphs(problem)[0]
    target._cache.invalidate()  # the old path must compile afresh, not read our cache
    monkeypatch.setattr(_canonicalize, "_RESTRUCTURE_ROWS", False)
    old = canonicalize(problem, params, outputs, gp=gp)
    _assert_same_program(new, old)
    if not gp:  # its cache (the formatted program) read back by the fast path
        monkeypatch.setattr(_canonicalize, "_RESTRUCTURE_ROWS", True)
        assert target._cache.param_prog.formatted
        _assert_same_program(canonicalize(problem, params, outputs, gp=gp), new)
        assert len(measured) == 1


def _unformatted(problem):
    """CVXPY's DIFFCP chain and its ParamConeProg before the solver's formatting."""
    chain = problem._construct_chain(solver=cp.DIFFCP, enforce_dpp=True)
    prob = problem
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Reading from a sparse CVXPY expression")
        for reduction in chain.reductions[:-1]:
            prob, _ = reduction.apply(prob)
    return chain, prob


def _assert_rows_moved_as_cvxpy_formats(chain, prob):
    """Our row map and move give CVXPY's format_constraints tensor, stored zeros
    eliminated (as its DIFFCP.apply leaves it), entry for entry."""
    from conelayers import _canonicalize

    mapped = _canonicalize._row_map(prob, chain.reductions[-1])
    assert mapped is not None
    ours = _canonicalize._move_rows(prob.A, *mapped)
    theirs = sp.csr_array(chain.reductions[-1].format_constraints(prob, [0, 1, 2]).A)
    theirs.eliminate_zeros()
    ours.sort_indices()
    theirs.sort_indices()
    np.testing.assert_array_equal(ours.indptr, theirs.indptr)
    np.testing.assert_array_equal(ours.indices, theirs.indices)
    np.testing.assert_array_equal(ours.data, theirs.data)


@pytest.mark.parametrize("name", list(ZOO))
def test_row_map_moves_rows_as_cvxpys_formatting_does(name):

    problem, _, _, gp = ZOO[name]()
    if gp:
        problem = cp.reductions.Dgp2Dcp(problem).apply(problem)[0]
    _assert_rows_moved_as_cvxpy_formats(*_unformatted(problem))


def test_stored_zeros_are_dropped_as_on_cvxpys_path():
    """CVXPY's formatting keeps stored zeros of linear rows, but evaluating the data
    (``DIFFCP.apply``) then eliminates every stored zero from the tensor; A's
    pattern is what remains, and ours is the same (checked by the zoo test above)."""

    problem, _ = _stored_zeros_problem()
    chain, prob = _unformatted(problem)
    assert np.count_nonzero(prob.A.data == 0) > 0  # the case this test is about
    _assert_rows_moved_as_cvxpy_formats(chain, prob)


def test_a_formatting_that_is_not_a_permutation_takes_cvxpys_path(monkeypatch, rng):
    from conelayers import _canonicalize

    monkeypatch.setattr(_canonicalize, "_row_map", lambda prob, solver: None)
    problem, params = _stored_zeros_problem()
    cons = problem.constraints
    layer = CvxpyLayer(problem, params, [problem.variables()[0], cons[1].dual_variables[0]])
    values = [rng.uniform(0.1, 0.5, 3), np.eye(3) + 0.1 * rng.standard_normal((3, 3))]
    ours = layer(*values)
    ref, _ = cvxpy_values(problem, params, values, [problem.variables()[0],
                                                    cons[1].dual_variables[0]])
    for o, r in zip(ours, ref, strict=True):
        np.testing.assert_allclose(o, r, atol=2e-5)


@pytest.mark.parametrize("name", ["stored_zeros", "every_cone", "bench-dense_qp"])
def test_cvxpys_own_compilation_after_ours_is_unchanged(name, rng):
    """We leave the formatted program in the problem's cache, as get_problem_data
    does; CVXPY's later get_problem_data evaluates it as it would its own."""
    from conelayers.internal import canonicalize

    def data(problem):
        for p in problem.parameters():
            p.value = rng.standard_normal(p.shape)
        out, _, _ = problem.get_problem_data(cp.DIFFCP)
        return out

    problem, params, outputs, _ = ZOO[name]()
    canonicalize(problem, params, outputs)
    # (the problem canonicalized: the user's, or its rewrite, which leaves the
    # user's untouched; see _rewrite)
    assert without_free_epigraphs(problem)[0]._cache.param_prog.formatted
    state = rng.bit_generator.state
    ours = data(problem)
    fresh, _, _, _ = ZOO[name]()
    rng.bit_generator.state = state
    theirs = data(fresh)
    for key in ("A", "b", "c"):
        a, b = ours[key], theirs[key]
        a, b = (a.toarray(), b.toarray()) if sp.issparse(a) else (a, b)
        np.testing.assert_array_equal(a, b)
    assert repr(ours["dims"]) == repr(theirs["dims"])


def test_cvxpys_own_derivative_after_a_layer_is_unchanged(rng):
    """``solve(requires_grad=True)`` and ``backward`` read the cached program, and
    need it formatted: here rows move (several SOCs in one constraint) and flip
    sign (a parametrized equality), so an unformatted one gives wrong gradients."""
    from conelayers.internal import canonicalize

    def make():
        X, t = cp.Variable((2, 3)), cp.Variable(3)
        h, G = cp.Parameter(3), cp.Parameter((2, 3))
        cons = [cp.norm(X - G, 2, axis=0) <= t, cp.sum(X, axis=0) == h]
        return cp.Problem(cp.Minimize(cp.sum(t) + cp.sum_squares(X)), cons), [h, G]

    def gradients(problem, params, values):
        for p, v in zip(params, values, strict=True):
            p.value = v
        problem.solve(requires_grad=True, eps=1e-10)
        problem.backward()
        return [p.gradient for p in params]

    values = [rng.standard_normal(3), rng.standard_normal((2, 3))]
    problem, params = make()
    canonicalize(problem, params, problem.variables())
    assert problem._cache.param_prog.formatted
    ours = gradients(problem, params, values)
    for a, b in zip(ours, gradients(*make(), values), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
