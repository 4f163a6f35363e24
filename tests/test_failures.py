"""Failure is data: infeasible and unbounded items are reported per item and
never poison the other items of the batch."""

from __future__ import annotations

import pathlib
import warnings

import cvxpy as cp
import numpy as np
import pytest

from conelayers import CvxpyLayer, InaccurateSolutionWarning, ParameterError, SolverError, Status


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


def test_nan_cotangents_of_failed_items_regression_read_as_zero(rng):
    """A loss masked after it was formed (``where(ok, loss, 0)``) sends a failed
    item's NaN outputs the cotangent 0·NaN = NaN: its row is read as zero (the
    item contributes nothing), where it raised for the whole batch (found by a
    probe of the TensorFlow layer, 2026-12-04). A NaN at a solved item is still
    refused."""
    prob, params, variables = box_problem()
    layer = CvxpyLayer(prob, params, variables)
    c, lo, s = rng.standard_normal((3, 3)), np.zeros((3, 3)), np.array([2.0, -1.0, 2.5])
    sol = layer.solve(c, lo, s, throw=False)
    assert list(sol.ok) == [True, False, True]
    w = rng.standard_normal((3, 3))
    poisoned = w.copy()
    poisoned[1] = np.nan
    before = poisoned.copy()
    expected = sol.adjoint(np.where(sol.ok[:, None], w, 0.0))
    for got, want in zip(sol.adjoint(poisoned), expected, strict=True):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(poisoned, before)  # the caller's array untouched
    poisoned[0, 0] = np.nan
    with pytest.raises(ParameterError, match=r"cotangent of output 0 .* contains NaN"):
        sol.adjoint(poisoned)
    # Unbatched: one failed item, its cotangent without a batch axis.
    alone = layer.solve(c[1], lo[1], s[1], throw=False)
    assert not alone.ok[0]
    assert not alone.adjoint(np.full(3, np.nan))[0].any()


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


def test_failure_message_regression_says_every_items_status():
    """Past the fifth failed item the message listed bare indices ("also failed:
    items 6, 7"), hiding a failure of another kind among them, and repeated the
    explanation of a status for every item shown."""
    x = cp.Variable(3)
    c, a, lo, s = cp.Parameter(3), cp.Parameter(3), cp.Parameter(3), cp.Parameter()
    layer = CvxpyLayer(cp.Problem(cp.Minimize(c @ x), [x >= lo, a @ x <= s]), [c, a, lo, s], [x])
    B = 8  # item 0 solvable, 1-6 infeasible (s < lo₁), 7 unbounded (c₂ < 0, x₂ free above)
    cs = np.tile([1.0, 1.0, 1.0], (B, 1))
    cs[7, 1] = -1.0
    ss = np.array([1.0] + [-1.0] * 6 + [1.0])
    with pytest.raises(SolverError) as info:
        layer(cs, np.array([1.0, 0.0, 0.0]), np.zeros(3), ss)
    message = str(info.value)
    assert info.value.failed == tuple(range(1, 8))
    assert all(f"  item {i}: infeasible\n" in message for i in range(1, 6)), message
    assert "(also failed: infeasible: item 6; unbounded: item 7)" in message, message
    for status in (Status.infeasible, Status.unbounded):
        assert message.count(f"{status.name}: {status.value}") == 1, message


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


# Clarabel's own default tolerance. (The adapter solves small programs to 1e-11,
# from which refinement of the item below does not stall.)
CLARABEL_DEFAULT = {"eps": 1e-8}


