"""Configuration parsing and install-time validation (no PostgreSQL, no real interfaces)."""

from __future__ import annotations

import pathlib
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from click.testing import CliRunner

import esc.install as inst
from esc import secrets as esc_secrets
from esc.cli.escadm import cli, normalise_argv
from esc.config import ConfigError, HaConfig, NodePaths, Timing, Vip, peer_app_name
from esc.install import HaArgs, build_ha, split_list

IFACES = {"eth0", "eth1"}
N1, N2, VIP = "10.0.0.1", "10.0.0.2", "10.0.0.100"


@pytest.fixture
def host(monkeypatch: pytest.MonkeyPatch) -> set[str]:
    """A fake host: interfaces eth0/eth1, local address N1 (mutable set)."""
    local = {N1}
    monkeypatch.setattr("esc.ha.vip.interface_exists", lambda name: name in IFACES)
    monkeypatch.setattr("esc.install.local_addresses", lambda: set(local))
    return local


def ha_args(**kw: object) -> HaArgs:
    base: dict[str, object] = {"ha_node_list": f"{N1} {N2}", "kad_vip": f"{VIP}/24", "kad_vif": "eth0"}
    base.update(kw)
    return HaArgs(**base)  # type: ignore[arg-type]


# ------------------------------------------------------------------ Vip.parse


@pytest.mark.parametrize(("text", "address", "plen", "iface"), [
    ("10.0.0.5", "10.0.0.5", 32, "dflt0"),
    ("10.0.0.5/24", "10.0.0.5", 24, "dflt0"),
    ("10.0.0.5:eth1", "10.0.0.5", 32, "eth1"),
    ("10.0.0.5/24:eth1", "10.0.0.5", 24, "eth1"),
    ("  10.0.0.5/24:eth1 ", "10.0.0.5", 24, "eth1"),
    ("[10.0.0.5/24]:eth1", "10.0.0.5", 24, "eth1"),
    ("[2001:db8::5/64]:eth0", "2001:db8::5", 64, "eth0"),
    ("[2001:db8::5]:eth0", "2001:db8::5", 128, "eth0"),
    ("[2001:db8::5/64]", "2001:db8::5", 64, "dflt0"),
    ("2001:db8::5/64", "2001:db8::5", 64, "dflt0"),
    ("2001:DB8:0:0::5", "2001:db8::5", 128, "dflt0"),
    ("10.0.0.5/24: eth1 ", "10.0.0.5", 24, "eth1"),  # the interface name is stripped
    ("[2001:db8::5/64]: eth0", "2001:db8::5", 64, "eth0"),
    ("10.0.0.5/024", "10.0.0.5", 24, "dflt0"),
])
def test_vip_parse(text: str, address: str, plen: int, iface: str) -> None:
    v = Vip.parse(text, "dflt0")
    assert (v.address, v.prefixlen, v.interface) == (address, plen, iface)
    assert v.cidr == f"{address}/{plen}"
    assert v.family == (6 if ":" in address else 4)


@pytest.mark.parametrize(("text", "default", "message"), [
    ("10.0.0.300", "eth0", "is not an IPv4 or IPv6 address"),
    ("not-an-ip", "eth0", "is not an IPv4 or IPv6 address"),
    ("", "eth0", "is not an IPv4 or IPv6 address"),
    ("10.0.0.5/33", "eth0", "bad prefix length '33'"),
    ("10.0.0.5/0", "eth0", "bad prefix length '0'"),
    ("10.0.0.5/-1", "eth0", "bad prefix length '-1'"),
    ("10.0.0.5/x", "eth0", "bad prefix length 'x'"),
    ("[2001:db8::5/129]:eth0", "eth0", "bad prefix length '129'"),
    ("10.0.0.5:", "eth0", "no interface"),
    ("[2001:db8::5/64]:", "eth0", "no interface"),
    ("10.0.0.5/24", "", "no interface"),
    ("[2001:db8::5]eth0", "eth0", "cannot parse"),
])
def test_vip_parse_rejects(text: str, default: str, message: str) -> None:
    with pytest.raises(ConfigError, match="^--kad_vip: ") as e:
        Vip.parse(text, default)
    assert message in str(e.value)


@pytest.mark.parametrize("text", ["10.0.0.5/", "10.0.0.5/\u00b2", "10.0.0.5/\u0662\u0664",
                                  "10.0.0.5/ 24", "10.0.0.5/+24", "10.0.0.5/0024", "[2001:db8::5/]:eth0"])
def test_vip_parse_rejects_malformed_prefix(text: str) -> None:
    """A '/' must be followed by an ASCII prefix length (no empty prefix taken for 'none',
    no Unicode digits, signs or spaces), always as a ConfigError."""
    with pytest.raises(ConfigError, match="^--kad_vip: bad prefix length"):
        Vip.parse(text, "eth0")


def test_vip_parse_default_interface_is_stripped() -> None:
    assert Vip.parse("10.0.0.5", " eth1 ").interface == "eth1"
    with pytest.raises(ConfigError, match="no interface"):
        Vip.parse("10.0.0.5", "   ")


# ------------------------------------------------------------------ Timing


def test_timing_defaults_are_safe() -> None:
    t = Timing()
    assert t.alone_after > t.promote_window + t.heartbeat_timeout
    assert t.promote_window > 4 * t.advert_int + t.heartbeat_timeout


