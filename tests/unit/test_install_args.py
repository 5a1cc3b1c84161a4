"""The original installer's lines, as its HA chapter prints them (addresses filled in),
are accepted by `escadm install` and `bootvm.py`; what configures the host is applied
by the agent (esc.network: checked in a real network namespace), what describes the
VM to create is recorded; bad values are refused with one line and nothing written."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from esc import network
from esc.cli.escadm import cli, normalise_argv
from esc.config import NodeConfig, NodePaths, Route, load_config, load_secrets

ROOTED = pytest.mark.skipif(os.geteuid() != 0 or not Path("/usr/lib/postgresql/15/bin/initdb").exists(),
                            reason="needs root and PostgreSQL 15")


def run(root: Path, *args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(cli, ["--root", str(root), *normalise_argv(list(args))])


@pytest.fixture
def root() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="esc-install-"))  # pytest's tmp is 0700: postgres
    path.chmod(0o755)                                      # must reach its data dir
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def nic() -> str:
    nics = sorted(p.name for p in Path("/sys/class/net").iterdir() if p.name != "lo")
    if not nics:
        pytest.skip("keepalived needs an interface other than lo")
    return nics[0]


@ROOTED
def test_the_chapters_ha_line_with_its_spelling(root: Path) -> None:
    """ON HA NODE 1 of the chapter, word for word but for the values (its own typo
    --user_confid_pass, `--ha_node_list=A B`, the VM's --net/--image/--avail_zone)."""
    line = ("esc-ha-1 --user_pass admin:Pass-word-1 --user_confid_pass admin:Confd-pass-1 "
            "--gateway_ip 10.9.9.254 --net esc-net --ipaddr 10.9.9.1 --image ESC-5_10 "
            "--avail_zone nova:zone-1 --ha_node_list=10.9.9.1 10.9.9.2 --kad_vip 10.9.9.50 "
            f"--kad_vif {nic()} --db_volume_id 7b1c9f64-2f59-4e5c-9a51-1f5c3b1e0a42 --ha_mode drbd").split()
    res = run(root, "install", *line)
    assert res.exit_code == 0, res.output
    assert "--image, --avail_zone, --net: recorded, not used on this node" in res.output
    assert "--db_volume_id: not used with --ha_mode drbd" in res.output
    cfg = load_config(NodePaths(root))
    assert cfg.network.gateway == "10.9.9.254" and cfg.confd_user and cfg.confd_user.name == "admin"
    assert cfg.vm_request and cfg.vm_request.image == "ESC-5_10" and cfg.vm_request.net == ["esc-net"]
    assert cfg.vm_request.avail_zone == "nova:zone-1"
    assert "Confd-pass-1" not in (root / "etc/esc/esc.json").read_text()
    # the pair's NETCONF host key: made at install on the first node, from the pair's kept key
    from esc.netconf import credentials
    from esc.pairing import material

    kept = material.load(NodePaths(root))
    assert kept is not None
    key = credentials.fingerprint(credentials.host_key(kept.witness_key))
    assert f"NETCONF on port 830: host key {key}" in res.output


@ROOTED
def test_the_chapters_three_network_bgp_line(root: Path, tmp_path: Path) -> None:
    """The BGP example (bootvm.sh, three addresses and networks, the parameter and host
    files, the portal, NETCONF and AES key arguments), through the bootvm entry point."""
    params = tmp_path / "params.ini"
    params.write_text("[eth1]\nprefixlen = 24\nmtu = 1500\n")
    hosts = tmp_path / "hosts"
    hosts.write_text("# the NFVO\n10.9.8.20 nfvo nfvo.example.net\n")
    line = ("esc-bgp-1 --image ESC-5_10 --ipaddr 10.9.9.1 10.9.8.1 10.9.7.1 --gateway_ip 10.9.9.254 "
            "--net net-a net-b net-c "
            f"--network_params_file {params} --host_mapping_file {hosts} --avail_zone nova:zone-1 "
            "--ha_node_list 10.9.9.1 10.9.9.2 --user_portal_pass admin:Portal-pass-1 "
            "--user_rest_pass admin:Rest-pass-1 --confd_aes_key 0123456789abcdef "
            f"--kad_vif {nic()} --user_confd_pass admin:Confd-pass-1 --user_pass admin:Pass-word-1 "
            "--kad_vip 10.9.9.50 --bgp_remote_ip 10.9.8.254 --bgp_local_ip 10.9.8.1 --bgp_local_as 65001 "
            "--bgp_remote_as 65000 --bgp_local_router_id 10.9.8.1 --bgp_anycast_ip 10.99.0.1 "
            "--route 172.16.0.0/16:10.9.8.254:eth1").split()
    env = {**os.environ, "ESC_ROOT": str(root)}
    bootvm = Path(sys.executable).parent / "bootvm.py"
    if not bootvm.exists():
        pytest.skip("the console scripts are not installed (pip install -e .)")
    res = subprocess.run([str(bootvm), *line], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    cfg = load_config(NodePaths(root))
    assert cfg.ipaddr == ["10.9.9.1", "10.9.8.1", "10.9.7.1"]
    assert cfg.vm_request and cfg.vm_request.net == ["net-a", "net-b", "net-c"]
    assert cfg.network.interfaces["eth1"].mtu == 1500
    assert [(h.address, h.names) for h in cfg.network.hosts] == [("10.9.8.20", ["nfvo", "nfvo.example.net"])]
    assert cfg.network.routes == [Route(network="172.16.0.0/16", gateway="10.9.8.254", interface="eth1")]
    assert load_secrets(NodePaths(root))["confd_aes_key"] == "0123456789abcdef"
    assert cfg.bgp and cfg.portal_user and cfg.portal_user.name == "admin"


@pytest.mark.parametrize(("args", "message"), [
    (["--route", "172.16.0.0/16"], "NET[/LEN][:GATEWAY]:INTERFACE"),
    (["--route", "172.16.0.300/16:eth1"], "is not a network"),
    (["--route", "172.16.0.0/16:[2001:db8::1]:eth1"], "not of the network's family"),
    (["--route", "172.16.0.0/16:10.0.0.1:bad name"], "not an interface name"),
    (["--gateway_ip", "10.0.0.256"], "not an IPv4 or IPv6 address"),
    (["--gateway_ip", "0.0.0.0"], "not a gateway's address"),
    (["--confd_aes_key", "short"], "8 characters or more"),
    (["--user_confd_pass", "nopassword"], "USER:PASSWORD"),
    (["--network_params_file", "/nonexistent/params"], "No such file"),
    (["--host_mapping_file", "/nonexistent/hosts"], "No such file"),
])
def test_bad_values_are_refused_and_nothing_is_written(tmp_path: Path, args: list[str], message: str) -> None:
    root = tmp_path / "root"
    res = run(root, "install", "n1", *args)
    assert res.exit_code == 2, res.output
    assert message in res.output and res.output.count("\n") == 1, res.output
    assert not root.exists()


@pytest.mark.parametrize(("text", "message"), [
    ("[eth1]\ncolour = blue\n", "colour: unknown"),
    ("[eth1]\nmtu = 12\n", "mtu"),
    ("[bad name]\nmtu = 1500\n", "not an interface name"),
    ("mtu = 1500\n", "not INI"),
    ("[eth1]\ngateway = nowhere\n", "not an IPv4 or IPv6 address"),
])
def test_a_bad_network_params_file_is_refused(tmp_path: Path, text: str, message: str) -> None:
    f = tmp_path / "params"
    f.write_text(text)
    res = run(tmp_path / "root", "install", "n1", "--network_params_file", str(f))
    assert res.exit_code == 2 and message in res.output, res.output


def test_a_bad_host_mapping_file_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "hosts"
    for text, message in (("10.0.0.1\n", "ADDRESS NAME"), ("10.0.0.999 a\n", "line 1"),
                          ("10.0.0.1 bad_name!\n", "not a host name")):
        f.write_text(text)
        res = run(tmp_path / "root", "install", "n1", "--host_mapping_file", str(f))
        assert res.exit_code == 2 and message in res.output, res.output


def test_route_forms() -> None:
    assert Route.parse("192.0.2.254/24:192.168.0.1:eth1") == Route(network="192.0.2.0/24",
                                                                   gateway="192.168.0.1", interface="eth1")
    assert Route.parse("172.16.0.0:eth1") == Route(network="172.16.0.0/32", interface="eth1")
    assert Route.parse("[2001:db8::/64]:[2001:db8:1::1]:eth0").gateway == "2001:db8:1::1"


# --- what the agent does with them -----------------------------------------------------------


def _cfg(**network: object) -> NodeConfig:
    return NodeConfig.model_validate({"name": "n1", "ipaddr": ["10.9.9.1", "10.9.8.1"], "network": network})


def test_the_plan_adds_what_is_missing_and_nothing_else() -> None:
    links = [network.Link("eth1", 3, (), 1500), network.Link("eth0", 2, ("10.9.9.1",), 1500)]
    cfg = _cfg(gateway="10.9.9.254", routes=[{"network": "172.16.0.0/16", "gateway": "10.9.8.254",
                                              "interface": "eth1"}],
               interfaces={"eth1": {"prefixlen": 28, "mtu": 9000}, "eth9": {"mtu": 1500}})
    cmds, notes = network.plan(cfg, links, [])
    assert ["ip", "addr", "add", "10.9.8.1/28", "dev", "eth1"] in cmds  # the second interface, by index
    assert ["ip", "link", "set", "dev", "eth1", "mtu", "9000"] in cmds
    assert ["ip", "-4", "route", "replace", "default", "via", "10.9.9.254"] in cmds
    assert ["ip", "route", "replace", "172.16.0.0/16", "via", "10.9.8.254", "dev", "eth1"] in cmds
    assert notes == ["--network_params_file: no interface eth9 on this host"]
    # once done, nothing more to do
    done = [network.Link("eth1", 3, ("10.9.8.1",), 9000), network.Link("eth0", 2, ("10.9.9.1",), 1500)]
    routes = [{"dst": "default", "gateway": "10.9.9.254", "dev": "eth0"},
              {"dst": "172.16.0.0/16", "gateway": "10.9.8.254", "dev": "eth1"}]
    assert network.plan(cfg, done, routes) == ([], ["--network_params_file: no interface eth9 on this host"])


def test_the_hosts_block_is_replaced_not_added_again() -> None:
    entries = [network.HostEntry(address="10.9.8.20", names=["nfvo"])]
    once = network.hosts_text("127.0.0.1 localhost\n", entries)
    assert network.hosts_text(once, entries) == once
    assert network.hosts_text(once, []) == "127.0.0.1 localhost\n"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)")
def test_the_agent_applies_them_in_a_real_namespace(tmp_path: Path) -> None:
    ns = f"nettest-{uuid.uuid4().hex[:6]}"
    far = f"{ns}-far"  # the other ends, out of the node's list of interfaces
    for n in (ns, far):
        subprocess.run(["ip", "netns", "add", n], check=True)
    try:
        for i in (0, 1):
            subprocess.run(["ip", "link", "add", f"eth{i}", "netns", ns, "type", "veth", "peer", "name",
                            f"far{i}", "netns", far], check=True)
            subprocess.run(["ip", "-n", ns, "link", "set", f"eth{i}", "up"], check=True)
            subprocess.run(["ip", "-n", far, "link", "set", f"far{i}", "up"], check=True)
        paths = NodePaths(tmp_path)
        paths.etc.mkdir(parents=True)
        cfg = _cfg(gateway="10.9.9.254",
                   routes=[{"network": "172.16.0.0/16", "gateway": "10.9.8.254", "interface": "eth1"}],
                   interfaces={"eth1": {"mtu": 1400}}, hosts=[{"address": "10.9.8.20", "names": ["nfvo"]}])
        from esc.config import save_config
        save_config(paths, cfg)
        code = ("import sys,pathlib;from esc import network;from esc.config import NodePaths,load_config;"
                "p=NodePaths(pathlib.Path(sys.argv[1]));print('\\n'.join(network.apply(load_config(p),p)))")
        for _ in range(2):  # the second start finds everything done
            res = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", code, str(tmp_path)],
                                 capture_output=True, text=True)
            assert res.returncode == 0, res.stderr
            out = res.stdout
        assert out.strip() == "", out
        addrs = json.loads(subprocess.run(["ip", "-n", ns, "-j", "addr"], capture_output=True,
                                          text=True).stdout)
        got = {(x["ifname"], a["local"], a["prefixlen"]) for x in addrs for a in x.get("addr_info", [])}
        assert {("eth0", "10.9.9.1", 24), ("eth1", "10.9.8.1", 24)} <= got
        mtu = {x["ifname"]: x["mtu"] for x in addrs}
        assert mtu["eth1"] == 1400
        routes = subprocess.run(["ip", "-n", ns, "route"], capture_output=True, text=True).stdout
        assert "default via 10.9.9.254" in routes and "172.16.0.0/16 via 10.9.8.254 dev eth1" in routes
        assert "10.9.8.20\tnfvo" in (tmp_path / "etc/hosts").read_text()
    finally:
        for n in (ns, far):
            subprocess.run(["ip", "netns", "del", n], capture_output=True)


