"""Northbound over BGP anycast: real ExaBGP on the nodes, a real BIRD 2 router, the
nodes in two subnets behind it and the client behind it too (escadm lab up --bgp)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from esc.lab import lab as labmod
from esc.lab import router
from esc.lab.measure import analyse

pytestmark = [pytest.mark.lab, pytest.mark.lab_bgp]

PREFIX = f"{labmod.ANYCAST}/32"


def routes() -> list[str]:
    return router.next_hops(labmod.lab_dir(), PREFIX)


def wait_route(via: str, timeout: float = 20) -> None:
    """Until the router holds exactly one route for the anycast prefix, via ``via``, and
    its kernel forwards there."""
    deadline = time.monotonic() + timeout
    seen: tuple[list[str], str | None] = ([], None)
    while time.monotonic() < deadline:
        seen = (routes(), router.kernel_next_hop(labmod.ANYCAST))
        if seen == ([via], via):
            return
        time.sleep(0.1)
    raise AssertionError(f"anycast route via {via} expected; BIRD has {seen[0]}, kernel {seen[1]}\n"
                         + router.birdc(labmod.lab_dir(), "show", "protocols"))


def wait_status(lab, node: str, pred, timeout: float = 20) -> dict:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    st: dict = {}
    while time.monotonic() < deadline:
        st = lab.status(node)
        if pred(st):
            return st
        time.sleep(0.2)
    raise AssertionError(f"{node}: status never matched: {json.dumps(st.get('bgp'), indent=1)}")


def established(st: dict) -> bool:
    return bool(st.get("bgp", {}).get("established"))


def test_netconf_through_the_anycast_address(lab):  # type: ignore[no-untyped-def]
    """With BGP instead of a VIP: the active answers NETCONF on the anycast address, the
    standby's 830 is closed."""
    state = lab.state
    active = lab.active()
    res = lab.netconf_client("read", {"vip": state["bgp"]["anycast"], "user": state["confd_user"],
                                      "password": state["confd_password"]})
    assert res["host_key"] == lab.status(active)["confd"]["host_key"]
    assert "default" in res["tenants"]
    assert not lab.port_open(state["nodes"][lab.other(active)]["address"], 830)


def test_the_route_points_at_the_active_only(lab):
    active = lab.active()
    standby = lab.other(active)
    wait_route(labmod.node_ip(active))
    assert set(router.protocols(labmod.lab_dir()).values()) == {"Established"}
    for node in (active, standby):
        st = wait_status(lab, node, established)
        assert st["bgp"]["loopback"], f"{node}: the anycast address is not on lo"
        assert st["bgp"]["md5"]
    assert lab.status(active)["bgp"]["announced"] and not lab.status(standby)["bgp"]["announced"]
    # ExaBGP (and so its API process) runs as its own unprivileged user, MD5 and all
    import pwd

    for node in (active, standby):
        pid = lab.status(node)["services"]["bgp"]["pid"]
        status = Path(f"/proc/{pid}/status").read_text().splitlines()
        uid = int(next(line.split()[1] for line in status if line.startswith("Uid:")))
        assert uid == pwd.getpwnam("escbgp").pw_uid, f"{node}: exabgp runs as uid {uid}"
    verbose = lab.escadm(active, "status", "-v").stdout
    assert f"anycast:     {PREFIX} announced" in verbose and "established" in verbose
    health = lab.escadm(standby, "health").stdout
    assert f"{PREFIX} withdrawn" in health and "ESC HEALTH PASSED" in health
    assert "ESC HEALTH PASSED" in lab.escadm(active, "health").stdout
    # The client reaches the pair through the router, at the anycast address.
    assert lab.post("via-anycast") == 201
    assert "via-anycast" in lab.names_in_db(standby)


