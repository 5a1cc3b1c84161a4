"""The controller answers only under a fresh lease from its agent: a frozen active's
controller, woken up, must not answer the requests that queued while it slept."""

from __future__ import annotations

import math

from fastapi import FastAPI
from fastapi.testclient import TestClient

from esc import clock
from esc.services.serving import (
    MaintenanceGate,
    OperationMode,
    ServingGate,
    ServingLease,
    parse_lease_line,
    parse_mode_line,
)


def app_with(lease: ServingLease) -> TestClient:
    app = FastAPI()

    @app.get("/v0/ping")
    def ping() -> dict:
        return {"ok": True}

    return TestClient(ServingGate(app, lease))


def test_no_lease_no_answer() -> None:
    client = app_with(ServingLease(until=0.0))
    r = client.get("/v0/ping")
    assert r.status_code == 503 and r.headers["retry-after"] == "1"
    assert "not serving" in r.json()["error"]


def test_a_fresh_lease_serves_and_an_expired_one_stops() -> None:
    lease = ServingLease(until=0.0)
    client = app_with(lease)
    lease.renew(clock.now() + 5)
    assert client.get("/v0/ping").json() == {"ok": True}
    lease.renew(clock.now() - 0.001)  # the agent stopped renewing (frozen, fencing, dead)
    assert client.get("/v0/ping").status_code == 503


def test_manual_runs_are_not_gated() -> None:
    assert ServingLease().until == math.inf
    assert app_with(ServingLease()).get("/v0/ping").status_code == 200


def test_lease_lines() -> None:
    assert parse_lease_line("lease 12.5\n") == 12.5
    for bad in ("lease", "lease x", "lease inf", "lease nan", "serve", "lease 1 2"):
        assert parse_lease_line(bad) is None


def test_an_answer_that_starts_after_the_lease_ran_out_is_refused() -> None:
    """A request let in under a fresh lease, whose node froze while handling it: what
    it read before the freeze is not answered after it."""
    lease = ServingLease(until=clock.now() + 5)
    app = FastAPI()

    @app.get("/v0/slow")
    def slow() -> dict:
        lease.renew(clock.now() - 0.001)  # frozen here, long enough to be replaced
        return {"stale": True}

    r = TestClient(ServingGate(app, lease)).get("/v0/slow")
    assert r.status_code == 503 and "stale" not in r.text


def test_maintenance_refuses_new_requests_and_lets_those_in_progress_finish() -> None:
    mode = OperationMode()
    seen: list[str] = []
    mode.listeners.append(seen.append)
    app = FastAPI()

    @app.get("/v0/ping")
    def ping() -> dict:
        return {"ok": True}

    @app.get("/v0/long")
    def long() -> dict:
        mode.set("maintenance")  # set while this request is being handled: it finishes
        return {"finished": True}

    client = TestClient(MaintenanceGate(app, mode))
    assert client.get("/v0/ping").json() == {"ok": True}
    assert client.get("/v0/long").json() == {"finished": True}
    r = client.get("/v0/ping")
    assert r.status_code == 503 and r.headers["retry-after"] == "60" and "maintenance" in r.json()["error"]
    etsi = TestClient(MaintenanceGate(app, mode, problem=True)).get("/v0/ping")
    assert etsi.headers["content-type"] == "application/problem+json" and etsi.json()["status"] == 503
    mode.set("operation")
    assert client.get("/v0/ping").status_code == 200
    assert seen == ["maintenance", "operation"]


def test_mode_lines() -> None:
    assert parse_mode_line("mode maintenance\n") == "maintenance"
    assert parse_mode_line("mode operation") == "operation"
    for bad in ("mode", "mode off", "mode maintenance now", "lease 1"):
        assert parse_mode_line(bad) is None
