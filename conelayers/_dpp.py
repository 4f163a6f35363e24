"""Why a problem is not DPP, in words: :func:`check_dpp` and its report.

CVXPY answers ``problem.is_dpp()`` with yes or no. A layer needs the
problem data to be an affine function of the parameters (DPP), and users
need to know *which* piece breaks that and *how* to rewrite it. This module
walks the expression trees the way CVXPY's own
``cvxpy/utilities/debug_tools.py`` does for DCP, but under CVXPY's
``dpp_scope`` (where a parameter counts as an affine expression, not as a
constant) and it names the rule each piece breaks.

The analysis, part by part (objective, each constraint, each variable with
expression bounds):

1. CVXPY decides. A part is flagged only when CVXPY's own check fails
   (``is_dcp(dpp=True)``, or ``is_dgp(dpp=True)`` for a geometric program),
   and the problem is compliant exactly when ``problem.is_dpp()`` says so.
   The checker explains; it never disagrees.
2. In a flagged part, the offending sub-expressions are the *minimal* ones:
   not DCP (DGP) under DPP while every argument is. Only arguments that are
   themselves not compliant are searched, so a sub-expression that does not
   cause the failure is never blamed.
3. Each offending sub-expression is classified from its atom and arguments
   into a :class:`Rule`, and gets a concrete rewrite.
4. When no sub-expression is at fault, only the top level fails (a
   constraint of the wrong kind, an objective of the wrong curvature, or a
   nonlinear function of parameters that DPP counts as convex or concave):
   the finding says so (``Finding.top_level``).

This is the only module besides ``_canonicalize.py`` that reads CVXPY's
curvature machinery (``dpp_scope``, atoms' ``is_atom_convex``, ``is_incr``,
``is_decr``); an upstream change in those breaks these two files only.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Sequence
from typing import Any

import cvxpy as cp
import numpy as np
from cvxpy.atoms.affine.add_expr import AddExpression
from cvxpy.atoms.affine.affine_atom import AffAtom
from cvxpy.atoms.affine.binary_operators import (
    BinaryOperator,
    DivExpression,
    MulExpression,
    multiply,
)
from cvxpy.atoms.affine.conv import conv, convolve
from cvxpy.atoms.affine.index import index as Index
from cvxpy.atoms.affine.kron import kron
from cvxpy.atoms.affine.promote import Promote
from cvxpy.atoms.affine.reshape import reshape
from cvxpy.atoms.affine.sum import Sum
from cvxpy.atoms.affine.unary_operators import NegExpression
from cvxpy.atoms.atom import Atom
from cvxpy.atoms.elementwise.power import Power
from cvxpy.atoms.gmatmul import gmatmul
from cvxpy.atoms.pnorm import Pnorm
from cvxpy.atoms.quad_form import QuadForm
from cvxpy.atoms.quad_over_lin import quad_over_lin
from cvxpy.constraints.nonpos import Inequality, NonNeg, NonPos
from cvxpy.constraints.second_order import SOC
from cvxpy.constraints.zero import Equality, Zero
from cvxpy.expressions.expression import Expression
from cvxpy.expressions.leaf import Leaf
from cvxpy.utilities.scopes import dpp_scope

from ._errors import ParameterError

__all__ = [
    "DPPReport",
    "Finding",
    "Rule",
    "check_dpp",
    "dpp_error_message",
    "is_compliant",
]

_DPP_DOCS = "https://www.cvxpy.org/tutorial/dpp/index.html"
_DGP_DOCS = "https://www.cvxpy.org/tutorial/dgp/index.html"
# Expression texts longer than this are cut (CVXPY prints constants in full).
_MAX_TEXT = 240
# Findings written out by str(report); the rest are counted.
_MAX_SHOWN = 20


class Rule(enum.Enum):
    """The catalogue of rules a finding can break.

    Each member's value is ``(title, explanation)``: a short name for the
    rule and the general reason it exists. A :class:`Finding` adds what is
    wrong in the user's own expression and how to rewrite it.

    Rules about parameters (DPP proper; the part would be DCP, or DGP, if
    the parameters were constants):

    - ``parameter_product``: a product of two parameter-dependent factors.
    - ``nonlinear_parameter``: a nonlinear function of parameters (``exp(a)``,
      ``a**2``, ``1/a``) used where DPP needs parameters to enter affinely.
    - ``parameter_divisor``: division by a parameter-dependent expression.
    - ``parametric_quad_form``: a parameter as the matrix of ``quad_form``.
    - ``parametric_exponent``: a parameter as the exponent of ``power``
      (DCP), or parametric base and exponent together (DGP).
    - ``parameter_in_fixed_position``: a parameter in an argument that must be
      parameter-free (``conv``, ``kron``, ``perspective``, ...).
    - ``parameter_attribute``: a parameter declared without an attribute the
      rules need (``pos=True`` in a geometric program).

    Rules that hold with or without parameters:

    - ``curvature``: an expression with no DCP curvature (product of two
      variable expressions, sum of a convex and a concave term, ...).
    - ``composition``: a convex or concave atom applied to an argument of the
      wrong curvature, given its monotonicity or the sign of a factor.
    - ``objective_curvature``: minimizing a non-convex (maximizing a
      non-concave) expression.
    - ``constraint_kind``: a constraint whose sides are fine but whose form
      is not allowed (``convex >= ...``, ``square(x) == 1``).
    - ``nonpositive_leaf``: under ``gp=True``, a variable not declared
      ``pos=True`` or a constant that is not positive.
    - ``dgp_atom``: under ``gp=True``, an atom with no log-log curvature
      (subtraction, negation).
    - ``dgp_composition``: under ``gp=True``, a log-log composition rule is
      broken (a log-log concave term added to a posynomial, ...).
    - ``unclassified``: CVXPY rejects the problem for a reason this
      catalogue does not cover (please report it).
    """

    parameter_product = (
        "parameter × parameter product",
        "A product (`*`, `@`, `cp.multiply`) is DPP only when one factor is "
        "parameter-affine and the other is parameter-free. When both factors depend "
        "on parameters the product is quadratic in them, and the problem data would "
        "no longer be an affine function of the parameters.",
    )
    nonlinear_parameter = (
        "nonlinear function of parameters",
        "Under DPP a parameter behaves like an affine expression, so a nonlinear "
        "function of parameters (`exp(a)`, `a**2`, `1/a`, `abs(a)`) has a curvature "
        "instead of being a constant: it cannot multiply a variable, and it may sit "
        "only where an expression of that curvature could.",
    )
    parameter_divisor = (
        "division by a parameter",
        "Dividing by a parameter-dependent expression (`x / a`, "
        "`quad_over_lin(x, a)`) is not parameter-affine.",
    )
    parametric_quad_form = (
        "parametric matrix in `quad_form`",
        "`quad_form(x, P)` needs a parameter-free constant `P` (CVXPY checks that it "
        "is positive semidefinite from its value); a parameter `P` is not allowed, "
        "even one declared PSD.",
    )
    parametric_exponent = (
        "parameter in an exponent or `power`",
        "The curvature of `power(x, p)` depends on the value of `p`, so a DCP "
        "program needs a numeric exponent. A geometric program (gp=True) accepts a "
        "parameter exponent, but then the base must be parameter-free.",
    )
    parameter_in_fixed_position = (
        "parameter where a parameter-free constant is required",
        "Some atoms (`conv`, `convolve`, `kron`, `perspective`, ...) are DPP only "
        "when this argument holds no parameter at all.",
    )
    parameter_attribute = (
        "parameter attribute",
        "A parameter of a geometric program enters through its logarithm, so it must "
        "be declared `pos=True` (only an exponent may have any sign).",
    )
    curvature = (
        "curvature (DCP) violation",
        "The expression has no DCP curvature, even with the parameters held fixed: "
        "for example a product of two variable expressions, a division by a "
        "variable, or a sum of a convex and a concave term.",
    )
    composition = (
        "sign/monotonicity violation in a composition",
        "DCP accepts f(g) for convex f only when g is affine, or convex with f "
        "nondecreasing, or concave with f nonincreasing (mirrored for concave f). "
        "Monotonicity can depend on the sign of another argument: `a * sqrt(x)` "
        "needs `a` declared nonneg.",
    )
    objective_curvature = (
        "objective of the wrong curvature",
        "Minimize needs a convex objective and Maximize a concave one (log-log "
        "convex and log-log concave in a geometric program).",
    )
    constraint_kind = (
        "constraint of the wrong kind",
        "Each side may be fine, but DCP accepts only `convex <= concave`, "
        "`affine == affine` and cone constraints of affine expressions; DGP accepts "
        "`log-log convex <= log-log concave` and `monomial == monomial`.",
    )
    nonpositive_leaf = (
        "DGP needs positive leaves",
        "A geometric program is solved in the logarithms of its variables: every "
        "variable must be declared `pos=True` and every constant must be positive.",
    )
    dgp_atom = (
        "atom with no log-log curvature (DGP)",
        "DGP builds expressions from monomials and posynomials with `*`, `/`, `+`, "
        "powers and DGP atoms; subtraction and negation have no log-log curvature.",
    )
    dgp_composition = (
        "log-log composition violation (DGP)",
        "DGP accepts f(g) for log-log convex f only when g is log-log affine, or "
        "log-log convex with f nondecreasing, or log-log concave with f "
        "nonincreasing (mirrored for log-log concave f).",
    )
    unclassified = (
        "not classified",
        "CVXPY rejects this part for a reason the checker's catalogue does not "
        "cover; please report the problem to conelayers.",
    )

    @property
    def title(self) -> str:
        """A short name for the rule."""
        return self.value[0]

    @property
    def explanation(self) -> str:
        """Why the rule exists, in general terms."""
        return self.value[1]

    def __repr__(self) -> str:
        return f"Rule.{self.name}"


# The rules about parameters alone (the part would be DCP, or DGP, with them fixed):
# their fixes rewrite the parameters, which cannot repair anything else.
_DPP_ONLY = frozenset({Rule.parameter_product, Rule.nonlinear_parameter, Rule.parameter_divisor,
                       Rule.parametric_quad_form, Rule.parametric_exponent,
                       Rule.parameter_in_fixed_position, Rule.parameter_attribute})


@dataclasses.dataclass(frozen=True)
class Finding:
    """One offending piece of a problem, the rule it breaks and a rewrite.

    Attributes
    ----------
    location : str
        Where it sits: ``"objective"``, ``"constraint 3"`` or ``"variable w"``
        (a variable whose ``bounds`` are expressions).
    index : int or None
        The constraint's index in ``problem.constraints``, else None.
    part : str
        The text of the objective, constraint or variable bounds.
    expression : str
        The smallest offending sub-expression: not compliant while all its
        arguments are. For a top-level finding, the piece to rewrite (the
        whole constraint or objective, or a nonlinear function of parameters).
    rule : Rule
        The rule it breaks.
    detail : str
        What is wrong in this expression.
    fix : str
        A concrete rewrite.
    parameters : tuple of str
        Names of the parameters in ``expression``.
    top_level : bool
        True when every sub-expression is compliant and only the part as a
        whole fails.
    fixed_parameters_ok : bool
        True when the part would be DCP (DGP) if the parameters were
        constants, so that only the DPP rules are broken: CVXPY's
        ``is_dcp()`` (``is_dgp()``) without ``dpp``. For DGP, CVXPY counts
        a parameter expression such as ``exp(a)`` as a positive constant
        only when its parameters have values.
    """

    location: str
    index: int | None
    part: str
    expression: str
    rule: Rule
    detail: str
    fix: str
    parameters: tuple[str, ...] = ()
    top_level: bool = False
    fixed_parameters_ok: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The finding as JSON-serialisable data (the rule by name)."""
        return {
            "location": self.location,
            "index": self.index,
            "part": self.part,
            "expression": self.expression,
            "rule": self.rule.name,
            "title": self.rule.title,
            "explanation": self.rule.explanation,
            "detail": self.detail,
            "fix": self.fix,
            "parameters": list(self.parameters),
            "top_level": self.top_level,
            "fixed_parameters_ok": self.fixed_parameters_ok,
        }


