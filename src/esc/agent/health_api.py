"""The health API of the original (port 8060): ``GET /esc/health`` and ``/esc/health/active``.

Served by every node's agent on all addresses, so through the VIP it is the
active that answers, and it reports on the whole pair (it knows its peer).
``/esc/health/active`` is a plain 200/503 for load balancers and checks.

Codes: 2000 fully healthy; 20x0 service provided but the pair is degraded;
50x0 no service from this node. ``stage`` is INIT while the node is finding its
place in the pair, READY once it is ACTIVE, STANDBY or STANDALONE.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from xml.etree import ElementTree

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


def serve(status: Callable[[], dict], port: int = HEALTH_PORT) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "esc-health"

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

        def do_GET(self) -> None:  # noqa: N802
            path = self.path.split("?")[0].rstrip("/")
            if path not in ("/esc/health", "/esc/health/active"):
                self._send(404, {"error": f"no such resource {path}"})
                return
            body = pair_health(status())
            if path == "/esc/health/active":
                ok = body["role"] in ("ACTIVE", "STANDALONE") and body["status_code"] < 5000
                self._send(200 if ok else 503, {"active": ok, **body})
            else:
                self._send(200 if body["status_code"] < 5000 else 503, body)

        def _send(self, code: int, body: dict) -> None:
            if "xml" in self.headers.get("Accept", ""):
                data, ctype = to_xml(body), "application/xml"
            else:
                data, ctype = json.dumps(body).encode(), "application/json"
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        allow_reuse_address = True
        address_family = socket.AF_INET6

        def server_bind(self) -> None:
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            super().server_bind()

    srv = Server(("::", port), Handler)
    threading.Thread(target=srv.serve_forever, name="health-api", daemon=True).start()
    return srv