def _stalling_nnls_item():
    """An NNLS + l1 item (A 50×20) on which refinement from Clarabel's answer at
    its default tolerance stalls at a relative residual of 1e-6 (its active set
    is wrong and no pivot finds the right one; found in the benchmark suite:
    item 5 of its B = 1,024 batch, seed 0). Canonicalized as CVXPY does
    (``cvxpy_canonicalization``): conelayers._rewrite would write the l1 term as
    ``cp.sum(x)`` under ``x >= 0``, a program without the degeneracy."""
    m, n = 50, 20
    x = cp.Variable(n)
    A, b = cp.Parameter((m, n)), cp.Parameter(m)
    prob = cp.Problem(cp.Minimize(cp.sum_squares(A @ x - b) + 0.1 * cp.norm(x, 1)), [x >= 0])
    rng = np.random.default_rng(0)
    A_values, b_values = rng.standard_normal((1024, m, n)), rng.standard_normal((1024, m))
    return prob, [A, b], [x], [A_values[5], b_values[5]]


@pytest.fixture
def cvxpy_canonicalization(monkeypatch):
    """Layers built meanwhile canonicalize the user's problem as CVXPY does,
    auxiliary variables and all (conelayers._rewrite switched off)."""
    import conelayers._canonicalize as canonicalization

    monkeypatch.setattr(canonicalization, "without_free_epigraphs", lambda p: (p, {}))


@pytest.mark.usefixtures("cvxpy_canonicalization")
def test_stalled_refinement_is_re_solved_tightly_to_the_exact_solution():
    import conelayers._engine as engine
    import conelayers._refine as rf
    from conelayers._validate import check_values

    prob, params, variables, values = _stalling_nnls_item()
    layer = CvxpyLayer(prob, params, variables)
    # The premise: from the default answer refinement alone stalls.
    solver, prepared = layer._engine.solver("Clarabel")
    program = layer.program
    A_vals, b, c, _ = program.apply(check_values(program.parameters, values).theta)
    raw = solver.solve(prepared, program.matrix(A_vals[0]), b[0], c[0],
                       solver.translate_options(CLARABEL_DEFAULT))
    stalled = rf.refine(layer._engine.structure, program.matrix(A_vals[0]), b[0], c[0],
                        raw.x, raw.y, raw.s)
    assert stalled.relative_residual > engine._CERTIFIED
    # The layer re-solves it and lands on the solution: the optimality conditions of
    # min ‖Ax − b‖² + 0.1‖x‖₁, x ≥ 0 hold to rounding (g = 2Aᵀ(Ax − b) + 0.1 vanishes
    # where x > 0 and is ≥ 0 where x = 0), and SCS at 1e-10 agrees. (CVXPY's own
    # Clarabel and ECOS solves of this item stop `optimal_inaccurate`, with g
    # 3e-3 and 4e-5 off on the support.)
    sol = layer.solve(*values, solver_args=CLARABEL_DEFAULT)
    assert sol.status == (Status.optimal,) and sol.residual[0] <= 1e-13
    assert sol.iterations[0] > solver.solve(prepared, program.matrix(A_vals[0]), b[0], c[0],
                                            solver.translate_options(CLARABEL_DEFAULT)
                                            ).iterations  # it was solved twice
    x, (A, b) = sol.values[0], values
    g = 2 * A.T @ (A @ x - b) + 0.1
    support = x > 1e-9
    assert np.abs(g[support]).max() <= 1e-10 and g[~support].min() >= -1e-10
    assert np.abs(x[~support]).max() <= 1e-12
    for p, v in zip(params, values, strict=True):
        p.value = v
    prob.solve(solver="SCS", eps_abs=1e-10, eps_rel=1e-10, max_iters=200_000)
    np.testing.assert_allclose(x, variables[0].value, atol=1e-8)


