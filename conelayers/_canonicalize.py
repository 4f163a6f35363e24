"""CVXPY problem → :class:`ParametricConeProgram`. The only module touching
CVXPY internals, so that an upstream change breaks one file.

How it works (CVXPY 1.9):

* CVXPY's chain for ``solver=cp.DIFFCP`` gives a cone program in SCS form
  without quadratic objective (quadratic terms become second-order cones,
  power atoms become SOC representations). Its formatted ``ParamConeProg``
  holds the raw tensor ``A`` of shape ``(m(n+1), p+1)``: times θ̃ it gives
  [A_cvx | b] column-major, with A_scs = −A_cvx; and ``q``, with
  ``[c; d] = q θ̃``. We run the chain up to the solver and do the solver's row
  formatting ourselves, a signed permutation of rows (see ``_cone_program``;
  ``get_problem_data`` remains the path for constraints we do not map).
* The user's parameters map to CVXPY's θ through a sparse matrix E, folded into
  C once: identity for plain parameters (column-major), the average of the two
  triangles for symmetric/PSD/NSD ones (which CVXPY stores by their upper
  triangle), the diagonal or the pattern for ``diag``/``sparsity``.
* R for primal variables comes from ``var_id_to_col`` (plus CVXPY's
  upper-triangle fill matrix for symmetric variables). For dual variables R is
  *measured*: CVXPY's own inverse chain is linear in y and moves each entry
  (possibly scaled) to one place, so three probe vectors y (ones, 1..m, and a
  random one to check) give the index and scale of every output entry. This
  keeps us right about every cone's dual convention without re-deriving it.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any, cast

import cvxpy as cp
import numpy as np
import scipy.sparse as sp
from cvxpy.atoms.affine.upper_tri import upper_tri_to_full
from cvxpy.constraints import PSD, SOC, ExpCone, NonNeg, PowCone3D, PowConeND, SvecPSD, Zero
from cvxpy.constraints.finite_set import FiniteSet
from cvxpy.error import SolverError as CvxpySolverError
from cvxpy.reductions.dcp2cone.cone_matrix_stuffing import ParamConeProg
from cvxpy.reductions.dgp2dcp.dgp2dcp import Dgp2Dcp
from cvxpy.reductions.eval_params import EvalParams
from cvxpy.reductions.solvers.solver_inverse_data import SolverInverseData

from ._cones import ConeLayout
from ._dpp import dpp_error_message, is_compliant
from ._errors import DPPError, ParameterError
from ._program import OutputMap, ParameterSpec, ParametricConeProgram
from ._rewrite import Replaced, without_free_epigraphs
from ._typing import FloatArray, IntArray

__all__ = ["canonicalize"]

_SYMMETRIC_ATTRS = ("symmetric", "PSD", "NSD", "hermitian")
# Declared attributes of a parameter that its values are checked against.
_CHECKED_ATTRS = ("nonneg", "nonpos", "pos", "neg", "symmetric", "PSD", "NSD", "diag",
                  "sparsity", "integer", "boolean", "bounds")


def canonicalize(
    problem: cp.Problem,
    parameters: Sequence[cp.Parameter],
    variables: Sequence[cp.Variable],
    *,
    gp: bool = False,
    canon_backend: str | None = None,
) -> ParametricConeProgram:
    """Canonicalize ``problem`` once into the maps C and R.

    Parameters
    ----------
    problem : cvxpy.Problem
        A DPP problem (DGP+DPP when ``gp``).
    parameters : sequence of cvxpy.Parameter
        Exactly ``problem.parameters()``, in the order values will be passed.
    variables : sequence of cvxpy.Variable
        The outputs: problem variables and/or constraint dual variables
        (``constraint.dual_variables[i]``), in any order.
    gp : bool
        Treat ``problem`` as a geometric program (solved in log space).

    Raises
    ------
    DPPError
        The problem is not DPP (the message says which part and why).
    ParameterError
        ``parameters`` or ``variables`` do not match the problem.
    NotImplementedError
        A feature the layer cannot differentiate (power cones, integer or
        complex variables).
    """
    parameters, variables = _check_arguments(problem, parameters, variables, gp)
    if not is_compliant(problem, gp=gp):
        raise DPPError(dpp_error_message(problem, gp=gp))
    if any(v.attributes["boolean"] or v.attributes["integer"] for v in problem.variables()):
        raise NotImplementedError(
            "`problem` has integer or boolean variables; a layer needs a convex problem "
            "(its solution map is not differentiable otherwise). Relax them to "
            "continuous variables."
        )
    if any(isinstance(c, FiniteSet) for c in problem.constraints):
        # (CVXPY turns it into boolean variables, and its path to a continuous
        # solver drops their integrality: the layer solved the relaxation and
        # called it optimal; found by a probe.)
        raise NotImplementedError(
            "`problem` has a `FiniteSet` constraint, which makes it mixed-integer; a "
            "layer needs a convex problem (its solution map is not differentiable "
            "otherwise). Replace it by its convex hull, e.g. `FiniteSet(x, [0, 1])` by "
            "`0 <= x, x <= 1`."
        )
    if any(leaf.is_complex() for leaf in problem.variables() + problem.parameters()):
        raise NotImplementedError(
            "`problem` has complex variables or parameters, which conelayers does not "
            "support yet. Split them into real and imaginary parts."
        )

    gp_log_params: dict[int, cp.Parameter] = {}
    gp_var_ids: dict[int, int] = {}
    dgp2dcp, dgp_inverse = None, None
    replaced: dict[int, Replaced] = {}
    if gp:
        dgp2dcp = Dgp2Dcp(problem)
        target, dgp_inverse = dgp2dcp.apply(problem)
        gp_log_params = {p.id: lp for p, lp in dgp2dcp.canon_methods._parameters.items()}
        gp_var_ids = {k: v[0] for k, v in dgp2dcp.var_id_map.items()}
    else:
        target, replaced = without_free_epigraphs(problem)

    with warnings.catch_warnings():
        # CVXPY reads `.value` of sparse parameters while canonicalizing and warns
        # about its own access; the user did nothing to deserve it.
        warnings.filterwarnings("ignore", message="Reading from a sparse CVXPY expression")
        try:
            param_prob, T, chain, inverse_data = _cone_program(target, canon_backend)
        except CvxpySolverError:
            if target.constraints or not target.objective.expr.is_affine():
                raise
            # CVXPY's chain refuses it ("The solver DIFFCP cannot solve this
            # problem": its conic solvers need at least one constraint).
            raise ParameterError(
                "`problem` has no constraints and an objective that is affine in its "
                "variables (in their logs, with gp=True), so it is unbounded for every "
                "parameter value but those that make the objective constant: there is "
                "no solution to differentiate. Add the constraints that bound its "
                "variables (e.g. `x >= 0`, `cp.sum(x) == 1`)."
            ) from None
    for kind in (PowCone3D, PowConeND):
        if param_prob.constr_map.get(kind):
            raise NotImplementedError(
                "`problem` needs power cones, whose projection diffcp cannot "
                "differentiate: explicit `PowCone3D`/`PowConeND` constraints, or atoms "
                "with `approx=False` (`power`, `geo_mean`, `pnorm`, ...). Drop "
                "`approx=False` (CVXPY then expresses those atoms by second-order "
                "cones), and write explicit power-cone constraints with such atoms "
                "(e.g. `x**a * y**(1 - a) >= |z|` as `geo_mean(hstack([x, y]), [a, 1 - a]) "
                ">= abs(z)`)."
            )

    dims = param_prob.cone_dims
    layout = ConeLayout.from_dims(
        zero=dims.zero, nonneg=dims.nonneg, soc=tuple(dims.soc), psd=tuple(dims.psd),
        exp=dims.exp, exp_dual=getattr(dims, "exp_dual", 0) or 0,
    )
    n = int(param_prob.x.size)
    m = layout.dim

    # -- C --------------------------------------------------------------------
    param_id_map = {k: v[0] for k, v in chain.compose_param_id_map().items()}
    specs, E = _parameter_embedding(parameters, param_prob, param_id_map, gp_log_params)
    assert T.shape[0] == m * (n + 1), "unexpected CVXPY tensor shape; please report this bug"
    row_nnz = np.diff(T.indptr)
    a_rows = np.flatnonzero(row_nnz[: m * n] > 0)  # ascending = CSC order of A
    A_indices = (a_rows % m).astype(np.int32)
    A_indptr = np.searchsorted(a_rows // m, np.arange(n + 1)).astype(np.int32)
    q = sp.csr_array(param_prob.q)
    stacked = sp.vstack([-T[a_rows], T[m * n :], q[:n], q[n : n + 1]], format="csr")
    C = sp.csr_array(stacked @ E)
    C.sum_duplicates()

    # -- R --------------------------------------------------------------------
    var_id_map = {k: v[0] for k, v in chain.compose_var_id_map().items()}
    sizes = {v.id: v.size for v in cast(list, param_prob.variables)}  # an attribute here
    primal_ids = {v.id for v in problem.variables()}
    duals = _dual_owners(problem)
    probes = None
    outputs = []
    for var in variables:
        if var.id in primal_ids:
            vid = gp_var_ids.get(var.id, var.id)
            vid = var_id_map.get(vid, vid)
            if vid not in param_prob.var_id_to_col:
                raise NotImplementedError(
                    f"variable `{var}` was eliminated by CVXPY's canonicalization, so "
                    "the layer cannot return it; please report this problem."
                )
            R = _primal_recovery(var, param_prob.var_id_to_col[vid], sizes[vid], n + m)
            outputs.append(OutputMap(str(var), var.shape, R, exp=gp))
        else:
            if probes is None:
                probes = _probe_duals(chain, inverse_data, dgp2dcp, dgp_inverse, n, m)
            con, k = duals[var.id]
            R = (_dual_recovery(con, k, probes, n, m) if con.id not in replaced
                 else _replaced_recovery(replaced[con.id], probes, n, m))
            outputs.append(OutputMap(f"{var} (dual of {con})", var.shape, R, dual=True))

    sign = -1.0 if isinstance(problem.objective, cp.Maximize) else 1.0
    return ParametricConeProgram(
        n=n, m=m, layout=layout, A_indices=A_indices, A_indptr=A_indptr, C=C,
        parameters=tuple(specs), outputs=tuple(outputs), objective_sign=sign, gp=gp,
    )


# ---------------------------------------------------------------------------
# argument checks


def _check_arguments(
    problem: Any, parameters: Any, variables: Any, gp: bool
) -> tuple[list[cp.Parameter], list[cp.Variable]]:
    if not isinstance(problem, cp.Problem):
        raise ParameterError(
            f"`problem` must be a cvxpy.Problem; got {type(problem).__name__}."
        )
    if not isinstance(gp, bool):
        raise ParameterError(f"`gp` must be True or False; got {gp!r}.")
    for name, value in (("parameters", parameters), ("variables", variables)):
        if not isinstance(value, (list, tuple)):
            raise ParameterError(
                f"`{name}` must be a list or tuple; got {type(value).__name__}. "
                f"Pass e.g. `{name}=[{'p' if name == 'parameters' else 'x'}]`."
            )
    for i, p in enumerate(parameters):
        if not isinstance(p, cp.Parameter):
            raise ParameterError(
                f"`parameters[{i}]` must be a cvxpy.Parameter; got {type(p).__name__} ({p})."
            )
    ids = [p.id for p in parameters]
    if len(set(ids)) != len(ids):
        first: dict[int, int] = {}
        for i, pid in enumerate(ids):
            if pid in first:
                raise ParameterError(
                    f"`parameters` lists the same parameter more than once: "
                    f"`parameters[{first[pid]}]` and `parameters[{i}]` are both "
                    f"{parameters[i]}; list each parameter of the problem once."
                )
            first[pid] = i
    expected = {p.id: p for p in problem.parameters()}
    missing = [str(p) for pid, p in expected.items() if pid not in ids]
    extra = [str(p) for p in parameters if p.id not in expected]
    if missing or extra:
        detail = []
        if missing:
            detail.append(f"missing {', '.join(missing)}")
        if extra:
            detail.append(f"not in the problem: {', '.join(extra)}")
        raise ParameterError(
            "`parameters` must list exactly the parameters of `problem` "
            f"(problem.parameters(): {[str(p) for p in expected.values()]}); "
            f"got {[str(p) for p in parameters]} ({'; '.join(detail)})."
        )
    if not variables:
        raise ParameterError("`variables` is empty; list at least one output variable.")
    primal = {v.id for v in problem.variables()}
    duals = _dual_owners(problem)
    for i, v in enumerate(variables):
        if not isinstance(v, cp.Variable):
            raise ParameterError(
                f"`variables[{i}]` must be a cvxpy.Variable; got {type(v).__name__} ({v})."
            )
        if v.id not in primal and v.id not in duals:
            raise ParameterError(
                f"`variables[{i}]` ({v}) is neither a variable of `problem` nor the dual "
                "variable of one of its constraints (`constraint.dual_variables[0]`). "
                f"The problem's variables are {[str(x) for x in problem.variables()]}."
            )
    if gp and any(v.id in duals for v in variables):
        raise NotImplementedError(
            "dual variables as outputs of a geometric program (gp=True) are not "
            "supported; request primal variables only."
        )
    return list(parameters), list(variables)


def _dual_owners(problem: cp.Problem) -> dict[int, tuple[cp.Constraint, int]]:
    """Dual variable id → (its constraint, its index in ``dual_variables``)."""
    return {
        dv.id: (con, k)
        for con in problem.constraints
        for k, dv in enumerate(con.dual_variables)
    }


# ---------------------------------------------------------------------------
# CVXPY's chain → the tensor of the cone program in SCS row order


def _cone_program(target: cp.Problem, canon_backend: str | None):
    """CVXPY's formatted ``ParamConeProg`` for ``target`` (tensor as CSR), the chain
    and its inverse data: what ``get_problem_data(solver=cp.DIFFCP)`` gives, less
    most of the cost of its last step.

    That step (``DIFFCP.apply``) formats the rows of the whole tensor for the
    solver (``ConicSolver.format_constraints``: one sparse product over all
    m(n+1)·(p+1) entries, and CSR↔CSC conversions) and evaluates the data at the
    parameters' current values, which a layer does not need; together 60–85 % of
    the compilation. The formatting multiplies each of the n + 1 column blocks of
    m rows by one block-diagonal matrix, for every cone we map (:func:`_row_map`)
    a signed permutation, so we move the tensor's entries instead. For any other
    constraint we take CVXPY's full path, as before.

    The problem's compilation cache is read and filled as ``get_problem_data``
    fills it (same key, the formatted program), so that a second layer of one
    problem skips the chain, and CVXPY's own later ``get_problem_data``,
    ``solve(requires_grad=True)`` and ``backward`` find what they expect there.

    Returns ``(param_prob, T, chain, inverse_data)``: ``T`` is the formatted tensor
    as CSR, shape ``(m(n+1), p+1)``, rows column-major over [A_cvx | b].
    """
    if _RESTRUCTURE_ROWS:
        chain, prob, inverse_data, cacheable = _reduced(target, canon_backend)
        solver = chain.reductions[-1]
        T = None
        if isinstance(prob, ParamConeProg) and prob.formatted:
            # Cached by CVXPY's get_problem_data, which evaluated the data and so
            # eliminated the tensor's stored zeros in place; the same on a copy.
            T = sp.csr_array(prob.A, copy=True)
            T.eliminate_zeros()
        elif isinstance(prob, ParamConeProg):
            mapped = _row_map(prob, solver)
            if mapped is not None:
                T = _move_rows(prob.A, *mapped)
                prob = ParamConeProg(  # the arguments format_constraints passes
                    prob.q, prob.x, sp.coo_array(T), prob.variables, prob.var_id_to_col,
                    prob.constraints, prob.parameters, prob.param_id_to_col, P=prob.P,
                    formatted=True, lower_bounds=prob.lower_bounds,
                    upper_bounds=prob.upper_bounds, lb_tensor=prob.lb_tensor,
                    ub_tensor=prob.ub_tensor, dir_cones=prob.dir_cones,
                )
                if cacheable:
                    target._cache.param_prog = prob
                    target._cache.inverse_data = list(inverse_data)
        if T is not None:
            # DIFFCP.apply's inverse data, less the objective's constant at the
            # current parameter values, which only shifts the optimal value (our
            # probes of the inverse chain ignore it).
            _, _, inv = solver._prepare_data_and_inv_data(prob)
            inv[cp.settings.OFFSET] = 0.0
            return prob, T, chain, [*inverse_data, SolverInverseData(inv, solver, None)]
        target._cache.invalidate()  # CVXPY's path below, exactly as before
    data, chain, inverse_data = target.get_problem_data(
        solver=cp.DIFFCP, enforce_dpp=True, canon_backend=canon_backend
    )
    param_prob = data[cp.settings.PARAM_PROB]
    return param_prob, sp.csr_array(param_prob.A), chain, inverse_data


# Format the tensor's rows ourselves (False: CVXPY's get_problem_data, for tests).
_RESTRUCTURE_ROWS = True


def _reduced(target: cp.Problem, canon_backend: str | None):
    """``(chain, program, inverse data, cacheable)``: CVXPY's DIFFCP chain applied up
    to, not including, the solver; or the formatted program and inverse data that
    ``get_problem_data`` (or we) cached on the problem for the same key.
    """
    cache = target._cache
    key = cache.make_key(cp.DIFFCP, False, False, None)  # get_problem_data's key
    if key != cache.key:
        cache.invalidate()
        chain = target._construct_chain(
            solver=cp.DIFFCP, enforce_dpp=True, canon_backend=canon_backend
        )
        cache.key, cache.solving_chain = key, chain
        target._solver_cache = {}
        target.solver_context = chain.solver_context
    else:
        chain = cache.solving_chain
    if cache.param_prog is not None:
        return chain, cache.param_prog, list(cache.inverse_data), False
    prob, inverse_data = target, []
    for reduction in chain.reductions[:-1]:
        prob, inv = reduction.apply(prob)
        inverse_data.append(inv)
    cacheable = not any(isinstance(reduction, EvalParams) for reduction in chain.reductions)
    return chain, prob, inverse_data, cacheable


def _row_map(prob: Any, solver: Any) -> tuple[IntArray, FloatArray] | None:
    """The row formatting of ``solver.format_constraints`` on ``prob``, as a signed
    permutation of one block of m rows: row r goes to ``dest[r]``, times ``sign[r]``.

    Mirrors ``format_constraints``' block-diagonal operator, one block per
    constraint in ``prob.constraints``' order: −I for ``Zero``, I for ``NonNeg``
    and ``PSD``/``SvecPSD``; for ``SOC`` (axis 0, k cones with x parts of length
    d) t_i goes to i(d + 1) and x's entry i·d + l to i(d + 1) + 1 + l; for
    ``ExpCone`` entry c of argument a goes to 3c + EXP_CONE_ORDER[a]. Returns None
    for any other constraint (the caller then takes CVXPY's own path).
    """
    if prob.formatted or prob.P is not None or prob.dir_cones:
        return None
    n = int(prob.x.size)
    m = int(prob.A.shape[0]) // (n + 1)
    order = list(solver.EXP_CONE_ORDER or ())
    dest, sign = [], []
    offset = 0
    for con in prob.constraints:
        kind = type(con)
        if kind in (Zero, NonNeg, PSD, SvecPSD):
            size = int(con.size)
            dest.append(offset + np.arange(size))
            sign.append(np.full(size, -1.0 if kind is Zero else 1.0))
        elif kind is SOC and con.axis == 0:
            t, X = con.args
            k = int(t.size)
            d = int(X.shape[0]) if X.shape else 1
            if int(X.size) != k * d:
                return None
            size = k * (d + 1)
            cone = np.arange(k) * (d + 1)
            entry = np.arange(k * d)
            dest.append(offset + np.concatenate([cone, cone[entry // d] + 1 + entry % d]))
            sign.append(np.ones(size))
        elif kind is ExpCone and sorted(order) == [0, 1, 2]:
            sizes = {int(arg.size) for arg in con.args}
            if len(sizes) != 1:
                return None
            c = np.arange(sizes.pop())
            size = 3 * c.size
            dest.append(offset + np.concatenate([3 * c + order[a] for a in range(3)]))
            sign.append(np.ones(size))
        else:
            return None
        offset += size
    if offset != m or m * (n + 1) != prob.A.shape[0]:
        return None
    return (np.concatenate(dest).astype(np.int64) if dest else np.zeros(0, dtype=np.int64),
            np.concatenate(sign) if sign else np.zeros(0))


def _move_rows(A: Any, dest: IntArray, sign: FloatArray) -> sp.csr_array:
    """``A``'s rows moved within each block of m: row r + m j → dest[r] + m j, times sign[r].

    Stored zeros are dropped, as on CVXPY's path (``DIFFCP.apply`` evaluates the
    data through ``ReducedMat.cache``, which eliminates them from the tensor in
    place), so that A's pattern is the one that path gives.
    """
    m = dest.size
    T = sp.csc_array(A, copy=True)
    T.sum_duplicates()  # a no-op on the canonical CSC that CVXPY gives
    row = np.asarray(T.indices, dtype=np.int64)
    r = row % m
    vals = T.data * sign[r]
    keep = vals != 0
    col_of = np.repeat(np.arange(T.shape[1]), np.diff(T.indptr))[keep]
    indptr = np.searchsorted(col_of, np.arange(T.shape[1] + 1))
    moved = sp.csc_array((vals[keep], (dest[r] + (row - r))[keep], indptr), shape=T.shape)
    return sp.csr_array(moved)  # the transposition sorts the new rows


# ---------------------------------------------------------------------------
# parameters: the user's values → CVXPY's θ


def _parameter_embedding(
    parameters: list[cp.Parameter],
    param_prob: Any,
    param_id_map: dict[int, int],
    gp_log_params: dict[int, cp.Parameter],
) -> tuple[list[ParameterSpec], sp.csr_array]:
    """Specs of the user's parameters and E: [θ_user; 1] ↦ [θ_cvxpy; 1]."""
    specs = []
    rows, cols, vals = [], [], []
    # (Raw segments of GP parameters, see ParameterSpec.raw, follow all the others.)
    raw_offset = sum(int(np.prod(p.shape, dtype=np.int64)) for p in parameters)

    def used(pid: int) -> int | None:
        """The id CVXPY's program knows parameter ``pid`` by, if it uses it."""
        pid = param_id_map.get(pid, pid)
        return pid if pid in param_prob.param_id_to_col else None

    def embed(pid: int, p: cp.Parameter, shape: tuple[int, ...], size: int,
              at: int) -> FloatArray | None:
        """θ's segment ``at`` into CVXPY parameter ``pid``'s columns; its mask."""
        col = param_prob.param_id_to_col[pid]
        r, c, v, mask = _lowering(p, shape, size, int(param_prob.param_id_to_size[pid]))
        rows.append(col + r)
        cols.append(at + c)
        vals.append(v)
        return mask

    offset = 0
    for p in parameters:
        shape = tuple(int(d) for d in p.shape)
        size = int(np.prod(shape, dtype=np.int64))
        checks = tuple(a for a in _CHECKED_ATTRS if p.attributes.get(a) not in (None, False))
        log = p.id in gp_log_params
        primary = used(gp_log_params[p.id].id if log else p.id)
        mask = None if primary is None else embed(primary, p, shape, size, offset)
        raw = None
        as_is = used(p.id) if log else None
        if as_is is not None:
            # Used as it is too (an exponent, x**p, stays p under the log-log
            # transformation): a second segment, of the values themselves. It was
            # left unset, so x**p read as x**0, "optimal" (found by a probe).
            raw, raw_offset = raw_offset, raw_offset + size
            raw_mask = embed(as_is, p, shape, size, raw)
            mask = raw_mask if mask is None else mask
        specs.append(ParameterSpec(str(p.name()), shape, offset, checks, log=log, mask=mask,
                                   raw=raw))
        offset += size
    columns = raw_offset  # (θ's length: every segment, the raw ones last)
    total = int(param_prob.total_param_size)
    rows.append(np.array([total]))  # constant column → constant column
    cols.append(np.array([columns]))
    vals.append(np.array([1.0]))
    E = sp.csr_array(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
        shape=(total + 1, columns + 1),
    )
    return specs, E


