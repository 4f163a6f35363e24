"""`python -m conelayers check FILE.py[:NAME]`: reports, JSON, exit codes 0/1/2."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conelayers.__main__ import main

SCRIPT = '''
import cvxpy as cp

x = cp.Variable(name="x")
a = cp.Parameter(name="a")
b = cp.Parameter(name="b")
good = cp.Problem(cp.Minimize(a * x), [x >= 0, x <= 1])
bad = cp.Problem(cp.Minimize(a * b * x), [x >= 0, x <= 1])
same_as_good = good
not_a_problem = 3
print("the script's own output")

if __name__ == "__main__":
    raise SystemExit("the main block must not run")
'''

GP_SCRIPT = '''
import cvxpy as cp

x = cp.Variable(name="x", pos=True)
y = cp.Variable(name="y", pos=True)
a = cp.Parameter(name="a", pos=True)
gp_problem = cp.Problem(cp.Minimize(a * x * y + 1 / (x * y)), [x <= 2])
'''


def write(tmp_path: Path, text: str, name: str = "model.py") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


@pytest.fixture
def script(tmp_path):
    return write(tmp_path, SCRIPT)


def test_compliant_problem_exits_0(script, capsys):
    assert main(["check", f"{script}:good"]) == 0
    out = capsys.readouterr().out
    assert out == f"{script}:good: compliant (DCP+DPP)\nProblem is DPP (DCP+DPP): no findings.\n"


def test_non_compliant_problem_exits_1_and_prints_the_report(script, capsys):
    assert main(["check", f"{script}:bad"]) == 1
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == f"{script}:bad: not compliant, 1 finding (DCP+DPP)"
    assert lines[1] == "Problem must be DPP."
    assert lines[2].startswith("  objective: minimize a * b * x")
    assert lines[3] == "    - a * b"
    assert "[parameter_product]" in lines[4]
    assert "`a_b`" in out


def test_all_problems_of_a_script_are_checked_once_each(script, capsys):
    assert main(["check", script]) == 1
    out = capsys.readouterr().out
    assert f"{script}:good: compliant" in out
    assert f"{script}:bad: not compliant" in out
    assert "same_as_good" not in out  # the same object under a second name


def test_script_output_goes_to_stderr(script, capsys):
    main(["check", f"{script}:good"])
    captured = capsys.readouterr()
    assert "the script's own output" in captured.err
    assert "the script's own output" not in captured.out


def test_json_output(script, capsys):
    assert main(["check", script, "--json"]) == 1
    document = json.loads(capsys.readouterr().out)
    assert document["file"] == script and document["ok"] is False and document["gp"] is False
    names = [p["name"] for p in document["problems"]]
    assert names == ["good", "bad"]
    good, bad = document["problems"]
    assert good["ok"] is True and good["findings"] == []
    (finding,) = bad["findings"]
    assert finding["rule"] == "parameter_product"
    assert finding["expression"] == "a * b"
    assert finding["location"] == "objective"


def test_gp_flag_checks_dgp(tmp_path, capsys):
    path = write(tmp_path, GP_SCRIPT)
    assert main(["check", path, "--gp"]) == 0
    assert "compliant (DGP+DPP)" in capsys.readouterr().out
    assert main(["check", path]) == 1
    out = capsys.readouterr().out
    assert "pass `gp=True`" in out


@pytest.mark.parametrize(("target", "message"), [
    ("missing.py", r"no such file: '.*missing\.py'"),
    ("{script}:nope", r"defines no global named 'nope'; names of its problems: good, bad, "
                      r"same_as_good"),
    ("{script}:not_a_problem", r"model\.py:not_a_problem is not a cvxpy\.Problem \(got int\)"),
])
def test_usage_errors_exit_2(script, capsys, target, message, tmp_path):
    target = target.format(script=script) if "{" in target else str(tmp_path / target)
    assert main(["check", target]) == 2
    err = capsys.readouterr().err
    last = err.splitlines()[-1]  # after the script's own output
    assert last.startswith("conelayers check: error: ")
    assert re.search(message, last)


def test_script_without_problems_exits_2(tmp_path, capsys):
    path = write(tmp_path, "value = 1\n")
    assert main(["check", path]) == 2
    assert "defines no cvxpy.Problem among its globals" in capsys.readouterr().err


def test_script_that_raises_exits_2(tmp_path, capsys):
    path = write(tmp_path, "raise RuntimeError('boom')\n")
    assert main(["check", path]) == 2
    err = capsys.readouterr().err
    assert "raised an exception while being loaded" in err and "RuntimeError: boom" in err


def test_bad_command_line_exits_2(capsys):
    assert main([]) == 2
    assert main(["check"]) == 2
    assert main(["lint", "x.py"]) == 2
    assert "usage: conelayers" in capsys.readouterr().err


def test_script_can_import_its_neighbours(tmp_path, capsys):
    write(tmp_path, "import cvxpy as cp\nx = cp.Variable()\nP = cp.Problem(cp.Minimize(x), "
                    "[x >= 1])\n", name="neighbour_model_for_cli.py")
    path = write(tmp_path, "from neighbour_model_for_cli import P\n")
    assert main(["check", f"{path}:P"]) == 0
    assert str(tmp_path) not in sys.path  # restored afterwards
    sys.modules.pop("neighbour_model_for_cli", None)


def test_python_dash_m_entry_point(script):
    result = subprocess.run([sys.executable, "-m", "conelayers", "check", f"{script}:bad",
                             "--json"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stderr
    assert json.loads(result.stdout)["problems"][0]["findings"][0]["rule"] == (
        "parameter_product")


def test_json_stdout_regression_holds_the_report_alone(tmp_path):
    """Output a script writes below Python's sys.stdout (os.write(1, ...), a
    subprocess, sys.__stdout__), or after the report (an atexit handler), went
    to stdout and made `--json` unparseable (found by a probe, 2026-12-04): the
    program now writes the report to stdout alone, the rest to stderr."""
    script = tmp_path / "noisy.py"
    script.write_text(
        "import atexit, os, subprocess, sys\n"
        "import cvxpy as cp\n"
        "os.write(1, b'from a file descriptor\\n')\n"
        "subprocess.run(['echo', 'from a subprocess'])\n"
        "sys.__stdout__.write('from sys.__stdout__\\n'); sys.__stdout__.flush()\n"
        "atexit.register(lambda: print('from atexit'))\n"
        "x = cp.Variable()\n"
        "problem = cp.Problem(cp.Minimize(x), [x >= 1])\n")
    result = subprocess.run([sys.executable, "-m", "conelayers", "check", str(script),
                             "--json"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["ok"] is True
    for line in ("from a file descriptor", "from a subprocess", "from sys.__stdout__",
                 "from atexit"):
        assert line in result.stderr


def test_directory_regression_is_named_a_directory(tmp_path, capsys):
    """A directory was reported as "no such file" (found by a probe)."""
    assert main(["check", str(tmp_path)]) == 2
    assert "is a directory; pass the path of a Python script in it" in capsys.readouterr().err
