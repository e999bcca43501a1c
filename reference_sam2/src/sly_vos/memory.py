"""Give freed heap pages back to the OS after each request.

Frames are a few MB each; after the first is freed glibc raises its mmap threshold and
serves the next ones from the heap, whose free pages it keeps. Without a trim the process
stays at the peak of its largest request forever. (The number of glibc arenas, the other
half of a flat memory profile under concurrent requests, is set by ``MALLOC_ARENA_MAX`` in
the image's environment, not here: it only takes effect before the first allocation.)
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable


def _load_malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim`` (None on other C libraries: macOS, musl)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim
    except (OSError, AttributeError):
        return None


_MALLOC_TRIM = _load_malloc_trim()


def release_memory() -> None:
    """Trim the heap (a no-op where glibc is not the C library)."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)
