"""One way to serve HTTP in this project: uvicorn, guarded against clients that hold
connections open or flood the log.

Every server of the project goes through here: the controller's REST API, the agent's
local and peer APIs, the health API (port 8060) and the witness. uvicorn parses HTTP
(h11, headers capped at 16 KiB) and multiplexes connections on one event loop, so a
client that holds a connection costs a socket, not a thread. What uvicorn leaves open
is added here:

* a **request deadline**: the request line and headers must arrive within
  ``request_timeout`` of the connection opening or of the previous answer, else the
  connection is closed (uvicorn's keep-alive timer is cancelled by any byte, so a
  client sending one byte a second would otherwise keep a connection for ever);
* **connection caps**, per client address and in all: past them a new connection is
  closed at once, so one address cannot take every slot from the others;
* **logging once per interval**: a repeated warning (a bad request, a refused
  connection) is written once a minute with the count of the others.

Bodies are read with :func:`read_json`, which caps their size and the time to send them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import uvicorn
from starlette.requests import Request
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger("esc.web")

# every server: our log handlers, no access log, no websockets, no server header
SERVER_OPTIONS: dict[str, Any] = {"access_log": False, "log_config": None, "ws": "none",
                                  "proxy_headers": False, "server_header": False,
                                  "timeout_graceful_shutdown": 5}


class OncePerInterval(logging.Filter):
    """Let a message through once per ``interval`` seconds; the next one that passes
    says how many were held back meanwhile."""

    def __init__(self, interval: float = 60.0) -> None:
        super().__init__()
        self.interval = interval
        self.seen: dict[tuple[str, str], tuple[float, int]] = {}
        self.lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, str(record.msg))
        now = time.monotonic()
        with self.lock:
            at, held = self.seen.get(key, (-1e18, 0))
            if now - at < self.interval:
                self.seen[key] = (at, held + 1)
                return False
            self.seen[key] = (now, 0)
            if len(self.seen) > 1000:  # messages with varying text: forget the oldest
                for old in sorted(self.seen, key=lambda k: self.seen[k][0])[:500]:
                    del self.seen[old]
        if held:
            record.msg = f"{record.getMessage()} ({held} more like it in the last " \
                         f"{self.interval:.0f}s not logged)"
            record.args = None
        return True


_once = OncePerInterval()
for _name in ("uvicorn", "uvicorn.error", "esc.web"):
    logging.getLogger(_name).addFilter(_once)


def guarded_protocol(request_timeout: float = 5.0, max_connections: int = 512,
                     max_per_client: int = 32) -> type[H11Protocol]:
    """uvicorn's HTTP/1.1 protocol with a request deadline and connection caps."""

    class Guarded(H11Protocol):
        deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            host = self.client[0] if self.client else ""
            same = sum(1 for c in self.connections if (c.client[0] if c.client else "") == host)
            if len(self.connections) > max_connections or same > max_per_client:
                log.warning("connection from %s refused: %s", host or "a local client",
                            f"{same} open from that address (at most {max_per_client})"
                            if same > max_per_client else
                            f"{len(self.connections) - 1} open (at most {max_connections})")
                transport.abort()
                return
            self._arm()

        def _arm(self) -> None:
            self._disarm()
            self.deadline = self.loop.call_later(request_timeout, self._expired)

        def _disarm(self) -> None:
            if self.deadline is not None:
                self.deadline.cancel()
                self.deadline = None

        def _expired(self) -> None:
            self.deadline = None
            if self.cycle is None or self.cycle.response_complete:
                self.transport.abort()  # no whole request in time: nothing to answer

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.cycle is not None and not self.cycle.response_complete:
                self._disarm()  # a request is being served

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

    return Guarded


