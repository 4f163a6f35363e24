"""Exceptions, warnings and the per-item solve status.

Every message a user can see is written here (or built from what is written
here), so that the NumPy core and both front-ends speak with one voice.

Hierarchy::

    ConelayersError
    ├── DPPError          (also ValueError)    problem is not DPP; text is the checker's report
    ├── ParameterError    (also ValueError)    bad parameter values, shapes, options
    ├── SolverError       (also RuntimeError and diffcp.SolverError)  a batch item failed
    └── ExecutorError     (also RuntimeError)  a worker of an executor failed or died

    ConelayersWarning (UserWarning)
    ├── InaccurateSolutionWarning              solver stopped at reduced accuracy
    └── DerivativeWarning                      derivative not unique / ill-conditioned
"""

from __future__ import annotations

import enum
from collections.abc import Sequence

import diffcp

__all__ = [
    "ConelayersError",
    "ConelayersWarning",
    "DPPError",
    "DerivativeWarning",
    "ExecutorError",
    "InaccurateSolutionWarning",
    "ParameterError",
    "SolverError",
    "Status",
]


class Status(enum.Enum):
    """Outcome of solving one batch item.

    The value of each member is the explanation shown to the user, including
    what to do about it. ``Status.optimal`` and ``Status.optimal_inaccurate``
    count as success (:attr:`Status.ok`); every other member marks the item as
    failed: its outputs are NaN when the layer was asked not to raise.
    """

    optimal = "solved to the requested accuracy."
    optimal_inaccurate = (
        "solved, but only to reduced accuracy. The values and gradients of this "
        "item are less precise than usual; tighten the solver tolerances or "
        "raise its iteration limit (see `solver_args`)."
    )
    infeasible = (
        "the problem is infeasible for these parameter values (no point satisfies "
        "all constraints). Check the parameter values of this item, or relax the "
        "constraints (for example with a penalized slack variable)."
    )
    unbounded = (
        "the problem is unbounded for these parameter values (the objective can "
        "be improved without limit). Add bounds on the variables or check the "
        "parameter values of this item."
    )
    infeasible_inaccurate = (
        "the solver stopped at reduced accuracy with a certificate that the "
        "problem is (probably) infeasible. Check the parameter values of this "
        "item or tighten the solver tolerances."
    )
    unbounded_inaccurate = (
        "the solver stopped at reduced accuracy with a certificate that the "
        "problem is (probably) unbounded. Check the parameter values of this "
        "item or tighten the solver tolerances."
    )
    max_iterations = (
        "the solver reached its iteration or time limit before converging. "
        "Raise the limit (`solver_args={'max_iters': ...}` works for every solver) "
        "or try another solver."
    )
    numerical_error = (
        "the solver stopped because of numerical difficulties. Rescale the "
        "problem data (entries of very different magnitudes are the usual "
        "cause) or try another solver."
    )
    solver_error = (
        "the solver failed without a more specific reason. Try another solver "
        "or check the problem data of this item."
    )

    @property
    def ok(self) -> bool:
        """Whether this status carries a usable solution."""
        return self in (Status.optimal, Status.optimal_inaccurate)

    def __repr__(self) -> str:
        return f"Status.{self.name}"


class ConelayersError(Exception):
    """Base class of every error raised by conelayers."""

    # TensorFlow's AutoGraph re-raises an error met while tracing a tf.function
    # as its own StagingError unless it can rebuild the original type from a
    # message, which it recognises by this very constructor. Keeping it lets a
    # ParameterError raised at trace time reach the user as a ParameterError.
    __init__ = Exception.__init__


class DPPError(ConelayersError, ValueError):
    """The problem does not follow the DPP rules, so it cannot be a layer."""


class ParameterError(ConelayersError, ValueError):
    """An argument (parameter values, options, variables) is invalid."""


class SolverError(ConelayersError, RuntimeError, diffcp.SolverError):
    """One or more batch items could not be solved.

    Subclasses :class:`diffcp.SolverError` so that code written for
    cvxpylayers (which lets diffcp's error escape) keeps catching it.

    Attributes
    ----------
    statuses : tuple of Status
        The status of every item of the batch.
    failed : tuple of int
        The indices of the failed items.
    """

    def __init__(self, message: str, statuses: Sequence[Status] = ()) -> None:
        super().__init__(message)
        self.statuses = tuple(statuses)
        self.failed = tuple(i for i, st in enumerate(self.statuses) if not st.ok)


class ExecutorError(ConelayersError, RuntimeError):
    """A worker of the executor failed or died while holding some batch items.

    Attributes
    ----------
    items : tuple of int
        The batch items whose chunk failed; no partial result is returned.
    """

    def __init__(self, message: str, items: Sequence[int] = ()) -> None:
        super().__init__(message)
        self.items = tuple(items)


class ConelayersWarning(UserWarning):
    """Base class of every warning issued by conelayers."""


class InaccurateSolutionWarning(ConelayersWarning):
    """Some items were solved only to reduced accuracy."""


class DerivativeWarning(ConelayersWarning):
    """The derivative at some items is not unique or is ill-conditioned."""


