"""Why a problem is not DPP, in words.

CVXPY answers ``problem.is_dpp()`` with yes or no. The layer needs to say
which part of the problem breaks the rules; this module locates the
objective or constraints that fail and renders the explanation that
:class:`~conelayers.DPPError` carries.
"""

from __future__ import annotations

import cvxpy as cp

__all__ = ["dpp_error_message", "is_compliant"]

_DPP_DOCS = "https://www.cvxpy.org/tutorial/dpp/index.html"
_DGP_DOCS = "https://www.cvxpy.org/tutorial/dgp/index.html"


def is_compliant(problem: cp.Problem, *, gp: bool = False) -> bool:
    """CVXPY's own verdict: DGP+DPP when ``gp`` else DCP+DPP."""
    return problem.is_dgp(dpp=True) if gp else problem.is_dcp(dpp=True)


def _part_ok(part: cp.Objective | cp.Constraint, gp: bool) -> bool:
    return part.is_dgp(dpp=True) if gp else part.is_dcp(dpp=True)


def dpp_error_message(problem: cp.Problem, *, gp: bool = False) -> str:
    """The text of the DPPError for a non-compliant ``problem``.

    Starts with cvxpylayers' wording ("Problem must be DPP.") so that code
    matching on it keeps working, then names each failing part.
    """
    kind = "DGP (log-log convex) and DPP" if gp else "DCP and DPP"
    lines = ["Problem must be DPP."]
    parts: list[tuple[str, cp.Objective | cp.Constraint]] = [("objective", problem.objective)]
    parts += [(f"constraint {i}", con) for i, con in enumerate(problem.constraints)]
    bad = [(where, part) for where, part in parts if not _part_ok(part, gp)]
    for where, part in bad:
        plain_ok = part.is_dgp() if gp else part.is_dcp()
        rule = (
            "parameters enter it in a way that is not DPP (for example a product of "
            "two parameter-dependent expressions, or a parameter inside a nonlinear atom)"
            if plain_ok
            else f"it is not {'DGP' if gp else 'DCP'} even with the parameters held fixed"
        )
        lines.append(f"  {where}: {part}  -- {rule}.")
    if not bad:
        lines.append("  The problem as a whole is not compliant although each part is.")
    lines.append(
        f"A layer needs a problem that is {kind}. Rewrite the flagged parts so that "
        "parameters enter affinely (e.g. replace a product of parameters `a*b` by one "
        "new parameter whose value you set to a*b). See "
        f"{_DGP_DOCS if gp else _DPP_DOCS}."
    )
    return "\n".join(lines)
