"""The lab: two HA nodes and a client in namespaces on this machine.

Used by ``escadm lab``, the tests, ``make demo`` and ``make bench``. Nodes are
installed with the same ``escadm install`` arguments a real install takes and
started as a real host would start them. Faults are verbs: ``kill`` (power
cut: every process at once, links down), ``start`` (power on), ``cut`` /
``heal`` (cable).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from esc import secrets as esc_secrets
from esc.client import AgentClient
from esc.config import NodePaths, write_json_atomic
from esc.lab import etcd_members, net, router

NODES = ("n1", "n2")
CLIENT = "client"
SUBNET4, SUBNET6 = "10.77.0", "fd77:"
ADDR = {"n1": 11, "n2": 12, CLIENT: 100}
VIP = f"{SUBNET4}.50"
VM_POOL = f"{SUBNET4}.128/25"  # the VMs the controller deploys, on the same lab network
VRID = 77
WITNESS_PORT = 8025
# `lab up --paths 2`: a second network between the nodes only (heartbeat), br1, eth1;
# `--paths 3` a third (br2, eth2). VRRP, replication and the client stay on the first.
PATH_SUBNET4 = {1: "10.78.0", 2: "10.79.0"}
PATH_SUBNET6 = {1: "fd78:", 2: "fd79:"}
PATH_BRIDGE = {1: "br1", 2: "br2"}
MAX_PATHS = 1 + len(PATH_BRIDGE)
# `--northbound-ipv6`: the last of those networks is the northbound, IPv6 only, as in the
# original's three-interface example: the VIP is an IPv6 address there (VRRP stays IPv4 on
# eth0, carried by an IPv6 keepalived instance) and the client reaches the pair on it.
NB_VIP = 50  # fd7N::50

# BGP mode (`lab up --bgp`): each node in its own subnet behind a BIRD router, the client
# behind the router too; the pair is reached at an anycast address announced by the active.
BGP_SUBNET4 = {"n1": "10.77.1", "n2": "10.77.2", CLIENT: "10.77.0"}
BGP_SUBNET6 = {"n1": "fd77:1:", "n2": "fd77:2:", CLIENT: "fd77:"}
BGP_BRIDGE = {"n1": "br1", "n2": "br2", CLIENT: net.BRIDGE}
BGP_AS = {"n1": 65011, "n2": 65012}  # as in the original's BIRD example
ANYCAST = "10.99.0.1"
BGP_KAD_VIP = "10.77.9.50/32"  # keepalived still elects (unicast VRRP, routed); its VIP reaches no one
BGP_MD5 = "esc-lab-md5"


# every namespace a lab may have (the etcd members only with --witness etcd)
HOSTS = (*NODES, CLIENT, router.NAME, *etcd_members.MEMBERS)


class LabError(RuntimeError):
    pass


def etcd_kill(member: str | None = None) -> None:
    """Kill one etcd member (a crash), or every one."""
    if member is None:
        etcd_members.kill_all(lab_dir())
    else:
        _check_member(member)
        etcd_members.kill(lab_dir(), member)


def etcd_start(member: str | None = None) -> None:
    """Start one etcd member again (its data kept), or every one; returns once they serve."""
    members = etcd_members.MEMBERS if member is None else (_check_member(member) or (member,))
    try:
        etcd_members.restart(lab_dir(), members, etcd_subnet(bgp_mode()))
    except RuntimeError as e:
        raise LabError(str(e)) from None


def _check_member(member: str) -> None:
    if lab_witness() != "etcd":
        raise LabError("the lab has no etcd witness (escadm lab up --witness etcd)")
    if member not in etcd_members.MEMBERS:
        raise LabError(f"unknown etcd member {member!r} (one of {', '.join(etcd_members.MEMBERS)})")


def lab_dir() -> Path:
    return Path(os.environ.get("ESC_LAB_DIR", "/var/tmp/esc-lab"))


def state_file() -> Path:
    return lab_dir() / "lab.json"


def node_root(name: str) -> Path:
    return lab_dir() / name


def bgp_mode() -> bool:
    """Whether the lab that is up (or being built) is the BGP topology."""
    try:
        return bool(json.loads(state_file().read_text()).get("bgp"))
    except (OSError, ValueError):
        return os.environ.get("ESC_LAB_BGP") == "1"


def node_ip(name: str, bgp: bool | None = None) -> str:
    if bgp if bgp is not None else bgp_mode():
        return f"{BGP_SUBNET4[name]}.{ADDR[name]}"
    return f"{SUBNET4}.{ADDR[name]}"


def path_ip(name: str, index: int) -> str:
    """A node's address on network ``index`` (0: the main one)."""
    return node_ip(name, False) if index == 0 else f"{PATH_SUBNET4[index]}.{ADDR[name]}"


