"""escmanager: the controller's REST service. It runs only on the active node.

The agent starts it early, *parked*: every import is done and the app is built,
then it waits for one line on stdin, so that a failover does not pay Python's
start-up time::

    python -m esc.services.manager --root ROOT

    stdin  "serve"   open the database pool, start the transaction worker and the
                     callback sender, and listen on [::]:api_port, then
                     HTTPS on [::]:https_port (same app; see esc.tls)
           "exit"    exit 0 (so does EOF: the agent died); while serving, a
                     graceful shutdown first (as on SIGTERM)
    stdout "parked"  ready, waiting for "serve"
           "serving" the port accepts connections

While parked it holds no database connection and listens on nothing.
``--serve`` serves at once and ignores stdin (manual runs).

The API itself is in api.py (routes, bodies, formats), the asynchronous writes in
transactions.py (the worker), callbacks.py and events.py, the resources' storage in
store.py and schema.py, and the hook to the VIM in executor.py. Nothing is kept only
in memory: everything the worker and the sender do is resumed from the database by
the next active.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import concurrent.futures
import hashlib
import hmac
import logging
import os
import re
import signal
import socket
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import psycopg
import uvicorn
from fastapi import FastAPI
from psycopg.conninfo import make_conninfo
from psycopg_pool import ConnectionPool
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from esc import logs, web
from esc.config import ConfigError, NodeConfig, NodePaths, User, load_config
from esc.pairing.material import pair_key
from esc.secrets import derive, verify_password
from esc.services import api, components, models
from esc.services.auth_cache import VerifiedHeaders
from esc.services.callbacks import CallbackPolicy, CallbackSender, ha_networks, pair_addresses
from esc.services.db import CommitNotConfirmed, commit_durably, one_line
from esc.services.executor import DeploymentExecutor
from esc.services.metrics import RequestMetrics
from esc.services.retention import Janitor
from esc.services.serving import (
    MaintenanceGate,
    OperationMode,
    ServingGate,
    ServingLease,
    parse_lease_line,
    parse_mode_line,
)
from esc.services.transactions import Worker, WorkListener

__all__ = ["CommitNotConfirmed", "commit_durably", "create_app", "db_conninfo", "main"]

log = logging.getLogger("esc.escmanager")

POOL_TIMEOUT = 5.0  # how long a request waits for a database connection before 503
HEALTH_TIMEOUT = 1.0  # health checkers give up early: answer 503 before they do
# the worker, callback sender, janitor and monitor start this long after listening
BACKGROUND_AFTER_S = 0.3
# clients behind one NAT share an address: more per address than the agent's ports allow
GUARDS: dict[str, Any] = {"request_timeout": 10.0, "max_connections": 1000, "max_per_client": 256}


# --- database ------------------------------------------------------------------------------


def db_conninfo(cfg: NodeConfig, paths: NodePaths) -> str:
    """The local PostgreSQL over its unix socket, as user ``esc`` (trust auth)."""
    return make_conninfo(
        host=str(paths.pg_socket_dir), port=cfg.pg_port, dbname="esc", user="esc"
    )


def db_in_recovery(pool: ConnectionPool, timeout: float) -> bool:
    with pool.connection(timeout=timeout) as conn:
        row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
    return bool(row and row[0])


# --- HTTP ----------------------------------------------------------------------------------


def error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


class FailedLogins:
    """Per client address, a bucket of failed password checks: ``burst`` at once, then
    one every ``1/rate`` seconds. An address with an empty bucket gets 429 without a
    check. Bounded: the oldest addresses are forgotten past ``max_clients``."""

    def __init__(self, burst: float = 10.0, rate: float = 1.0, max_clients: int = 10_000) -> None:
        self.burst, self.rate, self.max_clients = burst, rate, max_clients
        self.buckets: dict[str, tuple[float, float]] = {}  # address -> (tokens, at)

    def _tokens(self, client: str, now: float) -> float:
        tokens, at = self.buckets.get(client, (self.burst, now))
        return min(self.burst, tokens + (now - at) * self.rate)

    def retry_after(self, client: str, now: float | None = None) -> int:
        """0 if this address may try a password now, else seconds until it may."""
        now = time.monotonic() if now is None else now
        tokens = self._tokens(client, now)
        return 0 if tokens >= 1.0 else max(1, int((1.0 - tokens) / self.rate + 0.999))

    def failed(self, client: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self.buckets[client] = (self._tokens(client, now) - 1.0, now)
        self.buckets[client] = self.buckets.pop(client)  # most recent last
        while len(self.buckets) > self.max_clients:
            del self.buckets[next(iter(self.buckets))]


auth_log = logging.getLogger("esc.auth")
auth_log.addFilter(web.OncePerInterval(60.0))  # a flood is one line a minute, with a count


class BasicAuth:
    """HTTP Basic auth against the configured REST user, in front of /v0.

    scrypt costs ~50 ms and 16 MiB per check on purpose, so a header that verified
    once is remembered by its sha256 (no password kept in memory). Checks of other
    headers run on two threads of their own, never on the threads every database call
    of the API needs, with at most ``MAX_PENDING`` waiting (past that 503), and each
    client address has a budget of failed checks (FailedLogins; past it 429 with
    Retry-After): a flood of wrong passwords neither slows the clients that are
    logged in nor lets anyone try passwords fast.
    """

    MAX_PENDING = 32
    realm = "esc"
    what = "REST"  # in the log

    def __init__(self, app: ASGIApp, user: User, prefix: str = "/v0",
                 shared: VerifiedHeaders | None = None,
                 failed_logins: FailedLogins | None = None) -> None:
        self.app = app
        self.user = user
        self.prefix = prefix
        self.verified: set[bytes] = set()
        self.checks = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="esc-auth")
        self.pending = 0  # checks queued or running (touched on the event loop only)
        self.failed_logins = failed_logins or FailedLogins()
        self.shared = shared  # headers the peer verified, through the database (HA only)

    def _protected(self, path: str) -> bool:
        return path == self.prefix or path.startswith(self.prefix + "/")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self._protected(scope["path"]):
            header = Headers(scope=scope).get("authorization", "")
            key = hashlib.sha256(header.encode()).digest()
            if key not in self.verified:
                refused = await self._check(scope, header)
                if refused is not None:
                    await refused(scope, receive, send)
                    return
                if len(self.verified) > 64:  # only ever valid headers; bound it anyway
                    self.verified.clear()
                self.verified.add(key)
        await self.app(scope, receive, send)

    async def _check(self, scope: Scope, header: str) -> Response | None:
        """None if the header is good, else the answer to send."""
        client = (scope.get("client") or ("local", 0))[0]
        wait = self.failed_logins.retry_after(client)
        if wait:
            auth_log.warning("too many failed logins from %s: answered 429", client)
            return self.refuse(429, "too many failed logins from this address",
                               {"Retry-After": str(wait)})
        if self.pending >= self.MAX_PENDING:
            return self.refuse(503, "too many logins being checked; retry", {"Retry-After": "1"})
        pool = getattr(scope["app"].state, "pool", None) if "app" in scope else None
        self.pending += 1
        try:
            ok = await asyncio.get_running_loop().run_in_executor(
                self.checks, self.verify, header, pool)
        finally:
            self.pending -= 1
        if ok:
            return None
        self.failed_logins.failed(client)
        auth_log.warning("failed %s login from %s", self.what, client)
        return self.refuse(401, "authentication required",
                           {"WWW-Authenticate": f'Basic realm="{self.realm}"'})

    def refuse(self, status: int, message: str, headers: dict[str, str]) -> Response:
        """The answer to a refused request (the ETSI service's is a ProblemDetails)."""
        return error(status, message, headers)

    def verify(self, header: str, pool: ConnectionPool | None) -> bool:
        """scrypt, unless this node or its peer verified the very same header before."""
        if self.shared is None or pool is None:
            return self.check(header)
        digest = self.shared.digest(header)
        if self.shared.known(pool, digest):
            return True
        if not self.check(header):
            return False
        self.shared.remember(pool, digest)
        return True

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
        password_ok = verify_password(password, self.user.password_hash)
        return hmac.compare_digest(name.encode(), self.user.name.encode()) and password_ok


def _pool(request: Request) -> ConnectionPool:
    return request.app.state.pool


async def health(request: Request) -> Response:
    # Unauthenticated: say nothing about why, the log has it.
    try:
        pool = _pool(request)
        timeout = min(pool.timeout, HEALTH_TIMEOUT)
        in_recovery = await run_in_threadpool(db_in_recovery, pool, timeout)
    except psycopg.Error as e:
        log.warning("health: database unavailable: %s", one_line(e))
        return JSONResponse({"status": "database unavailable"}, status_code=503)
    if in_recovery:
        return JSONResponse({"status": "database in recovery"}, status_code=503)
    return JSONResponse({"status": "ok"})


async def on_db_error(request: Request, exc: Exception) -> Response:
    # Read-only (25006), connection lost, pool timeout, unconfirmed commit...:
    # the request may be retried, and nothing was acknowledged.
    log.warning("%s %s: %s", request.method, request.url.path, one_line(exc))
    return api.error(request, 503, f"database unavailable: {one_line(exc)}")


class HttpsOnly:
    """With ``http`` off: every request that came over plain HTTP gets a 301 to the same
    path over HTTPS, before anything reads it (credentials sent in clear are not looked
    at). The lifespan passes through: the HTTP server still runs the app's start-up."""

    def __init__(self, app: ASGIApp, https_port: int) -> None:
        self.app, self.https_port = app, https_port

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("scheme") == "https":
            await self.app(scope, receive, send)
            return
        host = Headers(scope=scope).get("host", "")
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        if not name or re.search(r"[^A-Za-z0-9.:\[\]-]", name):
            server = scope.get("server") or ("localhost", 0)
            name = f"[{server[0]}]" if ":" in str(server[0]) else str(server[0])
        port = "" if self.https_port == 443 else f":{self.https_port}"
        query = scope.get("query_string", b"").decode("latin-1")
        location = f"https://{name}{port}{scope.get('raw_path', b'').decode('latin-1') or scope['path']}"
        location += f"?{query}" if query else ""
        response = Response(status_code=301, headers={"location": location})
        await response(scope, receive, send)


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


def create_app(
    cfg: NodeConfig,
    conninfo: str,
    *,
    pool_timeout: float = POOL_TIMEOUT,
    executor: DeploymentExecutor | None = None,
    worker_threads: int = 2,
    worker_poll: float = 1.0,
    callback_options: Mapping[str, Any] | None = None,
    on_start: Callable[[], None] | None = None,
    on_stop: Callable[[], None] | None = None,
    shared_secret: str | None = None,
    background_after: float = 0.0,
    components_file: Path | None = None,
    monitor_running: Callable[[], bool] | None = None,
) -> FastAPI:
    """The ASGI app. The pool, the transaction worker and the callback sender start
    with the lifespan (i.e. at ``serve``, on the active only), so building the app
    touches no database; ``app.state.pool`` / ``.worker`` / ``.callbacks`` exist
    only while the app runs. ``callback_options`` go to CallbackSender (tests make
    its back-off short). ``shared_secret``: the pair's, keys the verified-header cache
    both nodes share (auth_cache.py); without it, each node verifies on its own.
    ``background_after``: seconds between listening and the start of the background
    work (BACKGROUND_AFTER_S under an agent). ``components_file``: where the parts'
    states are written while serving (esc.services.components), with the VNF monitor's
    from ``monitor_running`` (None: no VIM, no monitor)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
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
        sender = CallbackSender(conninfo, policy=app.state.callback_policy, **(callback_options or {}))
        worker = Worker(conninfo, executor, threads=worker_threads, poll=worker_poll,
                        on_finished=sender.wake)
        janitor = Janitor(conninfo, cfg.retention)
        listener = WorkListener(conninfo, worker.wake)
        app.state.pool, app.state.worker, app.state.callbacks = pool, worker, sender
        app.state.janitor = janitor
        # The background work starts a moment after listening: on a new active, the
        # first requests (clients retrying through the VIP) then have the CPU and the
        # database to themselves instead of queueing behind the connections and the
        # backlog of the worker, the sender, the janitor and the VNF monitor.
        worker.start(after=background_after)
        sender.start(after=background_after)
        janitor.start(after=background_after)
        listener.start(after=background_after)
        stopping = threading.Event()
        reporter = None
        if components_file is not None:
            reporter = components.Reporter(components_file, {
                "worker": lambda: any(t.is_alive() for t in worker.threads),
                "callbacks": lambda: any(t.is_alive() for t in sender.threads),
                "janitor": lambda: any(t.is_alive() for t in janitor.threads),
                # null: no VIM, no monitor; false until it starts, a moment after listening
                "monitor": monitor_running or (lambda: None),
            })
            reporter.start()
        if on_start is not None:  # the VNF monitor: active only, like the worker
            def start_monitor() -> None:
                if not stopping.wait(background_after):
                    on_start()

            threading.Thread(target=start_monitor, name="esc-on-start", daemon=True).start()
        try:
            yield
        finally:
            stopping.set()
            if reporter is not None:
                await run_in_threadpool(reporter.stop)
            if on_stop is not None:
                await run_in_threadpool(on_stop)
            worker.request_stop()
            sender.request_stop()
            janitor.request_stop()
            listener.request_stop()
            await run_in_threadpool(worker.stop, 2.0)
            await run_in_threadpool(sender.stop, 1.0)
            await run_in_threadpool(janitor.stop, 1.0)
            await run_in_threadpool(listener.stop, 1.0)
            await run_in_threadpool(pool.close, 2.0)

    app = FastAPI(
        title="escmanager",
        version="0",
        description=(api.__doc__ or "").split("\n\n")[0],
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        # no OpenTelemetry spans, metrics or exporters (nor their cost per request)
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False,
                   "auto_configure": False},
        exception_handlers={
            **api.EXCEPTION_HANDLERS,
            psycopg.Error: on_db_error,
            CommitNotConfirmed: on_db_error,
        },
    )
    from esc.ha.vip import addresses

    app.state.callback_policy = CallbackPolicy(cfg.callbacks, pair_addresses(cfg),
                                               ha_networks(cfg, addresses() if cfg.ha else []))
    app.add_api_route("/health", health, methods=["GET"], tags=["health"], response_model=models.Health,
                      responses={503: {"model": models.Health, "description": "not serving"}},
                      summary="Whether this node serves (unauthenticated)")
    app.include_router(api.router())
    api.install_openapi(app)
    if cfg.rest_user:
        shared = VerifiedHeaders(shared_secret, cfg.rest_user.password_hash) if shared_secret else None
        app.add_middleware(BasicAuth, user=cfg.rest_user, shared=shared)
    app.add_middleware(NodeHeader, node=cfg.name)
    if not cfg.http:
        app.add_middleware(HttpsOnly, https_port=cfg.https_port)
    app.add_middleware(RequestMetrics, service="escmanager")  # outermost: what a client waits
    return app


# --- process -------------------------------------------------------------------------------


def setup_logging(paths: NodePaths, node: str, name: str = "escmanager") -> None:
    paths.log.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(paths.log / f"{name}.log")
    node = node.replace("%", "%%")
    handler.setFormatter(
        logs.OneLineFormatter(
            f"%(asctime)s.%(msecs)03d {node} {name}[%(process)d] %(levelname)s %(message)s",
            "%Y-%m-%dT%H:%M:%S",
        )
    )
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    logging.getLogger("psycopg.pool").setLevel(logging.WARNING)  # INFO is per request
    logs.capture_output(stdout=False)  # stdout is the agent's channel (notify)


def notify(state: str) -> None:
    """Tell the agent (our stdout) about a state change; it may have stopped reading."""
    try:
        print(state, flush=True)
    except OSError:
        pass


async def serve_all(http: web.Server, http_sock: socket.socket, https: web.Server | None,
                    https_sock: socket.socket | None, exit_requested: threading.Event,
                    extra: list[tuple[web.Server, socket.socket]] | None = None,
                    extra_stopping: threading.Event | None = None) -> None:
    """HTTP first (the failover path waits for it, and its lifespan opens the pool
    and starts the worker), then HTTPS on the same app with no lifespan of its own,
    then the ``extra`` servers (the portal, with its own lifespan). On exit, they close
    first (``extra_stopping`` ends their long answers at once), then HTTPS, so that
    the pool outlives every request."""
    http_task = asyncio.create_task(http.serve(sockets=[http_sock]))
    while not http.started and not http_task.done():
        await asyncio.sleep(0.002)
    https_task = None
    if https is not None and https_sock is not None and http.started:
        https_task = asyncio.create_task(https.serve(sockets=[https_sock]))
    extra_tasks = [(server, asyncio.create_task(server.serve(sockets=[s])))
                   for server, s in (extra or []) if http.started]
    while not exit_requested.is_set() and not http_task.done():
        await asyncio.sleep(0.05)
    if extra_stopping is not None:
        extra_stopping.set()
    for server, task in extra_tasks:
        server.should_exit = True
        await task
    if https_task is not None:
        assert https is not None
        https.should_exit = True
        await https_task
    http.should_exit = True
    await http_task


def auth_secret(paths: NodePaths) -> str | None:
    """What keys the verified-header cache, alike on both nodes: the agent hands the
    unprivileged controller this one derivation of the pair key (esc.privileges); run
    as root (tests, by hand), the controller derives it itself."""
    try:
        return paths.manager_auth_key.read_text().strip() or None
    except OSError:
        key = pair_key(paths)
        return derive(key, "rest-auth-cache") if key else None


def tls_files(paths: NodePaths) -> tuple[Path, Path]:
    """The HTTPS certificate and key: the controller's own copies when the agent made
    them (esc.privileges), else the node's."""
    if paths.manager_tls_cert.exists() and paths.manager_tls_key.exists():
        return paths.manager_tls_cert, paths.manager_tls_key
    return paths.tls_cert, paths.tls_key


def https_config(app: Any, cfg: NodeConfig, paths: NodePaths,
                 port: int | None = None, lifespan: str = "off") -> uvicorn.Config | None:
    """The HTTPS server's config, its certificate loaded now (while parked, so that
    a bad file is reported before a failover needs it); None without material."""
    cert, key = tls_files(paths)
    if not (cfg.https_port if port is None else port) or not (cert.exists() and key.exists()):
        log.warning("no TLS material in %s: HTTPS not served", paths.tls_dir)
        return None
    try:
        config = web.config(app, ssl_certfile=str(cert), ssl_keyfile=str(key), lifespan=lifespan, **GUARDS)
    except (OSError, ValueError) as e:  # ssl.SSLError is an OSError
        log.error("TLS material in %s unusable, HTTPS not served: %s", paths.tls_dir, e)
        return None
    return config


def watch_stdin(exit_requested: threading.Event, lease: ServingLease,
                on_tls: Callable[[], None] | None = None, mode: OperationMode | None = None) -> None:
    """While serving: "lease T" renews the serving lease (esc.services.serving); "mode M"
    is the pair's operation mode; "tls" loads the HTTPS certificate again (new
    connections get it); "exit" or EOF (the agent died) shuts the servers down."""
    for line in sys.stdin:
        until = parse_lease_line(line)
        if until is not None:
            lease.renew(until)
            continue
        if (m := parse_mode_line(line)) is not None:
            if mode is not None:
                if m != mode.mode:
                    log.info("stdin: operation mode %s", m)
                mode.set(m)
            continue
        if line.strip() == "tls" and on_tls is not None:
            on_tls()
            continue
        if line.strip() == "exit":
            log.info("stdin: exit, shutting down")
            break
        log.warning("stdin: ignoring %r while serving", line.strip())
    else:
        log.info("stdin: EOF, shutting down")
    exit_requested.set()


def wait_for_serve(lease: ServingLease, mode: OperationMode | None = None) -> bool:
    """Parked: True on "serve", False on "exit" or EOF (a lease and the mode may come
    first)."""
    for line in sys.stdin:
        until = parse_lease_line(line)
        if until is not None:
            lease.renew(until)
            continue
        if (m := parse_mode_line(line)) is not None:
            if mode is not None:
                mode.set(m)
            continue
        command = line.strip()
        if command == "serve":
            return True
        if command == "exit":
            log.info("stdin: exit while parked")
            return False
        log.warning("stdin: ignoring %r while parked", command)
    log.info("stdin: EOF while parked")
    return False


def warm_up(app: ASGIApp) -> int:
    """One request through the app while parked; returns its status (404).

    Starlette builds the middleware stack, and FastAPI each included router's routes
    (~50 ms of pydantic schema building here), on the first request a process gets:
    on a new active that was the first request after a failover. A path no route
    has, outside /v0, goes past every route and needs neither credentials nor the
    database."""
    path = "/__warm_up__"
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
             "scheme": "http", "path": path, "raw_path": path.encode(), "root_path": "",
             "query_string": b"", "headers": [], "client": ("127.0.0.1", 0),
             "server": ("127.0.0.1", 0)}
    status = 0

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    asyncio.run(app(scope, receive, send))
    return status


