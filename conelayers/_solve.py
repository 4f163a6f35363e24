"""Solve a batch of cone programs, and the :class:`Solution` it returns.

``Solution.adjoint`` and ``Solution.derivative`` compose the three linear
maps of the pipeline (see DESIGN.md):

    adjoint:     dvars ─Rᵀ─▶ (dx, dy) ─diff adjoint─▶ (dA, db, dc) ─Cᵀ─▶ dθ ─▶ gradients
    derivative:  tangents ─▶ dθ ─C─▶ (dA, db, dc) ─diff derivative─▶ (dx, dy) ─R─▶ dvars

In this process, the derivative state of an item (a factorization) is built
the first time either is called and reused afterwards; a forward-only call
never pays for it. With an executor the item-level work runs in its workers
(:mod:`conelayers._remote`).
"""

from __future__ import annotations

import math
import threading
import warnings
from collections.abc import Mapping
from concurrent.futures import Executor
from typing import Any

import numpy as np

from ._diff import DerivativeMode, ItemDerivative, jvp_many, vjp_many
from ._engine import Engine, ItemsResult, solve_items
from ._errors import (
    InaccurateSolutionWarning,
    SolverError,
    Status,
    describe_failures,
    describe_inaccurate,
)
from ._linearization import Linearization, values_many
from ._parallel import for_groups, groups_of
from ._refine import batchable
from ._remote import map_chunks
from ._typing import BoolArray, FloatArray, IntArray
from ._validate import Batch, check_cotangents, check_tangents, gradients

__all__ = ["Distribution", "Solution", "solve_batch"]


class Distribution:
    """Where item-level work runs: threads here, or chunks on an executor."""

    def __init__(self, executor: Executor | None, token: str, chunk_size: int | None,
                 jobs: tuple[int | None, int | None]) -> None:
        self.executor, self.token, self.chunk_size, self.jobs = executor, token, chunk_size, jobs

    def ranges(self, count: int) -> list[range]:
        size = self.chunk_size or max(1, math.ceil(count / 16))
        return [range(k, min(k + size, count)) for k in range(0, count, size)]