def northbound_ip(name: str, index: int) -> str:
    """A host's IPv6 address on the northbound network ``index`` (--northbound-ipv6)."""
    return f"{PATH_SUBNET6[index]}:{ADDR[name]}"


def northbound_vip(index: int) -> str:
    return f"{PATH_SUBNET6[index]}:{NB_VIP}"


def vip_host(state: dict) -> str:
    """The VIP (or anycast address) as a URL's host: an IPv6 one in brackets."""
    return f"[{state['vip']}]" if ":" in state["vip"] else state["vip"]


def vip_url(state: dict, port: int | None = None, scheme: str = "http") -> str:
    return f"{scheme}://{vip_host(state)}:{port or state['api_port']}"


def lab_paths() -> int:
    """How many networks join the nodes in the lab that is up."""
    try:
        return int(json.loads(state_file().read_text()).get("paths") or 1)
    except (OSError, ValueError):
        return 1


def router_ip(name: str) -> str:
    """The router's address on ``name``'s subnet (BGP mode): the node's BGP neighbour."""
    return f"{BGP_SUBNET4[name]}.1"


def bgp_neighbors(md5: str | None, wrong_md5_for: str | None = None) -> list[router.Neighbor]:
    return [router.Neighbor(f"E{i + 1}", node_ip(n, True), BGP_AS[n],
                            ("not-" + md5 if n == wrong_md5_for else md5) if md5 else None)
            for i, n in enumerate(NODES)]


def escadm_argv() -> list[str]:
    return [sys.executable, "-m", "esc.cli.escadm"]


def load_state() -> dict:
    try:
        return json.loads(state_file().read_text())
    except FileNotFoundError:
        raise LabError("the lab is not up (run `escadm lab up`)") from None


def is_up() -> bool:
    return state_file().exists() or any(net.exists(n) for n in HOSTS)


WITNESS_KINDS = ("builtin", "etcd")


def witness_kind(witness: bool | str | None) -> str | None:
    """``lab up --witness`` (the built-in witness) or ``--witness etcd``; None: none."""
    if witness is True:
        return "builtin"
    if not witness:
        return None
    if witness not in WITNESS_KINDS:
        raise LabError(f"unknown witness {witness!r} (one of {', '.join(WITNESS_KINDS)})")
    return str(witness)


def lab_witness() -> str | None:
    """The witness kind of the lab that is up."""
    try:
        return json.loads(state_file().read_text()).get("witness_kind")
    except (OSError, ValueError):
        return None


def etcd_subnet(bgp: bool = False) -> str:
    """The etcd members sit on the client's network (behind the router in BGP mode)."""
    return BGP_SUBNET4[CLIENT] if bgp else SUBNET4


def witness_address(bgp: bool = False, kind: str | None = "builtin") -> str:
    """The lab's built-in witness runs in the client namespace: it reaches both nodes, as a
    management host would, even when the nodes cannot reach each other. An etcd witness:
    three members beside the client."""
    if kind == "etcd":
        return etcd_members.cluster_url(etcd_subnet(bgp))
    return f"{node_ip(CLIENT, bgp)}:{WITNESS_PORT}"


