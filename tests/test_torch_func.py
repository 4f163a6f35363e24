"""The PyTorch front-end under ``torch.func``: grad, vjp, jacrev, jacfwd,
vmap and their compositions, against the NumPy core's derivatives, central
differences of re-solves, the layer's own batching and per-sample loops;
``torch.autograd.functional`` (jvp by double backward, vectorized
Jacobians); and second derivatives, which the layer does not provide,
refused by name."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import cvxpy as cp  # noqa: E402
from problems import CASES  # noqa: E402

import conelayers  # noqa: E402
from conelayers import ParameterError  # noqa: E402
from conelayers.torch import CvxpyLayer  # noqa: E402

torch.set_default_dtype(torch.float64)
func = torch.func


def small_qp():
    """min ½‖x‖² + qᵀx s.t. Gx ≤ h: x's map is smooth at a generic point."""
    n, m = 4, 3
    x = cp.Variable(n)
    q, G, h = cp.Parameter(n), cp.Parameter((m, n)), cp.Parameter(m)
    prob = cp.Problem(cp.Minimize(0.5 * cp.sum_squares(x) + q @ x), [G @ x <= h])
    return prob, [q, G, h], [x]


def qp_values(rng, *batch):
    n, m = 4, 3  # q large against h: some of Gx ≤ h active at the solution
    return (torch.tensor(3.0 * rng.standard_normal((*batch, n))),
            torch.tensor(rng.standard_normal((m, n))), torch.tensor(rng.uniform(0.1, 0.5, m)))


@pytest.mark.parametrize("name", ["qp", "sparsemax", "logistic", "psd_projection", "geometric"])
def test_func_grad_equals_the_core_adjoint(name, rng):
    """torch.func.grad of ⟨w, outputs⟩ with respect to every parameter is the
    core's VJP with cotangents w (batched values, so every gradient is one)."""
    case = CASES[name]()
    layer = CvxpyLayer(case.problem, case.parameters, case.variables, gp=case.gp)
    core = conelayers.CvxpyLayer(case.problem, case.parameters, case.variables, gp=case.gp)
    values = case.sample_batch(rng, 3)
    solution = core.solve(*values)
    weights = [rng.standard_normal(v.shape) for v in solution.values]

    def loss(*params):
        outputs = layer(*params)
        return sum((o * torch.tensor(w)).sum() for o, w in zip(outputs, weights, strict=True))

    grads = func.grad(loss, argnums=tuple(range(len(values))))(*map(torch.tensor, values))
    for got, want in zip(grads, solution.adjoint(*weights), strict=True):
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-10, atol=1e-12)


def test_jacrev_and_jacfwd_match_central_differences(rng):
    """Both Jacobians of x with respect to (q, G, h) against central
    differences of re-solves by the NumPy core, entry by entry."""
    prob, params, variables = small_qp()
    layer = CvxpyLayer(prob, params, variables)
    core = conelayers.CvxpyLayer(prob, params, variables)
    values = qp_values(rng)
    argnums = (0, 1, 2)
    rev = func.jacrev(lambda *p: layer(*p)[0], argnums=argnums)(*values)
    fwd = func.jacfwd(lambda *p: layer(*p)[0], argnums=argnums)(*values)
    h = 1e-6
    for k, value in enumerate(values):
        fd = np.empty((4, *value.shape))
        for index in np.ndindex(*value.shape):
            shifted = [[v.numpy().copy() for v in values] for _ in range(2)]
            shifted[0][k][index] += h
            shifted[1][k][index] -= h
            plus, minus = (core.solve(*s).values[0] for s in shifted)
            fd[(slice(None), *index)] = (plus - minus) / (2 * h)
        scale = max(1.0, float(np.abs(fd).max()))
        np.testing.assert_allclose(rev[k].numpy(), fd, atol=1e-6 * scale)
        np.testing.assert_allclose(fwd[k].numpy(), rev[k].numpy(), atol=1e-12 * scale)