@dataclasses.dataclass(frozen=True)
class DPPReport:
    """What :func:`check_dpp` found: empty when the problem is compliant.

    ``str(report)`` is the text of :class:`~conelayers.DPPError`: for a
    non-compliant problem it starts with ``"Problem must be DPP."``
    (cvxpylayers' wording), then one block per flagged part.

    Attributes
    ----------
    findings : tuple of Finding
        In problem order: objective, constraints, variable bounds.
    gp : bool
        Whether the problem was checked as a geometric program (DGP+DPP).
    note : str
        A hint beyond the findings (for example that the problem is DGP+DPP
        and ``gp=True`` was probably meant); may be empty.
    """

    findings: tuple[Finding, ...] = ()
    gp: bool = False
    note: str = ""

    @property
    def ok(self) -> bool:
        """Whether the problem is compliant (CVXPY's verdict: no findings)."""
        return not self.findings

    @property
    def discipline(self) -> str:
        """The rule set checked: ``"DCP+DPP"`` or ``"DGP+DPP"``."""
        return "DGP+DPP" if self.gp else "DCP+DPP"

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-serialisable data."""
        return {
            "ok": self.ok,
            "gp": self.gp,
            "discipline": self.discipline,
            "findings": [f.to_dict() for f in self.findings],
            "note": self.note,
        }

    def __str__(self) -> str:
        if self.ok:
            return f"Problem is DPP ({self.discipline}): no findings."
        fixed = "DGP" if self.gp else "DCP"
        lines = ["Problem must be DPP."]
        current = None
        for f in self.findings[:_MAX_SHOWN]:
            if f.location != current:
                current = f.location
                tail = (
                    f"   [{fixed} if the parameters were constants: only the DPP rules "
                    "are broken]" if f.fixed_parameters_ok else ""
                )
                lines.append(f"  {f.location}: {f.part}{tail}")
            where = "   (only the part as a whole fails)" if f.top_level else ""
            lines.append(f"    - {f.expression}{where}")
            lines.append(f"      rule: {f.rule.title} [{f.rule.name}]")
            lines.append(f"      why: {f.detail[:1].upper()}{f.detail[1:]}")
            lines.append(f"      fix: {f.fix[:1].upper()}{f.fix[1:]}")
        if len(self.findings) > _MAX_SHOWN:
            lines.append(f"  ... and {len(self.findings) - _MAX_SHOWN} more findings "
                         "(all are in `check_dpp(problem).findings`).")
        kind = "DGP (log-log convex) and DPP" if self.gp else "DCP and DPP"
        lines.append(
            f"A layer needs a problem that is {kind}: the problem data must be an affine "
            f"function of the parameters. See {_DGP_DOCS if self.gp else _DPP_DOCS}."
        )
        if self.note:
            lines.append(self.note)
        return "\n".join(lines)


# ---------------------------------------------------------------------------
# public functions


def is_compliant(problem: cp.Problem, *, gp: bool = False) -> bool:
    """CVXPY's own verdict: ``problem.is_dpp("dgp" if gp else "dcp")``.

    This includes expression bounds of variables, which
    ``problem.is_dcp(dpp=True)`` alone does not check.
    """
    return bool(problem.is_dpp("dgp" if gp else "dcp"))


def dpp_error_message(problem: cp.Problem, *, gp: bool = False) -> str:
    """The text of the DPPError for a non-compliant ``problem``.

    Starts with cvxpylayers' wording (``"Problem must be DPP."``), so that
    code matching on it keeps working, followed by the rendered report.
    """
    return str(check_dpp(problem, gp=gp))


def check_dpp(problem: cp.Problem, *, gp: bool = False) -> DPPReport:
    """Explain whether, and why not, ``problem`` follows the DPP rules.

    A layer can be built from ``problem`` exactly when CVXPY's
    ``problem.is_dpp()`` holds (``is_dpp("dgp")`` with ``gp=True``). This
    function agrees with that verdict and says, for each failing objective,
    constraint or variable bound, which sub-expression breaks which
    :class:`Rule`, and how to rewrite it.

    Parameters
    ----------
    problem : cvxpy.Problem
        The problem to check.
    gp : bool, default False
        Check it as a geometric program (DGP+DPP) instead of DCP+DPP.

    Returns
    -------
    DPPReport
        ``report.ok`` is CVXPY's verdict; ``report.findings`` is empty
        exactly when it is True.

    Raises
    ------
    ParameterError
        ``problem`` is not a ``cvxpy.Problem`` or ``gp`` is not a bool.

    Examples
    --------
    >>> import cvxpy as cp
    >>> from conelayers import check_dpp
    >>> x = cp.Variable(name="x")
    >>> a, b = cp.Parameter(name="a"), cp.Parameter(name="b")
    >>> report = check_dpp(cp.Problem(cp.Minimize(a * b * x), [x >= 0]))
    >>> report.ok
    False
    >>> finding = report.findings[0]
    >>> finding.location, finding.expression, finding.rule
    ('objective', 'a * b', Rule.parameter_product)
    >>> print(finding.fix)  # doctest: +NORMALIZE_WHITESPACE
    introduce one parameter `a_b` whose value you set to `a * b` (computed
    outside the problem) and use `a_b` in place of this product.
    """
    if not isinstance(problem, cp.Problem):
        raise ParameterError(
            f"`problem` must be a cvxpy.Problem; got {type(problem).__name__}."
        )
    if not isinstance(gp, bool):
        raise ParameterError(f"`gp` must be True or False; got {gp!r}.")
    analysis = _Analysis(gp)
    findings: list[Finding] = []
    parts: list[tuple[str, int | None, Any]] = [("objective", None, problem.objective)]
    parts += [(f"constraint {i}", i, con) for i, con in enumerate(problem.constraints)]
    for location, index, part in parts:
        if not (part.is_dgp(dpp=True) if gp else part.is_dcp(dpp=True)):
            findings += analysis.explain_part(location, index, part)
    for var in problem.variables():
        bounds = var.attributes.get("bounds")
        if bounds is not None and any(isinstance(b, Expression) for b in bounds):
            findings += analysis.explain_bounds(var, bounds)
    compliant = is_compliant(problem, gp=gp)
    if not compliant and not findings:
        findings.append(Finding(
            "problem", None, _text(problem.objective), _text(problem.objective),
            Rule.unclassified,
            f"CVXPY's problem.is_dpp({'dgp' if gp else 'dcp'!r}) is False although each "
            "objective, constraint and variable passes on its own.",
            "please report this problem to conelayers with the code that builds it.",
        ))
    # The contract: the report never contradicts CVXPY.
    assert compliant == (not findings), (
        "conelayers' DPP checker disagrees with CVXPY; please report this bug"
    )
    return DPPReport(tuple(findings), gp, _note(problem, gp) if findings else "")


def _note(problem: cp.Problem, gp: bool) -> str:
    """A hint when the other rule set accepts the problem."""
    if not gp and problem.is_dgp(dpp=True):
        return ("Note: the problem is DGP and DPP; pass `gp=True` (on the command line, "
                "`--gp`) to solve it as a geometric program.")
    if gp and problem.is_dcp(dpp=True):
        return ("Note: the problem is DCP and DPP; pass `gp=False` (the default; on the "
                "command line, leave out `--gp`).")
    return ""


# ---------------------------------------------------------------------------
# text helpers


def _text(obj: Any) -> str:
    """The text of an expression as a user writes it (:func:`_render`), on one
    line and cut to a readable length."""
    text = " ".join(_render(obj).split())
    return text if len(text) <= _MAX_TEXT else text[: _MAX_TEXT - 4] + " ..."


# Powers that CVXPY's own functions build: cp.sqrt(x) is Power(x, 0.5), ...
_POWER_FUNCTIONS = {0.5: "sqrt", 2.0: "square", -1.0: "inv_pos"}


def _render(obj: Any) -> str:
    """CVXPY's text of an expression, but with the functions a user writes
    where CVXPY prints its internal forms: ``sqrt(p)``, not
    ``PowerApprox(p, 0.5)``; ``sum(x)``, not ``Sum(x, None, False)``;
    ``sum_squares(x - q)``, not ``quad_over_lin(x + -q, 1.0, None, False)``;
    ``p``, not the ``Promote(p, (3,))`` of its broadcast; ``a * (b * x)``, not
    ``a * b * x``. Atoms that print themselves (indexing, transposes,
    reshapes, ...) keep CVXPY's text."""
    if isinstance(obj, cp.Minimize | cp.Maximize):
        return f"{'minimize' if isinstance(obj, cp.Minimize) else 'maximize'} {_render(obj.expr)}"
    if isinstance(obj, Inequality | Equality):
        lhs, rhs = obj.args
        return f"{_render(lhs)} {'<=' if isinstance(obj, Inequality) else '=='} {_render(rhs)}"
    if isinstance(obj, SOC):
        return f"SOC({', '.join(_render(a) for a in obj.args)})"
    if isinstance(obj, Power):
        base = _render(obj.args[0])
        if obj.p.parameters():  # CVXPY prints a parametric power as `PowerApprox(x, None)`
            return f"power({base}, {obj.p})"
        name = _atom_name(obj)
        return f"power({base}, {_exponent(obj):g})" if name == "power" else f"{name}({base})"
    if isinstance(obj, BinaryOperator):
        # CVXPY prints a * (b * x) as `a * b * x`; keep the grouping visible.
        left, right = obj.args
        return f"{_operand(left, False)} {obj.OP_NAME} {_operand(right, True)}"
    if isinstance(obj, AddExpression):
        terms = [_render(obj.args[0])]
        for term in obj.args[1:]:
            terms.append(f"- {_operand(term.args[0], False)}" if isinstance(term, NegExpression)
                         else f"+ {_render(term)}")
        return " ".join(terms)
    if isinstance(obj, NegExpression):
        return f"-{_operand(obj.args[0], True)}"
    if isinstance(obj, Promote):
        return _render(obj.args[0])
    if isinstance(obj, reshape):  # (CVXPY prints `reshape(A, (9,), F)`, not Python)
        shape, order = obj.get_data()
        return f"reshape({_render(obj.args[0])}, {tuple(shape)}, order={order!r})"
    if isinstance(obj, Index):  # our text of what is indexed, then CVXPY's of the key
        return _operand(obj.args[0], True) + obj.name()[len(obj.args[0].name()):]
    # Atoms printed with their arguments but not CVXPY's data (axis None, keepdims):
    # `sum(x)`, `norm(x, 2)`, `sum_squares(x)`, `quad_over_lin(x, y)`, `quad_form(x, P)`.
    axis = getattr(obj, "axis", None)
    tail = "" if axis is None else f", axis={axis}"
    if isinstance(obj, Sum | Pnorm | quad_over_lin | QuadForm):
        args = obj.args[:1] if isinstance(obj, Sum) or _divides_by_one(obj) else obj.args
        extra = [f"{float(obj.p):g}"] if isinstance(obj, Pnorm) else []
        return f"{_atom_name(obj)}({', '.join([_render(a) for a in args] + extra)}{tail})"
    if isinstance(obj, Atom) and type(obj).name is Atom.name:
        data = [str(d) for d in (obj.get_data() or [])]
        return f"{_atom_name(obj)}({', '.join([_render(a) for a in obj.args] + data)})"
    return str(obj)


