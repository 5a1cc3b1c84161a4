"""The pair with its witness lease in a 3-member etcd cluster (escadm lab up --witness
etcd): a failover takes the lease from etcd; with every member dead no failover is
possible, and the active keeps serving with its synchronous standby."""

from __future__ import annotations

import time

import pytest

from esc.config import peer_app_name
from esc.lab import lab as labmod
from esc.lab.measure import analyse

pytestmark = [pytest.mark.lab, pytest.mark.lab_witness("etcd")]


def test_the_standby_takes_over_with_the_lease_from_etcd(lab):  # type: ignore[no-untyped-def]
    w = lab.status(lab.active())["witness"]
    assert w["address"].startswith("etcd://") and w["held"] and w["endpoint"].startswith("http://")
    assert "lease held here via http://" in lab.escadm(lab.active(), "status", "-v").stdout
    old, new, out, record = lab.power_cut_under_writes("etcd-kill")
    # the new active holds the lease, and has its lost peer held outdated in etcd
    w = lab.status(new)["witness"]
    assert w["held"] and w["holder"] == peer_app_name(labmod.node_ip(new)), w
    assert w["outdated"] == peer_app_name(labmod.node_ip(old)), w
    assert "promoting" in lab.agent_log(new)
    print(f"etcd witness: kill -> first write on the new active {out.kill_to_first_ack:.2f}s")
    labmod.start(old)
    lab.wait_roles({old: "STANDBY", new: "ACTIVE"}, timeout=60)
    assert lab.names_in_db(old) >= {a[0] for a in record["acked"]}


def test_with_every_etcd_member_dead_the_active_serves_and_nobody_takes_over(lab):  # type: ignore[no-untyped-def]
    active = lab.active()
    standby = lab.other(active)
    writer = lab.start_writer("etcd-down")
    lab.wait_acks(writer)
    labmod.etcd_kill()
    try:
        deadline = time.monotonic() + 10
        while lab.status(active)["witness"]["held"]:  # the last grant runs out within a second
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert "no etcd member answered" in lab.status(active)["witness"]["error"]
        assert lab.post("witness-down") == 201  # commits still wait for the complete standby
        assert "witness-down" in lab.names_in_db(standby)
        # the active dies too: without the lease the standby must not promote (its
        # keepalived may take the VIP while it asks: nothing answers there)
        labmod.kill(active)
        deadline = time.monotonic() + 6  # several leases and promote windows
        while time.monotonic() < deadline:
            st = lab.status(standby)
            assert st["role"] != "ACTIVE", st
            assert lab.sql(standby, "SELECT pg_is_in_recovery()", dbname="postgres") == "t"
            time.sleep(0.25)
        # by now its data is no longer confirmed complete either: it waits for its peer
        assert "waiting" in lab.status(standby)["reason"], lab.status(standby)
        record = writer.stop()
        out = analyse(record, lab.names_in_db(standby))
        assert out.lost == [], f"acknowledged writes lost: {out.lost[:10]}"
    finally:
        labmod.etcd_start()
    # the standby's data is no longer confirmed complete: it waits for its peer
    labmod.start(active)
    lab.wait_roles({"ACTIVE", "STANDBY"}, timeout=90)


def test_an_outdated_standby_waits_for_force_active_with_the_mark_in_etcd(lab):  # type: ignore[no-untyped-def]
    """As with the built-in witness (test_pair.py): the active holds its cut-off standby
    outdated in etcd and commits alone, then dies; the standby, back, must not take over
    by itself; force-active deletes the mark (the key is free) and it serves."""
    active = lab.active()
    standby = lab.other(active)
    assert lab.post("both") == 201
    labmod.cut(standby)
    deadline = time.monotonic() + 15
    while lab.status(active)["witness"].get("outdated") != peer_app_name(labmod.node_ip(standby)):
        assert time.monotonic() < deadline, lab.status(active)["witness"]
        time.sleep(0.2)
    assert lab.post("alone") == 201
    labmod.kill(active)
    labmod.heal(standby)
    lab.wait_roles({standby: "SWITCHING_TO_ACTIVE"}, timeout=20)
    deadline = time.monotonic() + 6
    while time.monotonic() < deadline:
        st = lab.status(standby)
        assert st["role"] != "ACTIVE" and not lab.has_vip(standby), st
        time.sleep(0.25)
    lab.escadm(standby, "ha", "force-active", "--yes")
    lab.wait_roles({standby: "ACTIVE"}, timeout=15)
    assert lab.post("forced") == 201
    names = lab.names_in_db(standby)
    assert {"both", "forced"} <= names and "alone" not in names
    assert lab.status(standby)["witness"]["held"]
