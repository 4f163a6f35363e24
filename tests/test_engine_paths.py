"""The fast paths of refinement and the derivative against the reference paths.

* ``_bordered_null``: K's null spaces at a refined degenerate point found from
  the previous iterate's (bordering, no SVD of K) against the dense SVD of K;
  the minimum-norm least-squares solves with the bordered LU against the SVD
  pseudo-inverse.
* ``_guessed_null``: the same at a point with no hint (a random bordering).
* Chord steps in ``refine`` (Newton with the previous point's LU) against
  refinement that factors K at every step.
* The rank-revealing QR least-squares step at the solver's answer against the
  SVD one.
* The refined LU solve of a large ill-conditioned K, stopping at its rounding
  floor, against the same solves sweeping on.

Oracles: the SVD path (a ``Linearization`` whose null basis is set from the
dense SVD) and refinement with ``_CHORD_MAX = 0`` or with the QR step and the
guessed bordering switched off, the code as it was before these paths.
"""

from __future__ import annotations

import types

import cvxpy as cp
import numpy as np
import pytest
import scipy.sparse as sp

import conelayers
import conelayers._diff as diff
import conelayers._factor as factor
import conelayers._linearization as lz
import conelayers._nullspace as ns
import conelayers._refine as rf
from conelayers._factor import DenseLU, SparseLU

# Solutions of the same linear systems by two backward-stable methods (LU of a
# well-conditioned bordered matrix, SVD) at K's condition on its range
# (≤ ~1e4 here): agreement to ~1e-12 relative. 1e-10 keeps margin and is far
# below a wrong null space or a wrong rank (O(1) differences).
LSTSQ_TOL = 1e-10


@pytest.fixture(autouse=True)
def _cvxpy_canonicalization(monkeypatch):
    """These paths are tested on the cone programs CVXPY makes, auxiliary
    variables and all: nnls_l1's l1 epigraph, degenerate wherever xᵢ = 0, is
    the test bed of the singular-K paths (conelayers._rewrite, switched off
    here, writes it as ``cp.sum(x)`` under ``x >= 0``, without the degeneracy)."""
    import conelayers._canonicalize as canonicalization

    monkeypatch.setattr(canonicalization, "without_free_epigraphs", lambda p: (p, {}))


def _nnls_l1(m=30, n=12):
    x = cp.Variable(n)
    A, b = cp.Parameter((m, n)), cp.Parameter(m)
    prob = cp.Problem(cp.Minimize(cp.sum_squares(A @ x - b) + 0.1 * cp.norm(x, 1)), [x >= 0])
    return prob, [A, b], [x]


def _sparsemax(n=20):
    x = cp.Variable(n)
    z = cp.Parameter(n)
    prob = cp.Problem(cp.Minimize(cp.sum_squares(x - z)), [cp.sum(x) == 1, x >= 0])
    return prob, [z], [x]


def _solve(layer, values):
    """The solution and its linearizations (one thread: deterministic)."""
    sol = layer.solve(*values, solver_args={"n_jobs_forward": 1})
    return layer._engine, sol, sol._linearizations


def _fresh(lin):
    """The same point, linearized afresh (no hint) and factored."""
    fresh = lz.Linearization.at(lin.structure, lin.A, lin.b, lin.c, lin.x,
                                lin.z[lin.x.size:-1], lin.index)
    fresh.factor()
    return fresh


def _reference(lin):
    """The same point on the SVD path: its null basis set from the dense SVD."""
    ref = _fresh(lin)
    U, S, Vt, r = ref._svd()
    ref._null = ns._NullBasis(Vt[r:].T, U[:, r:], float(S[0]), None)
    return ref


def _projector(rows):
    q, _ = np.linalg.qr(rows.T)
    return q @ q.T