def _lowering(p: cp.Parameter, shape: tuple[int, ...], size: int, reduced: int):
    """Entries (row, col, value) of the map vec_F(value) → CVXPY's reduced θ."""
    if reduced == size:
        idx = np.arange(size)
        return idx, idx, np.ones(size), None
    attrs = p.attributes
    if any(attrs.get(a) for a in _SYMMETRIC_ATTRS) and len(shape) == 2:
        k = shape[0]
        i, j = np.triu_indices(k)  # CVXPY's order: row-major upper triangle
        assert i.size == reduced, "unexpected reduced size; please report this bug"
        # θ_t = (V_ij + V_ji)/2: the symmetric extension, whose adjoint spreads a
        # gradient evenly over both triangles (correct for any symmetric perturbation).
        t = np.arange(reduced)
        rows = np.concatenate([t, t])
        cols = np.concatenate([i + j * k, j + i * k])
        vals = np.full(2 * reduced, 0.5)
        return rows, cols, vals, None
    if attrs.get("diag") and len(shape) == 2:
        k = shape[0]
        t = np.arange(k)
        mask = np.eye(k, dtype=bool)
        return t, t + t * k, np.ones(k), mask
    if attrs.get("sparsity") is not None and getattr(p, "sparse_idx", None) is not None:
        flat = np.ravel_multi_index(p.sparse_idx, shape, order="F")
        assert flat.size == reduced, "unexpected reduced size; please report this bug"
        mask = np.zeros(shape, dtype=bool)
        mask[p.sparse_idx] = True
        return np.arange(reduced), flat, np.ones(reduced), mask
    raise NotImplementedError(
        f"parameter `{p.name()}` has attributes {sorted(a for a in attrs if attrs[a])} that "
        "change how CVXPY stores it, in a way conelayers does not know; declare it "
        "without them."
    )


