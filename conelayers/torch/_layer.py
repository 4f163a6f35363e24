"""``torch.nn.Module`` glue around the NumPy core.

The core solves and differentiates; this module converts tensors to float64
arrays and back (dtype and device of the inputs), registers the derivatives
with autograd (``backward`` = the core's adjoint, ``jvp`` = its derivative,
so reverse mode, ``torch.autograd.forward_ad`` and ``torch.func.jvp`` work),
gives ``torch.func.vmap`` a rule (mapped calls join the core's batch, see
``_Join``), and nothing else: batching, shapes and messages stay the core's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.fx
from torch.autograd import forward_ad
from torch.fx.experimental.proxy_tensor import get_proxy_mode  # make_fx's tracing mode

from .. import _layer as core
from .._errors import ParameterError, describe_second_order, describe_tracing, describe_warm_start
from .._program import ParameterSpec
from .._solve import Solution
from .._validate import (
    as_real_array,
    check_device_has_data,
    check_shapes,
    check_tensor_dtype,
    check_uniform,
)

__all__ = ["CvxpyLayer"]

_COMPILE_REASON = ("a conelayers layer runs eagerly under torch.compile (its solve is NumPy "
                   "and C code): compile without fullgraph=True, and the rest of the model "
                   "is still compiled around it")


class CvxpyLayer(torch.nn.Module):
    """A CVXPY problem as a differentiable PyTorch layer.

    Same arguments as :class:`conelayers.CvxpyLayer` (plus cvxpylayers'
    ``verbose`` and ``canon_backend``); a drop-in for
    ``cvxpylayers.torch.CvxpyLayer``. Calling ``layer(*params)`` returns a
    tuple of tensors, one per requested output, with the dtype and device of
    the inputs (the solve runs in float64 on the CPU). NumPy arrays and Python
    numbers are accepted as parameter values and converted.
    """

    def __init__(
        self,
        problem: Any,
        parameters: Sequence[Any],
        variables: Sequence[Any],
        # (cvxpylayers 1.2's positional order, for code that passes them so)
        solver: str | None = None,
        gp: bool = False,
        verbose: bool = False,
        canon_backend: str | None = None,
        solver_args: Mapping[str, Any] | None = None,
        *,
        throw: bool = True,
        executor: Any = None,
        chunk_size: int | None = None,
    ) -> None:
        super().__init__()
        self.layer = core.CvxpyLayer(problem, parameters, variables, gp=gp, solver=solver,
                                     solver_args=solver_args, throw=throw, verbose=verbose,
                                     canon_backend=canon_backend, executor=executor,
                                     chunk_size=chunk_size)

    # torch.compile runs the layer eagerly (a graph break): the solve is NumPy
    # and the solvers' C code, nothing Dynamo can put in a graph. Traced into,
    # it graph-broke inside the core on every call and recompiled on every new
    # value (sparsemax n = 5, B = 4: 30 s to the first result, then 1.0-1.4 s
    # per forward + backward instead of 4 ms); see test_torch_compile.py.
    @torch.compiler.disable(reason=_COMPILE_REASON)
    def forward(
        self,
        *params: Any,
        solver_args: Mapping[str, Any] | None = None,
        throw: bool | None = None,
        return_status: bool = False,
        executor: Any = None,
        warm_start: bool = False,
    ) -> tuple[Any, ...]:
        """``layer(*params) -> tuple of tensors`` (``+ (status,)`` if ``return_status``).

        ``status`` is a tuple of :class:`conelayers.Status`, one per item;
        with ``throw=False`` failed items are NaN and contribute no gradient.
        ``warm_start``: cvxpylayers 1.2's argument, accepted as False (see
        :func:`describe_warm_start`).
        """
        if warm_start:
            raise ParameterError(describe_warm_start())
        tensors, dtype, device = _as_tensors(self.layer.program.parameters, params)
        call = _Call(self.layer, solver_args, throw, executor, dtype, device)
        # Without gradients no factors are kept for a derivative (torch.no_grad()),
        # unless a parameter carries a forward-mode tangent: no_grad leaves
        # forward AD on (its tangent was dropped, silently; found by a probe).
        call.differentiable = torch.is_grad_enabled() or _any_tangent(tensors)
        if call.differentiable or _vmap_level() is not None:  # (torch.func: vmap's rule)
            outputs = _Solve.apply(call, *tensors)
        else:  # forward only: no autograd record at all
            outputs = call.forward(tensors)
        assert call.solution is not None
        return (*outputs, call.solution.status) if return_status else tuple(outputs)

    def extra_repr(self) -> str:
        return repr(self.layer)


class _Call:
    """One call's options and, after the forward pass, its Solution."""

    def __init__(self, layer, solver_args, throw, executor, dtype, device) -> None:
        self.layer, self.solver_args, self.throw = layer, solver_args, throw
        self.executor = executor
        self.dtype, self.device = dtype, device
        self.solution: Solution | None = None
        self.joins: list[_Join] = []  # the vmaps joined into this call's solve
        self.differentiable = True  # whether the solution keeps factors for derivatives

    def join_at(self, size: int, dims: Sequence[int | None], tensors: Sequence[torch.Tensor],
                shapes: Callable[[_Join], list[tuple[int, ...]]]) -> _Join | None:
        """The vmap joined into this call's solve that a vmap rule of its
        derivatives runs under, if any: the same level and size, and the
        mapped tensors shaped as one mapped call's (``shapes``: which). A vmap
        over whole cotangents or tangents of the solve (jacrev's, jacfwd's,
        also of an already joined solve, as in jacrev(vmap(f))) is none of them."""
        level = _vmap_level()
        seen = [None if d is None else tuple(t.shape[:d] + t.shape[d + 1:])
                for t, d in zip(tensors, dims, strict=True)]
        for join in reversed(self.joins):
            if join.level == level and join.size == size and all(
                    got is None or got == want
                    for got, want in zip(seen, shapes(join), strict=True)):
                return join
        return None

    def to_torch(self, arrays) -> tuple[torch.Tensor | None, ...]:
        # Contiguous, as torch's own ops return them: the core's batched outputs
        # and gradients come with the batch axis fastest (x of shape (4, 3) had
        # strides (1, 4)), where `out.view(B, -1)` raises. (Not ascontiguousarray,
        # which makes a 0-d array 1-d.)
        return tuple(None if a is None else
                     torch.as_tensor(np.asarray(a, order="C"), dtype=self.dtype,
                                     device=self.device)
                     for a in arrays)

    def forward(self, tensors: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        arrays = [_numpy(t) for t in tensors]
        self.solution = self.layer._solution(arrays, self.solver_args, self.throw,
                                             self.executor, differentiable=self.differentiable)
        return self.to_torch(self.solution.values)  # type: ignore[return-value]


class _Solve(torch.autograd.Function):
    """The layer as an autograd Function (functorch style, for ``torch.func``).

    Its derivatives are autograd Functions of their own (``_Adjoint``,
    ``_Tangent``): under ``torch.func`` the cotangents and tangents are
    functorch-wrapped tensors without storage, and only a Function's forward
    sees them as plain tensors at every transform level. Both are linear maps
    at one solution, so their own derivatives in the cotangents or tangents
    are each other (``torch.autograd.functional.jvp``, a JVP by double
    backward, works). Their derivatives in the parameters would be second
    derivatives of the solution map, which the layer does not provide. They
    take the parameters as inputs too (unused by the map) so that asking for
    those says that it cannot, where a derivative that depended on the
    parameters only through the solution it holds would have made
    ``torch.func.hessian`` return zeros (:func:`_refuse_asked`,
    :func:`_refuse_parameter_tangents`).
    """

    @staticmethod
    def forward(call: _Call, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return call.forward(tensors)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        ctx.call = inputs[0]
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(*inputs[1:])
        ctx.save_for_forward(*inputs[1:])

    @staticmethod
    def backward(ctx: Any, *grad_outputs: torch.Tensor | None) -> tuple[Any, ...]:
        present = tuple(g is not None for g in grad_outputs)
        if not any(present):
            return (None,) * (1 + len(ctx.call.layer.program.parameters))
        needs = tuple(ctx.needs_input_grad[1:])
        if (torch.is_grad_enabled() or _vmap_level() is not None
                or _any_tangent([g for g in grad_outputs if g is not None])):
            # Recorded (create_graph=True), under torch.func, or cotangents with
            # forward-mode tangents (a Hessian-vector product by forward over
            # reverse, which the Function's jvp refuses, where the plain path
            # dropped those tangents: found by a probe): through the Function.
            grads = _vjp(ctx.call, needs, grad_outputs, ctx.saved_tensors)
        else:  # a plain backward: the same VJP without a Function's ~0.1 ms of dispatch
            it = iter(_Adjoint.forward(ctx.call, present, needs,
                                       *[g for g in grad_outputs if g is not None]))
            grads = [next(it) if need else None for need in needs]
        return (None, *grads)

    @staticmethod
    def jvp(ctx: Any, _call_tangent: Any, *tangents: torch.Tensor | None) -> tuple[Any, ...]:
        return _jvp(ctx.call, tangents, ctx.saved_tensors)

    @staticmethod
    def vmap(info: Any, in_dims: tuple[int | None, ...], call: _Call,
             *tensors: torch.Tensor) -> tuple[tuple[torch.Tensor, ...], tuple[int, ...]]:
        """``torch.func.vmap``: the mapped dimension joins the layer's own batch
        (one solve of every item, see :func:`_join_vmap`)."""
        return _join_vmap(call, info.batch_size, in_dims[1:], tensors)


def _vjp(call: _Call, needs: Sequence[bool], cotangents: Sequence[torch.Tensor | None],
         params: Sequence[torch.Tensor]) -> list[torch.Tensor | None]:
    """The recorded VJP at a call's solution: one gradient per parameter that
    ``needs`` one (None for the others and where every cotangent is None)."""
    present = tuple(g is not None for g in cotangents)
    if not any(present) or not any(needs):
        return [None] * len(needs)
    grads = iter(_Adjoint.apply(call, present, tuple(needs),
                                *[g for g in cotangents if g is not None], *_edges(params)))
    return [next(grads) if need else None for need in needs]


def _jvp(call: _Call, tangents: Sequence[torch.Tensor | None],
         params: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """The recorded JVP at a call's solution: one tangent per output (zeros
    where every parameter tangent is None)."""
    present = tuple(t is not None for t in tangents)
    if not any(present):
        assert call.solution is not None
        return call.to_torch(np.zeros_like(v) for v in call.solution.values)  # type: ignore[return-value]
    return _Tangent.apply(call, present, *[t for t in tangents if t is not None],
                          *_edges(params))


def _edges(params: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """The parameters as inputs of a derivative: views, each a node of its
    own in the graph, which autograd runs only where the derivative's own
    derivative in that parameter is asked for (see :func:`_refuse_asked`)."""
    return [p.view_as(p) for p in params]


def _keep_parameters(ctx: Any, params: Sequence[torch.Tensor]) -> None:
    """A derivative's context: the parameters that follow its vectors
    (unused by the map, there to refuse its own derivatives in them)."""
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(*params)
    ctx.save_for_forward(*params)


def _refuse_asked(params: Sequence[torch.Tensor]) -> None:
    """Reverse mode through a derivative: its derivative in the parameters,
    where the backward pass under way asks for one, would be a second
    derivative. A Function's backward returns the gradients of all its
    inputs that require one, asked for or not (``torch.autograd.functional.
    jvp`` asks only for the cotangents'); whether autograd will run a
    parameter's view (:func:`_edges`) tells. ``_will_engine_execute_node``
    is private, what PyTorch's own ``register_multi_grad_hook`` uses."""
    if any(p.grad_fn is not None and torch._C._will_engine_execute_node(p.grad_fn)  # pyright: ignore[reportAttributeAccessIssue]
           for p in params):
        raise NotImplementedError(describe_second_order("PyTorch"))


def _refuse_parameter_tangents(tangents: Sequence[Any]) -> None:
    """Forward mode through a derivative: tangents of the parameters ask for
    a second derivative (each Function's jvp sees which inputs have one)."""
    if any(t is not None for t in tangents):
        raise NotImplementedError(describe_second_order("PyTorch"))


class _Adjoint(torch.autograd.Function):
    """The core's VJP at the solution of one call: output cotangents (one per
    ``present`` output) → the gradients of the parameters that need one
    (``needs``). The parameters follow the cotangents (see ``_Solve``)."""

    @staticmethod
    def forward(call: _Call, present: tuple[bool, ...], needs: tuple[bool, ...],
                *tensors: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        assert call.solution is not None
        solution = call.solution

        def vjp(cotangents: Sequence[torch.Tensor]) -> tuple[torch.Tensor | None, ...]:
            it = iter(cotangents)
            grads = solution.adjoint(*[_numpy(next(it)) if p else None for p in present])
            return call.to_torch([g for g, need in zip(grads, needs, strict=True) if need])

        return _legacy_vmapped(tensors[: sum(present)], vjp)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        ctx.call, ctx.present, ctx.needs = inputs[:3]
        _keep_parameters(ctx, inputs[3 + sum(ctx.present):])

    @staticmethod
    def backward(ctx: Any, *grads: torch.Tensor | None) -> tuple[Any, ...]:
        """Linear in the cotangents: its adjoint there is the JVP (of
        parameter tangents ``grads``); in the parameters, refused."""
        params = ctx.saved_tensors
        _refuse_asked(params)
        it = iter(grads)
        outputs = _jvp(ctx.call, [next(it) if need else None for need in ctx.needs], params)
        return (None, None, None, *[o for o, p in zip(outputs, ctx.present, strict=True) if p],
                *[None] * len(params))

    @staticmethod
    def jvp(ctx: Any, _call: Any, _present: Any, _needs: Any, *tangents: Any) -> Any:
        """Linear in the cotangents: its JVP there is itself."""
        count = sum(ctx.present)
        _refuse_parameter_tangents(tangents[count:])
        it = iter(tangents[:count])
        grads = _vjp(ctx.call, ctx.needs, [next(it) if p else None for p in ctx.present],
                     ctx.saved_tensors)
        return tuple(g for g, need in zip(grads, ctx.needs, strict=True) if need)

    @staticmethod
    def vmap(info: Any, in_dims: tuple[int | None, ...], call: _Call, present: tuple[bool, ...],
             needs: tuple[bool, ...], *tensors: torch.Tensor) -> Any:
        count = sum(present)
        dims, cotangents = in_dims[3:3 + count], tensors[:count]
        join = call.join_at(info.batch_size, dims, cotangents, lambda j: [
            shape for shape, p in zip(j.outputs, present, strict=True) if p])
        if join is None:
            # Several cotangents of one solution (jacrev, a vectorized
            # jacobian): one VJP each, with the factorization the first builds.
            return _map_slices(info.batch_size, in_dims[3:], tensors,
                               lambda ts: _Adjoint.apply(call, present, needs, *ts))
        # The solution of a vmapped call (vmap of grad: per-sample gradients):
        # its V·B items' cotangents in one VJP, each call's gradients back.
        grads = _Adjoint.apply(call, present, needs,
                               *[join.joined(t, d) for t, d in zip(cotangents, dims, strict=True)],
                               *tensors[count:])
        wanted = [i for i, need in enumerate(needs) if need]
        split = tuple(join.split_gradient(g, i) for g, i in zip(grads, wanted, strict=True))
        return split, (0,) * len(split)


class _Tangent(torch.autograd.Function):
    """The core's JVP at the solution of one call: parameter tangents (one
    per ``present`` parameter) → output tangents. The parameters follow the
    tangents (see ``_Solve``)."""

    @staticmethod
    def forward(call: _Call, present: tuple[bool, ...], *tensors: torch.Tensor
                ) -> tuple[torch.Tensor | None, ...]:
        assert call.solution is not None
        solution = call.solution

        def jvp(tangents: Sequence[torch.Tensor]) -> tuple[torch.Tensor | None, ...]:
            it = iter(tangents)
            return call.to_torch(solution.derivative(
                *[_numpy(next(it)) if p else None for p in present]))

        return _legacy_vmapped(tensors[: sum(present)], jvp)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        ctx.call, ctx.present = inputs[:2]
        _keep_parameters(ctx, inputs[2 + sum(ctx.present):])

    @staticmethod
    def backward(ctx: Any, *cotangents: torch.Tensor | None) -> tuple[Any, ...]:
        """Linear in the tangents: its adjoint there is the VJP (of output
        cotangents); in the parameters, refused."""
        params = ctx.saved_tensors
        _refuse_asked(params)
        grads = _vjp(ctx.call, ctx.present, cotangents, params)
        return (None, None, *[g for g, p in zip(grads, ctx.present, strict=True) if p],
                *[None] * len(params))

    @staticmethod
    def jvp(ctx: Any, _call: Any, _present: Any, *tangents: Any) -> Any:
        """Linear in the tangents: its JVP there is itself."""
        count = sum(ctx.present)
        _refuse_parameter_tangents(tangents[count:])
        it = iter(tangents[:count])
        return _jvp(ctx.call, [next(it) if p else None for p in ctx.present], ctx.saved_tensors)

    @staticmethod
    def vmap(info: Any, in_dims: tuple[int | None, ...], call: _Call, present: tuple[bool, ...],
             *tensors: torch.Tensor) -> Any:
        count = sum(present)
        dims, tangents = in_dims[2:2 + count], tensors[:count]
        which = [i for i, p in enumerate(present) if p]
        join = call.join_at(info.batch_size, dims, tangents, lambda j: [j.params[i] for i in which])
        if join is None:  # several tangents at one solution (jacfwd): one JVP each
            return _map_slices(info.batch_size, in_dims[2:], tensors,
                               lambda ts: _Tangent.apply(call, present, *ts))
        joined = [join.joined(t, d, param=i) for t, d, i in zip(tangents, dims, which, strict=True)]
        outputs = _Tangent.apply(call, present, *joined, *tensors[count:])
        split = tuple(join.split_output(o) for o in outputs)
        return split, (0,) * len(split)


def _legacy_vmapped(vectors: Sequence[torch.Tensor],
                    fn: Callable[[Sequence[torch.Tensor]], tuple[torch.Tensor | None, ...]]
                    ) -> tuple[torch.Tensor | None, ...]:
    """``fn`` (a derivative at one solution) of ``vectors`` that may be
    batched by PyTorch's legacy vmap: ``torch.autograd.grad(...,
    is_grads_batched=True)`` and so ``torch.autograd.functional.jacobian``
    and ``hessian`` with ``vectorize=True`` run the backward (or forward-mode)
    pass under it, on tensors without storage. Their batch is taken apart
    (``fn`` of each of its V slices, with the factorization the first one
    builds) and put together again. PyTorch has no public API for this; the
    level is the legacy vmap's nesting depth, which ``torch._vmap_internals``
    itself sets and reads."""
    legacy: Any = torch._C  # (private, untyped)
    if not any(legacy._functorch.is_legacy_batchedtensor(v) for v in vectors):
        return fn(vectors)
    level = legacy._vmapmode_increment_nesting() - 1  # the innermost legacy vmap's
    legacy._vmapmode_decrement_nesting()
    # (V, ...) for a vector batched there, (1, ...) for one that is not
    physical = [torch._remove_batch_dim(v, level, 1, 0)  # pyright: ignore[reportPrivateImportUsage]
                for v in vectors]
    size = max(p.shape[0] for p in physical)
    results = [fn([p[k if p.shape[0] == size else 0] for p in physical]) for k in range(size)]
    return tuple(None if parts[0] is None else
                 torch._add_batch_dim(torch.stack(parts), 0, level)  # pyright: ignore[reportPrivateImportUsage]
                 for parts in zip(*results, strict=True))


def _map_slices(size: int, dims: Sequence[int | None], tensors: Sequence[torch.Tensor],
                fn: Any) -> tuple[tuple[torch.Tensor, ...], tuple[int, ...]]:
    """A vmap rule by a loop: ``fn`` on every slice of the mapped dimension
    (``dims``: where each tensor has it, None where it is not mapped), the
    results stacked along dimension 0."""
    results = [fn([t if d is None else t.select(d, k) for t, d in zip(tensors, dims, strict=True)])
               for k in range(size)]
    stacked = tuple(torch.stack(parts) for parts in zip(*results, strict=True))
    return stacked, (0,) * len(stacked)


def _any_tangent(tensors: Sequence[torch.Tensor]) -> bool:
    """Whether a tensor carries a tangent of ``torch.autograd.forward_ad``
    (only inside a dual level; ``_current_level`` is -1 outside one, which
    saves the unpacking on every call)."""
    if getattr(forward_ad, "_current_level", 0) < 0:
        return False
    return any(forward_ad.unpack_dual(t).tangent is not None for t in tensors)


def _vmap_level() -> Any:
    """The functorch level a vmap rule runs at: it tells the vmap that joined
    a call's items into one solve (``_Join``) from a later one over its
    cotangents or tangents (jacrev's, jacfwd's). PyTorch's public API has no
    name for it; ``maybe_current_level`` is what its own functorch code uses."""
    return torch._C._functorch.maybe_current_level()  # pyright: ignore[reportAttributeAccessIssue]


@dataclass(frozen=True)
class _Join:
    """One vmap of a call, joined into the layer's batch: ``size`` (V) mapped
    calls, each of ``inner`` items (None: unbatched, one item each), solved as
    V·B items (V with ``inner`` None). Every parameter is given per item, the
    unbatched ones too, so that each mapped call's gradient is its own.

    ``params`` / ``outputs``: the shapes each mapped call sees (its parameter
    values, its outputs); ``batched``: which parameters it has batched.
    """

    level: Any
    size: int
    inner: int | None
    params: tuple[tuple[int, ...], ...]
    batched: tuple[bool, ...]
    outputs: tuple[tuple[int, ...], ...]
    specs: tuple[tuple[int, ...], ...]  # the parameters' own shapes

    def joined(self, t: torch.Tensor, dim: int | None, param: int | None = None) -> torch.Tensor:
        """A mapped tensor (V at ``dim``; None: shared by the V calls) as the
        joined solve's: (V·B, ...) or (V, ...). ``param``: the parameter it is
        a value or tangent of (an unbatched one is repeated over the B items)."""
        t = t.expand(self.size, *t.shape) if dim is None else t.movedim(dim, 0)
        if self.inner is None:
            return t
        if param is not None and not self.batched[param]:
            t = t.unsqueeze(1).expand(self.size, self.inner, *t.shape[1:])
        return t.reshape(self.size * self.inner, *t.shape[2:])

    def split_output(self, t: torch.Tensor) -> torch.Tensor:
        """A joined solve's output (or its tangent) as V mapped calls'."""
        return t if self.inner is None else t.reshape(self.size, self.inner, *t.shape[1:])

    def split_gradient(self, g: torch.Tensor, param: int) -> torch.Tensor:
        """The joined solve's gradient of parameter ``param`` (one per item)
        as V mapped calls': summed over a call's items where it is unbatched."""
        if self.inner is None:
            return g
        g = g.reshape(self.size, self.inner, *self.specs[param])
        return g if self.batched[param] else g.sum(dim=1)


def _join_vmap(call: _Call, size: int, dims: Sequence[int | None],
               tensors: Sequence[torch.Tensor]) -> tuple[tuple[torch.Tensor, ...], tuple[int, ...]]:
    """The vmap rule of the layer: V mapped calls as one batch of V items (V·B
    where the parameters are batched themselves, vmap's dimension outermost),
    solved together; the outputs come back split (V, B, ...). The core's
    shape rules judge the shapes each mapped call sees."""
    specs = call.layer.program.parameters
    logical = tuple(tuple(t.shape) if d is None else tuple(t.shape[:d] + t.shape[d + 1:])
                    for t, d in zip(tensors, dims, strict=True))
    batched = tuple(check_shapes(specs, logical))
    inner = next((shape[0] for shape, b in zip(logical, batched, strict=True) if b), None)
    lead = () if inner is None else (inner,)
    join = _Join(_vmap_level(), size, inner, logical, batched,
                 tuple((*lead, *o.shape) for o in call.layer.program.outputs),
                 tuple(spec.shape for spec in specs))
    call.joins.append(join)
    outputs = _Solve.apply(call, *[join.joined(t, d, param=i)
                                   for i, (t, d) in enumerate(zip(tensors, dims, strict=True))])
    return tuple(join.split_output(o) for o in outputs), (0,) * len(outputs)


def _numpy(t: torch.Tensor) -> np.ndarray:
    """A tensor's values for the core, float64 on the CPU; refused while a
    trace records the call (its NumPy work would become constants of the graph:
    ``torch.func.linearize`` returned uninitialized memory as every JVP)."""
    if torch.jit.is_tracing() or get_proxy_mode() is not None:  # pyright: ignore[reportPrivateImportUsage]
        raise NotImplementedError(describe_tracing("PyTorch"))
    return t.detach().to("cpu", torch.float64).numpy()


def _as_tensors(specs: Sequence[ParameterSpec], params: Sequence[Any]
                ) -> tuple[list[torch.Tensor], torch.dtype, torch.device]:
    """Parameters as tensors, with the common floating dtype and device.

    Raises ``ParameterError`` for mixed dtypes or devices (which would make the
    outputs' dtype or device ambiguous), complex tensors, and values the core
    cannot read as real arrays (its rules and messages: ``None``, strings, ...).
    """
    tensors: list[torch.Tensor] = []
    for i, p in enumerate(params):
        if isinstance(p, torch.fx.Proxy):  # torch.fx.symbolic_trace of a model with the layer
            raise NotImplementedError(describe_tracing("PyTorch"))
        if isinstance(p, torch.Tensor):
            check_tensor_dtype(specs, i, str(p.dtype).removeprefix("torch."), numeric=True,
                               complex_=p.is_complex())
            tensors.append(p)
        else:
            tensors.append(torch.as_tensor(as_real_array(specs, i, p)))
    given = [(i, t) for i, t in enumerate(tensors) if isinstance(params[i], torch.Tensor)]
    floating = [(i, t) for i, t in given if t.is_floating_point()]
    check_uniform("dtype", [(i, str(t.dtype).removeprefix("torch.")) for i, t in floating],
                  "Cast them to one dtype, e.g. with `.double()` or `.float()`.")
    check_uniform("device", [(i, str(t.device)) for i, t in given],
                  "Move them to one device with `.to(device)`.")
    dtype = floating[0][1].dtype if floating else torch.get_default_dtype()
    device = given[0][1].device if given else torch.device("cpu")
    if given:  # (one device for all: checked above)
        check_device_has_data(specs, given[0][0], device.type, tuple(given[0][1].shape))
    return tensors, dtype, device


