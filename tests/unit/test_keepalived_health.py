"""keepalived config rendering and notify parsing, health texts, password hashing."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import pytest

from esc import health
from esc.config import ConfigError, HaConfig, NodeConfig, NodePaths, Timing, Vip
from esc.ha import keepalived
from esc.render import render_all
from esc.roles import Vrrp
from esc.secrets import derive, generate, hash_password, split_user_pass, verify_password


def node(tmp_path: Path, nodes: tuple[str, str] = ("10.0.0.1", "10.0.0.2"), vip: str = "10.0.0.100/24:eth1",
         vif: str = "eth0", self_index: int = 0, vri: int = 42, timing: Timing | None = None,
         ) -> tuple[NodeConfig, NodePaths]:
    ha = HaConfig(node_list=list(nodes), vip=Vip.parse(vip, vif), vif=vif, vri=vri, self_index=self_index)
    cfg = NodeConfig(name="ctl-1", ha=ha, timing=timing or Timing())
    return cfg, NodePaths(tmp_path / "root")


def block(text: str, name: str) -> str:
    """The body of ``name { ... }`` (no nested braces inside the blocks we read)."""
    m = re.search(rf"^\s*{re.escape(name)} \{{\n(.*?)^\s*\}}", text, re.S | re.M)
    assert m, f"no block {name!r} in\n{text}"
    return m.group(1)


# ------------------------------------------------------------------ render


def test_render_instance(tmp_path: Path) -> None:
    cfg, paths = node(tmp_path)
    text = keepalived.render(cfg, paths)
    assert text.count("{") == text.count("}")
    inst = block(text, "vrrp_instance ESC")
    lines = [ln.strip() for ln in inst.splitlines()]
    for expected in ("state BACKUP", "nopreempt", "interface eth0", "virtual_router_id 42",
                     "priority 101", "version 3", "advert_int 0.2", "unicast_src_ip 10.0.0.1"):
        assert expected in lines, expected
    assert block(text, "unicast_peer").split() == ["10.0.0.2"]
    assert block(text, "virtual_ipaddress").strip() == "10.0.0.100/24 dev eth1"
    assert "virtual_ipaddress_excluded" not in text
    assert block(text, "track_file").split() == ["esc_gate", "esc_priority"]
    track = block(text, "track_file esc_gate")
    assert f'file "{paths.vrrp_gate}"' in track and "weight 0" in track
    prio = block(text, "track_file esc_priority")
    assert f'file "{paths.vrrp_priority}"' in prio and "weight 1" in prio
    assert f"notify_fifo {paths.vrrp_fifo}" in text
    assert "vrrp_garp_master_refresh 1" in text  # clients find the MASTER again within 1 s
    assert "router_id esc_ctl-1" in text
    assert str(paths.config) in text.splitlines()[0]


def test_render_second_node(tmp_path: Path) -> None:
    cfg, paths = node(tmp_path, self_index=1, vri=7, timing=Timing(advert_int=1.0, promote_window=6.0,
                                                                   alone_after=8.0))
    text = keepalived.render(cfg, paths)
    assert re.search(r"^\s*priority 100$", text, re.M)
    assert re.search(r"^\s*unicast_src_ip 10\.0\.0\.2$", text, re.M)
    assert block(text, "unicast_peer").split() == ["10.0.0.1"]
    assert re.search(r"^\s*virtual_router_id 7$", text, re.M)
    assert re.search(r"^\s*advert_int 1$", text, re.M)


def test_render_ipv6_everywhere(tmp_path: Path) -> None:
    cfg, paths = node(tmp_path, nodes=("2001:db8::1", "2001:db8::2"), vip="[2001:db8::100/64]:eth0")
    text = keepalived.render(cfg, paths)
    assert block(text, "virtual_ipaddress").strip() == "2001:db8::100/64 dev eth0"
    assert "virtual_ipaddress_excluded" not in text


def _real_interface() -> str | None:
    try:
        names = sorted(os.listdir("/sys/class/net"))
    except OSError:
        return None
    return next((n for n in names if n != "lo"), None)


@pytest.fixture
def keepalived_t() -> str:
    if not os.access(keepalived.KEEPALIVED, os.X_OK):
        pytest.skip(f"{keepalived.KEEPALIVED} not installed")
    iface = _real_interface()
    if iface is None:
        pytest.skip("no network interface other than lo")
    return iface


def _check(conf: Path) -> str | None:
    err = keepalived.check_config(conf)
    if err is not None and "permission" in err.lower():
        pytest.skip(f"keepalived -t cannot run here: {err}")
    return err


def test_render_ipv6_vip_for_ipv4_nodes(tmp_path: Path) -> None:
    """The original's three-network example: VRRP on the IPv4 network (eth1), the VIP on the
    IPv6 northbound one (eth0). The instance is IPv6 on eth1, by multicast, no unicast peers."""
    cfg, paths = node(tmp_path, nodes=("192.168.0.239", "192.168.0.243"), vif="eth1",
                      vip="[2001:cc0:2020::fc/48]:eth0")
    text = keepalived.render(cfg, paths)
    lines = [ln.strip() for ln in block(text, "vrrp_instance ESC").splitlines()]
    assert "native_ipv6" in lines and "interface eth1" in lines
    assert "unicast_peer" not in text and "unicast_src_ip" not in text
    assert block(text, "virtual_ipaddress").strip() == "2001:cc0:2020::fc/48 dev eth0"


@pytest.mark.parametrize(("nodes", "vip"), [
    (("10.0.0.1", "10.0.0.2"), "10.0.0.100/24"),
    (("2001:db8::1", "2001:db8::2"), "[2001:db8::100/64]"),
    (("10.0.0.1", "10.0.0.2"), "[2001:db8::100/64]"),
])
def test_keepalived_accepts_rendered_config(tmp_path: Path, keepalived_t: str, nodes: tuple[str, str],
                                            vip: str) -> None:
    cfg, paths = node(tmp_path, nodes=nodes, vif=keepalived_t, vip=vip)
    conf = tmp_path / "keepalived.conf"
    conf.write_text(keepalived.render(cfg, paths))
    assert _check(conf) is None


def test_an_ipv4_vip_on_ipv6_nodes_is_refused(tmp_path: Path) -> None:
    """The original's note: keepalived does not support a single IPv4 VIP on an IPv6 VRRP
    instance (an IPv6 instance carries only IPv6 VIPs, and an IPv4 one needs IPv4 peers)."""
    with pytest.raises(ValueError, match="single IPv4 VIP on an IPv6 VRRP instance"):
        node(tmp_path, nodes=("2001:db8::1", "2001:db8::2"), vip="10.0.0.100/24")


def test_render_all_refused_config_keeps_the_old_file(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    cfg, paths = node(tmp_path)
    paths.etc.mkdir(parents=True)
    paths.keepalived_conf.write_text("# the working config\n")
    checked: list[str] = []

    def refuse(path: Path) -> str:
        checked.append(path.read_text())
        return "Line 3: unknown keyword"

    monkeypatch.setattr(keepalived, "check_config", refuse)
    with pytest.raises(ConfigError, match="^the generated keepalived config is refused by keepalived: "
                                          "Line 3: unknown keyword$"):
        render_all(paths, cfg)
    assert checked == [keepalived.render(cfg, paths)]  # the new text was checked, not the old
    assert paths.keepalived_conf.read_text() == "# the working config\n"
    assert sorted(p.name for p in paths.etc.iterdir()) == [paths.keepalived_conf.name]


def test_render_all_accepted_config_replaces_the_old_file(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    cfg, paths = node(tmp_path)
    paths.etc.mkdir(parents=True)
    paths.keepalived_conf.write_text("# the old config\n")
    monkeypatch.setattr(keepalived, "check_config", lambda path: None)
    assert render_all(paths, cfg) == [str(paths.keepalived_conf)]
    assert paths.keepalived_conf.read_text() == keepalived.render(cfg, paths)
    assert sorted(p.name for p in paths.etc.iterdir()) == [paths.keepalived_conf.name]


def test_keepalived_rejects_a_broken_config(tmp_path: Path, keepalived_t: str) -> None:
    cfg, paths = node(tmp_path, vif=keepalived_t)
    conf = tmp_path / "keepalived.conf"
    conf.write_text(keepalived.render(cfg, paths).replace("nopreempt", "no_such_keyword {"))
    err = keepalived.check_config(conf)
    assert err, "keepalived -t should report the error"


# ------------------------------------------------------------------ notify / gate / fifo


@pytest.mark.parametrize(("line", "state"), [
    ('INSTANCE "ESC" MASTER 150\n', Vrrp.MASTER),
    ('INSTANCE "ESC" BACKUP 100', Vrrp.BACKUP),
    ('INSTANCE "ESC" FAULT 0', Vrrp.FAULT),
    ('INSTANCE "ESC" STOP 0', Vrrp.UNKNOWN),
    ("INSTANCE ESC MASTER 150", Vrrp.MASTER),
    ('  INSTANCE   "ESC"   BACKUP  ', Vrrp.BACKUP),
    ('INSTANCE "ESC" DELETED 0', None),
    ('INSTANCE "OTHER" MASTER 150', None),
    ('GROUP "ESC" MASTER 150', None),
    ('INSTANCE "ESC"', None),
    ("", None),
    ("garbage", None),
])
def test_parse_notify(line: str, state: Vrrp | None) -> None:
    assert keepalived.parse_notify(line) == state


def test_write_gate(tmp_path: Path) -> None:
    paths = NodePaths(tmp_path)
    paths.run.mkdir(parents=True)
    keepalived.write_gate(paths, True)
    assert paths.vrrp_gate.read_bytes() == b"    0\n"
    ino = paths.vrrp_gate.stat().st_ino
    keepalived.write_gate(paths, False)
    assert paths.vrrp_gate.read_bytes() == b"    1\n"
    assert paths.vrrp_gate.stat().st_ino == ino  # in place: keepalived's inotify watch stays valid
    keepalived.write_gate(paths, False)
    assert paths.vrrp_gate.read_bytes() == b"    1\n"


def test_ensure_fifo_replaces_a_regular_file(tmp_path: Path) -> None:
    fifo = tmp_path / "vrrp.fifo"
    fifo.write_text("stale")
    keepalived.ensure_fifo(fifo)
    assert stat.S_ISFIFO(fifo.stat().st_mode)
    keepalived.ensure_fifo(fifo)  # idempotent
    assert stat.S_ISFIFO(fifo.stat().st_mode)


# ------------------------------------------------------------------ health


def svc(state: str = "running", pid: int | None = 100, detail: str = "") -> dict:
    return {"state": state, "pid": pid, "detail": detail, "restarts": 0}


def status(role: str, db_state: str, serving: bool, streaming: bool = False, ha: bool = True,
           reason: str = "") -> dict:
    return {
        "node": "ctl-1", "role": role, "reason": reason, "ha": ha, "vrrp": "MASTER",
        "db": {"state": db_state, "timeline": 2, "lsn": 1234, "streaming": streaming,
               "peer_streaming": serving, "peer_complete": serving, "sync": True},
        "services": {
            "keepalived": svc(pid=11) if ha else {"state": "disabled", "pid": None},
            "pgsql": svc(pid=22, detail=db_state),
            "escmanager": svc(pid=33, detail="serving" if serving else "parked"),
            "etsi": svc(pid=44, detail="serving") if serving else svc(pid=45, detail="parked"),
            "filesystem": {"state": "running", "pid": 0},
            "vimmanager": svc("running" if serving else "stopped", pid=55),
            "monitor": svc("running", pid=33) if serving else svc("stopped", None),
            "mona": svc("running", pid=33) if serving else svc("stopped", None),
        },
    }


def test_health_active_passes() -> None:
    text, ok = health.report(status("ACTIVE", "primary", serving=True))
    assert ok
    # the original's lines and order, less the services not built yet (snmp, portal, confd)
    assert text.splitlines() == [
        "===== ESC HA (ACTIVE) with DRBD =====",
        "vimmanager (pgid 55) is running",
        "monitor (pgid 33) is running",
        "mona (pgid 33) is running",
        "drbd (pgid 22) is active",
        "etsi (pgid 44) is running",
        "pgsql (pgid 22) is running",
        "keepalived (pgid 11) is running",
        "filesystem (pgid 0) is running",
        "escmanager (pgid 33) is running",
        "=====",
        "ESC HEALTH PASSED",
    ]


def test_health_standby_passes() -> None:
    text, ok = health.report(status("STANDBY", "standby", serving=False, streaming=True))
    assert ok
    assert text.splitlines() == [
        "===== ESC HA (Standby) with DRBD =====",
        "vimmanager is stopped",
        "monitor is stopped",
        "mona is stopped",
        "drbd (pgid 22) is standby",
        "etsi is disabled at startup",
        "pgsql is stopped",  # the original's wording: no primary here
        "keepalived (pgid 11) is running",
        "filesystem (pgid 0) is running",
        "escmanager is stopped",
        "=====",
        "ESC HEALTH PASSED",
    ]


def test_health_standby_not_streaming_fails() -> None:
    text, ok = health.report(status("STANDBY", "standby", serving=False, streaming=False))
    assert not ok and text.endswith("ESC HEALTH FAILED")


def test_health_switching_to_active_fails() -> None:
    text, ok = health.report(status("SWITCHING_TO_ACTIVE", "standby", serving=False, streaming=False))
    assert not ok
    assert text.splitlines()[0] == "===== ESC HA (SWITCHING_TO_ACTIVE) with DRBD ====="
    assert text.splitlines()[-1] == "ESC HEALTH FAILED"


@pytest.mark.parametrize("breakage", ["keepalived", "escmanager_parked", "db_standby", "filesystem",
                                      "monitor", "mona", "vimmanager", "etsi"])
def test_health_active_failures(breakage: str) -> None:
    st = status("ACTIVE", "primary", serving=True)
    if breakage == "keepalived":
        st["services"]["keepalived"] = svc("stopped", None)
    elif breakage == "escmanager_parked":
        st["services"]["escmanager"]["detail"] = "parked"
    elif breakage == "db_standby":
        st["db"]["state"] = "standby"
    elif breakage in ("monitor", "mona", "vimmanager", "etsi"):
        st["services"][breakage] = svc("stopped", None)
    else:
        st["services"]["filesystem"]["state"] = "stopped"
    text, ok = health.report(st)
    assert not ok and text.endswith("ESC HEALTH FAILED")


def test_health_standby_serving_is_a_failure() -> None:
    st = status("STANDBY", "standby", serving=False, streaming=True)
    st["services"]["escmanager"]["detail"] = "serving"
    assert not health.report(st)[1]


@pytest.mark.parametrize("part", ["monitor", "mona", "vimmanager"])
def test_a_standby_running_a_part_of_the_controller_fails(part: str) -> None:
    """Two monitors would recover every VM twice: a standby's are stopped, or it is unhealthy."""
    st = status("STANDBY", "standby", serving=False, streaming=True)
    st["services"][part] = svc("running", pid=77)
    text, ok = health.report(st)
    assert not ok and f"{part} (pgid 77) is running" in text


