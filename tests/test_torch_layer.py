"""The PyTorch front-end: autograd in both directions, dtype/device round trip,
cvxpylayers' documented examples, failures as data, errors."""

from __future__ import annotations

import copy
import pickle
import threading

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import cvxpy as cp  # noqa: E402
import diffcp  # noqa: E402
from problems import CASES  # noqa: E402

from conelayers import DPPError, ParameterError, SolverError, Status  # noqa: E402
from conelayers.torch import CvxpyLayer  # noqa: E402

torch.set_default_dtype(torch.float64)


def torch_layer(case, **kwargs):
    return CvxpyLayer(case.problem, case.parameters, case.variables, gp=case.gp, **kwargs)


def as_function(case, layer):
    """The layer as a function of free tensors (symmetric parameters symmetrized),
    so that gradcheck's entry-wise perturbations stay inside the domain."""
    def fn(*params):
        params = [(p + p.T) / 2 if i in case.symmetric else p for i, p in enumerate(params)]
        return layer(*params, solver_args={"eps": 1e-10})
    return fn


@pytest.mark.parametrize("name", list(CASES))
def test_gradcheck_reverse_and_forward_mode_on_the_zoo(name, rng):
    """gradcheck in both modes, with its batched checks: reverse mode under
    PyTorch's older vmap (is_grads_batched), forward mode under torch.func's."""
    case = CASES[name]()
    layer = torch_layer(case)
    inputs = tuple(torch.tensor(v, requires_grad=True) for v in case.sample(rng))
    assert torch.autograd.gradcheck(as_function(case, layer), inputs, eps=1e-6, atol=1e-6,
                                    rtol=1e-5, check_forward_ad=True,
                                    check_batched_grad=True, check_batched_forward_grad=True,
                                    check_undefined_grad=False)


@pytest.mark.parametrize("name", ["qp", "psd_projection", "logistic", "geometric",
                                  "ball_projection"])
def test_forward_mode_agrees_with_reverse_mode(name, rng):
    """⟨J v, w⟩ from torch.func.jvp equals ⟨v, Jᵀ w⟩ from backward, batched."""
    case = CASES[name]()
    layer = torch_layer(case)
    values = [torch.tensor(v) for v in case.sample_batch(rng, 3)]
    tangents = [torch.tensor(rng.standard_normal(v.shape)) for v in values]
    tangents = [(t + t.transpose(-1, -2)) / 2 if i in case.symmetric else t
                for i, t in enumerate(tangents)]
    outs, jvps = torch.func.jvp(lambda *p: layer(*p), tuple(values), tuple(tangents))
    weights = [torch.tensor(rng.standard_normal(o.shape)) for o in outs]
    lhs = sum(float((j * w).sum()) for j, w in zip(jvps, weights, strict=True))
    params = [v.clone().requires_grad_() for v in values]
    loss = sum((o * w).sum() for o, w in zip(layer(*params), weights, strict=True))
    grads = torch.autograd.grad(loss, params)
    rhs = sum(float((g * t).sum()) for g, t in zip(grads, tangents, strict=True))
    assert abs(lhs - rhs) <= 1e-9 * max(1.0, abs(lhs))


def test_forward_ad_dual_tensors(rng):
    import torch.autograd.forward_ad as fwAD

    case = CASES["sparsemax"]()
    layer = torch_layer(case)
    z = torch.tensor(case.sample(rng)[0])
    dz = torch.tensor(rng.standard_normal(6))
    with fwAD.dual_level():
        (x,) = layer(fwAD.make_dual(z, dz))
        tangent = fwAD.unpack_dual(x).tangent
    expected = torch.func.jvp(lambda z_: layer(z_)[0], (z,), (dz,))[1]
    torch.testing.assert_close(tangent, expected)


def test_forward_ad_regression_under_no_grad(rng):
    """torch.no_grad() leaves forward AD on (torch's own ops keep their
    tangents there), but the layer's forward-only path skipped the Function,
    and the output came back without a tangent, read as zero."""
    import torch.autograd.forward_ad as fwAD

    case = CASES["sparsemax"]()
    layer = torch_layer(case)
    z = torch.tensor(case.sample(rng)[0])
    dz = torch.tensor(rng.standard_normal(6))
    with fwAD.dual_level(), torch.no_grad():
        (x,) = layer(fwAD.make_dual(z, dz))
        tangent = fwAD.unpack_dual(x).tangent
    assert tangent is not None
    eps = 1e-6  # central differences of re-solves
    fd = (layer(z + eps * dz)[0] - layer(z - eps * dz)[0]) / (2 * eps)
    torch.testing.assert_close(tangent, fd, atol=1e-7, rtol=0)


