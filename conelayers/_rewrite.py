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
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import cvxpy as cp
from cvxpy.atoms.elementwise.abs import abs as Abs
from cvxpy.atoms.norm_inf import norm_inf
from cvxpy.atoms.pnorm import Pnorm
from cvxpy.constraints.nonpos import Inequality

__all__ = ["Replaced", "without_free_epigraphs"]


@dataclass(frozen=True)
class Replaced:
    """The constraints a user's constraint became, and how its dual variable
    comes from theirs: ``"sum"``, entry by entry the sum of the two bounds'
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
    constraints: list[cp.Constraint] = []
    replaced: dict[int, Replaced] = {}
    for con in problem.constraints:
        new = _rewritten(con)
        if new is None:
            constraints.append(con)
        else:
            replaced[con.id] = new
            constraints.extend(new.constraints)
    if not replaced:
        return problem, replaced
    return cp.Problem(problem.objective, constraints), replaced


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