@ROOTED
def test_the_chapters_ipv6_northbound_line_in_a_real_namespace(root: Path) -> None:
    """The chapter's three-interface example, its own addresses: the IPv6 northbound VIP on
    eth0, VRRP on the IPv4 network of eth1. Installed inside a namespace with those three
    interfaces (keepalived -t checks the file there), then the agent's network step puts
    each --ipaddr on its interface, the IPv6 one on eth0."""
    ns = f"v6line-{uuid.uuid4().hex[:6]}"
    far = f"{ns}-far"
    for n in (ns, far):
        subprocess.run(["ip", "netns", "add", n], check=True)
    try:
        for i in (0, 1, 2):
            subprocess.run(["ip", "link", "add", f"eth{i}", "netns", ns, "type", "veth", "peer", "name",
                            f"far{i}", "netns", far], check=True)
            subprocess.run(["ip", "-n", ns, "link", "set", f"eth{i}", "up"], check=True)
        line = ["esc-ha-0", "--image", "ESC-2_2_x_yyy", "--net", "network-v6", "network",
                "--gateway_ip", "192.168.0.1", "--ipaddr", "2001:cc0:2020::fa", "192.168.0.239",
                "192.168.5.239", "--ha_node_list", "192.168.0.239", "192.168.0.243",
                "--kad_vip", "[2001:cc0:2020::fc/48]:eth0", "--kad_vif", "eth1", "--ha_mode", "drbd",
                "--route", "172.16.0.0:eth1", "--avail_zone", "nova:zone-1",
                "--user_pass", "admin:Pass-word-1"]
        bootvm = Path(sys.executable).parent / "bootvm.py"
        if not bootvm.exists():
            pytest.skip("the console scripts are not installed (pip install -e .)")
        res = subprocess.run(["ip", "netns", "exec", ns, str(bootvm), *line], capture_output=True, text=True,
                             env={**os.environ, "ESC_ROOT": str(root)}, timeout=120)
        assert res.returncode == 0, res.stdout + res.stderr
        paths = NodePaths(root)
        cfg = load_config(paths)
        assert cfg.ha and cfg.ha.vrrp_native_ipv6 and cfg.ha.vif == "eth1"
        assert (cfg.ha.vip.cidr, cfg.ha.vip.interface) == ("2001:cc0:2020::fc/48", "eth0")
        conf = paths.keepalived_conf.read_text()
        assert "native_ipv6" in conf and "unicast_peer" not in conf
        assert "2001:cc0:2020::fc/48 dev eth0" in conf
        code = ("import sys,pathlib;from esc import network;from esc.config import NodePaths,load_config;"
                "p=NodePaths(pathlib.Path(sys.argv[1]));print('\\n'.join(network.apply(load_config(p),p)))")
        res = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", code, str(root)],
                             capture_output=True, text=True)
        assert res.returncode == 0, res.stderr
        shown = subprocess.run(["ip", "-n", ns, "-j", "addr"], capture_output=True, text=True).stdout
        got = {(x["ifname"], a["local"]) for x in json.loads(shown) for a in x.get("addr_info", [])}
        assert {("eth0", "2001:cc0:2020::fa"), ("eth1", "192.168.0.239"), ("eth2", "192.168.5.239")} <= got
    finally:
        for n in (ns, far):
            subprocess.run(["ip", "netns", "del", n], capture_output=True)


