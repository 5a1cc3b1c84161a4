"""escconfd as the agent runs it: parked (listening on nothing) until "serve", then
NETCONF on its port behind the serving lease and the operation mode, "exit" ends it.
The host key is the one derived from the node's kept key."""

from __future__ import annotations

import queue
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

pytest.importorskip("ncclient")
from ncclient import manager  # noqa: E402
from ncclient.operations import RPCError  # noqa: E402

from esc.config import NodeConfig, NodePaths, User, save_config  # noqa: E402
from esc.etsi.auth import kept_key  # noqa: E402
from esc.netconf import credentials  # noqa: E402
from esc.secrets import hash_password  # noqa: E402
from esc.services.manager import db_conninfo  # noqa: E402
from esc.services.schema import ensure_schema  # noqa: E402

USER, PASSWORD = "admin", "Confd-pass-1"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def root(pg_server, esc_db: str, tmp_path: Path) -> Path:
    paths = NodePaths(tmp_path / "root")
    paths.run.mkdir(parents=True)
    paths.pg_socket_dir.symlink_to(pg_server.socket_dir)
    cfg = NodeConfig(name="node-c", confd_user=User(name=USER, password_hash=hash_password(PASSWORD)),
                     confd_port=_free_port(), pg_port=pg_server.port)
    save_config(paths, cfg)
    with psycopg.connect(db_conninfo(cfg, paths)) as conn:
        ensure_schema(conn)
    return paths.root


class Confd:
    def __init__(self, root: Path) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "esc.netconf.service", "--root", str(root)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout
        for line in self.proc.stdout:
            self.lines.put(line.strip())

    def expect(self, line: str, timeout: float = 15) -> None:
        assert self.lines.get(timeout=timeout) == line

    def send(self, line: str) -> None:
        assert self.proc.stdin
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe:
                try:
                    pipe.close()
                except OSError:
                    pass


@pytest.fixture
def confd(root: Path) -> Iterator[Confd]:
    c = Confd(root)
    try:
        yield c
    finally:
        c.stop()


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def test_parked_then_serving_behind_the_lease_then_exit(root: Path, confd: Confd) -> None:
    paths = NodePaths(root)
    from esc.config import load_config

    port = load_config(paths).confd_port
    confd.expect("parked")
    assert not _listening(port)
    confd.send(f"lease {time.clock_gettime(time.CLOCK_BOOTTIME) + 3600:.3f}")
    confd.send("serve")
    confd.expect("serving")
    m = manager.connect(host="127.0.0.1", port=port, username=USER, password=PASSWORD,
                        hostkey_verify=False, allow_agent=False, look_for_keys=False, timeout=10)
    try:
        assert "default" in m.get_config("running").data_xml
        # the host key is the node's, derived from its kept key
        shown = m._session._transport.get_remote_server_key()  # type: ignore[attr-defined]
        want = credentials.fingerprint(credentials.host_key(kept_key(paths)))
        import base64
        import hashlib

        got = "SHA256:" + base64.b64encode(hashlib.sha256(shown.asbytes()).digest()).decode().rstrip("=")
        assert got == want
        confd.send("mode maintenance")
        time.sleep(0.3)
        with pytest.raises(RPCError) as e:
            m.get_config("running")
        assert e.value.tag == "resource-denied" and "maintenance" in e.value.message
        confd.send("mode operation")
        confd.send("lease 0")  # the agent stopped confirming: nothing is answered
        time.sleep(0.3)
        with pytest.raises(RPCError) as e:
            m.get_config("running")
        assert e.value.tag == "resource-denied" and "not serving" in e.value.message
    finally:
        try:
            m.close_session()
        except Exception:  # closing anyway
            pass
    confd.send("exit")
    assert confd.proc.wait(10) == 0
    assert not _listening(port)


def test_a_login_verified_by_one_node_is_not_checked_again_by_the_next(esc_db: str, monkeypatch) -> None:
    """The shared cache (esc.services.auth_cache): a new active's first login of a client
    pays no scrypt; a wrong password is still checked, and refused."""
    import asyncio

    from psycopg_pool import ConnectionPool

    from esc.netconf import server

    checks: list[str] = []
    real = server.verify_password

    def counting(password: str, stored: str) -> bool:
        checks.append(password)
        return real(password, stored)

    monkeypatch.setattr(server, "verify_password", counting)
    password_hash = hash_password(PASSWORD)
    with ConnectionPool(esc_db, min_size=1, max_size=2) as pool:
        def check() -> server.PasswordCheck:
            from esc.services.auth_cache import VerifiedHeaders

            return server.PasswordCheck(USER, password_hash, VerifiedHeaders("k" * 64, password_hash),
                                        lambda: pool)

        first, second = check(), check()  # the old active, the new one
        assert asyncio.run(first(USER, PASSWORD, "192.0.2.1"))
        assert asyncio.run(second(USER, PASSWORD, "192.0.2.1"))
        assert checks == [PASSWORD]  # scrypt once, on the first
        assert not asyncio.run(second(USER, "wrong", "192.0.2.1"))
        assert not asyncio.run(second("root", PASSWORD, "192.0.2.1"))
        assert checks == [PASSWORD, "wrong"]
