"""Solver registry: name → adapter.

Adding a solver means adding one file with an :class:`AbstractSolver`
subclass and one line here.
"""

from __future__ import annotations

from ._base import AbstractSolver, RawSolution
from .clarabel import ClarabelSolver
from .ecos import ECOSSolver
from .scs import SCSSolver

__all__ = ["DIFFCP", "SOLVERS", "AbstractSolver", "RawSolution", "available_solvers",
           "check_solver_name", "get_solver"]

SOLVERS: dict[str, type[AbstractSolver]] = {
    cls.name.upper(): cls for cls in (ClarabelSolver, SCSSolver, ECOSSolver)
}


def available_solvers() -> list[str]:
    """Names of the solvers whose Python packages are installed."""
    return [cls.name for cls in SOLVERS.values() if cls.is_installed()]


# cvxpylayers 1.2's name for its diffcp back-end, whose cone solver is
# ``solver_args['solve_method']``, SCS by default (diffcp's): the same here.
DIFFCP = "DIFFCP"


def _choices() -> str:
    """The solver names a message offers: ours, and cvxpylayers' ``DIFFCP``."""
    return (", ".join(c.name for c in SOLVERS.values())
            + f", or {DIFFCP!r} (cvxpylayers' diffcp back-end: SCS, or the solver "
            "named by solver_args['solve_method'])")


def check_solver_name(name: object) -> str:
    """``name`` itself if it is a string; ``ParameterError`` naming `solver` if not."""
    if not isinstance(name, str):
        from .._errors import ParameterError

        hint = (" (cvxpylayers 0.1's fourth argument was `gp`: pass `gp=True` by name)"
                if isinstance(name, bool) else "")
        raise ParameterError(
            f"`solver` must be a solver name, one of {_choices()}; got {type(name).__name__} "
            f"{name!r}{hint}."
        )
    return name


def get_solver(name: str) -> AbstractSolver:
    """The adapter for ``name`` (case-insensitive); ``ParameterError`` if unknown."""
    from .._errors import ParameterError

    cls = SOLVERS.get(check_solver_name(name).upper())
    if cls is None:
        raise ParameterError(
            f"`solver` {name!r} is not a solver conelayers knows; choose one of {_choices()}."
        )
    if not cls.is_installed():
        raise ParameterError(
            f"solver {cls.name} is not installed; `pip install {cls.required_modules[0]}`."
        )
    return cls()
