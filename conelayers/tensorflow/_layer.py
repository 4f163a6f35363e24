"""TensorFlow glue around the NumPy core: eager, ``tf.function`` and Keras.

The solve runs in a ``tf.numpy_function`` (so it works inside graphs, with
unknown batch sizes); ``tf.custom_gradient`` registers the core's adjoint as
the gradient. The backward pass needs the forward pass's Solution (with its
factorizations): graphs cannot carry a Python object from one op to another,
so the forward op returns a key into a small registry of pending solutions,
and the backward op takes it from there. The last solution differentiated
stays at hand until the next forward pass, so that more derivatives of the
same pass reuse it and its factorization: ``tape.jacobian``'s rows, a
persistent tape asked twice, the JVP ``ForwardAccumulator`` asks for right
after the forward pass. If the entry is gone (more than ``_PENDING``
forward passes without a backward, or a forward pass in between), the
derivative re-solves from the inputs, which gives the same solution.

Forward mode: the solve is recorded with a forward function, the core's JVP,
which ``tf.autodiff.ForwardAccumulator`` calls directly (see ``_recorded``).
The gradient op is recorded likewise (``_vjp``): its derivatives along the
cotangent are the JVP, and along the parameters, second derivatives, refused.
"""

from __future__ import annotations

import itertools
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from tensorflow.python.eager import record  # what tf.custom_gradient records with
from tensorflow.python.ops import control_flow_util  # what tf.function's XLA context uses
from tensorflow.python.saved_model import save_context  # set while a SavedModel is traced

from .. import _layer as core
from .._errors import (
    ParameterError,
    describe_keras_config,
    describe_saved_model,
    describe_second_order,
    describe_vectorized_map,
    describe_xla,
)
from .._program import ParameterSpec
from .._solve import Solution
from .._validate import (
    as_real_array,
    check_shapes,
    check_tensor_dtype,
    check_uniform,
    describe_parameter,
)

__all__ = ["CvxpyLayer", "KerasCvxpyLayer"]

_PENDING = 32  # forward passes whose solution waits for a backward pass
# The name scope TensorFlow's pfor (tf.vectorized_map) traces its function in
# (tensorflow/python/ops/parallel_for/control_flow_ops.py, `_pfor_impl`).
_PFOR_SCOPE = "loop_body"
_EMPTY = -1  # the key of a forward pass over an empty batch (nothing solved)


