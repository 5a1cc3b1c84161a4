"""The 8060 health API: codes from a node's status (pure), and the server's shapes."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request

import pytest

from esc.agent import health_api
from esc.agent.health_api import pair_health

SERVING = {"escmanager": {"detail": "serving"}}


def active(**db):  # type: ignore[no-untyped-def]
    return {"role": "ACTIVE", "db": {"state": "primary", **db}, "services": SERVING,
            "peer": {"reachable": True}}


@pytest.mark.parametrize(("st", "code", "stage"), [
    (active(peer_complete=True), 2000, "READY"),
    ({**active(peer_complete=True), "peer": {"reachable": False}}, 2010, "READY"),
    (active(peer_streaming=True), 2020, "READY"),
    (active(), 2030, "READY"),
    ({**active(), "services": {}}, 5020, "READY"),
    ({"role": "STANDBY", "db": {"state": "standby"}}, 5010, "READY"),
    ({"role": "SWITCHING_TO_ACTIVE", "reason": "peer never reached"}, 5010, "INIT"),
    ({"role": "STOPPED"}, 5010, "INIT"),
    ({"role": "STANDALONE", "db": {"state": "primary"}, "services": SERVING}, 2000, "READY"),
    ({"role": "STANDALONE", "db": {"state": "stopped"}}, 5020, "READY"),
])
def test_codes(st, code, stage):
    body = pair_health(st)
    assert body["status_code"] == code and body["stage"] == stage and body["message"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_server_json_xml_and_active_endpoint():
    state = {"st": active(peer_complete=True)}
    port = _free_port()
    srv = health_api.serve(lambda: state["st"], port, max_age=0)
    try:
        base = f"http://127.0.0.1:{port}"
        with urllib.request.urlopen(f"{base}/esc/health") as r:
            assert r.status == 200 and json.loads(r.read())["status_code"] == 2000
        req = urllib.request.Request(f"{base}/esc/health", headers={"Accept": "application/xml"})
        with urllib.request.urlopen(req) as r:
            assert b"<status_code>2000</status_code>" in r.read()
        with urllib.request.urlopen(f"{base}/esc/health/active") as r:
            assert r.status == 200
        state["st"] = {"role": "STANDBY", "db": {"state": "standby"}}
        for path in ("/esc/health", "/esc/health/active"):
            with pytest.raises(urllib.error.HTTPError) as e:
                urllib.request.urlopen(base + path)
            assert e.value.code == 503
    finally:
        srv.shutdown()
        srv.server_close()
