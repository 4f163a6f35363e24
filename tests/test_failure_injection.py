"""Failure injection: batches that mix feasible items with infeasible, unbounded
and iteration-limited ones, for every solver.

The family is an LP, min cᵀx s.t. Gx ≤ h (x ∈ ℝ³, 8 rows), whose items are
built to be, by construction,

* feasible: a box of half-width 1 around a random x₀ plus two random rows
  that x₀ satisfies with slack (bounded; a generic vertex, so the solution is
  unique and the derivative exists);
* infeasible: two opposite rows g·x ≤ −1 and −g·x ≤ −1;
* unbounded: every row flipped so that G(−c) ≤ 0: −c is an improving ray;
* limited: a feasible item scaled up (box half-width 10⁴…10⁸, per solver)
  until the solver needs more iterations than every other item of the batch;
  the call then sets the iteration limit between the two.

Checked: failed items carry the right status and NaN values, contribute no
gradient and NaN tangents; feasible items are exact (equal to their solo
solve, and to CVXPY's tight solve of the LP); the default (`throw=True`)
raises SolverError naming every failed item with its status; the layer
works normally on the next call. Front-ends: the same batch through
conelayers.torch and conelayers.tensorflow.
"""

from __future__ import annotations

import importlib.util
import re
import warnings
from typing import Any

import cvxpy as cp
import numpy as np
import pytest
from generators import fuzz_settings
from helpers import TIGHT
from hypothesis import event, given, note
from hypothesis import strategies as st

from conelayers import CvxpyLayer, InaccurateSolutionWarning, SolverError, Status

SOLVERS = ("Clarabel", "SCS", "ECOS")
N, M = 3, 8
FAILED = {
    "infeasible": (Status.infeasible, Status.infeasible_inaccurate),
    "unbounded": (Status.unbounded, Status.unbounded_inaccurate),
    "limited": (Status.max_iterations,),
}
# SCS checks convergence every 25 iterations (its `iter` is a multiple of 25);
# the interior-point solvers every iteration. An iteration limit one check
# above every other item's count cannot stop them.
CHECK_INTERVAL = {"Clarabel": 1, "SCS": 25, "ECOS": 1}
# A limited item must need this many more iterations than the limit: one or
# two short, Clarabel and ECOS meet their *reduced* tolerances and answer
# "almost solved" (optimal_inaccurate), which is not an injected failure.
DEFICIT = {"Clarabel": 4, "SCS": 100, "ECOS": 4}
# Half-widths of the scaled-up box that make a limited item. Measured at the
# tight tolerances of helpers.TIGHT without refinement (50 other items, 10
# scaled ones per width): the other items need ≤ 9 (Clarabel), ≤ 10 (ECOS),
# ≤ 200 (SCS) iterations; at these widths the scaled ones need 11-123,
# 12-17 and 225-900. (ECOS fails outright on some items at 1e8.)
LIMITED_SCALES = {"Clarabel": (1e7, 1e8), "SCS": (1e4, 1e5, 1e6), "ECOS": (1e7,)}
# At their iteration limit Clarabel and ECOS test *reduced* tolerances and may
# answer "almost solved" / "almost infeasible" instead of "limit reached".
# The limited calls set those tolerances out of reach, so that an item stopped
# by the limit says so (items that converge are not affected).
NO_REDUCED_ACCURACY = {
    "Clarabel": {k: 1e-15 for k in ("reduced_tol_gap_abs", "reduced_tol_gap_rel",
                                     "reduced_tol_feas", "reduced_tol_infeas_abs",
                                     "reduced_tol_infeas_rel")},
    "ECOS": {k: 1e-15 for k in ("feastol_inacc", "abstol_inacc", "reltol_inacc")},
    "SCS": {},  # SCS reports a stop at max_iters as such
}
# The reference is CVXPY-ECOS at tolerances 1e-12: an interior-point error of
# ~tol / (smallest active multiplier) at a vertex, 1e-12/1e-4 in the worst
# draws seen (CVXPY-Clarabel at 1e-10 was 2.4e-7 off on such a draw, where
# ours, CVXPY-ECOS and CVXPY-SCS at 1e-12 agreed to 1e-11). Ours is exact to
# rounding after refinement.
LP_TOL = 1e-8
# Without refinement, at helpers.TIGHT, an interior-point vertex is accurate to
# ~tol / (smallest active multiplier): 3.4e-10 (Clarabel), 7.5e-10 (ECOS),
# 1.9e-9 (SCS) on 30 draws each, 3.5e-8 in the worst of 1,200 long-profile
# batches (a multiplier of ~3e-3).
RAW_TOL = 1e-6