class CvxpyLayer:
    """A CVXPY problem as a differentiable TensorFlow function.

    Same arguments as :class:`conelayers.CvxpyLayer`; a drop-in for
    cvxpylayers 0.1.x's ``cvxpylayers.tensorflow.CvxpyLayer``. Calling
    ``layer(*params)`` returns a tuple of tensors with the dtype of the inputs
    (float16, bfloat16, float32 or float64; the solve runs in float64), eagerly or inside
    ``tf.function``. With ``return_status=True`` a last element, a string
    tensor of per-item status names (``conelayers.Status[name]``), follows.
    """

    def __init__(self, problem: Any, parameters: Sequence[Any], variables: Sequence[Any],
                 # (the PyTorch layer's and cvxpylayers' later TensorFlow layer's
                 # positional order; cvxpylayers 0.1's fourth, `gp`, is a bool,
                 # which the solver check refuses with the advice to name it)
                 solver: str | None = None, gp: bool = False, verbose: bool = False,
                 canon_backend: str | None = None,
                 solver_args: Mapping[str, Any] | None = None, *, throw: bool = True,
                 executor: Any = None, chunk_size: int | None = None) -> None:
        self.layer = core.CvxpyLayer(problem, parameters, variables, gp=gp, solver=solver,
                                     solver_args=solver_args, throw=throw, verbose=verbose,
                                     canon_backend=canon_backend, executor=executor,
                                     chunk_size=chunk_size)
        self._pending: OrderedDict[int, Solution] = OrderedDict()
        # The last pass differentiated, (key, solution): held for its further
        # derivatives until the next forward pass (see the module docstring).
        self._recent: tuple[int, Solution] | None = None
        self._keys = itertools.count()
        self._lock = threading.Lock()

    @tf.autograph.experimental.do_not_convert  # plain Python: errors stay ours
    def __call__(self, *params: Any, solver_args: Mapping[str, Any] | None = None,
                 throw: bool | None = None, return_status: bool = False,
                 executor: Any = None) -> tuple[Any, ...]:
        if not tf.executing_eagerly() and control_flow_util.GraphOrParentsInXlaContext(
                tf.compat.v1.get_default_graph()):
            # (XLA's own error comes only when the graph runs: "No registered
            # 'PyFunc' OpKernel for XLA_CPU_JIT devices".)
            raise NotImplementedError(describe_xla())
        if save_context.in_save_context():
            # (The export itself succeeded; only another process failed to run it.)
            raise NotImplementedError(describe_saved_model())
        if not tf.executing_eagerly() and _PFOR_SCOPE in (
                tf.compat.v1.get_default_graph().get_name_scope().split("/")):
            # (tf.vectorized_map traces its function in pfor's "loop_body" scope.)
            raise NotImplementedError(describe_vectorized_map())
        tensors, dtype = _as_tensors(self.layer.program.parameters, params)
        # What can be judged before running (count, static shapes, batch sizes) is
        # judged now, so that even inside tf.function it raises ParameterError.
        check_shapes(self.layer.program.parameters,
                     [None if t.shape.rank is None else tuple(t.shape) for t in tensors],
                     allow_empty=True)
        call = _CallOptions(solver_args, throw, executor)
        # float16 and bfloat16 (Keras' mixed precision) travel as float64, which
        # holds them exactly, and the outputs are rounded once, back to the
        # inputs' dtype (tf.cast's own gradient casts the gradients; a cast to
        # the dtype a tensor has already is the tensor itself).
        carrier = dtype if dtype in (tf.float32, tf.float64) else tf.float64
        outputs, status = _differentiable_solve(
            self, [tf.cast(t, carrier) for t in tensors], carrier, call)
        outputs = [tf.cast(o, dtype) for o in outputs]
        return (*outputs, status) if return_status else tuple(outputs)

    # -- NumPy callbacks (run at execution time, eagerly or inside a graph) ----

    def _solve(self, arrays, call: _CallOptions, throw: bool | None) -> Solution:
        return self.layer.solve(*arrays, solver_args=call.solver_args, throw=throw,
                                executor=call.executor)

    def _forward_np(self, dtype, call, *arrays):
        program = self.layer.program
        if _empty_batch(program.parameters, arrays):
            # A batch of none (a replica's share of a short last batch under a
            # MirroredStrategy, a boolean mask that selects nothing): no outputs,
            # as any TensorFlow op gives; its derivatives are empty or zero.
            return (np.int64(_EMPTY), *[np.zeros((0, *o.shape), dtype=dtype)
                                        for o in program.outputs],
                    np.zeros(0, dtype=object))
        with self._lock:
            # A new pass: the last one differentiated lets its factors go before
            # this one's are made (a training loop holds one step's, as before).
            self._recent = None
        solution = self._solve(arrays, call, call.throw)
        with self._lock:
            key = next(self._keys)
            # A forward pass here cannot tell whether a gradient will follow
            # (inference holds no tape), so only the newest pending solution
            # keeps refinement's factors for it: a training step differentiates
            # the pass it just made, and up to _PENDING passes of inference
            # held 200 KB per item each (sparsemax).
            if self._pending:  # (the older ones have released theirs already)
                next(reversed(self._pending.values())).release_kept_factors()
            self._pending[key] = solution
            while len(self._pending) > _PENDING:
                self._pending.popitem(last=False)
        status = np.array([s.name for s in solution.status], dtype=object)
        return (np.int64(key), *[np.asarray(v, dtype=dtype) for v in solution.values], status)

    def _solution(self, key, arrays, call) -> Solution:
        """The solution of forward pass ``key``: the last one differentiated, a
        pending one, or (gone) the inputs solved again; it becomes the last one
        differentiated."""
        key = int(key)
        with self._lock:
            if self._recent is not None and self._recent[0] == key:
                return self._recent[1]
            solution = self._pending.pop(key, None)
        if solution is None:
            solution = self._solve(arrays, call, False)
        with self._lock:
            self._recent = (key, solution)
        return solution

    def _adjoint_np(self, dtype, n_params, call, key, *args):
        arrays, douts = args[:n_params], args[n_params:]
        if key == _EMPTY:
            return [np.zeros_like(a, dtype=dtype) for a in arrays]
        grads = self._solution(key, arrays, call).adjoint(*douts)
        return [np.asarray(g, dtype=dtype) for g in grads]

    def _derivative_np(self, dtype, n_params, call, key, *args):
        arrays, dparams = args[:n_params], args[n_params:]
        if key == _EMPTY:
            return [np.zeros((0, *o.shape), dtype=dtype) for o in self.layer.program.outputs]
        douts = self._solution(key, arrays, call).derivative(*dparams)
        return [np.asarray(d, dtype=dtype) for d in douts]

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        del state["_pending"], state["_recent"], state["_keys"], state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._pending, self._recent = OrderedDict(), None
        self._keys, self._lock = itertools.count(), threading.Lock()

    def __repr__(self) -> str:
        return f"conelayers.tensorflow.{self.layer!r}"