def _exponent(power: Power) -> float:
    """The exponent of a power whose exponent is a number."""
    return float(np.asarray(power.p.value))


def _divides_by_one(obj: Any) -> bool:
    """Whether ``obj`` is ``quad_over_lin(x, 1)``, i.e. ``sum_squares(x)``."""
    if not isinstance(obj, quad_over_lin):
        return False
    y = obj.args[1]
    return bool(y.is_constant() and not y.parameters() and np.all(y.value == 1))


def _operand(expr: Expression, right: bool) -> str:
    """``expr``'s text as an operand of a binary operator (on its ``right``
    or left), parenthesized where the operator would bind it otherwise."""
    while isinstance(expr, Promote):  # (a broadcast scalar: `x / (p - q)` is x / Promote(p - q))
        expr = expr.args[0]
    text = _text(expr)
    if isinstance(expr, AddExpression | DivExpression) or (
        right and isinstance(expr, BinaryOperator)
    ):
        return f"({text})"
    return text


def _names(expr: Any) -> tuple[str, ...]:
    """Names of the parameters of ``expr``, in order of appearance, once each."""
    seen: dict[int, str] = {}
    for p in expr.parameters():
        seen.setdefault(p.id, p.name())
    return tuple(seen.values())


def _ticks(names: Sequence[str]) -> str:
    return ", ".join(f"`{n}`" for n in names)