@pytest.mark.parametrize("inner", [None, 2])
def test_vmap_is_the_layers_own_batch(inner, rng):
    """vmap over q (q itself unbatched, or batched with B = 2 per mapped call),
    G and h shared: the outputs are the layer's own batched answer, bit for
    bit (one solve of all V·B items)."""
    prob, params, variables = small_qp()
    layer = CvxpyLayer(prob, params, variables)
    batch = (3,) if inner is None else (3, inner)
    q, G, h = qp_values(rng, *batch)
    mapped = func.vmap(lambda q_: layer(q_, G, h)[0])(q)
    own = layer(q.reshape(-1, 4), G, h)[0].reshape(*batch, 4)
    assert mapped.shape == (*batch, 4)
    assert torch.equal(mapped, own)
    # in_dims elsewhere than 0, and a mapped G with a shared q
    assert torch.equal(func.vmap(lambda q_: layer(q_, G, h)[0], in_dims=-2 if inner else -1,
                                 out_dims=0)(q.movedim(0, -2 if inner else -1)), own)
    Gs = torch.tensor(rng.standard_normal((3, 3, 4)))
    per_call = torch.stack([layer(q[0], Gs[v], h)[0] for v in range(3)])
    torch.testing.assert_close(func.vmap(lambda G_: layer(q[0], G_, h)[0])(Gs), per_call,
                               rtol=0, atol=1e-12)


@pytest.mark.parametrize("inner", [None, 2])
def test_vmap_of_grad_gives_per_sample_gradients(inner, rng):
    """Per-sample gradients with respect to the mapped q and the shared G and
    h (each sample's own, not their sum) equal a loop of torch.func.grad."""
    prob, params, variables = small_qp()
    layer = CvxpyLayer(prob, params, variables)
    q, G, h = qp_values(rng, *((3,) if inner is None else (3, inner)))

    def loss(q_, G_, h_):
        return (layer(q_, G_, h_)[0] ** 2).sum()

    grad = func.grad(loss, argnums=(0, 1, 2))
    mapped = func.vmap(grad, in_dims=(0, None, None))(q, G, h)
    loop = [grad(q[v], G, h) for v in range(3)]
    for k, got in enumerate(mapped):
        torch.testing.assert_close(got, torch.stack([g[k] for g in loop]), rtol=0, atol=1e-12)
    # G's gradient per sample, not their sum: they differ, and are not zero.
    assert any(not torch.allclose(mapped[1][v], mapped[1][0]) for v in (1, 2))
    assert any(bool(mapped[1][v].abs().max() > 1e-3) for v in range(3))


def test_nested_transforms_agree_with_loops(rng):
    """vmap(jacrev), vmap(jacfwd), jacrev(vmap) (block diagonal), vmap(jvp)
    and vmap(vmap(grad)) against loops of the unmapped transform."""
    prob, params, variables = small_qp()
    layer = CvxpyLayer(prob, params, variables)
    q, G, h = qp_values(rng, 3)

    def f(q_):
        return layer(q_, G, h)[0]

    loop = torch.stack([func.jacrev(f)(q[v]) for v in range(3)])
    torch.testing.assert_close(func.vmap(func.jacrev(f))(q), loop, rtol=0, atol=1e-12)
    torch.testing.assert_close(func.vmap(func.jacfwd(f))(q), loop, rtol=0, atol=1e-12)
    block = func.jacrev(func.vmap(f))(q)  # (3, 4, 3, 4): sample v depends on q[v] only
    for v in range(3):
        for u in range(3):
            want = loop[v] if u == v else torch.zeros(4, 4)
            torch.testing.assert_close(block[v, :, u], want, rtol=0, atol=1e-12)
    tangents = torch.tensor(rng.standard_normal((3, 4)))
    jvps = func.vmap(lambda q_, t_: func.jvp(f, (q_,), (t_,))[1])(q, tangents)
    torch.testing.assert_close(jvps, torch.einsum("vij,vj->vi", loop, tangents),
                               rtol=0, atol=1e-12)
    # A cotangent and a tangent that the map does not cover (shared by the samples)
    w = torch.tensor(rng.standard_normal(4))
    vjps = func.vmap(lambda q_: func.vjp(f, q_)[1](w)[0])(q)
    torch.testing.assert_close(vjps, torch.einsum("vij,i->vj", loop, w), rtol=0, atol=1e-12)
    jvps = func.vmap(lambda q_: func.jvp(f, (q_,), (w,))[1])(q)
    torch.testing.assert_close(jvps, torch.einsum("vij,j->vi", loop, w), rtol=0, atol=1e-12)
    q2 = torch.tensor(rng.standard_normal((2, 3, 4)))
    grad = func.grad(lambda q_: (f(q_) ** 2).sum())
    twice = func.vmap(func.vmap(grad))(q2)
    torch.testing.assert_close(twice, torch.stack([torch.stack([grad(q2[a, b]) for b in range(3)])
                                                   for a in range(2)]), rtol=0, atol=1e-12)


