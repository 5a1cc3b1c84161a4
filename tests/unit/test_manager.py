"""escmanager against a real PostgreSQL (the session's ``pg_server``)."""

from __future__ import annotations

import base64
import os
import queue
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest

from esc import clock, tls
from esc.config import NodeConfig, NodePaths, User, save_config
from esc.secrets import hash_password
from esc.services.manager import create_app, db_conninfo
from esc.services.schema import ensure_schema

with warnings.catch_warnings():
    # starlette would rather have httpx2; httpx works the same for these tests
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

USER, PASSWORD = "admin", "s3cret"


@dataclass(frozen=True)
class Node:
    cfg: NodeConfig
    paths: NodePaths
    conninfo: str


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def node(pg_server, tmp_path_factory) -> Node:
    """A node root whose pg socket dir is a symlink to the test server's."""
    paths = NodePaths(tmp_path_factory.mktemp("root"))
    paths.run.mkdir(parents=True)
    paths.pg_socket_dir.symlink_to(pg_server.socket_dir)
    cfg = NodeConfig(
        name="node-a",
        rest_user=User(name=USER, password_hash=hash_password(PASSWORD)),
        api_port=_free_port(),
        https_port=_free_port(),
        pg_port=pg_server.port,
    )
    save_config(paths, cfg)
    tls.write_material(paths, *tls.make_certificate(["127.0.0.1"]), supplied=False)
    conninfo = db_conninfo(cfg, paths)
    with psycopg.connect(conninfo) as conn:
        ensure_schema(conn)
        ensure_schema(conn)  # idempotent
    return Node(cfg, paths, conninfo)


@pytest.fixture(autouse=True)
def _empty_table(node: Node, esc_db: str) -> None:
    """esc_db empties every table of the same database."""


def authed(app) -> TestClient:
    c = TestClient(app)
    c.auth = (USER, PASSWORD)  # httpx: per request, auth=None sends no credentials
    return c


@pytest.fixture
def client(node: Node) -> Iterator[TestClient]:
    with authed(create_app(node.cfg, node.conninfo)) as c:
        yield c


def rows(node: Node) -> list[str]:
    with psycopg.connect(node.conninfo) as conn:
        return [r[0] for r in conn.execute("SELECT name FROM deployments ORDER BY id")]


# --- REST ----------------------------------------------------------------------------------


def test_create_then_list_and_get(client: TestClient) -> None:
    a = client.post("/v0/deployments", json={"name": "alpha"})
    b = client.post("/v0/deployments", json={"name": "be/ta"})
    assert (a.status_code, b.status_code) == (201, 201)
    # the first version answered only these three; the deployment has more now
    assert set(a.json()) >= {"id", "name", "created_at", "tenant", "status", "transaction_id"}
    assert a.json()["name"] == "alpha" and b.json()["id"] > a.json()["id"]
    assert a.json()["tenant"] == "default" and a.json()["vm_groups"] == []

    def ident(d: dict) -> tuple:
        return d["id"], d["name"], d["created_at"], d["tenant"]

    listed = client.get("/v0/deployments")
    assert listed.status_code == 200
    assert [ident(d) for d in listed.json()] == [ident(a.json()), ident(b.json())]
    assert ident(client.get("/v0/deployments/be/ta").json()) == ident(b.json())
    missing = client.get("/v0/deployments/nope")
    assert missing.status_code == 404 and "error" in missing.json()


def test_same_name_again_is_the_same_deployment(client: TestClient, node: Node) -> None:
    """A retry (same name, same body) whose first answer was lost finds the first
    deployment and its transaction: 2xx, nothing created twice."""
    first = client.post("/v0/deployments", json={"name": "dup"})
    assert first.status_code == 201
    again = client.post("/v0/deployments", json={"name": "dup"})
    assert again.status_code == 201 and again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    assert again.json()["transaction_id"] == first.json()["transaction_id"]
    assert rows(node) == ["dup"]


