"""A catalogue of bad inputs, run against the NumPy core and both front-ends.

Every entry must raise ParameterError (a ValueError) *before any solve*: an
autouse fixture replaces the ``solve`` of every solver adapter by a function
that fails the test (``test_the_guard_catches_a_solve`` shows that it does).
Each message must name the argument, say what was expected and what was
received: every entry lists three regular expressions, one for each, and all
three must match.

test_errors.py pins the exact wording of the core's messages on one problem;
this file covers the breadth (every attribute, dtype, option and argument) and
the front-ends.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import cvxpy as cp
import numpy as np
import pytest
import scipy.sparse as sp

from conelayers import CvxpyLayer, ParameterError
from conelayers._solvers import SOLVERS

HAS_TORCH = importlib.util.find_spec("torch") is not None
HAS_TF = importlib.util.find_spec("tensorflow") is not None
FRONTENDS = ["numpy",
             pytest.param("torch", marks=pytest.mark.skipif(not HAS_TORCH, reason="no torch")),
             pytest.param("tensorflow", marks=pytest.mark.skipif(not HAS_TF, reason="no tf"))]


@pytest.fixture(autouse=True)
def no_solve(monkeypatch):
    """Any call to a solver adapter's ``solve`` (or ``solving``, which sets up
    a call's solves) fails the test."""

    def refusing(method):
        def refuse(self, *args, **kwargs):
            raise AssertionError(f"{type(self).__name__}.{method} was called: the input was "
                                 "not rejected before the solve")
        return refuse

    for cls in SOLVERS.values():
        for method in ("solve", "solving"):
            monkeypatch.setattr(cls, method, refusing(method))


def layer_class(frontend: str):
    if frontend == "torch":
        from conelayers.torch import CvxpyLayer as TorchLayer

        return TorchLayer
    if frontend == "tensorflow":
        from conelayers.tensorflow import CvxpyLayer as TFLayer

        return TFLayer
    return CvxpyLayer


def to_frontend(value: Any, frontend: str) -> Any:
    """Numeric arrays become the front-end's tensors (of their own dtype, complex
    included); anything else (strings, None, ragged lists) is passed as is."""
    if not isinstance(value, np.ndarray) or value.dtype.kind not in "fcib":
        return value
    if frontend == "torch":
        import torch

        return torch.tensor(value)
    if frontend == "tensorflow":
        import tensorflow as tf

        return tf.constant(value)
    return value


# -- the problem: one parameter of every declared attribute -------------------------------


@dataclass
class Setup:
    problem: cp.Problem
    parameters: list[cp.Parameter]
    variables: list[cp.Variable]
    good: list[np.ndarray]
    other: dict[str, Any] = field(default_factory=dict)


def setup() -> Setup:
    x = cp.Variable(2, name="x")
    X = cp.Variable((2, 2), symmetric=True, name="X")
    A = cp.Parameter((3, 2), name="A")
    b = cp.Parameter(3, nonneg=True, name="b")
    r = cp.Parameter(pos=True, name="r")
    lo = cp.Parameter(2, nonpos=True, name="lo")
    u = cp.Parameter(neg=True, name="u")
    S = cp.Parameter((2, 2), PSD=True, name="S")
    T = cp.Parameter((2, 2), NSD=True, name="T")
    W = cp.Parameter((2, 2), symmetric=True, name="W")
    D = cp.Parameter((2, 2), diag=True, name="D")
    k = cp.Parameter(integer=True, name="k")
    constraint = cp.sum(x) <= k + 10
    objective = (cp.sum_squares(A @ x - b) + r * cp.sum_squares(x) + cp.sum_squares(X - S)
                 + cp.trace(T @ X) + cp.trace(W @ X) + cp.trace(D @ X))
    problem = cp.Problem(cp.Minimize(objective), [x >= lo, x[0] <= -u, constraint])
    good = [np.ones((3, 2)), np.ones(3), np.array(1.0), -np.ones(2), np.array(-1.0),
            np.eye(2), -np.eye(2), np.array([[0.0, 1.0], [1.0, 0.0]]), np.diag([1.0, 2.0]),
            np.array(3.0)]
    other_x = cp.Variable(2)
    other_con = other_x >= 0
    return Setup(problem, [A, b, r, lo, u, S, T, W, D, k], [x, X], good,
                 {"x": x, "other_var": other_x, "other_dual": other_con.dual_variables[0],
                  "dual": constraint.dual_variables[0]})


