"""One BLAS thread for Home's own numpy work (embedding queries, the memory matrix, the router).

Why: the products are small (one query through MiniLM, a 100k×384 mat-vec) and llama.cpp already keeps
the cores busy. OpenBLAS's thread pool spins while it waits; with the cores taken, a one-query embedding
went from 15 ms to 180 ms (p95 500 ms) on 2 shared cores. One thread is never slower than that here.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

_done = False
_bulk = 0  # nesting depth of all_blas_threads(): other runtimes (vault/bert_onnx.py) follow it too


def one_blas_thread() -> None:
    """Limit numpy's BLAS to one thread for this process (idempotent, cheap after the first call)."""
    global _done
    if _done:
        return
    _done = True
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # without threadpoolctl numpy keeps its default pool: slower, still correct
        return
    threadpool_limits(limits=1, user_api="blas")


@contextmanager
def all_blas_threads() -> Iterator[None]:
    """Every core for numpy's BLAS inside the block: for foreground bulk embedding with no model
    running beside it (`home memory reindex`, building a bench vault). Back to one thread after."""
    global _bulk
    _bulk += 1
    try:
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:
            yield
            return
        one_blas_thread()
        with threadpool_limits(limits=os.cpu_count() or 1, user_api="blas"):
            yield
    finally:
        _bulk -= 1


def threads_now() -> int:
    """How many threads Home's own numeric work may use now: every core inside `all_blas_threads()`,
    else one."""
    return (os.cpu_count() or 1) if _bulk else 1
