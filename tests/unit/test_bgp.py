"""BGP anycast: validation of the settings, escadm bgp set / --bgp_* install arguments,
the rendered exabgp.conf and bird.conf, when to announce (a property over the state
machine), the API helper's wish file and events, and the status/health texts."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given

from esc import health
from esc.cli.escadm import cli, normalise_argv
from esc.config import (
    BgpConfig,
    ConfigError,
    NodeConfig,
    NodePaths,
    check_md5,
    load_config,
    load_secrets,
    save_config,
    validation_message,
)
from esc.ha import bgp
from esc.install import BgpArgs, build_bgp
from esc.lab import router
from esc.roles import Db, Role, decide, should_announce

GOOD = {"local_ip": "198.18.42.124", "anycast_ip": "10.0.124.124", "remote_ip": "192.168.0.2",
        "local_as": 65124, "remote_as": 65000, "local_router_id": "198.18.42.124"}
GOOD6 = {"local_ip": "fd00:1::11", "anycast_ip": "fd99::1", "remote_ip": "fd00:1::1",
         "local_as": 65011, "remote_as": 65000, "local_router_id": "10.77.1.11"}


def make(**kw: object) -> BgpConfig:
    return BgpConfig(**{**GOOD, **kw})  # type: ignore[arg-type]


def error_of(**kw: object) -> str:
    with pytest.raises(ValueError) as e:
        make(**kw)
    return validation_message(e.value)


# ----------------------------------------------------------------- validation
def test_the_originals_example_is_accepted() -> None:
    b = make()
    assert (b.anycast_prefix, b.family, b.ebgp, b.md5, b.hold_time) == ("10.0.124.124/32", 4, True, False, 3)


def test_ipv6_session_with_an_ipv4_router_id() -> None:
    b = BgpConfig(**GOOD6)  # type: ignore[arg-type]
    assert b.anycast_prefix == "fd99::1/128" and b.family == 6


@pytest.mark.parametrize(("kw", "message"), [
    ({"local_as": 0}, "an AS number is 1 to 4294967295, not 0"),
    ({"remote_as": 4294967296}, "--remote_as: an AS number is 1 to 4294967295"),
    ({"local_as": 23456}, "AS_TRANS"),
    ({"local_ip": "10.0.0.300"}, "--local_ip: '10.0.0.300' is not an IPv4 or IPv6 address"),
    ({"remote_ip": "0.0.0.0"}, "cannot be used as a BGP address"),
    ({"anycast_ip": "224.0.0.5"}, "cannot be used as a BGP address"),
    ({"remote_ip": "127.0.0.1"}, "loopback"),
    ({"anycast_ip": "fd99::1"}, "one address family"),
    ({"anycast_ip": "192.168.0.2"}, "must differ from --local_ip and --remote_ip"),
    ({"remote_ip": "198.18.42.124"}, "--local_ip and --remote_ip must differ"),
    ({"local_router_id": "fd00::1"}, "must be an IPv4 dotted quad"),
    ({"local_router_id": "0.0.0.0"}, "not a valid BGP identifier"),
    ({"hold_time": 2}, "0 or 3..65535"),
])
def test_bad_settings_get_one_clear_message(kw: dict, message: str) -> None:
    assert message in error_of(**kw)


@pytest.mark.parametrize("key", ["", "x" * 81, "has space", 'quo"te', "semi;colon", "back\\slash",
                                 "brace{", "tab\t", "é"])
def test_md5_key_limits(key: str) -> None:
    with pytest.raises(ConfigError, match="--md5"):
        check_md5(key)


@pytest.mark.parametrize("key", ["a", "x" * 80, "S3cr#t-key!", "lab_md5.key:1"])
def test_md5_keys_accepted(key: str) -> None:
    assert check_md5(key) == key


def test_build_bgp_names_the_options_as_the_caller_does() -> None:
    args = BgpArgs(**{**GOOD, "local_as": 0})  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="--bgp_local_as: an AS number"):
        build_bgp(args, set(), {}, "--bgp_")
    with pytest.raises(ConfigError, match="^--local_as: an AS number"):
        build_bgp(args, set(), {})


def test_build_bgp_needs_every_setting_but_md5() -> None:
    with pytest.raises(ConfigError, match="BGP needs --bgp_remote_as, --bgp_local_router_id too"):
        build_bgp(BgpArgs(local_ip="10.0.0.1", anycast_ip="10.9.0.1", remote_ip="10.0.0.254",
                          local_as=1), set(), {}, "--bgp_")
    assert build_bgp(BgpArgs(), set(), {}) == (None, None)


def test_build_bgp_checks_this_node_and_taken_addresses() -> None:
    args = BgpArgs(**GOOD, md5="k3y")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="not an address of this node"):
        build_bgp(args, {"10.1.1.1"}, {})
    with pytest.raises(ConfigError, match="is the VIP"):
        build_bgp(args, {GOOD["local_ip"]}, {GOOD["anycast_ip"]: "the VIP (--kad_vip)"})
    cfg, md5 = build_bgp(args, {GOOD["local_ip"]}, {})
    assert cfg is not None and cfg.md5 and md5 == "k3y"


# ------------------------------------------------------------------- escadm
@pytest.fixture
def node_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr("esc.install.local_addresses", lambda: {GOOD["local_ip"]})
    save_config(NodePaths(tmp_path), NodeConfig(name="n1"))
    return tmp_path


def run(root: Path, *args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(cli, ["--root", str(root), *normalise_argv(list(args))])


def set_args(**kw: object) -> list[str]:
    out = []
    for k, v in {**GOOD, **kw}.items():
        out += [f"--{k}", str(v)]
    return out


def test_bgp_set_writes_config_secret_and_exabgp_conf(node_root: Path) -> None:
    r = run(node_root, "bgp", "set", *set_args(), "--md5", "k3y-1")
    assert r.exit_code == 0, r.output
    assert "run `escadm reload`" in r.output
    paths = NodePaths(node_root)
    cfg = load_config(paths)
    assert cfg.bgp == make(md5=True)
    assert "k3y" not in paths.config.read_text(), "the MD5 key is a secret"
    assert load_secrets(paths)["bgp_md5"] == "k3y-1"
    conf = paths.exabgp_conf.read_text()
    assert 'md5-password "k3y-1";' in conf and "peer-as 65000;" in conf
    assert oct(paths.exabgp_conf.stat().st_mode & 0o777) == "0o600"
    # without --md5: the key goes
    assert run(node_root, "bgp", "set", *set_args()).exit_code == 0
    assert "bgp_md5" not in load_secrets(paths) and "md5" not in paths.exabgp_conf.read_text()


@pytest.mark.parametrize(("kw", "message"), [
    ({"local_as": "0"}, "--local_as: an AS number is 1 to 4294967295"),
    ({"anycast_ip": "fd99::1"}, "one address family"),
    ({"local_ip": "198.18.42.99"}, "not an address of this node"),
    ({"local_router_id": "x"}, "IPv4 dotted quad"),
])
def test_bgp_set_refuses_bad_input_and_changes_nothing(node_root: Path, kw: dict, message: str) -> None:
    before = NodePaths(node_root).config.read_text()
    r = run(node_root, "bgp", "set", *set_args(**kw))
    assert r.exit_code == 2, r.output
    assert message in r.output and r.output.count("\n") == 1
    assert NodePaths(node_root).config.read_text() == before
    assert not NodePaths(node_root).exabgp_conf.exists()


def test_bgp_set_refuses_a_bad_md5_key(node_root: Path) -> None:
    r = run(node_root, "bgp", "set", *set_args(), "--md5", "two words")
    assert r.exit_code == 2 and "--md5: use printable ASCII" in r.output
    assert load_config(NodePaths(node_root)).bgp is None


def test_install_refuses_bad_bgp_arguments_and_writes_nothing(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("esc.install.local_addresses", lambda: {"10.9.9.1"})
    r = run(tmp_path, "install", "n1", "--ipaddr", "10.9.9.1", "--bgp_local_ip", "10.9.9.1",
            "--bgp_anycast_ip", "10.9.9.1", "--bgp_remote_ip", "10.9.9.254", "--bgp_local_as", "65001",
            "--bgp_remote_as", "65000", "--bgp_local_router_id", "10.9.9.1")
    assert r.exit_code == 2 and "--bgp_anycast_ip 10.9.9.1 must differ" in r.output
    r = run(tmp_path, "install", "n1", "--ipaddr", "10.9.9.1", "--bgp_local_ip", "10.9.9.1")
    assert r.exit_code == 2 and "BGP needs --bgp_anycast_ip" in r.output
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------- render
def test_exabgp_conf_ipv6() -> None:
    cfg = NodeConfig(name="n1", bgp=BgpConfig(**GOOD6))  # type: ignore[arg-type]
    text = bgp.render(cfg, NodePaths(Path("/r")), None)
    assert "ipv6 unicast;" in text and "router-id 10.77.1.11;" in text and "md5" not in text
    assert "neighbor fd00:1::1 {" in text and "neighbor-changes;" in text
    assert "run /r/etc/esc/exabgp-api;" in text  # the script that starts esc.ha.bgp_api


@pytest.mark.skipif(not Path(bgp.exabgp_bin()).exists(), reason="needs ExaBGP")
def test_exabgp_accepts_the_rendered_files(tmp_path: Path) -> None:
    for kw, md5 in ((GOOD, "k#y"), (GOOD6, None)):
        cfg = NodeConfig(name="n1", bgp=BgpConfig(**kw, md5=md5 is not None))  # type: ignore[arg-type]
        f = tmp_path / "exabgp.conf"
        (tmp_path / "etc/esc").mkdir(parents=True, exist_ok=True)
        bgp.write_api_script(NodePaths(tmp_path))  # as render_all does: ExaBGP checks it is there
        f.write_text(bgp.render(cfg, NodePaths(tmp_path), md5))
        assert bgp.check_config(f) is None
    f.write_text("neighbor 10.0.0.1 { hold-tme 3; }\n")
    assert "hold-tme" in (bgp.check_config(f) or "")


def test_bird_conf_follows_the_originals_example() -> None:
    text = router.render("10.77.0.1", [router.Neighbor("E1", "10.77.1.11", 65011, "k"),
                                      router.Neighbor("E2", "10.77.2.12", 65012)], Path("/l/bird.log"))
    assert "template bgp EXABGP {" in text and "error wait time 1, 10;" in text
    assert 'protocol bgp E1 from EXABGP { neighbor 10.77.1.11 as 65011; password "k"; }' in text
    assert "protocol bgp E2 from EXABGP { neighbor 10.77.2.12 as 65012; }" in text
    assert "hold time 3; keepalive time 1;" in text and "med metric yes;" in text


def test_route_lines_and_the_wish_file(tmp_path: Path) -> None:
    b = make()
    assert bgp.route_line(b, True, 999998) == \
        "announce route 10.0.124.124/32 next-hop 198.18.42.124 med 999998"
    assert bgp.route_line(b, False).startswith("withdraw route 10.0.124.124/32")
    assert bgp.med_for(3) < bgp.med_for(2), "a newer timeline must be preferred"
    paths = NodePaths(tmp_path)
    assert bgp.read_desired(paths) == (False, bgp.MED_BASE), "no file: withdraw"
    bgp.write_desired(paths, True, 42)
    assert bgp.read_desired(paths) == (True, 42)
    for junk in ("announce", "announce x", "ANNOUNCE 1", "", "yes please"):
        assert bgp.parse_desired(junk)[0] is False, junk


# ------------------------------------------------------------- the helper
def test_helper_follows_the_wish_and_reannounces_when_the_session_returns(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from esc.ha import bgp_api

    paths = NodePaths(tmp_path)
    save_config(paths, NodeConfig(name="n1", bgp=make()))
    out = io.StringIO()
    monkeypatch.setattr("sys.stdout", out)
    h = bgp_api.Helper(paths)
    bgp.write_desired(paths, True, 7)
    h.send(bgp.read_desired(paths))
    assert out.getvalue().endswith("next-hop 198.18.42.124 med 7\n")
    h.on_event("done")  # acknowledgements and noise are ignored
    h.on_event(json.dumps({"type": "state", "neighbor": {"state": "up"}}))
    assert h.resend.is_set() and h.session == "up"
    st = json.loads(paths.bgp_state.read_text())
    assert st["session"] == "up" and st["announced"] and st["med"] == 7
    h.on_event(json.dumps({"type": "state", "neighbor": {"state": "down", "reason": "peer reset"}}))
    assert json.loads(paths.bgp_state.read_text())["last_reason"] == "peer reset"


# -------------------------------------------------------- when to announce
from test_roles import PROPS, observations, st_role  # noqa: E402


@PROPS
@given(role=st_role, obs=observations(), serving=st_role.map(lambda r: r == Role.ACTIVE))
def test_prop_announce_only_while_serving_as_the_writer(role: Role, obs, serving: bool) -> None:  # type: ignore[no-untyped-def]
    dec = decide(role, obs)
    if should_announce(dec, obs.db.state, serving):
        assert dec.role in (Role.ACTIVE, Role.STANDALONE)
        assert dec.desired.services and dec.desired.db == "primary"
        assert obs.db.state == Db.PRIMARY and serving
    if dec.role in (Role.STANDBY, Role.FAULT, Role.SWITCHING_TO_ACTIVE, Role.SWITCHING_TO_STANDBY):
        assert not should_announce(dec, obs.db.state, True)


def test_no_announce_while_promoting_or_without_a_serving_controller() -> None:
    from esc.roles import Decision, Desired

    active = Decision(Role.ACTIVE, Desired(db="primary", services=True, vrrp_gate=True), "serving")
    assert should_announce(active, Db.PRIMARY, True)
    assert not should_announce(active, Db.STANDBY, True), "still in recovery"
    assert not should_announce(active, Db.PRIMARY, False), "controller not serving"


# ------------------------------------------------------------ status/health
def st_bgp(**kw: object) -> dict:
    b = {"neighbor": "10.77.1.1", "remote_as": 65000, "local_ip": "10.77.1.11", "local_as": 65011,
         "prefix": "10.99.0.1/32", "md5": True, "hold_time": 3, "session": "up", "established": True,
         "session_for_s": 12.0, "last_reason": "", "desired": "announce", "announced": True,
         "loopback": True}
    b.update(kw)
    return b


def status(role: str, b: dict) -> dict:
    db = {"state": "primary" if role == "ACTIVE" else "standby", "streaming": role != "ACTIVE"}
    svcs = {n: {"state": "running", "pid": 1, "detail": "serving" if role == "ACTIVE" else "parked"}
            for n in ("keepalived", "pgsql", "escmanager", "filesystem", "bgp")}
    return {"role": role, "ha": True, "db": db, "services": svcs, "bgp": b}


def test_health_passes_on_an_announcing_active_and_a_withdrawn_standby() -> None:
    text, ok = health.report(status("ACTIVE", st_bgp()))
    assert ok and "bgp (pgid 1) is running, session to 10.77.1.1 (AS 65000) established, " \
        "10.99.0.1/32 announced" in text
    text, ok = health.report(status("STANDBY", st_bgp(desired="withdraw", announced=False)))
    assert ok and "10.99.0.1/32 withdrawn" in text


def test_health_fails_and_says_what_to_check_when_the_session_is_down() -> None:
    b = st_bgp(session="down", established=False, announced=False, session_for_s=40.0,
               last_reason="ExaBGP started; no session yet")
    text, ok = health.report(status("STANDBY", b))
    assert not ok
    assert "session to 10.77.1.1 (AS 65000) not established for 40s (down; last: ExaBGP started; " \
        "no session yet); check the MD5 key (--md5), AS numbers and addresses on both ends" in text
    details = health.status_details(status("ACTIVE", {**b, "desired": "announce"}))
    assert "anycast:     10.99.0.1/32 to be announced (waiting for the session)" in details


def test_health_fails_when_a_standby_announces() -> None:
    assert not health.report(status("STANDBY", st_bgp()))[1]


def test_secrets_stay_out_of_the_log_archive(node_root: Path) -> None:
    from esc import logcollect

    assert run(node_root, "bgp", "set", *set_args(), "--md5", "k3y-secret").exit_code == 0
    import tarfile

    out = logcollect.collect(NodePaths(node_root), node_root / "logs.tgz")
    with tarfile.open(out) as tar:
        for m in tar.getmembers():
            f = tar.extractfile(m)
            assert f is None or b"k3y-secret" not in f.read(), m.name
    assert os.stat(out).st_mode & 0o777 == 0o600
    (node_root / "etc/esc/new-feature.key").write_text("k3y-secret")  # unknown: left out
    out.chmod(0o644)  # an existing archive is made 0600 again
    out = logcollect.collect(NodePaths(node_root), out)
    with tarfile.open(out) as tar:
        names = tar.getnames()
        left_out = tar.extractfile(next(m for m in tar.getmembers()
                                         if m.name.endswith("left-out.txt"))).read().decode()
        for m in tar.getmembers():
            f = tar.extractfile(m)
            assert f is None or b"k3y-secret" not in f.read(), m.name
    assert any(n.endswith("etc/esc.json") for n in names)
    assert "new-feature.key" in left_out and "secrets.json" in left_out
    assert os.stat(out).st_mode & 0o777 == 0o600
