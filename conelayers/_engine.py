"""The item-level engine: solve, refine and differentiate a range of items.

Everything here works on plain arrays for a contiguous range of batch items,
so that the same functions run in this process (items spread over threads)
or in a worker of any ``concurrent.futures.Executor`` (see
:mod:`conelayers._remote`). :class:`Engine` bundles what they need (the
program, the derivative structure, the solver adapters); it pickles without
its solver preparations, which are rebuilt on first use.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ._batched import stack_rows
from ._diff import DerivativeMode, ItemDerivative, jvp_many, vjp_many
from ._errors import Status
from ._linearization import Linearization, Structure
from ._parallel import for_groups, group_size, groups_of, pipeline
from ._program import ParametricConeProgram
from ._refine import batchable, refine_many
from ._solvers import AbstractSolver, RawSolution, get_solver
from ._typing import CSC, FloatArray, IntArray

__all__ = ["Engine", "ItemsResult", "solve_items"]

# Relative residual (dual, primal and gap, each relative to its own scale) at
# which refinement certifies a point optimal, one line with two uses:
# * a refined solution the solver called inaccurate, or gave up on, counts as
#   optimal at or below it;
# * above it refinement has stalled: the item is solved again at the adapter's
#   tight tolerance (``tightened``) and, where the first solve had refinement's
#   own tolerance (``for_refinement``), at the one given; each answer is refined,
#   the best point is kept, and if that one is still above it the item is
#   reported ``optimal_inaccurate`` (values kept, with the warning), never
#   ``optimal``. (The looser solve: examples/mpc.py's controller at a learned,
#   unstable model, states up to ~500: Clarabel at 1e-11 and at 1e-12 stopped
#   AlmostSolved 3.7e-6 from the solution, where refinement stalled at 1.5e-4;
#   at its default 1e-8 it stopped 7e-10 from it, which refined to 4e-12.)
# Refinement either converges or stalls far from this line (nnls_l1 of the
# benchmark suite, 1,024 items at Clarabel's defaults: 1,015 at ≤ 1e-13, 9 at
# 1e-6 to 1e-3, none between; those 9 had solution errors up to 2e-5 and
# gradient errors up to 6 %; re-solved at 1e-12 all 9 refine to 1e-14).
_CERTIFIED = 1e-9
# A point refined to this relative residual has converged (N's rounding floor
# is 1e-16 to 7e-15): certified as it is. Between it and ``_CERTIFIED``
# refinement has stopped short, and each row of N must hold to
# ``_CERTIFIED`` of its own size too (``Linearization.row_relative_residual``):
# there, rows scaled 1e-5 of the others hid a point off by more than its size.
_CONVERGED = 1e-13

# Verdicts after which the solver's last iterate may still be refined to a
# certified optimum (Clarabel's "InsufficientProgress" at tight tolerances, for
# instance, usually stops a hair away from it). Infeasibility and unboundedness
# verdicts are not refined...
_RESCUABLE = frozenset({Status.optimal_inaccurate, Status.numerical_error,
                        Status.max_iterations, Status.solver_error})
# ... but checked: a certificate of infeasibility (y ∈ K*, Aᵀy = 0, bᵀy < 0) or
# of unboundedness (−Ad ∈ K, cᵀd < 0) must hold for the item's data, to this
# relative accuracy (its violation against ‖A‖‖y‖ or ‖A‖‖d‖). Solvers do give
# false ones on badly scaled data (found by a probe): Clarabel called
# min cᵀx + ½‖x‖² s.t. x ≤ u with c = (1e-6, -1e5, -2) unbounded, whose
# objective is strongly convex (its ray violated −Ad ∈ K by 0.6 of ‖A‖‖d‖).
# True ones, measured on the failure tests' infeasible boxes and unbounded LPs
# (6 + 6 items per solver): violations up to 1.8e-10 (Clarabel), 8.8e-13 (SCS)
# and 1.6e-9 (ECOS), decreases (−bᵀy/‖b‖‖y‖, −cᵀd/‖c‖‖d‖) of 0.01 and more. A
# verdict whose certificate fails is solved again at the tight tolerance, and
# if that fails too it is reported as a numerical error, not as infeasibility.
_CERTIFICATES = frozenset({Status.infeasible, Status.unbounded})
_CERTIFICATE_TOL = 1e-4
_TINY = np.finfo(float).tiny


@dataclass(eq=False)
class Engine:
    """What solving and differentiating items needs; picklable.

    The derivative's structure (K's pattern, the projection's) is built on
    first use, by the first call, not with the layer: it depends only on the
    program, and is most of what a layer's construction would add to CVXPY's
    canonicalization (the 1,024-variable sparse QP: 8 of 39 ms).
    """

    program: ParametricConeProgram
    _structure: Structure | None = None
    _solvers: dict[str, tuple[AbstractSolver, Any]] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def of(cls, program: ParametricConeProgram) -> Engine:
        return cls(program)

    @property
    def structure(self) -> Structure:
        """The derivative's structure of the program (built once, on first use)."""
        if self._structure is None:
            with self._lock:
                if self._structure is None:
                    program = self.program
                    self._structure = Structure.of(program.A_indices, program.A_indptr,
                                                   program.n, program.layout)
        return self._structure

    def solver(self, name: str) -> tuple[AbstractSolver, Any]:
        """The adapter for ``name`` and its preparation for this layout (cached)."""
        key = name.upper()
        with self._lock:
            if key not in self._solvers:
                solver = get_solver(name)
                solver.check_layout(self.program.layout)
                self._solvers[key] = (solver, solver.prepare(
                    self.program.layout, self.program.n,
                    (self.program.A_indices, self.program.A_indptr)))
            return self._solvers[key]

    def __getstate__(self) -> dict[str, Any]:
        # Solver preparations may hold native objects that do not pickle
        # (Clarabel's cone types); they depend only on the layout.
        return {"program": self.program, "structure": self._structure}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["program"], state["structure"])  # type: ignore[misc]

    def derivative_at(self, A_vals: FloatArray, b: FloatArray, c: FloatArray, x: FloatArray,
                      y: FloatArray, s: FloatArray, mode: DerivativeMode, index: int,
                      linearization: Linearization | None = None) -> ItemDerivative:
        program = self.program
        # (Refinement's linearization holds the item's A: not formed again.)
        A = linearization.A if linearization is not None else program.matrix(A_vals)
        return ItemDerivative.at(
            self.structure, A, b, c, x, y, s, mode, index=index,
            linearization=linearization, outputs=program.recover_linear,
            parameters=program.apply_adjoint,  # on rows (k, ·) → (k, p)
        )