# ---------------------------------------------------------------------------
# outputs: (x, y) → the user's variables


def _primal_recovery(var: cp.Variable, col: int, seg: int, width: int) -> sp.csr_array:
    """R for a primal variable: rows = vec_F(var), columns = [x; y]."""
    size = var.size
    attrs = var.attributes
    if seg == size:
        R = sp.csr_array((np.ones(size), (np.arange(size), col + np.arange(size))),
                         shape=(size, width))
    elif any(attrs.get(a) for a in _SYMMETRIC_ATTRS) and var.ndim == 2:
        fill = sp.coo_array(upper_tri_to_full(var.shape[0]))  # (k², seg)
        R = sp.csr_array((fill.data, (fill.row, col + fill.col)), shape=(size, width))
    elif attrs.get("diag") and var.ndim == 2:
        k = var.shape[0]
        t = np.arange(k)
        R = sp.csr_array((np.ones(k), (t + t * k, col + t)), shape=(size, width))
    elif attrs.get("sparsity") is not None and var.sparse_idx is not None:
        flat = np.ravel_multi_index(var.sparse_idx, var.shape, order="F")
        R = sp.csr_array((np.ones(seg), (flat, col + np.arange(seg))), shape=(size, width))
    else:
        raise NotImplementedError(
            f"variable `{var}` is stored by CVXPY in a reduced form conelayers does not "
            "know; declare it without its special attributes."
        )
    return R