class LPFamily:
    """The LP above, with item generators for each kind."""

    def __init__(self) -> None:
        self.x = cp.Variable(N)
        self.c, self.G, self.h = cp.Parameter(N), cp.Parameter((M, N)), cp.Parameter(M)
        self.constraint = self.G @ self.x <= self.h
        self.problem = cp.Problem(cp.Minimize(self.c @ self.x), [self.constraint])
        self.parameters = [self.c, self.G, self.h]

    def layer(self, solver: str, frontend=CvxpyLayer, **kwargs):
        return frontend(self.problem, self.parameters, [self.x], solver=solver, **kwargs)

    @staticmethod
    def feasible(rng: np.random.Generator, half_width: float = 1.0) -> list[np.ndarray]:
        x0 = rng.uniform(-1, 1, N)
        R = rng.standard_normal((2, N))
        G = np.vstack([np.eye(N), -np.eye(N), R])
        h = np.r_[x0 + half_width, -(x0 - half_width), R @ x0 + rng.uniform(0.1, 1, 2)]
        return [rng.standard_normal(N), G, h]

    @classmethod
    def infeasible(cls, rng):
        c, G, h = cls.feasible(rng)
        g = rng.standard_normal(N)
        G[-2], G[-1] = g, -g
        h[-2:] = -1.0
        return [c, G, h]

    @classmethod
    def unbounded(cls, rng):
        c, G, h = cls.feasible(rng)
        return [c, G * np.where(G @ c >= 0, 1.0, -1.0)[:, None], h]

    def reference(self, item) -> np.ndarray:
        """CVXPY's solve: ECOS at 1e-12, or where it stops short of that (1 in
        ~2,000 items), Clarabel at 1e-10."""
        for p, v in zip(self.parameters, item, strict=True):
            p.value = v
        self.problem.solve(solver=cp.ECOS, abstol=1e-12, reltol=1e-12, feastol=1e-12)
        if self.problem.status != cp.OPTIMAL:
            self.problem.solve(solver=cp.CLARABEL, tol_gap_abs=1e-10, tol_gap_rel=1e-10,
                               tol_feas=1e-10)
        assert self.problem.status == cp.OPTIMAL, self.problem.status
        return np.asarray(self.x.value, dtype=float)


def stack(items):
    return [np.stack([it[k] for it in items]) for k in range(3)]


def iterations_alone(layer, item, options) -> tuple[Status, int]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sol = layer.solve(*item, solver_args=options, throw=False)
    return sol.status[0], int(sol.iterations[0])


def build_batch(family: LPFamily, layer, solver: str, kinds, rng, options):
    """Items of the given kinds; returns (items, iteration limit or None).

    The limit is set above every non-limited item's own iteration count (each
    solved alone, with ``options``), and each limited item is a scaled-up
    feasible item that needs more than that.
    """
    items: list[Any] = [getattr(family, kind)(rng) if kind != "limited" else None
                        for kind in kinds]
    if "limited" not in kinds:
        return items, None
    counts = [iterations_alone(layer, it, options)[1] for it in items if it is not None]
    limit = max(counts) + CHECK_INTERVAL[solver]
    for k, kind in enumerate(kinds):
        if kind != "limited":
            continue
        scales = LIMITED_SCALES[solver]
        for attempt in range(200):
            candidate = family.feasible(rng, half_width=scales[attempt % len(scales)])
            status, count = iterations_alone(layer, candidate, options)
            if status is Status.optimal and count >= limit + DEFICIT[solver]:
                items[k] = candidate
                break
        else:  # pragma: no cover - a construction failure, not a layer failure
            pytest.fail(f"no item needing more than {limit} {solver} iterations in 200 draws")
    return items, limit


