"""How the app's process uses glibc's heap: big tensors reused between frames, and freed
pages given back to the OS after each request.

Between frames a model allocates and frees the same large tensors (tens to hundreds of MB
of activations and convolution buffers). By default glibc maps every block over its mmap
threshold (at most 32 MB) straight from the OS and unmaps it on free, so each frame faults
those pages in and zeroes them again: XMem at 480x864 with 3 objects faulted in 1.3-1.6 GB
per frame; with `keep_large_blocks` none, and it ran 4-17 % faster over 240x432 / 480x864
with 1 / 3 objects (AMD EPYC, 2 threads; benchmarks/bench_xmem_upstream.py).
`keep_large_blocks` serves them from the heap and stops glibc trimming it on every free;
`release_memory` trims once at the end of each request instead, so the process still goes
back to its resting size between requests (the reliability suite checks that). The number
of glibc arenas, the other half of a flat memory profile under concurrent requests, is set by
``MALLOC_ARENA_MAX`` in the image's environment, not here: it only takes effect before the
first allocation.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

logger = logging.getLogger(__name__)

# mallopt(3) parameters
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
LARGE_BLOCK_BYTES = 1 << 30  # blocks up to this size come from the heap (1080p activations fit)
TRIM_THRESHOLD_BYTES = (1 << 31) - 1  # no automatic trim: release_memory trims per request


def _load_libc() -> ctypes.CDLL | None:
    """glibc, when it is the C library (None on macOS, musl: the functions are no-ops there)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None


_LIBC = _load_libc()


def keep_large_blocks() -> bool:
    """Serve blocks up to LARGE_BLOCK_BYTES from the heap and trim it only when asked, for
    the whole process (call once at start). False where glibc is not the C library."""
    if _LIBC is None:
        return False
    applied = bool(
        _LIBC.mallopt(_M_MMAP_THRESHOLD, LARGE_BLOCK_BYTES)
        and _LIBC.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
    )
    if not applied:
        logger.warning("glibc refused the heap settings; large blocks stay mapped per use")
    return applied


def release_memory() -> None:
    """Trim the heap (a no-op where glibc is not the C library)."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)