def solve_batch(engine: Engine, batch: Batch, solver: str, options: Mapping[str, Any], *,
                mode: DerivativeMode = DerivativeMode.exact, refine: int = 0,
                throw: bool = True, where: Distribution, warn_stacklevel: int = 3,
                differentiable: bool = True) -> Solution:
    """Solve every item of ``batch`` and recover the outputs.

    Raises :class:`SolverError` naming the failed items when ``throw``; with
    ``throw=False`` failed items come back as NaN with their status.
    ``differentiable=False`` (the caller will ask for no derivative) keeps no
    factorization for the derivatives: they are formed if asked for after all.
    """
    A_vals, b, c, d = engine.program.apply(batch.theta)
    if where.executor is None:
        result = solve_items(engine, solver, options, refine, A_vals, b, c,
                             differentiable=differentiable, jobs=where.jobs[0])
    else:
        ranges = where.ranges(batch.size)
        parts = map_chunks(where.executor, engine, where.token, "solve",
                           [(solver, options, refine, A_vals[r.start:r.stop], b[r.start:r.stop],
                             c[r.start:r.stop], r.start) for r in ranges], ranges)
        result = ItemsResult(
            *(np.concatenate([getattr(p, f) for p in parts]) for f in ("x", "y", "s")),
            [st for p in parts for st in p.status],
            np.concatenate([p.iterations for p in parts]),
            np.concatenate([p.residual for p in parts]),
        )
    statuses = result.status
    name = engine.solver(solver)[0].name
    if throw and not all(st.ok for st in statuses):
        raise SolverError(describe_failures(statuses, name), statuses)
    inaccurate = [i for i, st in enumerate(statuses) if st is Status.optimal_inaccurate]
    if inaccurate:
        warnings.warn(describe_inaccurate(inaccurate, name), InaccurateSolutionWarning,
                      stacklevel=warn_stacklevel)
    return Solution(engine, batch, (A_vals, b, c, d), result, mode, name, where)


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
        The residual of the optimality conditions at the returned point, after
        refinement: the largest of the dual (Aᵀy + c), primal (Ax + s − b) and
        gap (cᵀx + bᵀy) residuals, each relative to the size of its terms
        (at most 1e-14, N's rounding floor, when refinement converged); NaN
        for failed items.
    """

    def __init__(self, engine: Engine, batch: Batch,
                 data: tuple[FloatArray, FloatArray, FloatArray, FloatArray],
                 result: ItemsResult, mode: DerivativeMode, solver: str,
                 where: Distribution) -> None:
        program = engine.program
        self._engine, self._batch, self._data, self._where = engine, batch, data, where
        self.x, self.y, self.s = result.x, result.y, result.s
        self.status = tuple(result.status)
        self.ok: BoolArray = np.array([st.ok for st in self.status], dtype=bool)
        self.iterations = result.iterations
        self.residual = result.residual
        self.mode = mode
        self.solver = solver
        self._outs = program.recover(self.x, self.y)  # (B, *shape) each
        self.values = tuple(self._unbatch(o) for o in self._outs)
        objective = program.objective(self.x, data[2], data[3])
        self.objective = objective if batch.any_batched else objective[0]
        B = batch.size
        lins = result.linearizations if mode is DerivativeMode.exact else None
        self._linearizations: list[Linearization | None] = lins or [None] * B
        self._derivatives: list[ItemDerivative | None] = [None] * B
        # Striped locks: concurrent calls may not build one item's derivative twice,
        # but different items (the batch engine's threads) never wait on each other.
        self._locks = [threading.Lock() for _ in range(min(B, 64))]

    @property
    def batch_size(self) -> int:
        return self._batch.size

    def _unbatch(self, value: FloatArray) -> FloatArray:
        return value if self._batch.any_batched else value[0]

    def _build(self, i: int) -> ItemDerivative:
        """Item i's derivative, built if not yet (the caller holds i's lock)."""
        item = self._derivatives[i]
        if item is None:
            A_vals, b, c, _ = self._data
            item = self._engine.derivative_at(A_vals[i], b[i], c[i], self.x[i], self.y[i],
                                              self.s[i], self.mode, i,
                                              self._linearizations[i])
            self._linearizations[i] = None
            if not item.heavy:  # a heavy one is formed again per request (_KEEP_BYTES)
                self._derivatives[i] = item
        return item

    def _derivatives_of(self, items: IntArray) -> list[ItemDerivative]:
        """The derivatives of ``items``, built where not yet: in exact mode
        their K's values are assembled in one batch, then each is factored.
        Holds the items' locks meanwhile (taken in one order: no deadlock)."""
        stripes = sorted({int(i) % len(self._locks) for i in items})
        for k in stripes:
            self._locks[k].acquire()
        try:
            if self.mode is DerivativeMode.exact:
                lins = [self._linearizations[i] for i in items if self._derivatives[i] is None]
                todo = [lin for lin in lins if lin is not None and lin.K is None]
                for lin, data in zip(todo, values_many(self._engine.structure, todo),
                                     strict=True):
                    lin.factor(data)
            return [self._build(int(i)) for i in items]
        finally:
            for k in stripes:
                self._locks[k].release()

    def _items(self, fn: str, many, first: FloatArray, second: FloatArray,
               third: FloatArray | None = None) -> list[FloatArray]:
        """Run the item-level ``fn`` ("vjp"/"jvp") over the batch, locally (``many``
        on groups of items, see _diff.vjp_many) or remotely."""
        where, (A_vals, b, c, _) = self._where, self._data
        extra = (first, second) if third is None else (first, second, third)
        if where.executor is None:
            ok = np.flatnonzero(self.ok)
            groups = groups_of(ok, batchable(self._engine.structure))
            for_groups(lambda items: many(items, *extra), groups, where.jobs[1])
            return []
        ranges = where.ranges(self.batch_size)
        parts = map_chunks(where.executor, self._engine, where.token, fn,
                           [(self.mode, A_vals[r.start:r.stop], b[r.start:r.stop],
                             c[r.start:r.stop], self.x[r.start:r.stop], self.y[r.start:r.stop],
                             self.s[r.start:r.stop], *(e[r.start:r.stop] for e in extra),
                             r.start) for r in ranges], ranges)
        return [np.concatenate([p[k] for p in parts]) for k in range(len(parts[0]))]

    def adjoint(self, *dvars: Any) -> tuple[FloatArray, ...]:
        """Vector-Jacobian product: output cotangents → parameter gradients.

        ``adjoint(*dvars) -> grads``. Pass one cotangent per output, shaped like
        the output (``None`` for zero). Returns one gradient per parameter,
        shaped like the value passed for it (summed over the batch for an
        unbatched value). Failed items contribute nothing, whatever their
        cotangents hold (NaN included: their outputs are NaN).
        """
        program, batch = self._engine.program, self._batch
        douts = check_cotangents(program.outputs, batch, dvars, failed=~self.ok)
        dx, dy = program.recover_adjoint(douts, self._outs)
        B = batch.size
        dA, db, dc = np.zeros((B, program.nnz)), np.zeros((B, program.m)), np.zeros((B, program.n))

        def local(items: IntArray, dx_: FloatArray, dy_: FloatArray) -> None:
            dA[items], db[items], dc[items] = vjp_many(
                self._engine.structure, self._derivatives_of(items), dx_[items], dy_[items],
                np.zeros((items.size, program.m)))

        remote = self._items("vjp", local, dx, dy)
        if remote:
            dA, db, dc = remote
        return gradients(program.parameters, batch, program.apply_adjoint(dA, db, dc))

    def derivative(self, *dparams: Any) -> tuple[FloatArray, ...]:
        """Jacobian-vector product: parameter tangents → output tangents.

        ``derivative(*dparams) -> dvars``. Pass one tangent per parameter, shaped
        like the value passed for it (``None`` for zero). Returns one tangent per
        output, shaped like the output; NaN for failed items.
        """
        program, batch = self._engine.program, self._batch
        dtheta = check_tangents(program.parameters, batch, dparams)
        dA, db, dc = program.apply_linear(dtheta)
        dx = np.full((batch.size, program.n), np.nan)
        dy = np.full((batch.size, program.m), np.nan)

        def local(items: IntArray, dA_: FloatArray, db_: FloatArray, dc_: FloatArray) -> None:
            dx[items], dy[items], _ = jvp_many(self._engine.structure, self._derivatives_of(items),
                                               dA_[items], db_[items], dc_[items])

        remote = self._items("jvp", local, dA, db, dc)
        if remote:
            dx, dy = remote
        douts = program.recover_derivative(dx, dy, self._outs)
        return tuple(self._unbatch(d) for d in douts)

    def release_kept_factors(self) -> None:
        """Drop the factorizations refinement kept for derivatives not asked for
        yet (see ``_refine.refine``): those derivatives form their own if asked
        for after all. For a holder of many solutions that may never be
        differentiated (the TensorFlow layer's pending forward passes)."""
        for lin in self._linearizations:
            if lin is not None:
                lin.nearby = None

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
