"""The controller answers only while its agent keeps saying it is the active.

A frozen active (SIGSTOP, a paused VM) that wakes up has its controller answer the
requests that queued meanwhile before its agent has had a chance to fence: a read,
or an idempotent replay of a write committed before the freeze, answered by a node
that is no longer the active. So the agent, every tick while it serves, renews a
short lease on the controller's stdin (``lease <until>``, CLOCK_BOOTTIME, shared by
every process on the host); past it, every request gets 503. The lease is as long
as the freeze the agent tolerates before fencing (three VRRP adverts): a node frozen
longer may have been replaced, and its controller answers nothing when it wakes.
"""

from __future__ import annotations

import json
import math
from typing import Any

from esc import clock


class ServingLease:
    def __init__(self, until: float = math.inf) -> None:
        self.until = until  # math.inf: not managed by an agent (manual runs, tests)

    def renew(self, until: float) -> None:
        self.until = until

    def valid(self) -> bool:
        return clock.now() < self.until


def parse_lease_line(line: str) -> float | None:
    parts = line.split()
    if len(parts) == 2 and parts[0] == "lease":
        try:
            value = float(parts[1])
        except ValueError:
            return None
        return value if math.isfinite(value) else None
    return None


class ServingGate:
    """ASGI middleware: 503 for every HTTP request once the lease has run out."""

    BODY = json.dumps({"error": "this node is not serving: its agent has not confirmed it "
                                "is the active (retry through the VIP)"}).encode()

    def __init__(self, app: Any, lease: ServingLease) -> None:
        self.app, self.lease = app, lease

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or self.lease.valid():
            await self.app(scope, receive, send)
            return
        await send({"type": "http.response.start", "status": 503,
                    "headers": [(b"content-type", b"application/json"),
                                (b"retry-after", b"1"),
                                (b"content-length", str(len(self.BODY)).encode())]})
        await send({"type": "http.response.body", "body": self.BODY})
