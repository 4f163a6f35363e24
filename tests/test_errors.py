"""Every validation message, pinned: it names the argument, what was expected,
what was received, and what to do. All are raised before any solve."""

from __future__ import annotations

import cvxpy as cp
import numpy as np
import pytest

from conelayers import CvxpyLayer, DPPError, ParameterError


@pytest.fixture
def setup():
    x = cp.Variable(2)
    A = cp.Parameter((3, 2))
    b = cp.Parameter(3, nonneg=True)
    prob = cp.Problem(cp.Minimize(cp.sum_squares(A @ x - b)), [x >= 0])
    return prob, A, b, x


def layer_of(setup, **kwargs):
    prob, A, b, x = setup
    return CvxpyLayer(prob, [A, b], [x], **kwargs)


# -- construction -----------------------------------------------------------


def test_problem_must_be_a_cvxpy_problem(setup):
    _, A, b, x = setup
    with pytest.raises(ParameterError, match=r"`problem` must be a cvxpy.Problem; got str"):
        CvxpyLayer("min x", [A, b], [x])


def test_parameters_must_match_the_problem(setup):
    prob, A, b, x = setup
    with pytest.raises(ParameterError, match=r"`parameters` must list exactly the parameters "
                       r"of `problem`.*missing param\d+"):
        CvxpyLayer(prob, [A], [x])
    other = cp.Parameter()
    with pytest.raises(ParameterError, match=r"not in the problem: param\d+"):
        CvxpyLayer(prob, [A, b, other], [x])


def test_parameters_must_be_a_list(setup):
    prob, A, b, x = setup
    with pytest.raises(ParameterError, match=r"`parameters` must be a list or tuple; got set"):
        CvxpyLayer(prob, {A, b}, [x])


def test_parameters_entries_must_be_parameters(setup):
    prob, A, _, x = setup
    with pytest.raises(ParameterError, match=r"`parameters\[1\]` must be a cvxpy.Parameter; "
                       r"got ndarray"):
        CvxpyLayer(prob, [A, np.ones(3)], [x])


def test_duplicate_parameters(setup):
    prob, A, b, x = setup
    with pytest.raises(ParameterError, match="lists the same parameter more than once"):
        CvxpyLayer(prob, [A, b, b], [x])


def test_variable_not_in_problem(setup):
    prob, A, b, _ = setup
    y = cp.Variable(2)
    with pytest.raises(ParameterError, match=r"`variables\[0\]` \(var\d+\) is neither a variable "
                       r"of `problem` nor the dual variable of one of its constraints"):
        CvxpyLayer(prob, [A, b], [y])


def test_variables_must_not_be_empty(setup):
    prob, A, b, _ = setup
    with pytest.raises(ParameterError, match="`variables` is empty"):
        CvxpyLayer(prob, [A, b], [])


def test_non_dpp_problem_names_the_part_and_starts_like_cvxpylayers():
    x = cp.Variable()
    a, b = cp.Parameter(), cp.Parameter()
    prob = cp.Problem(cp.Minimize((a * b) * x), [x >= 0, x <= 1])
    with pytest.raises(DPPError, match=r"^Problem must be DPP\.\n  objective: ") as info:
        CvxpyLayer(prob, [a, b], [x])
    assert isinstance(info.value, ValueError)
    assert "constraint" not in str(info.value).split("\n")[1]


def test_unknown_solver(setup):
    with pytest.raises(ParameterError, match=r"`solver` 'GUROBI' is not a solver conelayers "
                       r"knows; choose one of Clarabel, SCS, ECOS, or 'DIFFCP' \(cvxpylayers' "
                       r"diffcp back-end"):
        layer_of(setup, solver="GUROBI")
    # (a cvxpylayers SolverInterface object: the names, DIFFCP among them)
    with pytest.raises(ParameterError, match=r"must be a solver name, one of Clarabel, SCS, "
                       r"ECOS, or 'DIFFCP'.*; got object"):
        layer_of(setup, solver=object())


def test_unknown_solver_option_is_rejected_at_construction(setup):
    with pytest.raises(ParameterError, match=r"`solver_args` has an option 'max_iter' that "
                       r"solver SCS does not know\. 'max_iter' is an option of Clarabel: "
                       r"choose Clarabel with solver='Clarabel'.* Accepted: .*max_iters"):
        layer_of(setup, solver="SCS", solver_args={"max_iter": 10})


def test_unknown_mode(setup):
    with pytest.raises(ParameterError, match=r"`solver_args\['mode'\]` must be one of 'exact', "
                       r"'lsqr', 'lsmr', 'dense'; got 'fast'"):
        layer_of(setup, solver_args={"mode": "fast"})


def test_solver_that_lacks_a_cone():
    X = cp.Variable((2, 2), PSD=True)
    C = cp.Parameter((2, 2))
    prob = cp.Problem(cp.Minimize(cp.trace(C @ X)), [cp.trace(X) == 1])
    with pytest.raises(ParameterError, match=r"solver ECOS cannot solve this problem: it does "
                       r"not support the PSD cone\(s\)"):
        CvxpyLayer(prob, [C], [X], solver="ECOS")


