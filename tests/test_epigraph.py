"""Squared-norm epigraphs solved as quadratic terms (conelayers._epigraph):
which blocks are found, that the QP's answer maps back to the cone program's
exactly (its KKT conditions; closed forms; CVXPY's own solve; finite
differences), and that items it does not serve are solved as cone programs."""

from __future__ import annotations

import clarabel
import cvxpy as cp
import numpy as np
import pytest

from conelayers import CvxpyLayer, Status
from conelayers._cones import SOC
from conelayers._epigraph import lifting
from conelayers._solvers.clarabel import _Form
from conelayers._validate import check_values


def _lifted(layer):
    program = layer.program
    return lifting(program.layout, program.n, program.A_indices, program.A_indptr)


def _items(layer, values):
    """The batch's cone programs: (A, b, c) per item."""
    program = layer.program
    A_vals, b, c, _ = program.apply(check_values(program.parameters, values).theta)
    return [(program.matrix(A_vals[i]), b[i], c[i]) for i in range(b.shape[0])]


def _projection(n=8):
    x, z = cp.Variable(n), cp.Parameter(n)
    return cp.Problem(cp.Minimize(cp.sum_squares(x - z)), [cp.sum(x) == 1, x >= 0]), [z], [x]


def test_the_epigraphs_of_squared_terms_are_found_and_nothing_else():
    x, t, z = cp.Variable(4), cp.Variable(), cp.Parameter(4)
    lam = cp.Parameter(nonneg=True)
    found = {
        "sum_squares": cp.Minimize(cp.sum_squares(x - z)),
        "weighted": cp.Minimize(lam * cp.sum_squares(x) + 0.5 * cp.sum_squares(x - z)),
        "quad_over_lin": cp.Minimize(cp.quad_over_lin(x - z, 2.0)),
        "quad_form": cp.Minimize(cp.quad_form(x, 2 * np.eye(4)) + z @ x),
    }
    counts = {"sum_squares": 1, "weighted": 2, "quad_over_lin": 1, "quad_form": 1}
    for name, objective in found.items():
        prob = cp.Problem(objective, [cp.sum(x) == 1])
        lifted = _lifted(CvxpyLayer(prob, prob.parameters(), [x]))
        assert lifted is not None and lifted.heads.size == counts[name], name
    # Second-order cones that are not an objective's squared term: a norm bound,
    # a bound on a squared term (its t has another row), a norm in the objective.
    others = [
        cp.Problem(cp.Minimize(z @ x), [cp.norm(x) <= 1]),
        cp.Problem(cp.Minimize(z @ x), [cp.sum_squares(x) <= 1]),
        cp.Problem(cp.Minimize(cp.norm(x - z)), [cp.sum(x) == 1]),
        cp.Problem(cp.Minimize(cp.sum_squares(x - z) + t), [t >= cp.sum_squares(x)]),
    ]
    for prob in others[:3]:
        assert _lifted(CvxpyLayer(prob, prob.parameters(), [x])) is None
    # (the last: the objective's term is found, t's own bound is not)
    lifted = _lifted(CvxpyLayer(others[3], others[3].parameters(), [x]))
    assert lifted is not None and lifted.heads.size == 1


def test_the_qp_answer_satisfies_the_cone_programs_kkt_conditions(rng):
    """Per item, the mapped answer is primal and dual feasible, in K and K*,
    complementary, with zero gap, to the solver's accuracy; and it is the cone
    program's own solve's answer."""
    n, m = 6, 4
    x = cp.Variable(n)
    A, b, G, lam = cp.Parameter((m, n)), cp.Parameter(m), cp.Parameter((3, n)), cp.Parameter(
        nonneg=True)
    prob = cp.Problem(cp.Minimize(cp.sum_squares(A @ x - b) + lam * cp.sum_squares(x)),
                      [G @ x <= 1, cp.norm(x, 1) <= 3])
    layer = CvxpyLayer(prob, [A, b, G, lam], [x])
    B = 5
    values = [rng.standard_normal((B, m, n)), 3 * rng.standard_normal((B, m)),
              rng.standard_normal((B, 3, n)), np.array([0.0, 0.1, 1.0, 2.0, 0.5])]
    adapter, prepared = layer._engine.solver("Clarabel")
    assert prepared.qp is not None
    options = adapter.translate_options({"eps": 1e-10})
    layout = layer.program.layout
    for A_i, b_i, c_i in _items(layer, values):
        assert prepared.qp.lifting.applies(A_i, b_i, c_i)
        raw = prepared.qp.fresh(clarabel, A_i, b_i, c_i, prepared.faer, options)
        assert raw.status.ok
        scale = 1 + max(np.abs(b_i).max(), np.abs(c_i).max(), np.abs(raw.x).max())
        assert np.abs(A_i @ raw.x + raw.s - b_i).max() <= 1e-8 * scale
        assert np.abs(A_i.T @ raw.y + c_i).max() <= 1e-8 * scale
        assert abs(c_i @ raw.x + b_i @ raw.y) <= 1e-8 * scale
        for offset, cone in layout.of_type(SOC):  # both on their cones, complementary
            s, y = raw.s[offset : offset + cone.dim], raw.y[offset : offset + cone.dim]
            assert s[0] >= np.linalg.norm(s[1:]) - 1e-8 * scale
            assert y[0] >= np.linalg.norm(y[1:]) - 1e-8 * scale
            assert abs(s @ y) <= 1e-8 * scale
        # (x itself may differ: at λ = 0 the weighted term's t is any t ≥ ‖x‖²)
        cone_form = prepared.cone.fresh(clarabel, A_i, b_i, c_i, prepared.faer, options)
        assert abs(c_i @ raw.x - c_i @ cone_form.x) <= 1e-7 * scale