@st.composite
def kinds_strategy(draw, failing=("infeasible", "unbounded", "limited")):
    """A batch of 2–6 kinds with at least one feasible and one failing item, in
    random order."""
    kinds = ["feasible", draw(st.sampled_from(failing))]
    kinds += draw(st.lists(st.sampled_from(("feasible", *failing)), max_size=4))
    return draw(st.permutations(kinds))


def check_failed_and_feasible(family, sol, kinds, items, tol: float = LP_TOL):
    """Statuses, NaN for failed items; feasible items equal the reference."""
    (x,) = sol.values
    for i, kind in enumerate(kinds):
        if kind == "feasible":
            assert sol.status[i] is Status.optimal, (i, sol.status)
            ref = family.reference(items[i])
            np.testing.assert_allclose(x[i], ref, atol=tol * (1 + np.abs(ref).max()), rtol=0)
        else:
            assert sol.status[i] in FAILED[kind], (i, kind, sol.status[i])
            if sol.status[i] not in (FAILED[kind][0],):
                event(f"{kind} item reported {sol.status[i].name}")
            assert np.isnan(x[i]).all()


@pytest.mark.parametrize("solver", SOLVERS)
@fuzz_settings(8)
@given(kinds=kinds_strategy(("infeasible", "unbounded")), seed=st.integers(0, 2**32 - 1))
def test_infeasible_and_unbounded_items_leave_the_others_exact(solver, kinds, seed):
    """Failed items are reported and NaN, with zero gradient and NaN tangents;
    feasible items are exact and equal to their solo solves, values and
    gradients. (The solvers' default tolerances: refinement makes SCS's 1e-4
    answers exact too, see test_refine_regression_scs_lp_active_set and
    test_refine_regression_scs_lp_near_degenerate_piece.)"""
    note(f"kinds={kinds}")
    rng = np.random.default_rng(seed)
    family = LPFamily()
    layer = family.layer(solver)
    items, _ = build_batch(family, layer, solver, kinds, rng, {})
    values = stack(items)
    sol = layer.solve(*values, throw=False)
    check_failed_and_feasible(family, sol, kinds, items)
    B = len(kinds)
    w = rng.standard_normal((B, N))
    grads = sol.adjoint(w)
    (tangent,) = sol.derivative(*[rng.standard_normal(v.shape) for v in values])
    for i, kind in enumerate(kinds):
        if kind == "feasible":
            alone = layer.solve(*items[i])
            np.testing.assert_allclose(sol.values[0][i], alone.values[0], atol=1e-12, rtol=0)
            for g, g_alone in zip(grads, alone.adjoint(w[i]), strict=True):
                np.testing.assert_allclose(g[i], g_alone, atol=1e-10 * (1 + np.abs(g_alone).max()),
                                           rtol=0)
            assert np.isfinite(tangent[i]).all()
        else:
            assert all(not g[i].any() for g in grads)
            assert np.isnan(tangent[i]).all()


