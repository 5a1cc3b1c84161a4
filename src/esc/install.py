"""Install a node from the original installer's arguments, and turn a standalone
node into an HA node (``escadm ha set``).

Everything is validated before anything is written; if a later step fails
(initdb, say), every directory this install created is removed again, so a
failed install leaves no half-written node.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import shutil
import ssl
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from esc import secrets as esc_secrets
from esc import systemd, tls
from esc.config import (
    PG_BIN,
    BgpConfig,
    ConfigError,
    HaConfig,
    NetworkConfig,
    NodeConfig,
    NodePaths,
    Route,
    User,
    Vip,
    VmRequest,
    check_heartbeat_pair,
    check_md5,
    is_cinder_id,
    load_config,
    load_secrets,
    parse_ip,
    save_config,
    validation_message,
    volume_device,
    write_atomic,
    write_json_atomic,
)
from esc.ha import postgres, vip
from esc.pairing import credentials
from esc.pairing import material as pair_material
from esc.pairing.handshake import Decision
from esc.pairing.material import PairMaterial
from esc.pairing.service import PairingError, PairingRefused, pair_node
from esc.render import render_all

log = logging.getLogger("esc.install")

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


@dataclass
class HaArgs:
    ha_node_list: str | None = None
    kad_vip: str | None = None
    kad_vif: str | None = None
    kad_vri: int | None = None
    ha_mode: str | None = None
    db_volume_id: str | None = None
    ha_secret: str | None = None
    ha_join_token: str | None = None
    ha_witness: str | None = None
    # a witness on etcd over TLS (etcd+https://): the members' CA, this node's client cert/key
    ha_witness_ca: str | None = None
    ha_witness_cert: str | None = None
    ha_witness_key: str | None = None
    # repeatable: one "IP1 IP2" per extra heartbeat network
    ha_heartbeat_list: list[str] | tuple[str, ...] | None = None
    # the network PostgreSQL replicates over: node_list's or one of the heartbeat lists'
    ha_replication_list: str | None = None


@dataclass
class BgpArgs:
    """The BGP anycast settings, as ``escadm bgp set`` (``--local_ip``) and the installer
    (``--bgp_local_ip``) name them."""

    local_ip: str | None = None
    anycast_ip: str | None = None
    remote_ip: str | None = None
    local_as: int | None = None
    remote_as: int | None = None
    local_router_id: str | None = None
    md5: str | None = None

    def given(self) -> bool:
        return any(v not in (None, "") for v in self.__dict__.values())


@dataclass
class NodeArgs:
    """The installer's arguments about the host and the VM, as the original's bootvm
    takes them: those about the host are applied by the agent (esc.network), those
    describing a VM to create are recorded."""

    gateway_ip: str | None = None
    route: list[str] | tuple[str, ...] = ()
    network_params_file: str | None = None
    host_mapping_file: str | None = None
    image: str | None = None
    flavor: str | None = None
    avail_zone: str | None = None
    net: str | None = None  # names, space-separated (--net n1 n2 n3)
    user_confd_pass: str | None = None
    confd_aes_key: str | None = None

    def vm_given(self) -> list[str]:
        return [f"--{k}" for k in ("image", "flavor", "avail_zone", "net") if getattr(self, k)]


def build_network(args: NodeArgs) -> tuple[NetworkConfig, VmRequest | None]:
    """Validated, files read: what the node's network is asked to be, and the VM record."""
    from esc import network

    gateway = None
    if args.gateway_ip:
        gw = parse_ip(args.gateway_ip, "--gateway_ip")
        if gw.is_unspecified or gw.is_multicast or gw.is_loopback:
            raise ConfigError(f"--gateway_ip {gw}: not a gateway's address")
        gateway = str(gw)
    routes = [Route.parse(r) for r in args.route if r]
    interfaces = network.read_network_params(args.network_params_file) if args.network_params_file else {}
    hosts = network.read_host_mapping(args.host_mapping_file) if args.host_mapping_file else []
    vm = None
    if args.vm_given():
        vm = VmRequest(image=args.image, flavor=args.flavor, avail_zone=args.avail_zone,
                       net=(args.net or "").split())
    return NetworkConfig(gateway=gateway, routes=routes, interfaces=interfaces, hosts=hosts), vm