def test_plain_autograd_through_a_vmapped_call(rng):
    """loss.backward() through vmap's output: the joined solve's gradient
    reaches the mapped tensor, as through the layer's own batch."""
    prob, params, variables = small_qp()
    layer = CvxpyLayer(prob, params, variables)
    q, G, h = qp_values(rng, 3)
    mapped, own = q.clone().requires_grad_(), q.clone().requires_grad_()
    (func.vmap(lambda q_: layer(q_, G, h)[0])(mapped) ** 2).sum().backward()
    (layer(own, G, h)[0] ** 2).sum().backward()
    torch.testing.assert_close(mapped.grad, own.grad, rtol=0, atol=0)


def test_vmap_without_gradients_and_in_float32(rng):
    prob, params, variables = small_qp()
    layer = CvxpyLayer(prob, params, variables)
    q, G, h = qp_values(rng, 3)
    with torch.no_grad():
        assert torch.equal(func.vmap(lambda q_: layer(q_, G, h)[0])(q), layer(q, G, h)[0])
    out = func.vmap(lambda q_: layer(q_, G.float(), h.float())[0])(q.float())
    grad = func.grad(lambda q_: layer(q_, G.float(), h.float())[0].sum())(q[0].float())
    assert out.dtype == grad.dtype == torch.float32


def test_vmap_shape_errors_name_what_one_mapped_call_passes(rng):
    prob, params, variables = small_qp()
    layer = CvxpyLayer(prob, params, variables)
    _, G, h = qp_values(rng)
    with pytest.raises(ParameterError, match=r"must have shape \(4,\).*got shape \(5,\)"):
        func.vmap(lambda q_: layer(q_, G, h)[0])(torch.zeros(3, 5))


def test_second_derivatives_are_refused_by_name(rng):
    """No Hessian, no gradient of a gradient: NotImplementedError saying so,
    where functorch would otherwise see derivatives that do not depend on the
    parameters and return zeros. First derivatives with create_graph=True
    are unchanged."""
    prob, params, variables = small_qp()
    layer = CvxpyLayer(prob, params, variables)
    q, G, h = qp_values(rng)

    def loss(q_):
        return (layer(q_, G, h)[0] ** 2).sum()

    message = "second derivatives of a conelayers layer are not available"
    with pytest.raises(NotImplementedError, match=message):
        func.hessian(loss)(q)
    with pytest.raises(NotImplementedError, match=message):
        func.grad(lambda q_: func.grad(loss)(q_).sum())(q)
    with pytest.raises(NotImplementedError, match=message):
        func.jacfwd(func.jacrev(loss))(q)
    # Cotangents that do not depend on the parameters (a linear loss,
    # jacrev's basis vectors), and x nonlinear in G (affine in q and h on an
    # active set): zeros would be wrong, and must not come out.
    with pytest.raises(NotImplementedError, match=message):
        func.hessian(lambda G_: layer(q, G_, h)[0].sum())(G)
    with pytest.raises(NotImplementedError, match=message):
        func.jacfwd(func.jacrev(lambda G_: layer(q, G_, h)[0]))(G)
    tracked = q.clone().requires_grad_()
    (first,) = torch.autograd.grad(loss(tracked), tracked, create_graph=True)
    torch.testing.assert_close(first, func.grad(loss)(q), rtol=0, atol=0)
    with pytest.raises(NotImplementedError, match=message):
        first.sum().backward()
    # torch.autograd.functional's second derivatives; and the derivative of
    # a JVP by double backward (linear in its tangent, not in q)
    functional = torch.autograd.functional
    ones = torch.ones(4)
    for second in (lambda: functional.hessian(loss, q),
                   lambda: functional.hessian(loss, q, vectorize=True),
                   lambda: functional.hvp(loss, q, ones),
                   lambda: functional.vhp(loss, q, ones)):
        with pytest.raises(NotImplementedError, match=message):
            second()
    _, tangent = functional.jvp(lambda q_: layer(q_, G, h)[0], tracked, ones, create_graph=True)
    with pytest.raises(NotImplementedError, match=message):
        torch.autograd.grad(tangent.sum(), tracked)
    with pytest.raises(NotImplementedError, match=message):
        func.jacrev(lambda q_: func.jvp(lambda p: layer(p, G, h)[0], (q_,), (ones,))[1])(q)