@dataclass
class ItemsResult:
    """What solving a range of items produced (linearizations stay local)."""

    x: FloatArray
    y: FloatArray
    s: FloatArray
    status: list[Status]
    iterations: np.ndarray
    residual: FloatArray
    linearizations: list[Linearization | None] | None = None

    def compact(self) -> ItemsResult:
        """Without the linearizations: what travels back from a worker."""
        return ItemsResult(self.x, self.y, self.s, self.status, self.iterations, self.residual)


def _certified(lin: Linearization) -> bool:
    """Whether refinement certifies ``lin``'s point optimal (``_CERTIFIED``)."""
    relative = lin.relative_residual
    return relative <= _CONVERGED or (relative <= _CERTIFIED
                                      and lin.row_relative_residual() <= _CERTIFIED)


def _finite(raw: RawSolution) -> bool:
    return bool(np.isfinite(raw.x).all() and np.isfinite(raw.y).all()
                and np.isfinite(raw.s).all() and raw.x.size > 0)


def solve_items(engine: Engine, solver_name: str, options: Mapping[str, Any], refine: int,
                A_vals: FloatArray, b: FloatArray, c: FloatArray, first: int = 0,
                differentiable: bool = True, jobs: int | None = None) -> ItemsResult:
    """Solve and refine items ``first, first + 1, ...`` given their data rows.

    Failed items are NaN with their status; an item the solver gave up on is
    rescued when refinement certifies optimality (see ``_RESCUABLE``).
    ``differentiable``: whether the items' derivatives may be asked for
    (refinement then keeps factors for them, see ``_refine.refine``).
    """
    program = engine.program
    solver, prepared = engine.solver(solver_name)
    B, n, m = A_vals.shape[0], program.n, program.m
    x, y, s = np.full((B, n), np.nan), np.full((B, m), np.nan), np.full((B, m), np.nan)
    statuses: list[Status] = [Status.solver_error] * B
    iterations = np.zeros(B, dtype=np.int64)
    residual = np.full(B, np.nan)
    linearizations: list[Linearization | None] = [None] * B
    given = options
    if refine > 0:
        options = solver.for_refinement(options, program.nnz)
    # Where refinement stalls, the item is solved again, tighter and then (where
    # the first solve's tolerance was refinement's own, tighter than the one
    # given) at the given one (see ``_CERTIFIED``).
    again_with = [solver.tightened(options)] + ([dict(given)] if options != given else [])
    # Where refinement polishes the answers, the solver may set up once and
    # update (AbstractSolver.solving: an item's answer then depends on the
    # call's first item too, at the solver's tolerance, and after refinement
    # to rounding). Without refinement every item is solved afresh: its answer
    # in a batch is exactly its answer alone.
    if refine > 0:
        solve = solver.solving(prepared, options,
                               lambda: (program.matrix(A_vals[0]), b[0], c[0]))
    else:
        solve = lambda A, b_i, c_i: solver.solve(prepared, A, b_i, c_i, options)  # noqa: E731

    def solve_raw(i: int) -> tuple[CSC, RawSolution]:
        A = program.matrix(A_vals[i])
        return A, solve(A, b[i], c[i])

    def refined(items: list[tuple[int, CSC, RawSolution]]) -> list[Linearization]:
        if not items:
            return []
        rows = [i for i, _, _ in items]
        raws = [raw for _, _, raw in items]
        stack = lambda f: stack_rows(raws, f)  # noqa: E731
        return refine_many(engine.structure, [A for _, A, _ in items], A_vals[rows], b[rows],
                           c[rows], stack("x"), stack("y"), stack("s"), max_steps=refine,
                           indices=[first + i for i in rows], differentiable=differentiable)

    def finish(solved: list[tuple[int, tuple[CSC, RawSolution]]]) -> None:
        go = []
        for i, (A, raw) in solved:
            if raw.status in _CERTIFICATES and not _certificate_holds(engine.structure, A, b[i],
                                                                      c[i], raw):
                again = solver.solve(prepared, A, b[i], c[i], again_with[0])
                again = replace(again, iterations=again.iterations + raw.iterations)
                if again.status in _CERTIFICATES and not _certificate_holds(
                        engine.structure, A, b[i], c[i], again):
                    again = replace(again, status=Status.numerical_error)
                raw = again
            statuses[i] = raw.status
            iterations[i] = raw.iterations
            rescue = raw.status in _RESCUABLE and refine > 0 and _finite(raw)
            if raw.status.ok or rescue:
                go.append((i, A, raw))
        for (i, A, _), lin in zip(go, refined(go), strict=True):
            status = statuses[i]
            certified = refine > 0 and _certified(lin)
            for settings in again_with if refine > 0 else ():
                if certified:
                    break
                again = solver.solve(prepared, A, b[i], c[i], settings)
                iterations[i] += again.iterations
                if _finite(again):
                    other = refined([(i, A, again)])[0]
                    if _certified(other) or other.relative_residual < lin.relative_residual:
                        lin = other  # the status stays the first solve's verdict
                        certified = _certified(lin)
            if refine > 0 and status is Status.optimal and not certified:
                status = Status.optimal_inaccurate  # refinement did not certify it
            if status is not Status.optimal and certified:
                # Refinement reached a KKT point to near rounding level: whatever the
                # solver's own verdict, the point is optimal.
                status = Status.optimal
            if status.ok:
                x[i], y[i], s[i] = lin.x, lin.y, lin.s
                residual[i] = lin.relative_residual
                linearizations[i] = lin
            statuses[i] = status

    # The solves run ahead on worker threads (they release the GIL); refinement,
    # which does not, on this one, a group of items at a time (see
    # _parallel.pipeline and _refine.refine_many).
    pipeline(solve_raw, finish, B, jobs, batch=group_size(batchable(engine.structure)))
    return ItemsResult(x, y, s, statuses, iterations, residual, linearizations)


