"""Prometheus metrics: the node's collector (esc.agent.metrics) on the agent's status and
journal, the controller's latencies (esc.services.metrics) in-process and in
multiprocess directories, /metrics on the health API with and without HTTP Basic."""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from esc.agent import health_api, metrics
from esc.agent.history import Journal
from esc.roles import Role
from esc.secrets import hash_password


def samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for fam in text_string_to_metric_families(text.decode()):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(text: bytes, name: str, **labels: str) -> float | None:
    return samples(text).get((name, tuple(sorted(labels.items()))))


ACTIVE = {
    "node": "n1",
    "role": "ACTIVE",
    "role_for_s": 12.5,
    "ha": True,
    "vrrp": "MASTER",
    "op_mode": {"mode": "operation"},
    "db": {
        "state": "primary",
        "sync": True,
        "peer_complete": True,
        "streaming": False,
        "wal_kept_for_peer": {"bytes": 4096},
    },
    "replication": {"lag_bytes": 128},
    "peer": {
        "reachable": True,
        "paths": [
            {"address": "10.0.0.2", "reachable": True, "last_seen_s": 0.1},
            {"address": "10.1.0.2", "reachable": False, "last_seen_s": None},
        ],
    },
    "vip": {"present": True},
    "witness": {"held": True, "outdated": False},
    "bgp": {"established": True, "announced": True},
    "services": {
        "escmanager": {"state": "running", "detail": "serving"},
        "etsi": {"state": "running", "detail": "parked"},
        "snmp": {"state": "disabled"},
    },
}


def test_the_node_collector_says_what_the_status_and_the_journal_say() -> None:
    journal = Journal(None, "n1")
    journal.record("failover", Role.ACTIVE, "the peer is lost", detail={"active_lost_s": 0.8})
    journal.record("switchover", Role.STANDBY, "asked")
    counts = {"transactions": 3, "callbacks": 1, "vms": {"deployed": 4, "error": 1}, "replay_lag_s": 0.002}
    text = metrics.render(metrics.registry(lambda: ACTIVE, journal, lambda: counts))
    assert value(text, "esc_role", role="ACTIVE") == 1 and value(text, "esc_role", role="STANDBY") == 0
    assert value(text, "esc_vrrp_state", state="MASTER") == 1
    assert value(text, "esc_peer_reachable", address="10.0.0.2") == 1
    assert value(text, "esc_peer_reachable", address="10.1.0.2") == 0
    assert value(text, "esc_peer_last_seen_seconds", address="10.0.0.2") == 0.1
    assert value(text, "esc_replication_synchronous") == 1
    assert value(text, "esc_replication_lag_bytes") == 128
    assert value(text, "esc_replication_lag_seconds") == 0.002
    assert value(text, "esc_wal_kept_for_peer_bytes") == 4096
    assert value(text, "esc_bgp_announced") == 1 and value(text, "esc_witness_lease_held") == 1
    assert value(text, "esc_service_up", service="escmanager") == 1
    assert value(text, "esc_service_up", service="etsi") == 0  # parked
    assert value(text, "esc_service_up", service="snmp") is None  # disabled: absent
    assert value(text, "esc_ha_events_total", kind="failover") == 1
    assert value(text, "esc_ha_events_total", kind="rejoin") == 0
    assert value(text, "esc_last_failover_seconds") == 0.8
    assert value(text, "esc_transactions_pending") == 3 and value(text, "esc_callbacks_pending") == 1
    assert value(text, "esc_vms", state="deployed") == 4
    assert value(text, "esc_node_info", node="n1") == 1


def test_a_standby_and_a_stopped_node_say_less_but_never_fail() -> None:
    journal = Journal(None, "n2")
    standby = {
        "node": "n2",
        "role": "STANDBY",
        "ha": True,
        "vrrp": "BACKUP",
        "db": {"state": "standby", "streaming": True},
        "services": {},
    }
    text = metrics.render(metrics.registry(lambda: standby, journal, lambda: None))
    assert value(text, "esc_replication_streaming") == 1 and value(text, "esc_db_primary") == 0
    assert value(text, "esc_replication_synchronous") is None
    assert value(text, "esc_last_failover_seconds") is None
    text = metrics.render(metrics.registry(lambda: {"role": "STOPPED"}, journal, None))
    assert value(text, "esc_role", role="STOPPED") == 1


def test_the_controllers_latencies_are_read_from_their_multiprocess_directory(tmp_path: Path) -> None:
    """escmanager runs with PROMETHEUS_MULTIPROC_DIR (the agent sets it): its histograms
    live in files the agent's /metrics reads, the process long gone or not."""
    d = tmp_path / "escmanager"
    d.mkdir()
    code = (
        "from esc.services.metrics import API_LATENCY, COMMIT_LATENCY;"
        "API_LATENCY.labels('escmanager', 'GET', '/v0/deployments', '200').observe(0.02);"
        "COMMIT_LATENCY.observe(0.004)"
    )
    subprocess.run(
        [sys.executable, "-c", code], check=True, env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(d)}
    )
    text = metrics.render(
        metrics.registry(lambda: {"role": "ACTIVE"}, Journal(None, "n1"), None, [d, tmp_path / "escetsi"])
    )  # the second does not exist
    assert (
        value(
            text,
            "esc_api_request_duration_seconds_count",
            service="escmanager",
            method="GET",
            route="/v0/deployments",
            status="200",
        )
        == 1
    )
    assert value(text, "esc_commit_duration_seconds_count") == 1


