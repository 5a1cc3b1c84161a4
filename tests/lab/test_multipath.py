"""Peer liveness over every network (--ha_heartbeat_list): with a second network between
the nodes, cutting the first one (VRRP, replication) does not make the standby take over."""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from esc.config import NodePaths
from esc.lab import lab as labmod
from esc.lab import net

pytestmark = [pytest.mark.lab, pytest.mark.lab_paths(2)]


def isolate_first_network(on: bool) -> None:
    for n in labmod.NODES:
        subprocess.run(["ip", "netns", "exec", net.switch(), "bridge", "link", "set", "dev", net.port(n),
                        "isolated", "on" if on else "off"], check=True, capture_output=True)


def test_standby_keeps_its_gate_closed_while_the_active_answers_on_the_second_network(lab) -> None:  # type: ignore[no-untyped-def]
    active = lab.active()
    standby = lab.other(active)
    text = lab.escadm(standby, "status", "-v").stdout
    assert f"via {labmod.path_ip(active, 0)} " in text and f"via {labmod.path_ip(active, 1)} " in text, text
    isolate_first_network(True)
    try:
        deadline = time.monotonic() + 8
        blips = 0  # samples with the VIP on the standby
        while time.monotonic() < deadline:  # longer than master-down and the promote window
            assert lab.has_vip(active), "the VIP must stay on the active"
            # The standby's keepalived may time out before its agent sees VRRP's network
            # cut (master-down 0.72 s, a stale path 0.6 s): it is MASTER for the ~10 ms
            # until the agent closes its gate. Never longer, and never a takeover.
            if lab.has_vip(standby):
                blips += 1
                assert blips == 1, "the VIP stayed on the standby"
            roles = lab.roles()
            assert roles[active] == "ACTIVE" and roles[standby] != "ACTIVE", roles
            time.sleep(0.1)
        assert not lab.has_vip(standby), "the VIP must end on the active only"
        st = lab.status(standby)
        assert st["vrrp"] != "MASTER", st["vrrp"]
        paths = st["peer"]["paths"]
        assert [p["reachable"] for p in paths] == [False, True], paths
        assert st["peer"]["role"] == "ACTIVE"
        text = lab.escadm(standby, "status", "-v").stdout
        assert f"via {labmod.path_ip(active, 0)} unreachable" in text, text
        assert lab.post("during-the-cut") == 201  # the active commits (alone after alone_after)
    finally:
        isolate_first_network(False)
    lab.wait_roles({active: "ACTIVE", standby: "STANDBY"}, timeout=60)
    assert lab.post("after-the-cut") == 201
    assert {"during-the-cut", "after-the-cut"} <= lab.names_in_db(standby) or \
        _eventually(lambda: {"during-the-cut", "after-the-cut"} <= lab.names_in_db(standby))


def test_a_node_cut_from_every_network_fails_over(lab) -> None:  # type: ignore[no-untyped-def]
    """A pulled cable set (every network of the active): the standby hears it nowhere and
    takes over; the old active rejoins when its cables are back."""
    active = lab.active()
    standby = lab.other(active)
    labmod.cut(active)
    try:
        lab.wait_roles({standby: "ACTIVE"}, timeout=20)
    finally:
        labmod.heal(active)
    lab.wait_roles({active: "STANDBY", standby: "ACTIVE"}, timeout=60)
    assert lab.post("after-failover") == 201


def _eventually(check, timeout: float = 10) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.2)
    return False


def _replication_peer(lab, node: str) -> list[str]:  # type: ignore[no-untyped-def]
    """The addresses the standby streams from, as the primary ``node`` sees them."""
    from esc.config import PG_BIN, NodePaths

    sock = NodePaths(labmod.node_root(node)).pg_socket_dir
    res = net.netns_exec(node, str(PG_BIN / "psql"), "-h", str(sock), "-U", "postgres", "-Atc",
                         "SELECT client_addr FROM pg_stat_replication", check=False)
    return res.stdout.split()


@pytest.mark.lab_replication_path(1)
def test_replication_on_the_second_network_and_a_failover(lab) -> None:  # type: ignore[no-untyped-def]
    """--ha_replication_list: PostgreSQL replicates over the second network while VRRP and
    the northbound stay on the first; a failover and the rejoin use it too."""
    active = lab.active()
    standby = lab.other(active)
    assert _replication_peer(lab, active) == [labmod.path_ip(standby, 1)]
    writer = lab.start_writer("repl2")
    lab.wait_acks(writer)
    labmod.kill(active)
    lab.wait_roles({standby: "ACTIVE"}, timeout=30)
    lab.wait_acks(writer, n=1)
    labmod.start(active)
    lab.wait_roles({active: "STANDBY", standby: "ACTIVE"}, timeout=60)
    deadline = time.monotonic() + 20
    while _replication_peer(lab, standby) != [labmod.path_ip(active, 1)]:
        assert time.monotonic() < deadline, _replication_peer(lab, standby)
        time.sleep(0.3)
    record = writer.stop()
    from esc.lab.measure import analyse

    assert analyse(record, lab.names_via_vip()).lost == []


@pytest.mark.lab_paths(3)
@pytest.mark.lab_northbound_ipv6
def test_ipv6_northbound_vip_beside_ipv4_vrrp(lab) -> None:  # type: ignore[no-untyped-def]
    """The original's three-interface example: VRRP and replication on IPv4 (eth0), a second
    IPv4 network (eth1), the northbound IPv6-only (eth2) with the VIP and the client. Writes
    through the IPv6 VIP survive a failover, nothing lost; the ETSI server address is the VIP."""
    assert ":" in lab.vip and lab.state["vip_dev"] == "eth2"
    active = lab.active()
    standby = lab.other(active)
    text = NodePaths(labmod.node_root(active)).keepalived_conf.read_text()
    assert "native_ipv6" in text and "interface eth0" in text and f"{lab.vip}/64 dev eth2" in text
    assert lab.has_vip(active) and not lab.has_vip(standby)
    # each --ipaddr on its interface, in order, the IPv6 one alone on the northbound
    shown = net.host_ip(active, "-br", "addr", "show", "dev", "eth2").stdout
    assert labmod.northbound_ip(active, 2) in shown and "10." not in shown, shown
    assert labmod.vip_url(lab.state).startswith(f"http://[{lab.vip}]:")

    writer = lab.start_writer("nb6")
    lab.wait_acks(writer)
    labmod.kill(active)
    lab.wait_roles({standby: "ACTIVE"}, timeout=30)
    assert _eventually(lambda: lab.has_vip(standby))
    lab.wait_acks(writer, n=1)
    record = writer.stop()
    from esc.lab.measure import analyse

    result = analyse(record, lab.names_via_vip())
    assert result.lost == [] and record["acked"], (result.lost, record.get("acked"))
    etsi = json.loads(lab.escadm(standby, "etsi", "show", "--json").stdout)
    assert etsi["server_address"] == lab.vip
    labmod.start(active)
    lab.wait_roles({active: "STANDBY", standby: "ACTIVE"}, timeout=60)
    assert not lab.has_vip(active)