@pytest.mark.usefixtures("cvxpy_canonicalization")
def test_stalled_refinement_is_re_solved_at_the_given_tolerance_too(monkeypatch):
    """Where refinement stalls from the solve at refinement's own tolerance
    (Clarabel at 1e-11 on small programs) and from the tight one (1e-12), the
    item is solved at the tolerance given (Clarabel's 1e-8), from whose answer
    it refines: examples/mpc.py's controller at a learned, unstable model
    (found while training it), canonicalized as CVXPY does (the bound's
    epigraph variable kept: conelayers._rewrite switched off), where both
    tight solves stop AlmostSolved 3.7e-6 from the solution."""
    import sys

    import conelayers._engine as engine
    import conelayers._refine as rf
    import conelayers._solvers.clarabel as clarabel_adapter
    from conelayers._validate import check_values

    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "examples"))
    from mpc import controller

    prob, params, variables = controller(10)
    # Solved as the cone program (as a QP, conelayers._epigraph, Clarabel's
    # answer refines to 1.5e-12 at once, and no re-solve is needed).
    monkeypatch.setattr(clarabel_adapter, "_solves_as_qp", lambda *args: False)
    layer = CvxpyLayer(prob, params, variables)
    model = [0.6550813450087299, -0.07457955110173947, -0.23048930134047704,
             1.5178889852078372, 0.11228366532207239, 0.44933023319369975]
    values = [np.array([-1.5460225545916362, -3.1903629761566137]),
              np.reshape(model[:4], (2, 2)), np.reshape(model[4:], (2, 1))]
    solver, prepared = layer._engine.solver("Clarabel")
    program = layer.program
    A_vals, b, c, _ = program.apply(check_values(program.parameters, values).theta)
    A = program.matrix(A_vals[0])
    refining = solver.for_refinement(solver.translate_options({}), program.nnz)
    residuals = []
    for options in (refining, solver.tightened(refining), solver.translate_options({})):
        raw = solver.solve(prepared, A, b[0], c[0], options)
        residuals.append(rf.refine(layer._engine.structure, A, b[0], c[0], raw.x, raw.y,
                                   raw.s).relative_residual)
    # The premise: both tight answers stall, the given tolerance's refines.
    assert min(residuals[:2]) > engine._CERTIFIED and residuals[2] < 1e-10
    sol = layer.solve(*values)
    assert sol.status == (Status.optimal,) and sol.residual[0] < 1e-10
    for p, v in zip(params, values, strict=True):
        p.value = v
    # (CVXPY hands Clarabel the quadratic objective as such, no cone: accurate)
    prob.solve(solver="CLARABEL", tol_gap_abs=1e-12, tol_gap_rel=1e-12, tol_feas=1e-12)
    np.testing.assert_allclose(sol.values[0], variables[0].value, atol=1e-8)


@pytest.mark.usefixtures("cvxpy_canonicalization")
def test_refinement_that_stays_stalled_is_reported_inaccurate(monkeypatch):
    from conelayers import InaccurateSolutionWarning
    from conelayers._solvers.clarabel import ClarabelSolver

    prob, params, variables, values = _stalling_nnls_item()
    layer = CvxpyLayer(prob, params, variables)
    # The tight re-solve is the first solve again: nothing rescues the item.
    monkeypatch.setattr(ClarabelSolver, "tightened", classmethod(lambda cls, native: native))
    with pytest.warns(InaccurateSolutionWarning, match="0"):
        sol = layer.solve(*values, solver_args=CLARABEL_DEFAULT)
    assert sol.status == (Status.optimal_inaccurate,)
    assert sol.ok[0] and 1e-9 < sol.residual[0] < 1e-3  # values kept, honestly labelled