def build_bgp(args: BgpArgs, own: set[str], taken: dict[str, str], prefix: str = "--"
              ) -> tuple[BgpConfig | None, str | None]:
    """Validate BGP arguments: (config, MD5 key) or (None, None) when none is given.
    ``own``: this node's addresses (``--local_ip`` must be one); ``taken``: addresses the
    anycast address must not be (node addresses, VIP), with what they are. ``prefix`` is
    how the caller names the options (``--`` or ``--bgp_``), for the messages."""

    def named(msg: str) -> str:
        return msg.replace("--", prefix) if prefix != "--" else msg

    if not args.given():
        return None, None
    required = ("local_ip", "anycast_ip", "remote_ip", "local_as", "remote_as", "local_router_id")
    missing = [f"{prefix}{k}" for k in required if getattr(args, k) in (None, "")]
    if missing:
        every = ", ".join(prefix + k for k in required)
        raise ConfigError(f"BGP needs {', '.join(missing)} too (all of {every}; {prefix}md5 is optional)")
    try:
        md5 = check_md5(args.md5) if args.md5 else None
        cfg = BgpConfig(local_ip=args.local_ip, anycast_ip=args.anycast_ip, remote_ip=args.remote_ip,
                        local_as=args.local_as, remote_as=args.remote_as,  # type: ignore[arg-type]
                        local_router_id=args.local_router_id, md5=md5 is not None)  # type: ignore[arg-type]
    except ConfigError as e:
        raise ConfigError(named(str(e))) from None
    except ValueError as e:
        raise ConfigError(named(validation_message(e))) from None
    if own and cfg.local_ip not in own:
        raise ConfigError(named(f"--local_ip {cfg.local_ip} is not an address of this node "
                                f"({' '.join(sorted(own))})"))
    if cfg.anycast_ip in taken:
        raise ConfigError(named(f"--anycast_ip {cfg.anycast_ip} is {taken[cfg.anycast_ip]}; "
                                "it must be an address of its own"))
    return cfg, md5


def _taken_addresses(ha: HaConfig | None, ipaddr: list[str]) -> dict[str, str]:
    taken = {str(parse_ip(a, "--ipaddr")): "this node's address" for a in ipaddr}
    if ha:
        taken.update({a: "a node's address (--ha_node_list)" for a in ha.node_list})
        taken.update({a: "a node's heartbeat address (--ha_heartbeat_list)" for p in ha.heartbeat for a in p})
        taken[ha.vip.address] = "the VIP (--kad_vip)"
    return taken


def split_list(value: str | list[str] | tuple[str, ...] | None) -> list[str]:
    """``'IP1 IP2'``, ``'IP1,IP2'`` or ``['IP1', 'IP2']`` → ``['IP1', 'IP2']``."""
    if value is None:
        return []
    items = [value] if isinstance(value, str) else list(value)
    return [p for item in items for p in re.split(r"[\s,]+", item.strip()) if p]


def local_addresses() -> set[str]:
    return {str(ipaddress.ip_address(a)) for _, a, _ in vip.addresses()}


def _not_a_host_address(address: str) -> str:
    """Why ``address`` cannot be a node's or a VIP ("" if it can)."""
    a = ipaddress.ip_address(address)
    limited = a.version == 4 and a == ipaddress.IPv4Address("255.255.255.255")
    for bad, why in ((a.is_unspecified, "the unspecified address"), (a.is_loopback, "a loopback address"),
                     (a.is_multicast, "a multicast address"), (a.is_link_local, "a link-local address"),
                     (limited, "the broadcast address")):
        if bad:
            return why
    return ""


def own_subnet(iface: str, own: set[str], family: int,
               addresses: Callable[[str], list[tuple[str, str, int]]] = vip.addresses
               ) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    """The subnet of ``iface`` that holds one of this node's own addresses (of ``family``),
    as the interface is now; None when it holds none yet (the agent applies --ipaddr at
    its first start): then nothing can be checked against it."""
    for _, address, prefixlen in addresses(iface):
        a = ipaddress.ip_address(address)
        if a.version == family and str(a) in own and not a.is_loopback and not a.is_link_local:
            return ipaddress.ip_interface(f"{a}/{prefixlen}").network
    return None