def test_requests_are_timed_by_route_template_not_by_path(esc_api) -> None:  # type: ignore[no-untyped-def]
    from prometheus_client import REGISTRY

    def count(route: str, status: str) -> float:
        return (
            REGISTRY.get_sample_value(
                "esc_api_request_duration_seconds_count",
                {"service": "escmanager", "method": "GET", "route": route, "status": status},
            )
            or 0.0
        )

    before = count("/v0/deployments/{name}", "404")
    for name in ("a", "b", "c"):
        assert esc_api.client.get(f"/v0/deployments/{name}").status_code == 404
    assert count("/v0/deployments/{name}", "404") == before + 3
    assert esc_api.client.get("/nothing/here").status_code == 404
    assert count("<unmatched>", "404") >= 1


def test_the_backlog_is_counted_from_the_database(esc_api) -> None:  # type: ignore[no-untyped-def]
    counts = metrics.Counts(lambda: psycopg.connect(esc_api.conninfo))
    got = counts.get()
    assert got == {"transactions": 0, "callbacks": 0, "vms": {}, "replay_lag_s": None}
    assert metrics.Counts(lambda: psycopg.connect("host=/nonexistent dbname=x")).get() is None


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_metrics_on_the_health_port_open_or_behind_basic_auth() -> None:
    journal = Journal(None, "n1")
    user: list[tuple[str, str] | None] = [None]
    port = _port()
    srv = health_api.serve(
        lambda: ACTIVE,
        port,
        "127.0.0.1",
        metrics=lambda: metrics.render(metrics.registry(lambda: ACTIVE, journal, None)),
        metrics_user=lambda: user[0],
    )
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        r = httpx.get(url)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
        assert value(r.content, "esc_role", role="ACTIVE") == 1
        user[0] = ("prom", hash_password("scrape-me"))  # `escadm metrics set` then reload
        r = httpx.get(url)
        assert r.status_code == 401 and "Basic" in r.headers["www-authenticate"]
        assert httpx.get(url, headers=_basic("prom", "scrape-me")).status_code == 200
        assert httpx.get(url, headers=_basic("prom", "scrape-me")).status_code == 200  # remembered
        assert httpx.get(url, headers={"Authorization": "Basic !!!"}).status_code == 401
        codes = [httpx.get(url, headers=_basic("prom", f"guess{i}")).status_code for i in range(12)]
        assert codes[-1] == 429 and 401 in codes  # guesses stop costing scrypt
        assert httpx.get(f"http://127.0.0.1:{port}/esc/health").status_code == 200  # health unaffected
    finally:
        srv.shutdown()


def test_escadm_metrics_set(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from esc.cli.escadm import cli
    from esc.config import NodeConfig, NodePaths, load_config, save_config

    paths = NodePaths(tmp_path)
    paths.etc.mkdir(parents=True)
    save_config(paths, NodeConfig(name="n1"))
    runner = CliRunner()
    res = runner.invoke(cli, ["--root", str(tmp_path), "metrics", "set", "--user_pass", "prom:pw"])
    assert res.exit_code == 0, res.output
    user = load_config(paths).metrics_user
    assert user is not None and user.name == "prom" and "pw" not in user.password_hash
    res = runner.invoke(cli, ["--root", str(tmp_path), "metrics", "set", "--open"])
    assert res.exit_code == 0 and load_config(paths).metrics_user is None
    for bad in (
        ["metrics", "set"],
        ["metrics", "set", "--open", "--user_pass", "a:b"],
        ["metrics", "set", "--user_pass", "nocolon"],
    ):
        res = runner.invoke(cli, ["--root", str(tmp_path), *bad])
        assert res.exit_code == 2, (bad, res.output)


@pytest.fixture(autouse=True)
def _no_multiproc_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)


def test_the_grafana_dashboard_asks_only_for_metrics_that_exist(tmp_path: Path) -> None:
    """docs/grafana/esc-pair.json: every esc_* series it queries is one a node exposes."""
    import json
    import re

    dash = json.loads((Path(__file__).parents[2] / "docs/grafana/esc-pair.json").read_text())
    asked = {
        name for p in dash["panels"] for t in p["targets"] for name in re.findall(r"\besc_[a-z_]+", t["expr"])
    }
    d = tmp_path / "escmanager"
    d.mkdir()
    code = (
        "from esc.services.metrics import API_LATENCY, COMMIT_LATENCY;"
        "API_LATENCY.labels('escmanager', 'GET', '/x', '200').observe(0.02);COMMIT_LATENCY.observe(0.004)"
    )
    subprocess.run(
        [sys.executable, "-c", code], check=True, env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(d)}
    )
    journal = Journal(None, "n1")
    journal.record("failover", Role.ACTIVE, "lost", detail={"active_lost_s": 0.8})
    counts = {"transactions": 0, "callbacks": 0, "vms": {"deployed": 1}, "replay_lag_s": 0.0}
    standby = {"role": "STANDBY", "db": {"state": "standby", "streaming": True}}
    exposed = {
        s[0]
        for st in (ACTIVE, standby)
        for s in samples(metrics.render(metrics.registry(lambda st=st: st, journal, lambda: counts, [d])))
    }
    assert asked and asked <= exposed, asked - exposed
