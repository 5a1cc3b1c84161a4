"""The agent's two HTTP endpoints (stdlib servers, JSON bodies).

* a unix socket for ``escadm`` on this node (root only: the socket is 0600);
* a TCP port on the node's HA address for the peer agent, guarded by a token
  derived from the pair's shared secret.

Handlers only read a snapshot or record an intent and wake the loop; the loop
acts (Patroni's API → ``ha.wakeup()`` pattern).
"""

from __future__ import annotations

import hmac
import json
import os
import socket
import socketserver
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Protocol

from esc.agent.peer import TOKEN_HEADER


class AgentApi(Protocol):
    def status(self) -> dict: ...
    def peer_state(self, caller: str) -> dict: ...
    def command(self, name: str, body: dict) -> tuple[int, dict]: ...


class _Handler(BaseHTTPRequestHandler):
    server_version = "esc-agent"
    protocol_version = "HTTP/1.1"
    api: AgentApi
    token: str | None  # None: local socket, no token needed

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass  # the agent logs events, not requests

    def _send(self, code: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _authorised(self) -> bool:
        if self.token is None:
            return True
        given = self.headers.get(TOKEN_HEADER, "")
        # as bytes: compare_digest raises on a str with non-ASCII characters (a header
        # is read as latin-1, so anyone can send one)
        if hmac.compare_digest(given.encode(), self.token.encode()):
            return True
        self._send(403, {"error": "bad peer token"})
        return False

    def do_GET(self) -> None:  # noqa: N802
        if not self._authorised():
            return
        if self.path == "/v1/status":
            self._send(200, self.api.status())
        elif self.path == "/v1/peer":
            self._send(200, self.api.peer_state(self.headers.get("X-ESC-From", "")))
        else:
            self._send(404, {"error": f"no such resource {self.path}"})

    def do_POST(self) -> None:  # noqa: N802
        if not self._authorised():
            return
        length = int(self.headers.get("Content-Length") or 0)
        if length > 65536:
            self._send(413, {"error": "body too large"})
            return
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
            if not isinstance(body, dict):
                raise ValueError("body must be a JSON object")
        except ValueError as e:
            self._send(400, {"error": f"bad JSON body: {e}"})
            return
        prefix = "/v1/command/" if self.token is None else "/v1/peer/command/"
        if not self.path.startswith(prefix):
            self._send(404, {"error": f"no such resource {self.path}"})
            return
        # who asks is known from the socket, never from the body
        body["_via_peer"] = self.token is not None
        code, out = self.api.command(self.path[len(prefix):], body)
        self._send(code, out)


class _QuietErrors:
    def handle_error(self, request, client_address):  # type: ignore[no-untyped-def]
        # A peer or escadm that hangs up mid-answer is normal (timeouts): no traceback.
        import sys

        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError, TimeoutError)):
            super().handle_error(request, client_address)  # type: ignore[misc]


class _UnixServer(_QuietErrors, socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def get_request(self):  # type: ignore[no-untyped-def]
        sock, _ = super().get_request()
        return sock, ("local", 0)


class _TcpServer(_QuietErrors, ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def _handler(api: AgentApi, token: str | None) -> type[_Handler]:
    return type("Handler", (_Handler,), {"api": api, "token": token})


def serve_unix(path: Path, api: AgentApi) -> socketserver.BaseServer:
    path.unlink(missing_ok=True)
    old = os.umask(0o177)
    try:
        srv = _UnixServer(str(path), _handler(api, None))
    finally:
        os.umask(old)
    threading.Thread(target=srv.serve_forever, name="api-local", daemon=True).start()
    return srv


def serve_peer(host: str, port: int, api: AgentApi, token: str) -> socketserver.BaseServer:
    cls = type("PeerServer", (_TcpServer,), {
        "address_family": socket.AF_INET6 if ":" in host else socket.AF_INET})
    srv = cls((host, port), _handler(api, token))
    threading.Thread(target=srv.serve_forever, name="api-peer", daemon=True).start()
    return srv