def gp_setup() -> Setup:
    x, y = cp.Variable(pos=True, name="x"), cp.Variable(pos=True, name="y")
    a, c = cp.Parameter(pos=True, name="a"), cp.Parameter(name="c")
    problem = cp.Problem(cp.Minimize(1 / (x * y)), [a * (x + y) <= 1, x >= y ** c])
    return Setup(problem, [a, c], [x, y], [np.array(2.0), np.array(0.5)])


# -- the catalogue: calls ----------------------------------------------------------------


@dataclass(frozen=True)
class Bad:
    """A bad call: ``change(values) -> values``, and (argument, expected,
    received) patterns for the message; ``per_frontend`` overrides the
    patterns where a front-end reads the value itself first."""

    name: str
    change: Callable[[list], list]
    argument: str
    expected: str
    received: str
    kwargs: dict = field(default_factory=dict)
    per_frontend: dict = field(default_factory=dict)
    gp: bool = False
    frontends: tuple[str, ...] = ("numpy", "torch", "tensorflow")


def _set(i, value):
    def change(values):
        values = list(values)
        values[i] = value(values[i]) if callable(value) else value
        return values
    return change


def _batched_with(i, item, bad):
    """Parameter i batched (4 items), item ``item`` replaced by ``bad``."""
    def change(values):
        values = list(values)
        stacked = np.stack([values[i]] * 4)
        stacked[item] = bad(stacked[item])
        values[i] = stacked
        return values
    return change


def _with_entry(value, index, entry):
    value = np.array(value, dtype=float)
    value[index] = entry
    return value