@pytest.mark.parametrize("path", ["hint", "pivots", "random"])
def test_bordered_null_matches_svd(path, monkeypatch):
    """K's null spaces at degenerate points, by each bordering, against the SVD:
    from the previous iterate's (``hint``), from K's own LU with its small
    pivots replaced (``pivots``, :func:`_pivot_null`) and from a random border
    (``random``, that path switched off)."""
    hinted = path == "hint"
    found = []
    if path == "random":
        monkeypatch.setattr(ns, "_pivot_null", lambda lin, sigma: None)
    else:
        pivot_null = ns._pivot_null
        monkeypatch.setattr(ns, "_pivot_null",
                            lambda lin, sigma: found.append(pivot_null(lin, sigma)) or found[-1])
    prob, params, variables = _nnls_l1()
    layer = conelayers.CvxpyLayer(prob, params, variables)
    rng = np.random.default_rng(3)
    B = 12
    values = [rng.standard_normal((B, 30, 12)), rng.standard_normal((B, 30))]
    engine, _, lins = _solve(layer, values)
    fast = 0
    for lin in lins:
        assert lin is not None
        had_hint = lin.hint is not None
        lin.factor()  # (with a hint: the bordering certifies K singular, no LU of K)
        if lin.regular or not had_hint:
            continue
        if not hinted:  # the same point with no hint: a random bordering
            lin = _fresh(lin)
            assert lin.hint is None and isinstance(lin.lu, DenseLU)
        else:
            assert lin.lu is ns._SINGULAR
        basis = lin._basis()
        if basis.lu is None:  # the bordering did not apply: the SVD decided
            continue
        fast += 1
        ref = _reference(lin)
        assert ref._basis().lu is None  # the oracle is the SVD
        assert basis.N.shape[1] == ref._basis().N.shape[1]  # the same rank
        np.testing.assert_allclose(_projector(lin.null_directions()),
                                   _projector(ref.null_directions()), atol=LSTSQ_TOL)
        np.testing.assert_allclose(_projector(lin.left_null()), _projector(ref.left_null()),
                                   atol=LSTSQ_TOL)
        for transpose in (False, True):
            rhs = rng.standard_normal(lin.K.shape[0])
            got, want = lin._lstsq(rhs, transpose), ref._lstsq(rhs, transpose)
            np.testing.assert_allclose(got, want, atol=LSTSQ_TOL * np.abs(want).max())
        # The derivative's own check reaches the same verdict on both paths.
        program = engine.program
        verdict = [diff._outputs_determined(x, program.recover_linear, program.apply_adjoint)
                   for x in (lin, ref)]
        assert verdict[0] == verdict[1]
    assert fast >= B // 2  # the fast path is what ran (measured: every item, every way)
    if path == "pivots":  # and there, K's own LU served (measured: 24 of 24 calls)
        assert sum(basis is not None for basis in found) >= B // 2


def test_bordered_null_refuses_a_wrong_rank():
    """A hint whose null space is too small leaves K̂ singular on the rest:
    the bordering must refuse (and the SVD decide), not return a wrong rank."""
    prob, params, variables = _nnls_l1()
    layer = conelayers.CvxpyLayer(prob, params, variables)
    rng = np.random.default_rng(4)
    values = [rng.standard_normal((4, 30, 12)), rng.standard_normal((4, 30))]
    *_, lins = _solve(layer, values)
    refused = 0
    for lin in lins:
        lin.factor()
        if lin.regular:
            continue
        ref = _reference(lin)
        full = ref._basis()
        if full.N.shape[1] < 2:
            continue
        short = ns._NullBasis(full.N[:, 1:], full.L[:, 1:], full.sigma, None)
        assert ns._bordered_null(ref, short) is None
        refused += 1
    assert refused


@pytest.mark.parametrize("make", [_sparsemax, _nnls_l1])
def test_chord_steps_match_full_newton(make, monkeypatch):
    prob, params, variables = make()
    layer = conelayers.CvxpyLayer(prob, params, variables)
    rng = np.random.default_rng(5)
    B = 8
    values = [rng.standard_normal((B, *p.shape)) for p in params]
    _, chord, _ = _solve(layer, values)
    monkeypatch.setattr(rf, "_CHORD_MAX", 0)
    _, full, _ = _solve(layer, values)
    # Both end at rounding level on the same (unique) solution.
    assert np.all(chord.residual <= 1e-13) and np.all(full.residual <= 1e-13)
    np.testing.assert_allclose(chord.x, full.x, atol=1e-12)