def _depends(expr: Any) -> str:
    """`expr`, followed by the parameters it depends on unless it is one."""
    while isinstance(expr, Promote):  # a broadcast parameter is the parameter
        expr = expr.args[0]
    if isinstance(expr, cp.Parameter):
        return f"`{expr.name()}`"
    return f"`{_text(expr)}` (through {_ticks(_names(expr))})"


def _new_name(names: Sequence[str], prefix: str = "") -> str:
    return prefix + "_".join(names) if names else prefix + "new"


# CVXPY class names of atoms whose function name differs (cp.power builds a PowerApprox).
_FUNCTION_NAMES = {
    "Power": "power", "QuadForm": "quad_form", "GeoMean": "geo_mean",
    "MatrixFrac": "matrix_frac", "Sum": "sum", "Trace": "trace",
}


def _atom_name(expr: Any) -> str:
    """The function a user writes for ``expr``'s atom (as :func:`_render` prints it)."""
    if isinstance(expr, Power) and not expr.p.parameters():
        return _POWER_FUNCTIONS.get(_exponent(expr), "power")
    if isinstance(expr, Pnorm):
        return "norm"
    if _divides_by_one(expr):
        return "sum_squares"
    name = type(expr).__name__
    name = name[: -len("Approx")] if name.endswith("Approx") else name
    return _FUNCTION_NAMES.get(name, name)


def _bound_text(bound: Any) -> str:
    if isinstance(bound, Expression):
        return _text(bound)
    if bound is None or np.all(np.isinf(np.asarray(bound.todense() if hasattr(
            bound, "todense") else bound, dtype=float))):
        return "None"
    return "(numbers)"


def _bound_only_parameters(expr: Expression) -> tuple[str, ...]:
    """Names of parameters that ``expr`` depends on only through variable bounds.

    CVXPY's ``Variable.parameters()`` returns the parameters of its bounds, so a
    variable with ``bounds=[b, None]`` is not parameter-free.
    """
    own: set[int] = set()
    stack = [expr]
    while stack:
        node = stack.pop()
        if isinstance(node, cp.Variable):
            continue
        if isinstance(node, Leaf):
            own.update(p.id for p in node.parameters())
            continue
        inner = {p.id for arg in node.args for p in arg.parameters()}
        own.update(p.id for p in node.parameters() if p.id not in inner)  # power's p, ...
        stack.extend(node.args)
    return tuple(p.name() for p in expr.parameters() if p.id not in own)


# ---------------------------------------------------------------------------
# the analysis