@pytest.mark.parametrize("batch", [(), (3,)])
def test_autograd_functional_jvp_by_double_backward(batch, rng):
    """torch.autograd.functional.jvp differentiates a VJP in its cotangent
    (the VJP is linear there, its derivative is the JVP): against the core's
    JVP and central differences of re-solves, and the dot-product test
    against functional.vjp (⟨w, J v⟩ = ⟨Jᵀ w, v⟩)."""
    prob, params, variables = small_qp()
    layer = CvxpyLayer(prob, params, variables)
    core = conelayers.CvxpyLayer(prob, params, variables)
    values = qp_values(rng, *batch)
    directions = tuple(torch.tensor(rng.standard_normal(v.shape)) for v in values)
    functional = torch.autograd.functional
    _, got = functional.jvp(lambda *p: layer(*p)[0], values, directions)
    solution = core.solve(*[v.numpy() for v in values])
    (want,) = solution.derivative(*[d.numpy() for d in directions])
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-10, atol=1e-12)
    eps = 1e-6
    plus, minus = (core.solve(*[(v + sign * eps * d).numpy()
                                for v, d in zip(values, directions, strict=True)]).values[0]
                   for sign in (1, -1))
    np.testing.assert_allclose(got.numpy(), (plus - minus) / (2 * eps), atol=1e-6)
    w = torch.tensor(rng.standard_normal(got.shape))
    _, grads = functional.vjp(lambda *p: layer(*p)[0], values, w)
    lhs = float((w * got).sum())
    rhs = sum(float((g * d).sum()) for g, d in zip(grads, directions, strict=True))
    assert abs(lhs - rhs) <= 1e-10 * max(1.0, abs(lhs))


@pytest.mark.parametrize("batch", [(), (3,)])
def test_vectorized_jacobians_match_the_loop_and_central_differences(batch, rng):
    """functional.jacobian with vectorize=True (the backward under PyTorch's
    legacy vmap, is_grads_batched) and its forward-mode strategy equal the
    row-by-row Jacobian, which equals central differences of re-solves."""
    prob, params, variables = small_qp()
    layer = CvxpyLayer(prob, params, variables)
    core = conelayers.CvxpyLayer(prob, params, variables)
    q, G, h = qp_values(rng, *batch)
    jacobian = torch.autograd.functional.jacobian

    def f(q_, G_):
        return layer(q_, G_, h)[0]

    loop = jacobian(f, (q, G))
    for kwargs in ({"vectorize": True}, {"vectorize": True, "strategy": "forward-mode"}):
        for got, want in zip(jacobian(f, (q, G), **kwargs), loop, strict=True):
            torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    eps = 1e-6
    for index in [(*[0] * len(batch), 1), (*[0] * len(batch), 3)]:
        shifted = [q.numpy().copy() for _ in range(2)]
        shifted[0][index] += eps
        shifted[1][index] -= eps
        plus, minus = (core.solve(s, G.numpy(), h.numpy()).values[0] for s in shifted)
        column = loop[0][(Ellipsis, *index)].numpy()
        np.testing.assert_allclose(column, (plus - minus) / (2 * eps), atol=1e-6)
    # is_grads_batched itself: each row of the result is one VJP
    x = f(q.clone().requires_grad_(), G)
    rows = torch.eye(x.numel()).reshape(-1, *x.shape)
    tracked = q.clone().requires_grad_()
    (batched,) = torch.autograd.grad(f(tracked, G), tracked, rows, is_grads_batched=True)
    torch.testing.assert_close(batched.reshape(x.numel(), -1),
                               loop[0].reshape(x.numel(), -1), rtol=0, atol=1e-12)


