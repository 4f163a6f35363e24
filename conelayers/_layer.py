"""``CvxpyLayer``: a CVXPY problem as a differentiable NumPy function.

The layer holds only NumPy/SciPy data (the canonicalized program and the
solver's structural preparation), never the CVXPY problem itself, so it can
be copied and pickled, and calling it never touches CVXPY.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import replace
from typing import Any, cast

import cvxpy as cp
import numpy as np

from ._canonicalize import canonicalize
from ._diff import DerivativeMode
from ._engine import Engine
from ._errors import ParameterError
from ._pool import PROCESSES, process_pool
from ._program import ParametricConeProgram
from ._remote import new_token
from ._solve import Distribution, Solution, solve_batch
from ._solvers import DIFFCP, check_solver_name
from ._typing import FloatArray
from ._validate import CallOptions, check_values, split_solver_args

__all__ = ["DEFAULT_SOLVER", "CvxpyLayer"]

# Chosen by measurement (benchmarks/choose_solver.py, README "Solvers"):
# Clarabel is the most accurate of the three on every problem of the zoo and
# the fastest or within a small factor of the fastest on small problems.
DEFAULT_SOLVER = "Clarabel"
# Newton refinement steps after each solve (see _refine.refine): measured to
# take Clarabel's SOC-reformulated QP solutions from ~1e-5 to ~1e-15 error
# (its answers to squared terms given as a QP, conelayers._epigraph, start
# closer: relative residuals ~1e-11 at the 1e-11 tolerance of small programs).
DEFAULT_REFINE = 3


class CvxpyLayer:
    """A parametrized convex problem as a differentiable function of its parameters.

    The problem is canonicalized once, here, into a cone program whose data
    depend affinely on the parameters. Each call maps a whole batch of
    parameter values to data, solves every item and returns the requested
    variables; the returned :class:`Solution` differentiates in both directions.

    Parameters
    ----------
    problem : cvxpy.Problem
        A DPP problem (DGP+DPP when ``gp=True``).
    parameters : list of cvxpy.Parameter
        Exactly ``problem.parameters()``, in the order their values will be passed.
    variables : list of cvxpy.Variable
        The outputs: variables of the problem and/or dual variables of its
        constraints (``constraint.dual_variables[0]``), in any order.
    gp : bool, default False
        Solve ``problem`` as a geometric program (log-log convex). Parameters
        enter as their logarithms, so their values must be positive; outputs
        are the variables themselves, not their logs.
    solver : {"Clarabel", "SCS", "ECOS"}, optional
        The cone solver; default ``"Clarabel"`` (see README, "Solvers").
        ``"DIFFCP"`` (cvxpylayers 1.2's name for its diffcp back-end) means
        ``solver_args['solve_method']``, SCS by default, as there.
    solver_args : dict, optional
        Default options of every call: the solver's own option names, the
        portable ``eps``, ``max_iters``, ``verbose``, and the layer's
        ``mode`` (derivative engine: ``"exact"`` default, or diffcp's
        ``"lsqr"``, ``"lsmr"``, ``"dense"``) and ``solve_method`` (solver name).
    throw : bool, default True
        Raise :class:`SolverError` when an item fails. With ``False`` failed
        items come back as NaN and ``Solution.status`` says why.
    verbose : bool, default False
        Let the solver print its progress (cvxpylayers' argument).
    canon_backend : str, optional
        CVXPY's canonicalization backend (``"CPP"``, ``"SCIPY"``, ...), passed
        to ``problem.get_problem_data``.
    executor : concurrent.futures.Executor or "processes", optional
        Run the items of each batch on this executor (a ``ProcessPoolExecutor``,
        ``dask.distributed.Client.get_executor()``, a Ray executor) in chunks of
        ``chunk_size`` items (default: B/16 rounded up). ``"processes"``: the
        layer's own pool, one worker process per core, shared by all layers
        (refinement runs in parallel there, where in this process it runs on one
        thread beside the solving threads; needs the ``if __name__ ==
        "__main__":`` guard, see README "Scale-out"). Default: in this process,
        solves on worker threads, refinement on the calling thread.

    Raises
    ------
    DPPError
        ``problem`` is not DPP; the message names the parts that are not.
    ParameterError
        ``parameters``, ``variables``, ``solver`` or ``solver_args`` are invalid.
    NotImplementedError
        The problem needs something the layer cannot differentiate (power
        cones, integer variables, complex numbers).

    Examples
    --------
    >>> import cvxpy as cp, numpy as np
    >>> from conelayers import CvxpyLayer
    >>> x = cp.Variable(2)
    >>> p = cp.Parameter(2)
    >>> problem = cp.Problem(cp.Minimize(cp.sum_squares(x - p)), [x >= 0])
    >>> layer = CvxpyLayer(problem, parameters=[p], variables=[x])
    >>> sol = layer.solve(np.array([[1.0, -1.0], [0.5, 2.0]]))  # a batch of 2
    >>> np.round(sol.values[0], 6) + 0.0  # (+ 0.0 turns a -0. into 0.)
    array([[1. , 0. ],
           [0.5, 2. ]])
    >>> (grad,) = sol.adjoint(np.ones((2, 2)))  # d sum(x) / dp
    >>> np.round(grad, 6) + 0.0
    array([[1., 0.],
           [1., 1.]])
    """

    def __init__(
        self,
        problem: cp.Problem,
        parameters: Sequence[cp.Parameter],
        variables: Sequence[cp.Variable],
        *,
        gp: bool = False,
        solver: str | None = None,
        solver_args: Mapping[str, Any] | None = None,
        throw: bool = True,
        verbose: bool = False,
        canon_backend: str | None = None,
        executor: Executor | str | None = None,
        chunk_size: int | None = None,
    ) -> None:
        if solver is not None:
            # (Before the canonicalization: cvxpylayers 0.1 code passing its
            # fourth argument, `gp`, positionally has a GP, which would fail the
            # DPP check and hide the advice on `gp`.)
            check_solver_name(solver)
        self.program: ParametricConeProgram = canonicalize(
            problem, parameters, variables, gp=gp, canon_backend=canon_backend
        )
        if verbose:
            solver_args = {"verbose": True, **(solver_args or {})}
        given = split_solver_args(solver_args)
        if solver is not None and solver.upper() == DIFFCP:  # (cvxpylayers 1.2's default back-end)
            solver = given.solver or "SCS"
        if solver is not None and given.solver is not None and (
            solver.upper() != given.solver.upper()
        ):
            raise ParameterError(
                f"`solver` ({solver!r}) and `solver_args['solve_method']` "
                f"({given.solver!r}) disagree; pass only one of them."
            )
        self._throw = _check_bool(throw, "throw")
        self._executor = _check_executor(executor, "executor")
        if chunk_size is not None and (isinstance(chunk_size, bool)
                                       or not isinstance(chunk_size, int) or chunk_size < 1):
            raise ParameterError(f"`chunk_size` must be a positive integer; got {chunk_size!r}.")
        self._chunk_size = chunk_size
        self._token = new_token()
        self._engine = Engine.of(self.program)
        name = solver if solver is not None else (given.solver or DEFAULT_SOLVER)
        canonical = self._engine.solver(name)[0].name
        # (The solver under its canonical name, whatever case `solve_method` used.)
        self._defaults = replace(
            given.over(CallOptions(canonical, DerivativeMode.exact, DEFAULT_REFINE)),
            solver=canonical)
        # Reject unknown options now, not at the first call.
        self._engine.solver(canonical)[0].translate_options(*self._defaults.native)

    @property
    def solver(self) -> str:
        """Name of the default solver."""
        return str(self._defaults.solver)

    def solve(
        self,
        *values: Any,
        solver_args: Mapping[str, Any] | None = None,
        throw: bool | None = None,
        executor: Executor | None = None,
    ) -> Solution:
        """Solve for a batch of parameter values.

        ``solve(*values) -> Solution``. One value per parameter, in the order
        of ``parameters``; each has the parameter's shape or one extra leading
        batch axis (all batched values must share the batch size; unbatched
        ones are shared by every item). ``solver_args``, ``throw`` and
        ``executor`` override the constructor's for this call.
        """
        return self._solution(values, solver_args, throw, executor, differentiable=True)

    def _solution(self, values: Sequence[Any], solver_args: Mapping[str, Any] | None,
                  throw: bool | None, executor: Executor | None, *,
                  differentiable: bool, warn_stacklevel: int = 4) -> Solution:
        """:meth:`solve`, told whether the caller may ask for derivatives: a
        front-end's forward pass without a gradient tape, or :meth:`__call__`,
        says it will not, and refinement keeps no factors for them (up to
        200 KB per item; see ``_refine.refine``)."""
        batch = check_values(self.program.parameters, values)
        options = split_solver_args(solver_args).over(self._defaults)
        assert options.solver is not None and options.mode is not None
        solver, _ = self._engine.solver(options.solver)
        native = solver.translate_options(*options.native)
        throw = self._throw if throw is None else _check_bool(throw, "throw")
        chosen = self._executor if executor is None else _check_executor(executor, "executor")
        # "processes" is kept as the name and resolved at each call: the pool is
        # this process's (a forked child solves in-process), and one whose
        # worker died is made again (a layer holding the pool object hung in a
        # forked child, and failed every call after a worker's death; found by
        # a probe).
        where = Distribution(process_pool() if chosen == PROCESSES else cast("Executor", chosen),
                             self._token, self._chunk_size,
                             (options.jobs_forward, options.jobs_backward))
        return solve_batch(self._engine, batch, solver.name, native, mode=options.mode,
                           refine=int(options.refine or 0), throw=throw, where=where,
                           warn_stacklevel=warn_stacklevel, differentiable=differentiable)

    def __call__(
        self, *values: Any, solver_args: Mapping[str, Any] | None = None
    ) -> tuple[FloatArray, ...]:
        """``layer(*values) -> tuple of outputs`` (the values of :meth:`solve`)."""
        return self._solution(values, solver_args, None, None, differentiable=False).values

    def __getstate__(self) -> dict[str, Any]:
        # An executor (a pool, a cluster client) is a local resource: it does
        # not travel with the layer. "processes" names the receiving process's
        # own pool, and does.
        state = self.__dict__.copy()
        if state["_executor"] != PROCESSES:
            state["_executor"] = None
        return state

    def __copy__(self) -> CvxpyLayer:
        # (A copy in this process keeps the executor, which copy.copy, through
        # __getstate__, dropped without a word; found by a probe.)
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        return new

    def __deepcopy__(self, memo: dict[int, Any]) -> CvxpyLayer:
        new = object.__new__(type(self))
        memo[id(self)] = new
        for key, value in self.__dict__.items():
            new.__dict__[key] = value if key == "_executor" else copy.deepcopy(value, memo)
        return new

    def __repr__(self) -> str:
        outs = ", ".join(f"{o.name} {o.shape}" for o in self.program.outputs)
        return f"CvxpyLayer({self.program!r}, outputs=[{outs}], solver={self.solver})"


def _check_executor(value: Any, name: str) -> Executor | str | None:
    if isinstance(value, str) and value == PROCESSES:
        return PROCESSES
    if value is not None and not (callable(getattr(value, "submit", None))):
        got = repr(value) if isinstance(value, str) else type(value).__name__
        raise ParameterError(
            f"`{name}` must be a concurrent.futures.Executor (anything with `submit`), "
            f"e.g. ProcessPoolExecutor() or a Dask client's get_executor(), or "
            f"{PROCESSES!r} (the layer's own process pool, one worker per core); got {got}."
        )
    return cast("Executor | str | None", value)


def _check_bool(value: Any, name: str) -> bool:
    if not isinstance(value, bool | np.bool_):  # (NumPy's too, as `verbose` takes them)
        raise ParameterError(f"`{name}` must be True or False; got {value!r}.")
    return bool(value)