def test_status_of_a_node_that_is_not_running_exits_non_zero(tmp_path: Path) -> None:
    from esc.config import save_config

    save_config(NodePaths(tmp_path), NodeConfig(name="n1"))
    for args in (["status"], ["status", "--json"], ["status", "-v"]):
        res = run(tmp_path, *args)
        assert res.exit_code == 3 and "STOPPED" in res.output, res.output


# --- addresses -------------------------------------------------------------------------------


@pytest.mark.parametrize(("args", "message"), [
    (["--kad_vip", "0.0.0.0"], "the unspecified address, not a VIP"),
    (["--kad_vip", "224.0.0.18"], "a multicast address"),
    (["--kad_vip", "127.0.0.9"], "a loopback address"),
    (["--kad_vip", "10.9.9.0/24"], "the network address of 10.9.9.0/24"),
    (["--kad_vip", "10.9.9.255/24"], "the broadcast address of 10.9.9.0/24"),
    (["--ha_node_list", "10.9.9.1 127.0.0.2"], "a loopback address, not a node's"),
    (["--ha_node_list", "10.9.9.1 169.254.0.2"], "a link-local address"),
])
def test_addresses_no_host_can_have_are_refused(tmp_path: Path, args: list[str], message: str) -> None:
    argv = ["--ipaddr", "10.9.9.1", "--ha_node_list", "10.9.9.1 10.9.9.2", "--kad_vip", "10.9.9.50/24",
            "--kad_vif", "lo", "--ha_secret", "Jq7vYy1xQwE9rT2uK8mN4pL6sD3fG5hZ"]
    for i in range(0, len(args), 2):
        argv[argv.index(args[i]) + 1] = args[i + 1]
    res = run(tmp_path / "root", "install", "n1", *argv)
    assert res.exit_code == 2 and message in res.output, res.output
    assert not (tmp_path / "root").exists()