def test_badly_scaled_rows_regression_are_not_certified_by_their_block():
    """A QP whose rows of G x <= h are scaled by 10^U(-5, 5) (the same feasible
    set and solution) and its objective by 1e-5: SCS's answer refined to a
    relative residual of 6e-10, under the 1e-9 line, and was `optimal` with x
    1.49 off (|x*| = 1.09) and a constraint violated by 3.5, as the residual
    judged each block by its largest row (found by a probe). Each row is judged
    by its own size too now where refinement stopped short of convergence."""
    rng = np.random.default_rng(5)
    n, m = 6, 10
    G = rng.standard_normal((m, n))
    P = rng.standard_normal((n, n))
    P = P @ P.T + 0.5 * np.eye(n)
    h = G @ rng.standard_normal(n) + 0.1 * rng.random(m) * (rng.random(m) < 0.6)
    q = 3 * rng.standard_normal(n)
    rows = 10.0 ** rng.uniform(-5, 5, m)
    x, qp, hp = cp.Variable(n), cp.Parameter(n), cp.Parameter(m)
    objective = 0.5 * cp.quad_form(x, P) + qp @ x
    truth = cp.Problem(cp.Minimize(objective), [G @ x <= hp])
    qp.value, hp.value = q, h
    truth.solve(solver=cp.CLARABEL, tol_gap_abs=1e-12, tol_gap_rel=1e-12, tol_feas=1e-12)
    scaled = cp.Problem(cp.Minimize(1e-5 * objective),
                        [(rows[:, None] * G) @ x <= cp.multiply(rows, hp)])
    layer = CvxpyLayer(scaled, [qp, hp], [x], solver="SCS")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sol = layer.solve(q, h)
    error = np.abs(sol.values[0] - x.value).max()
    assert sol.status[0] is Status.optimal_inaccurate or error < 1e-6, (sol.status, error)
    assert sol.status[0] is Status.optimal or any(
        issubclass(w.category, InaccurateSolutionWarning) for w in caught)
    # Unscaled, the same layer's SCS answer is exact and optimal.
    plain = CvxpyLayer(truth, [qp, hp], [x], solver="SCS").solve(q, h)
    assert plain.status[0] is Status.optimal
    np.testing.assert_allclose(plain.values[0], x.value, atol=1e-7)


def test_false_certificates_regression_are_not_reported_as_verdicts():
    """Clarabel gave certificates that do not hold for the data (found by a
    probe, 2026-12-04), and the layer passed them on as verdicts: a strongly
    convex QP reported unbounded, an LP over a bounded box unbounded. A verdict
    whose certificate fails is solved again at the tight tolerance, and is a
    numerical error if that fails too, never infeasibility or unboundedness."""
    x, c, u = cp.Variable(3), cp.Parameter(3), cp.Parameter(3)
    qp = CvxpyLayer(cp.Problem(cp.Minimize(c @ x + 0.5 * cp.sum_squares(x)), [x <= u]),
                    [c, u], [x])
    sol = qp.solve(np.array([1e-6, -1e5, -2.0]), np.array([1.0, 5e4, 3e-6]), throw=False)
    assert sol.status[0] not in (Status.unbounded, Status.unbounded_inaccurate)
    # Solved as a QP (conelayers._epigraph), the item is optimal (solved as the
    # cone program, both solves gave false certificates: a numerical error).
    # x = min(-c, u) to 1e-8 of its norm: its epigraph t = ‖x‖² = 2.5e9 holds
    # the tail to about 1e-9 of the head, and refinement certifies no finer
    # (measured: 2.1e-9 of ‖x‖, the entries of 1e-6 are 1e-4 off).
    assert sol.status[0] is Status.optimal
    want = np.array([-1e-6, 5e4, 3e-6])
    assert np.abs(sol.values[0] - want).max() <= 1e-8 * np.abs(want).max()
    lo, hi, total = cp.Parameter(3), cp.Parameter(3), cp.Parameter()
    lp = CvxpyLayer(cp.Problem(cp.Minimize(c @ x), [x >= lo, x <= hi, cp.sum(x) == total]),
                    [c, lo, hi, total], [x])
    sol = lp.solve(np.array([1e-6, 2e-6, 1e6]), np.array([0.0, 0.0, 1e-6]),
                   np.array([1e6, 1e-6, 1e6]), np.array(5e5), throw=False)
    assert sol.status[0] is Status.optimal
    np.testing.assert_allclose(sol.values[0], [5e5 - 1e-6, 0.0, 1e-6], rtol=0, atol=2e-6)