def test_without_a_vim_its_lines_say_disabled_at_startup() -> None:
    st = status("ACTIVE", "primary", serving=True)
    st["services"]["vimmanager"] = st["services"]["monitor"] = {"state": "disabled", "pid": None}
    text, ok = health.report(st)
    assert ok and "vimmanager is disabled at startup" in text and "monitor is disabled at startup" in text


def test_health_standalone() -> None:
    text, ok = health.report(status("STANDALONE", "primary", serving=True, ha=False))
    assert ok
    lines = text.splitlines()
    assert lines[0] == "===== ESC (STANDALONE) ====="
    assert not any(ln.startswith(("keepalived", "drbd")) for ln in lines)


def test_health_of_nothing() -> None:
    text, ok = health.report({})
    assert not ok and "ESC HA (STOPPED)" in text and text.endswith("ESC HEALTH FAILED")


@pytest.mark.parametrize(("st", "line"), [
    ({"role": "ACTIVE", "reason": "serving; commits wait"}, "ACTIVE"),
    ({"role": "STANDBY", "reason": "following the active"}, "STANDBY"),
    ({"role": "SWITCHING_TO_ACTIVE", "reason": "peer never reached"},
     "SWITCHING_TO_ACTIVE (peer never reached)"),
    ({"role": "FAULT", "reason": ""}, "FAULT"),
    ({}, "STOPPED"),
])
def test_status_line(st: dict, line: str) -> None:
    assert health.status_line(st) == line