def check_addresses(nodes: list[str], vip_cfg: Vip, vif: str, own: set[str], routed: bool = False,
                    addresses: Callable[[str], list[tuple[str, str, int]]] = vip.addresses) -> None:
    """The nodes and the VIP are addresses a host can have, the VIP is not its subnet's
    network or broadcast address, and, where the interfaces already say, the peer is on
    this node's subnet of --kad_vif and the VIP on this node's subnet of its interface
    (not when VRRP is ``routed``: BGP anycast, with nodes on networks of their own)."""
    for a in nodes:
        if why := _not_a_host_address(a):
            raise ConfigError(f"--ha_node_list {a}: {why}, not a node's")
    if why := _not_a_host_address(vip_cfg.address):
        raise ConfigError(f"--kad_vip {vip_cfg.address}: {why}, not a VIP")
    v = ipaddress.ip_address(vip_cfg.address)

    def edge(net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> None:
        if v.version == 4 and net.prefixlen <= 30 and v in (net.network_address, net.broadcast_address):
            kind = "network" if v == net.network_address else "broadcast"
            raise ConfigError(f"--kad_vip {v}: the {kind} address of {net}, not a VIP")

    if vip_cfg.prefixlen < (32 if v.version == 4 else 128):
        edge(ipaddress.ip_interface(vip_cfg.cidr).network)
    if routed:
        return
    family = ipaddress.ip_address(nodes[0]).version
    vrrp_net = own_subnet(vif, own, family, addresses)
    if vrrp_net is not None:
        outside = [a for a in nodes if ipaddress.ip_address(a) not in vrrp_net]
        if outside:
            raise ConfigError(f"--ha_node_list: {' '.join(outside)} is not on this node's subnet of "
                              f"--kad_vif {vif} ({vrrp_net}): VRRP needs both nodes on one network")
    vip_net = own_subnet(vip_cfg.interface, own, v.version, addresses)
    if vip_net is not None:
        if v not in vip_net:
            raise ConfigError(f"--kad_vip {v}: outside this node's subnet of {vip_cfg.interface} "
                              f"({vip_net}); clients on that network could not reach it")
        edge(vip_net)


def build_ha(ha: HaArgs, ipaddr: list[str], vrid_default: int = 50,
             routed: bool = False) -> HaConfig | None:
    """``routed``: VRRP between nodes on different networks (BGP anycast northbound)."""
    # HA options that alone do not make a node HA
    extras = ("ha_secret", "ha_join_token", "ha_witness", "ha_heartbeat_list", "ha_replication_list",
              "ha_witness_ca", "ha_witness_cert", "ha_witness_key")
    given = {k: v for k, v in ha.__dict__.items() if v not in (None, "") and k not in extras}
    if not given:
        for opt in extras:
            if getattr(ha, opt):
                raise ConfigError(f"--{opt} is for HA nodes: give --ha_node_list, --kad_vip, --kad_vif")
        return None
    missing = [f"--{k}" for k in ("ha_node_list", "kad_vip", "kad_vif") if not getattr(ha, k)]
    if missing:
        raise ConfigError(f"HA needs {', '.join(missing)} (with --ha_node_list, --kad_vip, --kad_vif)")
    nodes = [str(parse_ip(a, "--ha_node_list")) for a in split_list(ha.ha_node_list)]
    if len(nodes) != 2:
        raise ConfigError(f"--ha_node_list needs exactly two node addresses, got {len(nodes)}")
    if nodes[0] == nodes[1]:
        raise ConfigError("--ha_node_list: the two node addresses must differ")
    if ipaddress.ip_address(nodes[0]).version != ipaddress.ip_address(nodes[1]).version:
        raise ConfigError("--ha_node_list: both addresses must be of the same family")
    own = {str(parse_ip(a, "--ipaddr")) for a in ipaddr} or local_addresses()
    mine = [i for i, a in enumerate(nodes) if a in own]
    if len(mine) != 1:
        where = "--ipaddr" if ipaddr else "this host's interfaces"
        raise ConfigError(f"--ha_node_list {' '.join(nodes)}: this node's own address "
                          f"({where}: {' '.join(sorted(own)) or 'none'}) must be exactly one of them")
    assert ha.kad_vif and ha.kad_vip
    if not vip.interface_exists(ha.kad_vif):
        raise ConfigError(f"--kad_vif: no interface named {ha.kad_vif!r} on this host")
    vip_cfg = Vip.parse(ha.kad_vip, ha.kad_vif)
    if not vip.interface_exists(vip_cfg.interface):
        raise ConfigError(f"--kad_vip: no interface named {vip_cfg.interface!r} on this host")
    if vip_cfg.family == 4 and ipaddress.ip_address(nodes[0]).version == 6:
        raise ConfigError(f"--kad_vip {vip_cfg.address}: keepalived does not support a single IPv4 VIP "
                          "on an IPv6 VRRP instance (--ha_node_list is IPv6); use an IPv6 VIP")
    if vip_cfg.address in nodes:
        raise ConfigError(f"--kad_vip {vip_cfg.address} is a node's own address; it must be a free one")
    # this node's addresses as the install names them (not every address of the host)
    check_addresses(nodes, vip_cfg, ha.kad_vif,
                    {nodes[mine[0]], *(str(parse_ip(a, "--ipaddr")) for a in ipaddr)}, routed)
    # an extra network's address need not be in --ipaddr (that names the node's main one)
    heartbeat = _heartbeat_paths(ha.ha_heartbeat_list, nodes, own | local_addresses(), mine[0])
    if any(vip_cfg.address in pair for pair in heartbeat):
        raise ConfigError(f"--kad_vip {vip_cfg.address} is a node's heartbeat address "
                          "(--ha_heartbeat_list); it must be a free one")
    vri = ha.kad_vri if ha.kad_vri is not None else vrid_default
    mode = ha.ha_mode or "drbd"
    if mode not in ("drbd", "drbd_on_cinder"):
        raise ConfigError(f"--ha_mode must be drbd or drbd_on_cinder, not {mode!r}")
    if mode == "drbd_on_cinder":
        if not ha.db_volume_id:
            raise ConfigError("--ha_mode drbd_on_cinder needs --db_volume_id (a Cinder volume id, "
                              "a block device or a mount point)")
        vol = volume_device(ha.db_volume_id)
        # a Cinder volume may be attached after the install (node 2); node 1 needs it now
        if not (vol.is_block_device() or vol.is_dir()) and not is_cinder_id(ha.db_volume_id):
            raise ConfigError(f"--db_volume_id {vol}: not a block device nor a directory")
    replication = None
    if ha.ha_replication_list:
        replication = [str(parse_ip(a, "--ha_replication_list")) for a in split_list(ha.ha_replication_list)]
    try:
        cfg = HaConfig(node_list=nodes, vip=vip_cfg, vif=ha.kad_vif, vri=vri, mode=mode,  # type: ignore[arg-type]
                       db_volume_id=ha.db_volume_id, self_index=mine[0], witness=ha.ha_witness or None,
                       heartbeat=heartbeat, replication=replication,
                       witness_ca=_abs(ha.ha_witness_ca), witness_cert=_abs(ha.ha_witness_cert),
                       witness_key=_abs(ha.ha_witness_key))
    except ValueError as e:
        raise ConfigError(validation_message(e)) from None
    check_witness_tls(cfg)
    return cfg


def _abs(path: str | None) -> str | None:
    """A file the agent reads at each start, wherever it runs from."""
    return str(Path(path).resolve()) if path else None


def check_witness_tls(ha: HaConfig) -> None:
    """The etcd witness's TLS files load (the agent reads them where they are, at each
    start: a renewed certificate needs only `escadm restart`)."""
    ctx = ssl.create_default_context()
    for option, load in (("--ha_witness_ca", lambda: ctx.load_verify_locations(cafile=ha.witness_ca)),
                         ("--ha_witness_cert/--ha_witness_key",
                          lambda: ctx.load_cert_chain(ha.witness_cert or "", ha.witness_key))):
        if (ha.witness_ca if option == "--ha_witness_ca" else ha.witness_cert) is None:
            continue
        try:
            load()
        except (OSError, ssl.SSLError) as e:
            raise ConfigError(f"{option}: {e.strerror or e.args[-1] if e.args else e}: not a PEM "
                              "file that loads (a CA certificate; a certificate and its key)") from None


def _heartbeat_paths(values: list[str] | tuple[str, ...] | None, nodes: list[str], own: set[str],
                     self_index: int) -> list[list[str]]:
    """--ha_heartbeat_list, each given once per extra network: validated as --ha_node_list
    is, and this node's address must be at the same position as in --ha_node_list (the
    peer's address on each network is the other one)."""
    out: list[list[str]] = []
    taken = set(nodes)
    for value in values or ():
        pair = [str(parse_ip(a, "--ha_heartbeat_list")) for a in split_list(value)]
        try:
            check_heartbeat_pair(pair, taken)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        taken.update(pair)
        mine = [i for i, a in enumerate(pair) if a in own]
        if len(mine) != 1:
            raise ConfigError(f"--ha_heartbeat_list {' '.join(pair)}: this node's own address "
                              f"(--ipaddr and this host's interfaces: {' '.join(sorted(own)) or 'none'}) "
                              "must be exactly one of them")
        if mine[0] != self_index:
            raise ConfigError(f"--ha_heartbeat_list {' '.join(pair)}: give the addresses in --ha_node_list "
                              f"order (this node's is number {self_index + 1} there, "
                              f"here number {mine[0] + 1})")
        out.append(pair)
    return out


def _user(value: str | None, option: str) -> User | None:
    if not value:
        return None
    name, password = esc_secrets.split_user_pass(value, option)
    return User(name=name, password_hash=esc_secrets.hash_password(password))


def check_pairing_args(ha: HaConfig | None, ha_args: HaArgs, user_pass: str | None,
                       stored: credentials.ClientCredential | None = None) -> None:
    """Before anything is written: a weak --ha_secret or a malformed join token is refused,
    and the second node of the list needs something to pair with."""
    if ha_args.ha_secret:
        credentials.check_ha_secret(ha_args.ha_secret)
    if ha_args.ha_join_token:
        credentials.parse_join_token(ha_args.ha_join_token)
    if ha and ha.self_index == 1 and not (ha_args.ha_secret or user_pass or ha_args.ha_join_token
                                          or stored):
        raise ConfigError("this node (the second of --ha_node_list) pairs with the first: give "
                          "--user_pass (or --ha_secret) as given there, or --ha_join_token from "
                          "`escadm ha join-token` on it")


def store_pairing_credential(paths: NodePaths, ha_args: HaArgs, user_pass: str | None) -> None:
    if ha_args.ha_secret or user_pass:
        credentials.store_password(paths, ha_args.ha_secret or user_pass or "")
    if ha_args.ha_join_token:
        credentials.store_join_token(paths, ha_args.ha_join_token)


def obtain_material(paths: NodePaths, cfg: NodeConfig, timeout: float = 2.0) -> PairMaterial | None:
    """Pair with the peer if it answers and holds the pair's material (a node reinstalled
    beside a running peer takes the pair's); else the first node of --ha_node_list makes
    the material, and the second leaves pairing to its agent. What it gets is installed.
    A peer that refuses the credential is an error the operator must see now."""
    ha = cfg.ha
    assert ha is not None
    try:
        outcome = pair_node(paths, cfg, timeout=timeout)
        if outcome.decision == Decision.TAKE:
            return outcome.material
    except PairingRefused as e:
        raise ConfigError(f"pairing with {ha.peer_address}: {e}") from None
    except PairingError:
        pass  # no credential, or the peer is not running yet: the agent pairs when it starts
    if ha.self_index != 0:
        return None
    material = PairMaterial.generate()
    pair_material.install(paths, cfg, material)
    return material


def install(name: str, root: Path, ipaddr: list[str], ha_args: HaArgs,
            user_pass: str | None = None, user_rest_pass: str | None = None,
            user_portal_pass: str | None = None, force: bool = False,
            tls_cert: str | None = None, tls_key: str | None = None,
            bgp_args: BgpArgs | None = None, node_args: NodeArgs | None = None) -> NodeConfig:
    if not NAME_RE.fullmatch(name):  # "$" alone would let a trailing newline through
        raise ConfigError(f"node name {name!r}: use letters, digits, '.', '_' or '-'")
    ipaddr = split_list(ipaddr)
    for a in ipaddr:
        parse_ip(a, "--ipaddr")
    ha = build_ha(ha_args, ipaddr, routed=bgp_args is not None and bgp_args.given())
    own = {str(parse_ip(a, "--ipaddr")) for a in ipaddr} | local_addresses()
    bgp, md5 = build_bgp(bgp_args or BgpArgs(), own, _taken_addresses(ha, ipaddr), "--bgp_")
    generated_rest = None
    if not user_rest_pass:  # the REST API is never left open: generate a password
        generated_rest = esc_secrets.generate()
        user_rest_pass = f"admin:{generated_rest}"
    node_args = node_args or NodeArgs()
    net, vm = build_network(node_args)
    if node_args.confd_aes_key is not None and len(node_args.confd_aes_key) < 8:
        raise ConfigError("--confd_aes_key: 8 characters or more")
    cfg = NodeConfig(name=name, ipaddr=ipaddr, ha=ha, rest_user=_user(user_rest_pass, "--user_rest_pass"),
                     portal_user=_user(user_portal_pass, "--user_portal_pass"),
                     os_user=_user(user_pass, "--user_pass"), bgp=bgp, network=net, vm_request=vm,
                     confd_user=_user(node_args.user_confd_pass, "--user_confd_pass"))
    check_pairing_args(ha, ha_args, user_pass)
    supplied_tls = operator_tls(tls_cert, tls_key)
    paths = NodePaths(root)
    if paths.config.exists() and not force:
        raise ConfigError(f"a node is already installed under {root} ({paths.config}); "
                          "use --force to replace it")
    if paths.config.exists() and paths.agent_sock.exists():
        raise ConfigError(f"the node under {root} is running: `escadm stop` it before --force")
    if ha and ha.mode == "drbd_on_cinder" and ha.self_index == 0 and not is_cinder_id(ha.db_volume_id or "") \
            and Path(ha.db_volume_id or "").is_dir() and not os.path.ismount(ha.db_volume_id or ""):
        raise ConfigError(f"--db_volume_id {ha.db_volume_id}: not a mount point; "
                          "the first node needs its volume to create the database")
    if paths.config.exists():
        uninstall(paths)
    created = {top for d in (paths.etc, paths.lib, paths.log, paths.run)
               if (top := _first_missing(d)) is not None}
    try:
        if ha and ha.mode == "drbd_on_cinder" and ha.self_index == 0 and \
                not _volume_present(paths, cfg):
            vid = ha.db_volume_id or ""
            where = f" ({volume_device(vid)})" if is_cinder_id(vid) else ""
            raise ConfigError(f"--db_volume_id {ha.db_volume_id}{where}: the volume could not be "
                              "mounted; the first node needs it to create the database")
        for d in (paths.etc, paths.lib, paths.log, paths.run):
            d.mkdir(parents=True, exist_ok=True)
        os.chmod(paths.etc, 0o755)
        set_secret(paths, "bgp_md5", md5)
        set_secret(paths, "confd_aes_key", node_args.confd_aes_key)
        store_pairing_credential(paths, ha_args, user_pass)
        if supplied_tls:
            tls.write_material(paths, *supplied_tls, supplied=True)
        material = obtain_material(paths, cfg) if ha else None  # installed, HTTPS certificate too
        if ha is None and not supplied_tls:
            tls.write_material(paths, *pair_material.https_material(cfg, None), supplied=False)
        if ha is None:  # this node's own kept key, made now: its ETSI password and NETCONF host key
            from esc.etsi.auth import kept_key

            kept_key(paths)
        if generated_rest:
            write_atomic(paths.etc / "rest_credentials", f"admin:{generated_rest}\n".encode(),
                         mode=0o600)  # 0600 from its creation, never readable by others
        if ha is None or ha.self_index == 0:
            init_database(paths, cfg, material.derive("replication") if material else None)
        else:
            postgres.prepare_dirs(paths, cfg)
        render_all(paths, cfg)
        for line in systemd.install_unit(paths, cfg):
            log.info("%s", line)
        save_config(paths, cfg)  # last: its presence means "installed"
    except BaseException:
        volume = paths.lib / "db_volume"
        if os.path.ismount(volume):
            subprocess.run(["umount", str(volume)], capture_output=True)
        for d in sorted(created):
            if os.path.ismount(volume) and volume.is_relative_to(d):
                continue  # never delete through a volume that is still mounted
            shutil.rmtree(d, ignore_errors=True)
        raise
    return cfg


def operator_tls(cert_file: str | None, key_file: str | None) -> tuple[bytes, bytes] | None:
    """The operator's HTTPS certificate and key, checked; None when not given."""
    if not (cert_file or key_file):
        return None
    if not (cert_file and key_file):
        raise ConfigError("give both --tls_cert and --tls_key, or neither")
    return tls.check_supplied(cert_file, key_file)


def _first_missing(path: Path) -> Path | None:
    """The outermost directory of ``path`` that does not exist yet (what to remove on failure)."""
    top = None
    for p in [path, *path.parents]:
        if p.exists():
            break
        top = p
    return top


def _volume_present(paths: NodePaths, cfg: NodeConfig) -> bool:
    assert cfg.ha and cfg.ha.db_volume_id
    vol = volume_device(cfg.ha.db_volume_id)
    if vol.is_block_device():
        mount = paths.db_volume_mount(cfg)
        mount.mkdir(parents=True, exist_ok=True)
        if not os.path.ismount(mount):
            subprocess.run(["mount", str(vol), str(mount)], capture_output=True)
        return os.path.ismount(mount)
    return os.path.ismount(vol)


def set_secret(paths: NodePaths, key: str, value: str | None) -> None:
    data = load_secrets(paths)
    if value is None and key not in data:
        return
    if value is None:
        data.pop(key)
    else:
        data[key] = value
    write_json_atomic(paths.secrets, data, mode=0o600)


def init_database(paths: NodePaths, cfg: NodeConfig, repl_password: str | None) -> None:
    """initdb, then create the roles, the esc database and its schema."""
    from esc.services.schema import ensure_schema

    postgres.initdb(paths, cfg)
    pgdata = paths.pgdata(cfg)
    opts = f"-c port={cfg.pg_port} -c unix_socket_directories={paths.pg_socket_dir} -c listen_addresses=''"
    ctl = str(PG_BIN / "pg_ctl")
    install_log = paths.log / "postgres-install.log"
    install_log.touch()
    postgres.chown_postgres(install_log)
    res = postgres.run_as_postgres([ctl, "-D", str(pgdata), "-o", opts, "-w", "-t", "60",
                                    "-l", str(install_log), "start"])
    if res.returncode != 0:
        raise RuntimeError(f"could not start PostgreSQL for setup: {res.stderr.strip()[-400:]}")
    try:
        with psycopg.connect(postgres.local_conninfo(paths, cfg), autocommit=True) as c:
            if repl_password:
                c.execute(sql.SQL("CREATE ROLE {} WITH LOGIN REPLICATION PASSWORD {}")
                          .format(sql.Identifier(postgres.REPL_USER), sql.Literal(repl_password)))
                for stmt in postgres.REPLICATION_ROLE_SQL:
                    c.execute(stmt)
            c.execute("CREATE ROLE esc WITH LOGIN")
            c.execute("CREATE DATABASE esc OWNER esc")
        conninfo = postgres.local_conninfo(paths, cfg, "esc").replace("user=postgres", "user=esc")
        with psycopg.connect(conninfo) as c:
            ensure_schema(c)
            c.commit()
    finally:
        postgres.run_as_postgres([ctl, "-D", str(pgdata), "-m", "fast", "-w", "stop"])


def uninstall(paths: NodePaths) -> None:
    for d in (paths.etc, paths.lib, paths.run):
        shutil.rmtree(d, ignore_errors=True)


def ha_set(root: Path, ha_args: HaArgs, user_pass: str | None) -> NodeConfig:
    """Turn a standalone node into an HA node (or change its HA settings)."""
    paths = NodePaths(root)
    cfg = load_config(paths)
    ha = build_ha(ha_args, cfg.ipaddr, routed=cfg.bgp is not None)
    if ha is None:
        raise ConfigError("escadm ha set needs --ha_node_list, --kad_vip and --kad_vif")
    check_pairing_args(ha, ha_args, user_pass, credentials.client_credential(paths))
    new = cfg.model_copy(update={"ha": ha})
    store_pairing_credential(paths, ha_args, user_pass)
    material = pair_material.load(paths)
    if material is not None:
        pair_material.install(paths, new, material)  # a new VIP: a certificate that names it
    else:
        material = obtain_material(paths, new)
    if material is not None and postgres.has_data(paths.pgdata(new)):
        _ensure_replication_role(paths, new, material.derive("replication"))
    render_all(paths, new)
    save_config(paths, new)
    return new


def _ensure_replication_role(paths: NodePaths, cfg: NodeConfig, password: str) -> None:
    """A standalone database has no replication role yet: add it (single-user mode, so
    this works whether or not the agent runs; if it runs, over its socket)."""
    create = (f"DO $$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname='{postgres.REPL_USER}') "
              f"THEN CREATE ROLE {postgres.REPL_USER} WITH LOGIN REPLICATION; END IF; END$$;")
    try:
        with psycopg.connect(postgres.local_conninfo(paths, cfg), autocommit=True) as c:
            if c.execute("SELECT pg_is_in_recovery()").fetchone()[0]:
                return  # a standby: roles replicate from the primary, where `ha set` runs too
            c.execute(create)
            for stmt in postgres.REPLICATION_ROLE_SQL:
                c.execute(stmt)
            c.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                sql.Identifier(postgres.REPL_USER), sql.Literal(password)))
        return
    except psycopg.OperationalError:
        pass
    if (paths.pgdata(cfg) / "standby.signal").exists():
        return  # a stopped standby: same
    pw = password.replace("'", "''")
    grants = "".join(f"{g};\n" for g in postgres.REPLICATION_ROLE_SQL)
    stmt = f"{create}\n{grants}ALTER ROLE {postgres.REPL_USER} PASSWORD '{pw}';\n"
    res = subprocess.run([str(PG_BIN / "postgres"), "--single", "-D", str(paths.pgdata(cfg)), "postgres"],
                         input=stmt, capture_output=True, text=True, user=postgres.PG_USER, cwd="/")
    if res.returncode != 0:
        raise RuntimeError(f"could not add the replication role: {res.stderr.strip()[-300:]}")


def bgp_set(root: Path, args: BgpArgs) -> NodeConfig:
    """``escadm bgp set``: validate, then write the config, the MD5 key and exabgp.conf
    (``escadm reload`` applies them)."""
    paths = NodePaths(root)
    cfg = load_config(paths)
    own = {str(parse_ip(a, "--ipaddr")) for a in cfg.ipaddr} | local_addresses()
    bgp, md5 = build_bgp(args, own, _taken_addresses(cfg.ha, cfg.ipaddr))
    if bgp is None:
        raise ConfigError("escadm bgp set needs --local_ip, --anycast_ip, --remote_ip, --local_as, "
                          "--remote_as and --local_router_id")
    new = cfg.model_copy(update={"bgp": bgp})
    render_all(paths, new, md5=md5)  # first: a file refused by the renderer changes nothing
    set_secret(paths, "bgp_md5", md5)
    if not tls.is_supplied(paths):  # a certificate that names the anycast address
        tls.write_material(paths, *pair_material.https_material(new, pair_material.load(paths)),
                           supplied=False)
    save_config(paths, new)
    return new
