"""The health API of the original (port 8060): ``GET /esc/health`` and ``/esc/health/active``.

Served by every node's agent on all addresses, so through the VIP it is the
active that answers, and it reports on the whole pair (it knows its peer).
``/esc/health/active`` is a plain 200/503 for load balancers and checks.

Codes: 2000 fully healthy; 20x0 service provided but the pair is degraded;
50x0 no service from this node. ``stage`` is INIT while the node is finding its
place in the pair, READY once it is ACTIVE, STANDBY or STANDALONE.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar
from xml.etree import ElementTree

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from esc import web

T = TypeVar("T")
HEALTH_PORT = 8060
READY_ROLES = ("ACTIVE", "STANDBY", "STANDALONE")


def pair_health(st: dict) -> dict:
    """The health answer for one node's status (pure)."""
    role = st.get("role", "STOPPED")
    db = st.get("db", {})
    stage = "READY" if role in READY_ROLES else "INIT"
    serving = st.get("services", {}).get("escmanager", {}).get("detail") == "serving"
    if role == "STANDALONE":
        if db.get("state") == "primary" and serving:
            return _h(2000, "ESC services are running (standalone)", stage, role)
        return _h(5020, "ESC services are not running: database or service down", stage, role)
    if role != "ACTIVE":
        return _h(5010, f"ESC services are not provided by this node (role {role}: "
                  f"{st.get('reason', '')})", stage, role)
    if db.get("state") != "primary" or not serving:
        return _h(5020, "ESC active node without a running database or service", stage, role)
    peer = st.get("peer", {})
    if not peer.get("reachable"):
        return _h(2010, "ESC services are running; the standby node is not reachable", stage, role)
    if not db.get("peer_complete"):
        if db.get("peer_streaming"):
            return _h(2020, "ESC services are running; the standby is catching up", stage, role)
        return _h(2030, "ESC services are running; replication to the standby is broken "
                  "(committing alone)", stage, role)
    return _h(2000, "ESC services are running; standby in sync", stage, role)


def _h(code: int, message: str, stage: str, role: str) -> dict:
    return {"status_code": code, "message": message, "stage": stage, "role": role}


def to_xml(body: dict) -> bytes:
    root = ElementTree.Element("esc_health")
    for k, v in body.items():
        ElementTree.SubElement(root, k).text = str(v)
    return ElementTree.tostring(root, xml_declaration=True, encoding="utf-8")


class Snapshot(Generic[T]):
    """``make()``'s value at most ``max_age`` seconds old, made by one caller at a time:
    a flood of requests costs one status (which runs ``ip``) per interval."""

    def __init__(self, make: Callable[[], T], max_age: float = 0.5) -> None:
        self.make, self.max_age = make, max_age
        self.lock = threading.Lock()
        self.value: T | None = None
        self.at = -1e18

    def get(self) -> T:
        with self.lock:
            if self.value is None or time.monotonic() - self.at >= self.max_age:
                self.value, self.at = self.make(), time.monotonic()
            return self.value


class MetricsAuth:
    """HTTP Basic for /metrics when a user is set (``user()``: its name and password
    hash, or None: open). A verified header is remembered (scrypt is slow on purpose);
    past ``MAX_FAILURES`` failures in ``WINDOW_S`` nothing more is verified until the
    window moves (429), so guesses cannot take the agent's CPU."""

    MAX_FAILURES = 10
    WINDOW_S = 10.0

    def __init__(self, user: Callable[[], tuple[str, str] | None]) -> None:
        self.user = user
        self.lock = threading.Lock()
        self.verified: set[str] = set()
        self.failures: list[float] = []

    def check(self, header: str) -> int:
        """200, 401 or 429."""
        import base64
        import hashlib

        from esc.secrets import verify_password

        user = self.user()
        if user is None:
            return 200
        name, stored = user
        key = hashlib.sha256(f"{stored}\0{header}".encode()).hexdigest()
        now = time.monotonic()
        with self.lock:
            if key in self.verified:
                return 200
            self.failures = [t for t in self.failures if now - t < self.WINDOW_S]
            if len(self.failures) >= self.MAX_FAILURES:
                return 429
        ok = False
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() == "basic":
            try:
                given_name, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
                ok = given_name == name and verify_password(password, stored)
            except (ValueError, UnicodeDecodeError):
                ok = False
        with self.lock:
            if ok:
                if len(self.verified) > 64:
                    self.verified.clear()
                self.verified.add(key)
                return 200
            self.failures.append(now)
        return 401


def app(status: Callable[[], dict], max_age: float = 0.5, metrics: Callable[[], bytes] | None = None,
        metrics_user: Callable[[], tuple[str, str] | None] = lambda: None) -> Starlette:
    """``metrics``: the Prometheus exposition, served as /metrics (with ``metrics_user``'s
    HTTP Basic when it gives one)."""
    snapshot: Snapshot[dict] = Snapshot(status, max_age)
    auth = MetricsAuth(metrics_user)

    def answer(request: Request, code: int, body: dict) -> Response:
        if "xml" in request.headers.get("accept", ""):
            return Response(to_xml(body), code, media_type="application/xml")
        return JSONResponse(body, code)

    def health(request: Request) -> Response:
        body = pair_health(snapshot.get())
        return answer(request, 200 if body["status_code"] < 5000 else 503, body)

    def active(request: Request) -> Response:
        body = pair_health(snapshot.get())
        ok = body["role"] in ("ACTIVE", "STANDALONE") and body["status_code"] < 5000
        return answer(request, 200 if ok else 503, {"active": ok, **body})

    def prometheus(request: Request) -> Response:
        code = auth.check(request.headers.get("authorization", ""))
        if code == 401:
            return JSONResponse({"error": "authentication required"}, 401,
                                headers={"WWW-Authenticate": 'Basic realm="esc metrics"'})
        if code == 429:
            return JSONResponse({"error": "too many failed logins; try again in a few seconds"}, 429,
                                headers={"Retry-After": str(int(MetricsAuth.WINDOW_S))})
        assert metrics is not None
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(metrics(), 200, media_type=CONTENT_TYPE_LATEST)

    async def not_found(request: Request, exc: Exception) -> Response:
        return JSONResponse({"error": f"no such resource {request.url.path}"}, 404)

    routes = [Route("/esc/health", health), Route("/esc/health/", health),
              Route("/esc/health/active", active), Route("/esc/health/active/", active)]
    if metrics is not None:
        routes.append(Route("/metrics", prometheus))
    return Starlette(routes=routes, exception_handlers={404: not_found, 405: not_found})


def serve(status: Callable[[], dict], port: int = HEALTH_PORT, host: str = "::",
          max_age: float = 0.5, metrics: Callable[[], bytes] | None = None,
          metrics_user: Callable[[], tuple[str, str] | None] = lambda: None) -> web.ServerThread:
    """On every address (through the VIP it is the active that answers)."""
    sock = web.tcp_socket(host, port)
    return web.ServerThread("health-api", [(web.config(app(status, max_age, metrics, metrics_user)),
                                            sock)]).start()