@dataclass(frozen=True)
class _CallOptions:
    """One call's options, carried to the NumPy callbacks."""

    solver_args: Mapping[str, Any] | None
    throw: bool | None
    executor: Any


def _differentiable_solve(layer: CvxpyLayer, tensors, dtype, call: _CallOptions):
    program = layer.layer.program
    np_dtype = dtype.as_numpy_dtype
    n_params = len(tensors)
    out_shapes = _static_output_shapes(program, tensors)
    status_box: list[tf.Tensor] = []
    grad_box: list[Any] = []

    @tf.custom_gradient
    def solve(*xs):
        key, *outs, status = tf.numpy_function(
            lambda *a: layer._forward_np(np_dtype, call, *a), list(xs),
            [tf.int64] + [dtype] * len(program.outputs) + [tf.string], stateful=True)
        for out, shape in zip(outs, out_shapes, strict=True):
            out.set_shape(shape)
        status.set_shape(tf.TensorShape([out_shapes[0][0]]) if out_shapes and
                         out_shapes[0].rank and _batched(program, tensors) else [None])
        status_box.append(status)

        def grad(*douts):
            # (A `tf.gather` of an output sends its cotangent as IndexedSlices,
            # which numpy_function does not take: made dense.)
            douts = [tf.zeros_like(o) if d is None else tf.cast(tf.convert_to_tensor(d), dtype)
                     for o, d in zip(outs, douts, strict=True)]
            return _vjp(layer, key, xs, douts, dtype, n_params, call)

        def forward(*tangents):  # the JVP, for forward accumulators
            return _jvp_op(layer, call, key, xs, tangents, dtype, outs)

        grad_box.append((grad, forward))
        return outs, grad

    # Tapes and accumulators see _recorded's record only: tf.custom_gradient's
    # own would have accumulators take the JVP by double backward at once (and
    # run it: a numpy_function is stateful). In a graph its gradient still
    # serves tf.gradients and tapes outside the tf.function, by the graph's
    # gradient override, which does not depend on recording.
    with record.stop_recording():
        outputs = solve(*tensors)
    outputs = _recorded(outputs, tensors, *grad_box[0])
    return outputs, status_box[0]


def _recorded(outputs, tensors, grad, forward):
    """The outputs again, recorded with the gradient function and the JVP
    (``forward``), so that a ``ForwardAccumulator`` takes the JVP from the
    core directly, eagerly and inside a ``tf.function``.

    ``tf.custom_gradient`` records no forward function: an accumulator then
    differentiates the gradient function with respect to its cotangent (the
    double-backward trick), which needed the VJP op to have the JVP as its
    gradient, and that gradient was also what a nested tape (a second
    derivative) got, finite and wrong (see ``_vjp``).

    In a graph, ``tf.custom_gradient`` passes its outputs and inputs through one
    ``IdentityN`` op, which an accumulator differentiates as an identity before
    the custom gradient is recorded; the solve's outputs come from a
    ``numpy_function``, which has no derivative, so they get zero tangents there,
    and an accumulator keeps the first tangent it gets. Every JVP inside a
    ``tf.function`` was zero. Made here under a stopped tape and recorded with the
    same gradient function (what ``tf.custom_gradient`` does, through TensorFlow's
    own ``record`` module: no public API records an operation), these outputs
    get the accumulator's JVP; tapes get the same gradient as before, and graph
    gradients (``tf.gradients``, a tape outside the ``tf.function``) go through
    the identity to the custom gradient."""
    with record.stop_recording():
        fresh = [tf.identity(o) for o in outputs]
    record.record_operation("conelayers_solve", fresh, list(tensors),
                            lambda *douts: list(grad(*douts)),
                            forward_function=lambda *tangents: forward(*tangents))
    return fresh


