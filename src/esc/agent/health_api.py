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
from xml.etree import ElementTree

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from esc import web

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


class Snapshot:
    """The node's status at most ``max_age`` seconds old, made by one caller at a time:
    a flood of health requests costs one status (which runs ``ip``) per interval."""

    def __init__(self, status: Callable[[], dict], max_age: float = 0.5) -> None:
        self.status, self.max_age = status, max_age
        self.lock = threading.Lock()
        self.value: dict = {}
        self.at = -1e18

    def get(self) -> dict:
        with self.lock:
            if time.monotonic() - self.at >= self.max_age:
                self.value, self.at = self.status(), time.monotonic()
            return self.value


def app(status: Callable[[], dict], max_age: float = 0.5) -> Starlette:
    snapshot = Snapshot(status, max_age)

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

    async def not_found(request: Request, exc: Exception) -> Response:
        return JSONResponse({"error": f"no such resource {request.url.path}"}, 404)

    return Starlette(routes=[Route("/esc/health", health), Route("/esc/health/", health),
                             Route("/esc/health/active", active),
                             Route("/esc/health/active/", active)],
                     exception_handlers={404: not_found, 405: not_found})


def serve(status: Callable[[], dict], port: int = HEALTH_PORT, host: str = "::",
          max_age: float = 0.5) -> web.ServerThread:
    """On every address (through the VIP it is the active that answers)."""
    sock = web.tcp_socket(host, port)
    return web.ServerThread("health-api", [(web.config(app(status, max_age)), sock)]).start()