def test_forward_over_plain_backward_regression_is_refused(rng):
    """A Hessian-vector product by forward over reverse, the backward without
    create_graph: its cotangents carry tangents, which the plain backward's
    shortcut (no Function) dropped, so the HVP came back finite and without
    the layer's part (1.69 where central differences give 0.69). It needs the
    second derivative, and is refused like the create_graph one."""
    import torch.autograd.forward_ad as fwAD

    case = CASES["sparsemax"]()
    layer = torch_layer(case)
    z = torch.tensor(case.sample(rng)[0], requires_grad=True)
    with fwAD.dual_level():
        dual = fwAD.make_dual(z, torch.ones(6))
        loss = (layer(dual)[0] ** 3).sum() + (torch.sin(dual) ** 3).sum()
        with pytest.raises(NotImplementedError, match="second derivatives"):
            torch.autograd.grad(loss, z)
    # Outside a dual level the plain backward is unchanged.
    (grad,) = torch.autograd.grad((layer(z)[0] ** 3).sum(), z)
    assert torch.isfinite(grad).all()


def test_fx_symbolic_trace_regression_is_refused_by_name():
    """torch.fx.symbolic_trace of a model holding the layer reached the core
    with a Proxy, whose message told the user to use the class in use."""
    case = CASES["sparsemax"]()
    layer = torch_layer(case)

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = layer

        def forward(self, z):
            return self.layer(2 * z)[0]

    with pytest.raises(NotImplementedError, match=r"cannot be traced into a graph \(PyTorch: "
                       r".*torch\.fx\.symbolic_trace"):
        torch.fx.symbolic_trace(Model())


def test_broadcast_parameter_gets_the_summed_gradient(rng):
    case = CASES["qp"]()
    layer = torch_layer(case)
    F, g, A, b = case.sample_batch(rng, 4)
    Ft = torch.tensor(F, requires_grad=True)
    gt = torch.tensor(g[0], requires_grad=True)  # shared
    At, bt = torch.tensor(A[0]), torch.tensor(b[0])
    outs = layer(Ft, gt, At, bt)
    outs[0].sum().backward()
    total = torch.zeros_like(gt)
    for i in range(4):
        gi = gt.detach().clone().requires_grad_()
        layer(Ft[i].detach(), gi, At, bt)[0].sum().backward()
        total += gi.grad
    torch.testing.assert_close(gt.grad, total, atol=1e-9, rtol=1e-9)


# -- cvxpylayers' README examples, unchanged but for the import -----------------


def test_cvxpylayers_readme_pnorm_example():
    n, m = 2, 3
    x = cp.Variable(n)
    A = cp.Parameter((m, n))
    b = cp.Parameter(m)
    constraints = [x >= 0]
    objective = cp.Minimize(0.5 * cp.pnorm(A @ x - b, p=1))
    problem = cp.Problem(objective, constraints)
    assert problem.is_dpp()

    layer = CvxpyLayer(problem, parameters=[A, b], variables=[x])
    torch.manual_seed(0)
    A_tch = torch.randn(m, n, requires_grad=True)
    b_tch = torch.randn(m, requires_grad=True)
    (solution,) = layer(A_tch, b_tch)
    solution.sum().backward()
    assert A_tch.grad is not None and b_tch.grad is not None
    assert torch.isfinite(A_tch.grad).all()