def install_args(node: str, mode: str, secret: str, rest_password: str, bgp: bool = False,
                 md5: str | None = None, witness: bool | str | None = False, paths: int = 1,
                 portal_password: str | None = None, replication_path: int = 0,
                 northbound_ipv6: bool = False, confd_password: str | None = None) -> list[str]:
    """The arguments a real install of this node takes, for each lab mode:
    ``drbd`` (default), ``drbd_on_cinder`` (a volume per node) or ``standalone``; with
    ``bgp`` the original's ``--bgp_*`` arguments too; with ``northbound_ipv6`` the
    original's three-interface form (every interface's address in --ipaddr, in order,
    and the VIP ``[IPv6/len]:ethN`` on the last)."""
    ip = node_ip(node, bgp)
    nb = paths - 1 if northbound_ipv6 else 0
    ipaddr = [ip]
    if nb:
        ipaddr += [path_ip(node, i) for i in range(1, nb)] + [northbound_ip(node, nb)]
    args = ["install", node, "--ipaddr", *ipaddr, "--user_pass", f"admin:{secret}",
            "--user_rest_pass", f"admin:{rest_password}"]
    if portal_password:
        args += ["--user_portal_pass", f"admin:{portal_password}"]
    if confd_password:  # as every HA install line of the original's chapter
        args += ["--user_confd_pass", f"admin:{confd_password}", "--confd_aes_key", confd_password[:16]]
    if bgp:
        args += ["--bgp_local_ip", ip, "--bgp_anycast_ip", ANYCAST, "--bgp_remote_ip", router_ip(node),
                 "--bgp_local_as", str(BGP_AS[node]), "--bgp_remote_as", str(router.ROUTER_AS),
                 "--bgp_local_router_id", ip] + (["--bgp_md5", md5] if md5 else [])
    if mode == "standalone":
        return args
    vip = BGP_KAD_VIP if bgp else f"{VIP}/24"
    if nb:
        vip = f"[{northbound_vip(nb)}/64]:eth{nb}"
    args += ["--ha_node_list", f"{node_ip('n1', bgp)} {node_ip('n2', bgp)}", "--kad_vip", vip,
             "--kad_vif", "eth0", "--kad_vri", str(VRID), "--ha_mode", mode]
    if mode == "drbd_on_cinder":
        args += ["--db_volume_id", str(volume_path(node))]
    if witness:
        args += ["--ha_witness", witness_address(bgp, witness_kind(witness))]
    for i in range(1, nb or paths):
        args += ["--ha_heartbeat_list", f"{path_ip('n1', i)} {path_ip('n2', i)}"]
    if replication_path:
        k = replication_path
        args += ["--ha_replication_list", f"{path_ip('n1', k)} {path_ip('n2', k)}"]
    return args


def volume_path(node: str) -> Path:
    return lab_dir() / f"volume-{node}"


def _node_mount_ns(node: str) -> list[str]:
    """``nsenter`` prefix into the running agent's mount namespace: ``ip netns exec``
    gives each command its own copy, so a mount made here later is not seen there."""
    try:
        pid = int((NodePaths(node_root(node)).agent_pid).read_text())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return []
    return ["nsenter", "-t", str(pid), "-m", "--"]


def attach_volume(node: str) -> None:
    """A small tmpfs stands for the node's database volume (a Cinder volume)."""
    vol = volume_path(node)
    vol.mkdir(parents=True, exist_ok=True)
    mount = ["mount", "-t", "tmpfs", "-o", "size=512m,mode=0755", f"esc-{node}", str(vol)]
    if not os.path.ismount(vol):
        subprocess.run(mount, check=True, capture_output=True)
    inside = _node_mount_ns(node)
    if inside:
        subprocess.run([*inside, "sh", "-c", f"mountpoint -q {vol} || {' '.join(mount)}"],
                       capture_output=True)


def detach_volume(node: str) -> None:
    vol = volume_path(node)
    inside = _node_mount_ns(node)
    if inside:
        subprocess.run([*inside, "umount", "-l", str(vol)], capture_output=True)
    if os.path.ismount(vol):
        subprocess.run(["umount", "-l", str(vol)], capture_output=True)


MODES = ("drbd", "drbd_on_cinder", "standalone")


