"""Shared fixtures. ``pg_server``: a throwaway PostgreSQL 15 cluster for the session."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from esc.config import PG_BIN


@dataclass(frozen=True)
class PgServer:
    """A running cluster, reachable only over its unix socket, with trust auth,
    superuser ``postgres``, and role ``esc`` owning database ``esc``."""

    datadir: Path
    socket_dir: Path
    port: int

    def conninfo(self, user: str = "esc", dbname: str = "esc") -> str:
        return make_conninfo(host=str(self.socket_dir), port=self.port, user=user, dbname=dbname)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def pg_cluster(extra_conf: str = "") -> Iterator[PgServer]:
    """A throwaway cluster in a temp dir, stopped and removed at exit."""
    if not (PG_BIN / "initdb").exists():
        pytest.skip(f"no PostgreSQL binaries in {PG_BIN}")
    # initdb refuses to run as root: run the server as postgres when we are root.
    as_root = os.geteuid() == 0
    user = "postgres" if as_root else None
    tmp = Path(tempfile.mkdtemp(prefix="esc-test-pg-"))
    datadir, socket_dir = tmp / "data", tmp / "sock"
    socket_dir.mkdir()
    if as_root:
        pw = pwd.getpwnam("postgres")
        for p in (tmp, socket_dir):
            os.chown(p, pw.pw_uid, pw.pw_gid)

    def run(*cmd: str) -> None:
        subprocess.run(cmd, user=user, cwd=tmp, check=True, capture_output=True)

    started = False
    try:
        run(str(PG_BIN / "initdb"), "-D", str(datadir), "--auth=trust", "-U", "postgres",
            "--no-sync", "-E", "UTF8", "--locale=C")
        port = _free_port()
        with open(datadir / "postgresql.conf", "a") as f:
            f.write(
                "listen_addresses = ''\n"
                f"unix_socket_directories = '{socket_dir}'\n"
                f"port = {port}\n"
                "fsync = off\nsynchronous_commit = on\nfull_page_writes = off\n"
                + extra_conf
            )
        run(str(PG_BIN / "pg_ctl"), "start", "-w", "-t", "30", "-D", str(datadir),
            "-l", str(tmp / "postgres.log"))
        started = True
        server = PgServer(datadir=datadir, socket_dir=socket_dir, port=port)
        with psycopg.connect(server.conninfo("postgres", "postgres"), autocommit=True) as conn:
            conn.execute("CREATE ROLE esc LOGIN")
            conn.execute("CREATE DATABASE esc OWNER esc")
        yield server
    except subprocess.CalledProcessError as e:
        log = tmp / "postgres.log"
        detail = log.read_text()[-2000:] if log.exists() else ""
        raise RuntimeError(f"{e.cmd[0]} failed: {e.stderr.decode()}{detail}") from e
    finally:
        if started:
            subprocess.run(
                [str(PG_BIN / "pg_ctl"), "stop", "-m", "immediate", "-D", str(datadir)],
                user=user, cwd=tmp, capture_output=True,
            )
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
def make_pg_cluster() -> Callable[..., AbstractContextManager[PgServer]]:
    """A cluster of the test's own (``with make_pg_cluster(extra_conf) as server``)."""
    return pg_cluster


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    with pg_cluster() as server:
        yield server


# --- escmanager's API on the test server (appended for the API tests) -----------------------

import time  # noqa: E402
from typing import Any  # noqa: E402

API_USER, API_PASSWORD = "admin", "s3cret"


@dataclass
class EscApi:
    """escmanager's app running (worker and callback sender included) on ``esc_db``,
    with an authenticated TestClient."""

    client: Any
    app: Any
    conninfo: str

    def wait(self, tx_id: int, timeout: float = 10.0) -> dict[str, Any]:
        """The transaction once succeeded or failed."""
        deadline = time.monotonic() + timeout
        while True:
            tx = self.client.get(f"/v0/transactions/{tx_id}").json()
            if tx["status"] in ("succeeded", "failed"):
                return tx
            assert time.monotonic() < deadline, f"transaction {tx_id} still {tx['status']}"
            time.sleep(0.01)

    def sql(self, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            cur = conn.execute(query, params)
            return cur.fetchall() if cur.description else []


@pytest.fixture(scope="session")
def esc_db_reset(pg_server: PgServer) -> Callable[[], str]:
    """``reset()`` empties the ``esc`` database of ``pg_server`` (schema made if
    needed; the built-in tenant kept) and returns its conninfo."""
    from esc.services.schema import TABLES, ensure_schema

    def reset() -> str:
        conninfo = pg_server.conninfo()
        with psycopg.connect(conninfo) as conn:
            ensure_schema(conn)
            conn.execute(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE")
            ensure_schema(conn)
        return conninfo

    return reset


@pytest.fixture
def esc_db(esc_db_reset: Callable[[], str]) -> str:
    """The emptied ``esc`` database with the controller's schema: its conninfo."""
    return esc_db_reset()


@pytest.fixture(scope="session")
def esc_api_factory(pg_server: PgServer) -> Callable[..., AbstractContextManager[EscApi]]:
    """``with esc_api_factory(executor=..., ...) as api:`` runs the app on the test
    server's ``esc`` database (keywords go to create_app); the caller empties it."""
    import warnings

    from esc.config import CallbackConfig, NodeConfig, User
    from esc.secrets import hash_password
    from esc.services.manager import create_app

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from starlette.testclient import TestClient

    password_hash = hash_password(API_PASSWORD)
    conninfo = pg_server.conninfo()

    @contextmanager
    def make(callbacks: CallbackConfig | None = None, **kwargs: Any) -> Iterator[EscApi]:
        # the test receivers listen on 127.0.0.1, which the default deny-list refuses
        cfg = NodeConfig(name="node-t", rest_user=User(name=API_USER, password_hash=password_hash),
                         callbacks=callbacks or CallbackConfig(deny=[]))
        kwargs.setdefault("worker_poll", 0.05)
        kwargs.setdefault("callback_options", {"poll": 0.05, "first_delay": 0.05, "timeout": 2.0})
        app = create_app(cfg, conninfo, **kwargs)
        with TestClient(app) as client:
            client.auth = (API_USER, API_PASSWORD)
            yield EscApi(client, app, conninfo)

    return make


@pytest.fixture
def make_esc_api(esc_db: str, esc_api_factory: Callable[..., AbstractContextManager[EscApi]]
                 ) -> Callable[..., AbstractContextManager[EscApi]]:
    """``with make_esc_api(executor=..., ...) as api:`` on an emptied database."""
    return esc_api_factory


@pytest.fixture
def esc_api(make_esc_api: Callable[..., AbstractContextManager[EscApi]]) -> Iterator[EscApi]:
    with make_esc_api() as api:
        yield api
