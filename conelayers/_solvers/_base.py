"""The contract every solver adapter keeps.

An adapter translates one cone program in our convention (see
:mod:`conelayers._cones`) to a solver's native call and the answer back. It
speaks NumPy and SciPy only, imports its solver lazily, and maps the solver's
statuses to :class:`~conelayers.Status` with one literal dict.
"""

from __future__ import annotations

import abc
import importlib.util
import logging
import math
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from .._cones import Cone, ConeLayout
from .._errors import ParameterError, Status
from .._typing import CSC, FloatArray, IntArray

__all__ = ["PORTABLE_OPTIONS", "AbstractSolver", "ItemSolve", "Range", "RawSolution"]

# The options every adapter maps to its own (``AbstractSolver.portable_options``).
PORTABLE_OPTIONS = frozenset({"eps", "max_iters", "verbose"})
# The most iterations the portable ``max_iters`` asks for: Clarabel's limit is
# a 32-bit unsigned integer, which a larger value overflowed at the first solve
# ("out of range integral type conversion attempted"; found by a probe).
_MAX_ITERS_LIMIT = 2**31 - 1

logger = logging.getLogger("conelayers")


@dataclass(frozen=True, eq=False)
class RawSolution:
    """One solver answer in our convention.

    ``x`` has length n; ``y`` and ``s`` have length m, in canonical cone order
    with PSD blocks in svec form, and satisfy Ax + s = b, s ∈ K, y ∈ K* when
    ``status.ok``. When the solve failed their content is unspecified (the
    caller replaces it by NaN).
    """

    x: FloatArray
    y: FloatArray
    s: FloatArray
    status: Status
    iterations: int = 0
    solve_time: float = 0.0


@dataclass(frozen=True)
class Range:
    """The values a solver's numeric option may take: ``low < v <= high``
    (``low <= v`` where ``closed_low``); ``high = inf`` admits inf itself
    only with ``infinite``."""

    low: float
    high: float
    closed_low: bool = False
    infinite: bool = False

    def admits(self, value: numbers.Real) -> bool:
        v = float(value)
        if math.isnan(v) or (math.isinf(v) and not self.infinite):
            return False
        return (self.low <= v if self.closed_low else self.low < v) and v <= self.high

    def __str__(self) -> str:
        left = "[" if self.closed_low else "("
        right = "]" if self.high < math.inf or self.infinite else ")"
        high = "inf" if self.high == math.inf else f"{self.high:g}"
        return f"a number in {left}{self.low:g}, {high}{right}"


# One call's solve of an item, (A, b, c) -> its answer (see AbstractSolver.solving).
ItemSolve = Callable[[CSC, FloatArray, FloatArray], RawSolution]


