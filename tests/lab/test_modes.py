"""Modes: standalone converted with `escadm ha set`, drbd_on_cinder volumes, and the
maintenance operation mode."""

from __future__ import annotations

import json
import time

import pytest

from esc.lab import lab as labmod
from esc.lab.measure import analyse

pytestmark = pytest.mark.lab


@pytest.mark.lab_mode("standalone")
def test_two_standalone_nodes_become_a_pair_with_ha_set(lab):
    """The original's `escadm ha set` line as written, with no secret: the nodes pair
    with the password they were installed with (SPAKE2), and the second takes the pair's
    material from the first."""
    assert lab.roles() == {"n1": "STANDALONE", "n2": "STANDALONE"}
    code = (f"import httpx;print(httpx.post('http://{labmod.node_ip('n1')}:8080/v0/deployments',"
            f"json={{'name':'kept'}},auth={lab.auth!r},timeout=10).status_code)")
    assert lab.client_python(code).strip() == "201"
    for node in labmod.NODES:
        lab.escadm(node, "ha", "set", "--ha_node_list", "10.77.0.11 10.77.0.12",
                   "--kad_vip", f"{labmod.VIP}/24", "--kad_vif", "eth0", "--kad_vri", "77")
        assert "restart" in lab.escadm(node, "reload").stdout
    for node in labmod.NODES:
        lab.escadm(node, "restart")
    # Two unrelated databases: the first listed node's wins; the other is replaced by a clone.
    lab.wait_roles({"n1": "ACTIVE", "n2": "STANDBY"}, timeout=60)
    assert "kept" in lab.names_via_vip()
    assert "kept" in lab.names_in_db("n2")
    assert lab.post("after-ha-set") == 201


@pytest.mark.lab_mode("drbd_on_cinder")
def test_a_node_without_its_volume_is_fault_and_never_active(lab):
    active = lab.active()
    standby = lab.other(active)
    assert (labmod.volume_path(active) / "esc/pgdata/PG_VERSION").exists()
    assert lab.post("on-volume") == 201
    labmod.detach_volume(standby)
    lab.wait_roles({standby: "FAULT"}, timeout=20)
    health = lab.escadm(standby, "health", check=False)
    assert health.returncode == 1 and "filesystem is stopped" in health.stdout
    labmod.kill(active)
    deadline = time.monotonic() + 6
    while time.monotonic() < deadline:  # the volume-less node must not take over
        assert lab.status(standby)["role"] == "FAULT"
        assert not lab.has_vip(standby)
        time.sleep(0.25)
    # Volume back (empty) and the old active powered on: the node with data leads again.
    labmod.attach_volume(standby)
    labmod.start(active)
    lab.wait_roles({active: "ACTIVE", standby: "STANDBY"}, timeout=90)
    assert "on-volume" in lab.names_in_db(standby)


def test_stopping_the_active_hands_over_without_losing_writes(lab):
    old = lab.active()
    new = lab.other(old)
    writer = lab.start_writer("stop")
    lab.wait_acks(writer)
    lab.escadm(old, "stop")
    lab.wait_roles({new: "ACTIVE"}, timeout=30)
    lab.wait_acks(writer, n=1)
    time.sleep(0.5)
    record = writer.stop()

    assert analyse(record, lab.names_via_vip()).lost == []
    stopped = lab.escadm(old, "status", "--json", check=False)
    assert json.loads(stopped.stdout)["role"] == "STOPPED" and stopped.returncode == 3
    lab.escadm(old, "start")
    lab.wait_roles({old: "STANDBY", new: "ACTIVE"}, timeout=60)