def describe_failures(statuses: Sequence[Status], solver: str) -> str:
    """Message for a batch in which some items failed (`throw=True`)."""
    failed = [(i, st) for i, st in enumerate(statuses) if not st.ok]
    batch = len(statuses)
    shown = failed[:5]
    lines = [
        f"{len(failed)} of {batch} batch item(s) could not be solved by {solver}:"
    ]
    for i, st in shown:
        lines.append(f"  item {i}: {st.name}")
    if len(failed) > len(shown):
        # Grouped by status: a bare list of the rest hid a different kind of
        # failure among them (found by a probe).
        rest: dict[Status, list[int]] = {}
        for i, st in failed[len(shown):]:
            rest.setdefault(st, []).append(i)
        groups = "; ".join(f"{st.name}: item{'s' if len(items) > 1 else ''} "
                           f"{_first_items(items)}" for st, items in rest.items())
        lines.append(f"  (also failed: {groups})")
    # Each status explained once (it was repeated for every item shown).
    for st in dict.fromkeys(st for _, st in failed):
        lines.append(f"{st.name}: {st.value}")
    lines.append(
        "To keep the other items, pass `throw=False`: failed items then come back "
        "as NaN and `solution.status` tells which ones failed and why."
    )
    return "\n".join(lines)


def _first_items(items: Sequence[int], most: int = 20) -> str:
    shown = ", ".join(str(i) for i in items[:most])
    return shown if len(items) <= most else f"{shown} and {len(items) - most} more"


def describe_inaccurate(indices: Sequence[int], solver: str) -> str:
    """Message of the warning for items solved to reduced accuracy."""
    items = ", ".join(str(i) for i in indices[:10])
    more = "" if len(indices) <= 10 else f" and {len(indices) - 10} more"
    return (
        f"{solver} solved batch item(s) {items}{more} only to reduced accuracy "
        f"(Status.optimal_inaccurate); {Status.optimal_inaccurate.value}"
    )


def describe_second_order(frontend: str) -> str:
    """Message for a request of the solution map's second derivatives."""
    return (
        f"second derivatives of a conelayers layer are not available ({frontend}): the "
        "layer provides first-order derivatives in reverse mode (backward, VJP) and "
        "forward mode (JVP), not derivatives of those. Differentiate the layer once "
        "per pass: no `create_graph=True` through it, no Hessian, no JVP of a gradient."
    )


def describe_warm_start() -> str:
    """Message for cvxpylayers' ``warm_start=True`` (its MOREAU GPU solver only)."""
    return (
        "`warm_start` must be False; got True. conelayers starts every solve at the "
        "solver's own starting point and, by default, refines the answer to rounding "
        "accuracy, where a warm start would not change it (cvxpylayers accepts "
        "warm_start=True only with its MOREAU GPU solver, which conelayers does not have). "
        "Call the layer without warm_start."
    )


def describe_xla() -> str:
    """Message for a TensorFlow layer traced for XLA (``jit_compile=True``)."""
    return (
        "a conelayers layer cannot be compiled by XLA (tf.function(jit_compile=True), "
        "Keras' model.compile(jit_compile=True)): its solve runs NumPy and the solvers' C "
        "code through tf.numpy_function, which XLA has no kernel for. Leave jit_compile "
        "off for the function or model that calls the layer (Keras: model.compile(..., "
        "jit_compile=False)); tf.function without it runs the layer inside the graph."
    )


def describe_saved_model() -> str:
    """Message for a TensorFlow layer traced into a SavedModel (export)."""
    return (
        "a conelayers layer cannot be saved in a SavedModel (tf.saved_model.save, Keras' "
        "model.export): its solve is a tf.numpy_function, a Python callback that the file "
        "does not hold, so the saved model would run only in the process that wrote it "
        "(elsewhere: \"Could not find callback with key=pyfunc_N\"). Save the weights "
        "(model.save_weights) and build the model, layer included, in code where it is "
        "served."
    )


def describe_vectorized_map() -> str:
    """Message for a TensorFlow layer called inside ``tf.vectorized_map``."""
    return (
        "a conelayers layer cannot run inside tf.vectorized_map: TensorFlow's pfor has no "
        "vectorized form of its tf.numpy_function, falls back to a while loop for it, and "
        "gradients through that loop come out zero, silently (a plain tf.custom_gradient "
        "around a numpy_function does the same). Pass the whole batch to the layer "
        "instead: it solves a batch in one call, items on several threads. tf.map_fn "
        "also works, one call per element."
    )


def describe_tracing(frontend: str) -> str:
    """Message for a layer traced into a graph of tensor operations."""
    return (
        f"a conelayers layer cannot be traced into a graph ({frontend}: torch.func.linearize, "
        "make_fx, torch.jit.trace, torch.fx.symbolic_trace): its solve and derivatives run "
        "NumPy and the solvers' C code, which a trace records as constants, so the traced "
        "function would give this "
        "call's answer for every input. Call the layer eagerly instead: torch.func.jvp (or "
        "vmap over jvp, which reuses one factorization) in place of linearize; "
        "torch.compile without fullgraph=True in place of torch.jit.trace."
    )


def describe_keras_config() -> str:
    """Message for saving a model with a KerasCvxpyLayer in Keras' own formats."""
    return (
        "a KerasCvxpyLayer cannot be written to a Keras config (model.save to .keras, "
        "model.get_config, keras.saving): its CVXPY problem, parameters and variables "
        "are Python objects, not config values. Build the model in code and save its "
        "weights instead: model.save_weights('model.weights.h5'), then build the same "
        "model again and call model.load_weights('model.weights.h5')."
    )