def test_derivatives_of_the_derivatives_in_their_vectors(rng):
    """The VJP is linear in its cotangent and the JVP in its tangent: their
    derivatives there are each other, with torch.func and plain autograd
    (first derivatives of the solution map, so not refused)."""
    prob, params, variables = small_qp()
    layer = CvxpyLayer(prob, params, variables)
    q, G, h = qp_values(rng)

    def f(q_):
        return layer(q_, G, h)[0]

    u, du, v = (torch.tensor(rng.standard_normal(4)) for _ in range(3))
    _, vjp_fn = func.vjp(f, q)
    # forward mode through the VJP in its cotangent: the VJP of the tangent
    _, tangent = func.jvp(lambda u_: vjp_fn(u_)[0], (u,), (du,))
    torch.testing.assert_close(tangent, vjp_fn(du)[0], rtol=0, atol=1e-12)
    # reverse mode through the JVP in its tangent: the VJP
    _, back = func.vjp(lambda v_: func.jvp(f, (q,), (v_,))[1], v)
    torch.testing.assert_close(back(u)[0], vjp_fn(u)[0], rtol=0, atol=1e-12)
    # and through the VJP in its cotangent, by plain autograd: the JVP
    tracked, cotangent = q.clone().requires_grad_(), u.clone().requires_grad_()
    (grad,) = torch.autograd.grad(f(tracked), tracked, cotangent, create_graph=True)
    (again,) = torch.autograd.grad(grad, cotangent, v)
    torch.testing.assert_close(again, func.jvp(f, (q,), (v,))[1], rtol=0, atol=1e-12)


def test_jacobians_set_the_derivative_up_once(monkeypatch, rng):
    """jacrev's and jacfwd's basis vectors are VJPs / JVPs of one solution:
    its derivative (the factorization) is set up once per item, not per vector."""
    import conelayers._diff as diff

    prob, params, variables = small_qp()
    layer = CvxpyLayer(prob, params, variables)
    q, G, h = qp_values(rng)
    made = []
    at = diff.ItemDerivative.at.__func__
    monkeypatch.setattr(diff.ItemDerivative, "at",
                        classmethod(lambda cls, *a, **k: (made.append(1), at(cls, *a, **k))[1]))
    functional = torch.autograd.functional.jacobian
    for jacobian in (func.jacrev, func.jacfwd,
                     lambda f: lambda q_: functional(f, q_, vectorize=True),
                     lambda f: lambda q_: functional(f, q_, vectorize=True,
                                                     strategy="forward-mode")):
        made.clear()
        assert jacobian(lambda q_: layer(q_, G, h)[0])(q).shape == (4, 4)
        assert len(made) == 1, jacobian


@pytest.mark.filterwarnings("ignore:`torch.jit.trace` is deprecated:DeprecationWarning")
def test_tracing_the_layer_is_refused_by_name(rng):
    """torch.func.linearize (make_fx underneath), make_fx and torch.jit.trace
    would record the layer's NumPy work as constants: linearize's JVP was
    uninitialized memory for every tangent (4.9e-324 and zeros, where the JVP
    is O(1)). NotImplementedError instead, before anything is recorded; the
    eager transforms are unchanged."""
    from torch.fx.experimental.proxy_tensor import make_fx

    prob, params, variables = small_qp()
    layer = CvxpyLayer(prob, params, variables)
    q, G, h = qp_values(rng)

    def f(q_):
        return layer(q_, G, h)[0]

    message = "cannot be traced into a graph"
    with pytest.raises(NotImplementedError, match=message):
        func.linearize(f, q)
    with pytest.raises(NotImplementedError, match=message):
        make_fx(f)(q)
    with pytest.raises(NotImplementedError, match=message):
        torch.jit.trace(f, (q,), check_trace=False)
    v = torch.tensor(rng.standard_normal(4))
    _, tangent = func.jvp(f, (q,), (v,))
    torch.testing.assert_close(tangent, func.jacfwd(f)(q) @ v, rtol=0, atol=1e-12)