def test_maintenance_mode_refuses_the_northbound_and_stops_automatic_failover(lab):
    """The original's maintenance: set on the standby, it reaches the active, whose
    northbound then answers new requests 503 with Retry-After and whose VNF monitor
    pauses; a switchover is refused; when the active dies the standby does not take
    over by itself, and force-active brings the service back with every acknowledged
    write, still in maintenance until the operator ends it."""
    active = lab.active()
    standby = lab.other(active)
    assert lab.post("before-maintenance") in (201, 202)
    out = lab.escadm(standby, "op_mode", "set", "--mode=maintenance", "--ipt_check").stdout
    assert "operation mode maintenance; peer told" in out and "--ipt_check" in out
    assert "maintenance (set on" in lab.escadm(active, "op_mode", "show").stdout
    assert lab.escadm(active, "status").stdout.strip() == "ACTIVE, maintenance mode"

    def refused() -> bool:
        code, body = lab.api("POST", "/v0/deployments", {"name": "during-maintenance"})
        return code == 503 and "maintenance" in body["error"]
    deadline = time.monotonic() + 5
    while not refused():
        assert time.monotonic() < deadline, "the northbound still takes requests in maintenance"
        time.sleep(0.2)
    retry = lab.client_python(f"import httpx;r=httpx.get({lab.url + '/v0/deployments'!r},auth={lab.auth!r});"
                              "print(r.status_code, r.headers.get('retry-after'))")
    assert retry.split() == ["503", "60"]
    deadline = time.monotonic() + 10  # the monitor pauses; health does not count it a fault
    while "monitor is stopped" not in (health := lab.escadm(active, "health", check=False)).stdout:
        assert time.monotonic() < deadline, health.stdout
        time.sleep(0.3)
    assert health.returncode == 0 and "ESC HEALTH PASSED" in health.stdout
    refused_swo = lab.escadm(active, "ha", "switchover", check=False)
    assert refused_swo.returncode != 0 and "maintenance mode" in refused_swo.stderr
    labmod.kill(active)
    time.sleep(3)  # several times what a failover takes
    st = lab.status(standby)
    assert st["role"] == "SWITCHING_TO_ACTIVE" and "maintenance" in st["reason"], st
    assert not lab.has_vip(standby)
    lab.escadm(standby, "ha", "force-active", "--yes")
    lab.wait_roles({standby: "ACTIVE"}, timeout=30)
    deadline = time.monotonic() + 10
    while not refused():  # the new active's northbound is in maintenance too
        assert time.monotonic() < deadline
        time.sleep(0.2)
    # back to operation on the survivor: requests are taken, nothing acknowledged is lost
    lab.escadm(standby, "op_mode", "set", "--mode=operation")
    deadline = time.monotonic() + 10
    while lab.post("after-maintenance") not in (201, 202):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert {"before-maintenance", "after-maintenance"} <= lab.names_via_vip()
    assert "during-maintenance" not in lab.names_via_vip()
    # the old active comes back with the newer setting
    labmod.start(active)
    lab.wait_roles({standby: "ACTIVE", active: "STANDBY"}, timeout=60)
    assert lab.escadm(active, "op_mode", "show").stdout.strip() == "operation"


def test_backup_on_the_standby_and_restore_on_the_active_in_maintenance(lab, tmp_path):
    """A backup made from the standby's replica, restored on the active: refused outside
    maintenance and on the standby, refused for a file that is not a backup (nothing
    changed), then the data is the backup's, on both nodes."""
    active = lab.active()
    standby = lab.other(active)
    assert lab.post("bk-before") in (201, 202)
    time.sleep(0.5)  # on the standby's replica (synchronous: it is, already)
    f = tmp_path / "esc.backup"
    out = lab.escadm(standby, "backup", "--file", str(f)).stdout
    assert "backup of" in out and "standby database" in out and oct(f.stat().st_mode)[-3:] == "600"
    assert lab.escadm(standby, "backup", "--file", str(f), check=False).returncode == 2  # no --force
    assert lab.post("bk-after") in (201, 202)
    res = lab.escadm(active, "restore", "--file", str(f), check=False)
    assert res.returncode == 1 and "set `escadm op_mode set --mode=maintenance` first" in res.stderr
    res = lab.escadm(standby, "restore", "--file", str(f), check=False)
    assert res.returncode == 1 and "restore on the active" in res.stderr
    lab.escadm(active, "op_mode", "set", "--mode=maintenance")
    try:
        bad = tmp_path / "not-a-backup"
        bad.write_bytes(b"\x00" * 1000)
        res = lab.escadm(active, "restore", "--file", str(bad), check=False)
        assert res.returncode == 1 and "not a backup of this controller (it holds nothing)" in res.stderr
        out = lab.escadm(active, "restore", "--file", str(f)).stdout
        assert "restored the backup of" in out and "counts checked" in out
    finally:
        lab.escadm(active, "op_mode", "set", "--mode=operation")
    names = lab.names_via_vip()
    assert "bk-before" in names and "bk-after" not in names
    lab.escadm(active, "ha", "switchover")  # the standby has the restored data too
    lab.wait_roles({standby: "ACTIVE", active: "STANDBY"}, timeout=30)
    names = lab.names_via_vip()
    assert "bk-before" in names and "bk-after" not in names


def test_a_rebooted_active_comes_back_as_standby_started_by_its_unit(lab):
    """A reboot (power cut, /run emptied as a tmpfs is, the agent started by the systemd
    unit's ExecStart as the install wrote it, not by escadm start): the active's peer takes
    over, and the rebooted node comes back STANDBY, synchronous. Nothing acknowledged is
    lost. (A standby's reboot is the same boot; the chaos suite's power cuts of the
    standby cover what its absence does to the active.)"""
    active = lab.active()
    standby = lab.other(active)
    writer = lab.start_writer("reboot")
    lab.wait_acks(writer)
    labmod.reboot(active)
    lab.wait_roles({standby: "ACTIVE", active: "STANDBY"}, timeout=90)
    deadline = time.monotonic() + 30
    while not lab.status(standby).get("db", {}).get("peer_complete"):
        assert time.monotonic() < deadline, lab.status(standby).get("db")
        time.sleep(0.2)
    lab.wait_acks(writer, n=1)
    record = writer.stop()
    assert analyse(record, lab.names_via_vip()).lost == []