def test_cvxpylayers_readme_dual_variables_example():
    x = cp.Variable(2)
    c = cp.Parameter(2)
    b = cp.Parameter()
    eq_con = cp.sum(x) == b
    prob = cp.Problem(cp.Minimize(c @ x), [eq_con, x >= 0])
    layer = CvxpyLayer(prob, parameters=[c, b], variables=[x, eq_con.dual_variables[0]])
    c_tch = torch.tensor([1.0, 2.0], requires_grad=True)
    b_tch = torch.tensor(1.0, requires_grad=True)
    x_star, eq_dual = layer(c_tch, b_tch)
    torch.testing.assert_close(x_star, torch.tensor([1.0, 0.0]), atol=1e-9, rtol=0)
    c.value, b.value = [1.0, 2.0], 1.0
    prob.solve(solver=cp.CLARABEL)
    # Optimal value c₁·b: the multiplier has magnitude c₁ = 1, with CVXPY's sign.
    dual = eq_dual.item()
    assert abs(dual - eq_con.dual_value) < 1e-7 and abs(abs(dual) - 1) < 1e-9
    (x_star[0] + eq_dual).backward()
    torch.testing.assert_close(b_tch.grad, torch.tensor(1.0), atol=1e-9, rtol=0)


def test_cvxpylayers_readme_gp_example():
    x = cp.Variable(pos=True)
    y = cp.Variable(pos=True)
    z = cp.Variable(pos=True)
    a = cp.Parameter(pos=True, value=2.)
    b = cp.Parameter(pos=True, value=1.)
    c = cp.Parameter(value=0.5)
    objective_fn = 1 / (x * y * z)
    objective = cp.Minimize(objective_fn)
    constraints = [a * (x * y + x * z + y * z) <= b, x >= y ** c]
    problem = cp.Problem(objective, constraints)
    assert problem.is_dgp(dpp=True)

    layer = CvxpyLayer(problem, parameters=[a, b, c], variables=[x, y, z], gp=True)
    a_tch = torch.tensor(a.value, requires_grad=True)
    b_tch = torch.tensor(b.value, requires_grad=True)
    c_tch = torch.tensor(c.value, requires_grad=True)
    x_star, y_star, z_star = layer(a_tch, b_tch, c_tch)
    sum_of_solution = x_star + y_star + z_star
    sum_of_solution.backward()

    problem.solve(gp=True, solver=cp.CLARABEL)
    for ours, ref in ((x_star, x), (y_star, y), (z_star, z)):
        assert abs(ours.item() - ref.value) < 1e-5
    assert all(torch.isfinite(t.grad) for t in (a_tch, b_tch, c_tch))


def test_least_squares_gradient_matches_the_closed_form(rng):
    """cvxpylayers' test_least_squares: unconstrained ridge regression."""
    m, n = 10, 4
    A = cp.Parameter((m, n))
    b = cp.Parameter(m)
    x = cp.Variable(n)
    obj = cp.sum_squares(A @ x - b) + cp.sum_squares(x)
    layer = CvxpyLayer(cp.Problem(cp.Minimize(obj)), [A, b], [x])
    A_t = torch.tensor(rng.standard_normal((m, n)), requires_grad=True)
    b_t = torch.tensor(rng.standard_normal(m), requires_grad=True)

    def closed_form(A_, b_):
        return torch.linalg.solve(A_.T @ A_ + torch.eye(n), A_.T @ b_)

    (x_star,) = layer(A_t, b_t)
    x_star.sum().backward()
    grads = A_t.grad.clone(), b_t.grad.clone()
    A_t.grad = b_t.grad = None
    closed_form(A_t, b_t).sum().backward()
    torch.testing.assert_close(x_star, closed_form(A_t, b_t).detach(), atol=1e-10, rtol=0)
    torch.testing.assert_close(grads[0], A_t.grad, atol=1e-9, rtol=0)
    torch.testing.assert_close(grads[1], b_t.grad, atol=1e-9, rtol=0)


