"""The HA pair end to end: real keepalived, real PostgreSQL, namespaces on this machine."""

from __future__ import annotations

import json
import tarfile
import time

import pytest

from esc.lab import lab as labmod
from esc.lab.measure import analyse

pytestmark = pytest.mark.lab


def test_pair_comes_up_with_the_vip_on_the_active_only(lab):
    roles = lab.roles()
    assert sorted(roles.values()) == ["ACTIVE", "STANDBY"]
    active = lab.active()
    assert lab.has_vip(active) and not lab.has_vip(lab.other(active))
    for node in roles:
        health = lab.escadm(node, "health")
        assert "ESC HEALTH PASSED" in health.stdout
        st = json.loads(lab.escadm(node, "status", "--json").stdout)
        assert st["role"] == roles[node]
    standby = lab.escadm(lab.other(active), "health").stdout
    assert "pgsql is stopped" in standby and "is standby" in standby
    verbose = lab.escadm(active, "status", "-v").stdout
    assert "synchronous, standby complete" in verbose and "present here" in verbose
    assert "MiB for the peer (slot esc_peer" in verbose


def test_a_write_is_on_the_standby_before_it_is_acknowledged(lab):
    standby = lab.other(lab.active())
    for i in range(10):
        name = f"sync-{i}"
        assert lab.post(name) == 201
        assert name in lab.names_in_db(standby), f"{name} acknowledged but not on the standby"


def test_killing_the_active_fails_over_without_losing_writes(lab):
    old, new, out, record = lab.power_cut_under_writes("kill")
    assert out.kill_to_first_ack is not None and out.nodes[-1] == new
    assert lab.has_vip(new)
    # The old node comes back as the standby, with every record.
    labmod.start(old)
    lab.wait_roles({old: "STANDBY", new: "ACTIVE"}, timeout=60)
    assert lab.names_in_db(old) >= {a[0] for a in record["acked"]}
    assert lab.post("after-rejoin") == 201
    assert "after-rejoin" in lab.names_in_db(old)


def test_a_rejoin_copies_only_the_wal_since_the_last_checkpoint(lab):
    """pg_rewind copies every WAL file its source has. The new active keeps only what a
    rewind of the old one needs (from the old active's last checkpoint, through the slot
    the standby moved there), not a fixed amount "just in case": WAL written before
    that checkpoint is gone by the time the old node rejoins, and the rejoin is a
    rewind (or nothing, when the old active wrote nothing past the fork), not a clone."""
    old = lab.active()
    new = lab.other(old)
    segment = 16 * 2**20
    lab.sql(old, "CREATE TABLE walfill (x int)")
    for _ in range(12):  # 12 WAL segments, replicated synchronously
        lab.sql(old, "INSERT INTO walfill VALUES (1); SELECT pg_switch_wal()")
    lab.sql(old, "CHECKPOINT")
    redo = lab.sql(old, "SELECT redo_lsn - '0/0'::pg_lsn FROM pg_control_checkpoint()")
    deadline = time.monotonic() + 15
    while True:  # the standby moves its slot up to the checkpoint it replayed past
        kept = lab.sql(new, "SELECT restart_lsn - '0/0'::pg_lsn FROM pg_replication_slots "
                            "WHERE slot_name = 'esc_peer'")
        if kept and int(kept) >= int(redo):
            break
        assert time.monotonic() < deadline, f"standby slot at {kept}, checkpoint redo {redo}"
        time.sleep(0.2)
    assert lab.post("before-kill") == 201
    seen = len(lab.agent_log(old))  # its first start cloned the first node: not this rejoin
    labmod.kill(old)
    lab.wait_roles({new: "ACTIVE"}, timeout=30)
    assert lab.post("after-kill") == 201
    lab.sql(new, "CHECKPOINT")  # what pg_rewind's source does first
    wal = int(lab.sql(new, "SELECT sum(size) FROM pg_ls_waldir()"))
    assert wal <= 5 * segment, f"the new active keeps {wal / 2**20:.0f} MiB of WAL"
    labmod.start(old)
    lab.wait_roles({old: "STANDBY", new: "ACTIVE"}, timeout=60)
    log = lab.agent_log(old)[seen:]
    assert "cloned the peer" not in log and "pg_rewind failed" not in log
    assert {"before-kill", "after-kill"} <= lab.names_in_db(old)
    assert lab.post("after-rewind") == 201
    assert "after-rewind" in lab.names_in_db(old)


