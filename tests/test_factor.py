"""The LU factorizations of K: condition estimates against exact condition numbers.

Oracle: ``numpy.linalg.cond(K, 1)`` (from the explicit inverse). Hager's
estimator is a lower bound by construction (‖K⁻¹x‖₁ for a unit vector x);
LAPACK documents it as almost always within a factor 3, and ``gecon`` (the
dense LU's estimator, the same algorithm) is held to the same test.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from conelayers._factor import (
    _NEARBY_DENSE_MIN_ORDER,
    _PRUNE_MIN_ORDER,
    DenseLU,
    NearbyLU,
    SparseLU,
    SparseOrdering,
    _inverse_norm_1,
)


def _matrices(rng):
    for n in (1, 2, 7, 60, 200):
        yield sp.csc_array(sp.random_array((n, n), density=0.05, rng=rng)
                           + sp.diags_array(rng.uniform(1e-3, 1.0, n)))
    # Graded and badly scaled: condition ~1e10.
    d = np.logspace(0, -10, 40)
    Q, _ = np.linalg.qr(rng.standard_normal((40, 40)))
    yield sp.csc_array(Q * d)
    # Kahan's matrix: triangular, the LU's pivots look harmless, K⁻¹ is huge.
    n, c = 30, 0.3
    s = np.sqrt(1 - c**2)
    yield sp.csc_array(np.diag(s ** np.arange(n)) @ (np.eye(n) - c * np.triu(np.ones((n, n)), 1)))


@pytest.mark.parametrize("kind", ["sparse", "dense"])
def test_condition_estimates_bound_the_true_condition(kind, rng):
    for K in _matrices(rng):
        true = np.linalg.cond(K.toarray(), 1)
        lu = SparseLU(K) if kind == "sparse" else DenseLU(np.asfortranarray(K.toarray()))
        est = lu.condition
        assert est <= true * (1 + 1e-8)
        assert est >= true / 3


def test_inverse_norm_of_a_permutation_and_a_diagonal_is_exact():
    n = 9
    P = np.eye(n)[np.random.default_rng(0).permutation(n)]
    for M in (P, np.diag(np.arange(1.0, n + 1)), P * np.arange(1.0, n + 1)):
        inv = np.linalg.inv(M)
        est = _inverse_norm_1(lambda v, inv=inv: inv @ v, lambda v, inv=inv: inv.T @ v, n)
        assert est == pytest.approx(np.abs(inv).sum(axis=0).max(), rel=1e-14)


def test_singular_sparse_K_has_infinite_condition():
    K = sp.csc_array(np.array([[1.0, 2.0], [2.0, 4.0]]))
    lu = SparseLU(K)
    assert lu.singular and lu.condition == np.inf


@pytest.mark.parametrize("spec", ["MMD_AT_PLUS_A", "COLAMD"])
def test_stored_zeros_of_K_make_no_fill(spec, rng):
    # An arrow whose dense first row and column are stored zeros: factored as
    # stored, they are in L + U (and would fill it, ordered first); without
    # them L + U is the diagonal. Solves and the condition estimate are K's.
    n = _PRUNE_MIN_ORDER  # (smaller K are factored as stored)
    d = rng.uniform(1.0, 2.0, n)
    K = sp.csc_array(sp.diags_array(d) + sp.csc_array(
        (np.ones(2 * n - 1), (np.r_[np.zeros(n), np.arange(1, n)],
                              np.r_[np.arange(n), np.zeros(n - 1)])), shape=(n, n)))
    K.data[(K.indices != np.repeat(np.arange(n), np.diff(K.indptr)))] = 0.0
    stored = K.nnz
    lu = SparseLU(K, spec)
    assert K.nnz == stored  # K keeps its pattern (products read it)
    assert spla.splu(K, permc_spec=spec).nnz > 2 * n  # SuperLU on the stored pattern
    assert lu.nbytes == 12 * 2 * n  # L's unit diagonal and U's diagonal
    x = rng.standard_normal(n)
    assert np.allclose(lu.solve(K @ x), x, rtol=1e-14, atol=0)
    assert lu.condition == pytest.approx(np.linalg.cond(K.toarray(), 1), rel=1e-12)


def test_dense_pivots_are_the_magnitudes_of_Us_diagonal(rng):
    K = rng.standard_normal((6, 6))
    import scipy.linalg as sla

    _, _, U = sla.lu(K)
    np.testing.assert_allclose(np.sort(DenseLU(K).pivots()), np.sort(np.abs(np.diag(U))),
                               rtol=1e-12)


def _factors(lu):
    """P, L, U of a DenseLU's packed factors (LAPACK's row swaps as P)."""
    n = lu._lu.shape[0]
    perm = np.arange(n)
    for i, p in enumerate(lu._piv):
        perm[[i, p]] = perm[[p, i]]
    # The swaps applied in order take K to L U: K[perm] = L U, so P = I[argsort(perm)].
    P = np.eye(n)[np.argsort(perm)]
    return P, np.tril(lu._lu, -1) + np.eye(n), np.triu(lu._lu)


def test_with_pivots_changes_K_in_those_columns_only(rng):
    """The factors with U's small pivots replaced are those of K changed in the
    same columns only (a rank-|J| change), and ``inverse_norm`` (no K at hand)
    bounds the true ‖K̂⁻¹‖ from below within gecon's factor 3.
    Oracle: the factors multiplied out; ``numpy.linalg.inv``."""
    n, r = 40, 33
    K = rng.standard_normal((n, r)) @ rng.standard_normal((r, n))  # rank 33
    lu = DenseLU(K)
    P, L, U = _factors(lu)
    np.testing.assert_allclose(P @ L @ U, K, atol=1e-12 * np.abs(K).max())
    pivots = lu.pivots()
    J = np.flatnonzero(pivots <= 1e-6 * pivots.max())
    assert J.size == n - r  # partial pivoting revealed this rank (the code does not rely on it)
    hat = lu.with_pivots(J, float(pivots.max()))
    P2, L2, U2 = _factors(hat)
    change = P2 @ L2 @ U2 - K
    others = np.setdiff1d(np.arange(n), J)
    assert np.abs(change[:, others]).max() <= 1e-12 * np.abs(K).max()
    assert np.linalg.matrix_rank(change) == J.size
    inv = np.linalg.inv(P2 @ L2 @ U2)
    for norm, axis in (("1", 0), ("I", 1)):
        true = np.abs(inv).sum(axis=axis).max()
        assert true / 3 <= hat.inverse_norm(norm) <= true * (1 + 1e-10)
    rhs = rng.standard_normal(n)
    np.testing.assert_allclose(hat.solve_upper(rhs), np.linalg.solve(U2, rhs), rtol=1e-9)


def _well_conditioned(rng, n=200):
    return sp.csc_array(sp.random_array((n, n), density=0.02, rng=rng)
                        + sp.diags_array(rng.uniform(1.0, 2.0, n)))


def _base(kind, K0):
    """K₀'s factors as refinement hands them over: SuperLU's, or LAPACK's
    with K₀ itself dropped (its condition estimated first)."""
    if kind == "sparse":
        return SparseLU(K0)
    lu = DenseLU(np.asfortranarray(K0.toarray()))
    lu.release_matrix()
    return lu


@pytest.mark.parametrize("kind", ["sparse", "dense"])
@pytest.mark.parametrize("transpose", [False, True])
def test_nearby_lu_solves_the_new_matrix_to_rounding(rng, transpose, kind):
    """K₀'s LU serving K = K₀ + (a 1e-8 change of its entries): the solves are
    K's (oracle: SuperLU of K itself), the condition estimate bounds K's."""
    K0 = _well_conditioned(rng)
    K = K0.copy()
    K.data *= 1 + 1e-8 * rng.standard_normal(K.data.size)
    lu = NearbyLU.of(_base(kind, K0), K)
    assert lu is not None
    for rhs in (rng.standard_normal(K.shape[0]), rng.standard_normal((K.shape[0], 3))):
        sol = lu.solve(rhs, transpose)
        op = K.T if transpose else K
        assert np.linalg.norm(op @ sol - rhs) <= 1e-14 * np.linalg.norm(rhs)
        np.testing.assert_allclose(sol, SparseLU(K).solve(rhs, transpose), rtol=0, atol=1e-13)
        again, rel = lu.solve_checked(rhs, transpose)  # (what it reports is K's residual)
        np.testing.assert_array_equal(again, sol)
        assert rel == pytest.approx(np.linalg.norm(op @ sol - rhs) / np.linalg.norm(rhs),
                                    rel=0.5, abs=1e-16)
    assert lu._own is None  # served by K₀'s factors throughout
    true = np.linalg.cond(K.toarray(), 1)
    assert true / 3 <= lu.condition <= 3 * true


@pytest.mark.parametrize("kind", ["sparse", "dense"])
def test_nearby_lu_stops_sweeping_at_the_rounding_floor(rng, kind, monkeypatch):
    """Where K's condition puts the residual's rounding floor above the 1e-15
    target, the sweeps stop once one no longer halves the residual, at a
    residual as small as sweeping to the limit reaches (oracle: the same
    solves with the stopping rule off)."""
    import conelayers._factor as factor

    n = 120
    U = np.linalg.qr(rng.standard_normal((n, n)))[0]
    V = np.linalg.qr(rng.standard_normal((n, n)))[0]
    K0 = sp.csc_array(U @ np.diag(np.logspace(0, -3, n)) @ V.T)  # condition 1e3
    K = K0.copy()
    K.data *= 1 + 1e-12 * rng.standard_normal(K.data.size)
    products = []

    def counted(v, transpose):
        products.append(1)
        return K.T @ v if transpose else K @ v

    rhs = [rng.standard_normal(n) for _ in range(6)]
    outcome, rule = {}, factor._NEARBY_STALL
    for stall in (rule, np.inf):
        monkeypatch.setattr(factor, "_NEARBY_STALL", stall)
        products.clear()
        lu = NearbyLU.of(_base(kind, K0), K, counted)
        assert lu is not None
        rels = [lu.solve_checked(r)[1] for r in rhs]
        assert lu._own is None and all(rel is not None for rel in rels)
        outcome[stall] = (len(products), max(rels))
    (fast, rel), (slow, rel_limit) = outcome[rule], outcome[np.inf]
    assert rel_limit > 1e-15  # the target is out of reach here ...
    assert fast < slow  # ... and the sweeps stopped short of the limit
    assert rel <= max(2 * rel_limit, 1e-14)


@pytest.mark.parametrize("kind", ["sparse", "dense"])
def test_nearby_lu_declines_a_far_matrix(rng, kind):
    K0 = _well_conditioned(rng)
    K = K0.copy()
    K.data *= 1 + 0.5 * rng.standard_normal(K.data.size)
    assert NearbyLU.of(_base(kind, K0), K) is None


@pytest.mark.parametrize("kind", ["sparse", "dense"])
def test_nearby_lu_factors_K_when_refinement_does_not_converge(rng, kind):
    """A change the acceptance test cannot see (a rank-one E with Ev = 0 for
    its random vector v) but refinement does: K factors itself (with the
    base's kind of LU), and the solve is still K's."""
    K0 = _well_conditioned(rng)
    n = K0.shape[0]
    v = np.random.default_rng(n).standard_normal(n)  # NearbyLU.of's test vector
    w = rng.standard_normal(n)
    w -= (w @ v) / (v @ v) * v
    K = sp.csc_array(K0 + np.outer(rng.standard_normal(n), w) / np.linalg.norm(w))
    lu = NearbyLU.of(_base(kind, K0), K)
    assert lu is not None  # fooled, by construction
    rhs = rng.standard_normal(n)
    sol, rel = lu.solve_checked(rhs)
    assert rel is None  # K's own LU solved: the caller checks the residual
    assert isinstance(lu._own, SparseLU if kind == "sparse" else DenseLU)
    assert np.linalg.norm(K @ sol - rhs) <= 1e-13 * np.linalg.norm(rhs)
    np.testing.assert_allclose(lu.condition, lu._own.condition)
    true = np.linalg.cond(K.toarray(), 1)
    assert true / 3 <= lu.condition <= true * (1 + 1e-8)


def test_which_factors_serve_a_nearby_K(rng):
    """SuperLU's always; dense ones from ``_NEARBY_DENSE_MIN_ORDER`` (below,
    a new LU costs less than the sweeps); nothing else."""
    assert NearbyLU.serves(SparseLU(sp.csc_array(np.eye(3))))
    for n, serves in ((_NEARBY_DENSE_MIN_ORDER - 1, False), (_NEARBY_DENSE_MIN_ORDER, True)):
        assert NearbyLU.serves(DenseLU(np.eye(n) + 0.1 * rng.standard_normal((n, n)))) is serves
    assert not NearbyLU.serves(None)


def _fill(K, spec):
    return spla.splu(K, permc_spec=spec).nnz


def test_sparse_ordering_keeps_the_candidate_with_less_fill(rng):
    # Oracle: SciPy's own splu with each ordering. Random patterns, where either
    # ordering can win, and a symmetric one, where minimum degree on Kᵀ + K wins.
    chosen = set()
    B = sp.random_array((300, 300), density=0.01, rng=rng)
    matrices = [sp.csc_array(sp.random_array((n, n), density=d, rng=rng)
                             + sp.diags_array(rng.uniform(1e-3, 1.0, n)))
                for n, d in ((60, 0.01), (60, 0.03), (200, 0.01), (400, 0.03))]
    for K in [*matrices, sp.csc_array(B + B.T + sp.diags_array(rng.uniform(1.0, 2.0, 300)))]:
        fills = {spec: _fill(K, spec) for spec in ("MMD_AT_PLUS_A", "COLAMD")}
        ordering = SparseOrdering(K.shape[0])
        lu = ordering.factor(K)
        assert ordering.spec == lu.spec == min(fills, key=fills.get)
        chosen.add(ordering.spec)
        rhs = rng.standard_normal(K.shape[0])
        np.testing.assert_allclose(K @ lu.solve(rhs), rhs, atol=1e-10)
        # Later factorizations (another K on the pattern) use the choice.
        K2 = K.copy()
        K2.data = K2.data * rng.uniform(0.5, 2.0, K2.nnz)
        assert ordering.factor(K2).spec == ordering.spec
    assert chosen == {"MMD_AT_PLUS_A", "COLAMD"}  # both candidates were needed


def test_sparse_ordering_of_large_or_singular_K_and_pickling():
    assert SparseOrdering(1001).spec == "MMD_AT_PLUS_A"  # no trial factorizations
    singular = sp.csc_array(np.array([[1.0, 2.0], [2.0, 4.0]]))
    regular = sp.csc_array(np.array([[2.0, 1.0], [1.0, 3.0]]))
    ordering = SparseOrdering(2)
    assert ordering.factor(singular).singular and ordering.spec is None  # nothing learned
    copy = pickle.loads(pickle.dumps(ordering))
    assert copy.spec is None
    assert copy.factor(regular).spec == copy.spec is not None
    for _ in range(2):  # three singular K in all: the default stays
        assert ordering.factor(singular).singular
    assert ordering.spec == "MMD_AT_PLUS_A"


def test_nearby_fallback_factors_with_the_base_ordering(rng):
    K0 = sp.csc_array(sp.random_array((80, 80), density=0.05, rng=rng) + sp.eye_array(80))
    base = SparseLU(K0, "COLAMD")
    far = sp.csc_array(K0 + 0.5 * sp.eye_array(80))
    near = NearbyLU(base, far, 0.0)  # (told it converges: it will not)
    rhs = rng.standard_normal(80)
    np.testing.assert_allclose(far @ near.solve(rhs), rhs, atol=1e-10)
    assert near._own is not None and near._own.spec == "COLAMD"


_SHARED_LU_SCRIPT = """
import threading
import numpy as np
from conelayers._factor import {cls}
rng = np.random.default_rng(0)
K = rng.standard_normal((157, 157)) + 20 * np.eye(157)
lu = {make}
rhs = rng.standard_normal(157)
want = (lu.solve(rhs), lu.solve(rhs, True))
wrong = []
barrier = threading.Barrier(2)

def work():
    barrier.wait()
    for _ in range(3000):
        got = (lu.solve(rhs), lu.solve(rhs, True))
        if not all(np.array_equal(g, w) for g, w in zip(got, want)):
            wrong.append(1)

threads = [threading.Thread(target=work) for _ in range(2)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(len(wrong))
"""


@pytest.mark.parametrize("cls, make", [
    ("DenseLU", "DenseLU(K)"),
    ("SparseLU", "SparseLU(__import__('scipy.sparse').sparse.csc_array(K))"),
], ids=["dense", "sparse"])
def test_one_lu_solves_from_two_threads_at_once(cls, make):
    """Two threads solving with one LU get what one thread gets, bit for bit.

    SciPy's ``dgetrs`` wrapper shifts the pivot array to 1-based in place
    around the LAPACK call, with the GIL released: a DenseLU that handed it its
    own pivots gave wrong solutions or corrupted the heap (the interpreter
    aborted: "double free or corruption", "malloc(): invalid size"), which is
    why this runs in a child process. Oracle: the same solves on one thread.
    """
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", _SHARED_LU_SCRIPT.format(cls=cls, make=make)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"the child process died: {done.stderr[-2000:]}"
    assert done.stdout.strip() == "0", "solves from two threads differed from one thread's"