@pytest.mark.parametrize("kw", [
    {"alone_after": 2.1},  # == promote_window + heartbeat_timeout: not strictly greater
    {"alone_after": 1.0},
    {"promote_window": 1.9},  # 1.9 + 0.4 > 2.2
    {"heartbeat_timeout": 2.0},
])
def test_timing_rejects_alone_before_promote_deadline(kw: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=r"alone_after \(.*\) must exceed promote_window") as e:
        Timing(**kw)
    assert "heartbeat_timeout" in str(e.value) and "commit alone" in str(e.value)


@pytest.mark.parametrize("kw", [
    {"promote_window": 1.2},  # == 4 * 0.2 + 0.4
    {"advert_int": 0.5, "alone_after": 10.0},  # master down 2.0 s
])
def test_timing_rejects_promote_window_shorter_than_failover(kw: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=r"promote_window \(.*\) must exceed VRRP master-down"):
        Timing(**kw)


@pytest.mark.parametrize("advert_int", [0.005, 41.0])
def test_timing_rejects_advert_int_out_of_range(advert_int: float) -> None:
    """The range is checked before the rules that derive from advert_int (a huge one
    would otherwise be reported as a promote_window problem)."""
    with pytest.raises(ValueError, match="advert_int must be between 0.01 and 40") as e:
        Timing(advert_int=advert_int)
    assert "promote_window" not in str(e.value)


def test_timing_accepts_a_safe_custom_set() -> None:
    t = Timing(advert_int=1.0, heartbeat_timeout=1.0, promote_window=6.0, alone_after=7.5)
    assert t.alone_after == 7.5


@pytest.mark.parametrize("name", ["advert_int", "heartbeat_interval", "heartbeat_timeout",
                                  "promote_window", "alone_after", "tick"])
@pytest.mark.parametrize("value", [0.0, -1.0])
def test_timing_durations_must_be_positive(name: str, value: float) -> None:
    """Every duration is positive (the safety rule assumes heartbeat_timeout bounds the
    delivery of a confirmation; a negative one would make it meaningless)."""
    with pytest.raises(ValueError, match=f"timing: {name} must be positive"):
        Timing(**{name: value})


@pytest.mark.parametrize("kw", [{"heartbeat_interval": 0.4}, {"heartbeat_interval": 5.0},
                                {"heartbeat_timeout": 0.1}])
def test_timing_heartbeat_interval_shorter_than_timeout(kw: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="heartbeat_interval must be shorter than heartbeat_timeout"):
        Timing(**kw)


@pytest.mark.parametrize("name", ["heartbeat_interval", "heartbeat_timeout", "promote_window",
                                  "alone_after", "tick"])
def test_timing_rejects_nan(name: str) -> None:
    with pytest.raises(ValueError):
        Timing(**{name: float("nan")})


# ------------------------------------------------------------------ HaConfig


