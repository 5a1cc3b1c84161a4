"""The operator's view on a real pair: health output with the original's lines, health.sh,
Prometheus metrics through the VIP and on the standby, and the event history of a
failover and a switchover in the replicated database, read on either node."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from esc.health import ORDER
from esc.lab import lab as labmod
from esc.lab import net

pytestmark = pytest.mark.lab


def health_lines(lab, node: str) -> list[str]:  # type: ignore[no-untyped-def]
    res = lab.escadm(node, "health", check=False)
    return res.stdout.strip().splitlines()


def service_order(lines: list[str]) -> list[str]:
    return [line.split()[0] for line in lines[1:] if line.split()[0] in ORDER]


def metrics_text(lab, host: str) -> str:  # type: ignore[no-untyped-def]
    code = f"import httpx;r=httpx.get('http://{host}:8060/metrics',timeout=10);r.raise_for_status();print(r.text)"
    return lab.client_python(code)


def metric(text: str, name: str, **labels: str) -> float | None:
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    pattern = re.escape(name) + (r"\{" + re.escape(want) + r"\}" if want else "") + r" (\S+)$"
    for line in text.splitlines():
        m = re.match(pattern, line)
        if m:
            return float(m[1])
    return None


def history(lab, node: str, *args: str) -> list[dict]:  # type: ignore[no-untyped-def]
    out = json.loads(lab.escadm(node, "ha", "history", "--json", *args).stdout)
    assert out["database"] == "read", out["database"]
    return out["events"]


def wait_for(what: str, check, timeout: float = 20):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        assert time.monotonic() < deadline, f"{what}: not within {timeout}s"
        time.sleep(0.3)


def test_health_lines_and_health_sh_as_the_original(lab) -> None:  # type: ignore[no-untyped-def]
    active = lab.active()
    standby = lab.other(active)
    # the monitor starts a moment after the controller serves; its report follows
    lines = wait_for(
        "the active's health",
        lambda: (lambda ls: ls if ls[-1] == "ESC HEALTH PASSED" else None)(health_lines(lab, active)),
    )
    assert lines[0] == "===== ESC HA (ACTIVE) with DRBD ====="
    assert service_order(lines) == [s for s in ORDER if s in service_order(lines)]
    for name in ("vimmanager", "monitor", "mona", "etsi", "pgsql", "keepalived", "filesystem", "escmanager"):
        assert any(re.fullmatch(rf"{name} \(pgid \d+\) is running", line) for line in lines), (name, lines)
    assert re.search(r"^drbd \(pgid \d+\) is active$", "\n".join(lines), re.M)
    lines = health_lines(lab, standby)
    assert lines[0] == "===== ESC HA (Standby) with DRBD =====" and lines[-1] == "ESC HEALTH PASSED"
    for line in (
        "vimmanager is stopped",
        "monitor is stopped",
        "mona is stopped",
        "pgsql is stopped",
        "etsi is disabled at startup",
        "escmanager is stopped",
    ):
        assert line in lines, (line, lines)
    # health.sh, as operators of the original type it, installed beside escadm
    script = Path(sys.executable).parent / "health.sh"
    res = net.netns_exec(
        standby, str(script), "--root", str(labmod.node_root(standby)), check=False, timeout=60
    )
    assert res.returncode == 0 and res.stdout.strip().splitlines() == lines


def test_metrics_through_the_vip_and_on_the_standby(lab) -> None:  # type: ignore[no-untyped-def]
    active = lab.active()
    standby = lab.other(active)
    assert lab.post("metered") == 201
    text = metrics_text(lab, lab.vip)
    assert metric(text, "esc_role", role="ACTIVE") == 1
    assert metric(text, "esc_node_info", node=active) == 1
    assert metric(text, "esc_replication_synchronous") == 1
    assert metric(text, "esc_vip_present") == 1
    assert metric(text, "esc_peer_reachable", address=labmod.node_ip(standby)) == 1
    # the controller's own, from its multiprocess directory
    assert (
        metric(
            text,
            "esc_api_request_duration_seconds_count",
            method="POST",
            route="/v0/deployments",
            service="escmanager",
            status="201",
        )
        or 0
    ) >= 1
    assert (metric(text, "esc_commit_duration_seconds_count") or 0) >= 1
    assert metric(text, "esc_transactions_pending") is not None
    text = metrics_text(lab, labmod.node_ip(standby))
    assert metric(text, "esc_role", role="STANDBY") == 1 and metric(text, "esc_replication_streaming") == 1
    assert metric(text, "esc_service_up", service="escmanager") == 0  # parked
    # behind HTTP Basic once asked
    lab.escadm(standby, "metrics", "set", "--user_pass", "prom:scrape-me")
    lab.escadm(standby, "reload")
    code = (
        f"import httpx;u='http://{labmod.node_ip(standby)}:8060/metrics';"
        "print(httpx.get(u).status_code, httpx.get(u, auth=('prom','scrape-me')).status_code)"
    )
    assert lab.client_python(code).split() == ["401", "200"]
    lab.escadm(standby, "metrics", "set", "--open")
    lab.escadm(standby, "reload")


def test_the_history_of_a_failover_and_a_switchover_on_both_nodes(lab) -> None:  # type: ignore[no-untyped-def]
    old = lab.active()
    new = lab.other(old)
    since = time.time()
    labmod.kill(old)
    lab.wait_roles({new: "ACTIVE"}, timeout=30)
    events = wait_for(
        "the failover in ha_events",
        lambda: [
            e
            for e in history(lab, new, "--since", str(int(time.time() - since) + 5) + "s")
            if e["kind"] == "failover"
        ],
    )
    ev = events[-1]
    assert ev["node"] == new and ev["role"] == "ACTIVE" and ev["reason"]
    assert ev["peer_role"] is None and 0 < ev["detail"]["active_lost_s"] < 10
    text = metrics_text(lab, lab.vip)
    assert (metric(text, "esc_ha_events_total", kind="failover") or 0) >= 1
    assert metric(text, "esc_last_failover_seconds") == ev["detail"]["active_lost_s"]
    # the old active comes back: what it recorded (its stop was a power cut: nothing;
    # its start and its rejoin) is copied into the table, which it reads as a replica
    labmod.start(old)
    lab.wait_roles({old: "STANDBY", new: "ACTIVE"}, timeout=60)
    rejoin = wait_for(
        "the old active's rejoin in ha_events",
        lambda: [e for e in history(lab, new, "--node", old, "--kind", "rejoin") if e["at"] > since],
    )
    assert rejoin[-1]["detail"]["ok"] and rejoin[-1]["detail"]["how"]
    on_standby = wait_for(
        "the history on the standby's replica",
        lambda: [e for e in history(lab, old, "--kind", "failover") if e["at"] > since],
    )
    assert on_standby[-1]["node"] == new
    # a switchover asked on the standby: both sides say who asked
    lab.escadm(old, "ha", "switchover")
    lab.wait_roles({old: "ACTIVE", new: "STANDBY"}, timeout=30)
    swo = wait_for(
        "both sides of the switchover",
        lambda: (lambda es: es if {e["node"] for e in es} == {old, new} else None)(
            [e for e in history(lab, old, "--kind", "switchover") if e["at"] > since]
        ),
    )
    gave = next(e for e in swo if e["node"] == new)
    assert gave["by"] == f"escadm on {old}" and gave["role_from"] == "ACTIVE"
    text = lab.escadm(old, "ha", "history", "--since", "10m").stdout
    assert "switchover" in text and "failover" in text and f"by escadm on {old}" in text
    bad = lab.escadm(old, "ha", "history", "--since", "whenever", check=False)
    assert bad.returncode == 2 and "neither a time" in bad.stderr
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "esc.cli.escadm",
            "--root",
            str(labmod.node_root(new)),
            "ha",
            "history",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0 and json.loads(res.stdout)["events"]


def snmp_role(lab, node: str, root: str) -> list[str]:  # type: ignore[no-untyped-def]
    """escStatusRole and escStatusHealth of ``node``, by Debian's snmpget from the client."""
    from snmp_receiver import AUTH_KEY, PRIV_KEY, USER

    res = subprocess.run(
        ["ip", "netns", "exec", net.ns(labmod.CLIENT), "snmpget", "-v3", "-l", "authPriv", "-u", USER,
         "-a", "SHA-256", "-A", AUTH_KEY, "-x", "AES", "-X", PRIV_KEY, "-On", "-Oqv", "-t", "1", "-r", "2",
         labmod.node_ip(node), f"{root}.3.2.0", f"{root}.3.3.0"], capture_output=True, text=True, timeout=30)
    return [v.strip('"') for v in res.stdout.split()] if res.returncode == 0 else [res.stderr.strip()]