CALLS = [
    # count
    Bad("too few values", lambda v: v[:-1], r"parameter value\(s\)", r"expected 10 ",
        r"got 9"),
    Bad("too many values", lambda v: [*v, np.ones(1)], r"parameter value\(s\)",
        r"expected 10 ", r"got 11"),
    Bad("no values", lambda v: [], r"parameter value\(s\)", r"expected 10 ", r"got 0"),
    # shape
    Bad("transposed matrix", _set(0, lambda a: a.T), r"`parameters\[0\]` \(A,",
        r"must have shape \(3, 2\), or \(batch_size, 3, 2\)", r"got shape \(2, 3\)"),
    Bad("scalar for a vector", _set(1, np.array(1.0)), r"`parameters\[1\]` \(b,",
        r"must have shape \(3,\)", r"got shape \(\)"),
    Bad("matrix for a scalar", _set(2, np.ones((2, 2))), r"`parameters\[2\]` \(r,",
        r"must have shape \(\), or \(batch_size, \) for a batch", r"got shape \(2, 2\)"),
    Bad("two batch axes", _set(0, lambda a: np.stack([np.stack([a] * 2)] * 2)),
        r"`parameters\[0\]` \(A,", r"must have shape \(3, 2\), or \(batch_size, 3, 2\)",
        r"got shape \(2, 2, 3, 2\)"),
    Bad("batch sizes disagree",
        lambda v: [np.stack([v[0]] * 4), np.stack([v[1]] * 5), *v[2:]],
        r"batched parameter values", r"same leading dimension",
        r"parameters\[0\]: 4, parameters\[1\]: 5"),
    # (TensorFlow gives empty outputs: test_tensorflow_layer's empty-batch test.)
    Bad("empty batch", _set(0, np.ones((0, 3, 2))), r"`parameters\[0\]` \(A,",
        r"at least one item", r"empty batch \(shape \(0, 3, 2\)\)",
        frontends=("numpy", "torch")),
    # dtype
    Bad("complex", _set(0, lambda a: a * (1 + 1j)), r"`parameters\[0\]`", r"must be real",
        r"got (complex dtype complex128|dtype torch\.complex128)"),
    Bad("strings", _set(0, np.full((3, 2), "a")), r"`parameters\[0\]` \(A,",
        r"must be a real numeric array", r"got dtype <U1"),
    Bad("None", _set(0, None), r"`parameters\[0\]`", r"real numeric array",
        r"got dtype object \(NoneType\)"),
    Bad("ragged list", _set(0, [[1.0, 2.0], [1.0], [1.0, 2.0]]), r"`parameters\[0\]`",
        r"could not be read as an array", r"inhomogeneous"),
    Bad("objects", _set(0, np.full((3, 2), object())), r"`parameters\[0\]` \(A,",
        r"must be a real numeric array", r"got dtype object"),
    # non-finite values, named by batch item
    Bad("NaN in item 2", _batched_with(0, 2, lambda a: _with_entry(a, (1, 0), np.nan)),
        r"`parameters\[0\]` \(A,", r"pass finite values", r"contains NaN or inf "
        r"\(batch item 2, got nan at index \(1, 0\)\)"),
    Bad("inf", _set(1, lambda a: _with_entry(a, 0, np.inf)), r"`parameters\[1\]` \(b,",
        r"pass finite values", r"contains NaN or inf"),
    Bad("-inf", _set(2, np.array(-np.inf)), r"`parameters\[2\]` \(r,", r"pass finite values",
        r"contains NaN or inf"),
    # declared attributes
    Bad("nonneg violated", _set(1, lambda a: _with_entry(a, 1, -1.0)),
        r"`parameters\[1\]` \(b,", r"declared nonnegative \(nonneg=True\)",
        r"a value violates it"),
    Bad("nonneg violated in item 3", _batched_with(1, 3, lambda a: _with_entry(a, 2, -1e-3)),
        r"`parameters\[1\]` \(b,", r"declared nonnegative \(nonneg=True\)",
        r"a value violates it \(batch item 3, got -0\.001 at index \(2,\)\)"),
    Bad("pos violated by 0", _set(2, np.array(0.0)), r"`parameters\[2\]` \(r,",
        r"declared positive \(pos=True\)", r"a value violates it"),
    Bad("nonpos violated", _set(3, np.array([0.5, -1.0])), r"`parameters\[3\]` \(lo,",
        r"declared nonpositive \(nonpos=True\)", r"a value violates it"),
    Bad("neg violated by 0", _set(4, np.array(0.0)), r"`parameters\[4\]` \(u,",
        r"declared negative \(neg=True\)", r"a value violates it"),
    Bad("PSD violated", _set(5, np.diag([1.0, -1.0])), r"`parameters\[5\]` \(S,",
        r"declared PSD", r"not positive semidefinite \(extreme eigenvalue -1\.00e\+00\)"),
    Bad("PSD but asymmetric", _set(5, np.array([[1.0, 1.0], [0.0, 1.0]])),
        r"`parameters\[5\]` \(S,", r"declared symmetric",
        r"its value is not .*max \|V - Vᵀ\| = 1\.00e\+00"),
    Bad("NSD violated", _set(6, np.eye(2)), r"`parameters\[6\]` \(T,", r"declared NSD",
        r"not negative semidefinite \(extreme eigenvalue 1\.00e\+00\)"),
    Bad("symmetric violated", _set(7, np.array([[0.0, 1.0], [-1.0, 0.0]])),
        r"`parameters\[7\]` \(W,", r"declared symmetric",
        r"its value is not .*max \|V - Vᵀ\| = 2\.00e\+00"),
    Bad("diag violated", _set(8, np.array([[1.0, 0.5], [0.0, 2.0]])),
        r"`parameters\[8\]` \(D,", r"declared diagonal \(diag=True\)",
        r"nonzeros outside its pattern"),
    Bad("integer violated", _set(9, np.array(1.5)), r"`parameters\[9\]` \(k,",
        r"declared integer", r"a value is not"),
    Bad("gp value not positive", _set(0, np.array(-2.0)), r"`parameters\[0\]` \(a,",
        r"declared positive \(pos=True\)", r"a value violates it", gp=True),
    # solvers and options, per call
    # (The unknown name was blamed on `solver`, which the call did not pass.)
    Bad("unknown solver per call", lambda v: v, r"`solver_args\['solve_method'\]`",
        r"one of Clarabel, SCS, ECOS", r"got 'GUROBI'",
        kwargs={"solver_args": {"solve_method": "GUROBI"}}),
    Bad("solver name not a string", lambda v: v, r"`solver_args\['solve_method'\]`",
        r"one of Clarabel, SCS, ECOS", r"got 7",
        kwargs={"solver_args": {"solve_method": 7}}),
    Bad("misspelled Clarabel option", lambda v: v, r"`solver_args`",
        r"Accepted: .*tol_gap_abs", r"option 'tol_gap' that solver Clarabel does not know",
        kwargs={"solver_args": {"tol_gap": 1e-9}}),
    Bad("SCS option for Clarabel", lambda v: v, r"`solver_args`", r"Accepted: .*max_iter\b",
        r"option 'acceleration_lookback' that solver Clarabel does not know",
        kwargs={"solver_args": {"acceleration_lookback": 10}}),
    Bad("solver_args not a dict", lambda v: v, r"`solver_args`", r"must be a dict of options",
        r"got list", kwargs={"solver_args": [("eps", 1e-9)]}),
    Bad("unknown mode", lambda v: v, r"`solver_args\['mode'\]`",
        r"one of 'exact', 'lsqr', 'lsmr', 'dense'",
        r"got 'lpgd'", kwargs={"solver_args": {"mode": "lpgd"}}),
    Bad("negative refine", lambda v: v, r"`solver_args\['refine'\]`",
        r"nonnegative integer", r"got -1", kwargs={"solver_args": {"refine": -1}}),
    Bad("fractional refine", lambda v: v, r"`solver_args\['refine'\]`",
        r"nonnegative integer", r"got 1\.5", kwargs={"solver_args": {"refine": 1.5}}),
    Bad("boolean refine", lambda v: v, r"`solver_args\['refine'\]`",
        r"nonnegative integer", r"got True", kwargs={"solver_args": {"refine": True}}),
    # The portable options' values, for each solver: its own checks came at solve
    # time, as a bare TypeError naming its internal argument, and Clarabel took
    # eps=-1 silently (found by a probe, 2026-12-04).
    Bad("negative eps", lambda v: v, r"`solver_args\['eps'\]`", r"positive finite number",
        r"got -1\.0", kwargs={"solver_args": {"eps": -1.0}}),
    Bad("eps as a string (SCS)", lambda v: v, r"`solver_args\['eps'\]`",
        r"positive finite number", r"got '1e-3' \(str\)",
        kwargs={"solver_args": {"eps": "1e-3", "solve_method": "SCS"}}),
    Bad("infinite eps (ECOS)", lambda v: v, r"`solver_args\['eps'\]`",
        r"positive finite number", r"got inf",
        kwargs={"solver_args": {"eps": float("inf"), "solve_method": "ECOS"}}),
    Bad("fractional max_iters (ECOS)", lambda v: v, r"`solver_args\['max_iters'\]`",
        r"positive integer", r"got 2\.5", kwargs={"solver_args": {"max_iters": 2.5,
                                                                "solve_method": "ECOS"}}),
    Bad("zero max_iters", lambda v: v, r"`solver_args\['max_iters'\]`", r"positive integer",
        r"got 0", kwargs={"solver_args": {"max_iters": 0}}),
    Bad("verbose not a bool (SCS)", lambda v: v, r"`solver_args\['verbose'\]`",
        r"True or False", r"got 'yes'",
        kwargs={"solver_args": {"verbose": "yes", "solve_method": "SCS"}}),
    # Native options: the solver's own verdict on a one-row set-up, with the option named
    # (before: its bare TypeError/ValueError/Exception at the first solve).
    Bad("Clarabel option of the wrong type", lambda v: v, r"`solver_args\['tol_gap_abs'\]`",
        r"refused by Clarabel: .*real number", r"= 'x'",
        kwargs={"solver_args": {"tol_gap_abs": "x"}}),
    Bad("Clarabel option with an unknown value", lambda v: v,
        r"`solver_args\['direct_solve_method'\]`", r"refused by Clarabel: Bad settings",
        r"= 'nope'", kwargs={"solver_args": {"direct_solve_method": "nope"}}),
    Bad("SCS option out of range", lambda v: v, r"`solver_args\['alpha'\]`",
        r"refused by SCS: alpha must be in \(0, 2\)", r"= -1\.0",
        kwargs={"solver_args": {"alpha": -1.0, "solve_method": "SCS"}}),
    Bad("ECOS option of the wrong type", lambda v: v, r"`solver_args\['feastol'\]`",
        r"refused by ECOS: .*real number", r"= 'x'",
        kwargs={"solver_args": {"feastol": "x", "solve_method": "ECOS"}}),
    Bad("throw not a bool", lambda v: v, r"`throw`", r"must be True or False", r"got 'no'",
        kwargs={"throw": "no"}),
    # Found by a probe (2026-12-04): each of these reached the solver, or was read wrongly.
    Bad("masked array", _set(1, np.ma.masked_array([1.0, 2.0, 3.0], mask=[0, 1, 0])),
        r"`parameters\[1\]` \(b,", r"Pass a plain array: `value\.filled",
        r"is a masked array", frontends=("numpy",)),
    Bad("sparse matrix", _set(0, lambda a: sp.csr_matrix(a)), r"`parameters\[0\]` \(A,",
        r"Pass `value\.toarray\(\)`", r"got a sparse csr_matrix", frontends=("numpy",)),
    Bad("durations", _set(1, np.array([1, 2, 3], dtype="timedelta64[s]")),
        r"`parameters\[1\]` \(b,", r"real numeric array", r"timedelta64",
        frontends=("numpy",)),
    Bad("PSD violated at a small scale", _set(5, np.diag([1e-9, -1e-9])),
        r"`parameters\[5\]` \(S,", r"not positive semidefinite", r"-1\.00e-09"),
    Bad("Clarabel tolerance negative", lambda v: v, r"`solver_args\['tol_gap_abs'\]`",
        r"a number in \(0, inf\) for Clarabel", r"got -1\.0",
        kwargs={"solver_args": {"tol_gap_abs": -1.0}}),
    Bad("Clarabel time limit NaN", lambda v: v, r"`solver_args\['time_limit'\]`",
        r"a number in \(0, inf\]", r"got nan", kwargs={"solver_args": {"time_limit": np.nan}}),
    Bad("Clarabel step fraction above 1", lambda v: v, r"`solver_args\['max_step_fraction'\]`",
        r"a number in \(0, 1\]", r"got 5\.0",
        kwargs={"solver_args": {"max_step_fraction": 5.0}}),
    Bad("max_iters past 32 bits", lambda v: v, r"`solver_args\['max_iters'\]`",
        r"up to 2,147,483,647", r"got 4294967298",
        kwargs={"solver_args": {"max_iters": 2**32 + 2}}),
    Bad("max_iters and max_iter disagree", lambda v: v, r"`solver_args`",
        r"pass one of them", r"'max_iters' = 1 and 'max_iter' = 20",
        kwargs={"solver_args": {"max_iter": 20, "max_iters": 1}}),
    Bad("eps and a tolerance disagree (SCS)", lambda v: v, r"`solver_args`",
        r"a setting 'eps' also sets for SCS; pass one of them", r"'eps_rel' = 1e-12",
        kwargs={"solver_args": {"eps_rel": 1e-12, "eps": 1e-3, "solve_method": "SCS"}}),
]