def test_integer_variables_are_not_supported():
    x = cp.Variable(integer=True)
    p = cp.Parameter()
    with pytest.raises(NotImplementedError, match="integer or boolean variables"):
        CvxpyLayer(cp.Problem(cp.Minimize(cp.square(x - p))), [p], [x])


def test_finite_set_regression_is_not_supported():
    """A `FiniteSet` constraint was dropped: CVXPY's path to a continuous solver
    discards the integrality of the boolean variables it becomes, so the layer
    solved the relaxation and called it optimal (x = c, outside {0, 1})."""
    x, c = cp.Variable(3), cp.Parameter(3)
    problem = cp.Problem(cp.Minimize(cp.norm1(x - c)), [cp.FiniteSet(x, [0.0, 1.0])])
    with pytest.raises(NotImplementedError, match=r"`FiniteSet` constraint, which makes it "
                       r"mixed-integer.*`0 <= x, x <= 1`"):
        CvxpyLayer(problem, [c], [x])


def test_power_cone_message_regression_names_approx_false():
    """`power(x, 1.5, approx=False)` was told to use `power(x, p)` instead of
    explicit power-cone constraints, neither of which it had written."""
    x, c = cp.Variable(3), cp.Parameter(3)
    problem = cp.Problem(cp.Minimize(cp.sum(cp.power(x, 1.5, approx=False)) - c @ x), [x >= 0])
    with pytest.raises(NotImplementedError, match=r"atoms with `approx=False`.*Drop "
                       r"`approx=False`"):
        CvxpyLayer(problem, [c], [x])


def test_throw_must_be_bool(setup):
    with pytest.raises(ParameterError, match=r"`throw` must be True or False; got 'no'"):
        layer_of(setup, throw="no")


# -- call ------------------------------------------------------------------


def test_wrong_number_of_values(setup):
    layer = layer_of(setup)
    with pytest.raises(ParameterError, match=r"expected 2 parameter value\(s\), one per "
                       r"parameter .*; got 1"):
        layer(np.ones((3, 2)))


def test_wrong_shape(setup):
    layer = layer_of(setup)
    with pytest.raises(ParameterError, match=r"`parameters\[0\]` \(param\d+, shape \(3, 2\)\) must "
                       r"have shape \(3, 2\), or \(batch_size, 3, 2\) for a batch; got shape "
                       r"\(2, 3\)"):
        layer(np.ones((2, 3)), np.ones(3))


def test_inconsistent_batch_sizes(setup):
    layer = layer_of(setup)
    with pytest.raises(ParameterError, match=r"disagree on the batch size \(parameters\[0\]: 4, "
                       r"parameters\[1\]: 5\)"):
        layer(np.ones((4, 3, 2)), np.ones((5, 3)))


def test_empty_batch(setup):
    layer = layer_of(setup)
    with pytest.raises(ParameterError, match=r"has an empty batch \(shape \(0, 3, 2\)\)"):
        layer(np.ones((0, 3, 2)), np.ones(3))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nonfinite_values_name_the_item(setup, bad):
    layer = layer_of(setup)
    A = np.ones((3, 3, 2))
    A[2, 1, 0] = bad
    with pytest.raises(ParameterError, match=r"`parameters\[0\]` .* contains NaN or inf "
                       rf"\(batch item 2, got {float(bad)!r} at index \(1, 0\)\)"):
        layer(A, np.ones(3))


def test_declared_attribute_is_checked(setup):
    layer = layer_of(setup)
    with pytest.raises(ParameterError, match=r"`parameters\[1\]` .* is declared nonnegative "
                       r"\(nonneg=True\) but a value violates it"):
        layer(np.ones((3, 2)), -np.ones(3))


def test_symmetric_and_psd_attributes_are_checked():
    X = cp.Variable((2, 2), symmetric=True)
    S = cp.Parameter((2, 2), PSD=True)
    layer = CvxpyLayer(cp.Problem(cp.Minimize(cp.sum_squares(X - S))), [S], [X])
    with pytest.raises(ParameterError, match="is declared symmetric but its value is not"):
        layer(np.array([[1.0, 2.0], [0.0, 1.0]]))
    with pytest.raises(ParameterError, match="is declared PSD but its value is not positive "
                       "semidefinite"):
        layer(np.array([[1.0, 0.0], [0.0, -1.0]]))


def test_complex_and_string_values(setup):
    layer = layer_of(setup)
    with pytest.raises(ParameterError, match="must be real; got complex"):
        layer(np.ones((3, 2)) * 1j, np.ones(3))
    with pytest.raises(ParameterError, match="must be a real numeric array; got dtype <U1"):
        layer(np.full((3, 2), "a"), np.ones(3))