def test_https_through_the_vip_presents_one_certificate_across_a_failover(lab):
    """Both nodes made the same certificate from the pair's secret: a client that
    trusts the first active's certificate (and only it) keeps working after a
    failover, and sees the same certificate."""
    certs = {n: (labmod.node_root(n) / "etc/esc/tls/escmanager.crt").read_bytes() for n in ("n1", "n2")}
    assert certs["n1"] == certs["n2"]
    old = lab.active()
    cafile = lab.tmp / "pair.crt"
    cafile.write_bytes(certs[old])
    status, before = lab.https_get("/v0/deployments", cafile)
    assert status == 200
    verbose = lab.escadm(old, "status", "-v").stdout
    assert "https 8443, certificate SHA-256" in verbose and "(generated)" in verbose
    labmod.kill(old)
    lab.wait_roles({lab.other(old): "ACTIVE"}, timeout=30)
    status, after = lab.https_get("/v0/deployments", cafile)
    assert status == 200 and after == before


def test_cutting_the_active_link_fails_over_and_the_node_rejoins(lab):
    old = lab.active()
    new = lab.other(old)
    writer = lab.start_writer("cut")
    lab.wait_acks(writer)
    cut_at = time.time()
    labmod.cut(old)
    lab.wait_roles({new: "ACTIVE"}, timeout=30)
    time.sleep(1)
    record = writer.stop()
    out = analyse(record, lab.names_via_vip(), cut_at)
    assert out.lost == [], f"acknowledged writes lost: {out.lost[:10]}"
    assert lab.status(old)["role"] != "ACTIVE", "the isolated node still claims ACTIVE"
    labmod.heal(old)
    lab.wait_roles({old: "STANDBY", new: "ACTIVE"}, timeout=60)
    assert lab.names_in_db(old) >= {a[0] for a in record["acked"]}


def test_switchover_swaps_roles_without_losing_writes(lab):
    old = lab.active()
    new = lab.other(old)
    # A controller setting changed on the standby: `reload` restarts its parked
    # controller, which serves with it after the switchover.
    parked = lab.status(new)["services"]["escmanager"]["pid"]
    lab.escadm(new, "callback", "set", "--allow", "192.0.2.0/24")
    assert "reloaded" in lab.escadm(new, "reload").stdout
    deadline = time.monotonic() + 10
    while lab.status(new)["services"]["escmanager"]["pid"] in (parked, 0, None):
        assert time.monotonic() < deadline, "the parked controller was not restarted"
        time.sleep(0.1)
    callback = {"callback": f"http://{labmod.node_ip(labmod.CLIENT)}:9/cb"}
    assert lab.api("POST", "/v0/tenants", {"name": "cb-before"}, headers=callback)[0] == 202
    writer = lab.start_writer("swo")
    lab.wait_acks(writer)
    res = lab.escadm(old, "ha", "switchover")
    assert "STANDBY" in res.stdout
    lab.wait_roles({old: "STANDBY", new: "ACTIVE"}, timeout=30)
    lab.wait_acks(writer, n=1)
    record = writer.stop()
    out = analyse(record, lab.names_via_vip())
    assert out.lost == []
    assert lab.has_vip(new) and not lab.has_vip(old)
    status, body = lab.api("POST", "/v0/tenants", {"name": "cb-after"}, headers=callback)
    assert status == 400 and "not in the callback allow-list" in body["error"], body
    # And back again, asked on the standby this time.
    lab.escadm(old, "ha", "switchover")
    lab.wait_roles({old: "ACTIVE", new: "STANDBY"}, timeout=30)


def test_switchover_is_refused_without_a_complete_standby(lab):
    active = lab.active()
    labmod.kill(lab.other(active))
    res = lab.escadm(active, "ha", "switchover", check=False)
    assert res.returncode != 0
    assert "not a complete synchronous standby" in res.stderr


def test_a_lone_node_waits_in_switching_to_active_until_forced(lab):
    first = lab.active()
    second = lab.other(first)
    assert lab.post("before") == 201
    labmod.kill(second)
    labmod.kill(first)
    labmod.start(first)
    lab.wait_roles({first: "SWITCHING_TO_ACTIVE"}, timeout=20)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # it must stay there, serving nothing
        assert lab.status(first)["role"] == "SWITCHING_TO_ACTIVE"
        assert not lab.has_vip(first)
        time.sleep(0.25)
    health = lab.escadm(first, "health", check=False)
    assert health.returncode == 1 and "ESC HEALTH FAILED" in health.stdout
    lab.escadm(first, "ha", "force-active", "--yes")
    lab.wait_roles({first: "ACTIVE"}, timeout=10)
    assert lab.post("forced-lone") == 201
    labmod.start(second)
    lab.wait_roles({first: "ACTIVE", second: "STANDBY"}, timeout=60)
    assert {"before", "forced-lone"} <= lab.names_in_db(second)


def test_force_active_is_refused_when_the_peer_is_there(lab):
    standby = lab.other(lab.active())
    res = lab.escadm(standby, "ha", "force-active", "--yes", check=False)
    assert res.returncode != 0 and "SWITCHING_TO_ACTIVE" in res.stderr