def _call(frontend: str, bad: Bad):
    s = gp_setup() if bad.gp else setup()
    cls = layer_class(frontend)
    layer = cls(s.problem, s.parameters, s.variables, gp=bad.gp)
    values = [to_frontend(v, frontend) for v in bad.change(s.good)]
    if frontend == "numpy":
        return lambda: layer.solve(*values, **bad.kwargs)
    return lambda: layer(*values, **bad.kwargs)


def _check_message(message: str, argument: str, expected: str, received: str) -> None:
    for what, pattern in (("argument", argument), ("expected", expected),
                          ("received", received)):
        assert re.search(pattern, message), (
            f"the message does not say the {what} ({pattern!r}):\n{message}")


@pytest.mark.parametrize("frontend", FRONTENDS)
@pytest.mark.parametrize("bad", CALLS, ids=[b.name for b in CALLS])
def test_bad_call_is_rejected_before_any_solve(bad, frontend):
    if frontend not in bad.frontends:
        pytest.skip(f"not a bad call for the {frontend} layer")
    call = _call(frontend, bad)
    with pytest.raises(ParameterError) as info:
        call()
    assert isinstance(info.value, ValueError)
    patterns = bad.per_frontend.get(frontend, {})
    _check_message(str(info.value), patterns.get("argument", bad.argument),
                   patterns.get("expected", bad.expected), patterns.get("received", bad.received))


