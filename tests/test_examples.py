"""Every example runs at its small size and shows what it promises."""

from __future__ import annotations

import pathlib
import sys

import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"
sys.path.insert(0, str(EXAMPLES))


def test_quickstart(capsys):
    import quickstart

    quickstart.main()
    assert "max relative difference over the batch" in capsys.readouterr().out


def test_activations_match_the_analytic_forms():
    pytest.importorskip("torch")
    import activations

    for name, (forward, gradient) in activations.main().items():
        assert forward < 1e-9 and gradient < 1e-8, name


def test_optnet_qp_passes_gradcheck():
    pytest.importorskip("torch")
    import optnet_qp

    assert optnet_qp.main()


def test_polytope_learns_and_saves_a_png(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("matplotlib")
    import polytope

    out = tmp_path / "polytope.png"
    losses = polytope.main(out=str(out))
    assert out.stat().st_size > 10_000
    assert min(losses[-5:]) < losses[0]


def test_canonicalization_walkthrough_reproduces_cvxpy():
    import canonicalization

    assert canonicalization.main() < 1e-5


def test_finite_differences_converge_to_the_exact_adjoint():
    import finite_differences

    rows = finite_differences.main()
    one_sided = {eps: err for eps, err, _ in rows}
    central = {eps: err for eps, _, err in rows}
    assert one_sided[1e-4] < 1e-2 < one_sided[1e-1]  # first order
    assert min(central.values()) < 1e-7  # second order, down to solver accuracy


def test_keras_fit_decreases_the_loss():
    pytest.importorskip("tensorflow")
    import keras_fit

    losses = keras_fit.main()
    assert losses[-1] < 0.8 * losses[0]


def test_dpp_checker_flags_the_mistakes_and_accepts_the_fixes():
    import dpp_checker

    assert dpp_checker.main() == [(False, True)] * 3


def test_mpc_fits_the_experts_plans_with_exact_gradients():
    pytest.importorskip("torch")
    import warnings

    import mpc

    from conelayers import ConelayersWarning

    with warnings.catch_warnings():
        warnings.simplefilter("error", ConelayersWarning)  # every item solved and certified
        result = mpc.main()
    assert result["gradient_error"] < 1e-6
    assert 0.1 < result["saturated"] < 0.9  # the force bounds matter
    assert result["last"] < 0.2 * result["first"] and result["held_out"] < 0.5 * result["first"]
