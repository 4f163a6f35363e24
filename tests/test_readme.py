"""The README is the manual: every ```python block in it runs.

A block runs in a fresh namespace, in the order written. A block preceded by
an ``<!-- not run: why -->`` comment is skipped (it needs something the suite
cannot have, e.g. a Dask scheduler at a remote address); one that imports a
front-end whose framework is not installed is skipped too.
"""

from __future__ import annotations

import importlib.util
import pathlib
import re
import warnings

import pytest

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"
_BLOCK = re.compile(r"(?:<!-- not run: (?P<why>[^>]*) -->\s*\n)?```python\n(?P<code>.*?)```",
                    re.S)


def _blocks() -> list:
    text = README.read_text(encoding="utf-8")
    params = []
    for m in _BLOCK.finditer(text):
        line = text.count("\n", 0, m.start("code")) + 1
        marks = [pytest.mark.skip(reason=m["why"])] if m["why"] else []
        # padded so that a traceback's line numbers are the README's
        params.append(pytest.param("\n" * (line - 1) + m["code"], marks=marks,
                                   id=f"line {line}"))
    return params


BLOCKS = _blocks()


def test_the_readme_has_python_examples():
    assert len(BLOCKS) >= 6


@pytest.mark.parametrize("code", BLOCKS)
def test_readme_block_runs(code, monkeypatch, tmp_path):
    for framework in ("torch", "tensorflow"):
        if re.search(rf"^\s*(import|from) ({framework}|conelayers\.{framework})\b", code, re.M) \
                and importlib.util.find_spec(framework) is None:
            pytest.skip(f"{framework} is not installed")
    monkeypatch.chdir(tmp_path)  # a block that writes files writes them here
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # third-party noise
        exec(compile(code, str(README), "exec"), {"__name__": "__readme__"})