def test_projections_match_their_closed_forms_with_duals():
    """Sparsemax (the simplex) and the PSD cone's projection (eigenvalues
    clipped): values and the simplex's multipliers against their closed forms."""
    rng = np.random.default_rng(0)
    n = 8
    prob, params, variables = _projection(n)
    equality, bound = prob.constraints
    layer = CvxpyLayer(prob, params, [*variables, equality.dual_variables[0],
                                      bound.dual_variables[0]])
    z = rng.standard_normal((4, n))
    z[3] = np.full(n, 1.0 / n)  # already in the simplex: the squared term is 0 there
    x, nu, mu = layer(z)
    for i in range(4):  # x = max(z - τ, 0) with Σx = 1
        u = np.sort(z[i])[::-1]
        k = np.flatnonzero(u - (np.cumsum(u) - 1) / np.arange(1, n + 1) > 0)[-1]
        tau = (np.cumsum(u)[k] - 1) / (k + 1)
        np.testing.assert_allclose(x[i], np.maximum(z[i] - tau, 0), atol=1e-12)
        # stationarity of ‖x − z‖²: 2(x − z) + ν − μ = 0, μ ⟂ x
        np.testing.assert_allclose(2 * (x[i] - z[i]) + nu[i] - mu[i], 0, atol=1e-10)
        assert np.all(mu[i] >= -1e-12) and abs(mu[i] @ x[i]) <= 1e-12
    X, M = cp.Variable((3, 3), symmetric=True), cp.Parameter((3, 3), symmetric=True)
    psd = cp.Problem(cp.Minimize(cp.sum_squares(X - M)), [X >> 0])
    psd_layer = CvxpyLayer(psd, [M], [X])
    assert psd_layer._engine.solver("Clarabel")[1].qp is not None
    Ms = rng.standard_normal((3, 3, 3))
    Ms = (Ms + Ms.transpose(0, 2, 1)) / 2
    (Xs,) = psd_layer(Ms)
    for Mi, Xi in zip(Ms, Xs, strict=True):
        w, V = np.linalg.eigh(Mi)
        np.testing.assert_allclose(Xi, (V * np.maximum(w, 0)) @ V.T, atol=1e-10)


def test_gradients_through_lifted_terms_match_central_differences():
    """The derivative (at the cone program's point, which the QP's answer maps
    to) in every parameter, including the weight of a term, against central
    differences of re-solves."""
    rng = np.random.default_rng(1)
    n, m = 5, 7
    x = cp.Variable(n)
    A, b = cp.Parameter((m, n)), cp.Parameter(m)
    lam = cp.Parameter(nonneg=True)
    prob = cp.Problem(cp.Minimize(cp.quad_over_lin(A @ x - b, 2.0) + lam * cp.sum_squares(x)),
                      [x >= -0.2, cp.sum(x) <= 1])
    layer = CvxpyLayer(prob, [A, b, lam], [x])
    assert _lifted(layer).heads.size == 2
    values = [rng.standard_normal((m, n)), rng.standard_normal(m), np.array(0.3)]
    weights = rng.standard_normal(n)
    sol = layer.solve(*values)
    grads = sol.adjoint(weights)
    eps = 1e-6
    for k, v in enumerate(values):
        direction = rng.standard_normal(np.shape(v))
        plus = [u + eps * direction if j == k else u for j, u in enumerate(values)]
        minus = [u - eps * direction if j == k else u for j, u in enumerate(values)]
        fd = (layer(*plus)[0] - layer(*minus)[0]) @ weights / (2 * eps)
        exact = float(np.sum(grads[k] * direction))
        assert abs(fd - exact) <= 1e-6 * max(1.0, abs(exact)), (k, fd, exact)