def _bgp_hosts() -> list[net.Host]:
    return [net.Host(n, f"{node_ip(n, True)}/24", f"{BGP_SUBNET6[n]}:{ADDR[n]}/64", BGP_BRIDGE[n],
                     f"{BGP_SUBNET4[n]}.1", f"{BGP_SUBNET6[n]}:1") for n in (*NODES, CLIENT)]


def _router_ports() -> list[net.RouterPort]:
    return [net.RouterPort(BGP_BRIDGE[n], f"{BGP_SUBNET4[n]}.1/24", f"{BGP_SUBNET6[n]}:1/64")
            for n in (CLIENT, *NODES)]


def up(timeout: float = 120.0, log=print, mode: str = "drbd", bgp: bool = False,  # type: ignore[no-untyped-def]
       md5: str | None = BGP_MD5, witness: bool | str | None = False, paths: int = 1,
       replication_path: int = 0, northbound_ipv6: bool = False) -> dict:
    """Build the lab. ``bgp``: the nodes in two subnets behind a BIRD router, reached at
    an anycast address (``md5``: the sessions' TCP MD5 key, None for none). ``witness``:
    True or "builtin", a witness in the client namespace; "etcd", a 3-member etcd
    cluster beside the client; given to both nodes. ``paths``: networks between the
    nodes (2: a second one, br1 / eth1, for the heartbeat only). ``northbound_ipv6``:
    the last of them is an IPv6-only northbound network with the VIP and the client."""
    witness = witness_kind(witness)
    if mode not in MODES:
        raise LabError(f"unknown lab mode {mode!r} (one of {', '.join(MODES)})")
    if witness and mode == "standalone":
        raise LabError("a witness is for a pair: not with --mode standalone")
    if not 1 <= paths <= MAX_PATHS:
        raise LabError(f"--paths must be between 1 and {MAX_PATHS}, not {paths}")
    if paths > 1 and (bgp or mode == "standalone"):
        raise LabError("--paths 2 is for a VRRP pair: not with --bgp or --mode standalone")
    if northbound_ipv6 and (paths < 2 or bgp or mode == "standalone"):
        raise LabError("--northbound-ipv6 makes the last of --paths (2 or 3) the northbound network "
                       "of a VRRP pair: give --paths 2 or 3, not with --bgp or --mode standalone")
    if northbound_ipv6 and replication_path == paths - 1:
        raise LabError(f"--replication-path {replication_path} is the northbound network")
    if is_up():
        raise LabError("a lab is already up (or left over): run `escadm lab down` first")
    t0 = time.monotonic()
    if bgp:
        hosts = _bgp_hosts()
    else:
        nb = paths - 1 if northbound_ipv6 else 0

        def links(n: str) -> tuple[net.Link, ...]:
            if n not in NODES:  # the client: on the northbound network too, if there is one
                return (net.Link(PATH_BRIDGE[nb], None, f"{northbound_ip(n, nb)}/64"),) if nb else ()
            return tuple(net.Link(PATH_BRIDGE[i], None if i == nb else f"{path_ip(n, i)}/24",
                                  f"{PATH_SUBNET6[i]}:{ADDR[n]}/64") for i in range(1, paths))

        hosts = [net.Host(n, f"{node_ip(n, False)}/24", f"{SUBNET6}:{ADDR[n]}/64", extra=links(n))
                 for n in (*NODES, CLIENT)]
    if witness == "etcd":
        client = next(h for h in hosts if h.name == CLIENT)
        hosts += etcd_members.hosts(etcd_subnet(bgp), BGP_SUBNET6[CLIENT] if bgp else SUBNET6, client.bridge,
                                    client.gateway4, client.gateway6)
    lab_dir().mkdir(parents=True, exist_ok=True)
    rest_password, portal_password = esc_secrets.generate(), esc_secrets.generate()
    confd_password = esc_secrets.generate()
    vip = northbound_vip(paths - 1) if northbound_ipv6 else ANYCAST if bgp else VIP
    state = {"mode": mode, "vip": vip, "rest_user": "admin",
             "rest_password": rest_password, "api_port": 8080,
             "portal_user": "admin", "portal_password": portal_password, "portal_port": 9001,
             "confd_user": "admin", "confd_password": confd_password, "confd_port": 830,
             "nodes": {n: {"address": node_ip(n, bgp), "root": str(node_root(n))} for n in NODES},
             "client": {"address": node_ip(CLIENT, bgp)},
             "witness": witness_address(bgp, witness) if witness else None, "witness_kind": witness,
             "paths": paths,
             "replication_path": replication_path, "northbound_ipv6": northbound_ipv6,
             # where the VIP lives, for a power cut to take it away
             "vip_cidr": f"{vip}/64" if northbound_ipv6 else BGP_KAD_VIP if bgp else f"{VIP}/24",
             "vip_dev": f"eth{paths - 1}" if northbound_ipv6 else "eth0"}
    if northbound_ipv6:
        state["client"]["northbound"] = northbound_ip(CLIENT, paths - 1)
    if bgp:
        state["bgp"] = {"anycast": ANYCAST, "kad_vip": BGP_KAD_VIP, "router_as": router.ROUTER_AS,
                        "node_as": BGP_AS, "md5": md5 is not None,
                        "hold_time": router.HOLD_TIME, "keepalive": router.KEEPALIVE}
    try:
        if bgp:
            net.create(hosts, bridges=tuple(sorted(set(BGP_BRIDGE.values()))))
            net.create_router(router.NAME, _router_ports())
            router.start(lab_dir(), router_ip(CLIENT), bgp_neighbors(md5))
        else:
            net.create(hosts, bridges=(net.BRIDGE, *(PATH_BRIDGE[i] for i in range(1, paths))))
        write_json_atomic(state_file(), state, mode=0o600)
        if witness == "etcd":  # up before the nodes, as a site's etcd would be
            etcd_members.start_all(lab_dir(), etcd_subnet(bgp))
            log(f"lab: etcd members {', '.join(etcd_members.MEMBERS)} serving "
                f"in {time.monotonic() - t0:.1f}s")
        shared = esc_secrets.generate()
        for n in NODES:
            if mode == "drbd_on_cinder":
                attach_volume(n)
            res = net.netns_exec(n, *escadm_argv(), "--root", str(node_root(n)),
                                 *install_args(n, mode, shared, rest_password, bgp, md5, witness, paths,
                                              portal_password=portal_password,
                                              replication_path=replication_path,
                                              northbound_ipv6=northbound_ipv6,
                                              confd_password=confd_password),
                                 check=False, timeout=180)
            if res.returncode != 0:
                raise LabError(f"install of {n} failed: {(res.stderr or res.stdout).strip()}")
            res = net.netns_exec(n, *escadm_argv(), "--root", str(node_root(n)), "vim", "set",
                                 "--state-dir", str(vim_state_dir()), "--ns-prefix", net.ns(""),
                                 "--network", f"{net.switch()}:{net.BRIDGE}", "--pool", VM_POOL,
                                 "--prefixlen", "24",
                                 check=False)
            if res.returncode != 0:
                raise LabError(f"vim set on {n} failed: {(res.stderr or res.stdout).strip()}")
        if witness == "builtin":  # its token derives from the pair key, which the first node made
            res = net.netns_exec(NODES[0], *escadm_argv(), "--root", str(node_root(NODES[0])),
                                 "witness", "token", check=False)
            if res.returncode != 0:
                raise LabError(f"witness token: {(res.stderr or res.stdout).strip()}")
            token = witness_token_file()
            token.write_text(res.stdout.strip() + "\n")
            token.chmod(0o600)
            start_witness(witness_address(bgp))
        log(f"lab: network and nodes installed in {time.monotonic() - t0:.1f}s")
        for n in NODES:
            start(n)
        if mode == "standalone":
            wait_roles({"STANDALONE"}, timeout)
        else:
            wait_roles({"ACTIVE", "STANDBY"}, timeout)
        log(f"lab: nodes up ({', '.join(f'{k} {v}' for k, v in roles().items())}) "
            f"in {time.monotonic() - t0:.1f}s")
    except BaseException:
        dump_logs()
        down()
        raise
    return state


