"""The portal (esc.portal) against a real PostgreSQL and the agent's real portal socket
(esc.agent.api.portal_app, over a unix socket) in front of a recording agent: logins,
sessions kept in the database (a second portal on the same database, as the new
active after a failover, knows them), roles, CSRF, and what the socket lets through."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from esc.agent import api
from esc.config import NodeConfig, User
from esc.portal import auth
from esc.portal.app import create_app
from esc.secrets import hash_password

PASSWORD = "portal-pass-1"


class RecordingAgent:
    def __init__(self) -> None:
        self.commands: list[tuple[str, dict]] = []
        self.role = "ACTIVE"

    def status(self) -> dict:
        return {"node": "n1", "role": self.role, "reason": "serving", "role_for_s": 5.0, "ha": True,
                "vrrp": "MASTER", "vip": {"address": "10.0.0.50/24", "interface": "eth0", "present": True},
                "peer": {"address": "10.0.0.2", "reachable": True, "role": "STANDBY", "last_seen_s": 0.1,
                         "paths": [{"address": "10.0.0.2", "reachable": True, "last_seen_s": 0.1}]},
                "db": {"state": "primary", "timeline": 3, "sync": True, "peer_streaming": True,
                       "peer_complete": True},
                "replication": {"lag_bytes": 0}, "op_mode": {"mode": "operation", "by": ""}}

    def peer_state(self, caller: str) -> dict:
        return {}

    def command(self, name: str, body: dict) -> tuple[int, dict]:
        self.commands.append((name, body))
        return 202, {"result": "switching over" if name == "switchover" else body.get("mode")}

    def history(self, epoch: str | None, after: int) -> dict:
        return {}


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[tuple[RecordingAgent, Path]]:
    rec = RecordingAgent()
    sock = tmp_path / "portal.sock"
    server = api.serve_portal(sock, rec, None)
    try:
        yield rec, sock
    finally:
        server.shutdown()


def _portal(esc_db: str, sock: Path) -> TestClient:
    cfg = NodeConfig(name="n1", portal_user=User(name="admin", password_hash=hash_password(PASSWORD)))
    stopping = threading.Event()
    return TestClient(create_app(cfg, esc_db, sock, stopping=stopping), base_url="https://testserver",
                      follow_redirects=False)


def _login(client: TestClient, user: str = "admin", password: str = PASSWORD) -> httpx.Response:
    return client.post("/login", data={"user": user, "password": password})


def _csrf(client: TestClient) -> str:
    page = client.get("/").text
    return page.split('name="csrf" value="', 1)[1].split('"', 1)[0]


def test_login_sessions_and_logout(esc_db: str, agent) -> None:  # type: ignore[no-untyped-def]
    _, sock = agent
    with _portal(esc_db, sock) as client:
        r = client.get("/")
        assert r.status_code == 303 and r.headers["location"] == "/login"
        assert _login(client, password="wrong").status_code == 401
        assert _login(client, user="nobody").status_code == 401
        r = _login(client)
        assert r.status_code == 303 and auth.COOKIE in r.cookies
        cookie = r.cookies[auth.COOKIE]
        assert "secure" in r.headers["set-cookie"].lower() and "httponly" in r.headers["set-cookie"].lower()
        page = client.get("/")
        assert page.status_code == 200 and 'id="role-n1"' in page.text and "ACTIVE" in page.text
        assert "content-security-policy" in page.headers
        for path in ("/deployments", "/events", "/transactions", "/etsi", "/history",
                     "/events?type=x&resource=y&before=7", "/events?before=junk"):
            assert client.get(path).status_code == 200, path
        # the new active after a failover: another portal on the same (replicated) table
        with _portal(esc_db, sock) as other:
            other.cookies.set(auth.COOKIE, cookie, domain="testserver.local")
            assert other.get("/").status_code == 200
        csrf = _csrf(client)
        assert client.post("/logout", data={"csrf": csrf}).status_code == 303
        assert client.get("/").status_code == 303
        # the cookie is dead on the server, not only forgotten by this browser
        with _portal(esc_db, sock) as other:
            other.cookies.set(auth.COOKIE, cookie, domain="testserver.local")
            assert other.get("/").status_code == 303


def test_only_an_admin_acts_and_only_with_the_pages_token(esc_db: str, agent) -> None:  # type: ignore[no-untyped-def]
    rec, sock = agent
    import psycopg

    with psycopg.connect(esc_db) as conn:
        conn.execute("INSERT INTO portal_users (name, role, password_hash) VALUES ('eve', 'viewer', %s)",
                     (hash_password("viewer-pass-1"),))
    with _portal(esc_db, sock) as client:
        assert _login(client, "eve", "viewer-pass-1").status_code == 303
        assert 'id="switchover"' not in client.get("/").text
        r = client.post("/action/switchover", data={"csrf": _csrf(client)})
        assert r.status_code == 403 and "viewer" in r.text and not rec.commands
    with _portal(esc_db, sock) as client:
        _login(client)
        assert client.post("/action/switchover", data={"csrf": "forged"}).status_code == 403
        assert client.post("/action/switchover", data={}).status_code == 403
        assert not rec.commands
        csrf = _csrf(client)
        r = client.post("/action/maintenance", data={"csrf": csrf, "on": "1"})
        assert r.status_code == 200 and rec.commands[-1] == (
            "op_mode", {"by": "portal user admin", "_via_peer": False, "mode": "maintenance"})
        r = client.post("/action/switchover", data={"csrf": csrf})
        assert r.status_code == 202 and "asked" in r.text
        deadline = time.monotonic() + 5  # asked once the answer is sent
        while rec.commands[-1][0] != "switchover":
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert rec.commands[-1] == ("switchover", {"by": "portal user admin", "_via_peer": False})
        rec.role = "STANDBY"  # what the agent would refuse is refused without asking it
        n = len(rec.commands)
        r = client.post("/action/switchover", data={"csrf": csrf})
        assert r.status_code == 409 and len(rec.commands) == n


def test_the_agents_portal_socket_lets_through_only_the_portals_commands(agent) -> None:  # type: ignore[no-untyped-def]
    rec, sock = agent
    with httpx.Client(transport=httpx.HTTPTransport(uds=str(sock)), base_url="http://agent") as c:
        assert c.get("/v1/status").json()["role"] == "ACTIVE"
        for name in ("force_active", "stop", "reload", "rotate", "pair_stage"):
            assert c.post(f"/v1/command/{name}", json={"user": "admin"}).status_code == 403
        assert c.post("/v1/command/switchover", json={}).status_code == 400  # who asks is needed
        # the user named is recorded as the portal's: the socket never passes "escadm"
        r = c.post("/v1/command/switchover", json={"user": "admin", "by": "escadm", "_via_peer": True})
        assert r.status_code == 202
    assert rec.commands == [("switchover", {"by": "portal user admin", "_via_peer": False})]