def _certificate_holds(structure: Structure, A: CSC, b: FloatArray, c: FloatArray,
                       raw: RawSolution) -> bool:
    """Whether the certificate behind an ``infeasible`` or ``unbounded`` verdict
    holds for the item's data (see ``_CERTIFICATES``)."""
    scale_A = float(np.abs(A.data).max(initial=0.0))
    if raw.status is Status.infeasible:  # y ∈ K*, Aᵀy = 0, bᵀy < 0
        y = raw.y
        size = float(np.abs(y).max(initial=0.0))
        dual_proj, _ = structure.dproj(y)
        violation = max(float(np.abs(A.T @ y).max(initial=0.0)),
                        float(np.abs(y - dual_proj).max(initial=0.0)))
        decrease = -float(b @ y) / max(float(np.abs(b).max(initial=0.0)) * size, _TINY)
    else:  # −Ad ∈ K, cᵀd < 0; dist(v, K) = ‖Π_{K*}(−v)‖ (Moreau)
        d = raw.x
        size = float(np.abs(d).max(initial=0.0))
        dual_proj, _ = structure.dproj(A @ d)
        violation = float(np.abs(dual_proj).max(initial=0.0))
        decrease = -float(c @ d) / max(float(np.abs(c).max(initial=0.0)) * size, _TINY)
    if not (np.isfinite(violation) and np.isfinite(decrease)) or size == 0.0:
        return False
    return violation <= _CERTIFICATE_TOL * max(scale_A * size, _TINY) and (
        decrease > _CERTIFICATE_TOL)