@pytest.mark.parametrize("solver", SOLVERS)
@fuzz_settings(8)
@given(kinds=kinds_strategy(), seed=st.integers(0, 2**32 - 1))
def test_mixed_batch_statuses_exact_items_error_and_next_call(solver, kinds, seed):
    """A batch mixing feasible, infeasible, unbounded and iteration-limited
    items. Without refinement (`refine=0`, so that nothing rescues the limited
    items) every failed item has its status and the feasible ones are exact
    (to the tight tolerances' accuracy) and what they are alone; with the
    default refinement too;
    the default raises SolverError naming every failed item; the next call on
    the same layer is normal."""
    note(f"kinds={kinds}")
    for kind in sorted(set(kinds)):
        event(f"batch has {kind} items")
    rng = np.random.default_rng(seed)
    family = LPFamily()
    layer = family.layer(solver)
    raw = {**TIGHT[solver], "refine": 0}
    items, limit = build_batch(family, layer, solver, kinds, rng, raw)
    note(f"iteration limit {limit}")
    values = stack(items)
    limited = {} if limit is None else {"max_iters": limit, **NO_REDUCED_ACCURACY[solver]}

    # 1. No refinement: statuses; feasible items as accurate as the tight
    # tolerances make them, and equal to their solo solves.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # inaccuracy warnings of the limited items
        sol = layer.solve(*values, solver_args={**raw, **limited}, throw=False)
    check_failed_and_feasible(family, sol, kinds, items, RAW_TOL)
    for i, kind in enumerate(kinds):
        if kind == "feasible":
            (alone,) = layer(*items[i], solver_args={**raw, **limited})
            np.testing.assert_allclose(sol.values[0][i], alone, atol=1e-12, rtol=0)

    # 2. Default refinement (tight tolerances), same limit: the feasible,
    # infeasible and unbounded items are exact / reported as before. (What
    # refinement makes of a limited item, scaled up to 1e8, is left out: see
    # test_rescue_regression_scale and test_refine_regression_large_scale_lp.)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        refined = layer.solve(*values, solver_args={**TIGHT[solver], **limited}, throw=False)
    keep = [i for i, k in enumerate(kinds) if k != "limited"]
    check_failed_and_feasible(family, _Subset(refined, keep), [kinds[i] for i in keep],
                              [items[i] for i in keep])

    # 3. The default raises, naming every failed item and its status.
    failed = [i for i, st_ in enumerate(sol.status) if not st_.ok]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(SolverError) as info:
            layer.solve(*values, solver_args={**raw, **limited})
    assert info.value.failed == tuple(failed)
    assert info.value.statuses == sol.status
    message = str(info.value)
    assert f"{len(failed)} of {len(kinds)} batch item(s) could not be solved by {solver}" \
        in message
    for i in failed[:5]:  # the message lists the first five, then the rest by status
        assert re.search(rf"item {i}: {sol.status[i].name}\n", message), message
    for i in failed[5:]:
        assert re.search(rf"also failed: (.*; )?{sol.status[i].name}: items? ([0-9]+, )*{i}\b",
                         message), message
    for status in {sol.status[i] for i in failed}:  # each explained once
        assert message.count(f"{status.name}: {status.value}") == 1, message

    # 4. The next call is normal.
    good = [family.feasible(rng) for _ in range(3)]
    (x,) = layer(*stack(good), solver_args=TIGHT[solver])
    for i, item in enumerate(good):
        ref = family.reference(item)
        np.testing.assert_allclose(x[i], ref, atol=LP_TOL * (1 + np.abs(ref).max()), rtol=0)


class _Subset:
    """The items ``index`` of a Solution, as far as check_failed_and_feasible looks."""

    def __init__(self, sol, index):
        self.values = tuple(v[index] for v in sol.values)
        self.status = tuple(sol.status[i] for i in index)


# -- front-ends ----------------------------------------------------------------------


def _mixed(rng, family):
    """Items 1 (infeasible) and 3 (unbounded) fail; 0 and 2 are feasible."""
    kinds = ["feasible", "infeasible", "feasible", "unbounded"]
    return stack([getattr(family, k)(rng) for k in kinds])


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch is not installed")
@pytest.mark.parametrize("solver", SOLVERS)
def test_torch_mixed_batch(solver, rng):
    import torch

    from conelayers.torch import CvxpyLayer as TorchLayer

    family = LPFamily()
    layer = family.layer(solver, TorchLayer)
    core = family.layer(solver)
    values = _mixed(rng, family)
    params = [torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in values]
    x, status = layer(*params, throw=False, return_status=True)
    ref = core.solve(*values, throw=False)
    assert status == ref.status
    assert [s.name for s in status] == ["optimal", "infeasible", "optimal", "unbounded"]
    np.testing.assert_array_equal(torch.isnan(x).all(dim=1).numpy(), [False, True, False, True])
    np.testing.assert_allclose(x.detach().numpy()[[0, 2]], ref.values[0][[0, 2]], atol=1e-12)
    w = rng.standard_normal((4, N))
    ok = torch.tensor([s.ok for s in status])
    (x[ok] * torch.tensor(w)[ok]).sum().backward()
    w_masked = np.where(ref.ok[:, None], w, 0.0)
    for p, g in zip(params, ref.adjoint(w_masked), strict=True):
        np.testing.assert_allclose(p.grad.numpy(), g, atol=1e-10)
        assert not p.grad.numpy()[[1, 3]].any()
    with pytest.raises(SolverError, match=r"2 of 4 batch item\(s\)(.|\n)*item 1: infeasible"
                       r"(.|\n)*item 3: unbounded"):
        layer(*params)
    good = stack([family.feasible(rng) for _ in range(2)])
    (x,) = layer(*[torch.tensor(v) for v in good])
    np.testing.assert_allclose(x.numpy(), core(*good)[0], atol=1e-12)


@pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None,
                    reason="tensorflow is not installed")
@pytest.mark.parametrize("solver", SOLVERS)
def test_tensorflow_mixed_batch(solver, rng):
    import tensorflow as tf

    from conelayers.tensorflow import CvxpyLayer as TFLayer

    family = LPFamily()
    layer = family.layer(solver, TFLayer)
    core = family.layer(solver)
    values = _mixed(rng, family)
    params = [tf.constant(v) for v in values]
    w = rng.standard_normal((4, N))
    with tf.GradientTape() as tape:
        tape.watch(params)
        x, status = layer(*params, throw=False, return_status=True)
        ok = tf.reduce_all(tf.math.is_finite(x), axis=1)
        loss = tf.reduce_sum(tf.boolean_mask(x * w, ok))
    grads = tape.gradient(loss, params)
    ref = core.solve(*values, throw=False)
    assert [Status[s.decode()] for s in status.numpy()] == list(ref.status)
    assert [s.name for s in ref.status] == ["optimal", "infeasible", "optimal", "unbounded"]
    np.testing.assert_allclose(x.numpy()[[0, 2]], ref.values[0][[0, 2]], atol=1e-12)
    assert np.isnan(x.numpy()[[1, 3]]).all()
    w_masked = np.where(ref.ok[:, None], w, 0.0)
    for g, g_ref in zip(grads, ref.adjoint(w_masked), strict=True):
        np.testing.assert_allclose(g.numpy(), g_ref, atol=1e-10)
    with pytest.raises(SolverError, match=r"item 1: infeasible(.|\n)*item 3: unbounded"):
        layer(*params)
    good = stack([family.feasible(rng) for _ in range(2)])
    (x,) = layer(*[tf.constant(v) for v in good])
    np.testing.assert_allclose(x.numpy(), core(*good)[0], atol=1e-12)


# -- refinement and rescue ----------------------------------------------------------


def _box_lp():
    """min cᵀx s.t. −R ≤ x ≤ R (x ∈ ℝ²): x* = −R·sign(c), a well-posed LP at any R."""
    x = cp.Variable(2)
    c, R = cp.Parameter(2), cp.Parameter()
    return cp.Problem(cp.Minimize(c @ x), [x <= R, -x <= R]), [c, R], [x]


def test_limited_item_rescued_by_refinement_is_exact():
    """Refinement may certify an iterate the solver gave up on (README): on
    well-scaled data the rescued item is the exact solution."""
    layer = CvxpyLayer(*_box_lp())
    c, R = np.array([1.0, -0.5]), 1e3
    with pytest.warns(InaccurateSolutionWarning):  # Clarabel stops "almost solved"
        raw = layer.solve(c, np.array(R), solver_args={"max_iters": 4, "refine": 0})
    assert raw.status[0] is Status.optimal_inaccurate
    assert np.abs(raw.values[0] - [-R, R]).max() > 1e-6 * R  # the iterate is off
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # refined to a certified optimum: no warning
        sol = layer.solve(c, np.array(R), solver_args={"max_iters": 4})
    assert sol.status[0] is Status.optimal
    np.testing.assert_allclose(sol.values[0], [-R, R], rtol=1e-12)