def test_snmp_traps_from_both_nodes_through_a_failover(lab) -> None:  # type: ignore[no-untyped-def]
    """Both nodes send v3 traps (SHA-256 / AES) to Debian's snmptrapd in the client
    namespace: a test trap from each, then on a power cut of the active the survivor
    says it lost its peer and took over, and later that its peer is back. Each answers
    GETs of its role and health on UDP 161."""
    from esc.cli.escadm import engine_id_for
    from esc.snmp import mib
    from snmp_receiver import AUTH_KEY, PRIV_KEY, USER, TrapReceiver

    root = mib.DEFAULT_ROOT
    client_ip = labmod.node_ip(labmod.CLIENT)
    receiver = TrapReceiver(
        lab.tmp / "trapd",
        client_ip,
        11162,
        [engine_id_for(n) for n in labmod.NODES],
        prefix=["ip", "netns", "exec", net.ns(labmod.CLIENT)],
    )
    try:
        for node in labmod.NODES:
            lab.escadm(
                node,
                "snmp",
                "set",
                "--target",
                f"{client_ip}:11162",
                "--v3_user",
                USER,
                "--auth_key",
                AUTH_KEY,
                "--priv_key",
                PRIV_KEY,
                "--agent_port",
                "161",
            )
            lab.escadm(node, "reload")
        for node in labmod.NODES:
            wait_for(
                f"{node}'s trap sender",
                lambda node=node: any(
                    re.fullmatch(r"snmp \(pgid \d+\) is running", line) for line in health_lines(lab, node)
                ),
            )
            assert "escTest sent" in lab.escadm(node, "snmp", "test").stdout
            receiver.wait(mib.notification_oid(root, "escTest"), **{mib.object_oid(root, "node"): node})
        old = lab.active()
        new = lab.other(old)
        # GETs on UDP 161 (the unprivileged sender keeps only the right to bind it)
        assert snmp_role(lab, old, root) == ["ACTIVE", "1"] and snmp_role(lab, new, root) == ["STANDBY", "1"]
        labmod.kill(old)
        lab.wait_roles({new: "ACTIVE"}, timeout=30)
        wait_for("the survivor's role by SNMP", lambda: snmp_role(lab, new, root) == ["ACTIVE", "1"])
        node_oid = mib.object_oid(root, "node")
        lost = receiver.wait(mib.notification_oid(root, "escPeerLost"), **{node_oid: new})
        assert lost[mib.object_oid(root, "peer")] == labmod.node_ip(old)
        took = receiver.wait(mib.notification_oid(root, "escFailover"), **{node_oid: new})
        assert (
            took[mib.object_oid(root, "role")] == "ACTIVE"
            and float(took[mib.object_oid(root, "seconds")]) > 0
        )
        receiver.wait(mib.notification_oid(root, "escRoleChange"), **{node_oid: new})
        labmod.start(old)
        lab.wait_roles({old: "STANDBY", new: "ACTIVE"}, timeout=60)
        receiver.wait(mib.notification_oid(root, "escPeerFound"), timeout=20, **{node_oid: new})
    finally:
        receiver.stop()
        for node in labmod.NODES:
            lab.escadm(node, "snmp", "set", "--disable", check=False)
            lab.escadm(node, "reload", check=False)
