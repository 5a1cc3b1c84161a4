"""escmanager: the controller's REST service. It runs only on the active node.

The agent starts it early, *parked*: every import is done and the app is built,
then it waits for one line on stdin, so that a failover does not pay Python's
start-up time::

    python -m esc.services.manager --root ROOT

    stdin  "serve"   open the database pool and listen on [::]:api_port
           "exit"    exit 0 (so does EOF: the agent died); while serving, a
                     graceful shutdown first (as on SIGTERM)
    stdout "parked"  ready, waiting for "serve"
           "serving" the port accepts connections

While parked it holds no database connection and listens on nothing.
``--serve`` serves at once and ignores stdin (manual runs).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import hmac
import json
import logging
import os
import re
import signal
import socket
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import uvicorn
from psycopg.conninfo import make_conninfo
from psycopg_pool import ConnectionPool
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from esc.config import ConfigError, NodeConfig, NodePaths, User, load_config
from esc.secrets import verify_password

log = logging.getLogger("esc.escmanager")

MAX_BODY = 64 * 1024
MAX_NAME = 200
POOL_TIMEOUT = 5.0  # how long a request waits for a database connection before 503
HEALTH_TIMEOUT = 1.0  # health checkers give up early: answer 503 before they do


# --- database ------------------------------------------------------------------------------


def db_conninfo(cfg: NodeConfig, paths: NodePaths) -> str:
    """The local PostgreSQL over its unix socket, as user ``esc`` (trust auth)."""
    return make_conninfo(
        host=str(paths.pg_socket_dir), port=cfg.pg_port, dbname="esc", user="esc"
    )


class CommitNotConfirmed(Exception):
    """COMMIT returned, but PostgreSQL warned it did not wait for the synchronous standby."""


def commit_durably(conn: psycopg.Connection) -> None:
    """Commit, and fail unless the commit is known to be on both nodes.

    If the wait for the synchronous standby is cancelled (pg_cancel_backend,
    statement_timeout), PostgreSQL still reports COMMIT as successful, with only a
    WARNING saying the transaction "might not have been replicated". Answering 2xx
    then would promise durability we do not have, so any WARNING during COMMIT
    counts as a failure. (Terminating the backend instead drops the connection,
    which raises on its own.)
    """
    warnings: list[str] = []

    def on_notice(diag: psycopg.errors.Diagnostic) -> None:
        if diag.severity_nonlocalized == "WARNING":
            warnings.append(diag.message_primary or "warning")

    conn.add_notice_handler(on_notice)
    try:
        conn.commit()
    finally:
        conn.remove_notice_handler(on_notice)
    if warnings:
        raise CommitNotConfirmed("commit not confirmed by the standby: " + "; ".join(warnings))


def _deployment(row: tuple[int, str, datetime]) -> dict[str, Any]:
    return {"id": row[0], "name": row[1], "created_at": row[2].isoformat()}


def insert_deployment(pool: ConnectionPool, name: str) -> dict[str, Any] | None:
    """The new deployment once committed, or None if the name exists (nothing written)."""
    with pool.connection() as conn:
        # ON CONFLICT: a concurrent insert of the same name waits for the other
        # transaction and then yields no row, rather than an error.
        row = conn.execute(
            "INSERT INTO deployments (name) VALUES (%s) ON CONFLICT (name) DO NOTHING"
            " RETURNING id, name, created_at",
            (name,),
        ).fetchone()
        if row is None:
            return None
        commit_durably(conn)
        return _deployment(row)


def list_deployments(pool: ConnectionPool) -> list[dict[str, Any]]:
    with pool.connection() as conn:
        rows = conn.execute("SELECT id, name, created_at FROM deployments ORDER BY id").fetchall()
    return [_deployment(r) for r in rows]


def get_deployment(pool: ConnectionPool, name: str) -> dict[str, Any] | None:
    with pool.connection() as conn:
        row = conn.execute(
            "SELECT id, name, created_at FROM deployments WHERE name = %s", (name,)
        ).fetchone()
    return _deployment(row) if row else None


def db_in_recovery(pool: ConnectionPool, timeout: float) -> bool:
    with pool.connection(timeout=timeout) as conn:
        row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
    return bool(row and row[0])


# --- HTTP ----------------------------------------------------------------------------------


def error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


class BasicAuth:
    """HTTP Basic auth against the configured REST user, in front of /v0.

    scrypt costs ~50 ms and 16 MiB per check on purpose, so a header that
    verified once is remembered by its sha256 (no password kept in memory), and
    checks run in a worker thread, at most two at once, so a flood of bad
    passwords neither stalls the event loop nor eats memory.
    """

    def __init__(self, app: ASGIApp, user: User) -> None:
        self.app = app
        self.user = user
        self.verified: set[bytes] = set()
        self.scrypt_slots = threading.BoundedSemaphore(2)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            header = Headers(scope=scope).get("authorization", "")
            key = hashlib.sha256(header.encode()).digest()
            if key not in self.verified:
                if not await run_in_threadpool(self.check, header):
                    response = error(
                        401, "authentication required",
                        {"WWW-Authenticate": 'Basic realm="esc"'},
                    )
                    await response(scope, receive, send)
                    return
                if len(self.verified) > 64:  # only ever valid headers; bound it anyway
                    self.verified.clear()
                self.verified.add(key)
        await self.app(scope, receive, send)

    def check(self, header: str) -> bool:
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return False
        name, sep, password = decoded.partition(":")
        if not sep:
            return False
        with self.scrypt_slots:
            password_ok = verify_password(password, self.user.password_hash)
        return hmac.compare_digest(name.encode(), self.user.name.encode()) and password_ok


def _object_no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise ValueError("duplicate key in object")
    return obj


async def read_json(request: Request) -> Any:
    """The JSON body, or HTTPException 415/413/400. Never reads more than MAX_BODY."""
    ctype = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if ctype != "application/json":
        raise HTTPException(415, "Content-Type must be application/json")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY:
        raise HTTPException(413, f"body larger than {MAX_BODY} bytes")
    body = bytearray()
    async for chunk in request.stream():  # chunked bodies have no length to check
        body += chunk
        if len(body) > MAX_BODY:
            raise HTTPException(413, f"body larger than {MAX_BODY} bytes")
    try:
        return json.loads(body, object_pairs_hook=_object_no_duplicates)
    except (ValueError, RecursionError) as e:  # includes JSONDecodeError, UnicodeDecodeError
        raise HTTPException(400, f"invalid JSON: {e}") from None


def parse_new_deployment(data: Any) -> str:
    """The name from a POST body, or HTTPException 400."""
    if not isinstance(data, dict):
        raise HTTPException(400, "body must be a JSON object")
    unknown = sorted(set(data) - {"name"})
    if unknown:
        raise HTTPException(400, f"unknown field(s): {', '.join(unknown)}")
    if "name" not in data:
        raise HTTPException(400, "name is required")
    name = data["name"]
    if not isinstance(name, str):
        raise HTTPException(400, "name must be a string")
    if not 1 <= len(name) <= MAX_NAME:
        raise HTTPException(400, f"name must be 1 to {MAX_NAME} characters")
    # Both would only fail later, in the database driver, as a misleading 503:
    # PostgreSQL text cannot hold NUL, and JSON can encode lone surrogates.
    if "\x00" in name:
        raise HTTPException(400, "name must not contain NUL")
    try:
        name.encode()
    except UnicodeEncodeError:
        raise HTTPException(400, "name is not valid Unicode") from None
    return name


def _pool(request: Request) -> ConnectionPool:
    return request.app.state.pool


async def post_deployment(request: Request) -> Response:
    name = parse_new_deployment(await read_json(request))
    created = await run_in_threadpool(insert_deployment, _pool(request), name)
    if created is None:
        return error(409, f"deployment {name} exists")
    log.info("created deployment id=%d name=%r", created["id"], name)
    return JSONResponse(created, status_code=201)


async def get_deployments(request: Request) -> Response:
    return JSONResponse(await run_in_threadpool(list_deployments, _pool(request)))


async def get_one_deployment(request: Request) -> Response:
    name = request.path_params["name"]
    found = await run_in_threadpool(get_deployment, _pool(request), name)
    if found is None:
        return error(404, f"deployment {name} not found")
    return JSONResponse(found)


async def health(request: Request) -> Response:
    # Unauthenticated: say nothing about why, the log has it.
    try:
        pool = _pool(request)
        timeout = min(pool.timeout, HEALTH_TIMEOUT)
        in_recovery = await run_in_threadpool(db_in_recovery, pool, timeout)
    except psycopg.Error as e:
        log.warning("health: database unavailable: %s", _one_line(e))
        return JSONResponse({"status": "database unavailable"}, status_code=503)
    if in_recovery:
        return JSONResponse({"status": "database in recovery"}, status_code=503)
    return JSONResponse({"status": "ok"})


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


async def on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return error(exc.status_code, str(exc.detail), exc.headers)


async def on_db_error(request: Request, exc: Exception) -> Response:
    # Read-only (25006), connection lost, pool timeout, unconfirmed commit...:
    # the request may be retried, and nothing was acknowledged.
    log.warning("%s %s: %s", request.method, request.url.path, _one_line(exc))
    return error(503, f"database unavailable: {_one_line(exc)}")


class NodeHeader:
    """``X-ESC-Node: <node>`` on every response: a client (and the failover
    benchmark) can tell which node of the pair answered."""

    def __init__(self, app: ASGIApp, node: str) -> None:
        self.app, self.header = app, (b"x-esc-node", node.encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_node(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), self.header]
            await send(message)

        await self.app(scope, receive, send_with_node)


def create_app(cfg: NodeConfig, conninfo: str, *, pool_timeout: float = POOL_TIMEOUT) -> Starlette:
    """The ASGI app. The pool is made at lifespan start, so building the app touches
    no database; ``app.state.pool`` exists only while the app runs."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # open(wait=False): connections are made in the background, so listening
        # never waits for the database; a request waits up to pool_timeout.
        # check=: a connection the server dropped (restart) is replaced before use
        # instead of failing one request.
        pool: ConnectionPool = ConnectionPool(
            conninfo,
            min_size=2,
            max_size=8,
            timeout=pool_timeout,
            open=False,
            name="escmanager",
            check=ConnectionPool.check_connection,
            kwargs={"application_name": "escmanager", "connect_timeout": 2},
        )
        pool.open(wait=False)
        app.state.pool = pool
        try:
            yield
        finally:
            await run_in_threadpool(pool.close, 2.0)

    auth = [Middleware(BasicAuth, user=cfg.rest_user)] if cfg.rest_user else []
    v0 = [
        Route("/deployments", post_deployment, methods=["POST"]),
        Route("/deployments", get_deployments, methods=["GET"]),
        # :path so that names containing "/" can be fetched too
        Route("/deployments/{name:path}", get_one_deployment, methods=["GET"]),
    ]
    return Starlette(
        routes=[Route("/health", health, methods=["GET"]), Mount("/v0", routes=v0, middleware=auth)],
        exception_handlers={
            HTTPException: on_http_error,
            psycopg.Error: on_db_error,
            CommitNotConfirmed: on_db_error,
        },
        middleware=[Middleware(NodeHeader, node=cfg.name)],
        lifespan=lifespan,
    )


