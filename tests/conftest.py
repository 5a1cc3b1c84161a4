"""Shared fixtures. ``pg_server``: a throwaway PostgreSQL 15 cluster for the session."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
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


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
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
                [str(PG_BIN / "pg_ctl"), "stop", "-m", "fast", "-D", str(datadir)],
                user=user, cwd=tmp, capture_output=True,
            )
        shutil.rmtree(tmp, ignore_errors=True)