def test_same_name_with_another_body_is_409(client: TestClient, node: Node) -> None:
    r = client.post("/v0/tenants/default/deployments", json={"name": "dup", "description": "other"})
    assert r.status_code == 202, r.text
    again = client.post("/v0/deployments", json={"name": "dup"})
    assert again.status_code == 409
    assert again.json() == {"error": "deployment default/dup exists"}


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.parametrize(
    "authorization",
    [None, _basic(USER, "wrong"), _basic("other", PASSWORD), "Basic !!!", "Bearer x"],
    ids=["missing", "bad-password", "bad-user", "bad-base64", "other-scheme"],
)
def test_unauthenticated_is_401(client: TestClient, node: Node, authorization: str | None) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    for method, url in [("GET", "/v0/deployments"), ("POST", "/v0/deployments")]:
        r = client.request(method, url, headers=headers, json={"name": "x"}, auth=None)
        assert r.status_code == 401
        assert r.headers["WWW-Authenticate"] == 'Basic realm="esc"'
        assert "error" in r.json()
    assert rows(node) == []
    # the right credentials still work (and a cached success does not leak to others)
    assert client.get("/v0/deployments").status_code == 200
    assert client.get("/v0/deployments", headers=headers, auth=None).status_code == 401


def test_a_new_active_trusts_headers_its_peer_verified(node: Node, monkeypatch) -> None:
    """The first request of a client after a failover skips scrypt (~50 ms on the
    failover's path) when the other node verified that very header: both share the
    database. Only with the pair's secret, never for a wrong password, never after the
    password changed."""
    import esc.services.manager as manager

    calls: list[str] = []
    real = manager.verify_password

    def counting(password: str, stored: str) -> bool:
        calls.append(password)
        return real(password, stored)

    monkeypatch.setattr(manager, "verify_password", counting)
    with authed(create_app(node.cfg, node.conninfo, shared_secret="pair")) as a:
        assert a.get("/v0/deployments", auth=(USER, "wrong")).status_code == 401
        assert a.get("/v0/deployments").status_code == 200
    assert calls == ["wrong", PASSWORD]
    with psycopg.connect(node.conninfo) as conn:
        assert conn.execute("SELECT count(*) FROM auth_verified").fetchone() == (1,)  # not "wrong"
    calls.clear()
    with authed(create_app(node.cfg, node.conninfo, shared_secret="pair")) as b:  # the next active
        assert b.get("/v0/deployments").status_code == 200
        assert b.get("/v0/deployments", auth=(USER, "wrong")).status_code == 401
    assert calls == ["wrong"]  # the right password was taken from the shared cache
    calls.clear()
    with authed(create_app(node.cfg, node.conninfo, shared_secret="another")) as c:
        assert c.get("/v0/deployments").status_code == 200
    assert calls == [PASSWORD]  # another key finds nothing
    calls.clear()
    changed = node.cfg.model_copy(update={"rest_user": User(name=USER, password_hash=hash_password("new"))})
    with authed(create_app(changed, node.conninfo, shared_secret="pair")) as d:
        assert d.get("/v0/deployments").status_code == 401  # the old password, verified before
        assert d.get("/v0/deployments", auth=(USER, "new")).status_code == 200
    assert calls == [PASSWORD, "new"]


def test_the_shared_header_cache_falls_back_to_scrypt_without_its_table(node: Node) -> None:
    """A database made by an older version has no auth_verified table: scrypt, no error."""
    with psycopg.connect(node.conninfo) as conn:
        conn.execute("DROP TABLE auth_verified")
    try:
        with authed(create_app(node.cfg, node.conninfo, shared_secret="pair")) as a:
            assert a.get("/v0/deployments").status_code == 200
            assert a.get("/v0/deployments", auth=(USER, "wrong")).status_code == 401
    finally:
        with psycopg.connect(node.conninfo) as conn:
            ensure_schema(conn)


def test_warm_up_needs_no_database_and_builds_the_routes(node: Node, tmp_path: Path) -> None:
    """The parked controller sends itself one request: it must not need the database
    (there is none to reach while parked) nor credentials, and it must leave FastAPI's
    lazily built routes built (else the first request after a failover builds them)."""
    from esc.services.manager import warm_up

    app = create_app(node.cfg, f"host={tmp_path} port=1 dbname=esc user=esc connect_timeout=1")
    lazy = [r for r in app.router.routes if hasattr(r, "_effective_candidates_version")]
    assert warm_up(app) == 404
    for route in lazy:  # FastAPI >= 0.120 builds included routers on first match
        assert route._effective_candidates_version is not None


def test_auth_off_without_rest_user(node: Node) -> None:
    cfg = node.cfg.model_copy(update={"rest_user": None})
    with TestClient(create_app(cfg, node.conninfo)) as c:
        assert c.get("/v0/deployments").status_code == 200


