"""The layer's own process pool: ``executor="processes"``.

In this process, refinement and the derivative (short NumPy and LAPACK calls,
with the GIL held between them) run on one thread, beside threads that solve
(the solvers release the GIL): see :mod:`conelayers._parallel`. Worker
processes refine in parallel too. Measured on this 2-core machine against the
old thread scheme (B = 256, interleaved, medians of 3; forward + backward per
item): sparsemax 3.44 → 2.47 ms, the 20-variable QP 3.22 → 2.02 ms, NNLS + l1
(B = 128) 14.2 → 10.1 ms, with identical values and gradients; README
"Performance" has both columns for the current engine. It is not the default
because worker processes start by importing the user's main module (the
``forkserver`` and ``spawn`` start methods do; ``fork`` is unsafe in a
process with threads), which requires the ``if __name__ == "__main__":``
guard of every multiprocessing program, and cost about 2 s to start.

One pool per process, created on first use and shared by every layer, with
one worker per usable core; it shuts down at interpreter exit.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from concurrent.futures import ProcessPoolExecutor

__all__ = ["PROCESSES", "process_pool", "usable_cores"]

PROCESSES = "processes"
_POOL: ProcessPoolExecutor | None = None
_LOCK = threading.Lock()
_FORKED = False  # whether this process is a fork of one that may have used the pool


def _after_fork_in_child() -> None:
    """A forked child inherits the parent's pool object but not the threads
    that feed its workers, nor a forkserver of its own: it solves in-process
    instead (``process_pool`` returns None there; see ``_parallel._after_fork_in_child``
    for the solving threads). A layer holding the parent's pool hung in such a
    child, and a new pool raised "ChildProcessError: No child processes"
    (found by a probe); a pool of its own would have outlived the child, whose
    exit waits for its workers."""
    global _POOL, _FORKED
    _POOL, _FORKED = None, True  # (not the parent's: never used here)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def process_pool() -> ProcessPoolExecutor | None:
    """The shared pool (created on first call; workers start on first use);
    None in a forked child (see ``_after_fork_in_child``): in-process there."""
    global _POOL
    if _FORKED:
        return None
    with _LOCK:
        if _POOL is not None and getattr(_POOL, "_broken", False):
            # A worker died (killed, out of memory): the call that held it raised
            # ExecutorError, and the pool refuses all work since
            # (BrokenProcessPool, every later call, found by a probe). A new one.
            # (``_broken`` is private: what ProcessPoolExecutor.submit checks.)
            _POOL.shutdown(wait=False, cancel_futures=True)
            _POOL = None
        if _POOL is None:
            methods = multiprocessing.get_all_start_methods()
            context = multiprocessing.get_context(
                "forkserver" if "forkserver" in methods else "spawn")
            _POOL = ProcessPoolExecutor(max_workers=usable_cores(), mp_context=context)
        return _POOL