def test_items_the_qp_does_not_serve_are_solved_as_cone_programs(monkeypatch):
    """An infeasible item: the QP's solve fails and the cone program's own
    verdict and certificate stand, its batch's other items optimal. An item
    whose values do not make its block an epigraph (here: the head's entries
    changed) is solved as the cone program."""
    x, lo, hi = cp.Variable(3), cp.Parameter(3), cp.Parameter(3)
    z = cp.Parameter(3)
    prob = cp.Problem(cp.Minimize(cp.sum_squares(x - z)), [x >= lo, x <= hi])
    layer = CvxpyLayer(prob, [z, lo, hi], [x])
    zs = np.array([[0.5, 2.0, -1.0], [0.0, 0.0, 0.0], [3.0, -3.0, 0.2]])
    los, his = np.zeros((3, 3)), np.ones((3, 3))
    los[1, 0], his[1, 0] = 1.0, 0.0  # lo > hi: infeasible
    sol = layer.solve(zs, los, his, throw=False)
    assert sol.status == (Status.optimal, Status.infeasible, Status.optimal)
    np.testing.assert_allclose(sol.values[0][[0, 2]], np.clip(zs[[0, 2]], 0, 1), atol=1e-12)
    adapter, prepared = layer._engine.solver("Clarabel")
    A, b, c = _items(layer, [zs, los, his])[0]
    head = prepared.qp.lifting.entries[0, 1]
    changed = A.copy()
    changed.data[head] *= 2.0  # (β + a t, β − 2a t, ...): not an epigraph
    assert not prepared.qp.lifting.applies(changed, b, c)
    forms = []
    fresh = _Form.fresh
    monkeypatch.setattr(_Form, "fresh", lambda form, *a: forms.append(
        "cone" if form.lifting is None else "qp") or fresh(form, *a))
    options = adapter.translate_options({})
    adapter.solve(prepared, changed, b, c, options)  # (its status is the cone program's)
    assert forms == ["cone"]
    assert adapter.solve(prepared, A, b, c, options).status.ok and forms == ["cone", "qp"]
    # The same in a call's set-up solvers (seeded on a QP item): the changed
    # item is solved afresh as the cone program, the others updated as QPs.
    solve = adapter.solving(prepared, adapter.for_refinement(options, A.nnz),
                            lambda: (A, b, c))
    forms.clear()
    assert solve(A, b, c).status.ok and forms == []
    solve(changed, b, c)
    assert forms == ["cone"]


@pytest.mark.parametrize("refine", [0, 3])
def test_layer_values_and_duals_match_cvxpy(refine, rng):
    """A QP with equality and inequality duals asked for: the layer's answer
    (the QP's mapped back, refined or not) against CVXPY's own solve."""
    n = 6
    x = cp.Variable(n)
    P, q, G, h = cp.Parameter((n, n)), cp.Parameter(n), cp.Parameter((3, n)), cp.Parameter(3)
    cons = [G @ x <= h, cp.sum(x) == 1]
    prob = cp.Problem(cp.Minimize(cp.sum_squares(P @ x) + q @ x), cons)
    layer = CvxpyLayer(prob, [P, q, G, h], [x, cons[0].dual_variables[0],
                                            cons[1].dual_variables[0]])
    values = [rng.standard_normal((3, n, n)), rng.standard_normal((3, n)),
              rng.standard_normal((3, 3, n)), rng.uniform(0.1, 1, (3, 3))]
    outs = layer(*values, solver_args={"refine": refine})
    tol = 1e-5 if refine == 0 else 1e-7
    for i in range(3):
        for p, v in zip([P, q, G, h], values, strict=True):
            p.value = v[i]
        prob.solve(solver=cp.CLARABEL, tol_gap_abs=1e-12, tol_gap_rel=1e-12, tol_feas=1e-12)
        want = [x.value, cons[0].dual_value, cons[1].dual_value]
        for got, w in zip(outs, want, strict=True):
            np.testing.assert_allclose(got[i], w, atol=tol * (1 + np.abs(w).max()))


def test_large_dense_terms_stay_cones():
    """On a large program whose squared term's rows are dense (the paper's
    dense QP, 32,770 stored entries) the QP form was slower (47 against 37 ms
    per solve): it stays a cone program; a small one is lifted."""
    n = 128
    x, L = cp.Variable(n), cp.Parameter((n, n))
    G, h = cp.Parameter((n, n)), cp.Parameter(n)
    prob = cp.Problem(cp.Minimize(0.5 * cp.sum_squares(L @ x)), [G @ x <= h])
    layer = CvxpyLayer(prob, [L, G, h], [x])
    assert _lifted(layer) is not None
    assert layer._engine.solver("Clarabel")[1].qp is None
    small = cp.Problem(cp.Minimize(0.5 * cp.sum_squares(L[:8, :8] @ x[:8])), [x[:8] >= 0])
    assert CvxpyLayer(small, [L], [x])._engine.solver("Clarabel")[1].qp is not None