@pytest.mark.parametrize("R", [1e8, 1e9])
def test_refine_regression_large_scale_lp(R):
    """Refinement never makes the solver's right answer wrong.

    1e8: the acceptance test compared the *absolute* ‖N(z)‖∞, and a step to
    the spurious point y = 0, cᵀx = 0, with ‖N‖∞ = ‖c‖∞ = 1, beat the raw
    point's 1.5e8: x became (2e7, 4e7). Fixed by the relative residual.

    1e9: Clarabel's answer is right, but on an active row sᵢ = 0.52 (zero at
    the primal scale 1e9) exceeded yᵢ = 0.5, so the embedding's v = y − s
    made the row inactive: the right answer measured 0.32, and a Newton step
    from that wrong piece (K's condition 6e19) lowering it to 0.25 was kept
    while moving x₂ from +1e9 to −1e9. Fixed in _refine: v is formed with y
    and s each against its own scale (the raw answer then measures 6e-10 and
    one step reaches 8e-17), and a step is kept only if it at least halves
    the relative residual."""
    layer = CvxpyLayer(*_box_lp())
    c = np.array([1.0, -0.5])
    (raw,) = layer(c, np.array(R), solver_args={"refine": 0})
    np.testing.assert_allclose(raw, [-R, R], rtol=1e-6)  # the solver's answer is right
    sol = layer.solve(c, np.array(R))
    assert sol.status[0] is Status.optimal
    np.testing.assert_allclose(sol.values[0], [-R, R], rtol=1e-6)


@pytest.mark.parametrize(("solver", "options"), [("ECOS", {}), ("Clarabel", {"max_iters": 2})])
def test_rescue_regression_scale(solver, options):
    """A solver give-up at |b| = 1e9 is either rescued to the right answer or
    stays a failure (NaN with its status), never a wrong `optimal`. (Today
    both stay failures: ECOS numerical_error, Clarabel max_iterations.)"""
    layer = CvxpyLayer(*_box_lp(), solver=solver)
    c, R = np.array([1.0, -0.5]), 1e9
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sol = layer.solve(c, np.array(R), solver_args=options, throw=False)
    if sol.status[0].ok:
        np.testing.assert_allclose(sol.values[0], [-R, R], rtol=1e-6)
    else:
        assert sol.status[0] in (Status.numerical_error, Status.max_iterations)
        assert np.isnan(sol.values[0]).all()


def test_refine_regression_scs_lp_active_set():
    """Refinement reaches the exact solution of a regular LP from SCS's
    default-accuracy answer (relative residual 2.7e-5).

    The LP has three active rows and a fourth active to 1.4e-4; SCS's answer
    had all four active (y₄ = 0.03). On that wrong piece of N the full Newton
    step raised the residual to 10 (K's condition there is 2.4e7, at the
    solution 191), the least-squares step lowered it only to 1.1e-5 and the
    next ones not at all, and refinement stopped with x 2e-4 off. Fixed in
    _refine: where the full step falls short and changes the sign of a row of v,
    refinement crosses the first such boundary on the Newton ray (a simplex
    pivot: the fourth row leaves) and takes the Newton step from there, kept
    because it is decisive: 2.7e-5 → 8e-17 (x within 2e-12 of the ECOS
    reference)."""
    family = LPFamily()
    c = np.array([1.66300861030534, -0.22860602211605668, 0.04094135062068737])
    G = np.vstack([np.eye(3), -np.eye(3),
                   [[0.13889785472403726, 0.9563212908208856, -0.2566810217545283],
                    [-0.2655169998790117, -0.7183355824796458, 0.7115554091129266]]])
    h = np.array([1.7528883774203114, 1.8879501775286123, 1.368680675043505,
                  0.24711162257968855, 0.11204982247138773, 0.631319324956495,
                  1.4272676462878446, -0.3371012164922259])
    ref = family.reference([c, G, h])
    (tight,) = family.layer("Clarabel")(c, G, h)
    np.testing.assert_allclose(tight, ref, atol=LP_TOL)  # the LP itself is benign
    sol = family.layer("SCS").solve(c, G, h)
    assert sol.status[0] is Status.optimal
    np.testing.assert_allclose(sol.values[0], ref, atol=LP_TOL)  # 2e-4 off


