"""The parametric cone program: the affine map C (θ → A, b, c, d) and the maps R.

Oracles: CVXPY's own problem data at the same parameter values
(``problem.get_problem_data(cp.DIFFCP)`` and its ``ParamConeProg``), CVXPY's
own optimal value, affinity and dot-product (adjoint) identities, and
per-item calls for batches.
"""

from __future__ import annotations

import functools

import cvxpy as cp
import numpy as np
import pytest
from problems import CASES

from conelayers._rewrite import without_free_epigraphs
from conelayers._solvers import get_solver
from conelayers.internal import canonicalize

NAMES = list(CASES)

# C's entries and the parameters are O(1)–O(10), and each output entry sums a few
# products: two evaluations of the same linear map in different orders differ by
# ~1e-15 relative. 1e-12 (relative to the size of the values) is rounding level
# with margin; any wrong coefficient shows at O(1).
ROUND = 1e-12


@functools.cache
def _compiled(name):
    case = CASES[name]()
    return case, canonicalize(case.problem, case.parameters, case.variables, gp=case.gp)


def compiled(name):
    return _compiled(name)


def theta_of(program, values):
    """θ from the user's values: each flattened column-major, log for GP parameters."""
    parts = []
    for spec, value in zip(program.parameters, values, strict=True):
        flat = np.ravel(np.asarray(value, dtype=float), order="F")
        parts.append(np.log(flat) if spec.log else flat)
    return np.concatenate(parts)


def close(a, b, tol=ROUND):
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    assert a.shape == b.shape, (a.shape, b.shape)
    scale = 1.0 + max(np.abs(a).max(initial=0), np.abs(b).max(initial=0))
    assert np.abs(a - b).max(initial=0) <= tol * scale


def cvxpy_data(case, values):
    """CVXPY's data of the problem the layer canonicalizes (the user's, or its
    rewrite without free epigraph variables: conelayers._rewrite)."""
    for p, v in zip(case.parameters, values, strict=True):
        p.value = v
    problem = case.problem if case.gp else without_free_epigraphs(case.problem)[0]
    data, _, _ = problem.get_problem_data(cp.DIFFCP, gp=case.gp)
    _, d, _, _ = data[cp.settings.PARAM_PROB].apply_parameters()
    return data, float(d)


# ---------------------------------------------------------------------------
# C: parameters → data


@pytest.mark.parametrize("name", NAMES)
def test_apply_gives_cvxpys_problem_data_at_the_same_parameters(name, rng):
    case, program = compiled(name)
    values = case.sample(rng)
    vals, b, c, d = program.apply(theta_of(program, values)[None])
    data, d_ref = cvxpy_data(case, values)
    assert program.layout.to_scs()["z"] == data["dims"].zero
    close(program.matrix(vals[0]).toarray(), data["A"].toarray())
    close(b[0], data["b"])
    close(c[0], data["c"])
    close(d[0], d_ref)


@pytest.mark.parametrize("name", NAMES)
def test_apply_is_affine_and_apply_linear_is_its_linear_part(name, rng):
    case, program = compiled(name)
    t1 = theta_of(program, case.sample(rng))
    t2 = theta_of(program, case.sample(rng))
    for a in (0.3, 2.0):  # an interpolation and an extrapolation
        mixed = program.apply((a * t1 + (1 - a) * t2)[None])
        separate = [a * p + (1 - a) * q
                    for p, q in zip(program.apply(t1[None]), program.apply(t2[None]), strict=True)]
        for got, want in zip(mixed, separate, strict=True):
            close(got, want)
    at_zero = program.apply(np.zeros((1, program.param_size)))
    # apply_linear gives (dA, db, dc): zip stops before apply's constant d.
    for got, full, base in zip(program.apply_linear(t1[None]), program.apply(t1[None]), at_zero,
                               strict=False):
        close(got, full - base)