def _exit_now(signum: int, frame: object) -> None:
    log.info("signal %d while parked, exiting", signum)
    sys.exit(0)


def service_start(name: str, description: str, argv: list[str] | None
                  ) -> tuple[argparse.Namespace, NodePaths, NodeConfig] | int:
    """A parked service's command line (``--root ROOT [--serve]``), its node's config and
    its log; or the exit code when the config cannot be read."""
    parser = argparse.ArgumentParser(prog=name, description=description)
    parser.add_argument("--root", type=Path, required=True, help="the node's root directory")
    parser.add_argument("--serve", action="store_true", help="serve at once, ignore stdin")
    args = parser.parse_args(argv)
    paths = NodePaths(args.root)
    try:
        cfg = load_config(paths)
    except ConfigError as e:
        print(f"{name}: {e}", file=sys.stderr)
        return 2
    setup_logging(paths, cfg.name, name)
    return args, paths, cfg


def main(argv: list[str] | None = None) -> int:
    started = service_start("escmanager", __doc__.splitlines()[0], argv)
    if isinstance(started, int):
        return started
    args, paths, cfg = started

    conninfo = db_conninfo(cfg, paths)
    vim = None
    if cfg.vim is not None:
        from esc.services.vim_wiring import VimController
        from esc.vim.service import RemoteDriver

        vim = VimController(cfg.vim, conninfo, RemoteDriver(paths.vim_sock))
    app = create_app(cfg, conninfo, executor=vim,
                     on_start=vim.start if vim else None, on_stop=vim.stop if vim else None,
                     shared_secret=auth_secret(paths) if cfg.is_ha else None,
                     background_after=BACKGROUND_AFTER_S,
                     components_file=paths.manager_dir / components.FILE,
                     monitor_running=(lambda: vim.monitor.running) if vim else None)
    mode = OperationMode()
    if vim is not None:
        mode.listeners.append(lambda m: vim.set_maintenance(m == "maintenance"))
    portal = None
    if cfg.portal_user is not None:
        def portal(lease: ServingLease, stopping: threading.Event) -> ASGIApp:
            from esc.portal.app import create_app as portal_app

            return portal_app(cfg, conninfo, paths.portal_sock, serving=lease.valid, stopping=stopping)
    return run_parked(app, cfg, paths, serve_now=args.serve, name="escmanager",
                      http_port=cfg.api_port, https_port=cfg.https_port, portal=portal, mode=mode)


