"""Bound constraints rewritten before canonicalization, without epigraph variables.

CVXPY canonicalizes ``abs(e) <= r`` as ``t >= e, t >= -e, t <= r`` with a new
variable t, ``norm_inf(e) <= r`` likewise, and ``norm(e, 2) <= r`` as
``SOC(t, e), t <= r``. Wherever such a constraint is inactive, t is free
(anywhere in [|e|, r]): the cone program's solution is not unique, its K is
singular, and refinement and the derivative take the least-squares path for
every such item. The layer's outputs do not depend on t, so the answers are
right, but slow: a model-predictive controller with ``cp.abs(u) <= 1``
(examples/mpc.py) took 4.22 ms per item forward and 1.10 backward, against
1.28 and 0.46 written as ``-1 <= u, u <= 1``.

:func:`without_free_epigraphs` writes each such constraint (an affine e; an
affine r for the SOC) without t, as ``e <= r, -e <= r`` or ``SOC(r, e)``, in a
new problem that is canonicalized instead of the user's; the user's problem and
constraints are not touched. The dual variable of a rewritten constraint is
recovered from the new constraints' (:class:`Replaced`).

The same goes for the absolute values of a variable that the problem keeps
nonnegative (declared ``nonneg=True``, or bounded below by a nonnegative
constant or parameter, as in ``x >= 0``): ``abs(x)`` is ``x`` and
``norm(x, 1)`` is ``sum(x)`` on the feasible set, where CVXPY's t ≥ ±x, with
x ≥ 0, makes three constraints active for the two variables (x_i, t_i)
wherever x_i = 0, and the dual of the bound is not unique there (the l1
term's subgradient). Non-negative least squares with an l1 term (A 50×20,
B = 64): 4.18 → 1.40 ms per item forward, 1.24 → 0.28 backward. Solutions
and derivatives are those of the user's problem (the same function on the
feasible set); where that problem's dual is a set (its bound at x_i = 0), the
layer returns the element of it the rewritten program has (the subgradient 1).
Likewise for a variable kept nonpositive (``nonpos=True``, ``x <= 0``):
``abs(x)`` is ``-x`` and ``norm(x, 1)`` is ``-sum(x)`` (without it, SCS's
answers at such a solution came with a false "not strictly complementary"
warning; found by a probe).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any

import cvxpy as cp
from cvxpy.atoms.elementwise.abs import abs as Abs
from cvxpy.atoms.norm1 import norm1
from cvxpy.atoms.norm_inf import norm_inf
from cvxpy.atoms.pnorm import Pnorm
from cvxpy.constraints.nonpos import Inequality, NonNeg, NonPos

__all__ = ["Replaced", "without_free_epigraphs"]


@dataclass(frozen=True)
class Replaced:
    """The constraints a user's constraint became, and how its dual variable
    comes from theirs: ``"same"``, the one constraint's (its expressions
    simplified); ``"sum"``, entry by entry the sum of the two bounds'
    (``abs``); ``"total"``, the sum of all their entries (``norm_inf``, whose
    constraint is scalar); ``"soc"``, the SOC's first dual variable (that of
    its scalar part)."""

    constraints: tuple[cp.Constraint, ...]
    dual: str


# Each problem's rewrite, made once: CVXPY caches its canonicalization on the
# problem object, so layers built from one problem share it (as they do where
# nothing is rewritten and the user's problem is canonicalized).
_REWRITES: weakref.WeakKeyDictionary[cp.Problem, tuple[cp.Problem, dict[int, Replaced]]] = (
    weakref.WeakKeyDictionary())


def without_free_epigraphs(problem: cp.Problem) -> tuple[cp.Problem, dict[int, Replaced]]:
    """``problem`` with its bound constraints rewritten (see the module
    docstring), and the rewritten ones by constraint id; ``problem`` itself
    where there are none. The same objects for the same problem."""
    cached = _REWRITES.get(problem)
    if cached is None:
        cached = _REWRITES[problem] = _rewrite(problem)
    return cached


def _rewrite(problem: cp.Problem) -> tuple[cp.Problem, dict[int, Replaced]]:
    signs = _signed_variables(problem)
    objective = problem.objective
    simpler = _simplified(objective.expr, signs)
    if simpler is not objective.expr:
        objective = type(objective)(simpler)
    constraints: list[cp.Constraint] = []
    replaced: dict[int, Replaced] = {}
    for con in problem.constraints:
        args = [_simplified(a, signs) for a in con.args]
        plain = con if all(a is b for a, b in zip(args, con.args, strict=True)) else con.copy(args)
        new = _rewritten(plain)
        if new is None and plain is not con:
            new = Replaced((plain,), "same")
        if new is None:
            constraints.append(con)
        else:
            replaced[con.id] = new
            constraints.extend(new.constraints)
    if not replaced and objective is problem.objective:
        return problem, replaced
    target: Any = cp.Problem(objective, constraints)
    # Both rewrites keep DCP and DPP (an affine expression in place of a convex
    # one of the same value, linear or SOC constraints in place of convex ones);
    # checked all the same, the user's problem is canonicalized where they do not.
    if not target.is_dcp(dpp=True):  # pragma: no cover
        return problem, {}
    return target, replaced


def _signed_variables(problem: cp.Problem) -> dict[int, int]:
    """The variables the problem keeps of one sign, entry by entry, by id: +1
    for nonnegative (declared so, or bounded below, whole, by a nonnegative
    constant or parameter: ``x >= 0``, ``0 <= x``, ``NonNeg(x)``), -1 for
    nonpositive (the mirror images: ``x <= 0``, ``NonPos(x)``)."""
    signs = {v.id: 1 for v in problem.variables() if v.is_nonneg()}
    signs.update({v.id: -1 for v in problem.variables() if v.is_nonpos() and not v.is_nonneg()})
    for con in problem.constraints:
        if isinstance(con, NonNeg | NonPos) and isinstance(con.args[0], cp.Variable):
            signs.setdefault(con.args[0].id, 1 if isinstance(con, NonNeg) else -1)
        elif isinstance(con, Inequality):  # low <= high
            low, high = con.args
            for var, bound, sign, kept in ((high, low, 1, low.is_nonneg),
                                           (low, high, -1, high.is_nonpos)):
                if (isinstance(var, cp.Variable) and bound.is_constant() and kept()
                        and bound.size in (1, var.size) and con.shape == var.shape):
                    signs.setdefault(var.id, sign)
    return signs


def _simplified(expr: Any, signs: dict[int, int]) -> Any:  # (CVXPY's expressions: untyped)
    """``expr`` with ``abs(x)`` as ``±x`` and ``norm(x, 1)`` as ``±sum(x)`` for
    the variables x in ``signs`` (by their sign); ``expr`` itself where nothing
    changes."""
    if not signs or not expr.args:
        return expr
    if isinstance(expr, Abs | norm1) and isinstance(expr.args[0], cp.Variable) \
            and expr.args[0].id in signs and getattr(expr, "axis", None) is None:
        x = expr.args[0]
        plain = x if isinstance(expr, Abs) else cp.sum(x)
        return plain if signs[x.id] > 0 else -plain
    args = [_simplified(a, signs) for a in expr.args]
    if all(a is b for a, b in zip(args, expr.args, strict=True)):
        return expr
    return expr.copy(args)


def _rewritten(con: cp.Constraint) -> Replaced | None:
    if not isinstance(con, Inequality):
        return None
    bound, r = con.args
    if isinstance(bound, Abs | norm_inf | Pnorm):
        e = bound.args[0]
    else:
        return None
    if not e.is_affine() or getattr(bound, "axis", None) is not None:
        return None
    if isinstance(bound, Abs):  # elementwise, r broadcast against e
        return Replaced((e <= r, -e <= r), "sum")
    if r.size != 1:
        return None
    if isinstance(bound, norm_inf):
        return Replaced((e <= r, -e <= r), "total")
    if float(bound.p) != 2 or not r.is_affine():
        return None
    return Replaced((cp.SOC(cp.reshape(r, (), order="F"), cp.vec(e, order="F")),), "soc")