def test_the_interfaces_say_where_the_peer_and_the_vip_must_be() -> None:
    """Where this node's address is on the interface already, the peer must share its
    subnet and the VIP lie inside it (and be neither its network nor its broadcast)."""
    from esc.config import Vip
    from esc.install import check_addresses

    addrs = {"eth0": [("eth0", "10.9.9.1", 24)], "eth1": [("eth1", "2001:db8::fa", 64)], "eth2": []}

    def check(nodes: str, vip: str, vif: str = "eth0") -> str:
        try:
            check_addresses(nodes.split(), Vip.parse(vip, vif), vif, {"10.9.9.1", "2001:db8::fa"},
                            addresses=lambda i: addrs[i])
        except Exception as e:  # noqa: BLE001
            return str(e)
        return ""

    assert check("10.9.9.1 10.9.9.2", "10.9.9.50") == ""
    assert "not on this node's subnet of --kad_vif eth0" in check("10.9.9.1 10.9.8.2", "10.9.9.50")
    assert "outside this node's subnet of eth0" in check("10.9.9.1 10.9.9.2", "10.9.7.50")
    assert "the broadcast address of 10.9.9.0/24" in check("10.9.9.1 10.9.9.2", "10.9.9.255")
    # the chapter's IPv6 northbound VIP on another interface than VRRP's
    assert check("10.9.9.1 10.9.9.2", "[2001:db8::fc/64]:eth1") == ""
    assert "outside" in check("10.9.9.1 10.9.9.2", "[2001:db9::fc/64]:eth1")
    # an interface this node has no address on yet: nothing to check against
    assert check("10.9.9.1 10.9.8.2", "10.9.7.50", vif="eth2") == ""