def test_logistic_regression_and_sdp_examples_run_through_the_import(rng):
    """cvxpylayers' logistic-regression and SDP tests, as a user would write them."""
    N, n = 12, 3
    a = cp.Variable(n)
    X = cp.Parameter((N, n))
    Y = rng.integers(0, 2, N).astype(float)
    lam = cp.Parameter(nonneg=True)
    log_likelihood = cp.sum(cp.multiply(Y, X @ a) - cp.logistic(X @ a))
    prob = cp.Problem(cp.Minimize(-log_likelihood / N + lam * cp.sum_squares(a)))
    fit = CvxpyLayer(prob, [X, lam], [a])
    X_t = torch.tensor(rng.standard_normal((N, n)), requires_grad=True)
    lam_t = torch.tensor(0.1, requires_grad=True)
    (a_t,) = fit(X_t, lam_t)
    a_t.sum().backward()
    assert torch.isfinite(X_t.grad).all() and torch.isfinite(lam_t.grad)

    k = 3
    C = cp.Parameter((k, k), symmetric=True)
    Xv = cp.Variable((k, k), symmetric=True)
    sdp = cp.Problem(cp.Minimize(cp.trace(C @ Xv) + cp.sum_squares(Xv)),
                     [Xv >> 0, cp.trace(Xv) == 1])
    sdp_layer = CvxpyLayer(sdp, [C], [Xv])
    M = torch.tensor(rng.standard_normal((k, k)))
    C_t = ((M + M.T) / 2).requires_grad_()
    (X_t,) = sdp_layer(C_t)
    (X_t * torch.eye(k)).sum().backward()
    torch.testing.assert_close(C_t.grad, C_t.grad.T)


# -- dtype, device, paths ---------------------------------------------------


def test_float32_in_float32_out_and_gradients_too(rng):
    case = CASES["sparsemax"]()
    layer = torch_layer(case)
    z = torch.tensor(case.sample(rng)[0], dtype=torch.float32, requires_grad=True)
    (x,) = layer(z)
    assert x.dtype == torch.float32
    x[0].backward()
    assert z.grad.dtype == torch.float32
    (x64,) = layer(z.detach().double())
    torch.testing.assert_close(x.double(), x64, atol=1e-6, rtol=0)


@pytest.mark.parametrize("half", [torch.float16, torch.bfloat16])
def test_half_precision_in_half_out_rounded_once(half, rng):
    """float16 and bfloat16: outputs and gradients are float64's answers for
    the same values, rounded once to the inputs' dtype."""
    case = CASES["sparsemax"]()
    layer = torch_layer(case)
    z = torch.tensor(case.sample_batch(rng, 3)[0]).to(half).requires_grad_()
    w = torch.tensor(rng.standard_normal(z.shape)).to(half)
    (x,) = layer(z)
    (x * w).sum().backward()
    z64 = z.detach().double().requires_grad_()
    (x64,) = layer(z64)
    (x64 * w.double()).sum().backward()
    assert x.dtype == half and z.grad.dtype == half
    torch.testing.assert_close(x, x64.to(half), rtol=0, atol=0)
    torch.testing.assert_close(z.grad, z64.grad.to(half), rtol=0, atol=0)


def test_mixed_dtypes_and_devices_are_rejected():
    case = CASES["affine_projection"]()
    layer = torch_layer(case)
    p = torch.zeros(5, dtype=torch.float32)
    A = torch.ones(2, 5)
    b = torch.zeros(2)
    with pytest.raises(ParameterError, match=r"must all have the same dtype; got "
                       r"parameters\[0\]: float32, parameters\[1\]: float64"):
        layer(p, A, b)
    with pytest.raises(ParameterError, match=r"must all have the same device; got "
                       r"parameters\[0\]: meta, parameters\[1\]: cpu"):
        layer(torch.zeros(5, device="meta"), A, b)
    # All on the meta device (no values): named, not torch's "Cannot copy out of meta
    # tensor" (found by a probe, 2026-12-04).
    with pytest.raises(ParameterError, match=r"`parameters\[0\]` \(.*\) is a tensor on the "
                       r"'meta' device.*got a meta tensor of shape \(4, 5\)"):
        layer(*(t.to("meta") for t in (torch.zeros(4, 5), A, b)))


def test_numpy_arrays_and_numbers_are_accepted(rng):
    case = CASES["affine_projection"]()
    layer = torch_layer(case)
    p, A, b = case.sample(rng)
    (x1, _) = layer(p, A, b)
    (x2, _) = layer(torch.tensor(p), torch.tensor(A), torch.tensor(b))
    torch.testing.assert_close(x1, x2)


def test_no_grad_path_accepts_derivative_only_options(rng):
    """cvxpylayers 1.2 crashes here in evaluation with mode='dense'."""
    case = CASES["qp"]()
    layer = torch_layer(case, solver_args={"mode": "dense"})
    values = [torch.tensor(v, requires_grad=True) for v in case.sample(rng)]
    with torch.no_grad():
        outs = layer(*values)
    assert all(o.grad_fn is None for o in outs)
    outs = layer(*values, solver_args={"mode": "lsqr"})
    outs[0].sum().backward()
    assert values[0].grad is not None