def test_rank_revealing_step_matches_svd_refinement(monkeypatch):
    """At the solver's answer (accuracy ~1e-5: a soft SVD threshold) the first
    least-squares step is a rank-revealing QR's, whose null spaces seed the
    next iterate's; refinement ends where the SVD step's refinement ends.
    (Clarabel solves this program as a QP, to ~1e-10 at the default tolerance:
    the solve is stopped at 1e-5 here, as SCS's or a loose tolerance's are.)"""
    prob, params, variables = _nnls_l1()
    layer = conelayers.CvxpyLayer(prob, params, variables,
                                  solver_args={"eps": 1e-5, "n_jobs_forward": 1})
    rng = np.random.default_rng(6)
    B = 8
    values = [rng.standard_normal((B, 30, 12)), rng.standard_normal((B, 30))]
    calls, seeded = [], []
    soft_qr, bordered = lz._SoftQR, lz._bordered_null
    monkeypatch.setattr(lz, "_SoftQR", lambda *a: calls.append(1) or soft_qr(*a))

    def seeding(lin, hint):
        seeded.append((hint.soft, bordered(lin, hint)))
        return seeded[-1][1]

    monkeypatch.setattr(lz, "_bordered_null", seeding)
    _, fast, _ = _solve(layer, values)
    assert len(calls) >= B // 2  # the QR step is what ran (measured: every item)
    # ... and its null spaces served the next iterate (measured: 8 of 8)
    assert sum(soft and basis is not None for soft, basis in seeded) >= B // 2
    monkeypatch.setattr(lz, "_SOFT", np.inf)
    monkeypatch.setattr(lz, "_guessed_null", lambda lin: None)
    _, svd, _ = _solve(layer, values)
    assert np.all(fast.residual <= 1e-13) and np.all(svd.residual <= 1e-13)
    np.testing.assert_allclose(fast.values[0], svd.values[0], atol=1e-12)  # x is unique


def test_soft_qr_solves_match_the_truncated_svd():
    """:class:`_SoftQR`'s least-squares solves, both ways, and its null spaces
    against the SVD's, on a matrix of exact rank n − k (where the two
    truncations agree; with null singular values δ > 0 they differ by about
    δ·‖K⁺‖², which the step's own test judges at soft points)."""
    rng = np.random.default_rng(7)
    n, k = 60, 5
    U = np.linalg.qr(rng.standard_normal((n, n)))[0]
    V = np.linalg.qr(rng.standard_normal((n, n)))[0]
    S = np.concatenate([np.logspace(1, -2, n - k), np.zeros(k)])
    K = U @ np.diag(S) @ V.T
    soft = ns._SoftQR(K, 1e-6)
    assert soft.rank == n - k
    r = n - k
    pinv = V[:, :r] @ np.diag(1 / S[:r]) @ U[:, :r].T
    for transpose in (False, True):
        rhs = rng.standard_normal(n)
        want = (pinv.T if transpose else pinv) @ rhs
        np.testing.assert_allclose(soft.solve(rhs, transpose), want, atol=1e-8 * np.abs(want).max())
    hint = soft.hint(K)
    assert hint.soft and hint.lu is None
    np.testing.assert_allclose(_projector(hint.N.T), _projector(V[:, r:].T), atol=1e-8)
    np.testing.assert_allclose(_projector(hint.L.T), _projector(U[:, r:].T), atol=1e-8)
    np.testing.assert_allclose(hint.sigma, S[0], rtol=0.05)


def _logistic(N=30, n=5):
    w = cp.Variable(n)
    Z = cp.Parameter((N, n))
    prob = cp.Problem(cp.Minimize(cp.sum(cp.logistic(-Z @ w)) / N + 0.1 * cp.sum_squares(w)))
    return prob, [Z], [w]


def _large_sparsemax():
    return _sparsemax(n=50)  # K of order 158, dense: above _NEARBY_DENSE_MIN_ORDER


