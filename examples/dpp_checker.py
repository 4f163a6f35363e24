"""Three common ways to break DPP, what the checker says, and the fixes.

1. A product of two parameters (``a * b * x``).
2. ``quad_form(x, P)`` with a parametric matrix P.
3. A parameter inside a nonlinear atom (``exp(a) * x``).

For each: the report of ``conelayers.check_dpp``, then the rewritten problem,
which the checker (and CVXPY's ``is_dpp``) accepts.

Run:  python examples/dpp_checker.py
"""

from __future__ import annotations

import argparse

import cvxpy as cp

from conelayers import check_dpp


def mistakes() -> list[tuple[str, cp.Problem, cp.Problem]]:
    x = cp.Variable(3, name="x")
    a, b = cp.Parameter(name="a"), cp.Parameter(name="b")
    a_b = cp.Parameter(name="a_b")  # set a_b.value = a.value * b.value, as the fix says
    product = cp.Problem(cp.Minimize(cp.sum_squares(x) + a * b * cp.sum(x)))
    product_fixed = cp.Problem(cp.Minimize(cp.sum_squares(x) + a_b * cp.sum(x)))

    P = cp.Parameter((3, 3), name="P", PSD=True)
    L = cp.Parameter((3, 3), name="L")  # set L.value so that P = Lᵀ L
    quad = cp.Problem(cp.Minimize(cp.quad_form(x, P)), [cp.sum(x) == 1])
    quad_fixed = cp.Problem(cp.Minimize(cp.sum_squares(L @ x)), [cp.sum(x) == 1])

    c = cp.Parameter(name="c")
    ec = cp.Parameter(nonneg=True, name="exp_c")  # set exp_c.value = exp(c.value)
    nonlinear = cp.Problem(cp.Minimize(cp.sum_squares(x) - cp.exp(c) * x[0]))
    nonlinear_fixed = cp.Problem(cp.Minimize(cp.sum_squares(x) - ec * x[0]))
    return [("product of parameters", product, product_fixed),
            ("parametric quad_form", quad, quad_fixed),
            ("parameter inside exp", nonlinear, nonlinear_fixed)]


def main(full: bool = False) -> list[tuple[bool, bool]]:
    del full  # one size only
    verdicts = []
    for title, wrong, fixed in mistakes():
        print(f"=== {title} ===")
        report = check_dpp(wrong)
        print(report)
        fixed_report = check_dpp(fixed)
        print(f"--- fixed: {fixed.objective}  (DPP: {fixed_report.ok}, CVXPY agrees: "
              f"{fixed.is_dpp()})\n")
        verdicts.append((report.ok, fixed_report.ok))
    return verdicts


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="(no larger size)")
    main(parser.parse_args().full)