def witness_token_file() -> Path:
    return lab_dir() / "witness.token"


def start_witness(address: str | None = None) -> int:
    """Start the witness in the client namespace (its pid in the lab directory)."""
    address = address or load_state().get("witness") or witness_address()
    log_file = open(lab_dir() / "witness.log", "ab")  # noqa: SIM115 - the child keeps it
    proc = subprocess.Popen(
        exec_argv(CLIENT, [*escadm_argv(), "witness", "run", "--listen", address,
                           "--token-file", str(witness_token_file()), "--max-lease", "2"]),
        stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file, start_new_session=True)
    log_file.close()
    (lab_dir() / "witness.pid").write_text(f"{proc.pid}\n")
    return proc.pid


def kill_witness() -> None:
    """Kill the witness (by its pid, and what ``ip netns exec`` started under it)."""
    net.kill_by_pid_file(lab_dir() / "witness.pid")


def vim_state_dir() -> Path:
    """The lab's VIM (VMs as processes in their own network namespaces): shared by both
    nodes, as a real VIM is, so the new active after a failover sees the same VMs."""
    return lab_dir() / "vim"


def down() -> None:
    from esc.vim.local import cleanup_all

    cleanup_all(net.ns(""), vim_state_dir())
    kill_witness()
    etcd_members.kill_all(lab_dir())
    router.stop(lab_dir())
    net.destroy(list(HOSTS))
    for n in NODES:
        detach_volume(n)
    shutil.rmtree(lab_dir(), ignore_errors=True)