@pytest.mark.parametrize("name", NAMES)
def test_apply_adjoint_is_the_adjoint_of_apply_linear(name, rng):
    """⟨apply_linear(dθ), w⟩ = ⟨dθ, apply_adjoint(w)⟩ for random dθ and w."""
    _, program = compiled(name)
    dtheta = rng.standard_normal((2, program.param_size))
    w = (rng.standard_normal((2, program.nnz)), rng.standard_normal((2, program.m)),
         rng.standard_normal((2, program.n)))
    forward = program.apply_linear(dtheta)
    back = program.apply_adjoint(*w)
    assert back.shape == dtheta.shape
    for i in range(2):
        lhs = sum(float(f[i] @ g[i]) for f, g in zip(forward, w, strict=True))
        rhs = float(dtheta[i] @ back[i])
        scale = (np.linalg.norm(dtheta[i]) * sum(np.linalg.norm(g[i]) for g in w)
                 * max(1.0, abs(program.C).max()))
        assert abs(lhs - rhs) <= ROUND * scale


@pytest.mark.parametrize("name", NAMES)
def test_apply_on_a_batch_equals_apply_on_each_item(name, rng):
    case, program = compiled(name)
    batch = np.stack([theta_of(program, case.sample(rng)) for _ in range(4)])
    together = program.apply(batch)
    assert [a.shape for a in together] == [(4, program.nnz), (4, program.m), (4, program.n), (4,)]
    for i in range(4):
        alone = program.apply(batch[i : i + 1])
        for t, a in zip(together, alone, strict=True):
            close(t[i], a[0])
    lin = program.apply_linear(batch)
    for i in range(4):
        for t, a in zip(lin, program.apply_linear(batch[i : i + 1]), strict=True):
            close(t[i], a[0])


@pytest.mark.parametrize("name", NAMES)
def test_matrix_has_shape_m_by_n_and_sorted_indices(name, rng):
    case, program = compiled(name)
    vals = program.apply(theta_of(program, case.sample(rng))[None])[0][0]
    A = program.matrix(vals)
    assert A.shape == (program.m, program.n)
    assert A.nnz == program.nnz
    assert A.has_sorted_indices
    indptr, indices = program.A_indptr, program.A_indices
    assert indptr[0] == 0 and indptr[-1] == program.nnz and np.all(np.diff(indptr) >= 0)
    assert np.all((indices >= 0) & (indices < program.m))
    for j in range(program.n):  # strictly increasing: sorted and no duplicates
        assert np.all(np.diff(indices[indptr[j] : indptr[j + 1]]) > 0)


@pytest.mark.parametrize("name", NAMES)
def test_objective_at_the_solution_is_cvxpys_optimal_value(name, rng):
    """Solving (A, b, c) from ``apply`` and evaluating ``objective`` (sign, constant d,
    exp for GP) gives CVXPY's optimal value. Both are Clarabel runs at gap tolerance
    1e-10; measured agreement ≤ 3e-10 relative over the zoo. 1e-8 leaves margin for
    other samples and still catches a wrong sign, constant d or missing exp."""
    case, program = compiled(name)
    values = case.sample(rng)
    vals, b, c, d = program.apply(theta_of(program, values)[None])
    solver = get_solver("Clarabel")
    raw = solver.solve(solver.prepare(program.layout, program.n), program.matrix(vals[0]),
                       b[0], c[0], solver.translate_options({"eps": 1e-10}))
    assert raw.status.ok
    ours = float(program.objective(raw.x[None], c, d)[0])
    for p, v in zip(case.parameters, values, strict=True):
        p.value = v
    ref = case.problem.solve(solver=cp.CLARABEL, gp=case.gp, tol_gap_abs=1e-10,
                             tol_gap_rel=1e-10, tol_feas=1e-10)
    assert ours == pytest.approx(ref, rel=1e-8, abs=1e-8)


# ---------------------------------------------------------------------------
# R: solution → outputs


def random_solution(program, rng, batch):
    return rng.standard_normal((batch, program.n)), rng.standard_normal((batch, program.m))


