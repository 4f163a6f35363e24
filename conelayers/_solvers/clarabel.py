"""Clarabel adapter (interior point; PSD blocks in upper-triangle order)."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any

import numpy as np
import scipy.sparse as sp

from .._cones import PSD, SOC, ConeLayout, Exp, Nonneg, Zero, svec_permutation_to_upper
from .._epigraph import Lifting, lifting
from .._errors import Status
from .._typing import CSC, FloatArray, IntArray
from ._base import AbstractSolver, ItemSolve, Range, RawSolution, finite_or_failed

__all__ = ["ClarabelSolver"]

STATUS_MAP = {
    "Solved": Status.optimal,
    "AlmostSolved": Status.optimal_inaccurate,
    "PrimalInfeasible": Status.infeasible,
    "DualInfeasible": Status.unbounded,
    "AlmostPrimalInfeasible": Status.infeasible_inaccurate,
    "AlmostDualInfeasible": Status.unbounded_inaccurate,
    "MaxIterations": Status.max_iterations,
    "MaxTime": Status.max_iterations,
    "NumericalError": Status.numerical_error,
    "InsufficientProgress": Status.numerical_error,
    "Unsolved": Status.solver_error,
    "CallbackTerminated": Status.solver_error,
}

_SETTINGS = frozenset({
    "max_iter", "time_limit", "verbose", "max_step_fraction", "tol_gap_abs", "tol_gap_rel",
    "tol_feas", "tol_infeas_abs", "tol_infeas_rel", "tol_ktratio", "reduced_tol_gap_abs",
    "reduced_tol_gap_rel", "reduced_tol_feas", "reduced_tol_infeas_abs",
    "reduced_tol_infeas_rel", "reduced_tol_ktratio", "equilibrate_enable",
    "equilibrate_max_iter", "equilibrate_min_scaling", "equilibrate_max_scaling",
    "linesearch_backtrack_step", "min_switch_step_length", "min_terminate_step_length",
    "max_threads", "direct_kkt_solver", "direct_solve_method", "static_regularization_enable",
    "static_regularization_constant", "static_regularization_proportional",
    "dynamic_regularization_enable", "dynamic_regularization_eps",
    "dynamic_regularization_delta", "iterative_refinement_enable",
    "iterative_refinement_reltol", "iterative_refinement_abstol",
    "iterative_refinement_max_iter", "iterative_refinement_stop_ratio", "presolve_enable",
    "chordal_decomposition_enable", "chordal_decomposition_merge_method",
    "chordal_decomposition_compact", "chordal_decomposition_complete_dual",
    "input_sparse_dropzeros",
})

# Clarabel's set-up checks its settings' types, not their values: it took
# tolerances of -1 (then stopped AlmostSolved), NaN ones (NumericalError),
# time_limit = -1 (every item MaxTime) and max_step_fraction = 5 (found by a
# probe). The ranges its algorithm needs: tolerances and scalings positive,
# step lengths and fractions in (0, 1], regularizations nonnegative.
_POSITIVE, _NONNEGATIVE = Range(0.0, math.inf), Range(0.0, math.inf, closed_low=True)
_FRACTION = Range(0.0, 1.0)
_RANGES = MappingProxyType({
    **dict.fromkeys(
        ["tol_gap_abs", "tol_gap_rel", "tol_feas", "tol_infeas_abs", "tol_infeas_rel",
         "tol_ktratio", "reduced_tol_gap_abs", "reduced_tol_gap_rel", "reduced_tol_feas",
         "reduced_tol_infeas_abs", "reduced_tol_infeas_rel", "reduced_tol_ktratio",
         "equilibrate_min_scaling", "equilibrate_max_scaling", "dynamic_regularization_eps",
         "dynamic_regularization_delta", "iterative_refinement_stop_ratio"], _POSITIVE),
    **dict.fromkeys(
        ["static_regularization_constant", "static_regularization_proportional",
         "iterative_refinement_reltol", "iterative_refinement_abstol"], _NONNEGATIVE),
    **dict.fromkeys(
        ["max_step_fraction", "linesearch_backtrack_step", "min_switch_step_length",
         "min_terminate_step_length"], _FRACTION),
    "time_limit": Range(0.0, math.inf, infinite=True),  # (seconds; inf: none)
})

# From this many stored entries of A, Clarabel's supernodal LDLᵀ (``faer``, on
# one thread: our items already run in parallel) is faster than its default
# QDLDL. Raw solves per item on the benchmark suite, this machine: dense QP
# (32,770 entries) 44 → 33 ms, sparse QP (24,025) 1,054 → 813 ms; the small
# problems (152 to 1,102 entries) were 1–8 % slower with faer, so they keep QDLDL.
# An explicit ``direct_solve_method`` (or ``max_threads``) in the options wins.
_FAER_NNZ = 10_000
# Below that size the solve is the cheap part of an item: refinement (an LU and
# residual evaluations per Newton step) costs more, and runs beside the solving
# threads. So where refinement follows, small programs are solved to 1e-11
# (Clarabel's default is 1e-8): a few more interior-point iterations give
# refinement a closer start (``for_refinement``). Measured per item, forward,
# B = 64 (default threads), interleaved, default → 1e-11: NNLS + l1 4.55 → 3.72
# ms, logistic 3.33 → 2.83, QP 0.94 → 0.89, sparsemax 1.12 → 1.06, SDP 1.31 →
# 1.25; at B = 1 (no overlap) NNLS + l1 −16 %, logistic +6 %, the others within
# 3 %. Large programs keep the default: their solve is the bottleneck (dense QP,
# B = 16: +4–8 % at 1e-11). Without refinement (``refine=0``) Clarabel's own
# default stands: at 1e-11 it stops AlmostSolved more often (an SOCP of the test
# zoo, 2 of 3 items), and nothing would polish those answers. An explicit
# ``eps`` wins.
_SMALL_EPS = 1e-11


def _has_faer(clarabel: Any) -> bool:
    """Whether this Clarabel build accepts ``direct_solve_method="faer"`` (a
    build without it rejects the setting: "Bad value for field")."""
    settings = clarabel.DefaultSettings()
    settings.direct_solve_method, settings.verbose = "faer", False
    try:
        clarabel.DefaultSolver(sp.csc_array((1, 1)), np.zeros(1), sp.csc_array(np.ones((1, 1))),
                               np.ones(1), [clarabel.NonnegativeConeT(1)], settings)
    except Exception:  # "Bad settings: Bad value for field direct_solve_method"
        return False
    return True


class ClarabelSolver(AbstractSolver):
    name = "Clarabel"
    required_modules = ("clarabel",)
    supported_cones = frozenset({Zero, Nonneg, SOC, PSD, Exp})
    native_options = _SETTINGS
    portable_options = MappingProxyType({
        "eps": ("tol_gap_abs", "tol_gap_rel", "tol_feas"),
        "max_iters": ("max_iter",),
        "verbose": ("verbose",),
    })
    defaults = MappingProxyType({"verbose": False})
    ranges = _RANGES
    tight_eps = 1e-12  # Clarabel reaches it on the benchmark suite (its reference solves)
    refining_eps, refining_max_nnz = _SMALL_EPS, _FAER_NNZ

    @classmethod
    def refusal(cls, options: Mapping[str, Any]) -> str | None:
        import clarabel

        try:  # setattr checks types; the solver's set-up checks values
            clarabel.DefaultSolver(sp.csc_matrix((1, 1)), np.ones(1), sp.csc_matrix([[-1.0]]),
                                   np.zeros(1), [clarabel.NonnegativeConeT(1)],
                                   _settings(False, 1, options))
        except Exception as exc:  # (Clarabel raises a bare Exception for bad settings)
            return str(exc)
        return None

    def prepare(self, layout: ConeLayout, n: int,
                pattern: tuple[IntArray, IntArray] | None = None) -> _Prepared:
        """The cone program's formulation and, where A's ``pattern`` has
        squared-norm epigraphs and the QP form pays (``_solves_as_qp``), the
        QP's (:mod:`conelayers._epigraph`)."""
        import clarabel

        # (P = 0 built once: SciPy's empty csc_matrix((n, n)) costs 0.1 ms, a
        # tenth of sparsemax's whole solve.)
        cone = _Form(_native_cones(clarabel, layout, set()), _psd_order(layout),
                     sp.csc_array((n, n)))
        qp = None
        lifted = lifting(layout, n, *pattern) if pattern is not None else None
        if pattern is not None and lifted is not None and _solves_as_qp(lifted, n,
                                                                         pattern[0].size):
            position = np.full(layout.dim, -1)
            position[lifted.rows] = np.arange(lifted.rows.size)
            perm = None if cone.perm is None else position[cone.perm[lifted.rows]]
            k = lifted.shape[1]
            u = np.arange(lifted.columns_kept.size, k)
            P = sp.csc_array((np.ones(u.size), u, np.searchsorted(u, np.arange(k + 1))),
                             shape=(k, k))
            qp = _Form(_native_cones(clarabel, layout, set(lifted.heads.tolist())), perm, P,
                       lifted)
        return _Prepared(cone, qp, _has_faer(clarabel))

    def solve(
        self, prepared: Any, A: CSC, b: FloatArray, c: FloatArray, options: Mapping[str, Any]
    ) -> RawSolution:
        """A fresh solve; as the QP where the item's values make its epigraphs
        ones, and as the cone program where that solve fails (the cone
        program's own certificates and statuses then stand)."""
        import clarabel

        spent = 0
        if prepared.qp is not None and prepared.qp.serves(A, b, c):
            raw = prepared.qp.fresh(clarabel, A, b, c, prepared.faer, options)
            if raw.status.ok:
                return raw
            spent = raw.iterations
        raw = prepared.cone.fresh(clarabel, A, b, c, prepared.faer, options)
        return replace(raw, iterations=raw.iterations + spent) if spent else raw

    def solving(self, prepared: Any, options: Mapping[str, Any],
                seed: Callable[[], tuple[CSC, FloatArray, FloatArray]]) -> ItemSolve:
        """Items solved by one Clarabel solver per thread, set up on ``seed``'s
        item and updated to each item's (A, b, c) (:class:`_Updated`), on
        programs with fewer than ``_UPDATE_MAX_NNZ`` stored entries of A; afresh
        on larger ones and where the options rule updates out (presolve or the
        dropping of stored zeros asked for)."""
        if any(options.get(key) for key in _NO_UPDATES) or seed()[0].nnz >= _UPDATE_MAX_NNZ:
            return super().solving(prepared, options, seed)
        return _Updated(self, prepared, options, seed)


