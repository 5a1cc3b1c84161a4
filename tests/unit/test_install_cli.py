"""`escadm install` refuses bad arguments with one clear message and writes nothing."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from esc.cli.escadm import cli, normalise_argv

HA = ["--ipaddr", "10.9.9.1", "--ha_node_list", "10.9.9.1 10.9.9.2", "--kad_vip", "10.9.9.50/24",
      "--kad_vif", "lo", "--ha_secret", "Jq7vYy1xQwE9rT2uK8mN4pL6sD3fG5hZ"]


def run(root: Path, *args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(cli, ["--root", str(root), *normalise_argv(list(args))])


@pytest.mark.parametrize(("args", "message"), [
    (["--ha_node_list", "10.9.9.1 10.9.9.300"], "is not an IPv4 or IPv6 address"),
    (["--kad_vri", "300"], "between 1 and 255"),
    (["--kad_vri", "0"], "between 1 and 255"),
    (["--kad_vif", "nosuch0"], "no interface named 'nosuch0'"),
    (["--kad_vip", "10.9.9.50/24:nosuch1"], "no interface named 'nosuch1'"),
    (["--kad_vip", "10.9.9.50/40"], "bad prefix length"),
    (["--kad_vip", "10.9.9.1"], "a node's own address"),
    (["--ipaddr", "10.9.9.7"], "must be exactly one of them"),
    (["--ha_node_list", "10.9.9.1"], "exactly two node addresses"),
    (["--ha_node_list", "10.9.9.1 fd00::2"], "same family"),
    (["--ha_mode", "drbd_on_cinder"], "needs --db_volume_id"),
    (["--ha_mode", "drbd_on_cinder", "--db_volume_id", "/nonexistent/vol"], "not a block device"),
    (["--user_rest_pass", "nopassword"], "USER:PASSWORD"),
])
def test_bad_install_arguments_are_refused_and_nothing_is_written(tmp_path, args, message):
    argv = list(HA)
    for i in range(0, len(args), 2):  # override an option or add it
        if args[i] in argv:
            argv[argv.index(args[i]) + 1] = args[i + 1]
        else:
            argv += args[i:i + 2]
    res = run(tmp_path, "install", "n1", *argv)
    assert res.exit_code == 2, res.output
    assert message in res.output
    assert res.output.count("\n") == 1, "one clear line"
    assert list(tmp_path.iterdir()) == []


def test_ha_without_kad_vif_or_secret_is_refused(tmp_path):
    res = run(tmp_path, "install", "n1", "--ipaddr", "10.9.9.1", "--ha_node_list", "10.9.9.1",
              "10.9.9.2", "--kad_vip", "10.9.9.50")
    assert res.exit_code == 2 and "--kad_vif" in res.output
    res = run(tmp_path, "install", "n2", "--ipaddr", "10.9.9.2", "--ha_node_list", "10.9.9.1 10.9.9.2",
              "--kad_vip", "10.9.9.50", "--kad_vif", "lo")
    assert res.exit_code == 2 and "pairs with the first: give --user_pass" in res.output
    assert list(tmp_path.iterdir()) == []


def test_bad_node_name_is_refused(tmp_path):
    res = run(tmp_path, "install", "bad name")
    assert res.exit_code == 2 and "node name" in res.output


@pytest.mark.skipif(os.geteuid() != 0 or not Path("/usr/lib/postgresql/15/bin/initdb").exists(),
                    reason="needs root and PostgreSQL 15")
def test_standalone_install_then_a_second_install_is_refused():
    tmp_path = Path(tempfile.mkdtemp(prefix="esc-install-"))  # pytest's tmp is 0700: postgres
    tmp_path.chmod(0o755)                                      # must reach its data dir
    try:
        _install_twice(tmp_path)
    finally:
        shutil.rmtree(tmp_path, ignore_errors=True)


def _install_twice(tmp_path: Path) -> None:
    res = run(tmp_path, "install", "s1", "--user_rest_pass", "admin:pw")
    assert res.exit_code == 0, res.output
    assert "STANDALONE" in res.output and "pw" not in res.output.replace("STANDALONE", "")
    assert (tmp_path / "etc/esc/esc.json").exists()
    assert (tmp_path / "var/lib/esc/pgdata/PG_VERSION").exists()
    assert "admin:pw" not in (tmp_path / "etc/esc/esc.json").read_text()
    res = run(tmp_path, "install", "s1")
    assert res.exit_code == 2 and "already installed" in res.output


@pytest.mark.skipif(os.geteuid() != 0 or not Path("/usr/lib/postgresql/15/bin/initdb").exists(),
                    reason="needs root and PostgreSQL 15")
def test_two_pairs_installed_with_identical_arguments_share_nothing():
    """The pair's material is random: the same arguments (password, secret, addresses)
    give another pair key, other certificates and another replication password; and
    none of them, nor the password, is in the files a reader of secrets.json sees."""
    nics = sorted(p.name for p in Path("/sys/class/net").iterdir() if p.name != "lo")
    if not nics:
        pytest.skip("keepalived needs an interface other than lo")
    argv = [nics[0] if a == "lo" else a for a in HA]
    roots = [Path(tempfile.mkdtemp(prefix="esc-install-")) for _ in range(2)]
    try:
        for root in roots:
            root.chmod(0o755)
            res = run(root, "install", "n1", *argv, "--user_pass", "admin:the-password")
            assert res.exit_code == 0, res.output
        files = ("etc/esc/pair.json", "etc/esc/tls/escmanager.crt", "etc/esc/tls/escmanager.key",
                 "etc/esc/tls/peer.crt", "etc/esc/pgpass")
        for name in files:
            assert (roots[0] / name).read_bytes() != (roots[1] / name).read_bytes(), name
        secrets_text = (roots[0] / "etc/esc/secrets.json").read_text()
        assert "the-password" not in secrets_text and HA[-1] not in secrets_text
    finally:
        for root in roots:
            shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def node_root(tmp_path: Path) -> Path:
    from esc.config import NodeConfig, NodePaths, save_config

    save_config(NodePaths(tmp_path), NodeConfig(name="n1"))
    return tmp_path


def _cfg(root: Path):  # type: ignore[no-untyped-def]
    from esc.config import NodePaths, load_config

    return load_config(NodePaths(root))


def test_callback_set_writes_the_lists_and_refuses_a_bad_network(node_root: Path) -> None:
    r = run(node_root, "callback", "set", "--allow", "10.0.0.0/8", "--allow", "192.0.2.7")
    assert r.exit_code == 0, r.output
    cb = _cfg(node_root).callbacks
    assert cb.allow == ["10.0.0.0/8", "192.0.2.7/32"] and "127.0.0.0/8" in cb.deny
    r = run(node_root, "callback", "set", "--allow", "10.0.0.0/33")
    assert r.exit_code == 2 and "'10.0.0.0/33' is not an address or network" in r.output
    assert _cfg(node_root).callbacks == cb  # unchanged
    r = run(node_root, "callback", "set", "--allow", "0.0.0.0/0", "--deny", "10.1.0.0/16")
    assert r.exit_code == 0 and _cfg(node_root).callbacks.deny == ["10.1.0.0/16"]


def test_retention_set(node_root: Path) -> None:
    r = run(node_root, "retention", "set", "--days", "2.5", "--max-events", "5000")
    assert r.exit_code == 0, r.output
    assert (_cfg(node_root).retention.days, _cfg(node_root).retention.max_events) == (2.5, 5000)
    r = run(node_root, "retention", "set", "--days", "0")
    assert r.exit_code == 2 and "greater than 0" in r.output
    assert _cfg(node_root).retention.days == 2.5


def test_tls_set_refuses_a_mismatched_key(node_root: Path, tmp_path: Path) -> None:
    from esc import tls
    from esc.config import NodePaths

    cert, _ = tls.make_certificate(["192.0.2.1"])
    _, other_key = tls.make_certificate(["192.0.2.1"])
    (tmp_path / "c.pem").write_bytes(cert)
    (tmp_path / "k.pem").write_bytes(other_key)
    r = run(node_root, "tls", "set", "--tls_cert", str(tmp_path / "c.pem"),
            "--tls_key", str(tmp_path / "k.pem"))
    assert r.exit_code == 2 and "does not match" in r.output
    assert not NodePaths(node_root).tls_cert.exists()


@pytest.mark.parametrize(("args", "message"), [
    (["--ha_heartbeat_list", "10.9.8.1"], "needs exactly two addresses"),
    (["--ha_heartbeat_list", "10.9.8.1 10.9.8.1"], "must differ"),
    (["--ha_heartbeat_list", "10.9.8.1 10.9.9.2"], "already used"),
    (["--ha_heartbeat_list", "10.9.8.1 fd00::2"], "same family"),
    (["--ha_heartbeat_list", "10.9.7.1 10.9.7.2"], "this node's own address"),
])
def test_bad_heartbeat_lists_are_refused_and_nothing_is_written(tmp_path, monkeypatch, args, message):
    monkeypatch.setattr("esc.install.local_addresses", lambda: {"10.9.8.1"})
    res = run(tmp_path, "install", "n1", *HA, *args)
    assert res.exit_code == 2, res.output
    assert message in res.output
    assert res.output.count("\n") == 1, "one clear line"
    assert list(tmp_path.iterdir()) == []


def test_heartbeat_list_takes_several_values_and_repeats():
    argv = normalise_argv(["install", "n1", "--ha_heartbeat_list", "10.9.8.1", "10.9.8.2",
                           "--ha_heartbeat_list", "10.9.7.1", "10.9.7.2", "--kad_vif", "lo"])
    assert argv == ["install", "n1", "--ha_heartbeat_list", "10.9.8.1 10.9.8.2",
                    "--ha_heartbeat_list", "10.9.7.1 10.9.7.2", "--kad_vif", "lo"]


def test_secrets_can_come_from_files_instead_of_the_command_line(tmp_path, monkeypatch):
    """--X_file reads --X from a file's first line; both at once, a missing or empty
    file: one clear error, nothing written. (The install itself is stopped at its
    first look at the arguments, by an address that is not this host's.)"""
    secret = tmp_path / "secret"
    secret.write_text("from-a-file\nignored second line\n")
    seen = {}

    def fake_install(name, root, ipaddr, ha, user_pass, *args, **kwargs):  # type: ignore[no-untyped-def]
        seen.update(ha_secret=ha.ha_secret, user_pass=user_pass)
        from esc.config import ConfigError
        raise ConfigError("stop here")

    import esc.cli.escadm as escadm_mod
    monkeypatch.setattr(escadm_mod, "install", fake_install)
    root = tmp_path / "root"
    argv = [a for a in HA if a not in ("--ha_secret", HA[-1])]
    res = run(root, "install", "n1", *argv, "--ha_secret_file", str(secret),
              "--user_pass_file", str(secret))
    assert res.exit_code == 2 and "stop here" in res.output
    assert seen == {"ha_secret": "from-a-file", "user_pass": "from-a-file"}
    res = run(root, "install", "n1", *HA, "--ha_secret_file", str(secret))
    assert res.exit_code == 2 and "give --ha_secret or --ha_secret_file, not both" in res.output
    (tmp_path / "empty").write_text("\n")
    for path, message in ((tmp_path / "nosuch", "No such file"), (tmp_path / "empty", "empty")):
        res = run(root, "install", "n1", *argv, "--ha_secret_file", str(path))
        assert res.exit_code == 2 and message in res.output and res.output.count("\n") == 1
    assert not root.exists()


def test_rest_set_https_only_needs_tls_material(node_root: Path) -> None:
    from esc import tls
    from esc.config import NodePaths

    paths = NodePaths(node_root)
    for f in (paths.tls_cert, paths.tls_key):
        f.unlink(missing_ok=True)
    r = run(node_root, "rest", "set", "--http", "off")
    assert r.exit_code == 2 and "HTTPS could not be served" in r.output
    assert _cfg(node_root).http is True
    tls.write_material(paths, *tls.make_certificate(["127.0.0.1"]), supplied=False)
    r = run(node_root, "rest", "set", "--http", "off")
    assert r.exit_code == 0 and "HTTPS only" in r.output and _cfg(node_root).http is False
    assert run(node_root, "rest", "set", "--http", "on").exit_code == 0 and _cfg(node_root).http


def test_etsi_set_and_show(tmp_path: Path) -> None:
    from esc.config import HaConfig, NodeConfig, NodePaths, Vip, save_config

    root = tmp_path / "n"
    ha = HaConfig(node_list=["10.9.9.1", "10.9.9.2"], vip=Vip.parse("10.9.9.50/24", "lo"), vif="lo",
                  self_index=0)
    save_config(NodePaths(root), NodeConfig(name="n1", ipaddr=["10.9.9.1"], ha=ha))
    shown = json.loads(run(root, "etsi", "show", "--json").output)
    assert shown["server_address"] == "10.9.9.50" and shown["user"] == "etsi" and len(shown["password"]) == 32
    assert json.loads(run(root, "etsi", "show", "--json").output)["password"] == shown["password"]  # kept
    r = run(root, "etsi", "set", "--server_address", "10.9.9.2")  # the peer's own address
    assert r.exit_code == 2 and "node's own address" in r.output
    assert _cfg(root).etsi.server_address is None  # nothing written
    r = run(root, "etsi", "set", "--server_address", "vnfm.example", "--grant_url", "http://nfvo:8080/grant/v1",
            "--grant_user_pass", "so:pw", "--package_url", "ftp://nfvo/x")
    assert r.exit_code == 2 and "package url 'ftp://nfvo/x'" in r.output
    r = run(root, "etsi", "set", "--server_address", "vnfm.example", "--grant_url", "http://nfvo:8080/grant/v1",
            "--grant_user_pass", "so:pw", "--disable")
    assert r.exit_code == 0, r.output
    etsi = _cfg(root).etsi
    assert (etsi.server_address, etsi.enabled, etsi.grant.url, etsi.grant.user) == (  # type: ignore[union-attr]
        "vnfm.example", False, "http://nfvo:8080/grant/v1", "so")
    sample = tmp_path / "vnf.csar"
    assert run(root, "etsi", "package", "sample", "-o", str(sample)).exit_code == 0
    from esc.etsi.package import read_package

    assert len(read_package(sample.read_bytes())[0].flavours["simple"].vdus) == 2
