"""`import conelayers` loads neither torch nor tensorflow and has no side effects."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=120)


def test_core_import_loads_no_framework():
    result = run("""
        import sys
        import conelayers
        loaded = sorted(m for m in ("torch", "tensorflow", "jax", "keras") if m in sys.modules)
        print(loaded)
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_core_imports_with_frameworks_blocked():
    result = run("""
        import sys

        class Block:  # a finder that refuses the frameworks, as if not installed
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("torch", "tensorflow", "jax", "keras"):
                    raise ImportError(f"blocked: {name}")

        sys.meta_path.insert(0, Block())
        import numpy as np, cvxpy as cp
        import conelayers
        x = cp.Variable(2); p = cp.Parameter(2)
        layer = conelayers.CvxpyLayer(cp.Problem(cp.Minimize(cp.sum_squares(x - p))), [p], [x])
        print(np.round(layer(np.array([1.0, 2.0]))[0], 6).tolist())
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[1.0, 2.0]"


def test_import_does_not_touch_cvxpy_state():
    result = run("""
        import cvxpy as cp
        from cvxpy.reductions.solvers.defines import INSTALLED_SOLVERS
        before = (list(INSTALLED_SOLVERS), cp.Problem.__dict__.keys() - set())
        import conelayers
        after = (list(INSTALLED_SOLVERS), cp.Problem.__dict__.keys() - set())
        print(before == after)
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True"