@pytest.mark.parametrize("make", [_logistic, _large_sparsemax])
def test_nearby_lu_derivative_matches_a_fresh_factorization(make, monkeypatch):
    """The derivative at the refined point reuses the LU of refinement's last
    Newton step (NearbyLU): SuperLU's (exponential cones, order > 200, sparse)
    or LAPACK's (sparsemax, order 158, dense). Oracle: the same derivative
    with K factored afresh, the code as it was, and the dot-product test
    between the JVP and the VJP."""
    import conelayers._factor as factor

    prob, params, variables = make()
    layer = conelayers.CvxpyLayer(prob, params, variables)
    dense = layer._engine.structure.pattern.dense
    assert dense == (make is _large_sparsemax)
    assert layer._engine.structure.pattern.order >= factor._NEARBY_DENSE_MIN_ORDER
    rng = np.random.default_rng(7)
    B = 6
    values = [rng.standard_normal((B, *p.shape)) for p in params]
    dout = rng.standard_normal((B, *variables[0].shape))
    dparam = rng.standard_normal((B, *params[0].shape))
    reused = []
    of = factor.NearbyLU.of.__func__
    monkeypatch.setattr(factor.NearbyLU, "of", classmethod(
        lambda cls, *a: (lambda lu: reused.append(lu) or lu)(of(cls, *a))))
    sol = layer.solve(*values, solver_args={"n_jobs_forward": 1})
    grad, tangent = sol.adjoint(dout)[0], sol.derivative(dparam)[0]
    assert len(reused) == B and all(lu is not None for lu in reused)
    assert all(isinstance(lu.base, factor.DenseLU if dense else factor.SparseLU)
               for lu in reused)
    assert all(lu._own is None for lu in reused)  # K's own LU was never needed
    monkeypatch.setattr(factor.NearbyLU, "of", classmethod(lambda cls, *a: None))
    fresh = layer.solve(*values, solver_args={"n_jobs_forward": 1})
    np.testing.assert_allclose(grad, fresh.adjoint(dout)[0], rtol=0,
                               atol=1e-12 * np.abs(grad).max())
    np.testing.assert_allclose(tangent, fresh.derivative(dparam)[0], rtol=0,
                               atol=1e-12 * np.abs(tangent).max())
    # <dout, J dparam> = <Jᵀ dout, dparam>, item by item.
    axes = tuple(range(1, dparam.ndim))
    np.testing.assert_allclose(np.einsum("bi,bi->b", dout, tangent),
                               (grad * dparam).sum(axis=axes), rtol=1e-11)


@pytest.mark.parametrize("make", [_logistic, _large_sparsemax])
def test_a_differentiated_solution_is_freed_by_reference_counting(make):
    """A batch's factors go with its Solution, without waiting for Python's
    cyclic collector (which runs rarely on long-lived objects: a training
    loop would hold several batches' factors). Oracle: weak references to
    every item's linearization and to the LUs handed over for its derivative,
    dead as soon as the last reference to the Solution goes, the collector off."""
    import gc
    import weakref

    prob, params, variables = make()
    layer = conelayers.CvxpyLayer(prob, params, variables)
    rng = np.random.default_rng(12)
    values = [rng.standard_normal((4, *p.shape)) for p in params]
    gc.collect()
    gc.disable()
    try:
        sol = layer.solve(*values)
        refs = [weakref.ref(lin) for lin in sol._linearizations]
        refs += [weakref.ref(lin.nearby) for lin in sol._linearizations]
        sol.adjoint(rng.standard_normal((4, *variables[0].shape)))
        sol.derivative(rng.standard_normal((4, *params[0].shape)))
        assert any(ref() is not None for ref in refs)
        del sol
        assert all(ref() is None for ref in refs)
    finally:
        gc.enable()


