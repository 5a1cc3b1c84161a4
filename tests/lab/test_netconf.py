"""The NETCONF service of a real pair, through the VIP from the client namespace with
ncclient: connect, get-config, create a deployment and receive its notification; the
active dies; reconnect to the VIP and see the same host key, the deployment, the event
history replayed with the failover in it; delete the deployment. REST sees the same."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from esc.lab import lab as labmod

pytestmark = pytest.mark.lab

def test_netconf_through_the_vip_survives_a_failover(lab: Any) -> None:
    state = lab.state
    assert state["confd_user"] and state["confd_password"] and state["confd_port"] == 830
    args = {"vip": lab.vip, "user": state["confd_user"], "password": state["confd_password"]}
    active = lab.active()
    standby = lab.other(active)
    health = lab.escadm(active, "health").stdout.splitlines()
    assert any(line.startswith("confd (pgid ") and line.endswith(") is running") for line in health), health
    assert "confd is stopped" in lab.escadm(standby, "health", check=False).stdout.splitlines()
    shown = [lab.status(n)["confd"]["host_key"] for n in (active, standby)]
    assert shown[0] == shown[1] and shown[0].startswith("SHA256:")
    assert lab.port_open(lab.state["nodes"][active]["address"], 830)
    assert not lab.port_open(lab.state["nodes"][standby]["address"], 830)  # parked: listening on nothing

    since = (dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)).isoformat()
    first = lab.netconf_client("before", args)
    assert first["host_key"] == shown[0]
    assert first["before"] == [] and first["after"] == ["ncdep"]
    assert {"kind": "escEvent", "type": "CREATE_DEPLOYMENT", "depname": "ncdep", "status": "SUCCESS"} \
        in first["events"]
    assert any(e.get("type") == "VM_DEPLOYED" for e in first["events"])
    status, dep = lab.api("GET", "/v0/tenants/nct/deployments/ncdep")
    assert status == 200 and dep["status"] == "deployed" and len(dep["vms"]) == 1

    labmod.kill(active)
    lab.wait_roles({standby: "ACTIVE"}, timeout=30)
    second = lab.netconf_client("after", {**args, "since": since, "new_active": standby})
    assert second["host_key"] == first["host_key"]  # no host-key change for the client
    assert second["deployments"] == ["ncdep"]
    replayed_types = [e.get("type") for e in second["replayed"] if e["kind"] == "escEvent"]
    assert "CREATE_DEPLOYMENT" in replayed_types and "VM_DEPLOYED" in replayed_types
    ha = [e for e in second["replayed"] + second["live"] if e["kind"] == "escHaEvent"]
    assert any(e["node"] == standby and e["role"] == "ACTIVE" and e["ha_kind"] == "failover" for e in ha), ha
    deleted = [e for e in second["deleted"] if e.get("type") == "DELETE_DEPLOYMENT"]
    assert deleted and deleted[-1]["status"] == "SUCCESS", second["deleted"]
    assert second["left"] == []
    status, _ = lab.api("GET", "/v0/tenants/nct/deployments/ncdep")
    assert status == 404
    health = lab.escadm(standby, "health").stdout.splitlines()
    assert any(line.startswith("confd (pgid ") for line in health), health
    print(f"reconnect after the failover: {second['reconnect_s']} s; "
          f"notification {first['notified_s']} s after edit-config")
