"""SNMP traps: what changes are told (esc.agent.alarms, pure), the sender process
(esc.snmp.sender) to a real snmptrapd in v2c and v3, the agent's watcher driving it, and
`escadm snmp`."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from esc.agent import alarms
from esc.agent.history import Event, Journal
from esc.agent.supervisor import Child
from esc.agent.traps import TrapWatcher
from esc.cli.escadm import cli, engine_id_for
from esc.config import NodeConfig, NodePaths, load_config, load_secrets, save_config
from esc.roles import Role
from esc.snmp import mib, responder
from snmp_receiver import AUTH_KEY, COMMUNITY, PRIV_KEY, USER, TrapReceiver

ROOT_OID = "1.3.6.1.4.1.32473.1"
ENGINE = engine_id_for("n1")


def oid(name: str) -> str:
    return mib.notification_oid(ROOT_OID, name)


def obj(name: str) -> str:
    return mib.object_oid(ROOT_OID, name)


# --- the pure part ----------------------------------------------------------------------------


def sig(**kw: object) -> alarms.Signals:
    base = {"role": "ACTIVE", "peer_heard": True, "replication_ok": True, "witness_ok": None, "healthy": True}
    return alarms.Signals(**{**base, **kw})  # type: ignore[arg-type]


def names(ns: list[alarms.Notification]) -> list[str]:
    return [n.name for n in ns]


def test_an_edge_is_told_once() -> None:
    assert alarms.changes(None, sig(), "n1") == []  # all fine at first look: nothing
    assert names(alarms.changes(None, sig(peer_heard=False, healthy=False), "n1")) == [
        "escPeerLost",
        "escHealthFailed",
    ]  # wrong at first look: said
    assert names(alarms.changes(sig(), sig(peer_heard=False), "n1", "n2")) == ["escPeerLost"]
    assert alarms.changes(sig(peer_heard=False), sig(peer_heard=False), "n1") == []
    found = alarms.changes(sig(peer_heard=False), sig(), "n1", "n2")
    assert names(found) == ["escPeerFound"] and found[0].detail == {"peer": "n2"}
    assert names(alarms.changes(sig(), sig(replication_ok=False), "n1")) == ["escReplicationDegraded"]
    assert names(alarms.changes(sig(replication_ok=False), sig(), "n1")) == ["escReplicationRestored"]
    # a new role judges the replication afresh: no edge from the old role's view
    assert (
        alarms.changes(
            sig(role="STANDBY", replication_ok=True), sig(role="ACTIVE", replication_ok=False), "n1"
        )
        == []
    )
    assert names(alarms.changes(sig(witness_ok=True), sig(witness_ok=False), "n1")) == ["escWitnessLost"]


FLAGS = ("peer_heard", "replication_ok", "witness_ok", "healthy")
PAIRS = {
    "peer_heard": ("escPeerLost", "escPeerFound"),
    "replication_ok": ("escReplicationDegraded", "escReplicationRestored"),
    "witness_ok": ("escWitnessLost", "escWitnessFound"),
    "healthy": ("escHealthFailed", "escHealthPassed"),
}


@settings(max_examples=300, deadline=None)
@given(st.lists(st.fixed_dictionaries({f: st.booleans() for f in FLAGS}), min_size=1, max_size=30))
def test_lost_and_found_alternate_and_end_as_the_signal_does(steps: list[dict[str, bool]]) -> None:
    prev = None
    told: list[str] = []
    for step in steps:
        cur = sig(**step)
        told += names(alarms.changes(prev, cur, "n1"))
        prev = cur
    for flag, (lost, found) in PAIRS.items():
        mine = [n for n in told if n in (lost, found)]
        assert all(a != b for a, b in zip(mine, mine[1:], strict=False)), mine  # alternate
        if mine:
            assert (mine[-1] == found) == steps[-1][flag]
        else:
            assert all(s[flag] for s in steps)


def test_history_events_and_vm_events_become_notifications() -> None:
    ev = Event(
        node="n2",
        epoch="e",
        seq=3,
        at=1.0,
        kind="failover",
        role="ACTIVE",
        reason="peer lost",
        role_from="SWITCHING_TO_ACTIVE",
        detail={"active_lost_s": 0.8},
    )
    got = alarms.from_event(ev)
    assert names(got) == ["escRoleChange", "escFailover"]
    assert got[0].detail["previous_role"] == "SWITCHING_TO_ACTIVE" and got[1].detail["seconds"] == "0.8"
    assert (
        alarms.from_event(
            Event(
                node="n2",
                epoch="e",
                seq=4,
                at=1.0,
                kind="reload",
                role="ACTIVE",
                reason="configuration reloaded",
            )
        )
        == []
    )
    down = alarms.from_vm_event("n1", "ACTIVE", "VM_DOWN", "t.d.vm0", "t/d", "no answer")
    assert down is not None and down.name == "escVmDown" and down.detail["vm"] == "t.d.vm0"
    assert alarms.from_vm_event("n1", "ACTIVE", "VM_DEPLOYED", "x", "t/d", "") is None
    st = {
        "role": "STANDBY",
        "ha": True,
        "peer": {"reachable": True},
        "db": {"streaming": True},
        "witness": {"error": "timeout", "last_answer_s": None},
    }
    assert alarms.signals(st, True) == alarms.Signals("STANDBY", True, True, False, True)


# --- the sender and a real receiver ----------------------------------------------------------


def _udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[TrapReceiver]:
    r = TrapReceiver(tmp_path / "trapd", "127.0.0.1", _udp_port(), [ENGINE])
    try:
        yield r
    finally:
        r.stop()


def sender_config(receiver: TrapReceiver, version: str) -> dict:
    return {
        "targets": [{"host": "127.0.0.1", "port": receiver.port}],
        "version": version,
        "user": USER if version == "3" else None,
        "auth_protocol": "SHA256",
        "priv_protocol": "AES",
        "engine_id": ENGINE,
        "enterprise_oid": ROOT_OID,
        "community": COMMUNITY if version == "2c" else "",
        "auth_key": AUTH_KEY,
        "priv_key": PRIV_KEY,
    }


def node_root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    paths = NodePaths(root)
    paths.etc.mkdir(parents=True)
    paths.log.mkdir(parents=True)
    save_config(paths, NodeConfig(name="n1"))
    return root


def sender_child(root: Path) -> Child:
    return Child(
        "escsnmp",
        lambda: [sys.executable, "-m", "esc.snmp.sender", "--root", str(root)],
        NodePaths(root).log / "escsnmp.out",
        stdin_pipe=True,
        grace=2.0,
    )


@pytest.mark.parametrize("version", ["2c", "3"])
def test_the_sender_traps_a_real_receiver(receiver: TrapReceiver, tmp_path: Path, version: str) -> None:
    root = node_root(tmp_path)
    child = sender_child(root)
    assert child.start()
    try:
        child.send_line(json.dumps(sender_config(receiver, version)))
        n = alarms.Notification(
            "escFailover",
            "n1",
            "ACTIVE",
            "the peer is lost",
            {"seconds": "0.8", "peer_role": "", "bogus": "x"},
        )
        child.send_line(json.dumps(n.__dict__))
        trap = receiver.wait(oid("escFailover"))
        assert trap[obj("node")] == "n1" and trap[obj("role")] == "ACTIVE"
        assert trap[obj("reason")] == "the peer is lost" and trap[obj("seconds")] == "0.8"
        assert obj("peer_role") not in trap  # empty: left out
        assert (USER in trap["security"]) == (version == "3"), trap["security"]
    finally:
        child.send_line("exit")
        child.stop_wait(5)
    assert "trap escFailover to 127.0.0.1" in (NodePaths(root).log / "escsnmp.log").read_text()


def test_a_wrong_v3_key_is_not_accepted_by_the_receiver(receiver: TrapReceiver, tmp_path: Path) -> None:
    child = sender_child(node_root(tmp_path))
    child.start()
    try:
        child.send_line(json.dumps({**sender_config(receiver, "3"), "auth_key": "not-the-key"}))
        child.send_line(json.dumps(alarms.Notification("escTest", "n1", "ACTIVE", "x").__dict__))
        with pytest.raises(AssertionError, match="no trap"):
            receiver.wait(oid("escTest"), timeout=2)
    finally:
        child.send_line("exit")
        child.stop_wait(5)


def test_the_watcher_tells_what_changes(receiver: TrapReceiver, tmp_path: Path) -> None:
    """The agent's watcher: its sender started with the configuration, then one trap
    per edge of the status and one per new history event; a reload's new settings
    restart the sender; off, it stops."""
    root = node_root(tmp_path)
    child = sender_child(root)
    status = {
        "node": "n1",
        "role": "ACTIVE",
        "ha": True,
        "peer": {"reachable": True},
        "db": {"sync": True, "peer_complete": True},
    }
    cfg: list[dict | None] = [sender_config(receiver, "3")]
    journal = Journal(None, "n1")
    journal.record("start", Role.STOPPED, "before the watcher: not news")
    w = TrapWatcher(
        child,
        lambda: cfg[0],
        lambda: dict(status),
        lambda st: True,
        journal,
        "n2",
        connect=lambda: None,
        serving=lambda: False,
        ready=threading.Event(),
    )
    try:
        assert w.step() == []  # settled and fine: nothing to say
        assert child.running
        status["peer"] = {"reachable": False}
        status["db"] = {"sync": False, "peer_complete": False}
        assert names(w.step()) == ["escPeerLost", "escReplicationDegraded"]
        receiver.wait(oid("escPeerLost"), **{obj("peer"): "n2"})
        journal.record("switchover", Role.SWITCHING_TO_STANDBY, "asked", role_from=Role.ACTIVE, by="admin")
        assert names(w.step()) == ["escRoleChange", "escSwitchover"]
        receiver.wait(oid("escSwitchover"), **{obj("by"): "admin"})
        pid = child.pid
        cfg[0] = sender_config(receiver, "2c")  # escadm snmp set + reload
        deadline = time.monotonic() + 5
        while not (child.running and child.pid != pid and w.sent_config == cfg[0]):
            assert time.monotonic() < deadline, "the sender was not restarted with the new settings"
            w.step()
            time.sleep(0.1)
        assert w.send(alarms.Notification("escTest", "n1", "ACTIVE", "a test"))
        assert f"SNMP v2c, community {COMMUNITY}" in receiver.wait(oid("escTest"))["security"]
        cfg[0] = None
        w.step()
        assert not child.running
    finally:
        w._stop_sender()


def _snmpget(port: int, version: str, *oids: str, key: str = AUTH_KEY) -> subprocess.CompletedProcess[str]:
    auth = (["-v2c", "-c", COMMUNITY] if version == "2c" else
            ["-v3", "-l", "authPriv", "-u", USER, "-a", "SHA-256", "-A", key, "-x", "AES", "-X", PRIV_KEY])
    return subprocess.run(["snmpget", *auth, "-On", "-Oqv", "-t", "1", "-r", "1", f"127.0.0.1:{port}", *oids],
                          capture_output=True, text=True, timeout=20)


def status_oid(name: str) -> str:
    return f"{ROOT_OID}.3.{responder.SCALARS[name][0]}.0"


@pytest.mark.skipif(shutil.which("snmpget") is None, reason="Debian's snmp (snmpget) is not installed")
@pytest.mark.parametrize("version", ["2c", "3"])
def test_gets_are_answered_with_what_the_agent_last_said(receiver: TrapReceiver, tmp_path: Path,
                                                         version: str) -> None:
    """With ``agent_port``, the sender answers GETs of escHaStatus (Debian's snmpget, with
    the traps' community or v3 user) from the status the watcher sends every step."""
    port = _udp_port()
    child = sender_child(node_root(tmp_path))
    status = {"node": "n1", "role": "ACTIVE", "ha": True, "peer": {"reachable": True, "role": "STANDBY"},
              "db": {"state": "primary", "sync": True, "peer_complete": True},
              "replication": {"lag_bytes": 1234}, "op_mode": {"mode": "operation"},
              "vip": {"address": "10.0.0.50/24"}}
    healthy = [True]
    w = TrapWatcher(child, lambda: {**sender_config(receiver, version), "agent_port": port},
                    lambda: dict(status), lambda st: healthy[0], Journal(None, "n1"), "n2",
                    connect=lambda: None, serving=lambda: False, ready=threading.Event())
    oids = [status_oid(k) for k in ("node", "role", "health", "peer_role", "replication_sync",
                                    "replication_lag_bytes", "op_mode", "vip")]
    try:
        w.step()
        deadline = time.monotonic() + 10
        while (got := _snmpget(port, version, *oids)).returncode != 0:
            assert time.monotonic() < deadline, got.stderr
            w.step()
        assert got.stdout.split() == ['"n1"', '"ACTIVE"', "1", '"STANDBY"', "1", "1234", '"operation"',
                                      '"10.0.0.50/24"'], got.stdout
        status["role"], healthy[0] = "SWITCHING_TO_STANDBY", False
        w.step()
        deadline = time.monotonic() + 5
        while _snmpget(port, version, status_oid("role")).stdout.strip() != '"SWITCHING_TO_STANDBY"':
            assert time.monotonic() < deadline
        assert _snmpget(port, version, status_oid("health")).stdout.strip() == "2"  # failed
        # nothing else of the tree, and nothing for a wrong credential
        other = _snmpget(port, version, "1.3.6.1.2.1.1.1.0")  # sysDescr
        assert other.returncode != 0 and "noAccess" in other.stderr, other
        if version == "3":
            assert _snmpget(port, version, status_oid("role"), key="not-the-key").returncode != 0
    finally:
        w._stop_sender()


def test_stale_values_say_unknown_rather_than_what_was_true() -> None:
    v = {**responder.values({"node": "n1", "role": "ACTIVE", "ha": True, "db": {"state": "primary"}}, True),
         "at": 100.0}
    assert responder.current(v, now=v["at"] + 1)["role"] == "ACTIVE"
    late = responder.current(v, now=v["at"] + responder.STALE_S + 1)
    assert late["role"] == "UNKNOWN" and late["health"] is False and late["node"] == "n1"
    assert responder.current(None)["role"] == "UNKNOWN"


# --- escadm snmp ------------------------------------------------------------------------------


def test_escadm_snmp_set_show_and_disable(tmp_path: Path) -> None:
    root = tmp_path
    paths = NodePaths(root)
    paths.etc.mkdir(parents=True)
    save_config(paths, NodeConfig(name="n1"))
    run = CliRunner().invoke
    res = run(
        cli,
        [
            "--root",
            str(root),
            "snmp",
            "set",
            "--target",
            "192.0.2.9",
            "--target",
            "[2001:db8::9]:1162",
            "--v3_user",
            "ops",
            "--auth_key",
            "authpass1",
            "--priv_key",
            "privpass1",
            "--priv_protocol",
            "aes256",
        ],
    )
    assert res.exit_code == 0, res.output
    conf = load_config(paths).snmp
    assert conf is not None and conf.version == "3" and conf.priv_protocol == "AES256"
    assert [(t.host, t.port) for t in conf.targets] == [("192.0.2.9", 162), ("2001:db8::9", 1162)]
    assert conf.engine_id == ENGINE
    assert load_secrets(paths)["snmp_auth_key"] == "authpass1"
    shown = run(cli, ["--root", str(root), "snmp", "show"]).stdout
    assert f"0x{ENGINE}" in shown and "authpass1" not in shown and "privpass1" not in shown
    assert "authpass1" not in json.dumps(
        json.loads(run(cli, ["--root", str(root), "snmp", "show", "--json"]).stdout)
    )
    for bad, why in (
        (["--target", "192.0.2.9"], "--community"),
        (["--community", "c"], "--target"),
        (
            ["--target", "192.0.2.9", "--v3_user", "u", "--auth_key", "short", "--priv_key", "privpass1"],
            "8 characters",
        ),
        (["--target", "192.0.2.9", "--v3_user", "u"], "--auth_key"),
        (["--target", "bad host!", "--community", "c"], "address or a host name"),
        (["--target", "192.0.2.9:99999", "--community", "c"], "65535"),
        (["--target", "192.0.2.9", "--community", "c", "--enterprise_oid", "1.2.3"], "enterprises"),
    ):
        res = run(cli, ["--root", str(root), "snmp", "set", *bad])
        assert res.exit_code == 2 and why in res.output, (bad, res.output)
    assert load_config(paths).snmp == conf  # nothing half-written
    res = run(cli, ["--root", str(root), "snmp", "set", "--disable"])
    assert res.exit_code == 0 and load_config(paths).snmp is None
    assert "snmp_auth_key" not in load_secrets(paths)
    assert "off" in run(cli, ["--root", str(root), "snmp", "show"]).stdout


# --- the MIB ----------------------------------------------------------------------------------


def test_the_mib_is_smiv2_and_says_what_the_code_sends() -> None:
    """docs/ESC-HA-MIB.txt parses as SMIv2 (pysmi's strict dialect) and names every
    notification and object with the numbers esc.snmp sends."""
    import re

    from pysmi.parser.dialect import smi_v2
    from pysmi.parser.smi import parserFactory

    text = (Path(__file__).parents[2] / "docs/ESC-HA-MIB.txt").read_text()
    parse = parserFactory(**smi_v2)().parse
    assert parse(text)[0][0] == "ESC-HA-MIB"
    with pytest.raises(Exception):  # noqa: B017 - the parser's own error types vary
        parse(text.replace("NOTIFICATION-TYPE", "NOTIFICATION TYPE", 1))
    notifications = {m[1]: int(m[2]) for m in re.finditer(
        r"^(\w+) NOTIFICATION-TYPE.*?::= \{ escHaNotifications (\d+) \}", text, re.M | re.S)}
    defined = [(m[1], m[2], int(m[3])) for m in re.finditer(
        r"^(\w+) OBJECT-TYPE\n(?:    .*\n)*?    ::= \{ (\w+) (\d+) \}", text, re.M)]
    objects = {name: n for name, parent, n in defined if parent == "escHaObjects"}
    status = {name: n for name, parent, n in defined if parent == "escHaStatus"}
    assert len(defined) == len(objects) + len(status) == text.count(" OBJECT-TYPE\n")
    assert notifications == alarms.NOTIFICATIONS
    assert sorted(objects.values()) == sorted(mib.OBJECTS.values())
    assert sorted(status.values()) == sorted(sub for sub, _ in responder.SCALARS.values())
    assert "{ enterprises 32473 1 }" in text and ROOT_OID == "1.3.6.1.4.1.32473.1"
