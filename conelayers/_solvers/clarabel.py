"""Clarabel adapter (interior point; PSD blocks in upper-triangle order)."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Mapping
from dataclasses import replace
from types import MappingProxyType
from typing import Any

import numpy as np
import scipy.sparse as sp

from .._cones import PSD, SOC, ConeLayout, Exp, Nonneg, Zero, svec_permutation_to_upper
from .._errors import Status
from .._typing import CSC, FloatArray
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

    def prepare(self, layout: ConeLayout, n: int) -> tuple[list[Any], np.ndarray | None,
                                                          sp.csc_array, bool]:
        import clarabel

        native = {
            Zero: lambda c: clarabel.ZeroConeT(c.dim),
            Nonneg: lambda c: clarabel.NonnegativeConeT(c.dim),
            SOC: lambda c: clarabel.SecondOrderConeT(c.dim),
            PSD: lambda c: clarabel.PSDTriangleConeT(c.order),
        }
        cones: list[Any] = []
        for _, cone in layout:
            if isinstance(cone, Exp):
                cones += [clarabel.ExponentialConeT() for _ in range(cone.count)]
            else:
                cones.append(native[type(cone)](cone))
        # Clarabel stores PSD blocks by their upper triangle: row i of Clarabel's
        # data is row perm[i] of ours.
        perm = np.arange(layout.dim)
        has_psd = False
        for offset, cone in layout.of_type(PSD):
            has_psd = True
            perm[offset : offset + cone.dim] = offset + svec_permutation_to_upper(cone.order)
        # P = 0 (quadratic terms are cones here), built once: SciPy's empty
        # csc_matrix((n, n)) costs 0.1 ms, a tenth of sparsemax's whole solve.
        return cones, (perm if has_psd else None), sp.csc_array((n, n)), _has_faer(clarabel)

    def solve(
        self, prepared: Any, A: CSC, b: FloatArray, c: FloatArray, options: Mapping[str, Any]
    ) -> RawSolution:
        import clarabel

        cones, perm, P, faer = prepared
        A, b = _ordered(perm, A, b)
        solver = clarabel.DefaultSolver(P, c, A, b, cones, _settings(faer, A.nnz, options))
        return _answer(solver.solve(), perm)

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

    def __init__(self, adapter: ClarabelSolver, prepared: Any, options: Mapping[str, Any],
                 seed: Callable[[], tuple[CSC, FloatArray, FloatArray]]) -> None:
        self._adapter, self._prepared, self._options, self._seed = adapter, prepared, options, seed
        self._local = threading.local()
        self._order: np.ndarray | None = None  # _data_order of the call's pattern

    def _solver(self) -> Any:
        solver = getattr(self._local, "solver", None)
        if solver is None:
            import clarabel

            cones, perm, P, faer = self._prepared
            A, b, c = self._seed()
            self._order = _data_order(perm, A)  # (every thread finds the same)
            A, b = _ordered(perm, A, b)
            off = dict.fromkeys(_NO_UPDATES, False)
            solver = clarabel.DefaultSolver(P, c, A, b, cones,
                                            _settings(faer, A.nnz, {**self._options, **off}))
            self._local.solver = solver = solver if solver.is_data_update_allowed() else False
        return solver

    def __call__(self, A: CSC, b: FloatArray, c: FloatArray) -> RawSolution:
        solver = self._solver()
        if solver is not False:
            perm, order = self._prepared[1], self._order
            if perm is None or order is None:
                solver.update(A=A.data, b=b, q=c)
            else:
                solver.update(A=A.data[order], b=b[perm], q=c)
            raw = _answer(solver.solve(), perm)
            if raw.status.ok:
                return raw
            fresh = self._adapter.solve(self._prepared, A, b, c, self._options)
            return replace(fresh, iterations=fresh.iterations + raw.iterations)
        return self._adapter.solve(self._prepared, A, b, c, self._options)


def _answer(sol: Any, perm: np.ndarray | None) -> RawSolution:
    """Clarabel's solution in our convention (rows back in our order)."""
    x = np.asarray(sol.x, dtype=np.float64)
    z = np.asarray(sol.z, dtype=np.float64)
    s = np.asarray(sol.s, dtype=np.float64)
    if perm is not None:
        y, slack = np.empty_like(z), np.empty_like(s)
        y[perm], slack[perm] = z, s
        z, s = y, slack
    status = STATUS_MAP.get(str(sol.status), Status.solver_error)
    return finite_or_failed(RawSolution(x, z, s, status, int(sol.iterations),
                                        float(sol.solve_time)))