# Largest programs (stored entries of A) whose items share a set-up solver. On
# large ones the set-up is a small part of the solve, and the first item's
# equilibration served the others badly: the sparse QP of the benchmark (24,025
# entries), 4 items, updated solves NumericalError on 2 (each then solved
# afresh: the forward at B = 32 1.17 → 1.61 s per item).
_UPDATE_MAX_NNZ = _FAER_NNZ


# Options under which Clarabel refuses data updates (they change the problem it
# solves): off in the solvers that are updated. (Its chordal decomposition does
# too where it applies, which the solver reports: is_data_update_allowed.)
_NO_UPDATES = ("presolve_enable", "input_sparse_dropzeros")


def _ordered(perm: np.ndarray | None, A: CSC, b: FloatArray) -> tuple[CSC, FloatArray]:
    """A's rows and b in Clarabel's order (PSD blocks by upper triangle), A's
    indices sorted (the row selection leaves them in ``perm``'s order, and
    Clarabel's data updates take the values in the sorted order)."""
    if perm is None:
        return A, b
    A = sp.csc_array(A[perm])
    A.sort_indices()
    return A, b[perm]


def _data_order(perm: np.ndarray | None, A: CSC) -> np.ndarray | None:
    """For A's pattern: where each stored value of ``_ordered(perm, A)`` sits
    in A's own (None without ``perm``), so that an updated solve gathers the
    values instead of selecting rows: the SDP of the benchmark, 36 µs per item
    (SciPy's fancy row indexing and a new CSC array) against ~1 µs. The row
    selection keeps stored zeros, so the gather has every entry."""
    if perm is None:
        return None
    tags = sp.csc_array((np.arange(1.0, A.nnz + 1.0), A.indices, A.indptr), shape=A.shape)
    return (_ordered(perm, tags, np.zeros(A.shape[0]))[0].data - 1.0).astype(np.intp)