def test_nan_option_keeps_the_batch_and_reports_status():
    x = cp.Variable(2)
    lo = cp.Parameter(2)
    s = cp.Parameter()
    prob = cp.Problem(cp.Minimize(cp.sum_squares(x)), [x >= lo, cp.sum(x) <= s])
    layer = CvxpyLayer(prob, [lo, s], [x])
    lo_t = torch.tensor([[0.5, 0.5], [0.5, 0.5], [0.1, 0.2]], requires_grad=True)
    s_t = torch.tensor([2.0, 0.0, 1.0], requires_grad=True)  # item 1 is infeasible
    x_t, status = layer(lo_t, s_t, throw=False, return_status=True)
    assert status == (Status.optimal, Status.infeasible, Status.optimal)
    assert torch.isnan(x_t[1]).all() and torch.isfinite(x_t[[0, 2]]).all()
    torch.testing.assert_close(x_t[[0, 2]], lo_t.detach()[[0, 2]], atol=1e-9, rtol=0)
    ok = torch.tensor([st.ok for st in status])
    x_t[ok].sum().backward()
    torch.testing.assert_close(lo_t.grad, torch.tensor([[1.0, 1.0], [0, 0], [1, 1]]),
                               atol=1e-8, rtol=0)
    # The loss masked after it was formed: the failed row's cotangent is 2·NaN·0 = NaN,
    # read as zero (it stopped the backward pass; found by a probe, 2026-12-04).
    lo_t.grad = None
    (x_t,) = layer(lo_t, s_t, throw=False)
    torch.where(ok, (x_t ** 2).sum(dim=1), 0.0).sum().backward()
    torch.testing.assert_close(lo_t.grad, 2 * lo_t.detach() * ok[:, None], atol=1e-8, rtol=0)
    with pytest.raises(SolverError, match="item 1: infeasible") as info:
        layer(lo_t, s_t)
    assert isinstance(info.value, diffcp.SolverError)


# -- errors -------------------------------------------------------------------


def test_errors_users_already_catch():
    x = cp.Variable()
    a, b = cp.Parameter(), cp.Parameter()
    with pytest.raises(ValueError, match=r"^Problem must be DPP\."):
        CvxpyLayer(cp.Problem(cp.Minimize(a * b * x), [x >= 0]), [a, b], [x])
    with pytest.raises(ValueError, match=r"`parameters` must list exactly the parameters"):
        CvxpyLayer(cp.Problem(cp.Minimize(a * x), [x >= b]), [a], [x])
    with pytest.raises(ValueError, match=r"`variables\[0\]`"):
        CvxpyLayer(cp.Problem(cp.Minimize(a * x), [x >= b]), [a, b], [cp.Variable()])
    assert issubclass(DPPError, ValueError)


def test_cvxpylayers_constructor_calls_regression_keep_working():
    """cvxpylayers 1.2.0 code that a switch broke (found by an audit of the
    README's drop-in claim): `solver` passed positionally (its fourth argument),
    `solver="DIFFCP"` (its default back-end's name: diffcp, whose cone solver is
    `solve_method`, SCS by default) with SCS options, and SCS options under the
    default solver, whose message now says which solver has them."""
    x, p = cp.Variable(2), cp.Parameter(2)
    problem = cp.Problem(cp.Minimize(cp.sum_squares(x - p)), [x >= 0])
    value = torch.tensor([1.0, -1.0], dtype=torch.float64)
    assert CvxpyLayer(problem, [p], [x], cp.ECOS).layer.solver == "ECOS"
    diffcp_like = CvxpyLayer(problem, [p], [x], "DIFFCP",
                             solver_args={"acceleration_lookback": 0})
    assert diffcp_like.layer.solver == "SCS"
    torch.testing.assert_close(diffcp_like(value)[0], torch.tensor([1.0, 0.0],
                                                                   dtype=torch.float64))
    assert CvxpyLayer(problem, [p], [x], "DIFFCP",
                      solver_args={"solve_method": "ECOS"}).layer.solver == "ECOS"
    with pytest.raises(ParameterError, match=r"'acceleration_lookback' is an option of SCS: "
                       r"choose SCS with solver='SCS'"):
        CvxpyLayer(problem, [p], [x], solver_args={"acceleration_lookback": 0})
    with pytest.raises(ParameterError, match=r"got bool True \(cvxpylayers 0\.1's fourth "
                       r"argument was `gp`"):
        CvxpyLayer(problem, [p], [x], True)
    # ... also for a GP, the problem such code has, which failed the DPP check first
    w, r = cp.Variable(pos=True), cp.Parameter(pos=True)
    with pytest.raises(ParameterError, match=r"cvxpylayers 0\.1's fourth argument was `gp`"):
        CvxpyLayer(cp.Problem(cp.Minimize(w + 1 / w), [w >= r]), [r], [w], True)