def test_status_details() -> None:
    st = status("STANDBY", "standby", serving=False, streaming=True, reason="following the active")
    st["vip"] = {"address": "10.0.0.100/24", "interface": "eth1", "present": False}
    st["peer"] = {"address": "10.0.0.2", "role": None, "last_seen_s": None}
    st["replication"] = {"lag_bytes": 0}
    st["transitions"] = [{"from": "STOPPED", "to": "STANDBY", "reason": "streaming"}]
    text = health.status_details(st)
    assert "vip:         10.0.0.100/24 on eth1 (not here)" in text
    assert "peer:        10.0.0.2 unreachable" in text
    assert "replication: streaming from the active" in text
    assert "transition:  STOPPED -> STANDBY: streaming" in text
    st["peer"]["error"] = "the peer holds other pair material (...)"
    assert "10.0.0.2 unreachable (the peer holds other pair material" in health.status_details(st)


# ------------------------------------------------------------------ secrets


def test_password_hash_round_trip() -> None:
    h = hash_password("s3cret")
    scheme, salt, digest = h.split("$")
    assert scheme == "scrypt15" and salt and digest  # N=2^15
    assert "s3cret" not in h
    assert verify_password("s3cret", h)
    assert not verify_password("S3cret", h)
    assert not verify_password("", h)
    assert hash_password("s3cret") != h  # salted
    assert hash_password("pw", salt=b"0" * 16) == hash_password("pw", salt=b"0" * 16)