# --- process -------------------------------------------------------------------------------


class OneLineFormatter(logging.Formatter):
    """One line per event, even for libpq's multi-line messages and tracebacks,
    so that the log can be grepped and merged with the other services' logs."""

    def format(self, record: logging.LogRecord) -> str:
        return re.sub(r"\s*\n\s*", " | ", super().format(record).strip())


def setup_logging(paths: NodePaths, node: str) -> None:
    paths.log.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(paths.log / "escmanager.log")
    node = node.replace("%", "%%")
    handler.setFormatter(
        OneLineFormatter(
            f"%(asctime)s.%(msecs)03d {node} escmanager[%(process)d] %(levelname)s %(message)s",
            "%Y-%m-%dT%H:%M:%S",
        )
    )
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    logging.getLogger("psycopg.pool").setLevel(logging.WARNING)  # INFO is per request


def notify(state: str) -> None:
    """Tell the agent (our stdout) about a state change; it may have stopped reading."""
    try:
        print(state, flush=True)
    except OSError:
        pass


def listen_socket(port: int) -> socket.socket:
    """A socket bound to [::]:port with IPV6_V6ONLY off, so that the IPv4 VIP is
    served too whatever the sysctl default; IPv4 only if IPv6 is disabled.
    Bound but not listening: uvicorn calls listen(). The protocol is named
    explicitly: asyncio sets TCP_NODELAY on accepted sockets only when
    ``proto == IPPROTO_TCP``; with proto 0, Nagle + delayed ACK added 40 ms to
    every keep-alive request."""
    try:
        sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        addr: tuple[str, int] = ("::", port)
    except OSError:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        addr = ("0.0.0.0", port)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
    except OSError:
        sock.close()
        raise
    return sock


