"""The one clock for windows, leases and timeouts: CLOCK_BOOTTIME.

Monotonic like ``time.monotonic`` (wall-clock steps do not move it), but it keeps
counting while the machine is suspended: a VM paused or suspended for ten seconds
sees ten seconds pass, so its promote window and lease run out and its freeze
sentinel notices the gap. ``time.monotonic`` (CLOCK_MONOTONIC) stops during a
suspend, and a node that wakes would act on windows that ended long ago.
"""

from __future__ import annotations

import time


def now() -> float:
    return time.clock_gettime(time.CLOCK_BOOTTIME)
