"""``torch.nn.Module`` glue around the NumPy core.

The core solves and differentiates; this module converts tensors to float64
arrays and back (dtype and device of the inputs), registers the derivatives
with autograd (``backward`` = the core's adjoint, ``jvp`` = its derivative,
so reverse mode, ``torch.autograd.forward_ad`` and ``torch.func.jvp`` work),
and nothing else.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from .. import _layer as core
from .._program import ParameterSpec
from .._solve import Solution
from .._validate import as_real_array, check_tensor_dtype, check_uniform

__all__ = ["CvxpyLayer"]


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
        *,
        gp: bool = False,
        solver: str | None = None,
        solver_args: Mapping[str, Any] | None = None,
        throw: bool = True,
        verbose: bool = False,
        canon_backend: str | None = None,
        executor: Any = None,
        chunk_size: int | None = None,
    ) -> None:
        super().__init__()
        self.layer = core.CvxpyLayer(problem, parameters, variables, gp=gp, solver=solver,
                                     solver_args=solver_args, throw=throw, verbose=verbose,
                                     canon_backend=canon_backend, executor=executor,
                                     chunk_size=chunk_size)

    def forward(
        self,
        *params: Any,
        solver_args: Mapping[str, Any] | None = None,
        throw: bool | None = None,
        return_status: bool = False,
        executor: Any = None,
    ) -> tuple[Any, ...]:
        """``layer(*params) -> tuple of tensors`` (``+ (status,)`` if ``return_status``).

        ``status`` is a tuple of :class:`conelayers.Status`, one per item;
        with ``throw=False`` failed items are NaN and contribute no gradient.
        """
        tensors, dtype, device = _as_tensors(self.layer.program.parameters, params)
        call = _Call(self.layer, solver_args, throw, executor, dtype, device)
        if torch.is_grad_enabled():
            outputs = _Solve.apply(call, *tensors)
        else:  # forward only: no autograd record at all, no factors kept for one
            outputs = call.forward(tensors, differentiable=False)
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

    def to_torch(self, arrays) -> tuple[torch.Tensor | None, ...]:
        return tuple(None if a is None else
                     torch.as_tensor(np.asarray(a), dtype=self.dtype, device=self.device)
                     for a in arrays)

    def forward(self, tensors: Sequence[torch.Tensor],
                differentiable: bool = True) -> tuple[torch.Tensor, ...]:
        arrays = [_numpy(t) for t in tensors]
        self.solution = self.layer._solution(arrays, self.solver_args, self.throw,
                                             self.executor, differentiable=differentiable)
        return self.to_torch(self.solution.values)  # type: ignore[return-value]


class _Solve(torch.autograd.Function):
    """The layer as an autograd Function (functorch style, for ``torch.func``)."""

    @staticmethod
    def forward(call: _Call, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return call.forward(tensors)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        ctx.call = inputs[0]
        ctx.set_materialize_grads(False)

    @staticmethod
    def backward(ctx: Any, *grad_outputs: torch.Tensor | None) -> tuple[Any, ...]:
        call: _Call = ctx.call
        assert call.solution is not None
        if all(g is None for g in grad_outputs):
            return (None,) * (1 + len(call.layer.program.parameters))
        grads = call.solution.adjoint(*[None if g is None else _numpy(g) for g in grad_outputs])
        wanted = [g if need else None for g, need in zip(grads, ctx.needs_input_grad[1:],
                                                          strict=True)]
        return (None, *call.to_torch(wanted))

    @staticmethod
    def jvp(ctx: Any, _call_tangent: Any, *tangents: torch.Tensor | None) -> tuple[Any, ...]:
        # Under torch.func the tangents are functorch-wrapped tensors without
        # storage; routing them through an autograd Function hands its forward
        # plain tensors at every transform level.
        call: _Call = ctx.call
        present = [t is not None for t in tangents]
        return _Tangent.apply(call, present, *[t for t in tangents if t is not None])


class _Tangent(torch.autograd.Function):
    """The core's JVP at the solution of one call: parameter → output tangents."""

    @staticmethod
    def forward(call: _Call, present: list[bool], *tangents: torch.Tensor) -> Any:
        assert call.solution is not None
        it = iter(tangents)
        dparams = [_numpy(next(it)) if p else None for p in present]
        return call.to_torch(call.solution.derivative(*dparams))

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        pass  # the tangent map is linear; second-order derivatives are not provided


def _numpy(t: torch.Tensor) -> np.ndarray:
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
    return tensors, dtype, device