def test_unknown_option_per_call(setup):
    layer = layer_of(setup)
    with pytest.raises(ParameterError, match=r"option 'tol' that solver Clarabel does not know"):
        layer(np.ones((3, 2)), np.ones(3), solver_args={"tol": 1e-3})


def test_refine_must_be_a_count(setup):
    layer = layer_of(setup)
    with pytest.raises(ParameterError, match=r"`solver_args\['refine'\]` must be a nonnegative "
                       r"integer"):
        layer(np.ones((3, 2)), np.ones(3), solver_args={"refine": -1})


def test_cotangent_shape(setup):
    layer = layer_of(setup)
    sol = layer.solve(np.ones((3, 2)), np.ones(3))
    with pytest.raises(ParameterError, match=r"cotangent of output 0 \(var\d+\) must have shape "
                       r"\(2,\); got \(3,\)"):
        sol.adjoint(np.ones(3))


def test_tangent_shape(setup):
    layer = layer_of(setup)
    sol = layer.solve(np.ones((3, 2)), np.ones(3))
    with pytest.raises(ParameterError, match=r"tangent of `parameters\[1\]` .* must have the "
                       r"shape of the value passed, \(3,\); got \(2,\)"):
        sol.derivative(None, np.ones(2))


def test_nonfinite_tangent_regression_is_rejected(setup):
    """A NaN tangent came back as NaN outputs with a DerivativeWarning blaming
    the derivative's solve ("this item's gradient is inaccurate")."""
    layer = layer_of(setup)
    sol = layer.solve(np.ones((3, 2)), np.ones(3))
    for bad in (np.nan, np.inf):
        with pytest.raises(ParameterError, match=r"tangent of `parameters\[1\]` .* contains "
                           r"NaN or inf; pass finite values"):
            sol.derivative(None, np.array([1.0, bad, 0.0]))


def test_numpy_scalars_regression_accepted_as_options(setup):
    """`refine=np.int64(2)` and `throw=np.False_` were refused ("must be a
    nonnegative integer ... got np.int64(2)") where `max_iters` and `verbose`
    took NumPy's integers and booleans; they work like Python's now."""
    layer = layer_of(setup)
    values = (np.ones((3, 2)), np.ones(3))
    expected = layer.solve(*values, solver_args={"refine": 2, "n_jobs_forward": 1},
                           throw=False).values[0]
    got = layer.solve(*values, solver_args={"refine": np.int64(2), "n_jobs_forward": np.int32(1)},
                      throw=np.False_).values[0]
    np.testing.assert_array_equal(got, expected)
    assert layer_of(setup, throw=np.True_)._throw is True


def test_portable_options_regression_carry_over_a_solver_switch(setup):
    """The constructor's `max_iters` was dropped when a call switched solver
    (portable options are every solver's); the other solver's own options are not
    carried (ECOS's `feastol` means nothing to Clarabel)."""
    # (refine=0: refinement may certify a stopped item and call it optimal.)
    layer = layer_of(setup, solver="ECOS",
                     solver_args={"max_iters": 1, "feastol": 1e-9, "refine": 0})
    values = (np.ones((3, 2)), np.ones(3))
    for name in ("ECOS", "Clarabel", "SCS"):
        sol = layer.solve(*values, solver_args={"solve_method": name}, throw=False)
        alone = layer_of(setup, solver=name, solver_args={"max_iters": 1, "refine": 0}).solve(
            *values, throw=False)
        assert sol.status[0].name == "max_iterations", name
        assert sol.iterations[0] == alone.iterations[0], name
    assert layer.solve(*values, solver_args={"solve_method": "Clarabel", "max_iters": 50}
                       ).status[0].name == "optimal"


def test_call_options_override_the_constructors_under_either_name(setup):
    """A call's native name overrides the constructor's portable one and the
    other way round (translated level by level, so the dict's order decides
    nothing)."""
    values = (np.ones((3, 2)), np.ones(3))
    for built, called in (({"max_iters": 1}, {"max_iter": 50}),
                          ({"max_iter": 1}, {"max_iters": 50})):
        layer = layer_of(setup, solver_args={**built, "refine": 0})
        assert layer.solve(*values, throw=False).status[0].name == "max_iterations"
        assert layer.solve(*values, solver_args=called).status[0].name == "optimal"
        assert layer.solve(*values, solver_args={**called, "max_iters": 50, "max_iter": 50}
                           ).status[0].name == "optimal"  # (the same value twice: no conflict)


def test_values_are_not_mutated(setup, rng):
    layer = layer_of(setup)
    A, b = rng.standard_normal((4, 3, 2)), rng.uniform(0, 1, (4, 3))
    A0, b0 = A.copy(), b.copy()
    sol = layer.solve(A, b)
    sol.adjoint(np.ones((4, 2)))
    np.testing.assert_array_equal(A, A0)
    np.testing.assert_array_equal(b, b0)