STATIC = [b for b in CALLS if b.name in {"too few values", "too many values",
                                          "transposed matrix", "scalar for a vector",
                                          "two batch axes", "batch sizes disagree"}]


@pytest.mark.skipif(not HAS_TF, reason="tensorflow is not installed")
@pytest.mark.parametrize("bad", STATIC, ids=[b.name for b in STATIC])
def test_static_bad_call_is_rejected_while_tracing(bad):
    """Inside tf.function, what the shapes decide is decided at trace time."""
    import tensorflow as tf

    s = setup()
    layer = layer_class("tensorflow")(s.problem, s.parameters, s.variables)
    values = [tf.constant(v) for v in bad.change(s.good)]
    with pytest.raises(ParameterError) as info:
        tf.function(lambda *p: layer(*p))(*values)
    _check_message(str(info.value), bad.argument, bad.expected, bad.received)


def test_the_guard_catches_a_solve():
    """The guard is live: a good call reaches the (patched) solver and fails."""
    s = setup()
    layer = CvxpyLayer(s.problem, s.parameters, s.variables)
    with pytest.raises(AssertionError, match=r"ClarabelSolver\.solving? was called"):
        layer.solve(*s.good)


# -- the catalogue: construction ---------------------------------------------------------


@dataclass(frozen=True)
class BadConstruction:
    name: str
    args: Callable[[Setup], tuple[Any, list, list, dict]]
    argument: str
    expected: str
    received: str
    error: type = ParameterError