def _probe_duals(chain, inverse_data, dgp2dcp, dgp_inverse, n: int, m: int):
    """Run CVXPY's inverse chain on probe duals y; return the three outcomes."""
    rng = np.random.default_rng(20261122)
    random = rng.uniform(1.0, 2.0, size=m)
    outcomes = []
    for y in (np.ones(m), np.arange(1.0, m + 1.0), random):
        raw = {
            "x": np.zeros(n), "y": y.copy(), "s": np.zeros(m), "solve_method": "SCS",
            "info": {"status_val": 1, "solve_time": 0.0, "setup_time": 0.0, "iter": 0,
                     "pobj": 0.0},
        }
        solution = chain.invert(raw, inverse_data)
        if dgp2dcp is not None:
            solution = dgp2dcp.invert(solution, dgp_inverse)
        outcomes.append(solution.dual_vars)
    return outcomes, random


def _split_dual(con: cp.Constraint, k: int, value: np.ndarray) -> np.ndarray:
    """The part of a constraint's dual value that belongs to ``dual_variables[k]``.

    Mirrors ``save_dual_value`` of the constraints with several dual variables
    (CVXPY's ``SOC`` and ``ExpCone``), without touching the user's objects.
    """
    dv = con.dual_variables[k]
    value = np.asarray(value, dtype=np.float64)
    if isinstance(con, SOC):
        rows = np.reshape(value, (-1, con._cone_size()))
        part = rows[:, 0] if k == 0 else rows[:, 1:]
        if k == 1:
            part = part[0, 0] if len(con.args[1].shape) == 0 else (part.T if con.axis == 0
                                                                   else part)
        return np.reshape(np.asarray(part), dv.shape, order="F")
    if isinstance(con, ExpCone):
        rows = np.reshape(value, (-1, 3))
        return np.reshape(rows[:, k], dv.shape, order="F")
    if len(con.dual_variables) != 1:
        raise NotImplementedError(
            f"constraint `{con}` ({type(con).__name__}) has several dual variables; "
            "conelayers cannot return them separately yet."
        )
    return np.reshape(value, dv.shape, order="F")