class _Analysis:
    """Curvature questions about expressions, asked once each (CVXPY caches them)."""

    def __init__(self, gp: bool) -> None:
        self.gp = gp
        self.fixed = "DGP" if gp else "DCP"

    # -- predicates ------------------------------------------------------

    def ok(self, expr: Any) -> bool:
        """Compliant under DPP: DCP (DGP) with parameters treated as affine."""
        with dpp_scope():
            return self.ok_fixed(expr)

    def ok_fixed(self, expr: Any) -> bool:
        """Compliant in the current scope (outside DPP: parameters as constants)."""
        # Ask the curvature directly, not `is_dcp`: Variable.is_dcp also checks
        # its bounds, which are reported separately (explain_bounds).
        if self.gp:
            return expr.is_log_log_convex() or expr.is_log_log_concave()
        return expr.is_convex() or expr.is_concave()

    def undecided(self, expr: Any) -> bool:
        """Whether ``ok_fixed`` cannot tell without parameter values (DGP only).

        Outside DPP, CVXPY calls a parameter expression such as ``exp(a)``
        log-log constant only when the parameters have values, so that a
        DGP verdict "with the parameters fixed" needs them.
        """
        return self.gp and any(p.value is None for p in expr.parameters())

    def param_affine(self, expr: Any) -> bool:
        """Variable-free and affine (log-log affine) in the parameters."""
        with dpp_scope():
            if expr.variables():
                return False
            return expr.is_log_log_affine() if self.gp else expr.is_affine()

    def declared(self, *factors: Any) -> str:
        """How a new parameter standing for the product of ``factors`` (one
        piece of parameters, or two) must be declared for the rewrite to pass:
        positive in a geometric program, whose parameters all are; in a DCP
        problem with the sign CVXPY knows the product to have, which it needs
        wherever the new parameter multiplies a convex or concave expression
        (``exp(p) * sum_squares(x)``: a plain ``exp_p`` has no known sign, so
        the product has no known curvature). Said even where the fix does not
        need it: the value the user computes has that sign anyway."""
        if self.gp:
            return " (declared pos=True)"
        sign = 1  # of the product: +1, -1, or 0 where a factor's is unknown
        for f in factors:
            sign *= 1 if f.is_nonneg() else -1 if f.is_nonpos() else 0
        return {1: " (declared nonneg=True)", -1: " (declared nonpos=True)"}.get(sign, "")

    def curvature(self, expr: Any) -> str:
        with dpp_scope():
            if self.gp:
                checks = ((expr.is_log_log_affine, "log-log affine"),
                          (expr.is_log_log_convex, "log-log convex"),
                          (expr.is_log_log_concave, "log-log concave"))
            else:
                checks = ((expr.is_affine, "affine"), (expr.is_convex, "convex"),
                          (expr.is_concave, "concave"))
            for check, name in checks:
                if check():
                    return name
        return "of unknown curvature"

    # -- search ----------------------------------------------------------

    def minimal(self, roots: Sequence[Any]) -> list[Any]:
        """The offending sub-expressions: not compliant while all arguments are.

        Only non-compliant nodes are entered, so a node that does not cause
        the failure (inside a compliant sub-expression) is never reported.
        """
        found: list[Any] = []
        seen: set[int] = set()
        stack = [r for r in reversed(roots) if not self.ok(r)]
        while stack:
            node = stack.pop()
            if id(node) in seen:
                continue
            seen.add(id(node))
            bad = [a for a in getattr(node, "args", []) if not self.ok(a)]
            if bad:
                stack.extend(reversed(bad))
            else:
                found.append(node)
        return found

    def nonlinear_pieces(self, roots: Sequence[Any]) -> list[Any]:
        """Smallest variable-free, parameter-dependent, not parameter-affine pieces."""
        found: list[Any] = []
        seen: set[int] = set()
        stack = list(reversed(roots))
        while stack:
            node = stack.pop()
            if id(node) in seen or not node.parameters():
                continue
            seen.add(id(node))
            args = getattr(node, "args", [])
            if not node.variables() and not self.param_affine(node):
                if all(self.param_affine(a) or not a.parameters() for a in args):
                    found.append(node)
                    continue
            stack.extend(reversed(args))
        return found

    # -- parts -----------------------------------------------------------

    def explain_part(self, location: str, index: int | None, part: Any) -> list[Finding]:
        text = _text(part)
        fixed_ok = bool(part.is_dgp() if self.gp else part.is_dcp())

        def finding(expr: str, rule: Rule, detail: str, fix: str, params=(),
                    top: bool = False) -> Finding:
            if not fixed_ok and rule in _DPP_ONLY:
                # (-exp(p) * norm(x) minimized got "introduce exp_p" alone, and
                # applied, the problem was still not convex; found by a probe.)
                fix += (" That alone does not make this part DCP: with its parameters "
                        "fixed it is not DCP either (check the signs and curvature of "
                        "its terms).")
            return Finding(location, index, text, expr, rule, detail, fix, tuple(params),
                           top, fixed_ok)

        nodes = self.minimal(part.args)
        if nodes:
            out = []
            for node in nodes:
                rule, detail, fix = self.classify(node)
                out.append(finding(_text(node), rule, detail, fix, _names(node)))
            return out
        if fixed_ok or self.undecided(part):
            pieces = self.nonlinear_pieces(part.args)
            if pieces:
                return [finding(_text(p), Rule.nonlinear_parameter,
                                *self._nonlinear_top(p, location), _names(p), True)
                        for p in pieces]
        if isinstance(part, cp.Minimize | cp.Maximize):
            return [finding(_text(part.expr), Rule.objective_curvature,
                            *self._objective(part), _names(part.expr), True)]
        return [finding(text, Rule.constraint_kind, *self._constraint(part), _names(part),
                        True)]

    def explain_bounds(self, var: cp.Variable, bounds: Sequence[Any]) -> list[Finding]:
        exprs = [b for b in bounds if isinstance(b, Expression)]
        need = "log-log affine" if self.gp else "parameter-affine"
        bad = [b for b in exprs if not self.param_affine(b)]
        if not bad:
            return []
        location = f"variable {var.name()}"
        text = "bounds=[" + ", ".join(_bound_text(b) for b in bounds) + "]"
        out = []
        for node in self.minimal(bad):
            rule, detail, fix = self.classify(node)
            out.append(Finding(location, None, text, _text(node), rule, detail, fix,
                               _names(node), False, True))
        top = [b for b in bad if self.ok(b)]
        for piece in self.nonlinear_pieces(top):
            _, fix = self._nonlinear_top(piece, location)
            detail = (f"a bound of a variable must be {need}; `{_text(piece)}` is a "
                      "nonlinear function of parameters, which DPP treats as "
                      f"{self.curvature(piece)}.")
            out.append(Finding(location, None, text, _text(piece), Rule.nonlinear_parameter,
                               detail, fix, _names(piece), True, True))
        if not out:
            out.append(Finding(
                location, None, text, text, Rule.constraint_kind,
                f"expression bounds of a variable must be {need}.",
                f"move the bound into a constraint (`{var.name()} >= ...`).",
                _names(var), True, True))
        return out

    # -- classification of one minimal node ------------------------------

    def classify(self, node: Any) -> tuple[Rule, str, str]:
        """(rule, detail, fix) for a minimal offending node."""
        if self.gp:
            return self._classify_dgp(node)
        return self._classify_dcp(node)

    def _classify_dcp(self, node: Any) -> tuple[Rule, str, str]:
        if isinstance(node, QuadForm) and node.args[1].parameters():
            return self._quad_form(node)
        if isinstance(node, Power) and node.p.parameters():
            base = _text(node.args[0])
            return (
                Rule.parametric_exponent,
                f"the exponent `{node.p}` of `{base}` is a parameter, and the curvature "
                "of power(x, p) depends on the value of p.",
                f"use a number as the exponent (build one layer per value if `{node.p}` "
                "takes a few values); a parametric exponent is allowed only in a "
                "geometric program (gp=True) with a parameter-free base.",
            )
        if self.ok_fixed(node):
            return self._dpp_only(node)
        return self._dcp_violation(node)

    def _dpp_only(self, node: Any) -> tuple[Rule, str, str]:
        """The node is DCP with the parameters fixed; only DPP rejects it."""
        if isinstance(node, MulExpression):
            left, right = node.args
            if left.parameters() and right.parameters():
                return self._product(node)
            factor = left if left.parameters() else right
            return self._nonlinear_factor(node, factor)
        if isinstance(node, DivExpression) and node.args[1].parameters():
            num, den = node.args
            new = _new_name(_names(den), "inv_")
            rewrite = (f"`{_operand(num, False)} * {new}`" if den.is_scalar()
                       else f"`cp.multiply({_text(num)}, {new})`")
            return (
                Rule.parameter_divisor,
                f"the divisor {_depends(den)} depends on parameters, and 1/p is not "
                "affine in p.",
                f"introduce one parameter `{new}`{self.declared(den)} whose value you set "
                f"to `1 / "
                f"{_operand(den, True)}` and write {rewrite}.",
            )
        if isinstance(node, quad_over_lin) and node.args[1].parameters():
            x, y = node.args
            new = _new_name(_names(y), "inv_")
            return (
                Rule.parameter_divisor,
                f"the denominator {_depends(y)} of quad_over_lin depends on parameters.",
                f"introduce one parameter `{new}` (declared nonneg=True) whose value you "
                f"set to `1 / {_operand(y, True)}` and write "
                f"`{new} * cp.sum_squares({_text(x)})`.",
            )
        pieces = self.nonlinear_pieces(node.args)
        if pieces:
            piece = pieces[0]
            new = _new_name(_names(piece), _atom_name(piece).lower() + "_")
            return (
                Rule.nonlinear_parameter,
                f"`{_text(piece)}` is a nonlinear function of parameters, which DPP treats "
                f"as {self.curvature(piece)} (not as a constant), and `{_atom_name(node)}` "
                "does not accept an argument of that curvature here.",
                f"introduce one parameter `{new}`{self.declared(piece)} whose value you set "
                f"to `{_text(piece)}` "
                "(computed outside the problem) and use it in its place.",
            )
        return self._fixed_position(node)

    def _product(self, node: Any) -> tuple[Rule, str, str]:
        left, right = node.args
        names = _names(node)
        # (A square, p * p, would otherwise name the new parameter `p` itself.)
        new = _new_name(names if len(names) > 1 else [*names, *names])
        via_bounds = [(f, _bound_only_parameters(f)) for f in (left, right)]
        for factor, bound_names in via_bounds:
            other = right if factor is left else left
            if bound_names and set(bound_names) == set(_names(factor)):
                var = next(v for v in factor.variables() if v.parameters())
                lower, upper = var.attributes["bounds"]
                bound = (f"{var.name()} >= {_text(lower)}" if isinstance(lower, Expression)
                         else f"{var.name()} <= {_text(upper)}")
                return (
                    Rule.parameter_product,
                    f"`{_text(factor)}` depends on parameter(s) {_ticks(bound_names)} only "
                    "through the `bounds` of a variable, which CVXPY counts as parameter "
                    f"dependence, so its product with `{_text(other)}` "
                    "has two parameter-dependent factors.",
                    f"declare `{var.name()}` without `bounds=` and add the bound as a "
                    f"constraint instead (`{bound}`).",
                )
        op = node.OP_NAME
        detail = (
            f"{_depends(left)} and {_depends(right)} both depend on parameters, so their "
            "product is quadratic in the parameters."
        )
        if not node.variables():
            fix = (f"introduce one parameter `{new}`{self.declared(left, right)} whose value "
                   f"you set to `{_text(node)}` "
                   f"(computed outside the problem) and use `{new}` in place of this product.")
            return Rule.parameter_product, detail, fix
        split = self._regroup(node)
        if split is not None:
            value, factors, rest, new_first = split
            if isinstance(node, multiply) and not (
                    rest.is_scalar() or all(f.is_scalar() for f in factors)):
                # Not `*`: between two non-scalars CVXPY's `*` is a matrix product.
                pair = (new, _text(rest)) if new_first else (_text(rest), new)
                rewritten = f"cp.multiply({pair[0]}, {pair[1]})"
            else:
                rewritten = (f"{new} {op} {_operand(rest, True)}" if new_first
                             else f"{_operand(rest, False)} {op} {new}")
            fix = (f"introduce one parameter `{new}`{self.declared(*factors)} whose value "
                   f"you set to `{value}` "
                   f"(computed outside the problem) and write `{rewritten}`.")
        else:
            fix = (f"introduce one parameter `{new}` for the product of the parameter "
                   f"factors ({_ticks(names)}), set its value outside the problem, and "
                   "rewrite so that every product has one parameter-affine factor and one "
                   "parameter-free factor (a * (b * x) becomes a_b * x with a_b = a * b).")
        return Rule.parameter_product, detail, fix

    def _regroup(self, node: Any) -> tuple[str, tuple[Any, Any], Expression, bool] | None:
        """Regroup p ∘ (q ∘ x) as (p ∘ q) ∘ x: (value text, the two parameter
        factors, rest, new factor first). (The value is NumPy's: its ``*`` is
        element-wise, as ``cp.multiply``.)"""
        left, right = node.args
        same = type(node)
        if not left.variables() and type(right) is same:
            inner_l, inner_r = right.args
            # (The left factor parenthesized too: `(p + q) * p`, not `p + q * p`.)
            if not inner_l.variables() and not inner_r.parameters():
                return (f"{_operand(left, False)} {node.OP_NAME} {_operand(inner_l, True)}",
                        (left, inner_l), inner_r, True)
            if same is multiply and not inner_r.variables() and not inner_l.parameters():
                return (f"{_operand(left, False)} * {_operand(inner_r, True)}",
                        (left, inner_r), inner_l, True)
        if not right.variables() and type(left) is same:
            inner_l, inner_r = left.args
            if not inner_r.variables() and not inner_l.parameters():
                return (f"{_operand(inner_r, False)} {node.OP_NAME} {_operand(right, True)}",
                        (inner_r, right), inner_l, False)
            if same is multiply and not inner_l.variables() and not inner_r.parameters():
                return (f"{_operand(inner_l, False)} * {_operand(right, True)}",
                        (inner_l, right), inner_r, False)
        return None

    def _nonlinear_factor(self, node: Any, factor: Any) -> tuple[Rule, str, str]:
        pieces = self.nonlinear_pieces([factor]) or [factor]
        piece = pieces[0]
        new = _new_name(_names(piece), _atom_name(piece).lower() + "_")
        return (
            Rule.nonlinear_parameter,
            f"the factor `{_text(factor)}` is a nonlinear function of parameters "
            f"({_ticks(_names(factor))}): DPP treats it as {self.curvature(factor)}, not as "
            "a constant, so it cannot multiply a variable.",
            f"introduce one parameter `{new}`{self.declared(piece)} whose value you set to "
            f"`{_text(piece)}` "
            "(computed outside the problem) and use it in its place.",
        )

    def _fixed_position(self, node: Any) -> tuple[Rule, str, str]:
        name = _atom_name(node)
        if isinstance(node, conv | convolve):
            fix = (f"write the convolution as a matrix product `T @ {_text(node.args[1])}` "
                   "with a parameter `T` whose value is the Toeplitz matrix built from "
                   f"`{_text(node.args[0])}`.")
        elif isinstance(node, kron):
            fix = ("make the parametric factor of kron a parameter-free constant, or "
                   "introduce one parameter for the whole Kronecker product and set its "
                   "value outside the problem.")
        else:
            fix = (f"pass a parameter-free constant to `{name}`, or reformulate with atoms "
                   "that accept parameter-affine arguments (products with a parameter, "
                   "sums, indexing).")
        return (
            Rule.parameter_in_fixed_position,
            f"`{name}` is DPP only without parameters in this argument; here it depends "
            f"on {_ticks(_names(node))}.",
            fix,
        )

    def _quad_form(self, node: Any) -> tuple[Rule, str, str]:
        x, P = node.args
        xt, Pt = _text(x), _text(P)
        sign = "-" if P.is_nsd() and not P.is_psd() else ""
        return (
            Rule.parametric_quad_form,
            f"the matrix {_depends(P)} of quad_form depends on parameters.",
            f"write `quad_form({xt}, {Pt})` as `{sign}cp.sum_squares(L @ {xt})` with a "
            f"parameter `L` whose value you set so that {Pt} = {sign}Lᵀ L (for example a "
            "Cholesky factor).",
        )

    def _dcp_violation(self, node: Any) -> tuple[Rule, str, str]:
        """The node is not DCP even with the parameters held fixed."""
        name = _atom_name(node)
        if isinstance(node, AddExpression):
            convex = [a for a in node.args if a.is_convex() and not a.is_affine()]
            concave = [a for a in node.args if a.is_concave() and not a.is_affine()]
            if convex and concave:
                return (
                    Rule.curvature,
                    f"it adds the convex term `{_text(convex[0])}` and the concave term "
                    f"`{_text(concave[0])}`; such a sum has no DCP curvature.",
                    "check the signs of the terms (a minus sign in front of a convex term "
                    "makes it concave), or move one term to the other side of a constraint.",
                )
        if isinstance(node, Atom) and not (node.is_atom_convex() or node.is_atom_concave()):
            return self._nonconvex_atom(node)
        if isinstance(node, MulExpression):
            for idx, arg in enumerate(node.args):
                if arg.is_affine():
                    continue
                other = node.args[1 - idx]
                return (
                    Rule.composition,
                    f"`{_text(other)}` multiplies the {self._fixed_curv(arg)} expression "
                    f"`{_text(arg)}`, but its sign is unknown, so the product has no known "
                    "curvature.",
                    self._sign_fix(other),
                )
        if isinstance(node, Atom):
            for idx, arg in enumerate(node.args):
                if arg.is_affine():
                    continue
                convex_atom = node.is_atom_convex()
                if convex_atom and ((arg.is_convex() and node.is_incr(idx))
                                    or (arg.is_concave() and node.is_decr(idx))):
                    continue
                if not convex_atom and ((arg.is_concave() and node.is_incr(idx))
                                        or (arg.is_convex() and node.is_decr(idx))):
                    continue
                curv = "convex" if convex_atom else "concave"
                mono = ("nondecreasing" if node.is_incr(idx) else
                        "nonincreasing" if node.is_decr(idx) else "not monotone")
                needs = {
                    ("convex", "nondecreasing"): "an affine or convex",
                    ("convex", "nonincreasing"): "an affine or concave",
                    ("concave", "nondecreasing"): "an affine or concave",
                    ("concave", "nonincreasing"): "an affine or convex",
                }.get((curv, mono), "an affine")
                return (
                    Rule.composition,
                    f"`{name}` is {curv} and {mono} in its argument, so it needs {needs} "
                    f"argument; `{_text(arg)}` is {self._fixed_curv(arg)}.",
                    "use one atom for the whole composition (for example `cp.abs(y)` for "
                    "sqrt(square(y)), `cp.norm(v)` for sqrt(sum_squares(v)), "
                    "`cp.sum_squares(v)` for square(norm(v))), or restructure so the "
                    "argument has the curvature the atom needs.",
                )
        return (
            Rule.curvature,
            f"`{_text(node)}` has no DCP curvature.",
            "rewrite it with atoms whose curvature DCP knows (see CVXPY's atom list).",
        )

    def _nonconvex_atom(self, node: Any) -> tuple[Rule, str, str]:
        if isinstance(node, MulExpression):
            left, right = node.args
            same = left is right or _text(left) == _text(right)
            both = (f"`{_text(left)}` multiplies itself" if same else
                    f"`{_text(left)}` and `{_text(right)}` both depend on variables")
            detail = (f"{both}; a product of two variable expressions is neither convex "
                      "nor concave.")
            if same:
                atom = "cp.sum_squares" if node.OP_NAME == "@" else "cp.square"
                fix = f"write `{atom}({_text(left)})`, which DCP knows is convex."
            else:
                fix = ("DCP cannot express a product of variables; make one factor a "
                       "constant or a parameter, or use an atom for the intended function "
                       "(`cp.square`, `cp.sum_squares`, `cp.quad_over_lin`, `cp.geo_mean`).")
            return Rule.curvature, detail, fix
        if isinstance(node, DivExpression):
            return (
                Rule.curvature,
                f"it divides by `{_text(node.args[1])}`, which depends on variables.",
                "DCP has no general division by a variable; `cp.inv_pos`, "
                "`cp.quad_over_lin` and `cp.perspective` cover common cases, or solve it "
                "as a geometric program (gp=True) when every quantity is positive.",
            )
        if isinstance(node, QuadForm):
            return (
                Rule.curvature,
                f"the matrix `{_text(node.args[1])}` is neither positive nor negative "
                "semidefinite, so the quadratic form is neither convex nor concave.",
                "use a PSD matrix (convex) or an NSD one (concave).",
            )
        return (
            Rule.curvature,
            f"`{_atom_name(node)}` is neither convex nor concave for these arguments.",
            "rewrite it with atoms whose curvature DCP knows (see CVXPY's atom list).",
        )

    @staticmethod
    def _fixed_curv(expr: Any) -> str:
        if expr.is_convex():
            return "convex"
        return "concave" if expr.is_concave() else "non-DCP"

    @staticmethod
    def _sign_fix(other: Any) -> str:
        if isinstance(other, cp.Parameter):
            return (f"declare the parameter `{other.name()}` with nonneg=True (or "
                    "nonpos=True) when its values have one sign.")
        if not other.variables() and other.parameters():
            # (A function of parameters whose sign no declaration can give, as
            # log(p) of a nonneg p: "declare its parameters" could not help;
            # found by a probe.)
            prefix = "" if isinstance(other, AffAtom) else _atom_name(other).lower() + "_"
            new = _new_name(_names(other), prefix)
            return (f"introduce one parameter `{new}` (declared nonneg=True, or nonpos=True: "
                    f"the sign of its values) whose value you set to `{_text(other)}` "
                    "(computed outside the problem) and use it in its place; the problem is "
                    "convex only for values of the sign the product needs.")
        return (f"make the sign of `{_text(other)}` known to CVXPY (declare its parameters "
                "or variables nonneg=True/nonpos=True), or split the product by sign.")

    def _nonlinear_top(self, piece: Any, location: str) -> tuple[str, str]:
        new = _new_name(_names(piece), _atom_name(piece).lower() + "_")
        where = "the objective" if location == "objective" else f"the {location.split()[0]}"
        return (
            f"each side is {self.fixed} on its own, but `{_text(piece)}` is a nonlinear "
            f"function of parameters, which DPP treats as {self.curvature(piece)} instead of "
            f"as a constant, and with that curvature {where} as a whole is not "
            f"{self.fixed}.",
            f"introduce one parameter `{new}`{self.declared(piece)} whose value you set to "
            f"`{_text(piece)}` "
            "(computed outside the problem) and use it in its place.",
        )

    def _objective(self, objective: Any) -> tuple[str, str]:
        expr = objective.expr
        minimize = isinstance(objective, cp.Minimize)
        prefix = "log-log " if self.gp else ""
        need = f"{prefix}{'convex' if minimize else 'concave'}"
        return (
            f"{'Minimize' if minimize else 'Maximize'} needs a {need} objective; "
            f"`{_text(expr)}` is {self.curvature(expr)}.",
            f"check the sense: {'maximize' if minimize else 'minimize'} it instead if that "
            "is what you mean, or check the signs of its terms.",
        )

    def _constraint(self, con: Any) -> tuple[str, str]:
        kind = type(con).__name__
        if self.gp:
            if isinstance(con, Inequality):
                lhs, rhs = con.args
                return (
                    f"DGP needs `log-log convex <= log-log concave` (posynomial <= "
                    f"monomial); here the left side is {self.curvature(lhs)} and the right "
                    f"side is {self.curvature(rhs)}.",
                    "write it as `posynomial <= monomial`, dividing both sides by a "
                    "monomial to move one (`x + y <= z` is `x / z + y / z <= 1`); a "
                    "posynomial on the larger side (`1 <= x + y`) or in a denominator "
                    "(`x / (y + a) <= 1`) has no GP form.",
                )
            if isinstance(con, Equality):
                return (
                    "DGP accepts `==` only between monomials (log-log affine expressions); "
                    f"here the sides are {self.curvature(con.args[0])} and "
                    f"{self.curvature(con.args[1])}.",
                    "use an inequality (posynomial <= monomial) if it is tight at the "
                    "optimum, or rewrite both sides as monomials.",
                )
            return (
                f"a {kind} constraint has no DGP form: a geometric program accepts only "
                "`<=`, `>=` and `==` between positive expressions.",
                "write the constraint with `<=`/`==` between posynomials and monomials, or "
                "solve the problem as a DCP program (gp=False).",
            )
        if isinstance(con, Inequality):
            lhs, rhs = con.args
            return (
                f"`<=` needs a convex left side and a concave right side; here the left "
                f"side is {self.curvature(lhs)} and the right side is "
                f"{self.curvature(rhs)}.",
                "`convex >= ...` (or `concave <= ...`) describes a nonconvex set, which a "
                "DCP problem cannot contain: reformulate, or exchange sides if the "
                "direction is reversed.",
            )
        if isinstance(con, Equality | Zero):
            sides = [a for a in con.args if not self._is_affine(a)]
            shown = f"`{_text(sides[0])}` is {self.curvature(sides[0])}" if sides else ""
            return (
                f"`==` needs affine expressions on both sides; {shown}.",
                "use an inequality that is tight at the optimum (for example "
                "`square(x) <= t` instead of `square(x) == t`), or express the relation "
                "affinely.",
            )
        if isinstance(con, NonNeg | NonPos):
            need = "concave" if isinstance(con, NonNeg) else "convex"
            return (
                f"a {kind} constraint needs a {need} argument; `{_text(con.args[0])}` is "
                f"{self.curvature(con.args[0])}.",
                "reformulate so the argument has that curvature.",
            )
        bad = [a for a in con.args if not self._is_affine(a)]
        shown = f"; `{_text(bad[0])}` is {self.curvature(bad[0])}" if bad else ""
        return (
            f"a {kind} constraint needs affine arguments{shown}.",
            "introduce an epigraph variable (t >= f(x) with t affine in the cone) or "
            "reformulate the cone argument affinely.",
        )

    @staticmethod
    def _is_affine(expr: Any) -> bool:
        with dpp_scope():
            return expr.is_affine()

    # -- DGP -------------------------------------------------------------

    def _classify_dgp(self, node: Any) -> tuple[Rule, str, str]:
        if isinstance(node, cp.Parameter):
            return (
                Rule.parameter_attribute,
                f"parameter `{node.name()}` is not declared positive; a parameter of a "
                "geometric program enters through its logarithm.",
                "declare it `cp.Parameter(..., pos=True)` (its values must then be "
                "positive); only an exponent may have any sign.",
            )
        if isinstance(node, cp.Variable):
            extra = " (nonneg=True is not enough)" if node.attributes.get("nonneg") else ""
            return (
                Rule.nonpositive_leaf,
                f"variable `{node.name()}` is not declared positive{extra}.",
                f"declare it `cp.Variable(..., pos=True)`; a geometric program works with "
                f"log({node.name()}).",
            )
        if isinstance(node, Leaf):
            return (
                Rule.nonpositive_leaf,
                f"the constant `{_text(node)}` is not positive.",
                "remove it: a bound such as `x >= 0` is implied by pos=True and can be "
                "dropped; a subtraction must move to the other side of a constraint.",
            )
        if isinstance(node, Power | gmatmul) and self.ok_fixed(node):
            exponent = node.p if isinstance(node, Power) else node.A
            base = node.args[0]
            if not base.variables():
                new = _new_name(_names(base) + _names(exponent), "pow_")
                fix = (f"introduce one parameter `{new}` (declared pos=True) whose value "
                       f"you set to `{_text(base)} ** {exponent}` (computed outside the "
                       "problem).")
            else:
                fix = ("split the base into its parameter and variable parts, e.g. "
                       "(a * x) ** b = a_pow_b * x ** b with one parameter a_pow_b whose "
                       "value you set to a ** b.")
            return (
                Rule.parametric_exponent,
                f"both the base `{_text(base)}` and the exponent `{exponent}` depend on "
                "parameters.",
                fix,
            )
        fixed = self.ok_fixed(node)
        if fixed or self.undecided(node):
            pieces = self.nonlinear_pieces(node.args)
            if pieces:
                piece = pieces[0]
                new = _new_name(_names(piece), _atom_name(piece).lower() + "_")
                return (
                    Rule.nonlinear_parameter,
                    f"`{_text(piece)}` is a function of parameters that is not a monomial; "
                    f"DPP treats it as {self.curvature(piece)}, not as a constant.",
                    f"introduce one parameter `{new}`{self.declared(piece)} whose value you "
                    f"set to `{_text(piece)}` (computed outside the problem) and use it in "
                    "its place.",
                )
            if fixed:
                return self._fixed_position(node)
        if isinstance(node, Atom) and not (node.is_atom_log_log_convex()
                                           or node.is_atom_log_log_concave()):
            if isinstance(node, NegExpression) and not node.variables():
                # (Of parameters only, as (a - b) / y: moving terms across an
                # inequality is beside the point; found by a probe.)
                return (
                    Rule.dgp_atom,
                    f"`{_text(node)}` negates a positive expression (a subtraction) of "
                    f"parameters only ({_ticks(_names(node))}).",
                    "a geometric program has no subtraction, but a difference of parameters "
                    "is a number: introduce one parameter (declared pos=True) whose value "
                    "you set to the whole difference, computed outside the problem (e.g. "
                    "`a_b` for `a - b`; it must be positive), and use it in its place.",
                )
            if isinstance(node, NegExpression):
                return (
                    Rule.dgp_atom,
                    f"`{_text(node)}` negates a positive expression (a subtraction).",
                    "a geometric program has no subtraction. Move the subtracted term to "
                    "the other side of an inequality where it adds to the smaller side "
                    "(`a - y >= x` becomes `x + y <= a`); where it would add to the larger "
                    "side (`x - y <= 1` is `x <= 1 + y`), the constraint has no GP form. "
                    "`cp.one_minus_pos(y)` (1 - y) and `cp.diff_pos(x, y)` (x - y) are "
                    "log-log concave: they may be the larger side of an inequality "
                    "(`x <= cp.one_minus_pos(y)`) or be maximized.",
                )
            return (
                Rule.dgp_atom,
                f"`{_atom_name(node)}` has no log-log curvature.",
                "rewrite with monomials, posynomials and DGP atoms (see CVXPY's DGP "
                "tutorial).",
            )
        if isinstance(node, AddExpression):
            concave = [a for a in node.args
                       if self.curvature(a) == "log-log concave"]
            if concave:
                return (
                    Rule.dgp_composition,
                    f"it adds the log-log concave term `{_text(concave[0])}`; a sum is "
                    "log-log convex only when every term is log-log convex (posynomial).",
                    "move that term to the other side of the constraint, or bound it by a "
                    "new positive variable t with the term >= t.",
                )
        return (
            Rule.dgp_composition,
            f"`{_atom_name(node)}` receives an argument of the wrong log-log curvature.",
            "restructure so each argument has the log-log curvature the atom needs.",
        )