@pytest.mark.parametrize("name", NAMES)
def test_recover_adjoint_is_the_adjoint_of_recover_derivative(name, rng):
    """⟨recover_derivative(dx, dy), W⟩ = ⟨(dx, dy), recover_adjoint(W)⟩ at a point
    (for GP the exp's derivative depends on the point's outputs, given to both)."""
    _, program = compiled(name)
    x, y = random_solution(program, rng, 2)
    x, y = 0.3 * x, 0.3 * y  # keep GP's exp moderate
    outs = program.recover(x, y)
    dx, dy = random_solution(program, rng, 2)
    W = tuple(rng.standard_normal(o.shape) for o in outs)
    forward = program.recover_derivative(dx, dy, outs)
    back_x, back_y = program.recover_adjoint(W, outs)
    assert back_x.shape == dx.shape and back_y.shape == dy.shape
    for i in range(2):
        lhs = sum(float(np.sum(f[i] * w[i])) for f, w in zip(forward, W, strict=True))
        rhs = float(dx[i] @ back_x[i] + dy[i] @ back_y[i])
        scale = (1.0 + max(np.abs(o[i]).max() for o in outs)) * (
            np.linalg.norm(np.concatenate([dx[i], dy[i]]))
            * np.sqrt(sum(np.sum(w[i] ** 2) for w in W)))
        assert abs(lhs - rhs) <= ROUND * scale


@pytest.mark.parametrize("name", NAMES)
def test_recover_derivative_is_the_tangent_of_recover(name, rng):
    """Central difference of recover along (dx, dy): exact for the linear outputs;
    for GP's exp, error O(h²) with h = 1e-5 and O(1) arguments: ~1e-10, below 1e-7."""
    case, program = compiled(name)
    x, y = random_solution(program, rng, 1)
    x, y = 0.3 * x, 0.3 * y
    dx, dy = random_solution(program, rng, 1)
    h = 1e-5
    plus = program.recover(x + h * dx, y + h * dy)
    minus = program.recover(x - h * dx, y - h * dy)
    tangent = program.recover_derivative(dx, dy, program.recover(x, y))
    for p, m_, t in zip(plus, minus, tangent, strict=True):
        close(t, (p - m_) / (2 * h), tol=1e-7 if case.gp else 1e-9)


def test_recover_adjoint_treats_a_missing_cotangent_as_zero(rng):
    _, program = compiled("qp")
    assert len(program.outputs) >= 2
    x, y = random_solution(program, rng, 2)
    outs = program.recover(x, y)
    W = [rng.standard_normal(o.shape) for o in outs]
    with_none = program.recover_adjoint((W[0], *[None] * (len(W) - 1)), outs)
    with_zeros = program.recover_adjoint((W[0], *[np.zeros_like(w) for w in W[1:]]), outs)
    for a, b in zip(with_none, with_zeros, strict=True):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("name", NAMES)
def test_recover_on_a_batch_equals_recover_on_each_item(name, rng):
    _, program = compiled(name)
    x, y = random_solution(program, rng, 3)
    x, y = 0.3 * x, 0.3 * y
    together = program.recover(x, y)
    W = tuple(rng.standard_normal(o.shape) for o in together)
    adj = program.recover_adjoint(W, together)
    for i in range(3):
        alone = program.recover(x[i : i + 1], y[i : i + 1])
        for t, a, out in zip(together, alone, program.outputs, strict=True):
            assert t.shape == (3, *out.shape)
            close(t[i], a[0])
        adj_i = program.recover_adjoint(tuple(w[i : i + 1] for w in W),
                                        tuple(o[i : i + 1] for o in together))
        for t, a in zip(adj, adj_i, strict=True):
            close(t[i], a[0])


def test_recover_reshapes_column_major(rng):
    """A (3, 2) matrix variable: out[:, i, j] is entry i + 3j of R [x; y]."""
    _, program = compiled("matrix_nonneg")
    x, y = random_solution(program, rng, 2)
    out = program.recover(x, y)[0]
    R = program.outputs[0].R
    flat = (R @ np.concatenate([x, y], axis=1).T).T
    assert out.shape == (2, 3, 2)
    for i in range(3):
        for j in range(2):
            assert np.array_equal(out[:, i, j], flat[:, i + 3 * j])