def _ha(**kw: object) -> HaConfig:
    base: dict[str, object] = {"node_list": [N1, N2], "vip": Vip.parse(VIP, "eth0"), "vif": "eth0",
                               "self_index": 0}
    base.update(kw)
    return HaConfig(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize("vri", [0, 256, -1])
def test_haconfig_rejects_vri(vri: int) -> None:
    with pytest.raises(ValueError, match=f"--kad_vri must be between 1 and 255, not {vri}"):
        _ha(vri=vri)


@pytest.mark.parametrize("vri", [1, 50, 255])
def test_haconfig_accepts_vri(vri: int) -> None:
    assert _ha(vri=vri).vri == vri


@pytest.mark.parametrize(("nodes", "message"), [
    ([N1], "exactly two"),
    ([N1, N2, "10.0.0.3"], "exactly two"),
    ([N1, N1], "must differ"),
    (["2001:db8::1", "2001:DB8:0::1"], "must differ"),
])
def test_haconfig_rejects_node_lists(nodes: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _ha(node_list=nodes)


def test_haconfig_cinder_needs_volume() -> None:
    with pytest.raises(ValueError, match="drbd_on_cinder needs --db_volume_id"):
        _ha(mode="drbd_on_cinder")


def test_haconfig_names() -> None:
    ha = _ha(self_index=1)
    assert (ha.self_address, ha.peer_address) == (N2, N1)
    assert ha.self_name == "esc_10_0_0_2" and ha.peer_name == "esc_10_0_0_1"
    assert peer_app_name("2001:db8::1") == "esc_2001_db8__1"


# ------------------------------------------------------------------ split_list


@pytest.mark.parametrize(("value", "expected"), [
    ("a b", ["a", "b"]),
    ("a,b", ["a", "b"]),
    (["a", "b"], ["a", "b"]),
    (["a b"], ["a", "b"]),
    (("a", "b"), ["a", "b"]),
    ("  a ,  b\t", ["a", "b"]),
    ("a, b", ["a", "b"]),
    ("a,,b", ["a", "b"]),
    ("", []),
    ([], []),
    (None, []),
])
def test_split_list(value: object, expected: list[str]) -> None:
    assert split_list(value) == expected  # type: ignore[arg-type]


# ------------------------------------------------------------------ normalise_argv


@pytest.mark.parametrize(("argv", "expected"), [
    (["--ha_node_list", "10.0.0.1", "10.0.0.2", "--kad_vip", "X"],
     ["--ha_node_list", "10.0.0.1 10.0.0.2", "--kad_vip", "X"]),
    (["--ha_node_list=10.0.0.1", "10.0.0.2"], ["--ha_node_list", "10.0.0.1 10.0.0.2"]),
    (["--ha_node_list", "10.0.0.1 10.0.0.2"], ["--ha_node_list", "10.0.0.1 10.0.0.2"]),
    (["--ha_node_list", "fd00::1", "fd00::2"], ["--ha_node_list", "fd00::1 fd00::2"]),
    (["--ipaddr", "10.0.0.1"], ["--ipaddr", "10.0.0.1"]),
    (["--ipaddr=10.0.0.1"], ["--ipaddr", "10.0.0.1"]),
    (["install", "n1", "--ipaddr", "10.0.0.1", "fd00::1", "--force"],
     ["install", "n1", "--ipaddr", "10.0.0.1 fd00::1", "--force"]),
    (["--kad_vip=X", "--kad_vif", "eth0"], ["--kad_vip=X", "--kad_vif", "eth0"]),
    (["install", "n1"], ["install", "n1"]),
    ([], []),
])
def test_normalise_argv(argv: list[str], expected: list[str]) -> None:
    assert normalise_argv(argv) == expected


@pytest.mark.parametrize(("argv", "expected"), [
    (["install", "--ipaddr", N1, "node1"], ["install", "--ipaddr", N1, "node1"]),
    (["install", "--ha_node_list", N1, N2, "ctl-1", "--kad_vif", "eth0"],
     ["install", "--ha_node_list", f"{N1} {N2}", "ctl-1", "--kad_vif", "eth0"]),
    (["install", "--ha_node_list", "2001:db8::1", "[2001:db8::2]", "n2"],
     ["install", "--ha_node_list", "2001:db8::1 [2001:db8::2]", "n2"]),
    (["install", "--ipaddr", f"{N1},", N2, "n1"], ["install", "--ipaddr", f"{N1}, {N2}", "n1"]),
    (["install", "--ipaddr", "10.0.0.1/24", "n1"], ["install", "--ipaddr", "10.0.0.1/24", "n1"]),
])
def test_normalise_argv_only_joins_addresses(argv: list[str], expected: list[str]) -> None:
    """Only values that look like addresses continue a multi-value option: a node name
    placed after them stays the positional NAME."""
    assert normalise_argv(argv) == expected


def test_cli_install_name_after_ipaddr_is_the_name(tmp_path: Path, host: set[str]) -> None:
    root = tmp_path / "root"
    root.mkdir()
    argv = normalise_argv(["--root", str(root), "install", "--ipaddr", N1, "node1",
                           "--ha_node_list", N1, N2, "--kad_vip", VIP, "--user_pass", "admin:pw"])
    res = CliRunner().invoke(cli, argv)
    assert res.exit_code == 2, res.output
    assert "escadm: error: HA needs --kad_vif" in res.output  # parsed up to validation
    assert "Missing argument" not in res.output


@pytest.mark.parametrize("name", ["dc1", "db1", "cafe", "1"])
def test_normalise_argv_keeps_a_hex_looking_node_name(name: str) -> None:
    assert normalise_argv(["install", "--ipaddr", N1, name]) == ["install", "--ipaddr", N1, name]


def test_cli_install_argument_error_writes_nothing(tmp_path: Path, host: set[str]) -> None:
    root = tmp_path / "root"
    root.mkdir()
    argv = normalise_argv(["--root", str(root), "install", "n1", "--ha_node_list", N1, N2,
                           "--kad_vip", VIP, "--user_pass", "admin:pw"])
    res = CliRunner().invoke(cli, argv)
    assert res.exit_code == 2, res.output
    assert "escadm: error: HA needs --kad_vif" in res.output
    assert list(root.iterdir()) == []


# ------------------------------------------------------------------ build_ha


def test_build_ha_none_without_ha_options(host: set[str]) -> None:
    assert build_ha(HaArgs(), []) is None
    assert build_ha(HaArgs(ha_node_list=""), []) is None
    assert build_ha(HaArgs(ha_node_list="", ha_secret=""), []) is None


def test_build_ha_secret_alone_is_refused(host: set[str]) -> None:
    """--ha_secret without any HA option is an error, not a silent standalone install."""
    with pytest.raises(ConfigError, match="--ha_secret is for HA nodes: give --ha_node_list"):
        build_ha(HaArgs(ha_secret="s"), [])


def test_build_ha_ok(host: set[str]) -> None:
    ha = build_ha(ha_args(), [])
    assert ha is not None
    assert ha.node_list == [N1, N2] and ha.self_index == 0
    assert (ha.vip.address, ha.vip.prefixlen, ha.vip.interface) == (VIP, 24, "eth0")
    assert (ha.vif, ha.vri, ha.mode, ha.db_volume_id) == ("eth0", 50, "drbd", None)


def test_build_ha_self_from_ipaddr_and_interfaces(host: set[str]) -> None:
    ha = build_ha(ha_args(), [N2])
    assert ha is not None and ha.self_index == 1
    host.clear()
    host.add(N2)
    ha = build_ha(ha_args(ha_node_list=f"{N1},{N2}", kad_vri=7, kad_vip=f"{VIP}:eth1"), [])
    assert ha is not None and (ha.self_index, ha.vri, ha.vip.interface) == (1, 7, "eth1")


def test_build_ha_ipv6(host: set[str]) -> None:
    host.add("2001:db8::1")
    ha = build_ha(ha_args(ha_node_list="2001:DB8::1 2001:db8::2", kad_vip="[2001:db8::64/64]:eth1"), [])
    assert ha is not None
    assert ha.node_list == ["2001:db8::1", "2001:db8::2"] and ha.self_index == 0
    assert ha.vip.cidr == "2001:db8::64/64"
    assert not ha.vrrp_native_ipv6


def test_build_ha_ipv6_vip_for_ipv4_nodes(host: set[str]) -> None:
    """The original's IPv6 northbound network beside IPv4 VRRP: VRRP stays on --kad_vif
    (as IPv6, native_ipv6), the VIP on its own interface."""
    ha = build_ha(ha_args(kad_vip="[2001:db8::64/64]:eth1"), [N1])
    assert ha is not None and ha.vrrp_native_ipv6
    assert (ha.vip.cidr, ha.vip.interface, ha.vif) == ("2001:db8::64/64", "eth1", "eth0")


@pytest.mark.parametrize(("kw", "ipaddr", "message"), [
    ({"kad_vif": None}, [], "HA needs --kad_vif"),
    ({"kad_vif": ""}, [], "HA needs --kad_vif"),
    ({"ha_node_list": None, "kad_vip": None, "kad_vif": None, "kad_vri": 9}, [],
     "HA needs --ha_node_list, --kad_vip, --kad_vif"),
    ({"ha_node_list": N1}, [], "exactly two node addresses, got 1"),
    ({"ha_node_list": f"{N1} {N2} 10.0.0.3"}, [], "exactly two node addresses, got 3"),
    ({"ha_node_list": f"{N1} nohost"}, [], "--ha_node_list: 'nohost' is not an IPv4 or IPv6 address"),
    ({}, ["10.0.0.9"], "this node's own address (--ipaddr: 10.0.0.9) must be exactly one of them"),
    ({}, [N1, N2], "must be exactly one of them"),
    ({"ha_node_list": f"{N1} {N1}"}, [], "the two node addresses must differ"),
    ({"ha_node_list": "2001:db8::1 2001:DB8:0::1"}, [], "the two node addresses must differ"),
    ({"ha_node_list": f"{N1} 2001:db8::2"}, [], "both addresses must be of the same family"),
    ({"kad_vip": N2}, [], f"--kad_vip {N2} is a node's own address"),
    ({"kad_vip": f"{N1}/24:eth1"}, [], f"--kad_vip {N1} is a node's own address"),
    ({"kad_vif": "eth7"}, [], "--kad_vif: no interface named 'eth7' on this host"),
    ({"kad_vip": f"{VIP}:eth9"}, [], "--kad_vip: no interface named 'eth9' on this host"),
    ({"kad_vip": "10.0.0.300"}, [], "--kad_vip: '10.0.0.300' is not an IPv4 or IPv6 address"),
    ({"ha_mode": "drbd_on_cinder"}, [], "--ha_mode drbd_on_cinder needs --db_volume_id"),
    ({"ha_mode": "drbd_on_cinder", "db_volume_id": "/nonexistent/esc-vol"}, [],
     "--db_volume_id /nonexistent/esc-vol: not a block device nor a directory"),
    ({"ha_mode": "raid"}, [], "--ha_mode must be drbd or drbd_on_cinder, not 'raid'"),
    ({"kad_vri": 0}, [], "--kad_vri must be between 1 and 255, not 0"),
    ({"kad_vri": 256}, [], "--kad_vri must be between 1 and 255, not 256"),
    ({"ha_node_list": "2001:db8::1 2001:db8::2", "kad_vip": f"{VIP}/24"}, ["2001:db8::1"],
     f"--kad_vip {VIP}: keepalived does not support a single IPv4 VIP on an IPv6 VRRP instance"),
])
def test_build_ha_errors(host: set[str], kw: dict[str, object], ipaddr: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as e:
        build_ha(ha_args(**kw), ipaddr)
    assert message in str(e.value)
    assert "Value error" not in str(e.value)


def test_build_ha_own_address_from_interfaces_message(host: set[str]) -> None:
    host.clear()
    host.add("192.168.9.9")
    with pytest.raises(ConfigError, match=r"this host's interfaces: 192\.168\.9\.9\) must be exactly one"):
        build_ha(ha_args(), [])


def test_build_ha_cinder_directory(host: set[str], tmp_path: Path) -> None:
    ha = build_ha(ha_args(ha_mode="drbd_on_cinder", db_volume_id=str(tmp_path)), [])
    assert ha is not None and ha.mode == "drbd_on_cinder" and ha.db_volume_id == str(tmp_path)


# ------------------------------------------------------------------ pairing arguments


def test_a_weak_ha_secret_is_refused(host: set[str]) -> None:
    ha = build_ha(ha_args(), [])
    for weak in ("s3cret", "lab-shared-secret", "a" * 40, "0123456789abcdef0123456789"):
        with pytest.raises(ConfigError, match="--ha_secret is too weak"):
            inst.check_pairing_args(ha, HaArgs(ha_secret=weak), None)
    inst.check_pairing_args(ha, HaArgs(ha_secret=esc_secrets.generate()), None)  # 32 random chars


def test_a_malformed_join_token_is_refused(host: set[str]) -> None:
    ha = build_ha(ha_args(), [])
    for bad in ("x", "escjoin-1234-abc", "escjoin-0123abcd-short", "escjoin-0123abcd-" + "a" * 30 + "\n!"):
        with pytest.raises(ConfigError, match="--ha_join_token: not a join token"):
            inst.check_pairing_args(ha, HaArgs(ha_join_token=bad), None)
    inst.check_pairing_args(ha, HaArgs(ha_join_token="escjoin-0123abcd-" + "A" * 32), None)


def test_the_second_node_needs_something_to_pair_with(host: set[str]) -> None:
    """The first node makes the pair's material (and can issue join tokens); the second
    can only pair, so it needs a credential."""
    first = build_ha(ha_args(), [])
    inst.check_pairing_args(first, HaArgs(), None)
    host.clear()
    host.add(N2)
    second = build_ha(ha_args(), [])
    assert second is not None and second.self_index == 1
    with pytest.raises(ConfigError, match="pairs with the first: give --user_pass"):
        inst.check_pairing_args(second, HaArgs(), None)
    inst.check_pairing_args(second, HaArgs(), "admin:pw")


# ------------------------------------------------------------------ install()


@pytest.fixture
def root(tmp_path: Path, host: set[str], monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty root; every step after validation is replaced by a tripwire."""
    r = tmp_path / "root"
    r.mkdir()

    def tripwire(*_a: object, **_k: object) -> None:
        raise AssertionError("install went past validation")

    for name in ("init_database", "store_pairing_credential", "render_all"):
        monkeypatch.setattr(inst, name, tripwire)
    monkeypatch.setattr(inst.postgres, "prepare_dirs", tripwire)
    return r


def tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.parametrize(("name", "ipaddr", "kw", "extra", "message"), [
    ("bad name!", [], None, {}, "node name 'bad name!'"),
    ("-dash", [], None, {}, "node name"),
    ("n1\n", [], None, {}, "node name"),  # "$" matches before a trailing newline
    ("n1", ["10.0.0.300"], None, {}, "--ipaddr: '10.0.0.300' is not an IPv4 or IPv6 address"),
    ("n1", [], {"kad_vif": None}, {"user_pass": "admin:pw"}, "HA needs --kad_vif"),
    ("n1", [], {}, {"ha_secret": "short"}, "--ha_secret is too weak"),
    ("n1", [], {}, {"ha_join_token": "nonsense"}, "--ha_join_token: not a join token"),
    ("n1", [], {}, {"user_pass": "nocolon"}, "--user_pass: expected USER:PASSWORD"),
    ("n1", [], {}, {"user_pass": "a:b", "user_rest_pass": ":pw"}, "--user_rest_pass: expected USER:PASSWORD"),
    ("n1", [], {}, {"user_pass": "a:b", "user_portal_pass": "u:"}, "--user_portal_pass: expected"),
    ("n1", ["10.0.0.7"], {}, {"ha_secret": "s"}, "must be exactly one of them"),
    ("n1", [], {"kad_vri": 300}, {"user_pass": "a:b"}, "--kad_vri must be between 1 and 255"),
    ("n1", [], None, {"ha_secret": "s"}, "--ha_secret is for HA nodes"),
    ("n1", ["2001:db8::1"], {"ha_node_list": "2001:db8::1 2001:db8::2", "kad_vip": "10.0.0.100/24"},
     {"user_pass": "a:b"}, "single IPv4 VIP on an IPv6 VRRP instance"),
    ("n1", [], {}, {"user_pass": "a:b", "tls_cert": "/etc/hostname"}, "give both --tls_cert and --tls_key"),
    ("n1", [], {}, {"user_pass": "a:b", "tls_cert": "/nonexistent.crt", "tls_key": "/nonexistent.key"},
     "cannot read /nonexistent"),
])
def test_install_argument_error_leaves_root_empty(root: Path, name: str, ipaddr: list[str],
                                                  kw: dict[str, object] | None, extra: dict[str, str],
                                                  message: str) -> None:
    ha = HaArgs() if kw is None else ha_args(**kw)
    for key in ("ha_secret", "ha_join_token"):
        if key in extra:
            setattr(ha, key, extra.pop(key))
    with pytest.raises(ConfigError) as e:
        inst.install(name, root, ipaddr, ha, **extra)
    assert message in str(e.value)
    assert tree(root) == []


def test_install_cinder_volume_not_mounted_leaves_root_empty(root: Path, tmp_path: Path) -> None:
    vol = tmp_path / "vol"  # a directory, but not a mount point
    vol.mkdir()
    with pytest.raises(ConfigError, match="--db_volume_id .*: not a mount point; the first node"):
        inst.install("n1", root, [], ha_args(ha_mode="drbd_on_cinder", db_volume_id=str(vol)),
                     user_pass="a:b")
    assert tree(root) == []


def test_install_cinder_directory_volume_of_the_second_node_is_not_checked(
        root: Path, tmp_path: Path, host: set[str]) -> None:
    """Only the first listed node creates the database on its volume; the second clones it
    later, so its install goes past the volume check (into the first tripwire here)."""
    host.clear()
    host.add(N2)
    vol = tmp_path / "vol"
    vol.mkdir()
    with pytest.raises(AssertionError, match="went past validation"):
        inst.install("n2", root, [], ha_args(ha_mode="drbd_on_cinder", db_volume_id=str(vol)),
                     user_pass="a:b")
    assert tree(root) == []  # the failure after validation removed what was created


def test_install_refuses_to_overwrite(root: Path) -> None:
    cfg = root / "etc/esc/esc.json"
    cfg.parent.mkdir(parents=True)
    cfg.write_text("{}")
    before = tree(root)
    with pytest.raises(ConfigError, match="already installed.*--force"):
        inst.install("n1", root, [], HaArgs())
    assert tree(root) == before and cfg.read_text() == "{}"


def test_install_force_refuses_a_running_node(root: Path) -> None:
    cfg = root / "etc/esc/esc.json"
    cfg.parent.mkdir(parents=True)
    cfg.write_text("{}")
    sock = NodePaths(root).agent_sock
    sock.parent.mkdir(parents=True, exist_ok=True)
    sock.touch()
    before = tree(root)
    with pytest.raises(ConfigError, match="is running: `escadm stop` it before --force"):
        inst.install("n1", root, [], HaArgs(), force=True)
    assert tree(root) == before and cfg.read_text() == "{}"


def test_install_force_with_bad_volume_keeps_the_old_node(root: Path, tmp_path: Path) -> None:
    """The volume check comes before --force removes the installed node: a refused volume
    leaves the old node exactly as it was."""
    cfg = root / "etc/esc/esc.json"
    cfg.parent.mkdir(parents=True)
    cfg.write_text("{}")
    (root / "var/lib/esc/pgdata").mkdir(parents=True)
    before = tree(root)
    vol = tmp_path / "vol"
    vol.mkdir()
    with pytest.raises(ConfigError, match="not a mount point"):
        inst.install("n1", root, [], ha_args(ha_mode="drbd_on_cinder", db_volume_id=str(vol)),
                     user_pass="a:b", force=True)
    assert tree(root) == before and cfg.read_text() == "{}"


FAKE_DEV = "/dev/esc-test-fake-volume"


@dataclass
class FakeVolume:
    """FAKE_DEV is a block device; `mount` / `umount` are recorded and give ``outcome``'s
    exit status; os.path.ismount follows the mounts that succeeded."""

    calls: list[list[str]] = field(default_factory=list)
    outcome: dict[str, int] = field(default_factory=lambda: {"mount": 32, "umount": 0})
    mounted: set[str] = field(default_factory=set)


@pytest.fixture
def fake_block_device(monkeypatch: pytest.MonkeyPatch) -> FakeVolume:
    fake = FakeVolume()
    real_is_block, real_ismount = pathlib.Path.is_block_device, inst.os.path.ismount
    monkeypatch.setattr(pathlib.Path, "is_block_device",
                        lambda self: str(self) == FAKE_DEV or real_is_block(self))

    def fake_run(argv: list[str], **_kw: object) -> subprocess.CompletedProcess[str]:
        if argv[0] != "ip":  # reads of the interfaces (the address checks) are not what is counted
            fake.calls.append(list(argv))
        rc = fake.outcome.get(argv[0], 1)
        if rc == 0 and argv[0] == "mount":
            fake.mounted.add(argv[2])
        if rc == 0 and argv[0] == "umount":
            fake.mounted.discard(argv[1])
        return subprocess.CompletedProcess(argv, rc, "", "" if rc == 0 else f"{argv[0]}: failed")

    monkeypatch.setattr(inst.subprocess, "run", fake_run)
    monkeypatch.setattr(inst.os.path, "ismount", lambda p: str(p) in fake.mounted or real_ismount(p))
    return fake


def test_install_block_volume_not_mountable_leaves_root_empty(
        root: Path, fake_block_device: FakeVolume) -> None:
    """The block device is mounted inside the cleanup scope: when the mount fails, the
    mount point the install created is removed again."""
    with pytest.raises(ConfigError, match=f"--db_volume_id {FAKE_DEV}: the volume could not be mounted"):
        inst.install("n1", root, [], ha_args(ha_mode="drbd_on_cinder", db_volume_id=FAKE_DEV),
                     user_pass="a:b")
    point = str(root / "var/lib/esc/db_volume")
    assert fake_block_device.calls == [["mount", FAKE_DEV, point]]
    assert tree(root) == []


def test_install_block_volume_is_unmounted_when_a_later_step_fails(
        root: Path, fake_block_device: FakeVolume) -> None:
    fake_block_device.outcome["mount"] = 0
    with pytest.raises(AssertionError, match="went past validation"):  # write_secrets' tripwire
        inst.install("n1", root, [], ha_args(ha_mode="drbd_on_cinder", db_volume_id=FAKE_DEV),
                     user_pass="a:b")
    point = str(root / "var/lib/esc/db_volume")
    assert fake_block_device.calls == [["mount", FAKE_DEV, point], ["umount", point]]
    assert not fake_block_device.mounted
    assert tree(root) == []


def test_install_cleanup_never_deletes_inside_a_still_mounted_volume(
        root: Path, fake_block_device: FakeVolume, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_block_device.outcome.update(mount=0, umount=32)
    point = root / "var/lib/esc/db_volume"
    real_mkdir = pathlib.Path.mkdir

    def mkdir(self: Path, *a: object, **kw: object) -> None:
        real_mkdir(self, *a, **kw)  # type: ignore[arg-type]
        if self == point:  # what the volume holds, visible once it is "mounted"
            (point / "esc").mkdir(exist_ok=True)
            (point / "esc/precious").write_text("data")

    monkeypatch.setattr(pathlib.Path, "mkdir", mkdir)
    with pytest.raises(AssertionError, match="went past validation"):
        inst.install("n1", root, [], ha_args(ha_mode="drbd_on_cinder", db_volume_id=FAKE_DEV),
                     user_pass="a:b")
    assert (point / "esc/precious").exists()


def test_install_later_failure_removes_what_it_created(
        tmp_path: Path, host: set[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """A step after validation fails (initdb, say): every directory the install created,
    up to the outermost one that was missing, is removed again."""
    root = tmp_path / "root"
    root.mkdir()
    (root / "var").mkdir()  # pre-existing: must survive

    def initdb_fails(*_a: object, **_k: object) -> None:
        raise RuntimeError("initdb failed: simulated")

    monkeypatch.setattr(inst, "init_database", initdb_fails)
    with pytest.raises(RuntimeError, match="simulated"):
        inst.install("n1", root, [], HaArgs())  # standalone: no chown, no secret
    assert tree(root) == ["var"]


@pytest.mark.parametrize(("witness", "message"), [
    ("10.0.0.9", "expected ADDR:PORT"), ("10.0.0.9:0", "expected ADDR:PORT"),
    ("10.0.0.9:99999", "expected ADDR:PORT"), ("nohost:8025", "not an IPv4 or IPv6 address"),
])
def test_ha_witness_refused(host: set[str], witness: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_ha(ha_args(ha_witness=witness), [])


def test_ha_witness_normalised(host: set[str]) -> None:
    assert build_ha(ha_args(ha_witness=" 10.0.0.9:8025"), []).witness == "10.0.0.9:8025"  # type: ignore[union-attr]
    assert build_ha(ha_args(ha_witness="[fd00::9]:8025"), []).witness == "[fd00::9]:8025"  # type: ignore[union-attr]


def test_witness_alone_is_refused(host: set[str]) -> None:
    with pytest.raises(ConfigError, match="--ha_witness is for HA nodes"):
        build_ha(HaArgs(ha_witness="10.0.0.9:8025"), [])


def test_witness_timing_rule() -> None:
    from esc.config import NodeConfig

    ha = HaConfig(node_list=[N1, N2], vip=Vip(address=VIP, prefixlen=24, interface="eth0"), vif="eth0",
                  self_index=0, witness="10.0.0.9:8025")
    NodeConfig(name="n", ha=ha)  # the defaults hold: 2 > 1 + 0.4
    with pytest.raises(ValueError, match="with a witness, promote_window"):
        NodeConfig(name="n", ha=ha, timing=Timing(lease=2.0))


def test_witness_lengthens_the_default_promote_window_only() -> None:
    """Without a witness the short defaults bound a lost standby's stall; with one, the
    standby's window must also cover the dead active's lease, so the defaults are longer,
    while anything the operator set is kept, and the config file keeps what was chosen."""
    from esc.config import WITNESS_TIMING_DEFAULTS, NodeConfig

    vip = Vip(address=VIP, prefixlen=24, interface="eth0")
    plain = HaConfig(node_list=[N1, N2], vip=vip, vif="eth0", self_index=0)
    witnessed = plain.model_copy(update={"witness": "10.0.0.9:8025"})
    t = NodeConfig(name="n", ha=plain).timing
    assert (t.promote_window, t.alone_after) == (Timing().promote_window, Timing().alone_after)
    assert t.alone_after < WITNESS_TIMING_DEFAULTS["alone_after"]
    t = NodeConfig(name="n", ha=witnessed).timing
    assert (t.promote_window, t.alone_after) == (WITNESS_TIMING_DEFAULTS["promote_window"],
                                                 WITNESS_TIMING_DEFAULTS["alone_after"])
    t = NodeConfig(name="n", ha=witnessed, timing={"alone_after": 5.0}).timing  # type: ignore[arg-type]
    assert (t.promote_window, t.alone_after) == (2.0, 5.0)
    t = NodeConfig(name="n", ha=witnessed, timing=Timing(promote_window=1.6)).timing
    assert t.promote_window == 1.6  # an explicit model is taken as it is
    dumped = NodeConfig(name="n", ha=witnessed).model_dump(mode="json")
    assert NodeConfig.model_validate(dumped).timing.alone_after == 4.0
    dumped["ha"]["witness"] = None  # a witness removed later: the saved timing stays valid
    assert NodeConfig.model_validate(dumped).timing.alone_after == 4.0


# ------------------------------------------------------------- --ha_heartbeat_list

H1, H2 = "10.1.0.1", "10.1.0.2"  # a second network between the nodes


def test_heartbeat_list_ok(host: set[str]) -> None:
    host.add(H1)
    ha = build_ha(ha_args(ha_heartbeat_list=(f"{H1} {H2}",)), [])
    assert ha is not None and ha.heartbeat == [[H1, H2]]
    assert ha.paths == [(N1, N2), (H1, H2)]


def test_heartbeat_list_second_node_and_several_networks(host: set[str]) -> None:
    host.clear()
    host.update({N2, H2, "10.2.0.2"})
    ha = build_ha(ha_args(ha_heartbeat_list=[f"{H1},{H2}", "10.2.0.1 10.2.0.2"]), [])
    assert ha is not None and ha.self_index == 1
    assert ha.paths == [(N2, N1), (H2, H1), ("10.2.0.2", "10.2.0.1")]


def test_heartbeat_address_may_come_from_interfaces_with_ipaddr(host: set[str]) -> None:
    """--ipaddr names the node's main address; the heartbeat one is on another interface."""
    host.add(H1)
    ha = build_ha(ha_args(ha_heartbeat_list=[f"{H1} {H2}"]), [N1])
    assert ha is not None and ha.paths[1] == (H1, H2)


@pytest.mark.parametrize(("lists", "message"), [
    ([H1], "--ha_heartbeat_list 10.1.0.1: needs exactly two addresses"),
    ([f"{H1} {H2} 10.1.0.3"], "needs exactly two addresses"),
    ([f"{H1} {H1}"], "the two addresses must differ"),
    ([f"{H1} 2001:db8::2"], "both addresses must be of the same family"),
    ([f"{H1} nohost"], "--ha_heartbeat_list: 'nohost' is not an IPv4 or IPv6 address"),
    ([f"{H1} {N2}"], f"{N2} is already used"),
    ([f"{H1} {H2}", f"{H1} 10.2.0.2"], f"{H1} is already used"),
    (["10.3.0.1 10.3.0.2"], "this node's own address (--ipaddr and this host's interfaces"),
    ([f"{H2} {H1}"], "give the addresses in --ha_node_list order"),
])
def test_heartbeat_list_errors(host: set[str], lists: list[str], message: str) -> None:
    host.add(H1)
    with pytest.raises(ConfigError) as e:
        build_ha(ha_args(ha_heartbeat_list=lists), [])
    assert message in str(e.value)
    assert "\n" not in str(e.value) and "Value error" not in str(e.value)


def test_heartbeat_list_alone_is_refused(host: set[str]) -> None:
    with pytest.raises(ConfigError, match="--ha_heartbeat_list is for HA nodes"):
        build_ha(HaArgs(ha_heartbeat_list=[f"{H1} {H2}"]), [])


def test_heartbeat_vip_must_be_free(host: set[str]) -> None:
    host.add(H1)
    with pytest.raises(ConfigError, match="is a node's heartbeat address"):
        build_ha(ha_args(ha_heartbeat_list=[f"{H1} {H2}"], kad_vip=f"{H2}/24"), [])


def test_haconfig_validates_heartbeat_when_loaded() -> None:
    """esc.json edited by hand is checked too (the model is the one config)."""
    with pytest.raises(ValueError, match="already used"):
        _ha(heartbeat=[[N1, H2]])
    assert _ha(heartbeat=[[H1, H2]]).paths == [(N1, N2), (H1, H2)]


@pytest.mark.parametrize(("witness", "message"), [
    ("etcd://", "expected etcd://HOST:PORT"), ("etcd://10.0.0.9:70000", "out of range"),
    ("etcd://10.0.0.9:2379,", "an empty host"), ("etcd://a b:2379", "no path, user or spaces"),
    ("etcd:/10.0.0.9:2379", "expected etcd://HOST:PORT"),
])
def test_an_etcd_witness_refused_in_one_line(host: set[str], witness: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as e:
        build_ha(ha_args(ha_witness=witness), [])
    assert "\n" not in str(e.value)


def test_an_etcd_witness_with_tls_files(host: set[str], tmp_path: Path) -> None:
    from esc import tls as esc_tls

    cert, key = esc_tls.make_certificate(["10.0.0.9"])
    (tmp_path / "ca.pem").write_bytes(cert)
    (tmp_path / "key.pem").write_bytes(key)
    ha = build_ha(ha_args(ha_witness="etcd+https://10.0.0.9:2379,10.0.0.10",
                          ha_witness_ca=str(tmp_path / "ca.pem"), ha_witness_cert=str(tmp_path / "ca.pem"),
                          ha_witness_key=str(tmp_path / "key.pem")), [])
    assert ha is not None and ha.witness == "etcd+https://10.0.0.9:2379,10.0.0.10:2379"
    assert ha.witness_ca == str(tmp_path / "ca.pem")
    with pytest.raises(ConfigError, match="--ha_witness_ca: .*not a PEM file"):
        build_ha(ha_args(ha_witness="etcd+https://10.0.0.9", ha_witness_ca=str(tmp_path / "none.pem")), [])
    (tmp_path / "junk.pem").write_text("junk")
    with pytest.raises(ConfigError, match="--ha_witness_cert/--ha_witness_key: .*not a PEM file"):
        build_ha(ha_args(ha_witness="etcd+https://10.0.0.9", ha_witness_cert=str(tmp_path / "junk.pem"),
                         ha_witness_key=str(tmp_path / "key.pem")), [])
    with pytest.raises(ConfigError, match="for a witness on etcd over TLS"):
        build_ha(ha_args(ha_witness="etcd://10.0.0.9", ha_witness_ca=str(tmp_path / "ca.pem")), [])


def test_etcd_witness_timing_rule() -> None:
    """etcd's lease is whole seconds, and a dead holder's key may outlive it by 0.5 s."""
    from esc.config import NodeConfig

    ha = HaConfig(node_list=[N1, N2], vip=Vip(address=VIP, prefixlen=24, interface="eth0"), vif="eth0",
                  self_index=0, witness="etcd://10.0.0.9:2379")
    NodeConfig(name="n", ha=ha)  # the defaults hold: 2 > 1 + 0.5 + 0.4
    with pytest.raises(ValueError, match="with an etcd witness, promote_window"):
        NodeConfig(name="n", ha=ha, timing=Timing(lease=1.2, promote_window=2.7, alone_after=3.2))