def _settings(faer: bool, nnz: int, options: Mapping[str, Any]) -> Any:
    import clarabel

    settings = clarabel.DefaultSettings()
    if faer and nnz >= _FAER_NNZ:
        settings.direct_solve_method, settings.max_threads = "faer", 1
    for key, value in options.items():
        setattr(settings, key, value)
    return settings


class _Updated:
    """One call's solves by persistent Clarabel solvers (its data updating).

    Setting a solver up (checking and equilibrating the data, the KKT system's
    ordering and symbolic factorization, allocation) is a fixed part of every
    solve: per item, raw solves, one thread, interleaved (B = 64) afresh →
    updated: QP 0.93 → 0.82 ms, sparsemax 0.49 → 0.39, SDP 0.79 → 0.58, NNLS +
    l1 1.47 → 1.33, logistic regression 1.87 → 1.78 (same iteration counts to a
    few per cent). Each thread sets one up on the call's first item and updates
    its A, b and c to each item's (Clarabel then keeps the set-up's
    equilibration scalings, the first item's): so an item's answer depends on
    the call's first item and on its own data, not on which thread solved it or
    what it solved before. Presolve is off in these solvers (Clarabel refuses
    updates otherwise); it only removes rows with |b| ≥ 1e20, which validated
    parameters do not produce in practice. Where Clarabel's chordal
    decomposition applies (a sparse PSD block), it refuses updates too, and
    every item is solved afresh. An item whose updated solve ends
    without a solution (Solved or AlmostSolved; on small programs at 1e-11
    AlmostSolved is the rule, fresh or updated, and refinement polishes it) is
    solved afresh, as :meth:`ClarabelSolver.solve` does: a failure is never the
    equilibration's. The seed item is updated to its own data too (every item
    at B = 1): that update (~50 µs) is not a no-op, skipping it changed the
    solves (2026-12-02, B = 1 and 5 on five benchmark problems: iterations 17 →
    16 on the QP, 16 → 17 on the SDP, 29 → 31 on logistic regression), so
    every item's solve stays an updated one.
    """

    def __init__(self, adapter: ClarabelSolver, prepared: _Prepared, options: Mapping[str, Any],
                 seed: Callable[[], tuple[CSC, FloatArray, FloatArray]]) -> None:
        self._adapter, self._prepared, self._options, self._seed = adapter, prepared, options, seed
        self._local = threading.local()
        # The form the call's solvers take (the QP's where the seed item's values
        # make its epigraphs ones) and _data_order of its pattern.
        A, b, c = seed()
        qp = prepared.qp
        self._form = qp if qp is not None and qp.serves(A, b, c) else prepared.cone
        self._order = self._form.data_order(A)

    def _solver(self) -> Any:
        solver = getattr(self._local, "solver", None)
        if solver is None:
            import clarabel

            form = self._form
            P, A, b, c = form.native(*self._seed())
            off = dict.fromkeys(_NO_UPDATES, False)
            solver = clarabel.DefaultSolver(
                P, c, A, b, form.cones,
                _settings(self._prepared.faer, A.nnz, {**self._options, **off}))
            self._local.solver = solver = solver if solver.is_data_update_allowed() else False
        return solver

    def __call__(self, A: CSC, b: FloatArray, c: FloatArray) -> RawSolution:
        solver, form = self._solver(), self._form
        if solver is not False and form.serves(A, b, c):
            solver.update(**form.update(A, b, c, self._order))
            raw = form.answer(solver.solve(), A, b, c)
            if raw.status.ok:
                return raw
            fresh = self._adapter.solve(self._prepared, A, b, c, self._options)
            return replace(fresh, iterations=fresh.iterations + raw.iterations)
        return self._adapter.solve(self._prepared, A, b, c, self._options)