def test_hashes_made_by_earlier_installs_still_verify() -> None:
    import base64
    import hashlib

    salt = b"1" * 16
    old = hashlib.scrypt(b"s3cret", salt=salt, n=2**14, r=8, p=1, dklen=32)
    stored = f"scrypt${base64.b64encode(salt).decode()}${base64.b64encode(old).decode()}"
    assert verify_password("s3cret", stored) and not verify_password("S3cret", stored)


@pytest.mark.parametrize("stored", ["", "garbage", "scrypt$only-two", "md5$AAAA$BBBB", "a$b$c$d"])
def test_verify_rejects_malformed_hashes(stored: str) -> None:
    assert verify_password("pw", stored) is False


@pytest.mark.parametrize("stored", ["scrypt$abc$x", "scrypt$!!!!$AAAA", "scrypt$AAAA$@@@@",
                                    "scrypt$AAA=AAAA$AAAA", "scrypt$\u00e9t\u00e9$AAAA", "scrypt$$"])
def test_verify_rejects_bad_base64(stored: str) -> None:
    """A corrupt stored hash (salt or digest not base64) verifies nothing: False, never an
    exception (the manager's Basic-auth check answers 401, not 500)."""
    assert verify_password("pw", stored) is False


def test_verify_rejects_a_hash_with_a_corrupt_digest() -> None:
    scheme, salt, digest = hash_password("pw").split("$")
    assert verify_password("pw", f"{scheme}${salt}${digest}")
    assert not verify_password("pw", f"{scheme}${salt}${digest[:-4]}")
    assert not verify_password("pw", f"{scheme}${salt}$")


