"""Repository-level pytest configuration: doctests of the optional front-ends
are collected only where their framework is installed (a bare-core
environment must still run the suite)."""

import importlib.util

collect_ignore = [
    f"conelayers/{name}" for name in ("torch", "tensorflow")
    if importlib.util.find_spec(name) is None
]
