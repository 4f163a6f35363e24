"""Command line: ``python -m conelayers check FILE.py[:NAME] [--json] [--gp]``.

``check`` runs the script ``FILE.py`` (with ``runpy``, in a fresh namespace
whose ``__name__`` is ``"__conelayers_check__"``, so an
``if __name__ == "__main__":`` block does not run), finds the
``cvxpy.Problem`` objects among its globals, or the one named ``NAME``, and
prints :func:`conelayers.check_dpp`'s report for each.

Exit status: 0 when every problem checked is compliant, 1 when one is not,
2 for a usage error (missing file, ``NAME`` not found or not a problem, no
problem in the script, the script raised).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import runpy
import sys
import traceback
from collections.abc import Sequence
from typing import IO, Any

import cvxpy as cp

from ._dpp import DPPReport, check_dpp

__all__ = ["main", "run"]

EXIT_OK = 0
EXIT_NOT_COMPLIANT = 1
EXIT_USAGE = 2
RUN_NAME = "__conelayers_check__"


class _UsageError(Exception):
    """A problem with the command line or the script; exit status 2."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="conelayers",
        description="Tools for conelayers, differentiable convex optimization layers.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    check = commands.add_parser(
        "check",
        help="explain whether the cvxpy problems of a script follow the DPP rules",
        description=(
            "Run a Python script, find the cvxpy.Problem objects among its globals "
            "(or the one named NAME) and explain, for each, whether and why it is not "
            "DPP. Exit status: 0 all compliant, 1 some not compliant, 2 usage error."
        ),
    )
    check.add_argument("target", metavar="FILE.py[:NAME]",
                       help="the script, optionally with the name of one problem variable")
    check.add_argument("--json", action="store_true",
                       help="print the reports as JSON instead of text")
    check.add_argument("--gp", action="store_true",
                       help="check the problems as geometric programs (DGP+DPP)")
    return parser


def _split_target(target: str) -> tuple[str, str | None]:
    """``"path/file.py:prob"`` -> (``"path/file.py"``, ``"prob"``)."""
    path, sep, name = target.rpartition(":")
    if sep and path and name.isidentifier():
        return path, name
    return target, None


def _run_script(path: str) -> dict[str, Any]:
    """The globals of ``path`` after running it; its prints go to stderr."""
    if os.path.isdir(path):
        raise _UsageError(f"{path!r} is a directory; pass the path of a Python script in it.")
    if not os.path.isfile(path):
        raise _UsageError(f"no such file: {path!r}; pass the path of a Python script.")
    directory = os.path.dirname(os.path.abspath(path))
    saved_argv, saved_path = sys.argv[:], sys.path[:]
    sys.argv = [path]
    sys.path.insert(0, directory)  # as `python FILE.py` would, for its local imports
    try:
        with contextlib.redirect_stdout(sys.stderr):  # keep stdout for the report
            return runpy.run_path(path, run_name=RUN_NAME)
    except SystemExit as exc:
        raise _UsageError(f"{path} called sys.exit({exc.code!r}) while being loaded.") from exc
    except Exception as exc:
        trace = "".join(traceback.format_exception(exc))
        raise _UsageError(f"{path} raised an exception while being loaded:\n{trace}") from exc
    finally:
        sys.argv, sys.path[:] = saved_argv, saved_path


def _problem_names(namespace: dict[str, Any]) -> str:
    names = [k for k, v in namespace.items() if isinstance(v, cp.Problem)]
    return ", ".join(names) if names else "(none)"


def _find_problems(namespace: dict[str, Any], path: str,
                   name: str | None) -> list[tuple[str, cp.Problem]]:
    if name is not None:
        if name not in namespace:
            raise _UsageError(
                f"{path} defines no global named {name!r}; names of its problems: "
                f"{_problem_names(namespace)}."
            )
        value = namespace[name]
        if not isinstance(value, cp.Problem):
            raise _UsageError(
                f"{path}:{name} is not a cvxpy.Problem (got {type(value).__name__}); "
                "name a variable that holds the problem."
            )
        return [(name, value)]
    found: list[tuple[str, cp.Problem]] = []
    seen: set[int] = set()
    for key, value in namespace.items():
        if isinstance(value, cp.Problem) and not key.startswith("__") and id(value) not in seen:
            seen.add(id(value))
            found.append((key, value))
    if not found:
        raise _UsageError(
            f"{path} defines no cvxpy.Problem among its globals; build the problem at "
            "module level (not only under `if __name__ == \"__main__\":`) or name it "
            "with FILE.py:NAME."
        )
    return found


def _check(args: argparse.Namespace, out: IO[str]) -> int:
    path, name = _split_target(args.target)
    namespace = _run_script(path)
    reports: list[tuple[str, DPPReport]] = [
        (key, check_dpp(problem, gp=args.gp))
        for key, problem in _find_problems(namespace, path, name)
    ]
    all_ok = all(report.ok for _, report in reports)
    if args.json:
        document = {
            "file": path,
            "gp": args.gp,
            "ok": all_ok,
            "problems": [{"name": key, **report.to_dict()} for key, report in reports],
        }
        print(json.dumps(document, indent=2, ensure_ascii=False), file=out)
    else:
        blocks = []
        for key, report in reports:
            count = len(report.findings)
            verdict = ("compliant" if report.ok else
                       f"not compliant, {count} finding{'s' if count != 1 else ''}")
            blocks.append(f"{path}:{key}: {verdict} ({report.discipline})\n{report}")
        print("\n\n".join(blocks), file=out)
    return EXIT_OK if all_ok else EXIT_NOT_COMPLIANT


def main(argv: Sequence[str] | None = None, out: IO[str] | None = None) -> int:
    """Run the ``conelayers`` command line; return the exit status.

    Parameters
    ----------
    argv : sequence of str, optional
        The arguments after the program name; ``sys.argv[1:]`` by default.
    out : text stream, optional
        Where the report goes; ``sys.stdout`` by default (see :func:`run`).

    Returns
    -------
    int
        0 when every problem checked is compliant, 1 when one is not, 2 for a
        usage error.
    """
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on bad usage, 0 on --help
        return int(exc.code or 0)
    try:
        return _check(args, out if out is not None else sys.stdout)
    except _UsageError as exc:
        print(f"conelayers {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


def run() -> int:
    """The program (``python -m conelayers``, the ``conelayers`` script): the
    report alone on stdout. Everything else written to file descriptor 1 goes to
    stderr, for the rest of the process: the checked script's prints at the C or
    file-descriptor level, its subprocesses', an ``atexit`` handler's or a
    thread's after the report (each of which had made ``--json`` output
    unparseable; ``contextlib.redirect_stdout`` moves Python's ``sys.stdout``
    only, and only while the script loads)."""
    sys.stdout.flush()
    report = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    try:
        return main(out=report)
    finally:
        report.flush()


if __name__ == "__main__":
    sys.exit(run())