def _args(problem=None, parameters=None, variables=None, **kwargs):
    def build(s: Setup):
        return (s.problem if problem is None else problem(s),
                s.parameters if parameters is None else parameters(s),
                s.variables if variables is None else variables(s), kwargs)
    return build


def _psd_problem(s: Setup) -> cp.Problem:
    """The setup's problem with X ⪰ 0 added: a PSD cone, which ECOS lacks."""
    X = s.variables[1]
    return cp.Problem(s.problem.objective, [*s.problem.constraints, X >> 0])


_FREE_X, _FREE_Q = cp.Variable(2, name="free_x"), cp.Parameter(2, name="free_q")


CONSTRUCTIONS = [
    BadConstruction("no constraints and an affine objective",
                    _args(problem=lambda s: cp.Problem(cp.Minimize(_FREE_Q @ _FREE_X)),
                          parameters=lambda s: [_FREE_Q], variables=lambda s: [_FREE_X]),
                    r"`problem`", r"Add the constraints that bound its variables",
                    r"has no constraints and an objective that is affine"),
    BadConstruction("problem not a Problem", _args(problem=lambda s: s.problem.objective),
                    r"`problem`", r"must be a cvxpy\.Problem", r"got Minimize"),
    BadConstruction("parameter passed as a variable",
                    _args(variables=lambda s: [s.variables[0], s.parameters[0]]),
                    r"`variables\[1\]`", r"must be a cvxpy\.Variable", r"got Parameter \(A\)"),
    BadConstruction("expression passed as a variable",
                    _args(variables=lambda s: [s.variables[0] + 1]),
                    r"`variables\[0\]`", r"must be a cvxpy\.Variable", r"got AddExpression"),
    BadConstruction("variable of another problem",
                    _args(variables=lambda s: [s.variables[0], s.other["other_var"]]),
                    r"`variables\[1\]` \(var\d+\)",
                    r"variable of `problem` nor the dual variable of one of its constraints",
                    r"The problem's variables are \[.*'x'"),
    BadConstruction("dual variable of another problem's constraint",
                    _args(variables=lambda s: [s.other["other_dual"]]),
                    r"`variables\[0\]` \(var\d+\)", r"is neither a variable of `problem`",
                    r"The problem's variables are"),
    BadConstruction("variables empty", _args(variables=lambda s: []), r"`variables`",
                    r"at least one output variable", r"is empty"),
    BadConstruction("variables not a list", _args(variables=lambda s: s.variables[0]),
                    r"`variables`", r"must be a list or tuple", r"got Variable"),
    BadConstruction("parameter missing", _args(parameters=lambda s: s.parameters[:-1]),
                    r"`parameters`", r"exactly the parameters of `problem`", r"missing k"),
    BadConstruction("parameter not in the problem",
                    _args(parameters=lambda s: [*s.parameters, cp.Parameter(name="z")]),
                    r"`parameters`", r"exactly the parameters of `problem`",
                    r"not in the problem: z"),
    BadConstruction("parameter listed twice",
                    _args(parameters=lambda s: [*s.parameters, s.parameters[0]]),
                    r"`parameters`", r"lists the same parameter more than once", r"same"),
    BadConstruction("array among the parameters",
                    _args(parameters=lambda s: [np.ones((3, 2)), *s.parameters[1:]]),
                    r"`parameters\[0\]`", r"must be a cvxpy\.Parameter", r"got ndarray"),
    BadConstruction("unknown solver", _args(solver="GUROBI"), r"`solver`",
                    r"choose one of Clarabel, SCS, ECOS", r"'GUROBI' is not a solver"),
    # `solver=3`: see test_solver_type_regression_parameter_error.
    BadConstruction("solver lacks a cone",
                    _args(problem=lambda s: _psd_problem(s), solver="ECOS"), r"solver ECOS",
                    r"Clarabel and SCS support every cone", r"does not support the PSD cone"),
    BadConstruction("misspelled SCS option", _args(solver="SCS",
                                                   solver_args={"max_iter": 100}),
                    r"`solver_args`", r"Accepted: .*max_iters",
                    r"option 'max_iter' that solver SCS does not know"),
    BadConstruction("misspelled ECOS option", _args(solver="SCS",
                                                    solver_args={"solve_method": "ECOS",
                                                                 "feastol_inac": 1e-9}),
                    r"`solver` \('SCS'\) and `solver_args\['solve_method'\]` \('ECOS'\)",
                    r"pass only one of them", r"disagree"),
    BadConstruction("misspelled ECOS option alone",
                    _args(solver_args={"solve_method": "ECOS", "feastol_inac": 1e-9},
                          ), r"`solver_args`", r"Accepted: .*feastol_inacc",
                    r"option 'feastol_inac' that solver ECOS does not know"),
    BadConstruction("unknown mode", _args(solver_args={"mode": "fast"}),
                    r"`solver_args\['mode'\]`",
                    r"one of 'exact', 'lsqr', 'lsmr', 'dense'", r"got 'fast'"),
    BadConstruction("eps as a string", _args(solver_args={"eps": "1e-3"}),
                    r"`solver_args\['eps'\]`", r"positive finite number", r"got '1e-3'"),
    BadConstruction("SCS option of the wrong type",
                    _args(solver="SCS", solver_args={"acceleration_lookback": "x"}),
                    r"`solver_args\['acceleration_lookback'\]`", r"refused by SCS",
                    r"= 'x'"),
    BadConstruction("throw not a bool", _args(throw=1), r"`throw`", r"True or False",
                    r"got 1"),
    BadConstruction("gp not a bool", _args(gp="yes"), r"`gp`", r"True or False",
                    r"got 'yes'"),
]


