"""The engine on any ``concurrent.futures.Executor``: processes, Dask, Ray.

A batch is cut into chunks of consecutive items; each chunk is one task
running :mod:`conelayers._engine` in a worker. The canonicalized layer (an
:class:`~conelayers._engine.Engine`) travels to a worker once: tasks carry a
token, workers keep the engines they have seen, and a worker that lacks one
answers ``_NEED`` and gets the chunk again with the pickled engine (the first
wave ships it along to as many chunks as the executor says it has workers).

Only compact results come back: the refined solution (x, y, s) per item, not
its factorization. The backward pass sends (x, y, s) and the cotangents out
again and the worker rebuilds the factorization: measured, re-factoring a
solved item costs 2-20 % of solving it, while shipping factors back would
cost more than the factorization and keep memory on workers that a generic
executor cannot address again.

Warnings raised in workers (inaccurate solutions, singular derivatives) are
re-issued here; a worker that fails or dies makes the whole call fail with an
:class:`~conelayers.ExecutorError` naming the items it held.
"""

from __future__ import annotations

import pickle
import threading
import uuid
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import Executor
from typing import Any

from . import _engine
from ._errors import ConelayersWarning, ExecutorError

__all__ = ["map_chunks", "new_token"]

_NEED = "conelayers: engine not on this worker"
_ENGINES: OrderedDict[str, _engine.Engine] = OrderedDict()  # per worker process
_ENGINES_MAX = 16
_LOCK = threading.Lock()


def _solve(engine: _engine.Engine, *args: Any, jobs: int) -> _engine.ItemsResult:
    """Solve a chunk; what travels back is the compact result (the derivatives
    re-factor on a worker, so refinement keeps no factors for them here)."""
    return _engine.solve_items(engine, *args, differentiable=False, jobs=jobs).compact()


_FUNCTIONS = {"solve": _solve, "vjp": _engine.vjp_items, "jvp": _engine.jvp_items}


def new_token() -> str:
    return uuid.uuid4().hex


def _run(token: str, blob: bytes | None, fn: str, args: tuple[Any, ...]) -> Any:
    """The task a worker runs: find (or unpickle) the engine, run ``fn``."""
    with _LOCK:
        engine = _ENGINES.get(token)
        if engine is None:
            if blob is None:
                return _NEED
            engine = pickle.loads(blob)
            _ENGINES[token] = engine
            while len(_ENGINES) > _ENGINES_MAX:
                _ENGINES.popitem(last=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConelayersWarning)
        result = _FUNCTIONS[fn](engine, *args, jobs=1)
    sent = [(w.category, str(w.message)) for w in caught
            if issubclass(w.category, ConelayersWarning)]
    return result, sent


def _worker_estimate(executor: Executor) -> int:
    """How many workers the executor has, where it says so (else 1)."""
    n = getattr(executor, "_max_workers", None)
    if isinstance(n, int) and n > 0:
        return n
    client = getattr(executor, "_client", None)  # dask.distributed's ClientExecutor
    try:
        return max(1, sum(client.nthreads().values())) if client is not None else 1
    except Exception:
        return 1


def _spans(ranges: Sequence[range]) -> str:
    """Consecutive item ranges as spans ("0-161", not every chunk of one item)."""
    spans: list[list[int]] = []
    for r in ranges:
        if spans and spans[-1][1] == r.start - 1:
            spans[-1][1] = r.stop - 1
        else:
            spans.append([r.start, r.stop - 1])
    return ", ".join(f"{a}-{b}" if b > a else str(a) for a, b in spans)


def map_chunks(executor: Executor, engine: _engine.Engine, token: str, fn: str,
               chunks: Sequence[tuple[Any, ...]], items: Sequence[range]) -> list[Any]:
    """Run ``fn(engine, *chunk)`` for every chunk on ``executor``; results in order."""
    blob: bytes | None = None

    def payload() -> bytes:
        nonlocal blob
        if blob is None:
            blob = pickle.dumps(engine)
        return blob

    first_wave = _worker_estimate(executor)
    try:
        futures = [executor.submit(_run, token, payload() if k < first_wave else None, fn, args)
                   for k, args in enumerate(chunks)]
    except Exception as exc:
        # (A shut-down pool's RuntimeError, a closed Dask client's ClosedClientError,
        # a broken pool's BrokenProcessPool escaped as they were; found by a probe.)
        raise ExecutorError(
            f"the executor refused the work ({type(exc).__name__}: {exc}); nothing was "
            "solved. Pass an executor that is running (executor='processes' makes the "
            "layer's own pool again where a worker of it died).",
            [i for r in items for i in r],
        ) from exc
    results: list[Any] = [None] * len(chunks)
    failed: list[tuple[range, BaseException]] = []
    for k, future in enumerate(futures):
        try:
            result = future.result()
            if isinstance(result, str) and result == _NEED:
                result = executor.submit(_run, token, payload(), fn, chunks[k]).result()
        except BaseException as exc:
            if isinstance(exc, KeyboardInterrupt):
                raise
            failed.append((items[k], exc))
            continue
        results[k] = result
    if failed:
        held = _spans([r for r, _ in failed])
        first = failed[0][1]
        raise ExecutorError(
            f"the executor failed on batch item(s) {held} ({type(first).__name__}: {first}); "
            "no partial result is returned. If a worker died (out of memory, killed), give "
            "it more memory or use smaller chunks (`chunk_size`).",
            [i for r, _ in failed for i in r],
        ) from first
    values = []
    for result, sent in results:
        for category, message in sent:
            warnings.warn(message, category, stacklevel=4)
        values.append(result)
    return values
