"""The servers' guards (esc.web) against clients that hold connections or flood the
log, tried on the real servers: the health API, the agent's peer API, the witness."""

from __future__ import annotations

import contextlib
import logging
import socket
import struct
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from esc import clock, web
from esc.agent import health_api
from esc.witness import LeaseTable, signed
from esc.witness import serve as serve_witness

HALF_REQUEST = b"GET /esc/health HTTP/1.1\r\nHost: x\r\n"  # no blank line: never complete


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _healthy() -> dict:
    return {"role": "ACTIVE", "db": {"state": "primary", "peer_complete": True},
            "services": {"escmanager": {"detail": "serving"}}, "peer": {"reachable": True}}


@contextlib.contextmanager
def _half_open(port: int, n: int, source: str = "127.0.0.1") -> Iterator[list[socket.socket]]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind((source, 0))
            s.settimeout(5)
            try:
                s.connect(("127.0.0.1", port))
                s.sendall(HALF_REQUEST)
            except OSError:
                pass  # refused by a cap: that is what some tests want
            socks.append(s)
        yield socks
    finally:
        for s in socks:
            s.close()


def _get_from(source: str, url: str) -> httpx.Response:
    transport = httpx.HTTPTransport(local_address=source)
    with httpx.Client(transport=transport, timeout=10) as c:
        return c.get(url)


def test_half_open_connections_hold_no_thread_and_other_clients_are_answered() -> None:
    """300 clients that never finish their request: no thread per connection (the
    stdlib server held 300), and a client from another address is answered."""
    port = _port()
    srv = health_api.serve(_healthy, port, host="127.0.0.1", max_age=0)
    try:
        before = threading.active_count()
        with _half_open(port, 300):
            time.sleep(0.3)
            assert threading.active_count() - before < 10
            r = _get_from("127.0.0.2", f"http://127.0.0.1:{port}/esc/health")
            assert r.status_code == 200 and r.json()["status_code"] == 2000
    finally:
        srv.shutdown()


def test_a_request_that_never_completes_is_cut_off_at_its_deadline() -> None:
    port = _port()
    app = health_api.app(_healthy)
    srv = web.ServerThread("t", [(web.config(app, request_timeout=0.3),
                                  web.tcp_socket("127.0.0.1", port))]).start()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(HALF_REQUEST)
            started = time.monotonic()
            for _ in range(3):  # a byte now and then does not keep it open
                time.sleep(0.1)
                with contextlib.suppress(OSError):
                    s.sendall(b"X")
            try:
                got = s.recv(100)
            except ConnectionResetError:
                got = b""
            assert got == b"", got
            assert time.monotonic() - started < 4.5  # the deadline, not the client's timeout
        # a complete request on a kept-alive connection is not cut
        with httpx.Client(timeout=5) as c:
            for _ in range(3):
                assert c.get(f"http://127.0.0.1:{port}/esc/health").status_code == 200
                time.sleep(0.2)
    finally:
        srv.shutdown()


def test_one_address_cannot_take_every_connection() -> None:
    port = _port()
    app = health_api.app(_healthy)
    srv = web.ServerThread("t", [(web.config(app, max_per_client=8, max_connections=100),
                                  web.tcp_socket("127.0.0.1", port))]).start()
    try:
        with _half_open(port, 20) as socks:
            time.sleep(0.2)
            closed = 0
            for s in socks:
                s.settimeout(0.2)
                try:
                    closed += s.recv(1) == b""
                except ConnectionResetError:
                    closed += 1
                except TimeoutError:
                    pass
            assert closed >= 12, f"only {closed} of the 12 connections past the cap were closed"
            assert _get_from("127.0.0.2", f"http://127.0.0.1:{port}/esc/health").status_code == 200
    finally:
        srv.shutdown()


def test_resets_and_garbage_do_not_fill_the_log(caplog: pytest.LogCaptureFixture) -> None:
    """200 connections reset mid-request and 200 requests that are not HTTP: a few
    lines in the log, not a traceback each (the stdlib server wrote ~1.5 KB each)."""
    port = _port()
    srv = health_api.serve(_healthy, port, host="127.0.0.1")
    caplog.set_level(logging.DEBUG)
    try:
        for _ in range(200):
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(b"GET /esc/health HTTP/1.1\r\nHost: x\r\n")
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()  # RST
        for _ in range(200):
            with socket.create_connection(("127.0.0.1", port)) as s:
                s.sendall(b"\x16\x03\x01 not http at all\r\n\r\n")
                with contextlib.suppress(OSError):
                    s.recv(1000)
        time.sleep(0.2)
        logged = sum(len(r.getMessage()) + len(r.exc_text or "") for r in caplog.records)
        assert logged < 20_000, f"{logged} bytes logged"
        assert not any(r.exc_info for r in caplog.records)
    finally:
        srv.shutdown()


def test_a_body_sent_too_slowly_is_refused() -> None:
    async def echo(request: Request) -> JSONResponse:
        try:
            return JSONResponse(await web.read_json(request, limit=100, timeout=0.3))
        except web.BodyError as e:
            return JSONResponse({"error": str(e)}, e.status)

    port = _port()
    app = Starlette(routes=[Route("/", echo, methods=["POST"])])
    srv = web.ServerThread("t", [(web.config(app), web.tcp_socket("127.0.0.1", port))]).start()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n{\"a\":")
            answer = s.recv(1000)
        assert answer.startswith(b"HTTP/1.1 408"), answer
        r = httpx.post(f"http://127.0.0.1:{port}/", json={"a": 1})
        assert r.status_code == 200 and r.json() == {"a": 1}
        r = httpx.post(f"http://127.0.0.1:{port}/", content=b"1" * 200,
                       headers={"content-type": "application/json"})
        assert r.status_code == 413
    finally:
        srv.shutdown()


def test_the_witness_is_guarded_too() -> None:
    port = _port()
    srv = serve_witness("127.0.0.1", port, "tok", LeaseTable(clock.now() - 10))
    try:
        before = threading.active_count()
        with _half_open(port, 100):
            time.sleep(0.2)
            assert threading.active_count() - before < 10
            with httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.2")) as c:
                raw, headers = signed("tok", {"pair": "p", "node": "n1", "duration": 1.0})
                r = c.post(f"http://127.0.0.1:{port}/v1/lease", headers=headers, content=raw)
            assert r.status_code == 200 and r.json()["granted"]
    finally:
        srv.shutdown()