@pytest.mark.parametrize("make", [_logistic, _large_sparsemax])
def test_a_solution_no_derivative_is_expected_of_keeps_no_factors(make):
    """``layer(...)`` (values only) and a forward pass without a tape solve with
    ``differentiable=False``: refinement hands no LU over, so the batch holds
    none between the passes. Its derivatives, if asked for after all, factor
    K themselves and agree with the default solution's. Oracle: the default
    ``solve`` (which keeps them) on the same values."""
    prob, params, variables = make()
    layer = conelayers.CvxpyLayer(prob, params, variables)
    rng = np.random.default_rng(11)
    B = 5
    values = [rng.standard_normal((B, *p.shape)) for p in params]
    dout = rng.standard_normal((B, *variables[0].shape))
    kept = layer.solve(*values)
    assert all(lin is not None and lin.nearby is not None for lin in kept._linearizations)
    bare = layer._solution(values, None, None, None, differentiable=False)
    assert all(lin is not None and lin.K is None and lin.nearby is None
               for lin in bare._linearizations)
    np.testing.assert_array_equal(bare.values[0], kept.values[0])
    grad = kept.adjoint(dout)[0]
    np.testing.assert_allclose(bare.adjoint(dout)[0], grad, rtol=0,
                               atol=1e-12 * np.abs(grad).max())
    released = layer.solve(*values)
    released.release_kept_factors()
    assert all(lin.nearby is None for lin in released._linearizations)
    np.testing.assert_allclose(released.adjoint(dout)[0], grad, rtol=0,
                               atol=1e-12 * np.abs(grad).max())


def test_refinement_stops_without_a_factorization_when_a_chord_step_is_short_at_rounding(
        monkeypatch):
    """Refinement asked to go below N's rounding floor (``_REFINED`` 1e-16):
    once a chord step falls short at ≤ ``_ROUNDING``, it stops there instead of
    factoring K for a Newton step that cannot help. Oracle: the same items
    without that rule (``_ROUNDING`` 0) factor K more often and end no better
    than rounding."""
    prob, params, variables = _sparsemax()
    layer = conelayers.CvxpyLayer(prob, params, variables)
    rng = np.random.default_rng(8)
    values = [rng.standard_normal((8, 20))]
    factored = []
    factor = lz.Linearization.factor

    def counting(lin, *args, **kwargs):
        if lin.K is None:
            factored.append(lin.relative_residual)
        factor(lin, *args, **kwargs)

    monkeypatch.setattr(lz.Linearization, "factor", counting)
    monkeypatch.setattr(rf, "_REFINED", 1e-16)
    _, stopped, _ = _solve(layer, values)
    with_rule = len(factored)
    factored.clear()
    monkeypatch.setattr(rf, "_ROUNDING", 0.0)
    _, pressed, _ = _solve(layer, values)
    assert with_rule < len(factored)
    assert np.all(stopped.residual <= 1e-13) and np.all(pressed.residual <= 1e-13)
    np.testing.assert_allclose(stopped.x, pressed.x, atol=1e-12)


@pytest.mark.parametrize("make", [_sparsemax, _logistic])
def test_heavy_factorizations_are_formed_again_instead_of_kept(make, monkeypatch):
    """Above ``_KEEP_BYTES`` an item keeps no factorization between passes:
    refinement returns its point unfactored and the solution does not cache
    the derivative. Oracle: the same batch with everything kept (the default
    limit); values and gradients agree to rounding, and so do repeated calls."""
    prob, params, variables = make()
    layer = conelayers.CvxpyLayer(prob, params, variables)
    rng = np.random.default_rng(9)
    B = 4
    values = [rng.standard_normal((B, *p.shape)) for p in params]
    cot = [rng.standard_normal((B, *v.shape)) for v in variables]
    _, kept, lins = _solve(layer, values)
    grads_kept = kept.adjoint(*cot)
    assert all(d is not None for d in kept._derivatives)
    monkeypatch.setattr(lz, "_KEEP_BYTES", 0)
    _, light, lins = _solve(layer, values)
    assert all(lin.K is None and lin.nearby is None for lin in lins)
    first, again = light.adjoint(*cot), light.adjoint(*cot)
    assert all(d is None for d in light._derivatives)
    np.testing.assert_allclose(light.values[0], kept.values[0], rtol=0, atol=1e-13)
    scale = max(np.abs(g).max() for g in grads_kept)
    for g, h, k in zip(first, again, grads_kept, strict=True):
        np.testing.assert_allclose(g, k, rtol=0, atol=1e-12 * scale)
        # (the second call linearizes at (x, y − s) afresh: equal to rounding)
        np.testing.assert_allclose(h, g, rtol=0, atol=1e-12 * scale)