def _derivatives(engine: Engine, mode: DerivativeMode, A_vals: FloatArray, b: FloatArray,
                 c: FloatArray, x: FloatArray, y: FloatArray, s: FloatArray, items: IntArray,
                 first: int) -> list[ItemDerivative]:
    return [engine.derivative_at(A_vals[i], b[i], c[i], x[i], y[i], s[i], mode, first + int(i))
            for i in items]


def vjp_items(engine: Engine, mode: DerivativeMode, A_vals: FloatArray, b: FloatArray,
              c: FloatArray, x: FloatArray, y: FloatArray, s: FloatArray, dx: FloatArray,
              dy: FloatArray, first: int = 0,
              jobs: int | None = None) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Adjoint for solved items (rows): (dx, dy) → (dA, db, dc); NaN rows skipped."""
    B, p = A_vals.shape[0], engine.program
    dA, db, dc = np.zeros((B, p.nnz)), np.zeros((B, p.m)), np.zeros((B, p.n))
    groups = groups_of(np.flatnonzero(np.isfinite(x).all(axis=1)), batchable(engine.structure))

    def group(items: IntArray) -> None:
        derivs = _derivatives(engine, mode, A_vals, b, c, x, y, s, items, first)
        dA[items], db[items], dc[items] = vjp_many(engine.structure, derivs, dx[items],
                                                   dy[items], np.zeros((items.size, p.m)))

    for_groups(group, groups, jobs)
    return dA, db, dc


def jvp_items(engine: Engine, mode: DerivativeMode, A_vals: FloatArray, b: FloatArray,
              c: FloatArray, x: FloatArray, y: FloatArray, s: FloatArray, dA: FloatArray,
              db: FloatArray, dc: FloatArray, first: int = 0,
              jobs: int | None = None) -> tuple[FloatArray, FloatArray]:
    """Derivative for solved items (rows): (dA, db, dc) → (dx, dy); NaN for failed rows."""
    B, p = A_vals.shape[0], engine.program
    dx, dy = np.full((B, p.n), np.nan), np.full((B, p.m), np.nan)
    groups = groups_of(np.flatnonzero(np.isfinite(x).all(axis=1)), batchable(engine.structure))

    def group(items: IntArray) -> None:
        derivs = _derivatives(engine, mode, A_vals, b, c, x, y, s, items, first)
        dx[items], dy[items], _ = jvp_many(engine.structure, derivs, dA[items], db[items],
                                           dc[items])

    for_groups(group, groups, jobs)
    return dx, dy