def _vjp(layer, key, xs, douts, dtype, n_params, call):
    """The gradients for cotangents ``douts``: the core's VJP, an op of the
    cotangents *and* the parameters. Its own derivatives are first derivatives
    of the layer only along the cotangent (the VJP is linear in it: J t); along
    the parameters they are second derivatives, which the layer does not
    provide, and they raise (:func:`_second_order`). The parameters were
    captured before, not inputs: a nested tape's second derivative came back as
    its part through the cotangent alone, finite and wrong (found by a probe:
    a projection onto the unit ball, HVP [0.098, -0.020, -0.180] against
    [-0.037, -0.186, 0.038]), and forward-over-reverse inside a tf.function as
    zeros."""
    np_dtype = dtype.as_numpy_dtype
    n_outs = len(douts)

    def adjoint(cotangents):
        grads = _as_list(tf.numpy_function(
            lambda *a: layer._adjoint_np(np_dtype, n_params, call, *a),
            [key, *xs, *cotangents], [dtype] * n_params, stateful=True))
        for g, x in zip(grads, xs, strict=True):
            g.set_shape(x.shape)
        return grads

    # Which parameters a tape recording this op watches: only along those can a
    # derivative of the VJP be asked for. An eager backward function computes
    # every input's gradient, and the refusal ran where the outer tape asked
    # only for the cotangent's (d⟨t, VJP(w)⟩/dw = J t, a first derivative;
    # found by a probe); in a graph it is pruned where unused.
    watched = [record.should_record_backprop([x]) for x in xs]

    def backward(*upstream):  # d⟨w, VJP(u)⟩/du = J w; along the parameters: refused
        upstream = [tf.zeros_like(x) if w is None else w for x, w in zip(xs, upstream,
                                                                          strict=True)]
        return [*_jvp_op(layer, call, key, xs, upstream, dtype, douts),
                *(_second_order(w, x) if seen else None
                  for w, x, seen in zip(upstream, xs, watched, strict=True))]

    def forward(*tangents):  # the VJP's tangent: VJP(du), plus a refusal along dθ
        du = [tf.zeros_like(d) if t is None else t for d, t in zip(douts, tangents[:n_outs],
                                                                    strict=True)]
        grads = adjoint(du)
        dtheta = [t for t in tangents[n_outs:] if t is not None]
        return [g + tf.add_n([_second_order(t, g) for t in dtheta]) if dtheta else g
                for g in grads]

    @tf.custom_gradient
    def vjp(*args):  # (in a graph, its gradient serves tf.gradients)
        return adjoint(args[:n_outs]), backward

    with record.stop_recording():
        grads = vjp(*douts, *xs)
        fresh = [tf.identity(g) for g in grads]
    record.record_operation("conelayers_vjp", fresh, [*douts, *xs],
                            lambda *upstream: backward(*upstream),
                            forward_function=lambda *tangents: forward(*tangents))
    return fresh


def _jvp_op(layer, call, key, xs, tangents, dtype, likes) -> list[tf.Tensor]:
    """The core's JVP at forward pass ``key`` as an op: parameter tangents
    (None = 0) → output tangents, shaped like ``likes`` (the outputs)."""
    tangents = [tf.zeros_like(x) if t is None else tf.cast(t, dtype)
                for x, t in zip(xs, tangents, strict=True)]
    np_dtype, n_params = dtype.as_numpy_dtype, len(xs)
    douts = _as_list(tf.numpy_function(
        lambda *a: layer._derivative_np(np_dtype, n_params, call, *a),
        [key, *xs, *tangents], [dtype] * len(likes), stateful=True))
    for d, like in zip(douts, likes, strict=True):
        d.set_shape(like.shape)
    return douts


def _second_order(direction: tf.Tensor, like: tf.Tensor) -> tf.Tensor:
    """Zeros like ``like`` where ``direction`` (a tangent or upstream gradient
    along the parameters) is zero; else it raises, when it runs, that second
    derivatives are not provided. (Not stateful: a graph runs it only where a
    result needs it.)"""
    out = tf.numpy_function(_zeros_unless_second_order, [direction, like], like.dtype,
                            stateful=False)
    out.set_shape(like.shape)
    return out


def _zeros_unless_second_order(direction: np.ndarray, like: np.ndarray) -> np.ndarray:
    if np.any(direction):
        raise NotImplementedError(describe_second_order("TensorFlow"))
    return np.zeros_like(like)


def _as_list(result: Any) -> list[tf.Tensor]:
    """``tf.numpy_function`` returns a bare tensor when ``Tout`` has one entry."""
    return list(result) if isinstance(result, (list, tuple)) else [result]


def _empty_batch(specs: Sequence[ParameterSpec], arrays: Sequence[np.ndarray]) -> bool:
    """Whether the values carry a batch axis, and it is empty (sizes that
    disagree are the core's to report)."""
    sizes = [np.shape(a)[0] for a, spec in zip(arrays, specs, strict=False)
             if np.ndim(a) == len(spec.shape) + 1]
    return bool(sizes) and all(b == 0 for b in sizes)


def _batched(program, tensors) -> bool:
    return any(t.shape.rank is not None and t.shape.rank == len(spec.shape) + 1
               for spec, t in zip(program.parameters, tensors, strict=False))


