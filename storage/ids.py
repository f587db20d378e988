"""Record ids that sort in the order they were made.

Rows written in one transaction share ``created_at``, and snapshots list pairs and generations by id,
so "oldest first" is decided by the id wherever the clock ties. With random ids (uuid4) that order was
a coin toss: two runs of one seeded round paired, queued and trained on their rows in different orders.
An id here starts with a microsecond clock that never repeats or goes back within a process (the
counter trick of UUIDv7), followed by random bits so that ids made by two processes at once differ.
"""

from __future__ import annotations

import os
import re
import threading
import time

_CLOCK_HEX = 14  # microseconds since 1970 fit 14 hex digits (and ids sort by them) until the year 4253
_RANDOM_BYTES = 3


class _MonotonicClock:
    """Microseconds since the epoch, strictly increasing across calls in this process (thread-safe)."""

    def __init__(self) -> None:
        self._last = 0
        self._lock = threading.Lock()

    def reserve(self, n: int) -> int:
        """The first of ``n`` consecutive readings, all later than any reading handed out before."""
        with self._lock:
            first = max(time.time_ns() // 1000, self._last + 1)
            self._last = first + n - 1
            return first


# The one piece of process state ids need: like the uuid module's own UUIDv7 counter, it must be shared
# by every caller for ids to sort in the order they were made.
_clock = _MonotonicClock()


def new_id(prefix: str) -> str:
    """A unique id with a readable prefix (``pair_0641f...``); an id made later in this process sorts later."""
    return new_ids(prefix, 1)[0]


def looks_like_id(value: str, prefix: str) -> bool:
    """Whether ``value`` has the shape of an id this module makes with ``prefix`` (``pair_0641f...``): an id
    of that shape missing from the store is a typo or another store's, never another tool's own id."""
    return re.fullmatch(rf"{re.escape(prefix)}_[0-9a-f]{{{_CLOCK_HEX + 2 * _RANDOM_BYTES}}}", value) is not None


def new_ids(prefix: str, n: int) -> list[str]:
    """``n`` ids as by :func:`new_id`, in the order they sort (fast for big imports)."""
    if n <= 0:
        return []
    first = _clock.reserve(n)
    blob = os.urandom(_RANDOM_BYTES * n).hex()
    width = 2 * _RANDOM_BYTES
    return [f"{prefix}_{first + i:0{_CLOCK_HEX}x}{blob[width * i:width * (i + 1)]}" for i in range(n)]