@pytest.mark.parametrize("frontend", FRONTENDS)
@pytest.mark.parametrize("bad", CONSTRUCTIONS, ids=[b.name for b in CONSTRUCTIONS])
def test_bad_construction_is_rejected(bad, frontend):
    s = setup()
    if bad.name == "misspelled ECOS option alone":
        # ECOS cannot take this problem's PSD cones: an SOCP without them.
        x = cp.Variable(2)
        p = cp.Parameter(2)
        s = Setup(cp.Problem(cp.Minimize(cp.sum_squares(x - p))), [p], [x], [np.ones(2)])
    problem, parameters, variables, kwargs = bad.args(s)
    with pytest.raises(bad.error) as info:
        layer_class(frontend)(problem, parameters, variables, **kwargs)
    _check_message(str(info.value), bad.argument, bad.expected, bad.received)


# -- regressions: defects this catalogue found, each fixed -----------------------------------


@pytest.mark.parametrize(("index", "value", "shown"), [
    (1, np.array([1.0, -1.0, 1.0]), r"-1\.0"),
    (2, np.array(0.0), r"got 0\.0"),
    (3, np.array([0.5, -1.0]), r"0\.5"),
    (4, np.array(0.0), r"got 0\.0"),
    (9, np.array(1.5), r"1\.5"),
], ids=["nonneg", "pos", "nonpos", "neg", "integer"])
def test_attribute_message_regression_received_value(index, value, shown):
    """A violated sign/integer attribute used to say only 'a value violates it';
    the message now shows the offending value and its index."""
    s = setup()
    values = list(s.good)
    values[index] = value
    with pytest.raises(ParameterError, match=shown):
        CvxpyLayer(s.problem, s.parameters, s.variables).solve(*values)