def test_derive_generate_split() -> None:
    assert derive("shared", "replication") == derive("shared", "replication")
    assert derive("shared", "replication") != derive("shared", "peer")
    assert derive("shared", "replication") != derive("other", "replication")
    a, b = generate(), generate()
    assert a != b and len(a) == 32 and re.fullmatch(r"[A-Za-z0-9_-]+", a)
    assert split_user_pass("admin:p:w", "--user_pass") == ("admin", "p:w")
    for bad in ("admin", ":pw", "admin:", ""):
        with pytest.raises(ValueError, match="--user_pass: expected USER:PASSWORD"):
            split_user_pass(bad, "--user_pass")


def test_track_files_are_never_empty_nor_renamed(tmp_path: Path) -> None:
    """keepalived re-reads a track file on every inotify event and reads an empty file
    as 0 (gate open): every write keeps the width, so no read sees it empty."""
    path = tmp_path / "track"
    keepalived.write_track(path, 1)
    ino = path.stat().st_ino
    for value in (60, 0, -253, 7, 1):
        keepalived.write_track(path, value)
        data = path.read_bytes()
        assert len(data) == 6 and int(data) == value and path.stat().st_ino == ino
    path.write_bytes(b"1\n")  # the old two-byte format is replaced whole
    keepalived.write_track(path, 20)
    assert path.read_bytes() == b"   20\n"


def test_health_confd_lines_as_the_original() -> None:
    """With a NETCONF user: ``confd (pgid N) is running`` on the active, before
    filesystem as the original orders it; ``confd is stopped`` on the standby (parked);
    a parked one on the active fails the health."""
    active = status("ACTIVE", "primary", serving=True)
    active["services"]["confd"] = {"state": "running", "pid": 66, "detail": "serving"}
    text, ok = health.report(active)
    lines = text.splitlines()
    assert ok and lines[lines.index("keepalived (pgid 11) is running") + 1] == "confd (pgid 66) is running"
    assert lines[lines.index("confd (pgid 66) is running") + 1] == "filesystem (pgid 0) is running"
    standby = status("STANDBY", "standby", serving=False, streaming=True)
    standby["services"]["confd"] = {"state": "running", "pid": 67, "detail": "parked"}
    text, ok = health.report(standby)
    assert ok and "confd is stopped" in text.splitlines()
    active["services"]["confd"]["detail"] = "parked"
    text, ok = health.report(active)
    assert not ok and "confd is stopped" in text.splitlines()