class AbstractSolver(abc.ABC):
    """Base of the solver adapters.

    Class attributes
    ----------------
    name : str
        The name users pass (``solver="Clarabel"``); matched case-insensitively.
    required_modules : tuple of str
        Python modules the adapter imports (lazily, inside methods).
    supported_cones : frozenset of Cone subclasses
        The cones it can solve; :meth:`check_layout` rejects others.
    native_options : frozenset of str
        Option names passed through unchanged to the solver.
    portable_options : Mapping[str, tuple[str, ...]]
        Options every adapter understands (``eps``, ``max_iters``, ``verbose``),
        mapped to the native names they set.
    defaults : Mapping[str, Any]
        Native options set unless the caller sets them.
    ranges : Mapping[str, Range]
        The values native numeric options may take, where the solver's own
        set-up does not check them (:meth:`refusal` asks it about the rest).
    tight_eps : float
        The tolerance (portable ``eps``) of the re-solve of an item whose
        refinement stalled (see :meth:`tightened`).
    refining_eps, refining_max_nnz : float or None, int
        The tolerance for solves whose answers refinement will polish, on
        programs with fewer than ``refining_max_nnz`` stored entries of A, where
        the caller set none (see :meth:`for_refinement`); None: the solver's own.
    """

    name: ClassVar[str]
    required_modules: ClassVar[tuple[str, ...]]
    supported_cones: ClassVar[frozenset[type[Cone]]]
    native_options: ClassVar[frozenset[str]]
    portable_options: ClassVar[Mapping[str, tuple[str, ...]]]
    defaults: ClassVar[Mapping[str, Any]] = {}
    ranges: ClassVar[Mapping[str, Range]] = {}
    tight_eps: ClassVar[float] = 1e-10
    refining_eps: ClassVar[float | None] = None
    refining_max_nnz: ClassVar[int] = 0

    @classmethod
    def is_installed(cls) -> bool:
        """Whether the solver's modules can be imported (checked without importing)."""
        try:
            return all(importlib.util.find_spec(mod) is not None for mod in cls.required_modules)
        except (ImportError, ValueError) as exc:  # broken installation, not absence
            logger.warning("checking for %s failed: %s", cls.name, exc)
            return False

    @classmethod
    def check_layout(cls, layout: ConeLayout) -> None:
        """Raise ``ParameterError`` if ``layout`` has a cone this solver lacks."""
        missing = sorted({type(c).__name__ for c in layout.cones} -
                         {k.__name__ for k in cls.supported_cones})
        if missing:
            raise ParameterError(
                f"solver {cls.name} cannot solve this problem: it does not support the "
                f"{', '.join(missing)} cone(s) the problem needs. Choose another solver "
                "(Clarabel and SCS support every cone conelayers differentiates)."
            )

    @classmethod
    def translate_options(cls, *levels: Mapping[str, Any]) -> dict[str, Any]:
        """Validate option names and values and return the native options to pass.

        ``levels``: option dicts, lowest priority first (the constructor's, a
        call's); each is translated on its own, so a later level's native name
        overrides an earlier level's portable one and the other way round.
        Raises ``ParameterError`` naming an unknown option and the accepted
        ones, and where one level sets an option twice with different values
        (``max_iters`` and Clarabel's ``max_iter``: the dict's order decided).
        """
        native = dict(cls.defaults)
        for level in levels:
            native.update(cls._translate_level(level))
        return native

    @classmethod
    def _translate_level(cls, options: Mapping[str, Any]) -> dict[str, Any]:
        native: dict[str, Any] = {}
        for key, value in options.items():
            if key in cls.portable_options:
                _check_portable(key, value)
                for target in cls.portable_options[key]:
                    if target in options and not _same_value(options[target], value):
                        raise ParameterError(
                            f"`solver_args` sets {key!r} = {value!r} and {target!r} = "
                            f"{options[target]!r}, a setting {key!r} also sets for "
                            f"{cls.name}; pass one of them."
                        )
                    native.setdefault(target, value)
            elif key in cls.native_options:
                _check_native(cls, key, value)
                native[key] = value
            else:
                from .._validate import LAYER_OPTIONS
                from . import SOLVERS

                accepted = sorted(set(cls.native_options) | set(cls.portable_options))
                owners = [other.name for other in SOLVERS.values()
                          if other is not cls and key in other.native_options]
                # (cvxpylayers' default cone solver is SCS: its code passes SCS's
                # options, e.g. acceleration_lookback, which Clarabel does not know.)
                hint = (f" {key!r} is an option of {' and '.join(owners)}: choose "
                        f"{owners[0]} with solver={owners[0]!r} (or solver_args['solve_method']"
                        ")." if owners else "")
                if "SCS" in owners:
                    hint += " (cvxpylayers' default cone solver is SCS.)"
                raise ParameterError(
                    f"`solver_args` has an option {key!r} that solver {cls.name} does not "
                    f"know.{hint} Accepted: {', '.join(accepted)}; and the layer's own options "
                    f"{', '.join(sorted(LAYER_OPTIONS))}."
                )
        return native

    @classmethod
    def refusal(cls, options: Mapping[str, Any]) -> str | None:
        """What the solver itself says of the native ``options`` when it sets up
        a one-row program with them (its own type and range checks), or None if
        it takes them. Not a solve of the user's program, and no adapter's
        :meth:`solve`; by default None (nothing checked)."""
        return None

    @classmethod
    def tightened(cls, native: Mapping[str, Any]) -> dict[str, Any]:
        """``native`` options with the tolerances (portable ``eps``) at most
        ``tight_eps``: the settings of a second, tighter solve."""
        out = dict(native)
        for target in cls.portable_options.get("eps", ()):
            out[target] = min(float(out.get(target, np.inf)), cls.tight_eps)
        return out

    @classmethod
    def for_refinement(cls, native: Mapping[str, Any], nnz: int) -> dict[str, Any]:
        """``native`` options for a solve that refinement will polish: the
        tolerances (portable ``eps``) at ``refining_eps`` on a program with fewer
        than ``refining_max_nnz`` stored entries of A, unless ``native`` sets
        any of them; otherwise ``native`` as it is."""
        targets = cls.portable_options.get("eps", ())
        if (cls.refining_eps is None or nnz >= cls.refining_max_nnz
                or any(t in native for t in targets)):
            return dict(native)
        return {**native, **dict.fromkeys(targets, cls.refining_eps)}

    def solving(self, prepared: Any, options: Mapping[str, Any],
                seed: Callable[[], tuple[CSC, FloatArray, FloatArray]]) -> ItemSolve:
        """The solve of one call's items: ``(A, b, c) -> RawSolution``, safe to
        call from several threads. ``seed`` gives an item of the call (its first)
        for adapters that set a solver up once per thread and update its data
        for each item (:class:`~conelayers._solvers.clarabel.ClarabelSolver`);
        the answer to an item must not depend on which others a thread solved
        before it. By default every item is solved afresh (:meth:`solve`)."""
        return lambda A, b, c: self.solve(prepared, A, b, c, options)

    @abc.abstractmethod
    def prepare(self, layout: ConeLayout, n: int,
                pattern: tuple[IntArray, IntArray] | None = None) -> Any:
        """Everything about the solver's input that depends only on the structure.

        Called once per program (at its first solve); the result is passed to
        every :meth:`solve`. ``pattern``: A's CSC pattern ``(indices, indptr)``
        where known (None: any). Must not depend on A, b, c values.
        """

    @abc.abstractmethod
    def solve(
        self,
        prepared: Any,
        A: CSC,
        b: FloatArray,
        c: FloatArray,
        options: Mapping[str, Any],
    ) -> RawSolution:
        """Solve min cᵀx s.t. Ax + s = b, s ∈ K for one item.

        ``A`` is ``(m, n)`` CSC with sorted indices; ``options`` come from
        :meth:`translate_options`. Must not modify ``A``, ``b`` or ``c``. Never
        raises for a failed solve: the failure is the returned status.
        """


