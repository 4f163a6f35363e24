"""The boundary: user values → clean float64 data, and the batching rules.

This is the single definition of batching. Each parameter value either has
the parameter's shape (unbatched: shared by every item) or one extra leading
axis (batched). All batched values must agree on the batch size B ≥ 1; an
unbatched value is broadcast to every item, and its gradient is the sum over
the batch. If no value is batched, B = 1 and outputs carry no batch axis;
if any is, every output has the leading axis (also when B = 1).

Everything here raises :class:`ParameterError` before any solve, with a
message that names the argument, says what was expected and what was received.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._diff import DerivativeMode
from ._errors import ParameterError
from ._program import OutputMap, ParameterSpec, theta_size
from ._solvers import SOLVERS
from ._solvers._base import PORTABLE_OPTIONS
from ._typing import BoolArray, FloatArray

__all__ = [
    "Batch",
    "CallOptions",
    "as_real_array",
    "check_cotangents",
    "check_device_has_data",
    "check_shapes",
    "check_tangents",
    "check_tensor_dtype",
    "check_uniform",
    "check_values",
    "describe_parameter",
    "gradients",
    "split_solver_args",
]

# Options of the layer itself (not of a solver) that `solver_args` may carry.
# `n_jobs_forward`/`n_jobs_backward` are cvxpylayers/diffcp's names for the
# number of threads the batch runs on (default: all cores).
LAYER_OPTIONS = frozenset({"solve_method", "mode", "refine", "n_jobs_forward",
                           "n_jobs_backward"})


@dataclass(frozen=True, eq=False)
class Batch:
    """Validated parameter values of one call.

    Attributes
    ----------
    size : int
        Number of items B.
    batched : tuple of bool
        Per parameter, whether its value carried the batch axis.
    theta : ndarray, shape (B, p)
        θ for every item (log of the values for a geometric program).
    values : tuple of ndarray
        Per parameter, its values flattened column-major: (B, size) if batched,
        (1, size) if not. Kept for the chain rule of ``log``.
    """

    size: int
    batched: tuple[bool, ...]
    theta: FloatArray
    values: tuple[FloatArray, ...]

    @property
    def any_batched(self) -> bool:
        return any(self.batched)


def _describe(spec: ParameterSpec, i: int) -> str:
    return f"`parameters[{i}]` ({spec.name}, shape {spec.shape})"


def _describe_at(specs: Sequence[ParameterSpec], i: int) -> str:
    """:func:`_describe` for a position that may lie past the parameters (a
    call with too many values: the count is checked later, with its own message)."""
    return _describe(specs[i], i) if i < len(specs) else f"`parameters[{i}]`"


def _as_float_array(value: Any, what: str) -> FloatArray:
    if hasattr(value, "detach") or type(value).__module__.startswith(("torch", "tensorflow")):
        raise ParameterError(
            f"{what} is a {type(value).__module__}.{type(value).__name__}; the NumPy layer "
            "takes NumPy arrays. Use `conelayers.torch.CvxpyLayer` or "
            "`conelayers.tensorflow.CvxpyLayer` for tensors, or convert with `.numpy()`."
        )
    if isinstance(value, np.ma.MaskedArray):
        # np.asarray drops the mask and reads the values under it (found by a probe).
        raise ParameterError(
            f"{what} is a masked array; the layer would read the values under its mask. "
            "Pass a plain array: `value.filled(fill)` with the value the masked entries "
            "should take."
        )
    if hasattr(value, "toarray") and hasattr(value, "nnz"):  # scipy.sparse
        raise ParameterError(
            f"{what} must be a dense real numeric array; got a sparse "
            f"{type(value).__name__}. Pass `value.toarray()`."
        )
    try:
        arr = np.asarray(value)
    except Exception as exc:  # ragged lists and the like
        raise ParameterError(f"{what} could not be read as an array: {exc}") from exc
    # (timedelta64 is an np.number too: durations are not parameter values.)
    if arr.dtype == object or arr.dtype.kind == "m" or not (
            np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise ParameterError(
            f"{what} must be a real numeric array; got dtype {arr.dtype} "
            f"({type(value).__name__})."
        )
    if np.iscomplexobj(arr):
        raise _complex_error(what, str(arr.dtype))
    return np.asarray(arr, dtype=np.float64)


def _complex_error(what: str, dtype: str) -> ParameterError:
    return ParameterError(
        f"{what} must be real; got complex dtype {dtype}. conelayers solves real-valued "
        "problems only."
    )


def check_values(specs: Sequence[ParameterSpec], values: Sequence[Any]) -> Batch:
    """Validate parameter values and build θ for the whole batch."""
    _check_count(specs, len(values))
    arrays = [_as_float_array(value, _describe(spec, i))
              for i, (spec, value) in enumerate(zip(specs, values, strict=True))]
    batched = check_shapes(specs, [a.shape for a in arrays])
    sizes = {i: a.shape[0] for i, (a, b) in enumerate(zip(arrays, batched, strict=True)) if b}
    size = next(iter(sizes.values()), 1)

    flats = []
    theta = np.empty((size, theta_size(specs)))
    for i, (spec, arr, is_b) in enumerate(zip(specs, arrays, batched, strict=True)):
        items = arr if is_b else arr[None]
        _check_item_values(spec, items, is_b, _describe(spec, i))
        flat = np.reshape(items, (items.shape[0], -1), order="F")
        flats.append(flat)
        theta[:, spec.offset : spec.offset + spec.size] = np.log(flat) if spec.log else flat
        if spec.raw is not None:
            theta[:, spec.raw : spec.raw + spec.size] = flat
    return Batch(size, tuple(batched), theta, tuple(flats))


def _check_count(specs: Sequence[ParameterSpec], count: int) -> None:
    if count != len(specs):
        names = ", ".join(f"{s.name} {s.shape}" for s in specs)
        raise ParameterError(
            f"expected {len(specs)} parameter value(s), one per parameter in the order "
            f"of `parameters` ({names}); got {count}."
        )


def check_shapes(
    specs: Sequence[ParameterSpec], shapes: Sequence[tuple[int | None, ...] | None],
    allow_empty: bool = False,
) -> list[bool]:
    """The count, shape and batch-size rules; returns which values are batched.

    Also usable before the values exist (graph mode): ``None`` stands for an
    unknown dimension or an unknown shape, and unknowns are not judged. With
    ``allow_empty`` a batch of 0 items passes (the TensorFlow layer's: a
    replica's share of a short last batch under a distribution strategy).
    """
    _check_count(specs, len(shapes))
    batched: list[bool] = []
    sizes: dict[int, int] = {}
    for i, (spec, shape) in enumerate(zip(specs, shapes, strict=True)):
        what = _describe(spec, i)
        if shape is None:
            batched.append(False)
            continue
        shape = tuple(shape)
        fits = lambda got, want: len(got) == len(want) and all(  # noqa: E731
            g is None or g == w for g, w in zip(got, want, strict=True))
        if fits(shape, spec.shape):
            batched.append(False)
        elif len(shape) == len(spec.shape) + 1 and fits(shape[1:], spec.shape):
            if shape[0] == 0 and not allow_empty:
                raise ParameterError(
                    f"{what} has an empty batch (shape {shape}); pass at least one item."
                )
            batched.append(True)
            if shape[0] is not None:
                sizes[i] = shape[0]
        else:
            raise ParameterError(
                f"{what} must have shape {spec.shape}, or (batch_size, "
                f"{', '.join(map(str, spec.shape))}) for a batch; got shape {shape}."
            )
    if len(set(sizes.values())) > 1:
        detail = ", ".join(f"parameters[{i}]: {b}" for i, b in sizes.items())
        raise ParameterError(
            f"batched parameter values disagree on the batch size ({detail}); give every "
            "batched value the same leading dimension, or pass a value without the "
            "batch axis to share it across the batch."
        )
    return batched


def _first_bad(bad: np.ndarray, batched: bool) -> str:
    """'item k' (batched) or '' for the first True in a per-item boolean array."""
    k = int(np.argmax(bad))
    return f" (batch item {k})" if batched else ""


def _first_violation(bad: np.ndarray, items: FloatArray, batched: bool) -> str:
    """Where the first offending entry is and what it holds, e.g.
    ' (batch item 2, got -1.0 at index (1,))', from an entrywise mask of
    ``items`` (shape (B, *shape))."""
    k = int(np.argmax(bad.reshape(bad.shape[0], -1).any(axis=1)))
    where = [f"batch item {k}"] if batched else []
    if items.ndim == 1:  # a scalar parameter
        where.append(f"got {float(items[k])!r}")
    else:
        index = tuple(int(i) for i in np.argwhere(bad[k])[0])
        where.append(f"got {float(items[k][index])!r} at index {index}")
    return f" ({', '.join(where)})"


def _check_item_values(spec: ParameterSpec, items: FloatArray, batched: bool, what: str) -> None:
    """Finiteness and the parameter's declared attributes, per item."""
    nonfinite = ~np.isfinite(items)
    if nonfinite.any():
        raise ParameterError(
            f"{what} contains NaN or inf{_first_violation(nonfinite, items, batched)}; pass "
            "finite values."
        )
    sign_rules = {
        "nonneg": (lambda v: v >= 0, "nonnegative (nonneg=True)"),
        "pos": (lambda v: v > 0, "positive (pos=True)"),
        "nonpos": (lambda v: v <= 0, "nonpositive (nonpos=True)"),
        "neg": (lambda v: v < 0, "negative (neg=True)"),
    }
    for name in spec.checks:
        if name in sign_rules:
            rule, words = sign_rules[name]
            bad = ~rule(items)
            if bad.any():
                raise ParameterError(
                    f"{what} is declared {words} but a value violates it"
                    f"{_first_violation(bad, items, batched)}; pass values that satisfy "
                    "the attribute."
                )
    if spec.log:
        bad = ~(items > 0)
        if bad.any():
            raise ParameterError(
                f"{what} belongs to a geometric program (gp=True), so its values must be "
                f"positive; got a value <= 0{_first_violation(bad, items, batched)}."
            )
    if {"symmetric", "PSD", "NSD"} & set(spec.checks):
        # Relative to the item's own scale (an absolute floor of 1 passed
        # diag(1e-9, -1e-9) as PSD; found by a probe).
        scale = np.abs(items).max(axis=(1, 2))
        asym = np.abs(items - np.swapaxes(items, 1, 2)).max(axis=(1, 2))
        bad = asym > 1e-8 * scale
        if bad.any():
            raise ParameterError(
                f"{what} is declared symmetric but its value is not{_first_bad(bad, batched)} "
                f"(max |V - Vᵀ| = {asym.max():.2e}); pass a symmetric matrix, e.g. (V + V.T)/2."
            )
        for name, sign, word in (("PSD", 1.0, "positive"), ("NSD", -1.0, "negative")):
            if name in spec.checks:
                lam = np.linalg.eigvalsh(sign * (items + np.swapaxes(items, 1, 2)) / 2)[:, 0]
                bad = lam < -1e-8 * scale
                if bad.any():
                    raise ParameterError(
                        f"{what} is declared {name} but its value is not {word} semidefinite"
                        f"{_first_bad(bad, batched)} (extreme eigenvalue {sign * lam.min():.2e})."
                    )
    if spec.mask is not None:
        outside = np.where(spec.mask, 0.0, items) != 0
        if outside.any():
            kind = "diagonal (diag=True)" if "diag" in spec.checks else "sparse (sparsity=...)"
            raise ParameterError(
                f"{what} is declared {kind} but has nonzeros outside its pattern"
                f"{_first_violation(outside, items, batched)}; set those entries to zero."
            )
    if {"integer", "boolean"} & set(spec.checks):
        bad = items != np.round(items)
        kind = "integer (integer=True)"
        if "boolean" in spec.checks:
            bad |= (items != 0) & (items != 1)
            kind = "boolean (boolean=True)"
        if bad.any():
            raise ParameterError(
                f"{what} is declared {kind} but a value is not"
                f"{_first_violation(bad, items, batched)}; pass "
                f"{'0 or 1' if 'boolean' in spec.checks else 'whole numbers'}."
            )


def gradients(
    specs: Sequence[ParameterSpec], batch: Batch, dtheta: FloatArray
) -> tuple[FloatArray, ...]:
    """Adjoint of :func:`check_values`: dθ (B, p) → one gradient per parameter.

    Each gradient has the shape of the value that was passed; an unbatched
    value's gradient is summed over the batch.
    """
    grads = []
    for spec, is_b, flat in zip(specs, batch.batched, batch.values, strict=True):
        g = dtheta[:, spec.offset : spec.offset + spec.size]
        if spec.log:  # θ = log V  ⇒  dV = dθ / V
            g = g / flat
        if spec.raw is not None:  # (and its segment of V itself)
            g = g + dtheta[:, spec.raw : spec.raw + spec.size]
        if is_b:
            grads.append(np.reshape(g, (batch.size, *spec.shape), order="F"))
        else:
            grads.append(np.reshape(g.sum(axis=0), spec.shape, order="F"))
    return tuple(grads)


def check_tangents(
    specs: Sequence[ParameterSpec], batch: Batch, dparams: Sequence[Any]
) -> FloatArray:
    """Tangents of the parameter values (shaped like the values; None = 0) → dθ (B, p)."""
    if len(dparams) != len(specs):
        raise ParameterError(
            f"expected {len(specs)} parameter tangent(s), one per parameter; got {len(dparams)}."
        )
    dtheta = np.zeros((batch.size, theta_size(specs)))
    for i, (spec, is_b, flat, d) in enumerate(
        zip(specs, batch.batched, batch.values, dparams, strict=True)
    ):
        if d is None:
            continue
        what = f"tangent of {_describe(spec, i)}"
        arr = _as_float_array(d, what)
        expected = (batch.size, *spec.shape) if is_b else spec.shape
        if arr.shape != expected:
            raise ParameterError(
                f"{what} must have the shape of the value passed, {expected}; got {arr.shape}."
            )
        if not np.isfinite(arr).all():
            # (Else every output of the item came back NaN, blamed on the
            # derivative's solve; found by a probe.)
            raise ParameterError(f"{what} contains NaN or inf; pass finite values.")
        g = np.reshape(arr, (batch.size if is_b else 1, -1), order="F")
        if spec.raw is not None:
            dtheta[:, spec.raw : spec.raw + spec.size] = g
        if spec.log:
            g = g / flat
        dtheta[:, spec.offset : spec.offset + spec.size] = g
    return dtheta


def check_cotangents(
    outputs: Sequence[OutputMap], batch: Batch, dvars: Sequence[Any],
    failed: BoolArray | None = None,
) -> tuple[FloatArray | None, ...]:
    """Cotangents of the outputs (shaped like the outputs; None = 0) → (B, *shape).

    The rows of ``failed`` items are read as zero, whatever they hold: those
    items contribute nothing, and their outputs are NaN, so that a loss masked
    after it was formed (``where(ok, loss, 0)``) sends them 0·NaN = NaN, which
    stopped the backward pass of the whole batch (found by a probe)."""
    if len(dvars) != len(outputs):
        raise ParameterError(
            f"expected {len(outputs)} output cotangent(s), one per requested variable; "
            f"got {len(dvars)}."
        )
    result: list[FloatArray | None] = []
    for k, (out, d) in enumerate(zip(outputs, dvars, strict=True)):
        if d is None:
            result.append(None)
            continue
        what = f"cotangent of output {k} ({out.name})"
        arr = _as_float_array(d, what)
        expected = (batch.size, *out.shape) if batch.any_batched else out.shape
        if arr.shape != expected:
            raise ParameterError(f"{what} must have shape {expected}; got {arr.shape}.")
        arr = arr if batch.any_batched else arr[None]
        if failed is not None and failed.any():
            arr = arr.copy()  # (the caller's array is not touched)
            arr[failed] = 0.0
        if not np.isfinite(arr).all():
            raise ParameterError(f"{what} contains NaN or inf; pass finite values.")
        result.append(arr)
    return tuple(result)


def describe_parameter(specs: Sequence[ParameterSpec], index: int) -> str:
    """Front-ends: how messages name parameter ``index`` (its position, name, shape)."""
    return _describe_at(specs, index)


def as_real_array(specs: Sequence[ParameterSpec], index: int, value: Any) -> FloatArray:
    """Front-ends: a value that is not one of their tensors (a NumPy array, a
    number, anything else), read by the core's rules, as float64."""
    return _as_float_array(value, _describe_at(specs, index))


def check_tensor_dtype(specs: Sequence[ParameterSpec], index: int, dtype: str, *,
                       numeric: bool, complex_: bool) -> None:
    """Front-ends: a tensor argument must hold real numbers (``dtype`` is its
    dtype's name, for the message)."""
    what = _describe_at(specs, index)
    if complex_:
        raise _complex_error(what, dtype)
    if not numeric:
        raise ParameterError(f"{what} must be a real numeric tensor; got dtype {dtype}.")


def check_device_has_data(specs: Sequence[ParameterSpec], i: int, device: str,
                          shape: tuple[int, ...]) -> None:
    """Front-ends: a tensor on PyTorch's ``meta`` device has a shape and no
    values (its own error, "Cannot copy out of meta tensor", named no argument)."""
    if device == "meta":
        raise ParameterError(
            f"{_describe_at(specs, i)} is a tensor on the 'meta' device, which holds a shape "
            f"but no values, and the layer solves with values; got a meta tensor of shape "
            f"{shape}. Pass tensors with data (on the CPU or a GPU)."
        )


def check_uniform(attribute: str, values: Sequence[tuple[int, str]], advice: str) -> None:
    """Front-ends: every tensor argument must agree on ``attribute`` (dtype, device).

    ``values`` lists ``(parameter index, value)`` for the tensor arguments.
    """
    distinct = sorted({v for _, v in values})
    if len(distinct) > 1:
        detail = ", ".join(f"parameters[{i}]: {v}" for i, v in values)
        raise ParameterError(
            f"the parameter tensors must all have the same {attribute}; got {detail}. "
            f"{advice}"
        )


@dataclass(frozen=True)
class CallOptions:
    """``solver_args`` split into the layer's own options and the solver's.

    ``None`` means "not given" (the constructor's value or the default applies).
    ``native``: the solver options of each level that applies (the
    constructor's, the call's), lowest priority first. They stay apart until
    the solver translates them (``AbstractSolver.translate_options``): a
    call's ``max_iter`` must override the constructor's ``max_iters``, which
    only the solver knows to be the same option.
    """

    solver: str | None = None
    mode: DerivativeMode | None = None
    refine: int | None = None
    native: tuple[Mapping[str, Any], ...] = ()
    jobs_forward: int | None = None
    jobs_backward: int | None = None

    def over(self, defaults: CallOptions) -> CallOptions:
        """These options on top of ``defaults``. Where the two name different
        solvers, only the defaults' portable options (``eps``, ``max_iters``,
        ``verbose``: every solver has them) carry over; another solver's own
        options mean nothing to this one."""
        same = self.solver is None or (
            defaults.solver is not None and self.solver.upper() == defaults.solver.upper()
        )
        inherited = defaults.native if same else tuple(
            portable for level in defaults.native
            if (portable := {k: v for k, v in level.items() if k in PORTABLE_OPTIONS}))
        native = inherited + self.native

        def pick(name: str) -> Any:
            mine = getattr(self, name)
            return mine if mine is not None else getattr(defaults, name)

        return CallOptions(pick("solver"), pick("mode"), pick("refine"), native,
                           pick("jobs_forward"), pick("jobs_backward"))


def split_solver_args(solver_args: Mapping[str, Any] | None) -> CallOptions:
    """Read ``solver_args``: layer options (``solve_method``, ``mode``,
    ``refine``, cvxpylayers' ``n_jobs_*``) and the rest, for the solver."""
    if solver_args is None:
        return CallOptions()
    if not isinstance(solver_args, Mapping):
        raise ParameterError(
            f"`solver_args` must be a dict of options; got {type(solver_args).__name__}."
        )
    options = dict(solver_args)
    name = options.pop("solve_method", None)
    if name is not None and (not isinstance(name, str) or name.upper() not in SOLVERS):
        names = ", ".join(cls.name for cls in SOLVERS.values())
        raise ParameterError(
            f"`solver_args['solve_method']` must be the name of a solver conelayers has "
            f"(one of {names}); got {name!r}."
        )
    mode = options.pop("mode", None)
    refine = _integer_or_none(options.pop("refine", None))
    if refine is _NOT_INTEGER or (refine is not None and refine < 0):
        raise ParameterError(
            f"`solver_args['refine']` must be a nonnegative integer (the most Newton "
            f"refinement steps; 0 turns refinement off); got {solver_args['refine']!r}."
        )
    jobs = []
    for key in ("n_jobs_forward", "n_jobs_backward"):
        value = _integer_or_none(options.pop(key, None))
        if value is _NOT_INTEGER or (value is not None and (value == 0 or value < -1)):
            raise ParameterError(
                f"`solver_args['{key}']` must be a positive number of threads, or -1 for "
                f"all cores; got {solver_args[key]!r}."
            )
        jobs.append(value)
    return CallOptions(
        name, None if mode is None else DerivativeMode.parse(mode, "`solver_args['mode']`"),
        refine, (options,) if options else (), jobs[0], jobs[1])


_NOT_INTEGER: Any = object()


def _integer_or_none(value: Any) -> Any:
    """``value`` as a Python int (NumPy integers included, as the portable
    ``max_iters`` takes them), None for None, else ``_NOT_INTEGER`` (bools
    too: ``refine=True`` is a mistake, not a count)."""
    if value is None:
        return None
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Integral):
        return _NOT_INTEGER
    return int(value)
