"""Pick the fastest of several equivalent kernels by timing them on this machine.

Which convolution algorithm wins depends on the CPU (vector width, cache sizes, bf16
support), the thread count and the feature-map shape: on one CPU NNPACK's Winograd was 3x
faster than oneDNN's direct convolution at 480p, on another it was slower. No fixed rule or
CPU-family table gets this right everywhere, so the first call with a given key (shape,
dtype, threads...) times every candidate on the real inputs, keeps the fastest for the
rest of the process, and logs the choice once. Later calls cost one dictionary lookup.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable, Mapping
from typing import TypeVar

R = TypeVar("R")
log = logging.getLogger("xmem.kernels")
# Timed calls per candidate, interleaved, keeping each one's minimum (noise only adds time):
# at least MIN_ROUNDS, and more, up to MAX_ROUNDS, while the measurement of this key has
# taken less than CHEAP_S (on a shared CPU a short call can lose a whole scheduler slice).
# Calls long enough to pass CHEAP_S in one round are measured once: a lost slice is small
# against them, and a second round doubled the first frame's wait at 480p (3 objects, AMD
# EPYC 2 cores: 55-66 s for the first 3 frames with two rounds, 35-43 s with one; the
# frames after ran as fast).
MIN_ROUNDS, MAX_ROUNDS, CHEAP_S = 1, 8, 0.25


class KernelTuner:
    """A per-process cache key -> the name of the fastest candidate, filled by measuring.

    `clock` is injectable so tests can say which candidate "is" fastest.
    """

    def __init__(
        self,
        clock: Callable[[], float] = time.perf_counter,
        min_rounds: int = MIN_ROUNDS,
        max_rounds: int = MAX_ROUNDS,
        cheap_s: float = CHEAP_S,
    ) -> None:
        self.clock = clock
        self.min_rounds = max(1, int(min_rounds))
        self.max_rounds = max(self.min_rounds, int(max_rounds))
        self.cheap_s = cheap_s
        self._choices: dict[Hashable, str] = {}
        self._timings: dict[Hashable, dict[str, float]] = {}
        self._lock = threading.Lock()  # one measurement at a time: parallel ones distort

    def choices(self) -> dict[Hashable, str]:
        """A copy of every choice made so far."""
        return dict(self._choices)

    def timings(self, key: Hashable) -> dict[str, float] | None:
        """Seconds each candidate took when `key` was measured (best round), if it was."""
        found = self._timings.get(key)
        return None if found is None else dict(found)

    def clear(self) -> None:
        """Forget every choice (the next call of each key measures again)."""
        with self._lock:
            self._choices.clear()
            self._timings.clear()

    def run(self, key: Hashable, candidates: Mapping[str, Callable[[], R]]) -> R:
        """The result of the fastest candidate for `key`, measuring all of them first if
        `key` is new. Candidates must compute the same thing (up to float rounding)."""
        chosen = self._choices.get(key)
        if chosen is not None and chosen in candidates:
            return candidates[chosen]()
        if len(candidates) == 1:
            name, fn = next(iter(candidates.items()))
            self._choices[key] = name
            return fn()
        with self._lock:
            chosen = self._choices.get(key)
            if chosen is not None and chosen in candidates:
                return candidates[chosen]()
            best: dict[str, float] = {}
            result: dict[str, R] = {}
            spent = 0.0
            rounds = 0
            while rounds < self.min_rounds or (rounds < self.max_rounds and spent < self.cheap_s):
                for name, fn in candidates.items():
                    start = self.clock()
                    out = fn()
                    took = self.clock() - start
                    best[name] = min(took, best.get(name, float("inf")))
                    result[name] = out
                    spent += took
                rounds += 1
            chosen = min(best, key=best.__getitem__)
            self._choices[key] = chosen
            self._timings[key] = best
        log.info(
            "kernel for %s: %s (%s)",
            key,
            chosen,
            ", ".join(f"{n} {s * 1000:.2f} ms" for n, s in best.items()),
        )
        return result[chosen]
