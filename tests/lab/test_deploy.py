"""Deployments through the VIP become VMs; monitoring and recovery carry on after a failover."""

from __future__ import annotations

import json
import time

import pytest

from esc.lab import lab as labmod
from esc.services.vim_wiring import vim_name
from esc.vim.local import LocalDriver

pytestmark = pytest.mark.lab


def wait_tx(lab, tx: int, timeout: float = 30) -> dict:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        status, body = lab.api("GET", f"/v0/transactions/{tx}")
        if status == 200 and body["status"] in ("succeeded", "failed"):
            return body
        assert time.monotonic() < deadline, f"transaction {tx} still {body}"
        time.sleep(0.2)


def wait_event(lab, kind: str, vm: str | None, since: int, timeout: float = 40) -> int:  # type: ignore[no-untyped-def]
    return int(wait_event_body(lab, kind, vm, since, timeout)["id"])


def wait_event_body(lab, kind: str, vm: str | None, since: int, timeout: float = 40) -> dict:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        status, events = lab.api("GET", f"/v0/notifications?since={since}")
        if status == 200:
            for ev in events if isinstance(events, list) else events.get("events", []):
                if ev.get("type") == kind and (vm is None or ev.get("vm") == vm):
                    return ev
        assert time.monotonic() < deadline, f"no {kind} for {vm} since event {since}"
        time.sleep(0.3)


def test_a_deployment_survives_a_failover_and_its_vms_are_still_recovered(lab):
    for path, body in (("/v0/images", {"name": "cirros", "src": "file:///cirros.img"}),
                       ("/v0/flavors", {"name": "small", "vcpus": 1, "memory_mb": 256}),
                       ("/v0/tenants", {"name": "t1"})):
        status, out = lab.api("POST", path, body)
        assert status == 202, out
        assert wait_tx(lab, out["transaction_id"])["status"] == "succeeded"
    # its own KPI section (the VIM's default: a ping a second, down after 3)
    dep = {"name": "dep1", "vm_groups": [{"name": "g", "image": "cirros", "flavor": "small", "count": 2,
                                          "kpi": {"type": "icmp_ping", "interval_s": 0.3, "down_after": 2},
                                          "recovery": {"policy": "reboot"}}]}
    status, out = lab.api("POST", "/v0/tenants/t1/deployments", dep,
                          headers={"Idempotency-Key": "dep1-create"})
    assert status == 202, out
    tx = out["transaction_id"]
    assert wait_tx(lab, tx)["status"] == "succeeded"
    status, got = lab.api("GET", "/v0/tenants/t1/deployments/dep1")
    assert status == 200 and len(got["vms"]) == 2
    assert all(vm["status"] == "deployed" for vm in got["vms"]), got
    alive = wait_event(lab, "SERVICE_ALIVE", None, 0)

    driver = LocalDriver(labmod.vim_state_dir(), labmod.net.ns(""))
    names = sorted(vim_name("t1", "dep1", vm["name"]) for vm in got["vms"])
    assert sorted(v.name for v in driver.list()) == names

    # The active dies; the VMs do not; the new active takes over their monitoring.
    old = lab.active()
    labmod.kill(old)
    lab.wait_roles({lab.other(old): "ACTIVE"}, timeout=30)
    assert all(driver.get(n).state == "running" for n in names)
    driver.kill_vm_process(names[0])
    down = wait_event_body(lab, "VM_DOWN", names[0], alive)
    assert "failed 2 probe(s) in a row" in down["message"], down  # the deployment's KPI, from the db
    wait_event(lab, "VM_ALIVE", names[0], int(down["id"]))

    # A retried request with the same key creates nothing twice.
    status, again = lab.api("POST", "/v0/tenants/t1/deployments", dep,
                            headers={"Idempotency-Key": "dep1-create"})
    assert status == 202 and again["transaction_id"] == tx
    assert len(driver.list()) == 2


RECEIVER = r'''
import http.server, json, sys
out = sys.argv[1]
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with open(out, "a") as f:
            f.write(json.dumps({"tx": self.headers.get("esc-transaction-id"),
                                "code": self.headers.get("esc-status-code"),
                                "message": self.headers.get("esc-status-message")}) + "\n")
        self.send_response(200); self.send_header("Content-Length", "0"); self.end_headers()
    def log_message(self, *a): pass
http.server.HTTPServer(("0.0.0.0", 9999), H).serve_forever()
'''


@pytest.mark.lab_fresh  # its own images, tenant and VMs: counted, so none left by the test before
def test_a_deployment_in_progress_when_the_active_dies_is_finished_by_the_new_one(lab):
    import subprocess
    import sys

    got = lab.tmp / "callbacks.jsonl"
    receiver = subprocess.Popen(labmod.exec_argv(labmod.CLIENT, [sys.executable, "-c", RECEIVER,
                                                                 str(got)]))
    try:
        for path, body in (("/v0/images", {"name": "cirros", "src": "file:///cirros.img"}),
                           ("/v0/flavors", {"name": "small", "vcpus": 1, "memory_mb": 256}),
                           ("/v0/tenants", {"name": "t2"})):
            status, out = lab.api("POST", path, body)
            assert wait_tx(lab, out["transaction_id"])["status"] == "succeeded"
        dep = {"name": "big", "vm_groups": [{"name": "g", "image": "cirros", "flavor": "small",
                                             "count": 40}]}
        callback = f"http://{labmod.node_ip(labmod.CLIENT)}:9999/done"
        status, out = lab.api("POST", "/v0/tenants/t2/deployments", dep,
                              headers={"callback": callback})
        assert status == 202, out
        tx = out["transaction_id"]
        driver = LocalDriver(labmod.vim_state_dir(), labmod.net.ns(""))
        deadline = time.monotonic() + 20
        while not driver.list():  # kill it while the VMs are being made
            assert time.monotonic() < deadline, "no VM appeared"
            time.sleep(0.02)
        old = lab.active()
        labmod.kill(old)
        assert len(driver.list()) < 40, "the deployment finished before the kill: test too slow"
        lab.wait_roles({lab.other(old): "ACTIVE"}, timeout=30)
        final = wait_tx(lab, tx, timeout=90)
        assert final["status"] == "succeeded", (final.get("message"), final.get("status_code"))
        _, got_dep = lab.api("GET", "/v0/tenants/t2/deployments/big")
        assert len(got_dep["vms"]) == 40 and all(v["status"] == "deployed" for v in got_dep["vms"])
        assert len([v for v in driver.list() if ".big." in v.name]) == 40, "a VM made twice"
        deadline = time.monotonic() + 30
        while not got.exists() or not got.read_text().strip():
            assert time.monotonic() < deadline, "no callback"
            time.sleep(0.2)
        time.sleep(1)  # a second delivery, if any, would come now
        calls = [json.loads(x) for x in got.read_text().splitlines()]
        mine = [c for c in calls if c["tx"] == str(tx)]
        assert len(mine) == 1 and mine[0]["code"].startswith("2"), calls
    finally:
        receiver.kill()
        receiver.wait()
