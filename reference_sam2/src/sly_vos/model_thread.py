"""The one thread every model pass of an app runs on.

One model pass at a time bounds memory and avoids contention on small machines. Running
them all on the *same* thread also matters: PyTorch's CPU kernels (oneDNN, NNPACK) keep
per-thread workspaces and caches, so passes spread over the server's request threads leave
one set behind in each of them (measured: XMem's RSS stayed 35 % higher after 8 concurrent
clients). Requests wait here without holding frames: frames are decoded or downloaded by the
work submitted, on this thread.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


class ModelThread:
    """A single worker thread; ``run`` waits for the result, ``submit`` does not."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
        self._ident: int | None = None
        self._pool.submit(self._remember).result()

    def _remember(self) -> None:
        self._ident = threading.get_ident()

    def on_it(self) -> bool:
        return threading.get_ident() == self._ident

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        return self._pool.submit(fn, *args)

    def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on the model thread (directly when already on it)."""
        if self.on_it():
            return fn(*args)
        return self._pool.submit(fn, *args).result()

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
