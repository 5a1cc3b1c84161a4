"""The controller's own metrics (escmanager and the ETSI service): how long northbound
requests take, by route and status, and how long a commit takes to be confirmed on
both nodes.

Under an agent each service runs with ``PROMETHEUS_MULTIPROC_DIR`` set to a
directory of its own (prometheus-client's multiprocess mode): the values live in
files there and the agent's ``/metrics`` (esc.agent.metrics) reads them, so one scrape
of the health port shows the node and its services. Without it (tests, manual runs)
they are ordinary in-process metrics.
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import Histogram

API_LATENCY = Histogram(
    "esc_api_request_duration_seconds", "Time to answer a northbound request",
    ["service", "method", "route", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0))
COMMIT_LATENCY = Histogram(
    "esc_commit_duration_seconds",
    "Time for a commit to be confirmed (on both nodes while replication is synchronous)",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0))


def route_of(scope: dict[str, Any]) -> str:
    """The route's template (/v0/deployments/{name}), never the path itself: one series
    per route, whatever the clients send."""
    route = scope.get("route")
    path = getattr(route, "path_format", None) or getattr(route, "path", None)
    if isinstance(path, str):
        return path
    endpoint = scope.get("endpoint")
    name = getattr(endpoint, "__name__", None)
    return f"<{name}>" if name else "<unmatched>"


class RequestMetrics:
    """ASGI middleware: every HTTP request's duration, by service, method, route and status."""

    def __init__(self, app: Any, service: str) -> None:
        self.app, self.service = app, service

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            API_LATENCY.labels(self.service, scope.get("method", ""), route_of(scope),
                               str(status)).observe(time.perf_counter() - started)
