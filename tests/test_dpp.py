"""The DPP checker: a corpus of non-compliant problems, each with the one rule and
sub-expression it must be blamed for, and compliant-but-tricky problems that must
produce no finding. The oracle for the verdict is CVXPY's own ``problem.is_dpp()``:
the checker explains it and never disagrees."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import FrozenInstanceError, dataclass

import cvxpy as cp
import numpy as np
import pytest

from conelayers import CvxpyLayer, DPPError, DPPReport, Finding, Rule, check_dpp
from conelayers._dpp import dpp_error_message, is_compliant

# Named leaves, so that expected texts are stable. Each case builds its own
# problem from them; CVXPY objects are immutable, so sharing leaves is safe.
x = cp.Variable(2, name="x")
y = cp.Variable(name="y")
z = cp.Variable(name="z")
X = cp.Variable((2, 2), name="X")
a = cp.Parameter(name="a")
b = cp.Parameter(name="b")
an = cp.Parameter(name="an", nonneg=True)
c = cp.Parameter(2, name="c")
A = cp.Parameter((2, 2), name="A")
B = cp.Parameter((2, 2), name="B")
P = cp.Parameter((2, 2), name="P", PSD=True)
S = cp.Parameter((2, 2), name="S", symmetric=True)
# geometric programs
xp = cp.Variable(name="xp", pos=True)
yp = cp.Variable(name="yp", pos=True)
zn = cp.Variable(name="zn", nonneg=True)
ap = cp.Parameter(name="ap", pos=True)
bp = cp.Parameter(name="bp", pos=True)


def _bounded(name: str, lower) -> cp.Variable:
    return cp.Variable(name=name, bounds=[lower, None])


@dataclass(frozen=True)
class Bad:
    """A non-compliant problem and the findings it must produce, in order."""

    build: Callable[[], cp.Problem]
    expected: tuple[tuple[str, Rule, str], ...]  # (location, rule, sub-expression)
    gp: bool = False


def bad(build, location, rule, expression, gp=False) -> Bad:
    return Bad(build, ((location, rule, expression),), gp)


R = Rule
BAD: dict[str, Bad] = {
    # -- parameter × parameter products --------------------------------------
    "parameter_product_in_objective": bad(
        lambda: cp.Problem(cp.Minimize(a * b * y), [y >= 0]),
        "objective", R.parameter_product, "a * b"),
    "parameter_times_parameter_dependent_expression": bad(
        lambda: cp.Problem(cp.Minimize(a * (b * y)), [y >= 0]),
        "objective", R.parameter_product, "a * (b * y)"),
    "parameter_product_in_constraint": bad(
        lambda: cp.Problem(cp.Minimize(cp.sum(x)), [x >= 0, A @ (B @ x) <= c]),
        "constraint 1", R.parameter_product, "A @ (B @ x)"),
    "parameter_matrix_product_then_variable": bad(
        lambda: cp.Problem(cp.Minimize(cp.sum(x)), [(A @ B) @ x == c]),
        "constraint 0", R.parameter_product, "A @ B"),
    "parameter_product_inside_norm": bad(
        lambda: cp.Problem(cp.Minimize(cp.norm(A @ (B @ x) - c))),
        "objective", R.parameter_product, "A @ (B @ x)"),
    "parameter_product_inside_log_sum_exp": bad(
        lambda: cp.Problem(cp.Minimize(cp.log_sum_exp(cp.multiply(a * b, x)))),
        "objective", R.parameter_product, "a * b"),
    "parameter_product_inside_exp": bad(
        lambda: cp.Problem(cp.Minimize(cp.exp(a * b * y))),
        "objective", R.parameter_product, "a * b"),
    "elementwise_parameter_product": bad(
        lambda: cp.Problem(cp.Minimize(cp.multiply(cp.multiply(c, c), x) @ np.ones(2)),
                           [x >= 0]),
        "objective", R.parameter_product, "c * c"),
    "trace_of_parameter_product": bad(
        lambda: cp.Problem(cp.Minimize(cp.trace(A @ B) * y), [y >= 0]),
        "objective", R.parameter_product, "A * B.T"),
    "parameter_times_variable_with_parametric_bounds": bad(
        lambda: cp.Problem(cp.Minimize(a * _bounded("w", b))),
        "objective", R.parameter_product, "a * w"),
    "parameter_product_in_variable_bounds": bad(
        lambda: cp.Problem(cp.Minimize(_bounded("v", a * b))),
        "variable v", R.parameter_product, "a * b"),
    # -- nonlinear functions of parameters ----------------------------------------
    "exp_of_parameter_times_variable": bad(
        lambda: cp.Problem(cp.Minimize(cp.exp(a) * y), [y >= 0]),
        "objective", R.nonlinear_parameter, "exp(a) * y"),
    "square_of_parameter_times_variable": bad(
        lambda: cp.Problem(cp.Minimize(cp.square(a) * y), [y >= 0]),
        "objective", R.nonlinear_parameter, "square(a) * y"),
    "abs_of_parameter_in_constraint": bad(
        lambda: cp.Problem(cp.Minimize(y), [cp.abs(a) * y >= 1]),
        "constraint 0", R.nonlinear_parameter, "abs(a) * y"),
    "nonlinear_parameter_on_the_wrong_side_top_level": bad(
        lambda: cp.Problem(cp.Maximize(y), [y <= cp.exp(a)]),
        "constraint 0", R.nonlinear_parameter, "exp(a)"),
    "nonlinear_parameter_in_objective_top_level": bad(
        lambda: cp.Problem(cp.Minimize(y - cp.exp(a)), [y >= 0]),
        "objective", R.nonlinear_parameter, "exp(a)"),
    "nonlinear_parameter_inside_a_nonmonotone_atom": bad(
        lambda: cp.Problem(cp.Minimize(cp.square(y + cp.exp(a)))),
        "objective", R.nonlinear_parameter, "square(y + exp(a))"),
    "nonlinear_parameter_in_variable_bounds": bad(
        lambda: cp.Problem(cp.Minimize(_bounded("v", cp.exp(a)))),
        "variable v", R.nonlinear_parameter, "exp(a)"),
    # -- divisions, quad_form, power, fixed positions ------------------------------
    "division_by_parameter": bad(
        lambda: cp.Problem(cp.Minimize(y / a), [y >= 1]),
        "objective", R.parameter_divisor, "y / a"),
    "quad_over_lin_with_parametric_denominator": bad(
        lambda: cp.Problem(cp.Minimize(cp.quad_over_lin(x, an))),
        "objective", R.parameter_divisor, "quad_over_lin(x, an)"),
    "quad_form_with_psd_parameter": bad(
        lambda: cp.Problem(cp.Minimize(cp.quad_form(x, P))),
        "objective", R.parametric_quad_form, "quad_form(x, P)"),
    "quad_form_with_symmetric_parameter_in_constraint": bad(
        lambda: cp.Problem(cp.Minimize(cp.sum(x)), [cp.quad_form(x, S) <= 1]),
        "constraint 0", R.parametric_quad_form, "quad_form(x, S)"),
    "power_with_parametric_exponent": bad(
        lambda: cp.Problem(cp.Minimize(cp.power(y, a)), [y >= 1]),
        "objective", R.parametric_exponent, "power(y, a)"),
    "power_with_parametric_exponent_in_constraint": bad(
        lambda: cp.Problem(cp.Minimize(-y), [y ** an <= 2]),
        "constraint 0", R.parametric_exponent, "power(y, an)"),
    "convolve_with_parameter": bad(
        lambda: cp.Problem(cp.Minimize(cp.sum(cp.convolve(c, x))), [x >= 0]),
        "objective", R.parameter_in_fixed_position, "convolve(c, x)"),
    "kron_with_parameter": bad(
        lambda: cp.Problem(cp.Minimize(cp.sum(cp.kron(A, X))), [X >= 0]),
        "objective", R.parameter_in_fixed_position, "kron(A, X)"),
    # -- DCP violations (with or without parameters) --------------------------------
    "product_of_variables": bad(
        lambda: cp.Problem(cp.Minimize(x @ x)),
        "objective", R.curvature, "x @ x"),
    "convex_minus_convex": bad(
        lambda: cp.Problem(cp.Minimize(cp.abs(y) - cp.abs(z))),
        "objective", R.curvature, "abs(y) - abs(z)"),
    "division_by_variable": bad(
        lambda: cp.Problem(cp.Minimize(y), [y / z <= 1, z >= 1]),
        "constraint 0", R.curvature, "y / z"),
    "parameter_of_unknown_sign_times_concave": bad(
        lambda: cp.Problem(cp.Maximize(a * cp.sqrt(y))),
        "objective", R.composition, "a * sqrt(y)"),
    "concave_of_convex": bad(
        lambda: cp.Problem(cp.Minimize(cp.sqrt(cp.square(y)))),
        "objective", R.composition, "sqrt(square(y))"),
    "nonmonotone_convex_of_concave": bad(
        lambda: cp.Problem(cp.Minimize(cp.square(cp.sqrt(y)))),
        "objective", R.composition, "square(sqrt(y))"),
    "maximize_convex": bad(
        lambda: cp.Problem(cp.Maximize(cp.square(y - a))),
        "objective", R.objective_curvature, "square(y - a)"),
    "convex_greater_or_equal": bad(
        lambda: cp.Problem(cp.Minimize(y), [cp.square(y) >= a]),
        "constraint 0", R.constraint_kind, "a <= square(y)"),
    "nonaffine_equality": bad(
        lambda: cp.Problem(cp.Minimize(y), [cp.square(y) == 1]),
        "constraint 0", R.constraint_kind, "square(y) == 1.0"),
    "cone_constraint_with_nonaffine_argument": bad(
        lambda: cp.Problem(cp.Minimize(y), [cp.SOC(y, cp.square(x))]),
        "constraint 0", R.constraint_kind, "SOC(reshape(y, (1,), order='F'), square(x))"),
    # -- several findings --------------------------------------------------------
    "findings_in_objective_and_constraint": Bad(
        lambda: cp.Problem(cp.Minimize(a * b * y), [y >= 0, y <= cp.exp(a)]),
        (("objective", R.parameter_product, "a * b"),
         ("constraint 1", R.nonlinear_parameter, "exp(a)"))),
    # -- geometric programs (gp=True) ------------------------------------------------
    "dgp_power_with_parametric_base_and_exponent": bad(
        lambda: cp.Problem(cp.Minimize(xp), [ap ** bp <= xp]),
        "constraint 0", R.parametric_exponent, "power(ap, bp)", gp=True),
    "dgp_power_of_parametric_monomial": bad(
        lambda: cp.Problem(cp.Minimize((ap * xp) ** bp), [xp >= 1]),
        "objective", R.parametric_exponent, "power(ap * xp, bp)", gp=True),
    "dgp_variable_not_positive": bad(
        lambda: cp.Problem(cp.Minimize(xp * zn), [xp >= 1]),
        "objective", R.nonpositive_leaf, "zn", gp=True),
    "dgp_parameter_not_positive": bad(
        lambda: cp.Problem(cp.Minimize(a * xp), [xp >= 1]),
        "objective", R.parameter_attribute, "a", gp=True),
    "dgp_subtraction": bad(
        lambda: cp.Problem(cp.Minimize(xp), [xp - yp <= 1]),
        "constraint 0", R.dgp_atom, "-yp", gp=True),
    "dgp_posynomial_plus_log_log_concave": bad(
        lambda: cp.Problem(cp.Minimize(xp + 1 / (xp + yp))),
        "objective", R.dgp_composition, "xp + 1.0 / (xp + yp)", gp=True),
    "dgp_posynomial_equality": bad(
        lambda: cp.Problem(cp.Minimize(xp), [xp + yp == 1]),
        "constraint 0", R.constraint_kind, "xp + yp == 1.0", gp=True),
    "dgp_maximize_posynomial": bad(
        lambda: cp.Problem(cp.Maximize(xp + yp), [xp * yp <= 1]),
        "objective", R.objective_curvature, "xp + yp", gp=True),
    "dgp_posynomial_of_parameters_on_the_right": bad(
        lambda: cp.Problem(cp.Maximize(xp), [xp <= ap + bp]),
        "constraint 0", R.nonlinear_parameter, "ap + bp", gp=True),
    "dgp_nonnegativity_constraint": bad(
        lambda: cp.Problem(cp.Minimize(xp), [xp >= 0]),
        "constraint 0", R.nonpositive_leaf, "0.0", gp=True),
}

# Compliant, although each looks like something on the list above.
GOOD: dict[str, tuple[Callable[[], cp.Problem], bool]] = {
    "parameter_times_constant_times_variable": (
        lambda: cp.Problem(cp.Minimize(2 * a * y), [y >= 0, y <= 1]), False),
    "parameter_affine_times_parameter_free": (
        lambda: cp.Problem(cp.Minimize((a + b) * (y + 1)), [y >= 0, y <= 1]), False),
    "multiply_by_parameter": (
        lambda: cp.Problem(cp.Minimize(cp.sum(cp.multiply(c, x))), [x >= 0, x <= 1]), False),
    "parameter_matrix_times_variable_inside_norm": (
        lambda: cp.Problem(cp.Minimize(cp.norm(A @ x - c) + an * cp.norm1(x))), False),
    "sum_of_parameter_matrix_times_variable": (
        lambda: cp.Problem(cp.Minimize(cp.sum(A) * y), [y >= 0, y <= 1]), False),
    "nonlinear_parameter_in_additive_position": (
        lambda: cp.Problem(cp.Minimize(cp.exp(a) + cp.square(y))), False),
    "log_sum_exp_of_parameter_affine_expression": (
        lambda: cp.Problem(cp.Minimize(cp.log_sum_exp(A @ x + c))), False),
    "quad_form_of_parameter_affine_vector_with_constant_matrix": (
        lambda: cp.Problem(cp.Minimize(cp.quad_form(A @ x, np.eye(2)))), False),
    "nonneg_parameter_times_concave": (
        lambda: cp.Problem(cp.Maximize(an * cp.sqrt(y) - y)), False),
    "huber_with_parameter_threshold": (
        lambda: cp.Problem(cp.Minimize(cp.sum(cp.huber(x - c, an)))), False),
    "dotsort_with_parameter_weights": (
        lambda: cp.Problem(cp.Minimize(cp.dotsort(x, c)), [cp.sum(x) == 1, x >= 0]), False),
    "parameter_bounds_of_a_variable": (
        lambda: cp.Problem(cp.Minimize(cp.Variable(name="u", bounds=[a, a + b]))), False),
    "parameter_on_the_right_of_a_constraint": (
        lambda: cp.Problem(cp.Maximize(y), [y <= a, c @ x <= b]), False),
    "concave_objective_maximized_with_parameters": (
        lambda: cp.Problem(cp.Maximize(cp.min(A @ x) - cp.sum_squares(x - c))), False),
    "variable_free_constant_power": (
        lambda: cp.Problem(cp.Minimize(cp.power(cp.pos(x - c), 3) @ np.ones(2))), False),
    "gp_monomial_with_parameter_coefficients": (
        lambda: cp.Problem(cp.Minimize(ap * bp * xp ** -1.5 * yp),
                           [ap * xp + bp * yp <= 1]), True),
    "gp_parameter_exponent_of_variable_with_any_sign": (
        lambda: cp.Problem(cp.Minimize(xp ** a * yp), [xp * yp >= ap, xp <= 2, yp <= 2]),
        True),
    "gp_power_of_parameter_with_constant_exponent": (
        lambda: cp.Problem(cp.Minimize(ap ** 2 * xp + 1 / xp)), True),
}

ALL_PROBLEMS = [(name, case.build, case.gp) for name, case in BAD.items()] + [
    (name, build, gp) for name, (build, gp) in GOOD.items()]


# -- the corpus ------------------------------------------------------------------


def _structure(obj) -> tuple:
    """A problem's expression trees (CVXPY's text hides grouping: a*(b*y) prints a*b*y)."""
    if isinstance(obj, cp.Problem):
        return (_structure(obj.objective), *(_structure(con) for con in obj.constraints))
    if not obj.args:
        bounds = getattr(obj, "attributes", {}).get("bounds") or ()
        return (type(obj).__name__, str(obj), *(str(b) for b in bounds))
    data = obj.get_data() if hasattr(obj, "get_data") else None  # power's exponent, ...
    return (type(obj).__name__, str(data), *(_structure(arg) for arg in obj.args))


def test_corpus_is_large_and_distinct():
    assert len(BAD) >= 30
    assert len(GOOD) >= 15
    shapes = {(_structure(build()), gp) for _, build, gp in ALL_PROBLEMS}
    assert len(shapes) == len(ALL_PROBLEMS)


@pytest.mark.parametrize("name", list(BAD))
def test_non_compliant_problem_names_the_rule_and_subexpression(name):
    case = BAD[name]
    report = check_dpp(case.build(), gp=case.gp)
    got = tuple((f.location, f.rule, f.expression) for f in report.findings)
    assert got == case.expected
    assert not report.ok


@pytest.mark.parametrize("name", list(GOOD))
def test_compliant_but_tricky_problem_has_no_findings(name):
    build, gp = GOOD[name]
    report = check_dpp(build(), gp=gp)
    assert report.ok, str(report)
    assert report.findings == ()
    assert str(report) == f"Problem is DPP ({'DGP' if gp else 'DCP'}+DPP): no findings."


@pytest.mark.parametrize(("name", "build", "gp"), ALL_PROBLEMS,
                         ids=[name for name, _, _ in ALL_PROBLEMS])
def test_verdict_agrees_with_cvxpy(name, build, gp):
    problem = build()
    report = check_dpp(problem, gp=gp)
    assert report.ok == problem.is_dpp("dgp" if gp else "dcp")
    assert report.ok == is_compliant(problem, gp=gp)


def test_verdict_agrees_with_cvxpy_on_the_problem_zoo():
    from problems import CASES

    for make in CASES.values():
        case = make()
        assert check_dpp(case.problem, gp=case.gp).ok, case.name


def test_corpus_covers_the_catalogue():
    used = {rule for case in BAD.values() for _, rule, _ in case.expected}
    assert used == set(Rule) - {Rule.unclassified}


def test_gp_accepts_the_parameter_product_that_dcp_rejects():
    problem = cp.Problem(cp.Minimize(ap * bp * xp), [xp >= 1])
    assert [f.rule for f in check_dpp(problem).findings] == [Rule.parameter_product]
    assert check_dpp(problem, gp=True).ok


# -- what each finding says --------------------------------------------------------


def test_parameter_product_fix_introduces_one_parameter():
    (f,) = check_dpp(BAD["parameter_times_parameter_dependent_expression"].build()).findings
    assert f.fix == ("introduce one parameter `a_b` whose value you set to `a * b` (computed "
                     "outside the problem) and write `a_b * y`.")
    assert f.parameters == ("a", "b")
    assert f.fixed_parameters_ok and not f.top_level


def test_parameter_product_fix_of_a_square_names_a_new_parameter():
    """p * p and p * (p * x): the new parameter is not called `p` itself."""
    p = cp.Parameter(name="p")
    x = cp.Variable(name="x")
    (square,) = check_dpp(cp.Problem(cp.Minimize(p * p * x), [x >= 0])).findings
    assert square.fix == ("introduce one parameter `p_p` whose value you set to `p * p` "
                          "(computed outside the problem) and use `p_p` in place of this "
                          "product.")
    (nested,) = check_dpp(cp.Problem(cp.Minimize(p * (p * x)), [x >= 0])).findings
    assert nested.fix.endswith("and write `p_p * x`."), nested.fix


def test_findings_print_the_functions_a_user_writes():
    """Fix texts a user can type: sqrt(p), not PowerApprox(p, 0.5); a divisor
    `p`, not Promote(p, (3,)); sum_squares(x - q) and sum(x) in the part."""
    p = cp.Parameter(name="p", pos=True)
    q = cp.Parameter(3, name="q")
    x = cp.Variable(3, name="x")
    (root,) = check_dpp(cp.Problem(cp.Minimize(cp.sqrt(p) * cp.sum(x)), [x >= 0])).findings
    assert root.expression == "sqrt(p) * sum(x)"
    assert "`sqrt_p` (declared nonneg=True) whose value you set to `sqrt(p)`" in root.fix
    (division,) = check_dpp(cp.Problem(cp.Minimize(cp.sum(x / p)), [x >= 0])).findings
    assert division.detail.startswith("the divisor `p` depends on parameters"), division.detail
    (sense,) = check_dpp(cp.Problem(cp.Maximize(cp.sum_squares(x - q)), [x <= 1])).findings
    assert sense.part == "maximize sum_squares(x - q)"


def test_parameter_product_fix_regroups_matrix_products():
    (f,) = check_dpp(BAD["parameter_product_in_constraint"].build()).findings
    assert "`A_B` whose value you set to `A @ B`" in f.fix
    assert "write `A_B @ x`" in f.fix
    assert f.index == 1 and f.part == "A @ (B @ x) <= c"


def test_quad_form_fix_uses_a_factor():
    (f,) = check_dpp(BAD["quad_form_with_psd_parameter"].build()).findings
    assert f.fix.startswith("write `quad_form(x, P)` as `cp.sum_squares(L @ x)` with a "
                            "parameter `L`")
    assert "P = Lᵀ L" in f.fix


def test_sign_fix_names_the_parameter_to_declare():
    (f,) = check_dpp(BAD["parameter_of_unknown_sign_times_concave"].build()).findings
    assert "declare the parameter `a` with nonneg=True" in f.fix
    assert not f.fixed_parameters_ok


def test_nonlinear_parameter_fix_names_a_new_parameter():
    (f,) = check_dpp(BAD["exp_of_parameter_times_variable"].build()).findings
    assert "`exp_a` (declared nonneg=True) whose value you set to `exp(a)`" in f.fix


def _applied(fix: str, name: str, shape: tuple[int, ...]) -> cp.Parameter:
    """The new parameter a fix introduces, declared as the fix says."""
    declared = re.search(rf"`{name}` \(declared (\w+)=True", fix)
    return cp.Parameter(shape, name=name, **({declared.group(1): True} if declared else {}))


_x3, _X = cp.Variable(3, name="x"), cp.Variable((3, 3), name="X")
_pp, _qq = cp.Parameter(pos=True, name="pp"), cp.Parameter(pos=True, name="qq")
_p, _pn = cp.Parameter(name="p"), cp.Parameter(nonneg=True, name="pn")
_a, _A, _B = cp.Parameter(3, name="a"), cp.Parameter((3, 3), name="A"), cp.Parameter((3, 3),
                                                                                     name="B")
_y, _z = cp.Variable(pos=True, name="y"), cp.Variable(pos=True, name="z")

# (original objective or problem, gp, the new parameter's name and shape, the rewrite the
# fix says in its words, and the rewrite applied). Found by a probe (2026-12-04): the fixes
# left out the sign a new parameter multiplying a convex expression needs (applied as
# written, the problem was still not DPP), and wrote an element-wise product as `a_p * x`,
# which CVXPY reads as a matrix product (a scalar, not the (3,) of the original).
FIXES = {
    "divisor of a convex term": (
        cp.sum_squares(_x3) / _pp, False, "inv_pp", (), "sum_squares(x) * inv_pp",
        lambda q: cp.sum_squares(_x3) * q),
    "exp(p) times a convex term": (
        cp.exp(_p) * cp.sum_squares(_x3 - 1), False, "exp_p", (), "use it in its place",
        lambda q: q * cp.sum_squares(_x3 - 1)),
    "square(p) times a norm": (
        cp.square(_pn) * cp.norm(_x3 - 1), False, "square_pn", (), "use it in its place",
        lambda q: q * cp.norm(_x3 - 1)),
    "two parameters times a convex term": (
        _pp * _qq * cp.sum_squares(_x3 - 1), False, "pp_qq", (), "in place of this product",
        lambda q: q * cp.sum_squares(_x3 - 1)),
    "a convex term times two parameters": (
        cp.norm(_x3) * _pp * _qq, False, "pp_qq", (), "write `norm(x, 2) * pp_qq`",
        lambda q: cp.norm(_x3) * q),
    "nested element-wise products": (
        cp.sum_squares(cp.multiply(_a, _p * _x3)), False, "a_p", (3,),
        "write `cp.multiply(a_p, x)`", lambda q: cp.sum_squares(cp.multiply(q, _x3))),
    "nested element-wise matrix products": (
        cp.sum_squares(cp.multiply(_A, cp.multiply(_B, _X)) - 1), False, "A_B", (3, 3),
        "write `cp.multiply(A_B, X)`", lambda q: cp.sum_squares(cp.multiply(q, _X) - 1)),
    # (Found by a probe: "declare its parameters nonneg", which cannot give log(pn) a sign.)
    "log(pn) times a convex term": (
        cp.log(_pn) * cp.sum_squares(_x3 - 1), False, "log_pn", (), "use it in its place",
        lambda q: q * cp.sum_squares(_x3 - 1)),
    "a parametric power in a GP": (
        cp.Problem(cp.Minimize(_y + _z), [cp.power(_pp, _qq) * _y * _z >= 1]), True,
        "pow_pp_qq", (), "`pp ** qq`", lambda q: cp.Problem(cp.Minimize(_y + _z),
                                                         [q * _y * _z >= 1])),
}


@pytest.mark.parametrize("name", FIXES)
def test_fix_applied_as_written_gives_a_compliant_problem_of_the_same_model(name):
    original, gp, new, shape, words, apply = FIXES[name]
    problem = original if isinstance(original, cp.Problem) else cp.Problem(cp.Minimize(original))
    (f,) = check_dpp(problem, gp=gp).findings
    assert words in f.fix, f.fix
    fixed = apply(_applied(f.fix, new, shape))
    fixed = fixed if isinstance(fixed, cp.Problem) else cp.Problem(cp.Minimize(fixed))
    assert fixed.is_dgp(dpp=True) if gp else fixed.is_dpp(), f.fix
    # The same model: at values that make the new parameter the replaced piece, the same
    # objective at a point (the element-wise rewrite kept element-wise).
    if not gp:
        rng = np.random.default_rng(0)
        for leaf in (*problem.parameters(), *problem.variables()):
            leaf.value = rng.uniform(0.5, 1.5, leaf.shape)
        (q,) = [p for p in fixed.parameters() if p.name() == new]
        pieces = {"inv_pp": lambda: 1 / _pp.value, "exp_p": lambda: np.exp(_p.value),
                  "square_pn": lambda: _pn.value ** 2, "pp_qq": lambda: _pp.value * _qq.value,
                  "a_p": lambda: _a.value * _p.value, "A_B": lambda: _A.value * _B.value,
                  "log_pn": lambda: np.log(_pn.value)}
        q.value = pieces[new]()
        np.testing.assert_allclose(fixed.objective.value, problem.objective.value, rtol=1e-12)


def test_dpp_fix_of_a_part_that_is_not_dcp_regression_says_so():
    """-exp(p) * norm(x) minimized: "introduce exp_p" removes the DPP problem,
    and the part, concave, is still not DCP; the fix said nothing of it (found
    by a probe). A part that is DCP with its parameters fixed gets no such note."""
    p, x = cp.Parameter(name="p"), cp.Variable(3, name="x")
    (f,) = check_dpp(cp.Problem(cp.Minimize(-cp.exp(p) * cp.norm(x) + cp.sum(x)),
                                [x >= -1])).findings
    assert not f.fixed_parameters_ok
    assert f.fix.endswith("That alone does not make this part DCP: with its parameters fixed "
                          "it is not DCP either (check the signs and curvature of its terms)."
                          ), f.fix
    (g,) = check_dpp(cp.Problem(cp.Minimize(cp.exp(p) * cp.norm(x) + cp.sum(x)),
                                [x >= -1])).findings
    assert g.fixed_parameters_ok and "That alone" not in g.fix


def test_fix_values_regression_are_python_with_the_groupings_of_the_problem():
    """The value a fix says to compute, evaluated as written (NumPy's reshape for
    CVXPY's): `p + q * p` for (p + q) * (p * sum(x)) (the left factor's
    parentheses dropped), `1 / p - q` for x / (p - q) (a scalar divisor is a
    broadcast `Promote`, whose sum went unparenthesized, in the finding's
    expression too), and `reshape(A, (9,), F)`, which is not Python (found by a
    probe)."""
    p, q = cp.Parameter(name="p"), cp.Parameter(name="q")
    A, x = cp.Parameter((3, 3), name="A"), cp.Variable(3, name="x")
    values = {"p": 2.0, "q": 3.0, "A": np.arange(9.0).reshape(3, 3)}
    cases = [
        (cp.sum_squares(x) + (p + q) * (p * cp.sum(x)), (2.0 + 3.0) * 2.0),
        (cp.sum_squares(x) + (p - q) * (q * cp.sum(x)), (2.0 - 3.0) * 3.0),
        (cp.sum_squares(x / (p - q) - 1), 1 / (2.0 - 3.0)),
        (cp.sum_squares(x / (p + 1) - 1), 1 / (2.0 + 1.0)),
        (cp.sum_squares(cp.reshape(A, (9,), order="F")[:3] * p - x),
         values["A"].flatten(order="F")[:3] * 2.0),
    ]
    for objective, expected in cases:
        (f,) = check_dpp(cp.Problem(cp.Minimize(objective))).findings
        text = re.search(r"whose value you set to `([^`]*)`", f.fix).group(1)
        got = eval(text, {"reshape": np.reshape, **values})
        np.testing.assert_allclose(got, expected, err_msg=f.fix)
        assert "Promote" not in f.expression and ", F)" not in f.expression, f.expression
    (division,) = check_dpp(cp.Problem(cp.Minimize(cp.sum_squares(x / (p - q) - 1)))).findings
    assert division.expression == "x / (p - q)", division.expression


def test_gp_subtraction_of_parameters_regression_gets_a_parameter_fix():
    """(a - b) / y in a GP: the subtraction is of parameters only, and the fix
    told the user to move terms across an inequality (found by a probe). A
    positive parameter for the difference, applied, gives a DGP problem."""
    y = cp.Variable(pos=True, name="y")
    a, b = cp.Parameter(pos=True, name="a"), cp.Parameter(pos=True, name="b")
    (f,) = check_dpp(cp.Problem(cp.Minimize(y + (a - b) / y)), gp=True).findings
    assert "a difference of parameters is a number" in f.fix and "pos=True" in f.fix, f.fix
    a_b = cp.Parameter(pos=True, name="a_b")
    assert cp.Problem(cp.Minimize(y + a_b / y)).is_dgp(dpp=True)


def test_gp_fix_examples_regression_are_geometric_programs():
    """The GP fixes' examples, applied: the subtraction fix offered `x <= 1 + y`
    for `x - y <= 1` (a posynomial on the larger side, still not DGP) and the
    constraint fix "divide through" where no GP form exists (found by a probe,
    2026-12-04). Each rewrite a fix now offers is DGP; those it says have no GP
    form are not."""
    x, y, z = (cp.Variable(pos=True, name=n) for n in "xyz")
    a = cp.Parameter(pos=True, name="a")
    dgp = lambda *cons: cp.Problem(cp.Minimize(x * y * z), list(cons)).is_dgp(dpp=True)  # noqa: E731
    (sub,) = check_dpp(cp.Problem(cp.Minimize(x * y), [a - y >= x]), gp=True).findings
    assert "`a - y >= x` becomes `x + y <= a`" in sub.fix and "no GP form" in sub.fix
    assert dgp(x + y <= a) and not dgp(x <= 1 + y) and dgp(x <= cp.one_minus_pos(y))
    (kind,) = check_dpp(cp.Problem(cp.Minimize(x * y * z), [x + y <= z + a]), gp=True).findings
    assert "`x + y <= z` is `x / z + y / z <= 1`" in kind.fix, kind.fix
    assert dgp(x / z + y / z <= 1) and not dgp(1 <= x + y) and not dgp(x / (y + a) <= 1)


def test_top_level_failure_says_so():
    (f,) = check_dpp(BAD["convex_greater_or_equal"].build()).findings
    assert f.top_level
    assert "left side is affine and the right side is convex" in f.detail
    report = str(check_dpp(BAD["convex_greater_or_equal"].build()))
    assert "(only the part as a whole fails)" in report


def test_bounds_only_parameter_dependence_is_explained():
    (f,) = check_dpp(BAD["parameter_times_variable_with_parametric_bounds"].build()).findings
    assert "only through the `bounds` of a variable" in f.detail
    assert "(`w >= b`)" in f.fix


def test_dgp_hint_when_gp_was_meant():
    report = check_dpp(cp.Problem(cp.Minimize(xp * yp + 1 / (xp * yp))))
    assert not report.ok
    assert "pass `gp=True`" in report.note
    assert check_dpp(cp.Problem(cp.Minimize(xp * yp + 1 / (xp * yp))), gp=True).ok


def test_offending_subexpression_is_minimal():
    # Only the inner product breaks the rules; the atoms around it are fine.
    problem = cp.Problem(cp.Minimize(cp.norm(cp.exp(a * b * x) + A @ x)))
    (f,) = check_dpp(problem).findings
    assert f.expression == "a * b"


def test_repeated_subexpression_is_reported_once_per_part():
    ab = a * b
    problem = cp.Problem(cp.Minimize(ab * y + ab * z), [y >= 0, z >= 0])
    assert [f.expression for f in check_dpp(problem).findings] == ["a * b"]


def test_long_expressions_are_cut():
    terms = [cp.Variable(name=f"a_rather_long_variable_name_{i}") for i in range(20)]
    problem = cp.Problem(cp.Minimize(a * (b * cp.sum(cp.hstack(terms)))))
    (f,) = check_dpp(problem).findings
    assert f.rule is Rule.parameter_product
    assert len(f.expression) == 240 and f.expression.endswith(" ...")
    assert len(f.part) == 240


def test_many_findings_are_counted_not_all_written():
    v = cp.Variable(25, name="v")
    q = cp.Parameter(25, name="q")
    problem = cp.Problem(cp.Minimize(sum(q[i] * b * v[i] for i in range(25))))
    report = check_dpp(problem)
    assert len(report.findings) == 25
    text = str(report)
    assert text.count("\n    - ") == 20
    assert "  ... and 5 more findings (all are in `check_dpp(problem).findings`)." in text


# -- the report object ----------------------------------------------------------------


def test_report_is_frozen_and_json_serialisable():
    report = check_dpp(BAD["findings_in_objective_and_constraint"].build())
    with pytest.raises(FrozenInstanceError):
        report.gp = True  # type: ignore[misc]
    with pytest.raises(FrozenInstanceError):
        report.findings[0].rule = Rule.curvature  # type: ignore[misc]
    data = json.loads(json.dumps(report.to_dict()))
    assert data["ok"] is False and data["discipline"] == "DCP+DPP"
    first = data["findings"][0]
    assert first["location"] == "objective" and first["index"] is None
    assert first["rule"] == "parameter_product"
    assert first["title"] == Rule.parameter_product.title
    assert first["explanation"] == Rule.parameter_product.explanation
    assert first["expression"] == "a * b"
    assert first["parameters"] == ["a", "b"]
    assert data["findings"][1]["index"] == 1


def test_report_text_lists_each_part_with_rule_and_fix():
    text = str(check_dpp(BAD["findings_in_objective_and_constraint"].build()))
    lines = text.split("\n")
    assert lines[0] == "Problem must be DPP."
    assert lines[1].startswith("  objective: minimize a * b * y")
    assert lines[2] == "    - a * b"
    assert lines[3] == "      rule: parameter × parameter product [parameter_product]"
    assert lines[4].startswith("      why: `a` and `b` both depend on parameters")
    assert lines[5].startswith("      fix: Introduce one parameter `a_b`")
    assert lines[6].startswith("  constraint 1: y <= exp(a)")
    assert lines[-1].startswith("A layer needs a problem that is DCP and DPP")
    assert "https://www.cvxpy.org/tutorial/dpp/index.html" in lines[-1]


def test_every_rule_carries_a_title_and_an_explanation():
    for rule in Rule:
        assert rule.title and rule.explanation.endswith(".")
        assert repr(rule) == f"Rule.{rule.name}"


def test_empty_report_is_ok():
    report = DPPReport()
    assert report.ok and report.to_dict()["findings"] == []
    assert isinstance(Finding("objective", None, "", "", Rule.curvature, "", "").to_dict(), dict)


@pytest.mark.parametrize(("problem", "gp", "message"), [
    ("min x", False, r"`problem` must be a cvxpy.Problem; got str"),
    (cp.Problem(cp.Minimize(y)), "yes", r"`gp` must be True or False; got 'yes'"),
])
def test_check_dpp_validates_its_arguments(problem, gp, message):
    from conelayers import ParameterError

    with pytest.raises(ParameterError, match=message):
        check_dpp(problem, gp=gp)


# -- layers raise the report ------------------------------------------------------------


def test_error_message_is_the_report():
    problem = BAD["parameter_product_in_constraint"].build()
    message = dpp_error_message(problem)
    assert message == str(check_dpp(problem))
    assert message.startswith("Problem must be DPP.\n  constraint 1: ")


def _numpy_layer(problem, params, variables, gp):
    return CvxpyLayer(problem, params, variables, gp=gp)


def _torch_layer(problem, params, variables, gp):
    torch_front = pytest.importorskip("conelayers.torch")
    return torch_front.CvxpyLayer(problem, params, variables, gp=gp)


def _tensorflow_layer(problem, params, variables, gp):
    tf_front = pytest.importorskip("conelayers.tensorflow")
    return tf_front.CvxpyLayer(problem, params, variables, gp=gp)


@pytest.mark.parametrize("make_layer", [_numpy_layer, _torch_layer, _tensorflow_layer],
                         ids=["numpy", "torch", "tensorflow"])
@pytest.mark.parametrize("name", ["parameter_product_in_constraint", "dgp_subtraction"])
def test_layer_construction_raises_the_report(make_layer, name):
    case = BAD[name]
    problem = case.build()
    with pytest.raises(DPPError) as info:
        make_layer(problem, problem.parameters(), problem.variables(), case.gp)
    assert isinstance(info.value, ValueError)
    assert str(info.value) == str(check_dpp(problem, gp=case.gp))
    assert str(info.value).startswith("Problem must be DPP.")