@pytest.mark.parametrize("frontend", FRONTENDS)
def test_solver_type_regression_parameter_error(frontend):
    """`solver=3` escaped as AttributeError ('int' object has no attribute
    'upper') from the engine's solver cache."""
    s = setup()
    with pytest.raises(ParameterError, match=r"`solver` must be a solver name"):
        layer_class(frontend)(s.problem, s.parameters, s.variables, solver=3)


def test_duplicate_parameter_message_regression_names_it():
    """The message did not say which parameter was listed twice, nor where."""
    s = setup()
    with pytest.raises(ParameterError, match=r"more than once: `parameters\[0\]` and "
                       r"`parameters\[10\]` are both A\b"):
        CvxpyLayer(s.problem, [*s.parameters, s.parameters[0]], s.variables)


@pytest.mark.skipif(not HAS_TF, reason="tensorflow is not installed")
def test_tensorflow_complex_regression_rejected():
    """A complex tensor was cast to float64, silently dropping its imaginary part."""
    import tensorflow as tf

    s = setup()
    layer = layer_class("tensorflow")(s.problem, s.parameters, s.variables)
    values = [tf.constant(v) for v in s.good]
    values[0] = tf.constant(s.good[0] * (1 + 1j))
    with pytest.raises(ParameterError, match=r"`parameters\[0\]` \(A, .*must be real; got "
                       r"complex dtype complex128"):
        layer(*values)


@pytest.mark.skipif(not HAS_TF, reason="tensorflow is not installed")
def test_tensorflow_string_regression_parameter_error():
    """A string escaped as TensorFlow's own UnimplementedError ('Cast string to
    double is not supported'); a string tensor is rejected the same way."""
    import tensorflow as tf

    s = setup()
    layer = layer_class("tensorflow")(s.problem, s.parameters, s.variables)
    with pytest.raises(ParameterError, match=r"`parameters\[0\]` \(A, .*must be a real numeric "
                       r"array; got dtype <U2 \(str\)"):
        layer("ab", *s.good[1:])
    with pytest.raises(ParameterError, match=r"`parameters\[0\]` \(A, .*must be a real numeric "
                       r"tensor; got dtype string"):
        layer(tf.constant([["a", "b"]] * 3), *s.good[1:])


@pytest.mark.skipif(not HAS_TF, reason="tensorflow is not installed")
def test_tensorflow_ragged_and_sparse_regression_named():
    """Ragged and sparse tensors were refused with the NumPy layer's advice ("the
    NumPy layer takes NumPy arrays; use conelayers.tensorflow.CvxpyLayer"), to a
    user of that very layer (found by a probe, 2026-12-04)."""
    import tensorflow as tf

    s = setup()
    layer = layer_class("tensorflow")(s.problem, s.parameters, s.variables)
    ragged = tf.RaggedTensor.from_tensor(tf.constant(s.good[0]))
    with pytest.raises(ParameterError, match=r"`parameters\[0\]` \(A, .*must be a dense tensor; "
                       r"got a RaggedTensor\. Convert it with `\.to_tensor\(\)`"):
        layer(ragged, *s.good[1:])
    sparse = tf.sparse.from_dense(tf.constant(s.good[0]))
    with pytest.raises(ParameterError, match=r"must be a dense tensor; got a SparseTensor\. "
                       r"Convert it with `tf\.sparse\.to_dense`"):
        layer(sparse, *s.good[1:])


@pytest.mark.skipif(not HAS_TORCH, reason="torch is not installed")
def test_torch_none_regression_named_as_none():
    """None became NaN (np.asarray(None, float64)) and was reported as a wrong
    shape or a NaN; the front-ends now read non-tensors by the core's rules."""
    s = setup()
    layer = layer_class("torch")(s.problem, s.parameters, s.variables)
    with pytest.raises(ParameterError, match=r"`parameters\[2\]`.*NoneType"):
        layer(*s.good[:2], None, *s.good[3:])