def test_cvxpylayers_warm_start_argument(monkeypatch, rng):
    """cvxpylayers 1.2's forward takes warm_start (True only with its MOREAU
    GPU solver): False is accepted and changes nothing; True is refused by
    name before any solve, as a ValueError like theirs."""
    case = CASES["qp"]()
    layer = torch_layer(case)
    values = [torch.tensor(v) for v in case.sample(rng)]
    for got, want in zip(layer(*values, warm_start=False), layer(*values), strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    import conelayers._layer as core
    monkeypatch.setattr(core.CvxpyLayer, "_solution", lambda *a, **k: pytest.fail("solved"))
    with pytest.raises(ValueError, match=r"^`warm_start` must be False; got True\. .*MOREAU"):
        layer(*values, warm_start=True)


@pytest.mark.parametrize(("args", "message"), [
    ((torch.zeros(5), torch.ones(2, 5)), r"expected 3 parameter value\(s\)"),
    ((torch.zeros(4), torch.ones(2, 5), torch.zeros(2)),
     r"`parameters\[0\]` \(param\d+, shape \(5,\)\) must have shape \(5,\), or \(batch_size, 5\) "
     r"for a batch; got shape \(4,\)"),
    ((torch.zeros(3, 5), torch.ones(4, 2, 5), torch.zeros(2)),
     r"disagree on the batch size \(parameters\[0\]: 3, parameters\[1\]: 4\)"),
    ((torch.full((5,), float("nan")), torch.ones(2, 5), torch.zeros(2)),
     r"`parameters\[0\]` .* contains NaN or inf"),
    ((torch.zeros(0, 5), torch.ones(2, 5), torch.zeros(2)), r"has an empty batch"),
    (("abc", torch.ones(2, 5), torch.zeros(2)),
     r"`parameters\[0\]` \(param\d+, shape \(5,\)\) must be a real numeric array; got dtype "
     r"<U3 \(str\)"),
    ((torch.zeros(5, dtype=torch.complex128), torch.ones(2, 5), torch.zeros(2)),
     r"`parameters\[0\]` \(param\d+, shape \(5,\)\) must be real; got complex dtype "
     r"complex128"),
])
def test_bad_input_is_rejected_before_any_solve(args, message):
    case = CASES["affine_projection"]()
    with pytest.raises(ParameterError, match=message):
        torch_layer(case)(*args)


# -- copies and threads ---------------------------------------------------------


def test_deepcopy_pickle_to_and_double(rng):
    case = CASES["sparsemax"]()
    layer = torch_layer(case)
    z = torch.tensor(case.sample(rng)[0])
    expected = layer(z)[0]
    for other in (copy.deepcopy(layer), pickle.loads(pickle.dumps(layer)),
                  layer.to("cpu"), layer.double(), layer.float()):
        torch.testing.assert_close(other(z)[0], expected, atol=1e-12, rtol=0)


def test_threads_share_one_layer(rng):
    case = CASES["qp"]()
    layer = torch_layer(case)
    inputs = [[torch.tensor(v, requires_grad=True) for v in case.sample(rng)] for _ in range(8)]

    def run(vals):
        (x, *_rest) = layer(*vals)
        return x.detach(), torch.autograd.grad(x.sum(), vals[0])[0]

    sequential = [run(v) for v in inputs]
    results: list = [None] * len(inputs)

    def worker(k):
        for i in range(k, len(inputs), 4):
            results[i] = run(inputs[i])

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for (x1, g1), (x2, g2) in zip(sequential, results, strict=True):
        torch.testing.assert_close(x1, x2, atol=1e-12, rtol=0)
        torch.testing.assert_close(g1, g2, atol=1e-10, rtol=0)


def test_backward_with_no_gradient_on_any_output_regression_optnet(rng):
    """Found by examples/optnet_qp.py: autograd may call backward with every
    output gradient undefined (gradcheck does); it must return no gradients."""
    case = CASES["affine_projection"]()
    layer = torch_layer(case)
    values = [torch.tensor(v, requires_grad=True) for v in case.sample(rng)]
    x, _ = layer(*values)
    (0.0 * x.sum()).backward()  # a graph through the layer, with zero cotangents
    assert all(v.grad is None or not v.grad.any() for v in values)
    assert _Solve.backward(type("Ctx", (), {"call": layer_call(layer, values)})(),
                           None, None) == (None,) * (1 + len(values))


def layer_call(layer, values):
    from conelayers.torch._layer import _Call

    call = _Call(layer.layer, None, None, None, torch.float64, torch.device("cpu"))
    call.forward(values)
    return call


from conelayers.torch._layer import _Solve  # noqa: E402


def test_only_a_forward_pass_that_can_be_differentiated_keeps_factors(monkeypatch, rng):
    """Under ``torch.no_grad()`` no derivative can follow, and the core is told
    so (``differentiable=False``: refinement then keeps no factors for one,
    see tests/test_engine_paths.py); with gradients enabled it keeps them."""
    import conelayers._layer as core_layer

    x = cp.Variable(50)
    z = cp.Parameter(50)
    prob = cp.Problem(cp.Minimize(cp.sum_squares(x - z)), [cp.sum(x) == 1, x >= 0])
    layer = CvxpyLayer(prob, [z], [x])
    told = []
    solve_batch = core_layer.solve_batch
    monkeypatch.setattr(core_layer, "solve_batch", lambda *a, **k: (
        told.append(k["differentiable"]), solve_batch(*a, **k))[1])
    value = torch.tensor(rng.standard_normal((3, 50)), requires_grad=True)
    with torch.no_grad():
        (plain,) = layer(value)
    (tracked,) = layer(value)
    tracked.sum().backward()
    assert told == [False, True]
    torch.testing.assert_close(plain, tracked.detach(), rtol=0, atol=0)


# -- PyTorch machinery around the layer ----------------------------------------


def sparsemax_model(rng, n_in=3):
    """A linear map into the zoo's sparsemax: a model as users build one."""
    case = CASES["sparsemax"]()
    n = case.parameters[0].shape[0]
    torch.manual_seed(int(rng.integers(2**31)))
    return case, torch.nn.Linear(n_in, n), torch_layer(case)


def test_checkpointed_block_gives_the_plain_gradients(rng):
    """torch.utils.checkpoint re-runs the block (the layer solves again) in the
    backward pass: the same gradients as without checkpointing."""
    from torch.utils.checkpoint import checkpoint

    _, linear, layer = sparsemax_model(rng)
    inputs = torch.tensor(rng.standard_normal((4, 3)))

    def block(t):
        return layer(linear(t))[0]

    grads = []
    for run in (block, lambda t: checkpoint(block, t, use_reentrant=False)):
        linear.zero_grad()
        (run(inputs) ** 2).sum().backward()
        grads.append([p.grad.clone() for p in linear.parameters()])
    for got, want in zip(*grads, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


def test_inference_mode_is_like_no_grad(monkeypatch, rng):
    """Under torch.inference_mode() the outputs are inference tensors, equal to
    a tracked call's, and the core is told no derivative follows."""
    import conelayers._layer as core_layer

    case = CASES["sparsemax"]()
    layer = torch_layer(case)
    told = []
    solve_batch = core_layer.solve_batch
    monkeypatch.setattr(core_layer, "solve_batch", lambda *a, **k: (
        told.append(k["differentiable"]), solve_batch(*a, **k))[1])
    value = torch.tensor(case.sample_batch(rng, 3)[0])
    with torch.inference_mode():
        (inferred,) = layer(value)
    (tracked,) = layer(value.clone().requires_grad_())
    assert told == [False, True] and torch.is_inference(inferred)
    torch.testing.assert_close(inferred, tracked.detach(), rtol=0, atol=0)


def test_cpu_autocast_to_bfloat16(rng):
    """Under CPU autocast the linear layer hands the layer bfloat16: its outputs
    and the gradient it passes back are bfloat16, float64's answers rounded once."""
    case, linear, layer = sparsemax_model(rng)
    linear.float()  # (autocast lowers float32 work, not float64)
    inputs = torch.tensor(rng.standard_normal((4, 3)), dtype=torch.float32)
    w = torch.tensor(rng.standard_normal((4, linear.out_features)))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z = linear(inputs)
        z.retain_grad()
        (x,) = layer(z)
    (x * w).sum().backward()
    z64 = z.detach().double().requires_grad_()
    (x64,) = layer(z64)
    (x64 * w.to(torch.bfloat16).double()).sum().backward()
    assert z.dtype == x.dtype == z.grad.dtype == torch.bfloat16
    torch.testing.assert_close(x, x64.to(torch.bfloat16), rtol=0, atol=0)
    torch.testing.assert_close(z.grad, z64.grad.to(torch.bfloat16), rtol=0, atol=0)
    for row, z_row in zip(x64.detach().numpy(), z64.detach().numpy(), strict=True):
        np.testing.assert_allclose(row, case.closed_form([z_row])[0], atol=1e-10)


def test_retained_graph_backward_twice_accumulates(rng):
    """backward(retain_graph=True) twice: twice the gradient, exactly (the
    solution and its factorization serve both)."""
    case = CASES["qp"]()
    layer = torch_layer(case)
    values = [torch.tensor(v, requires_grad=True) for v in case.sample(rng)]
    (x,) = layer(*values)[:1]
    loss = (x ** 2).sum()
    loss.backward(retain_graph=True)
    once = [v.grad.clone() for v in values]
    loss.backward()
    for v, g in zip(values, once, strict=True):
        torch.testing.assert_close(v.grad, 2 * g, rtol=0, atol=0)


def test_in_place_edits_of_outputs_and_expanded_inputs(rng):
    """An output edited in place is differentiated through the edit; an
    expanded (stride-0) input gets the gradients of all its rows summed."""
    case = CASES["sparsemax"]()
    layer = torch_layer(case)
    base = torch.tensor(case.sample(rng)[0], requires_grad=True)
    w = torch.tensor(rng.standard_normal((3, base.numel())))
    (x,) = layer(base.expand(3, -1))
    x.mul_(2.0)
    (x * w).sum().backward()
    tracked = base.detach().clone().requires_grad_()
    (plain,) = layer(tracked)
    (plain * (2.0 * w.sum(dim=0))).sum().backward()
    torch.testing.assert_close(base.grad, tracked.grad, rtol=0, atol=1e-12)
    torch.testing.assert_close(x.detach(), 2.0 * plain.detach().expand(3, -1), rtol=0, atol=0)


def test_outputs_and_gradients_regression_are_contiguous(rng):
    """Batched outputs and gradients came with the batch axis fastest (x of
    shape (4, 3) had strides (1, 4)), so `out.view(B, -1)` and
    `torch.cat([g.view(-1) ...])` raised (found by a probe, 2026-12-04)."""
    X, P = cp.Variable((2, 3)), cp.Parameter((2, 3))
    x, q = cp.Variable(3), cp.Parameter(3)
    prob = cp.Problem(cp.Minimize(cp.sum_squares(X - P) + cp.sum_squares(x - q)), [X >= 0, x >= 0])
    layer = CvxpyLayer(prob, [P, q], [X, x])
    Pt = torch.tensor(rng.standard_normal((4, 2, 3)), requires_grad=True)
    qt = torch.tensor(rng.standard_normal((4, 3)), requires_grad=True)
    Xo, xo = layer(Pt, qt)
    assert Xo.is_contiguous() and xo.is_contiguous()
    grads = torch.autograd.grad(Xo.view(4, -1).sum() + (xo.view(-1) ** 2).sum(), [Pt, qt])
    assert all(g.is_contiguous() for g in grads)
    # (the projection onto x ≥ 0 and X ≥ 0: its gradient is the indicator of the positives)
    torch.testing.assert_close(grads[0], (Pt > 0).double(), rtol=0, atol=1e-9)
    torch.testing.assert_close(grads[1], 2 * qt.detach().clamp(min=0), rtol=0, atol=1e-9)
