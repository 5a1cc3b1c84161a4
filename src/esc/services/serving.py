"""The controller answers only while its agent keeps saying it is the active.

A frozen active (SIGSTOP, a paused VM) that wakes up has its controller answer the
requests that queued meanwhile before its agent has had a chance to fence: a read,
or an idempotent replay of a write committed before the freeze, answered by a node
that is no longer the active. So the agent, every tick while it serves, renews a
short lease on the controller's stdin (``lease <until>``, CLOCK_BOOTTIME, shared by
every process on the host); past it, every request gets 503, and so does a request
whose answer starts past it. The lease is as long as the freeze the agent tolerates
before fencing (three VRRP adverts), counted from the moment of the observations
that let the node serve, not from when the line is written: an agent frozen in the
middle of a tick wakes up to send a lease that has already run out.
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
    """ASGI middleware: 503 for every HTTP request once the lease has run out, checked
    when the request comes in and again when its answer starts: a request that was
    being handled when the node froze is not answered from what it read before."""

    BODY = json.dumps({"error": "this node is not serving: its agent has not confirmed it "
                                "is the active (retry through the VIP)"}).encode()

    def __init__(self, app: Any, lease: ServingLease) -> None:
        self.app, self.lease = app, lease

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if not self.lease.valid():
            await self._refuse(send)
            return
        refused = False

        async def send_if_still_serving(message: dict) -> None:
            nonlocal refused
            if refused:
                return  # the app's own answer, dropped
            if message["type"] == "http.response.start" and not self.lease.valid():
                refused = True
                await self._refuse(send)
                return
            await send(message)

        await self.app(scope, receive, send_if_still_serving)

    async def _refuse(self, send: Any) -> None:
        await unavailable(send, self.BODY, b"application/json", 1)


async def unavailable(send: Any, body: bytes, content_type: bytes, retry_after_s: int) -> None:
    """A whole 503 answer with Retry-After, on an ASGI ``send``."""
    await send({"type": "http.response.start", "status": 503,
                "headers": [(b"content-type", content_type),
                            (b"retry-after", str(retry_after_s).encode()),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class OperationMode:
    """The pair's operation mode as the agent last said (``mode <operation|maintenance>``
    on stdin). In maintenance the northbound refuses new requests (MaintenanceGate) and
    the VNF monitor pauses; listeners are told of each change."""

    def __init__(self) -> None:
        self.mode = "operation"
        self.listeners: list[Any] = []

    @property
    def maintenance(self) -> bool:
        return self.mode == "maintenance"

    def set(self, mode: str) -> None:
        if mode == self.mode:
            return
        self.mode = mode
        for listener in self.listeners:
            listener(mode)


def parse_mode_line(line: str) -> str | None:
    parts = line.split()
    if len(parts) == 2 and parts[0] == "mode" and parts[1] in ("operation", "maintenance"):
        return parts[1]
    return None


class MaintenanceGate:
    """ASGI middleware: in maintenance mode, 503 with Retry-After to every new request
    (those already in progress finish). ``problem``: answer as application/problem+json
    (the ETSI API), else the REST API's ``{"error": ...}``."""

    DETAIL = ("the pair is in maintenance mode: new northbound requests are refused until "
              "`escadm op_mode set --mode=operation`")
    RETRY_AFTER_S = 60

    def __init__(self, app: Any, mode: OperationMode, problem: bool = False) -> None:
        self.app, self.mode, self.problem = app, mode, problem
        if problem:
            self.body = json.dumps({"status": 503, "title": "Service Unavailable",
                                    "detail": self.DETAIL}).encode()
            self.content_type = b"application/problem+json"
        else:
            self.body = json.dumps({"error": self.DETAIL}).encode()
            self.content_type = b"application/json"

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not self.mode.maintenance:
            await self.app(scope, receive, send)
            return
        await unavailable(send, self.body, self.content_type, self.RETRY_AFTER_S)