def start(node: str) -> None:
    """Power on: cable in, then the node's own start-up (escadm start)."""
    _check_node(node)
    net.set_link(node, True)
    for i in range(len(net.ports(node))):
        net.host_ip(node, "link", "set", f"eth{i}", "up")
    res = net.netns_exec(node, *escadm_argv(), "--root", str(node_root(node)), "start",
                         check=False, timeout=60)
    if res.returncode != 0:
        raise LabError(f"start of {node} failed: {(res.stderr or res.stdout).strip()}")


@dataclass(frozen=True)
class Killed:
    pids: list[int]
    at: float  # wall time of the SIGKILLs


def kill(node: str, link_first: bool = False) -> Killed:
    """Power cut: every process of the node at once, links down, VIP gone with the RAM.

    The processes die first, so their kernel still closes their TCP connections (a FIN
    reaches the BGP router: it drops the route at once). ``link_first``: the cable goes
    first, so nothing leaves the node any more, as when a host loses power: the router
    notices only when its BGP hold timer expires."""
    _check_node(node)
    pids = net.pids(node)
    if link_first:
        net.set_link(node, False)
    # Stopped first, then killed: killed in PID order, keepalived's parent died before its
    # VRRP child, which got its parent-death SIGTERM in time to send a priority-0 advert
    # (a graceful handover a power cut never gives; 3 to 5 runs in 10).
    net.signal_all(pids, signal.SIGSTOP)
    net.signal_all(pids)  # then all at once: nothing may react to the link going down
    at = time.time()
    net.set_link(node, False)
    state = load_state()
    if bgp_mode():
        net.host_ip(node, "addr", "del", BGP_KAD_VIP, "dev", "eth0", check=False)
        net.host_ip(node, "addr", "del", f"{ANYCAST}/32", "dev", "lo", check=False)
    else:
        net.host_ip(node, "addr", "del", state.get("vip_cidr", f"{VIP}/24"), "dev",
                    state.get("vip_dev", "eth0"), check=False)
    return Killed(sorted(set(pids) | set(net.kill_all(node))), at)


def reboot(node: str) -> int:
    """A host's reboot: a power cut, then what its boot does: /run empty again (a tmpfs),
    the cables in, and systemd starting the agent's unit by its ExecStart as the install
    wrote it (no `escadm start`). Returns the agent's pid."""
    from esc import systemd

    kill(node)
    shutil.rmtree(node_root(node) / "run", ignore_errors=True)
    net.set_link(node, True)
    for i in range(len(net.ports(node))):
        net.host_ip(node, "link", "set", f"eth{i}", "up")
    paths = NodePaths(node_root(node))
    paths.log.mkdir(parents=True, exist_ok=True)
    with open(paths.log / "agent.out", "ab") as out:  # the journal, here
        proc = subprocess.Popen(exec_argv(node, systemd.exec_start(paths)), stdin=subprocess.DEVNULL,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True, cwd="/")
    return proc.pid