def _native_cones(clarabel: Any, layout: ConeLayout, lifted: set[int]) -> list[Any]:
    """Clarabel's cones for ``layout``; the SOC blocks at the offsets
    ``lifted`` become the zero cones of their tails (the QP form)."""
    native = {
        Zero: lambda c: clarabel.ZeroConeT(c.dim),
        Nonneg: lambda c: clarabel.NonnegativeConeT(c.dim),
        SOC: lambda c: clarabel.SecondOrderConeT(c.dim),
        PSD: lambda c: clarabel.PSDTriangleConeT(c.order),
    }
    cones: list[Any] = []
    for offset, cone in layout:
        if offset in lifted:
            cones.append(clarabel.ZeroConeT(cone.dim - 2))
        elif isinstance(cone, Exp):
            cones += [clarabel.ExponentialConeT() for _ in range(cone.count)]
        else:
            cones.append(native[type(cone)](cone))
    return cones


def _psd_order(layout: ConeLayout) -> np.ndarray | None:
    """Clarabel stores PSD blocks by their upper triangle: row i of Clarabel's
    data is row perm[i] of ours (None: no PSD block, the identity)."""
    if not layout.of_type(PSD):
        return None
    perm = np.arange(layout.dim)
    for offset, cone in layout.of_type(PSD):
        perm[offset : offset + cone.dim] = offset + svec_permutation_to_upper(cone.order)
    return perm


def _solves_as_qp(lifted: Lifting, n: int, nnz: int) -> bool:
    """Whether the QP form pays (``_QP_TAIL_DENSITY``)."""
    if nnz < _FAER_NNZ:
        return True
    tail_rows = np.concatenate(lifted.tails)
    in_tails = int(np.isin(lifted.indices, np.flatnonzero(lifted.zero_rows)).sum())
    return in_tails < _QP_TAIL_DENSITY * tail_rows.size * n