def test_routed_vrrp_leaves_the_subnets_alone() -> None:
    """With BGP anycast the nodes sit on networks of their own (unicast VRRP, routed)."""
    from esc.config import Vip
    from esc.install import check_addresses

    check_addresses(["10.77.1.11", "10.77.2.12"], Vip.parse("10.77.9.50/32", "eth0"), "eth0", {"10.77.1.11"},
                    routed=True, addresses=lambda i: [("eth0", "10.77.1.11", 24)])


# --- drbd_on_cinder with a Cinder volume id --------------------------------------------------

VOLUME_ID = "7b1c9f64-2f59-4e5c-9a51-1f5c3b1e0a42"


def test_a_cinder_volume_id_names_its_virtio_disk() -> None:
    from esc.config import volume_device

    assert str(volume_device(VOLUME_ID)) == "/dev/disk/by-id/virtio-7b1c9f64-2f59-4e5c-9"
    assert str(volume_device(VOLUME_ID.upper())) == "/dev/disk/by-id/virtio-7b1c9f64-2f59-4e5c-9"
    assert str(volume_device("/dev/vdb")) == "/dev/vdb"


@ROOTED
@pytest.mark.skipif(shutil.which("losetup") is None or shutil.which("mkfs.ext4") is None,
                    reason="needs losetup and mkfs.ext4")