def test_losing_the_standby_blocks_commits_briefly_then_the_active_goes_alone(lab):
    active = lab.active()
    standby = lab.other(active)
    writer = lab.start_writer("alone", timeout=10)
    lab.wait_acks(writer)
    labmod.kill(standby)
    deadline = time.monotonic() + 15
    while lab.status(active)["db"]["sync"]:
        assert time.monotonic() < deadline, "the active never stopped waiting for its standby"
        time.sleep(0.1)
    assert lab.status(active)["role"] == "ACTIVE"
    before = len(lab.names_via_vip())
    deadline = time.monotonic() + 10
    while len(lab.names_via_vip()) < before + 5:  # commits flow again, alone
        assert time.monotonic() < deadline, "no commits after going alone"
        time.sleep(0.1)
    labmod.start(standby)
    lab.wait_roles({standby: "STANDBY"}, timeout=60)
    record = writer.stop()
    assert analyse(record, lab.names_via_vip()).lost == []
    assert lab.names_in_db(standby) >= {a[0] for a in record["acked"]}
    deadline = time.monotonic() + 10
    while not lab.status(active)["db"]["peer_complete"]:
        assert time.monotonic() < deadline, "synchronous replication did not come back"
        time.sleep(0.1)


def test_killing_keepalived_on_the_active_hands_over(lab):
    old = lab.active()
    new = lab.other(old)
    pid = lab.status(old)["services"]["keepalived"]["pid"]
    import os
    import signal

    os.kill(pid, signal.SIGKILL)
    lab.wait_roles({new: "ACTIVE", old: "STANDBY"}, timeout=60)
    assert lab.has_vip(new) and not lab.has_vip(old)
    assert lab.post("after-keepalived-kill") == 201


def test_log_collect_leaves_secrets_out(lab):
    node = lab.active()
    out = lab.tmp / "logs.tar.gz"
    lab.escadm(node, "log", "collect", "-o", str(out))
    secret = lab.auth[1]
    with tarfile.open(out) as tar:
        names = tar.getnames()
        assert any(n.endswith("agent.log") for n in names)
        assert any(n.endswith("status.json") for n in names)
        assert not any(n.endswith(("secrets.json", "pgpass")) for n in names)
        for m in tar.getmembers():
            data = tar.extractfile(m).read() if m.isfile() else b""
            assert secret.encode() not in data, f"{m.name} holds the REST password"


def test_health_api_through_the_vip_reports_on_the_pair(lab):
    active = lab.active()
    standby = lab.other(active)

    def get(host: str, path: str) -> tuple[int, dict]:
        code = (f"import httpx,json;r=httpx.get('http://{host}:8060{path}',timeout=5);"
                "print(json.dumps([r.status_code, r.json()]))")
        status, body = json.loads(lab.client_python(code))
        return status, body

    status, body = get(lab.vip, "/esc/health")
    assert status == 200 and body["status_code"] == 2000 and body["stage"] == "READY"
    assert get(lab.vip, "/esc/health/active")[0] == 200
    assert get(labmod.node_ip(standby), "/esc/health/active")[0] == 503
    labmod.kill(standby)
    deadline = time.monotonic() + 15
    while get(lab.vip, "/esc/health")[1]["status_code"] not in (2010, 2030):
        assert time.monotonic() < deadline, "health did not report the missing standby"
        time.sleep(0.2)


@pytest.mark.lab_witness
def test_a_standby_held_outdated_never_takes_over_alone_but_force_active_makes_it_serve(lab):
    """With a witness: the standby is cut off, the active has the witness hold it
    outdated and commits alone, then the active dies. The standby, back on the
    network, lacks what the active committed alone: it must not take over by itself
    (no lease for an outdated node). The operator's force-active is the decision to go on
    without those writes: the witness clears the mark (the lease is free) and the node
    serves."""
    active = lab.active()
    standby = lab.other(active)
    assert lab.post("both") == 201
    labmod.cut(standby)
    deadline = time.monotonic() + 15
    while not (lab.status(active).get("witness") or {}).get("outdated"):  # only its peer
        assert time.monotonic() < deadline, lab.status(active).get("witness")
        time.sleep(0.2)
    assert lab.post("alone") == 201  # on the active only
    labmod.kill(active)
    labmod.heal(standby)
    lab.wait_roles({standby: "SWITCHING_TO_ACTIVE"}, timeout=20)
    deadline = time.monotonic() + 6  # several leases: the dead active's has long run out
    while time.monotonic() < deadline:
        st = lab.status(standby)
        assert st["role"] != "ACTIVE" and not lab.has_vip(standby), st
        time.sleep(0.25)
    lab.escadm(standby, "ha", "force-active", "--yes")
    lab.wait_roles({standby: "ACTIVE"}, timeout=15)
    assert lab.post("forced") == 201
    names = lab.names_in_db(standby)
    assert {"both", "forced"} <= names and "alone" not in names