def test_killing_the_active_moves_the_route_and_loses_no_write(lab):
    old = lab.active()
    new = lab.other(old)
    wait_route(labmod.node_ip(old))
    writer = lab.start_writer("bgpkill")
    lab.wait_acks(writer)
    killed_at = labmod.kill(old).at
    lab.wait_roles({new: "ACTIVE"}, timeout=30)
    wait_route(labmod.node_ip(new))
    lab.wait_acks(writer, n=1)
    time.sleep(1)
    record = writer.stop()
    out = analyse(record, lab.names_via_vip(), killed_at, new_node=new)
    assert out.lost == [], f"acknowledged writes lost: {out.lost[:10]}"
    assert out.kill_to_first_ack is not None and out.nodes[-1] == new
    # The old node comes back as the standby and does not announce.
    labmod.start(old)
    lab.wait_roles({old: "STANDBY", new: "ACTIVE"}, timeout=60)
    wait_status(lab, old, established)
    wait_route(labmod.node_ip(new))
    assert lab.names_in_db(old) >= {a[0] for a in record["acked"]}


def test_a_power_cut_that_sends_nothing_still_moves_the_route(lab):
    """Link first: no FIN reaches the router, the dead active's route stays until its hold
    timer expires; the new active's lower MED (newer timeline) wins before that."""
    old = lab.active()
    new = lab.other(old)
    wait_route(labmod.node_ip(old))
    writer = lab.start_writer("bgpcut")
    lab.wait_acks(writer)
    killed_at = labmod.kill(old, link_first=True).at
    lab.wait_roles({new: "ACTIVE"}, timeout=30)
    wait_route(labmod.node_ip(new))  # the old route is gone too, by the hold timer (3 s)
    lab.wait_acks(writer, n=1)
    record = writer.stop()
    out = analyse(record, lab.names_via_vip(), killed_at, new_node=new)
    assert out.lost == [], f"acknowledged writes lost: {out.lost[:10]}"
    assert out.nodes[-1] == new


def test_switchover_moves_the_route(lab):
    old = lab.active()
    new = lab.other(old)
    wait_route(labmod.node_ip(old))
    wait_status(lab, new, established)
    writer = lab.start_writer("bgpswo")
    lab.wait_acks(writer)
    res = lab.escadm(old, "ha", "switchover")
    assert "STANDBY" in res.stdout
    lab.wait_roles({old: "STANDBY", new: "ACTIVE"}, timeout=30)
    wait_route(labmod.node_ip(new))
    lab.wait_acks(writer, n=1)
    record = writer.stop()
    out = analyse(record, lab.names_via_vip())
    assert out.lost == [], f"acknowledged writes lost: {out.lost[:10]}"
    assert out.nodes[-1] == new
    assert not lab.status(old)["bgp"]["announced"]


def test_an_md5_mismatch_is_reported_clearly(lab):
    standby = lab.other(lab.active())
    wait_status(lab, standby, established)
    ip = labmod.node_ip(standby)
    args = ["bgp", "set", "--local_ip", ip, "--anycast_ip", labmod.ANYCAST,
            "--remote_ip", labmod.router_ip(standby), "--local_as", str(labmod.BGP_AS[standby]),
            "--remote_as", str(router.ROUTER_AS), "--local_router_id", ip]
    lab.escadm(standby, *args, "--md5", "a-wrong-key")
    lab.escadm(standby, "reload")
    st = wait_status(lab, standby, lambda s: not established(s) and (s["bgp"]["session_for_s"] or 0) > 3)
    assert st["bgp"]["md5"]
    verbose = lab.escadm(standby, "status", "-v").stdout
    assert "not established" in verbose and "check the MD5 key" in verbose, verbose
    health = lab.escadm(standby, "health", check=False)
    assert health.returncode == 1 and "ESC HEALTH FAILED" in health.stdout
    assert "not established" in health.stdout
    name = "E1" if standby == "n1" else "E2"
    assert router.protocols(labmod.lab_dir())[name] != "Established"
    # The right key again: the session comes back.
    lab.escadm(standby, *args, "--md5", labmod.BGP_MD5)
    lab.escadm(standby, "reload")
    wait_status(lab, standby, established)
    assert "ESC HEALTH PASSED" in lab.escadm(standby, "health").stdout