def test_the_first_node_creates_its_database_on_the_cinder_volume_it_names(root: Path,
                                                                         tmp_path: Path) -> None:
    """The chapter passes the Cinder volume's id; the install finds it as OpenStack attaches
    it (a loop device standing for the volume, linked where virtio puts it), mounts it and
    creates the database there. A missing one is refused on the first node."""
    from esc.config import DISK_BY_ID, volume_device

    line = ("n1 --ipaddr 10.9.9.1 --ha_node_list 10.9.9.1 10.9.9.2 --kad_vip 10.9.9.50 "
            f"--kad_vif {nic()} --ha_mode drbd_on_cinder --db_volume_id {VOLUME_ID} "
            "--ha_secret Jq7vYy1xQwE9rT2uK8mN4pL6sD3fG5hZ").split()
    res = run(root, "install", *line)
    assert res.exit_code == 2 and f"{volume_device(VOLUME_ID)}): the volume could not be" in res.output
    image = tmp_path / "volume.img"
    subprocess.run(["truncate", "-s", "64M", str(image)], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True, capture_output=True)
    attached = subprocess.run(["losetup", "-f", "--show", str(image)], capture_output=True, text=True)
    if attached.returncode != 0:  # a container without loop devices
        pytest.skip(f"no loop device here: {attached.stderr.strip()}")
    loop = attached.stdout.strip()
    made = [d for d in (DISK_BY_ID.parent, DISK_BY_ID) if not d.exists()]  # removed again
    link = volume_device(VOLUME_ID)
    mount = root / "var/lib/esc/db_volume"
    try:
        try:
            DISK_BY_ID.mkdir(parents=True, exist_ok=True)
            link.symlink_to(loop)
        except OSError as e:  # a read-only /dev
            pytest.skip(f"cannot link the volume where virtio puts it: {e}")
        res = run(root, "install", *line)
        assert res.exit_code == 0, res.output
        assert os.path.ismount(mount) and (mount / "esc/pgdata/PG_VERSION").exists()
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)
        subprocess.run(["losetup", "-d", loop], capture_output=True)
        link.unlink(missing_ok=True)
        for d in reversed(made):
            d.rmdir()


def test_a_file_that_is_not_a_whole_backup_is_refused(tmp_path: Path) -> None:
    import io
    import tarfile

    from esc.backup import BackupError, read

    def tar(members: dict[str, bytes]) -> Path:
        f = tmp_path / f"b{len(list(tmp_path.iterdir()))}.tar"
        with tarfile.open(f, "w") as t:
            for name, data in members.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                t.addfile(info, io.BytesIO(data))
        return f

    out = tmp_path / "x"
    out.mkdir()
    junk = tmp_path / "junk"
    junk.write_bytes(b"\x00" * 100)
    for src, message in ((junk, "not readable as a backup"),
                         (tar({"manifest.json": b"{}"}), "not a backup of this controller"),
                         (tar({"manifest.json": b"[", "esc.json": b"{}", "esc.dump": b""}), "not JSON"),
                         (tar({"manifest.json": b'{"format": 9, "tables": {}}', "esc.json": b"{}",
                               "esc.dump": b""}), "format 9")):
        with pytest.raises(BackupError, match=message):
            read(src, out)


# --- replication on a network of its own -------------------------------------------------------


def test_replication_goes_over_the_network_asked_for(tmp_path: Path) -> None:
    from esc.config import HaConfig, Vip
    from esc.ha import postgres

    base = {"node_list": ["10.9.9.1", "10.9.9.2"], "vif": "eth0", "self_index": 0,
            "vip": Vip(address="10.9.9.50", prefixlen=24, interface="eth0"),
            "heartbeat": [["10.9.8.1", "10.9.8.2"]]}
    paths = NodePaths(tmp_path)
    default = NodeConfig(name="n1", ha=HaConfig(**base))
    moved = NodeConfig(name="n1", ha=HaConfig(**base, replication=["10.9.8.1", "10.9.8.2"]))
    assert "listen_addresses=10.9.9.1" in postgres.server_argv(paths, default)
    argv = postgres.server_argv(paths, moved)
    assert "listen_addresses=10.9.8.1" in argv
    assert any(a.startswith("primary_conninfo=host=10.9.8.2 ") for a in argv)
    hba = postgres.hba_conf(moved)
    assert "10.9.8.2/32" in hba and "10.9.9.2/32" not in hba
    # the application names synchronous replication waits for stay the nodes' own
    assert moved.ha.self_name == default.ha.self_name and moved.ha.peer_name == default.ha.peer_name
    with pytest.raises(ValueError, match="--ha_replication_list 10.9.7.1 10.9.7.2"):
        HaConfig(**base, replication=["10.9.7.1", "10.9.7.2"])
    with pytest.raises(ValueError, match="in the same order"):
        HaConfig(**base, replication=["10.9.8.2", "10.9.8.1"])