def _static_output_shapes(program, tensors) -> list[tf.TensorShape]:
    """Output shapes known before running: (B, *shape) or shape; B may be None."""
    if any(t.shape.rank is None for t in tensors):
        return [tf.TensorShape(None) for _ in program.outputs]
    batch = None
    for spec, t in zip(program.parameters, tensors, strict=False):
        if t.shape.rank == len(spec.shape) + 1 and t.shape[0] is not None:
            batch = t.shape[0]
    lead = [batch] if _batched(program, tensors) else []
    return [tf.TensorShape([*lead, *out.shape]) for out in program.outputs]


def _as_tensors(specs: Sequence[ParameterSpec], params: Sequence[Any]
                ) -> tuple[list[tf.Tensor], tf.DType]:
    """Parameters as tensors of one floating dtype.

    Raises ``ParameterError`` for mixed floating dtypes, complex or non-numeric
    tensors, and values the core cannot read as real arrays (its rules and
    messages: ``None``, strings, ...).
    """
    converted = []
    given = []
    for i, p in enumerate(params):
        if isinstance(p, tf.RaggedTensor | tf.SparseTensor):
            raise ParameterError(
                f"{describe_parameter(specs, i)} must be a dense tensor; got a "
                f"{type(p).__name__}. Convert it with "
                f"{'`.to_tensor()`' if isinstance(p, tf.RaggedTensor) else '`tf.sparse.to_dense`'}"
                " first."
            )
        if isinstance(p, tf.Tensor | tf.Variable | keras.Variable):
            # A variable (TensorFlow's, or Keras 3's from `add_weight`, which is
            # not a tf.Variable and was read as a NumPy constant: no gradient) is
            # read into a tensor: the solve is a function of its value
            # (tf.custom_gradient would otherwise ask for its gradient).
            t = tf.convert_to_tensor(p)
            check_tensor_dtype(specs, i, t.dtype.name, complex_=t.dtype.is_complex,
                               numeric=t.dtype.is_floating or t.dtype.is_integer
                               or t.dtype.is_bool)
            converted.append(t)
            if t.dtype.is_floating:
                given.append((i, t.dtype))
        else:
            converted.append(tf.convert_to_tensor(as_real_array(specs, i, p)))
    check_uniform("dtype", [(i, d.name) for i, d in given],
                  "Cast them to one dtype, e.g. with `tf.cast(x, tf.float64)`.")
    dtype = given[0][1] if given else tf.float64
    tensors = [tf.cast(t, dtype) for t in converted]
    return tensors, dtype


class KerasCvxpyLayer(keras.layers.Layer):
    """A Keras 3 layer around :class:`CvxpyLayer`, for models trained with ``fit``.

    ``layer(param)`` or ``layer([p1, p2, ...])`` (the Keras way to pass several
    inputs) returns the single output tensor, or a list of them. Inputs are not
    cast to the layer's compute dtype: float64 stays float64.
    """

    def __init__(self, problem: Any, parameters: Sequence[Any], variables: Sequence[Any], *,
                 gp: bool = False, solver: str | None = None,
                 solver_args: Mapping[str, Any] | None = None, throw: bool = True,
                 executor: Any = None, chunk_size: int | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        self.cvxpy_layer = CvxpyLayer(problem, parameters, variables, gp=gp, solver=solver,
                                      solver_args=solver_args, throw=throw, executor=executor,
                                      chunk_size=chunk_size)

    def get_config(self) -> dict[str, Any]:
        # Keras' own error here would ask the user to implement get_config.
        raise NotImplementedError(describe_keras_config())

    def call(self, inputs: Any) -> Any:
        params = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
        outputs = self.cvxpy_layer(*params)
        return outputs[0] if len(outputs) == 1 else list(outputs)

    def compute_output_spec(self, inputs: Any) -> Any:
        params = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
        program = self.cvxpy_layer.layer.program
        # The batch size from a batched input, the dtype from a floating one
        # (the first input was taken for both: a shared first input gave the
        # model its shape as the batch's, or failed for a scalar).
        # Count and shapes judged when the model is built, not first when fit traces.
        check_shapes(program.parameters, [tuple(p.shape) for p in params], allow_empty=True)
        batched = [p for p, s in zip(params, program.parameters, strict=False)
                   if len(p.shape) == len(s.shape) + 1]
        dtypes = [keras.backend.standardize_dtype(p.dtype) for p in params]
        floating = [d for d in dtypes if "float" in d]
        dtype = floating[0] if floating else "float64"
        lead = (batched[0].shape[0],) if batched else ()
        specs = [keras.KerasTensor((*lead, *o.shape), dtype=dtype) for o in program.outputs]
        return specs[0] if len(specs) == 1 else specs