def _dual_recovery(con: cp.Constraint, k: int, probes, n: int, m: int) -> sp.csr_array:
    """R for a dual variable, measured from CVXPY's inverse chain (see module doc)."""
    (ones, index, rand), r = probes
    if con.id not in ones:
        raise NotImplementedError(
            f"CVXPY reports no dual value for constraint `{con}`; conelayers cannot "
            "return its dual variable."
        )
    scale = _split_dual(con, k, ones[con.id]).ravel(order="F")
    coded = _split_dual(con, k, index[con.id]).ravel(order="F")
    check = _split_dual(con, k, rand[con.id]).ravel(order="F")
    nz = np.abs(scale) > 1e-12
    idx = np.zeros(scale.size, dtype=np.intp)
    idx[nz] = np.rint(coded[nz] / scale[nz]).astype(np.intp) - 1
    ok = (idx >= 0) & (idx < m)
    ok &= np.allclose(check[nz], scale[nz] * r[np.clip(idx[nz], 0, m - 1)], rtol=1e-10)
    if not np.all(ok[nz]) or not np.allclose(coded[~nz], 0) or not np.allclose(check[~nz], 0):
        raise NotImplementedError(
            f"the dual variable of constraint `{con}` is not a rearrangement of the "
            "cone program's dual, which conelayers relies on; please report this problem."
        )
    rows = np.flatnonzero(nz)
    return sp.csr_array((scale[nz], (rows, n + idx[nz])), shape=(scale.size, n + m))


def _replaced_recovery(replaced: Replaced, probes, n: int, m: int) -> sp.csr_array:
    """R for the dual variable of a rewritten constraint (see ``_rewrite``), from
    those of the constraints it became: the Lagrangian term λ(|e| − r) is
    λ₊(e − r) + λ₋(−e − r) with λ = λ₊ + λ₋, where at most one of the two bounds
    is active; ‖e‖∞ ≤ r's λ is the sum of all its bounds'; ‖e‖₂ ≤ r's is the
    SOC's dual in its scalar part."""
    parts = [_dual_recovery(con, 0, probes, n, m) for con in replaced.constraints]
    if replaced.dual in ("soc", "same"):
        return parts[0]
    R = sp.csr_array(parts[0] + parts[1])
    if replaced.dual == "total":
        return sp.csr_array(np.asarray(R.sum(axis=0)).reshape(1, -1))
    return R