def _network(node: str, network: int | None) -> int | None:
    if network is not None and not 0 <= network < len(net.ports(node)):
        raise LabError(f"{node} has no network {network} (0 to {len(net.ports(node)) - 1})")
    return network


def cut(node: str, network: int | None = None) -> None:
    """Pull the node's cables: every one (None), or only that of network ``network``."""
    _check_node(node)
    net.set_link(node, False, _network(node, network))


def heal(node: str, network: int | None = None) -> None:
    _check_node(node)
    net.set_link(node, True, _network(node, network))


def exec_argv(node: str, argv: list[str]) -> list[str]:
    if node not in HOSTS:
        raise LabError(f"unknown lab host {node!r} (one of {', '.join(HOSTS)})")
    return ["ip", "netns", "exec", net.ns(node), *argv]


def _check_node(node: str) -> None:
    if node not in NODES:
        raise LabError(f"unknown lab node {node!r} (one of {', '.join(NODES)})")
    if not net.exists(node):
        raise LabError("the lab is not up (run `escadm lab up`)")


def node_status(node: str) -> dict:
    try:
        return AgentClient(NodePaths(node_root(node))).status(timeout=2)
    except Exception as e:  # a dead or stopped node is a normal lab state
        return {"role": "STOPPED", "error": str(e)}


def status() -> dict:
    state = load_state()
    state = dict(state)
    state["nodes"] = {n: {**v, **{"role": node_status(n).get("role")}}
                      for n, v in state["nodes"].items()}
    state.update(etsi_credentials())
    return state


def etsi_credentials() -> dict:
    """The ETSI service's user and password (the pair's: alike on both nodes) and ports."""
    from esc.etsi import auth as etsi_auth

    try:
        password = etsi_auth.password(NodePaths(node_root(NODES[0])))
    except OSError:
        return {}
    return {"etsi_user": etsi_auth.ETSI_USER, "etsi_password": password, "etsi_port": 8250,
            "etsi_https_port": 8251}


def roles() -> dict[str, str]:
    return {n: node_status(n).get("role", "STOPPED") for n in NODES}


def wait_roles(want: set[str], timeout: float = 60.0, nodes: tuple[str, ...] = NODES) -> dict[str, str]:
    """Wait until the roles of ``nodes`` are exactly ``want`` (as a set)."""
    deadline = time.monotonic() + timeout
    seen: dict[str, str] = {}
    while time.monotonic() < deadline:
        seen = {n: node_status(n).get("role", "STOPPED") for n in nodes}
        if set(seen.values()) == want and (len(seen) == len(want) or len(want) == 1):
            return seen
        time.sleep(0.1)
    raise LabError(f"timed out after {timeout:.0f}s waiting for roles {sorted(want)}; roles: {seen}")


def active_node() -> str | None:
    for n, r in roles().items():
        if r == "ACTIVE":
            return n
    return None


def dump_logs(lines: int = 40, out=sys.stderr) -> None:  # type: ignore[no-untyped-def]
    bird_log = router.files(lab_dir())["log"]
    if bird_log.exists():
        text = bird_log.read_text(errors="replace").splitlines()[-lines:]
        print(f"===== router: bird.log (last {len(text)} lines) =====", file=out)
        print("\n".join(text), file=out)
    for n in NODES:
        log_dir = NodePaths(node_root(n)).log
        for f in sorted(log_dir.glob("*.log")) if log_dir.exists() else []:
            text = f.read_text(errors="replace").splitlines()[-lines:]
            print(f"===== {n}: {f.name} (last {len(text)} lines) =====", file=out)
            print("\n".join(text), file=out)


def client_run(argv: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return net.netns_exec(CLIENT, *argv, check=False, timeout=timeout)