# Squared-norm epigraphs are solved as the QP (:mod:`conelayers._epigraph`) on
# programs under _FAER_NNZ stored entries of A, and on larger ones whose tail
# rows hold under this fraction of their n entries. Raw updated solves per
# item at 1e-11, one thread, B = 64 (2026-12-05): sparsemax 0.38 → 0.31 ms
# (14.5 → 10 iterations), QP 0.87 → 0.64 (16 → 11.5), NNLS + l1 1.27 → 0.86
# (18 → 11); fresh solves at 1e-8 with faer: the sparse QP (24,025 entries,
# tails 1 % full) 725 → 171 ms (19.5 → 5), but the dense QP (tails full) 37
# → 47 ms (18 → 12): its KKT system is dense, and the QP's is larger by the
# 128 u's (an LDLᵀ of order 512 against 389). (Eliminating the u's, P = 2μ
# A_wᵀA_w, took 43 ms there.)
_QP_TAIL_DENSITY = 0.1


@dataclass(frozen=True, eq=False)
class _Form:
    """One formulation Clarabel is given: its cones, the order of its rows
    (row i of Clarabel's data is row ``perm[i]`` of the formulation's; None:
    the same), P (for the QP its pattern: the diagonal of the u's) and, for the
    QP form, the lifting that maps items to it and its answers back."""

    cones: list[Any]
    perm: np.ndarray | None
    P: CSC
    lifting: Lifting | None = None

    def serves(self, A: CSC, b: FloatArray, c: FloatArray) -> bool:
        """Whether this form solves the item (the QP's: where its values make
        every block an epigraph, :meth:`Lifting.applies`)."""
        return self.lifting is None or self.lifting.applies(A, b, c)

    def native(self, A: CSC, b: FloatArray, c: FloatArray
               ) -> tuple[CSC, CSC, FloatArray, FloatArray]:
        """The item's (P, A, b, q) as Clarabel takes them."""
        P = self.P
        if self.lifting is not None:
            weights, values, b, c = self.lifting.data(A, b, c)
            lifted = self.lifting
            A = sp.csc_array((values, lifted.indices, lifted.indptr), shape=lifted.shape)
            P = sp.csc_array((weights, P.indices, P.indptr), shape=P.shape)
        A, b = _ordered(self.perm, A, b)
        return P, A, b, c

    def data_order(self, A: CSC) -> np.ndarray | None:
        """:func:`_data_order` of this form's A for an item of pattern ``A``."""
        if self.lifting is None:
            return _data_order(self.perm, A)
        lifted = self.lifting
        return _data_order(self.perm, sp.csc_array(
            (np.ones(lifted.indices.size), lifted.indices, lifted.indptr), shape=lifted.shape))

    def update(self, A: CSC, b: FloatArray, c: FloatArray, order: np.ndarray | None
               ) -> dict[str, Any]:
        """The item's data as a set-up solver's ``update`` takes it."""
        if self.lifting is None:
            weights, values = None, A.data
        else:
            weights, values, b, c = self.lifting.data(A, b, c)
        data = {"A": values if order is None else values[order],
                "b": b if self.perm is None else b[self.perm], "q": c}
        if weights is not None:
            data["P"] = weights
        return data

    def fresh(self, clarabel: Any, A: CSC, b: FloatArray, c: FloatArray, faer: bool,
              options: Mapping[str, Any]) -> RawSolution:
        P, A_n, b_n, c_n = self.native(A, b, c)
        solver = clarabel.DefaultSolver(P, c_n, A_n, b_n, self.cones,
                                        _settings(faer, A_n.nnz, options))
        return self.answer(solver.solve(), A, b, c)

    def answer(self, sol: Any, A: CSC, b: FloatArray, c: FloatArray) -> RawSolution:
        """Clarabel's answer to the item (A, b, c) in the cone program's terms."""
        x = np.asarray(sol.x, dtype=np.float64)
        z = np.asarray(sol.z, dtype=np.float64)
        s = np.asarray(sol.s, dtype=np.float64)
        if self.perm is not None:
            y, slack = np.empty_like(z), np.empty_like(s)
            y[self.perm], slack[self.perm] = z, s
            z, s = y, slack
        status = STATUS_MAP.get(str(sol.status), Status.solver_error)
        if self.lifting is not None:
            if not status.ok:  # (the cone program's solve follows: these go unread)
                return RawSolution(x, z, s, status, int(sol.iterations), float(sol.solve_time))
            x, z, s = self.lifting.solution(A, b, c, x, z, s, A.shape[1], A.shape[0])
        return finite_or_failed(RawSolution(x, z, s, status, int(sol.iterations),
                                            float(sol.solve_time)))


@dataclass(frozen=True, eq=False)
class _Prepared:
    """:meth:`ClarabelSolver.prepare`'s result: the cone program's form, the
    QP's (None: not solved as one) and whether this build has faer."""

    cone: _Form
    qp: _Form | None
    faer: bool