def run_parked(app: ASGIApp, cfg: NodeConfig, paths: NodePaths, *, serve_now: bool, name: str,
               http_port: int, https_port: int,
               portal: Callable[[ServingLease, threading.Event], ASGIApp] | None = None,
               mode: OperationMode | None = None, problem_json: bool = False) -> int:
    """Park (imports done, app built and warmed, listening on nothing) until "serve" on
    stdin, then serve ``app`` on ``http_port`` and, with TLS material, ``https_port``
    until "exit", EOF or a signal. The protocol of the module docstring; the ETSI
    service (esc.etsi.service) runs the same way. ``portal``: makes the portal's app
    (esc.portal), served on ``cfg.portal_port``, HTTPS only, behind the same lease."""
    # under an agent, nothing is answered until its first lease
    lease = ServingLease() if serve_now else ServingLease(until=0.0)
    mode = mode or OperationMode()
    # the portal stays open in maintenance (it is where an admin ends it)
    gated = ServingGate(MaintenanceGate(app, mode, problem=problem_json), lease)
    config = web.config(gated, lifespan="on", **GUARDS)  # loaded now, not at failover
    tls_config = https_config(gated, cfg, paths, https_port)
    portal_stopping = threading.Event()
    portal_config = None
    if portal is not None:
        portal_config = https_config(ServingGate(portal(lease, portal_stopping), lease), cfg, paths,
                                     cfg.portal_port, lifespan="on")
        if portal_config is None:
            log.warning("the portal is not served: it is HTTPS only")

    t_serve = 0.0

    def on_listening() -> None:
        log.info("listening on port %d, %.1f ms after serve", http_port, (time.monotonic() - t_serve) * 1000)
        notify("serving")

    http = web.Server(config, on_listening)
    https = web.Server(tls_config) if tls_config else None

    def reload_tls() -> None:
        cert, key = tls_files(paths)
        if tls_config is None or tls_config.ssl is None:
            log.warning("stdin: tls, but HTTPS is not served")
            return
        for c in (tls_config, portal_config):
            if c is None or c.ssl is None:
                continue
            try:
                c.ssl.load_cert_chain(str(cert), str(key))
                log.info("HTTPS certificate loaded again from %s", cert)
            except (OSError, ValueError) as e:
                log.error("HTTPS certificate in %s unusable, the previous one kept: %s", cert.parent, e)

    signal.signal(signal.SIGTERM, _exit_now)
    signal.signal(signal.SIGINT, _exit_now)
    if not serve_now:
        warm_up(app)
        log.info("%s parked, pid %d", name, os.getpid())
        notify("parked")
        if not wait_for_serve(lease, mode):
            return 0
    t_serve = time.monotonic()

    # from now on a signal must stop the servers gracefully, not kill the process
    exit_requested = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: exit_requested.set())
    signal.signal(signal.SIGINT, lambda signum, frame: exit_requested.set())
    if not serve_now:
        threading.Thread(target=watch_stdin, args=(exit_requested, lease, reload_tls, mode),
                         daemon=True).start()
    try:
        sock = web.tcp_socket("::", http_port)
    except OSError as e:
        log.error("cannot bind port %d: %s", http_port, e)
        return 1
    tls_sock = None
    if https is not None:
        try:
            tls_sock = web.tcp_socket("::", https_port)
        except OSError as e:
            log.error("cannot bind port %d, HTTPS not served: %s", https_port, e)
    extra: list[tuple[web.Server, socket.socket]] = []
    if portal_config is not None:
        try:
            extra.append((web.Server(portal_config), web.tcp_socket("::", cfg.portal_port)))
        except OSError as e:
            log.error("cannot bind port %d, the portal not served: %s", cfg.portal_port, e)
    with asyncio.Runner(loop_factory=config.get_loop_factory()) as runner:
        runner.run(serve_all(http, sock, https, tls_sock, exit_requested, extra, portal_stopping))
    log.info("stopped")
    return 0 if http.started else 1


if __name__ == "__main__":
    code = main()
    logging.shutdown()
    # A worker thread may still be blocked in the database (a commit waiting for
    # a standby that is gone, past the graceful timeout): it must not keep a
    # stopped service alive, and its client got no 2xx.
    os._exit(code)