@pytest.mark.parametrize("c, R, h", [
    pytest.param(  # from test_infeasible_and_unbounded_items_leave_the_others_exact, seed=334
        [1.2509470467068984, 0.45359386083109404, 1.9529780310283826],
        [[-0.8518475879215578, 0.32052563546461466, 0.03671654511585899],
         [0.534595309425015, 0.5413636000079747, 0.7397663422117681]],
        [0.345373540331545, 1.5968951165501846, 0.18467795533001485, 1.654626459668455,
         0.40310488344981543, 1.8153220446699851, 1.2132721536154865, 0.12936306817939114],
        id="row-too-many"),
    pytest.param(  # LPFamily.feasible, 1 of ~1,000 draws
        [-0.03979972831851215, 1.244461042077476, 0.30863035604870565],
        [[-1.3418346703418838, 0.5115028032048643, -0.1468174872825484],
         [0.2177671413077409, -0.00314766566790528, -1.6829582846766185]],
        [1.1437317885191853, 0.2751472393366945, 0.7665216432460891, 0.8562682114808147,
         1.7248527606633055, 1.233478356753911, 0.07062591351026204, 1.2492753859596144],
        id="row-too-few"),
])
def test_refine_regression_scs_lp_near_degenerate_piece(c, R, h):
    """Refinement reaches the exact solution from SCS's default-accuracy answer
    where the answer sits on a neighbouring piece of N that the Newton ray
    does not cross.

    row-too-many: rows 4-6 active, row 3 active to 4.2e-4; SCS had row 3
    active too (y₃ = 0.57). The Newton ray crossed rows 4 and 6 instead, the
    least-squares step fell short: x 2e-4 off, `optimal`, relative residual
    6.4e-5. row-too-few: rows 4, 6, 7 active, the multiplier of row 6 only
    1e-4; SCS's x was on the edge of rows 4 and 7 (row 6 slack 1.49), 1.09
    from the solution (the objective 1e-4 off). Both pieces are nearly
    degenerate (K's smallest singular value 1e-6 of its largest); fixed in
    _refine._step by the pivot along that nearly null direction, 6e-5 → 1e-16
    in one Newton step from the next piece."""
    family = LPFamily()
    G = np.vstack([np.eye(3), -np.eye(3), R])
    c, h = np.array(c), np.array(h)
    ref = family.reference([c, G, h])
    sol = family.layer("SCS").solve(c, G, h)
    assert sol.status[0] is Status.optimal
    assert sol.residual[0] <= 1e-14
    np.testing.assert_allclose(sol.values[0], ref, atol=LP_TOL)


def test_refine_regression_marginal_balanced_start_sparsemax():
    """A marginally better starting point must not replace the solver's own.
    Sparsemax, n = 50, Clarabel at its defaults (a draw of the performance
    suite): from v = y − s (relative residual 3.5e-4) Newton converges in two
    steps; the scale-aware balanced start (2.7e-4, lower but not decisively)
    sat on a wrong piece of N and three factorizations left the item there,
    `optimal` with x 1.5e-5 off. Fixed in _refine._start: the balanced start is
    taken only when it at least halves the residual."""
    rng = np.random.default_rng(0)
    rng.standard_normal((1, 50))
    z = rng.standard_normal((4, 50))[3]
    x = cp.Variable(50)
    zp = cp.Parameter(50)
    layer = CvxpyLayer(cp.Problem(cp.Minimize(cp.sum_squares(x - zp)), [cp.sum(x) == 1, x >= 0]),
                       [zp], [x])
    u = np.sort(z)[::-1]  # closed form: x = max(z − τ, 0) with Σx = 1
    k = np.arange(1, z.size + 1)
    support = k[u - (np.cumsum(u) - 1) / k > 0][-1]
    expected = np.maximum(z - (np.cumsum(u)[support - 1] - 1) / support, 0.0)
    sol = layer.solve(z)
    assert sol.status[0] is Status.optimal
    assert sol.residual[0] <= 1e-14
    np.testing.assert_allclose(sol.values[0], expected, atol=1e-13)