@pytest.mark.parametrize(
    "body",
    [
        b'{"name": "a", "extra": 1}',
        b'{"name": 5}',
        b'{"name": ""}',
        b'{"name": "' + b"x" * 201 + b'"}',
        b"{}",
        b'["a"]',
        b'{"name": "a"',
        b"",
        b'{"name": "a", "name": "b"}',
        b'{"name": "a\\u0000b"}',
        b'{"name": "\\ud800"}',
        b"\xff\xfe",
        b"[" * 50000,
    ],
    ids=["unknown-field", "non-string", "empty", "too-long", "missing", "not-object",
         "truncated", "no-body", "duplicate-key", "nul", "lone-surrogate", "not-utf8", "deep"],
)
def test_bad_body_is_400(client: TestClient, node: Node, body: bytes) -> None:
    r = client.post(
        "/v0/deployments", content=body, headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 400, r.text
    assert "error" in r.json()
    assert rows(node) == []


@pytest.mark.parametrize("ctype", ["text/plain", None, "application/x-www-form-urlencoded"])
def test_wrong_content_type_is_415(client: TestClient, node: Node, ctype: str | None) -> None:
    headers = {"Content-Type": ctype} if ctype else {}
    r = client.post("/v0/deployments", content=b'{"name": "a"}', headers=headers)
    assert r.status_code == 415 and "error" in r.json()
    assert rows(node) == []


def test_charset_parameter_is_accepted(client: TestClient) -> None:
    r = client.post(
        "/v0/deployments",
        content=b'{"name": "a"}',
        headers={"Content-Type": "application/json; charset=utf-8"},
    )
    assert r.status_code == 201


def test_body_too_large_is_413(client: TestClient, node: Node) -> None:
    body = b'{"name": "' + b"x" * (64 * 1024) + b'"}'
    r = client.post("/v0/deployments", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and "error" in r.json()

    def chunks() -> Iterator[bytes]:  # no Content-Length: the stream itself is capped
        yield body[:40000]
        yield body[40000:]

    r = client.post("/v0/deployments", content=chunks(), headers={"Content-Type": "application/json"})
    assert r.status_code == 413
    assert rows(node) == []


def test_health(client: TestClient) -> None:
    r = client.get("/health", auth=None)
    assert r.status_code == 200 and r.json() == {"status": "ok"}


def test_unknown_route_is_json(client: TestClient) -> None:
    r = client.get("/v0/nothing")
    assert r.status_code == 404 and "error" in r.json()


# --- database failures ---------------------------------------------------------------------


def test_read_only_database_is_503(node: Node) -> None:
    read_only = node.conninfo + " options='-c default_transaction_read_only=on'"
    with authed(create_app(node.cfg, read_only)) as c:
        r = c.post("/v0/deployments", json={"name": "ro"})
    assert r.status_code == 503
    assert "ReadOnlySqlTransaction" in r.json()["error"]
    assert rows(node) == []


def test_unreachable_database_is_503(node: Node, tmp_path: Path) -> None:
    gone = f"host={tmp_path} port=1 dbname=esc user=esc"
    with authed(create_app(node.cfg, gone, pool_timeout=0.3)) as c:
        health = c.get("/health")
        assert health.status_code == 503 and health.json()["status"] != "ok"
        r = c.post("/v0/deployments", json={"name": "lost"})
        assert r.status_code == 503 and "error" in r.json()
        assert c.get("/v0/deployments").status_code == 503


def test_commit_not_confirmed_by_standby_is_503(pg_server, client: TestClient) -> None:
    """PostgreSQL reports a COMMIT whose wait for the synchronous standby was
    cancelled as a success with a WARNING; the service must not answer 201."""
    admin = psycopg.connect(pg_server.conninfo("postgres", "postgres"), autocommit=True)
    admin.execute("ALTER SYSTEM SET synchronous_standby_names = 'nobody'")
    admin.execute("SELECT pg_reload_conf()")
    try:
        # the setting reaches the backends asynchronously: retry until a commit waits
        for attempt in range(50):
            result: dict[str, httpx.Response] = {}

            def post(name: str, into: dict[str, httpx.Response]) -> None:
                into["r"] = client.post("/v0/deployments", json={"name": name})

            t = threading.Thread(target=post, args=(f"unconfirmed-{attempt}", result))
            t.start()
            pid = None
            while t.is_alive() and pid is None:
                row = admin.execute(
                    "SELECT pid FROM pg_stat_activity"
                    " WHERE wait_event = 'SyncRep' AND application_name = 'escmanager'"
                ).fetchone()
                pid = row[0] if row else None
                time.sleep(0.005)
            if pid is not None:
                admin.execute("SELECT pg_cancel_backend(%s)", (pid,))
            t.join(5)
            if pid is not None:
                assert result["r"].status_code == 503
                assert "not confirmed" in result["r"].json()["error"]
                break
            assert result["r"].status_code == 201  # committed before the setting applied
        else:
            pytest.fail("no commit ever waited for the synchronous standby")
    finally:
        admin.execute("ALTER SYSTEM RESET synchronous_standby_names")
        admin.execute("SELECT pg_reload_conf()")
        admin.close()


# --- the process: parked, then serving ----------------------------------------------------


class Manager:
    """``python -m esc.services.manager`` with its stdout lines in a queue."""

    def __init__(self, root: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "esc.services.manager", "--root", str(root)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout
        for line in self.proc.stdout:
            self.lines.put(line.strip())

    def expect(self, line: str, timeout: float = 10) -> None:
        assert self.lines.get(timeout=timeout) == line

    def send(self, line: str) -> None:
        assert self.proc.stdin
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def sockets(self) -> list[str]:
        fds = Path(f"/proc/{self.proc.pid}/fd")
        return [link for fd in fds.iterdir() if (link := os.readlink(fd)).startswith("socket:")]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.reader.join(5)  # EOF now that the process is gone
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe:
                try:
                    pipe.close()
                except OSError:  # stdin already closed by the test, or broken
                    pass


@pytest.fixture
def manager(node: Node) -> Iterator[Manager]:
    m = Manager(node.paths.root)
    try:
        yield m
    finally:
        m.stop()


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def test_parked_then_serve_then_stdin_eof(manager: Manager, node: Node) -> None:
    port = node.cfg.api_port
    manager.expect("parked")
    assert manager.sockets() == []  # no listener, no database connection
    assert not _accepts("127.0.0.1", port)

    t0 = time.monotonic()
    manager.send(f"lease {clock.now() + 60}")  # as the agent does, every tick
    manager.send("serve")
    while not _accepts("127.0.0.1", port):  # IPv4 through the [::] dual-stack socket
        assert time.monotonic() - t0 < 5, "never listened"
        time.sleep(0.001)
    elapsed_ms = (time.monotonic() - t0) * 1000
    print(f"serve -> accepting: {elapsed_ms:.1f} ms")
    assert elapsed_ms < 500
    manager.expect("serving")

    for host in ["127.0.0.1", "[::1]"] if socket.has_ipv6 else ["127.0.0.1"]:
        r = httpx.get(f"http://{host}:{port}/health", timeout=5)
        assert r.status_code == 200 and r.json() == {"status": "ok"}
    r = httpx.post(
        f"http://127.0.0.1:{port}/v0/deployments", json={"name": "live"}, auth=(USER, PASSWORD)
    )
    assert r.status_code == 201

    manager.send(f"lease {clock.now() - 1}")  # the agent stopped vouching (frozen, fencing)
    r = httpx.get(f"http://127.0.0.1:{port}/health", timeout=5)
    assert r.status_code == 503 and "not serving" in r.json()["error"]

    assert manager.proc.stdin
    manager.proc.stdin.close()  # the agent died
    assert manager.proc.wait(timeout=10) == 0
    assert not _accepts("127.0.0.1", port)
    log = (node.paths.log / "escmanager.log").read_text()
    assert "node-a" in log and "after serve" in log and "created deployment" in log


def test_exit_while_parked(manager: Manager) -> None:
    manager.expect("parked")
    manager.send("exit")
    assert manager.proc.wait(timeout=5) == 0


def test_sigterm_while_serving(manager: Manager, node: Node) -> None:
    manager.expect("parked")
    manager.send(f"lease {clock.now() + 60}")  # as the agent does, every tick
    manager.send("serve")
    manager.expect("serving")
    assert _accepts("127.0.0.1", node.cfg.api_port)
    manager.proc.send_signal(signal.SIGTERM)
    assert manager.proc.wait(timeout=10) == 0


def test_https_serves_the_same_app_and_closes_with_it(manager: Manager, node: Node) -> None:
    manager.expect("parked")
    assert not _accepts("127.0.0.1", node.cfg.https_port)
    manager.send(f"lease {clock.now() + 60}")  # as the agent does, every tick
    manager.send("serve")
    manager.expect("serving")
    t0 = time.monotonic()
    while not _accepts("127.0.0.1", node.cfg.https_port):  # just after HTTP
        assert time.monotonic() - t0 < 5, "HTTPS never listened"
        time.sleep(0.01)
    ctx = ssl.create_default_context(cafile=str(node.paths.tls_cert))
    base = f"https://127.0.0.1:{node.cfg.https_port}"
    r = httpx.get(f"{base}/health", verify=ctx, timeout=5)
    assert r.status_code == 200 and r.json() == {"status": "ok"}
    assert httpx.get(f"{base}/v0/deployments", verify=ctx, timeout=5).status_code == 401
    r = httpx.post(f"{base}/v0/deployments", json={"name": "over-tls"}, auth=(USER, PASSWORD),
                   verify=ctx, timeout=5)
    assert r.status_code == 201  # the pool opened by the HTTP server's lifespan serves both
    r = httpx.get(f"http://127.0.0.1:{node.cfg.api_port}/v0/deployments/over-tls", auth=(USER, PASSWORD))
    assert r.status_code == 200
    with pytest.raises(httpx.ConnectError):  # a certificate the client does not trust
        httpx.get(f"{base}/health", timeout=5)
    manager.proc.send_signal(signal.SIGTERM)
    assert manager.proc.wait(timeout=10) == 0
    assert not _accepts("127.0.0.1", node.cfg.https_port)
    assert not _accepts("127.0.0.1", node.cfg.api_port)


def test_failed_logins_are_limited_per_address(node: Node, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ten wrong passwords from an address, then 429 with Retry-After and no check at
    all; a header verified before still works from there. (Refilled slowly here: ten
    scrypt checks on a busy machine can take longer than the one second that refills
    one try.)"""
    from esc.services.manager import FailedLogins

    monkeypatch.setattr(FailedLogins.__init__, "__defaults__", (10.0, 0.01, 10_000))
    with authed(create_app(node.cfg, node.conninfo)) as c:
        assert c.get("/v0/deployments").status_code == 200
        answers = [c.get("/v0/deployments", auth=(USER, f"wrong{i}")) for i in range(12)]
        assert [r.status_code for r in answers] == [401] * 10 + [429] * 2
        assert int(answers[-1].headers["retry-after"]) >= 1
        assert c.get("/v0/deployments").status_code == 200


def test_the_failed_login_budget_refills() -> None:
    from esc.services.manager import FailedLogins

    book = FailedLogins(burst=3, rate=0.5)
    for _ in range(3):
        assert book.retry_after("a", now=100.0) == 0
        book.failed("a", now=100.0)
    assert book.retry_after("a", now=100.0) == 2  # one more every 2 s
    assert book.retry_after("b", now=100.0) == 0  # per address
    assert book.retry_after("a", now=102.0) == 0
    small = FailedLogins(max_clients=2)
    for client in ("x", "y", "z"):
        small.failed(client, now=1.0)
    assert list(small.buckets) == ["y", "z"]


def test_password_checks_never_take_the_threads_database_calls_need(node: Node, monkeypatch) -> None:
    import threading

    from esc.services import manager

    threads: list[str] = []
    real = manager.verify_password

    def spy(password: str, hashed: str) -> bool:
        threads.append(threading.current_thread().name)
        return real(password, hashed)

    monkeypatch.setattr(manager, "verify_password", spy)
    with authed(create_app(node.cfg, node.conninfo)) as c:
        assert c.get("/v0/deployments").status_code == 200
        assert c.get("/v0/deployments", auth=(USER, "wrong")).status_code == 401
    assert len(threads) == 2 and all(t.startswith("esc-auth") for t in threads), threads


def test_https_only_redirects_plain_http_without_reading_credentials(node: Node, monkeypatch) -> None:
    from esc.services import manager

    cfg = node.cfg.model_copy(update={"http": False})

    def never(password: str, hashed: str) -> bool:
        raise AssertionError("a password sent over plain HTTP was checked")

    with TestClient(create_app(cfg, node.conninfo), follow_redirects=False) as c:
        monkeypatch.setattr(manager, "verify_password", never)
        r = c.get("/v0/deployments?limit=5", auth=(USER, PASSWORD))
        assert r.status_code == 301
        assert r.headers["location"] == f"https://testserver:{cfg.https_port}/v0/deployments?limit=5"
        r = c.get("/v0/deployments", headers={"host": "evil\r\nx: y"})
        assert r.status_code == 301 and "evil" not in r.headers["location"]
        monkeypatch.undo()
    with TestClient(create_app(cfg, node.conninfo), base_url="https://testserver") as c:
        assert c.get("/v0/deployments", auth=(USER, PASSWORD)).status_code == 200