def finite_or_failed(raw: RawSolution) -> RawSolution:
    """Downgrade an 'ok' answer that contains NaN or inf to a numerical error."""
    if raw.status.ok and not (
        np.all(np.isfinite(raw.x)) and np.all(np.isfinite(raw.y)) and np.all(np.isfinite(raw.s))
    ):
        return RawSolution(raw.x, raw.y, raw.s, Status.numerical_error, raw.iterations,
                           raw.solve_time)
    return raw


def _check_portable(key: str, value: Any) -> None:
    """Reject a bad value of a portable option before any solve: the solvers'
    own checks came at solve time as a bare ``TypeError`` naming their
    internal argument (``'tol_gap_abs'``, "argument 11"), and Clarabel took
    ``eps=-1`` silently, reporting its solves optimal."""
    if key == "eps":
        ok = (isinstance(value, numbers.Real) and not isinstance(value, bool | np.bool_)
              and math.isfinite(value) and float(value) > 0)
        expected = "a positive finite number (the solver's tolerance), e.g. 1e-8"
    elif key == "max_iters":
        ok = (isinstance(value, numbers.Integral) and not isinstance(value, bool | np.bool_)
              and 1 <= int(value) <= _MAX_ITERS_LIMIT)
        expected = (f"a positive integer (the most solver iterations) up to "
                    f"{_MAX_ITERS_LIMIT:,}, e.g. 10000")
    else:  # verbose
        ok = isinstance(value, bool | np.bool_)
        expected = "True or False"
    if not ok:
        raise ParameterError(
            f"`solver_args[{key!r}]` must be {expected}; got {value!r} "
            f"({type(value).__name__})."
        )


def _same_value(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except Exception:  # (an array compared with a number, say)
        return False


# Native option values the solver was seen to take: (solver, name, repr of the value).
_TAKEN: set[tuple[str, str, str]] = set()


def _check_native(cls: type[AbstractSolver], key: str, value: Any) -> None:
    """Reject a native option value the solver refuses, before any solve (its
    own message, with the option's name): without this check the solver raised
    at the first solve, e.g. SCS's "'str' object cannot be interpreted as an
    integer" or Clarabel's "Bad settings: Bad value for field ...". Asked once
    per value (a one-row set-up or, for ECOS, solve: 0.06–0.1 ms)."""
    memo = (cls.name, key, repr(value))
    if memo in _TAKEN:
        return
    bounds = cls.ranges.get(key)
    # (A value of another type is the solver's to refuse, below, with its own words.)
    numeric = isinstance(value, numbers.Real) and not isinstance(value, bool | np.bool_)
    if bounds is not None and numeric and not bounds.admits(value):
        raise ParameterError(
            f"`solver_args[{key!r}]` must be {bounds} for {cls.name}; got {value!r} "
            f"({type(value).__name__}). {cls.name} itself takes such a value and then "
            "fails, or stops at once, in every solve."
        )
    refusal = cls.refusal({**cls.defaults, key: value})
    if refusal is not None:
        raise ParameterError(
            f"`solver_args[{key!r}]` = {value!r} is refused by {cls.name}: {refusal}. "
            f"Pass a value {cls.name}'s settings accept for {key!r}."
        )
    _TAKEN.add(memo)