def test_small_programs_are_solved_tighter_only_where_refinement_follows(monkeypatch):
    """The engine asks the solver for ``for_refinement`` options: Clarabel at
    ``_SMALL_EPS`` on a small program with refinement on, its own default with
    ``refine=0`` or an explicit ``eps``."""
    import clarabel

    from conelayers._solvers import clarabel as adapter

    tols = []
    real = clarabel.DefaultSolver
    monkeypatch.setattr(clarabel, "DefaultSolver",
                        lambda *a: tols.append(a[-1].tol_feas) or real(*a))
    prob, params, variables = _sparsemax()
    layer = conelayers.CvxpyLayer(prob, params, variables)
    values = [np.random.default_rng(10).standard_normal((2, 20))]
    own = clarabel.DefaultSettings().tol_feas
    for solver_args, expected in [({}, adapter._SMALL_EPS), ({"refine": 0}, own),
                                  ({"eps": 1e-6}, 1e-6)]:
        tols.clear()
        sol = layer.solve(*values, solver_args=solver_args)
        assert tols and all(t == expected for t in tols), (solver_args, tols)
        assert all(st is conelayers.Status.optimal for st in sol.status)


def _qp_soc(n=8):
    x = cp.Variable(n)
    P, q, G, h = cp.Parameter((n, n)), cp.Parameter(n), cp.Parameter((4, n)), cp.Parameter(4)
    prob = cp.Problem(cp.Minimize(cp.sum_squares(P @ x) + q @ x + cp.norm(x, 2)), [G @ x <= h])
    return prob, [P, q, G, h], [x]


def _sdp(k=3):
    X = cp.Variable((k, k), symmetric=True)
    C = cp.Parameter((k, k))
    prob = cp.Problem(cp.Minimize(cp.trace(C @ X) + cp.sum_squares(X)),
                      [X >> 0, cp.trace(X) == 1])
    return prob, [C], [X]


def _solver_answers(layer, values, solver):
    """The cone programs of a batch and the solver's raw answers to them."""
    from conelayers._validate import check_values

    engine = layer._engine
    program = engine.program
    A_vals, b, c, _ = program.apply(check_values(program.parameters, values).theta)
    adapter, prepared = engine.solver(solver)
    options = adapter.for_refinement(adapter.translate_options({}), program.nnz)
    As = [program.matrix(a) for a in A_vals]
    raws = [adapter.solve(prepared, A, b[i], c[i], options) for i, A in enumerate(As)]
    stack = lambda f: np.stack([getattr(r, f) for r in raws])  # noqa: E731
    return engine.structure, As, A_vals, b, c, stack("x"), stack("y"), stack("s")


def _assert_same_solution(p, q, atol):
    """p.z = q.z to ``atol``, up to K's null directions at q where K is
    singular: there the embedding's solutions form a set, not a point (nnls_l1's
    duals of the l1 epigraph rows where xᵢ = 0 are not unique), and which of its
    points two refinements reach depends on the rounding of their least-squares
    steps (measured on an AMD EPYC: 3.9e-10 apart in one such dual, x 3e-14
    apart, both at relative residual ~1e-15; on an Intel Xeon, equal)."""
    gap = p.z - q.z
    q.factor()
    if not q.regular:
        null = q._basis().N[: q.z.size]  # (z-parts of K's null vectors)
        gap = gap - null @ np.linalg.lstsq(null, gap, rcond=None)[0]
    np.testing.assert_allclose(gap, 0.0, rtol=0, atol=atol)


