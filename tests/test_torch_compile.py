"""The PyTorch front-end inside ``torch.compile``: the layer is a graph break
(run eagerly, its derivatives through autograd as in eager mode) and the
model around it is compiled; values and gradients are eager mode's, and new
values recompile nothing. ``fullgraph=True`` is refused with the reason."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from problems import CASES  # noqa: E402
from torch._dynamo.testing import CompileCounter  # noqa: E402

import conelayers._layer as core  # noqa: E402
from conelayers.torch import CvxpyLayer  # noqa: E402


def sparsemax_layer():
    case = CASES["sparsemax"]()  # n = 6
    return CvxpyLayer(case.problem, case.parameters, case.variables)


class Model(torch.nn.Module):
    """A linear map into a sparsemax layer, then a loss-like reduction."""

    def __init__(self, dtype=torch.float64) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.lin = torch.nn.Linear(3, 6, dtype=dtype)
        self.layer = sparsemax_layer()

    def forward(self, z):
        (p,) = self.layer(self.lin(z))
        return (p * torch.arange(6, dtype=p.dtype)).sum(-1) + (p ** 2).sum(-1)


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def grads_of(model, z):
    model.zero_grad()
    out = model(z)
    out.sum().backward()
    return out.detach(), [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_compiled_model_matches_eager_values_and_gradients(rng, dtype):
    """Inductor (the default backend) compiles the linear map and the loss;
    the layer runs between them. Values and parameter gradients agree with
    the same model run eagerly, and keep the dtype."""
    model = Model(dtype)
    compiled = torch.compile(model)
    for _ in range(2):
        z = torch.tensor(rng.standard_normal((4, 3)), dtype=dtype)
        want, want_grads = grads_of(model, z)
        got, got_grads = grads_of(compiled, z)
        assert got.dtype == dtype
        tol = 1e-12 if dtype == torch.float64 else 1e-5
        torch.testing.assert_close(got, want, rtol=tol, atol=tol)
        for g, w in zip(got_grads, want_grads, strict=True):
            torch.testing.assert_close(g, w, rtol=tol, atol=tol)


def test_new_values_recompile_nothing_and_solve_once(rng, monkeypatch):
    """Dynamo does not trace into the core: the frames it compiles are the
    model's own (before and after the break), compiled on the first call
    only, and each call solves once. (Traced into, the core made Dynamo
    compile frame after frame of NumPy code, again for every new value: 30 s
    before the first result, then about 1 s per call.)"""
    solves = []
    original = core.CvxpyLayer._solution
    monkeypatch.setattr(core.CvxpyLayer, "_solution",
                        lambda self, *a, **k: solves.append(1) or original(self, *a, **k))
    counter = CompileCounter()
    model = Model()
    compiled = torch.compile(model, backend=counter)
    frames = []
    for _ in range(4):
        z = torch.tensor(rng.standard_normal((4, 3)), requires_grad=True)
        compiled(z).sum().backward()
        frames.append(counter.frame_count)
    assert len(solves) == 4
    assert frames[0] <= 3 and frames == [frames[0]] * 4, frames


def test_compiling_the_layer_itself_runs_it_eagerly(rng):
    layer = sparsemax_layer()
    compiled = torch.compile(layer, backend=CompileCounter())
    y = torch.tensor(rng.standard_normal((5, 6)), requires_grad=True)
    (got,) = compiled(y)
    (want,) = layer(y)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    closed = CASES["sparsemax"]().closed_form
    for item, y_item in zip(got.detach().numpy(), y.detach().numpy(), strict=True):
        np.testing.assert_allclose(item, closed([y_item])[0], atol=1e-10)


def test_fullgraph_is_refused_with_the_reason(rng):
    compiled = torch.compile(Model(), fullgraph=True)
    z = torch.tensor(rng.standard_normal((2, 3)))
    with pytest.raises(torch._dynamo.exc.Unsupported,
                       match=r"runs eagerly under torch.compile .*without fullgraph=True"):
        compiled(z)