class Server(uvicorn.Server):
    """uvicorn, reporting the moment the socket accepts."""

    def __init__(self, config: uvicorn.Config, on_listening: Callable[[], None]) -> None:
        super().__init__(config)
        self.on_listening = on_listening

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            self.on_listening()


def watch_stdin(server: Server) -> None:
    """While serving: "exit" or EOF (the agent died) shuts the server down."""
    for line in sys.stdin:
        if line.strip() == "exit":
            log.info("stdin: exit, shutting down")
            break
        log.warning("stdin: ignoring %r while serving", line.strip())
    else:
        log.info("stdin: EOF, shutting down")
    server.should_exit = True


def wait_for_serve() -> bool:
    """Parked: True on "serve", False on "exit" or EOF."""
    for line in sys.stdin:
        command = line.strip()
        if command == "serve":
            return True
        if command == "exit":
            log.info("stdin: exit while parked")
            return False
        log.warning("stdin: ignoring %r while parked", command)
    log.info("stdin: EOF while parked")
    return False


def _exit_now(signum: int, frame: object) -> None:
    log.info("signal %d while parked, exiting", signum)
    sys.exit(0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="escmanager", description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True, help="the node's root directory")
    parser.add_argument("--serve", action="store_true", help="serve at once, ignore stdin")
    args = parser.parse_args(argv)

    paths = NodePaths(args.root)
    try:
        cfg = load_config(paths)
    except ConfigError as e:
        print(f"escmanager: {e}", file=sys.stderr)
        return 2
    setup_logging(paths, cfg.name)

    app = create_app(cfg, db_conninfo(cfg, paths))
    config = uvicorn.Config(
        app,
        lifespan="on",
        access_log=False,
        log_config=None,  # our handler on the root logger gets uvicorn's lines too
        ws="none",
        proxy_headers=False,
        server_header=False,
        timeout_graceful_shutdown=5,
    )
    config.load()  # imports the protocol classes now rather than at failover

    t_serve = 0.0

    def on_listening() -> None:
        log.info(
            "listening on port %d, %.1f ms after serve",
            cfg.api_port, (time.monotonic() - t_serve) * 1000,
        )
        notify("serving")

    server = Server(config, on_listening)

    signal.signal(signal.SIGTERM, _exit_now)
    signal.signal(signal.SIGINT, _exit_now)
    if not args.serve:
        log.info("parked, pid %d", os.getpid())
        notify("parked")
        if not wait_for_serve():
            return 0
    t_serve = time.monotonic()

    # uvicorn takes over SIGTERM/SIGINT while it serves, and re-raises them to
    # these handlers when done; before that, a signal must stop it, not kill it.
    def stop(signum: int, frame: object) -> None:
        server.should_exit = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if not args.serve:
        threading.Thread(target=watch_stdin, args=(server,), daemon=True).start()
    try:
        sock = listen_socket(cfg.api_port)
    except OSError as e:
        log.error("cannot bind port %d: %s", cfg.api_port, e)
        return 1
    server.run(sockets=[sock])
    log.info("stopped")
    return 0 if server.started else 1


if __name__ == "__main__":
    code = main()
    logging.shutdown()
    # A worker thread may still be blocked in the database (a commit waiting for
    # a standby that is gone, past the graceful timeout): it must not keep a
    # stopped service alive, and its client got no 2xx.
    os._exit(code)