@pytest.mark.parametrize("solver", ["CLARABEL", "SCS"])
@pytest.mark.parametrize("make", [_sparsemax, _qp_soc, _sdp, _logistic, _nnls_l1])
def test_refine_many_ends_where_refine_ends(make, solver, monkeypatch):
    """A group of items refined together (``refine_many``, the forward pass)
    ends at the points refinement item by item (``refine``, the oracle: the
    code as it was) reaches: same relative residuals to rounding, same
    solution to 1e-11, at every refinement budget. Items whose K is singular
    (the l1 term of nnls_l1) or whose Newton step falls short leave the group
    for ``refine``'s own path; that is checked to happen there, and only
    there, on the regular problems at Clarabel's answers."""
    prob, params, variables = make()
    layer = conelayers.CvxpyLayer(prob, params, variables)
    rng = np.random.default_rng(12)
    B = 7
    values = [rng.standard_normal((B, *p.shape)) for p in params]
    if make is _qp_soc:
        values[3] = np.abs(values[3]) + 1.0  # h > 0: x = 0 is feasible
    args = _solver_answers(layer, values, solver)
    structure, As, _, b, c, X, Y, S = args
    alone = []
    real = rf.refine
    monkeypatch.setattr(rf, "refine", lambda *a, **k: alone.append(k["index"]) or real(*a, **k))
    for steps in (0, 1, 5):
        alone.clear()
        many = rf.refine_many(*args, max_steps=steps, indices=list(range(B)))
        left = list(alone)
        one = [real(structure, As[i], b[i], c[i], X[i], Y[i], S[i], max_steps=steps, index=i)
               for i in range(B)]
        for p, q in zip(many, one, strict=True):
            assert p.relative_residual <= max(2 * q.relative_residual, 1e-14)
            assert q.relative_residual <= max(2 * p.relative_residual, 1e-14)
            if q.relative_residual <= 1e-13:
                scale = 1.0 + np.abs(q.z).max()
                _assert_same_solution(p, q, 1e-11 * scale)
        if make is _nnls_l1 and steps:
            assert left  # singular K: refine's least-squares path
        if make in (_sparsemax, _qp_soc, _sdp) and solver == "CLARABEL":
            assert not left


def test_the_derivative_structure_is_built_once_on_first_use():
    """Construction leaves K's pattern unbuilt; the first call builds it and
    later calls (and pickled copies, which carry it) use that one; a copy
    pickled before any call builds its own, equal, on its first call."""
    import pickle

    prob, params, variables = _sparsemax()
    layer = conelayers.CvxpyLayer(prob, params, variables)
    early = pickle.loads(pickle.dumps(layer))
    assert layer._engine._structure is None
    values = [np.random.default_rng(4).standard_normal((3, 20))]
    first = layer.solve(*values)
    built = layer._engine._structure
    assert built is not None
    layer.solve(*values)
    assert layer._engine.structure is built
    late = pickle.loads(pickle.dumps(layer))
    assert late._engine._structure is not None
    for other in (early, late):
        again = other.solve(*values)
        np.testing.assert_array_equal(again.values[0], first.values[0])
        assert np.array_equal(other._engine.structure.pattern.indices, built.pattern.indices)


@pytest.mark.parametrize("transpose", [False, True])
def test_refined_solve_stops_at_the_rounding_floor(transpose, monkeypatch):
    """``_refined_solve`` (the large, ill-conditioned K's path in ``_lstsq``)
    stops once a sweep no longer halves the residual, at a residual as small
    as sweeping on reaches (oracle: the same solves with the rule off), and
    reports that residual truthfully."""
    rng = np.random.default_rng(5)
    n = 150
    U = np.linalg.qr(rng.standard_normal((n, n)))[0]
    V = np.linalg.qr(rng.standard_normal((n, n)))[0]
    K = sp.csc_array(U @ np.diag(np.logspace(0, -11, n)) @ V.T)  # condition 1e11
    solves = []

    class Counted(SparseLU):
        def solve(self, rhs, transpose=False):
            solves.append(1)
            return super().solve(rhs, transpose)

    point = types.SimpleNamespace(K=K, lu=Counted(K))
    op = K.T if transpose else K
    rhs = [rng.standard_normal(n) for _ in range(6)]
    outcome, rule = {}, factor._NEARBY_STALL
    for stall in (rule, np.inf):
        monkeypatch.setattr(factor, "_NEARBY_STALL", stall)
        solves.clear()
        worst = 0.0
        for r in rhs:
            sol, rel = lz.Linearization._refined_solve(point, r, transpose)
            assert rel == pytest.approx(np.linalg.norm(r - op @ sol) / np.linalg.norm(r),
                                        rel=1e-12)
            worst = max(worst, rel)
        outcome[stall] = (len(solves), worst)
    (fast, rel), (slow, rel_limit) = outcome[rule], outcome[np.inf]
    assert rel_limit > lz._SOLVE_RTOL  # the 1e-15 target is out of reach here ...
    assert fast < slow  # ... and the sweeps stopped short of the limit
    assert rel <= max(2 * rel_limit, 1e-13)