class BodyError(ValueError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


async def read_body(request: Request, limit: int = 65536, timeout: float = 5.0) -> bytes:
    """The request's body bytes: 413 past ``limit`` bytes, 408 when it takes longer than
    ``timeout`` to arrive (as BodyError)."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise BodyError(413 if declared.isdigit() else 400,
                        f"body too large (at most {limit} bytes)" if declared.isdigit()
                        else "bad Content-Length")

    async def read() -> bytes:
        data = bytearray()
        async for chunk in request.stream():
            data += chunk
            if len(data) > limit:
                raise BodyError(413, f"body too large (at most {limit} bytes)")
        return bytes(data)

    try:
        return await asyncio.wait_for(read(), timeout)
    except TimeoutError:
        raise BodyError(408, f"the body did not arrive within {timeout:g}s") from None


def parse_json_object(raw: bytes) -> dict:
    """A body as a JSON object; 400 (BodyError) when it is not one."""
    try:
        body = json.loads(raw or b"{}")
    except ValueError as e:
        raise BodyError(400, f"bad JSON body: {e}") from None
    if not isinstance(body, dict):
        raise BodyError(400, "bad JSON body: must be a JSON object")
    return body


async def read_json(request: Request, limit: int = 65536, timeout: float = 5.0) -> dict:
    """The request's JSON object body: read_body, then parse_json_object."""
    return parse_json_object(await read_body(request, limit, timeout))


def tcp_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` (``::`` with IPV6_V6ONLY off: IPv4 too; IPv4
    only where IPv6 is disabled), not listening yet: uvicorn calls listen(). The
    protocol is named explicitly: asyncio sets TCP_NODELAY on accepted sockets only when
    ``proto == IPPROTO_TCP``; with proto 0, Nagle + delayed ACK added 40 ms to every
    keep-alive request."""
    if host == "::":
        try:
            sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM, socket.IPPROTO_TCP)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        except OSError:
            sock, host = socket.socket(socket.AF_INET, socket.SOCK_STREAM,
                                       socket.IPPROTO_TCP), "0.0.0.0"
    else:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def unix_socket(path: Path, mode: int = 0o600) -> socket.socket:
    """A unix socket at ``path`` (replacing a stale one), created with ``mode``: no
    moment when another user could connect."""
    path.unlink(missing_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o777 & ~mode)
    try:
        sock.bind(str(path))
    except OSError:
        sock.close()
        raise
    finally:
        os.umask(old)
    return sock


class Server(uvicorn.Server):
    """uvicorn, reporting the moment the socket accepts. Signals are the program's own:
    with several servers in one loop, uvicorn's handlers would fight."""

    def __init__(self, config: uvicorn.Config, on_listening: Callable[[], None] | None = None) -> None:
        super().__init__(config)
        self.on_listening = on_listening

    def capture_signals(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and self.on_listening is not None:
            self.on_listening()


def config(app: Any, request_timeout: float = 5.0, max_connections: int = 512,
           max_per_client: int = 32, **options: Any) -> uvicorn.Config:
    """A uvicorn config with the project's options and the guarded protocol."""
    cfg = uvicorn.Config(app, http=guarded_protocol(request_timeout, max_connections,
                                                    max_per_client),
                         **{**SERVER_OPTIONS, "lifespan": "off", **options})
    cfg.load()  # errors (a bad certificate) here, in the caller
    return cfg


class ServerThread:
    """One or more servers on one event loop, in a daemon thread (for the threaded
    programs: the agent, the witness). ``shutdown()`` stops them."""

    def __init__(self, name: str, servers: list[tuple[uvicorn.Config, socket.socket]]) -> None:
        self.name = name
        self.servers = [(Server(c), s) for c, s in servers]
        self.sockets = [s for _, s in servers]
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)

    @property
    def server_address(self) -> tuple:
        return self.sockets[0].getsockname()

    def start(self, timeout: float = 10.0) -> ServerThread:
        self.thread.start()
        if not self.ready.wait(timeout):
            raise RuntimeError(f"{self.name}: the server did not start within {timeout:g}s")
        if self.error is not None:
            raise RuntimeError(f"{self.name}: {self.error}")
        return self

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as e:  # reported by start(), or logged
            self.error = e
            self.ready.set()
            log.error("%s stopped: %s", self.name, e)

    async def _serve(self) -> None:
        tasks = [asyncio.create_task(srv.serve(sockets=[sock])) for srv, sock in self.servers]
        while not all(srv.started for srv, _ in self.servers):
            if any(t.done() for t in tasks):
                break
            await asyncio.sleep(0.005)
        if not all(srv.started for srv, _ in self.servers):
            self.error = RuntimeError("could not listen")
        self.ready.set()
        await asyncio.gather(*tasks, return_exceptions=True)

    def shutdown(self, timeout: float = 5.0) -> None:
        for srv, _ in self.servers:
            srv.should_exit = True
        self.thread.join(timeout)

    def server_close(self) -> None:
        for sock in self.sockets:
            sock.close()
