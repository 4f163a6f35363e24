"""Solve a batch of cone programs, and the :class:`Solution` it returns.

``Solution.adjoint`` and ``Solution.derivative`` compose the three linear
maps of the pipeline (see DESIGN.md):

    adjoint:     dvars ─Rᵀ─▶ (dx, dy) ─diff adjoint─▶ (dA, db, dc) ─Cᵀ─▶ dθ ─▶ gradients
    derivative:  tangents ─▶ dθ ─C─▶ (dA, db, dc) ─diff derivative─▶ (dx, dy) ─R─▶ dvars

The derivative state of an item (a sparse LU) is built the first time either
is called and reused afterwards; a forward-only call never pays for it.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np

from ._diff import DerivativeMode, ItemDerivative, Linearization, Structure
from ._diff import refine as refine_solution
from ._parallel import for_each, worker_count
from ._errors import (
    InaccurateSolutionWarning,
    SolverError,
    Status,
    describe_failures,
    describe_inaccurate,
)
from ._program import ParametricConeProgram
from ._solvers import AbstractSolver
from ._typing import BoolArray, FloatArray
from ._validate import Batch, check_cotangents, check_tangents, gradients

__all__ = ["Solution", "solve_batch"]

# HSDE residual (relative to the data's scale) at which a refined solution the
# solver called inaccurate, or gave up on, counts as optimal.
_UPGRADE_TOL = 1e-9
# Verdicts after which the solver's last iterate may still be refined to a
# certified optimum (Clarabel's "InsufficientProgress" at tight tolerances, for
# instance, usually stops a hair away from it). Infeasibility and unboundedness
# certificates are never second-guessed.
_RESCUABLE = frozenset({Status.optimal_inaccurate, Status.numerical_error,
                        Status.max_iterations, Status.solver_error})


def _finite(raw) -> bool:
    return bool(np.isfinite(raw.x).all() and np.isfinite(raw.y).all()
                and np.isfinite(raw.s).all() and raw.x.size > 0)


def solve_batch(
    program: ParametricConeProgram,
    batch: Batch,
    solver: AbstractSolver,
    prepared: Any,
    options: Mapping[str, Any],
    structure: Structure,
    *,
    mode: DerivativeMode = DerivativeMode.exact,
    refine: int = 0,
    throw: bool = True,
    jobs: tuple[int | None, int | None] = (None, None),
    warn_stacklevel: int = 3,
) -> Solution:
    """Solve every item of ``batch`` and recover the outputs.

    Raises :class:`SolverError` naming the failed items when ``throw``; with
    ``throw=False`` failed items come back as NaN with their status.
    """
    A_vals, b, c, d = program.apply(batch.theta)
    B, n, m = batch.size, program.n, program.m
    x = np.full((B, n), np.nan)
    y = np.full((B, m), np.nan)
    s = np.full((B, m), np.nan)
    statuses: list[Status] = [Status.solver_error] * B
    iterations = np.zeros(B, dtype=np.int64)
    residual = np.full(B, np.nan)
    linearizations: list[Linearization | None] = [None] * B

    def solve_item(i: int) -> None:
        A = program.matrix(A_vals[i])
        raw = solver.solve(prepared, A, b[i], c[i], options)
        status = raw.status
        iterations[i] = raw.iterations
        rescue = status in _RESCUABLE and refine > 0 and _finite(raw)
        if status.ok or rescue:
            lin = refine_solution(structure, A, b[i], c[i], raw.x, raw.y, raw.s,
                                  max_steps=refine, index=i)
            scale = 1.0 + max(np.abs(b[i]).max(initial=0), np.abs(c[i]).max(initial=0))
            if status is not Status.optimal and lin.residual_norm <= _UPGRADE_TOL * scale:
                # Refinement reached a KKT point to near rounding level: whatever the
                # solver's own verdict, the point is optimal.
                status = Status.optimal
            if status.ok:
                x[i], y[i], s[i] = lin.x, lin.y, lin.s
                residual[i] = lin.residual_norm
                linearizations[i] = lin
        statuses[i] = status

    for_each(solve_item, B, worker_count(jobs[0], B))

    if throw and not all(st.ok for st in statuses):
        raise SolverError(describe_failures(statuses, solver.name), statuses)
    inaccurate = [i for i, st in enumerate(statuses) if st is Status.optimal_inaccurate]
    if inaccurate:
        warnings.warn(describe_inaccurate(inaccurate, solver.name), InaccurateSolutionWarning,
                      stacklevel=warn_stacklevel)
    solution = Solution(program, structure, batch, (A_vals, b, c, d), x, y, s, tuple(statuses),
                        iterations, residual, mode, solver.name, jobs[1])
    if mode is DerivativeMode.exact:
        solution._linearizations = linearizations
    return solution


class Solution:
    """The solution of one call: outputs, per-item status, and derivatives.

    Attributes
    ----------
    values : tuple of ndarray
        The requested outputs, in order. Each has shape ``(B, *shape)`` when
        any parameter value was batched, else ``shape``. NaN for failed items.
    status : tuple of Status
        One status per item (length B).
    ok : ndarray of bool, shape (B,)
        Which items carry a usable solution.
    objective : ndarray, shape (B,) (or scalar when unbatched)
        Optimal value of the user's objective (NaN for failed items).
    x, y, s : ndarray, shapes (B, n), (B, m), (B, m)
        The cone program's primal, dual and slack (internal coordinates).
    iterations : ndarray of int, shape (B,)
        Solver iterations per item.
    residual : ndarray, shape (B,)
        ‖N(z)‖∞, the residual of the optimality conditions (primal, dual and
        gap, in the homogeneous embedding) at the returned point, after
        refinement; NaN for failed items.
    """

    def __init__(
        self,
        program: ParametricConeProgram,
        structure: Structure,
        batch: Batch,
        data: tuple[FloatArray, FloatArray, FloatArray, FloatArray],
        x: FloatArray,
        y: FloatArray,
        s: FloatArray,
        status: tuple[Status, ...],
        iterations: np.ndarray,
        residual: np.ndarray,
        mode: DerivativeMode,
        solver: str,
        jobs_backward: int | None = None,
    ) -> None:
        self._program = program
        self._structure = structure
        self._batch = batch
        self._data = data
        self.x, self.y, self.s = x, y, s
        self.status = status
        self.ok: BoolArray = np.array([st.ok for st in status], dtype=bool)
        self.iterations = iterations
        self.residual = residual
        self._linearizations: list[Linearization | None] = [None] * batch.size
        self.mode = mode
        self.solver = solver
        self._jobs = jobs_backward
        self._outs = program.recover(x, y)  # (B, *shape) each
        self.values = tuple(self._unbatch(o) for o in self._outs)
        objective = program.objective(x, data[2], data[3])
        self.objective = objective if batch.any_batched else objective[0]
        self._derivatives: list[ItemDerivative | None] = [None] * batch.size
        # Striped locks: concurrent calls may not build one item's derivative twice,
        # but different items (the batch engine's threads) never wait on each other.
        self._locks = [threading.Lock() for _ in range(min(batch.size, 64))]

    @property
    def batch_size(self) -> int:
        return self._batch.size

    def _unbatch(self, value: FloatArray) -> FloatArray:
        return value if self._batch.any_batched else value[0]

    def _derivative_at(self, i: int) -> ItemDerivative:
        with self._locks[i % len(self._locks)]:
            item = self._derivatives[i]
            if item is None:
                A_vals, b, c, _ = self._data
                item = ItemDerivative.at(
                    self._structure, self._program.matrix(A_vals[i]), b[i], c[i], self.x[i],
                    self.y[i], self.s[i], self.mode, index=i,
                    linearization=self._linearizations[i],
                    outputs=self._program.recover_linear,
                    parameters=lambda dA, db, dc: self._program.apply_adjoint(
                        dA[None], db[None], dc[None])[0],
                )
                self._linearizations[i] = None
                self._derivatives[i] = item
            return item

    def adjoint(self, *dvars: Any) -> tuple[FloatArray, ...]:
        """Vector-Jacobian product: output cotangents → parameter gradients.

        ``adjoint(*dvars) -> grads``. Pass one cotangent per output, shaped like
        the output (``None`` for zero). Returns one gradient per parameter,
        shaped like the value passed for it (summed over the batch for an
        unbatched value). Failed items contribute nothing.
        """
        program, batch = self._program, self._batch
        douts = check_cotangents(program.outputs, batch, dvars)
        dx, dy = program.recover_adjoint(douts, self._outs)
        B = batch.size
        dA = np.zeros((B, program.nnz))
        db = np.zeros((B, program.m))
        dc = np.zeros((B, program.n))
        zeros_m = np.zeros(program.m)
        ok = np.flatnonzero(self.ok)

        def vjp_item(k: int) -> None:
            i = int(ok[k])
            dA[i], db[i], dc[i] = self._derivative_at(i).vjp(dx[i], dy[i], zeros_m)

        for_each(vjp_item, ok.size, worker_count(self._jobs, ok.size))
        return gradients(program.parameters, batch, program.apply_adjoint(dA, db, dc))

    def derivative(self, *dparams: Any) -> tuple[FloatArray, ...]:
        """Jacobian-vector product: parameter tangents → output tangents.

        ``derivative(*dparams) -> dvars``. Pass one tangent per parameter, shaped
        like the value passed for it (``None`` for zero). Returns one tangent per
        output, shaped like the output; NaN for failed items.
        """
        program, batch = self._program, self._batch
        dtheta = check_tangents(program.parameters, batch, dparams)
        dA, db, dc = program.apply_linear(dtheta)
        dx = np.full((batch.size, program.n), np.nan)
        dy = np.full((batch.size, program.m), np.nan)
        ok = np.flatnonzero(self.ok)

        def jvp_item(k: int) -> None:
            i = int(ok[k])
            dx[i], dy[i], _ = self._derivative_at(i).jvp(dA[i], db[i], dc[i])

        for_each(jvp_item, ok.size, worker_count(self._jobs, ok.size))
        douts = program.recover_derivative(dx, dy, self._outs)
        return tuple(self._unbatch(d) for d in douts)

    def __iter__(self):
        return iter(self.values)

    def __len__(self) -> int:
        return len(self.values)

    def __repr__(self) -> str:
        counts: dict[str, int] = {}
        for st in self.status:
            counts[st.name] = counts.get(st.name, 0) + 1
        summary = ", ".join(f"{k}: {v}" for k, v in counts.items())
        return f"Solution(batch_size={self.batch_size}, solver={self.solver}, {summary})"


