"""escadm: the operator's tool (click)."""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import click

from esc import health, logcollect
from esc.agent.history import KINDS as HISTORY_KINDS
from esc.client import AgentClient, AgentDown
from esc.config import (
    SNMP_AUTH,
    SNMP_PRIV,
    ConfigError,
    NodeConfig,
    NodePaths,
    default_root,
    load_config,
    validation_message,
)
from esc.install import BgpArgs, HaArgs, NodeArgs, bgp_set, ha_set, install

MULTI_VALUE = ("--ha_node_list", "--ipaddr", "--ha_heartbeat_list", "--ha_replication_list")
# options of the original installer followed by several words (--net n1 n2 n3): up to the next option
MULTI_WORD = ("--net",)
# A value continuing a multi-value option looks like addresses (a node name does not).
ADDRESS_LIKE = re.compile(r"[0-9A-Fa-f.:\[\]/, ]+")


def normalise_argv(argv: list[str]) -> list[str]:
    """The original installer takes ``--ha_node_list IP1 IP2`` (several values
    after one option); click takes one. Join such values into one argument."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        name, eq, first = arg.partition("=")
        if name in MULTI_WORD:
            values = [first] if eq else []
            i += 1
            while i < len(argv) and not argv[i].startswith("-"):
                values.append(argv[i])
                i += 1
            out += [name, " ".join(values)]
            continue
        if name in MULTI_VALUE:
            values = [first] if eq else []
            i += 1
            while i < len(argv) and ADDRESS_LIKE.fullmatch(argv[i]) and \
                    ("." in argv[i] or ":" in argv[i]):  # "dc1" is a name, not an address
                values.append(argv[i])
                i += 1
            out += [name, " ".join(values)]
            continue
        out.append(arg)
        i += 1
    return out


def paths_of(ctx: click.Context) -> NodePaths:
    return NodePaths(ctx.obj["root"])


def audit(message: str) -> None:
    """One line per operator action in ``<root>/var/log/esc/escadm.log`` (never secrets:
    the command line is not logged, only what was done)."""
    ctx = click.get_current_context(silent=True)
    if ctx is None or ctx.obj is None:
        return
    log_dir = NodePaths(ctx.obj["root"]).log
    if not log_dir.parent.parent.exists():  # no node here (e.g. a refused install)
        return
    try:
        log_dir.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
        with open(log_dir / "escadm.log", "a") as f:
            f.write(f"{stamp} {ctx.command_path}: {message}\n")
    except OSError:
        pass


def done(message: str) -> None:
    click.echo(message)
    audit(message)


def fail(message: str, code: int = 1) -> None:
    click.echo(f"escadm: error: {message}", err=True)
    audit(f"error: {message}")
    sys.exit(code)


def read_secret_file(path: str, option: str) -> str:
    """The first line of ``path`` (without its newline): a secret kept off the command
    line (which ``ps`` and the shell history show)."""
    try:
        text = Path(path).read_text()
    except OSError as e:
        fail(f"--{option}_file {path}: {e.strerror or e}", 2)
    line = text.split("\n", 1)[0].rstrip("\r")
    if not line:
        fail(f"--{option}_file {path}: the first line is empty", 2)
    return line


def secret_files(*names: str):  # type: ignore[no-untyped-def]
    """For each secret option ``--NAME``, a ``--NAME_file PATH`` that reads it from a file
    instead. Put it right under ``@...command``: it wraps the options below it."""
    def deco(f):  # type: ignore[no-untyped-def]
        @functools.wraps(f)
        def wrapper(*args, **kwargs):  # type: ignore[no-untyped-def]
            for name in names:
                path = kwargs.pop(f"{name}_file", None)
                if path is not None:
                    if kwargs.get(name):
                        fail(f"give --{name} or --{name}_file, not both", 2)
                    kwargs[name] = read_secret_file(path, name)
            return f(*args, **kwargs)

        for name in reversed(names):
            wrapper = click.option(f"--{name}_file", metavar="PATH",
                                   help=f"Read --{name} from the first line of this file "
                                        "(kept off the command line).")(wrapper)
        return wrapper
    return deco


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--root", type=click.Path(path_type=Path), default=None,
              help="Root of the node's files (default $ESC_ROOT or /).")
@click.pass_context
def cli(ctx: click.Context, root: Path | None) -> None:
    """Operate one node of an active/standby controller pair."""
    ctx.obj = {"root": (root or default_root()).resolve()}


def ha_options(f):  # type: ignore[no-untyped-def]
    for opt in reversed([
        click.option("--ha_node_list", help="Both nodes' addresses: 'IP1 IP2'."),
        click.option("--kad_vip", help="VIP[/len][:iface] or [IPv6/len]:iface."),
        click.option("--kad_vif", help="Interface for VRRP."),
        click.option("--kad_vri", type=int, help="VRRP virtual router id (1-255)."),
        click.option("--ha_mode", type=click.Choice(["drbd", "drbd_on_cinder"])),
        click.option("--db_volume_id", help="Block device or mount point of the DB volume."),
        click.option("--ha_secret", help="Pairing password of both nodes, at least 128 bits "
                                         "(else --user_pass pairs them)."),
        click.option("--ha_join_token", help="One-time token from `escadm ha join-token` on the peer "
                                             "(pairs without a shared password)."),
        click.option("--ha_witness", help="ADDR:PORT of a witness (escadm witness run) on a third host, "
                                          "or an etcd cluster: etcd://HOST:PORT,HOST:PORT,... "
                                          "(etcd+https:// for TLS)."),
        click.option("--ha_witness_ca", help="With etcd+https://: the CA file of the etcd members' "
                                             "certificates (default: the system's)."),
        click.option("--ha_witness_cert", help="With etcd+https://: this node's client certificate "
                                               "(when etcd asks for one)."),
        click.option("--ha_witness_key", help="The private key of --ha_witness_cert."),
        click.option("--ha_replication_list",
                     help="Both nodes' addresses on the network PostgreSQL replicates over, in "
                          "--ha_node_list order: --ha_node_list's (the default) or one --ha_heartbeat_list."),
        click.option("--ha_heartbeat_list", multiple=True,
                     help="Both nodes' addresses on one more network, in --ha_node_list order: "
                          "'IP1 IP2' (repeat per network). The peer is alive while it answers on any."),
    ]):
        f = opt(f)
    return f


def bgp_options(prefix: str):  # type: ignore[no-untyped-def]
    """The BGP options: ``--local_ip`` ... for ``bgp set``, ``--bgp_local_ip`` ... for install."""
    def deco(f):  # type: ignore[no-untyped-def]
        for opt in reversed([
            click.option(f"--{prefix}local_ip", help="This node's address for the BGP session."),
            click.option(f"--{prefix}anycast_ip", help="Address clients use (on lo of both nodes)."),
            click.option(f"--{prefix}remote_ip", help="The router this node peers with."),
            click.option(f"--{prefix}local_as", type=int, help="This node's AS number (1-4294967295)."),
            click.option(f"--{prefix}remote_as", type=int, help="The router's AS number."),
            click.option(f"--{prefix}local_router_id", help="This node's BGP router id (IPv4 dotted)."),
            click.option(f"--{prefix}md5", help="TCP MD5 key of the session (optional; same on the router)."),
        ]):
            f = opt(f)
        return f
    return deco


@cli.command("install")
@secret_files("ha_secret", "ha_join_token", "user_pass", "user_rest_pass", "user_portal_pass",
              "user_confd_pass", "confd_aes_key", "bgp_md5")
@click.argument("name")
@click.option("--ipaddr", help="This node's address(es).")
@ha_options
@bgp_options("bgp_")
@click.option("--user_pass", help="USER:PASS of the admin user.")
@click.option("--user_rest_pass", help="USER:PASS for the REST API.")
@click.option("--user_portal_pass", help="USER:PASS for the portal.")
@click.option("--user_confd_pass", "--user_confid_pass", "user_confd_pass",
              help="USER:PASS for the NETCONF service (--user_confid_pass: the chapter's spelling).")
@click.option("--confd_aes_key", help="The NETCONF service's AES key (kept in secrets.json).")
@click.option("--tls_cert", help="PEM certificate (chain) for HTTPS 8443 (else generated).")
@click.option("--tls_key", help="PEM private key of --tls_cert.")
@click.option("--gateway_ip", help="The default gateway (applied by the agent at each start).")
@click.option("--route", "route", multiple=True, metavar="NET[/LEN][:GW]:IF",
              help="A static route (repeatable; applied by the agent at each start).")
@click.option("--network_params_file", metavar="PATH",
              help="INI, a section per interface: prefixlen, mtu, gateway.")
@click.option("--host_mapping_file", metavar="PATH", help="ADDRESS NAME... lines (/etc/hosts form).")
@click.option("--image", help="The VM image (recorded: the original's bootvm creates the VM).")
@click.option("--flavor", help="The VM flavor (recorded).")
@click.option("--avail_zone", help="The VM's availability zone (recorded).")
@click.option("--net", help="The VM's networks, by name (recorded).")
@click.option("--force", is_flag=True, help="Replace an existing node under this root.")
@click.pass_context
def install_cmd(ctx: click.Context, name: str, ipaddr: str | None, ha_node_list, kad_vip, kad_vif,  # type: ignore[no-untyped-def]
                kad_vri, ha_mode, db_volume_id, ha_secret, ha_join_token, ha_witness, ha_witness_ca,
                ha_witness_cert, ha_witness_key, ha_replication_list, ha_heartbeat_list, bgp_local_ip,
                bgp_anycast_ip,
                bgp_remote_ip, bgp_local_as, bgp_remote_as, bgp_local_router_id, bgp_md5, user_pass,
                user_rest_pass, user_portal_pass, user_confd_pass, confd_aes_key, tls_cert, tls_key,
                gateway_ip, route, network_params_file, host_mapping_file, image, flavor, avail_zone, net,
                force) -> None:
    """Install a node (STANDALONE, or HA with --ha_node_list/--kad_vip/--kad_vif; BGP
    anycast with the --bgp_* options). Takes every argument of the original installer's
    lines; `bootvm.py NAME ...` is the same command."""
    ha = HaArgs(ha_node_list, kad_vip, kad_vif, kad_vri, ha_mode, db_volume_id, ha_secret=ha_secret,
                ha_join_token=ha_join_token, ha_witness=ha_witness, ha_heartbeat_list=ha_heartbeat_list,
                ha_replication_list=ha_replication_list, ha_witness_ca=ha_witness_ca,
                ha_witness_cert=ha_witness_cert, ha_witness_key=ha_witness_key)
    bgp = BgpArgs(bgp_local_ip, bgp_anycast_ip, bgp_remote_ip, bgp_local_as, bgp_remote_as,
                  bgp_local_router_id, bgp_md5)
    node = NodeArgs(gateway_ip=gateway_ip, route=route, network_params_file=network_params_file,
                    host_mapping_file=host_mapping_file, image=image, flavor=flavor, avail_zone=avail_zone,
                    net=net, user_confd_pass=user_confd_pass, confd_aes_key=confd_aes_key)
    try:
        cfg = install(name, ctx.obj["root"], ipaddr or [], ha, user_pass, user_rest_pass,
                      user_portal_pass, force, tls_cert=tls_cert, tls_key=tls_key, bgp_args=bgp,
                      node_args=node)
    except ConfigError as e:
        fail(str(e), 2)
    except RuntimeError as e:
        fail(f"install failed, nothing left behind: {e}")
    kind = f"HA node {cfg.ha.self_index + 1} of 2, VIP {cfg.ha.vip.cidr}" if cfg.ha else "STANDALONE node"
    if cfg.bgp:
        kind += f", anycast {cfg.bgp.anycast_prefix} via {cfg.bgp.remote_ip}"
    from esc import systemd

    if systemd.manages(paths_of(ctx)):
        click.echo(f"{systemd.UNIT} enabled: the node starts at boot; `escadm start` starts it now")
    if db_volume_id and cfg.ha and cfg.ha.mode != "drbd_on_cinder":
        click.echo("--db_volume_id: not used with --ha_mode drbd (the database is on this node's disk)")
    if node.vm_given():
        click.echo(f"{', '.join(node.vm_given())}: recorded, not used on this node (they describe the VM "
                   "the original's bootvm creates)")
    if cfg.confd_user is not None:
        click.echo(f"NETCONF on port {cfg.confd_port}: {_confd_host_key(paths_of(ctx), cfg)}")
    done(f"installed {cfg.name} under {ctx.obj['root']}: {kind}")


def _confd_host_key(paths: NodePaths, cfg: NodeConfig) -> str:
    """The NETCONF host key's fingerprint, or why there is none yet (a second node that
    pairs when its agent starts)."""
    from esc.netconf import credentials
    from esc.pairing import material

    if cfg.is_ha and material.load(paths) is None:
        return "host key the pair's, once this node has paired (escadm status -v)"
    auth = credentials.make(paths, cfg)
    return f"host key {credentials.fingerprint(auth.host_key)}" if auth else "no user"


@cli.group()
def ha() -> None:
    """HA settings and role operations."""


@ha.command("set")
@secret_files("ha_secret", "ha_join_token", "user_pass")
@ha_options
@click.option("--user_pass", help="USER:PASS of the admin user: pairs the nodes if --ha_secret is absent "
                                  "(the one given at install is remembered).")
@click.pass_context
def ha_set_cmd(ctx: click.Context, ha_node_list, kad_vip, kad_vif, kad_vri, ha_mode,  # type: ignore[no-untyped-def]
               db_volume_id, ha_secret, ha_join_token, ha_witness, ha_witness_ca, ha_witness_cert,
               ha_witness_key, ha_replication_list, ha_heartbeat_list, user_pass) -> None:
    """Make this node an HA node (then `escadm reload` and `escadm restart`)."""
    args = HaArgs(ha_node_list, kad_vip, kad_vif, kad_vri, ha_mode, db_volume_id, ha_secret=ha_secret,
                  ha_join_token=ha_join_token, ha_witness=ha_witness, ha_heartbeat_list=ha_heartbeat_list,
                  ha_replication_list=ha_replication_list, ha_witness_ca=ha_witness_ca,
                  ha_witness_cert=ha_witness_cert, ha_witness_key=ha_witness_key)
    try:
        cfg = ha_set(ctx.obj["root"], args, user_pass)
    except ConfigError as e:
        fail(str(e), 2)
    assert cfg.ha
    done(f"HA configured: peer {cfg.ha.peer_address}, VIP {cfg.ha.vip.cidr}; "
               "run `escadm reload` and `escadm restart` to apply")


@ha.command("pair")
@click.option("--take-peers", is_flag=True,
              help="Replace this node's pair material by the peer's (after a conflict: this node "
                   "was reinstalled while its peer was down, and each now holds its own).")
@click.pass_context
def ha_pair_cmd(ctx: click.Context, take_peers: bool) -> None:
    """Pair with the peer now (the agent also does so at its start while unpaired). Run
    with the agent stopped."""
    from esc.config import load_config
    from esc.pairing import service
    from esc.pairing.handshake import Decision

    paths = paths_of(ctx)
    try:
        cfg = load_config(paths)
    except ConfigError as e:
        fail(str(e), 2)
    if cfg.ha is None:
        fail("not an HA node", 2)
    if paths.agent_sock.exists():
        fail("the agent is running: `escadm stop` first", 2)
    try:
        outcome = service.pair_node(paths, cfg, replace=take_peers)
    except service.PairingError as e:
        fail(f"pairing with {cfg.ha.peer_address}: {e}")
    if outcome.decision == Decision.TAKE:
        done(f"paired with {cfg.ha.peer_address}: this node now holds the pair's material")
    elif outcome.decision == Decision.SAME:
        done(f"already paired with {cfg.ha.peer_address}")
    elif outcome.decision == Decision.WAIT:
        fail(f"{cfg.ha.peer_address} has no pair material yet (start the first node of the list)")
    else:
        fail(f"{cfg.ha.peer_address} holds other pair material and neither node serves: run "
             "`escadm ha pair --take-peers` on the node that should take the other's")


@ha.command("join-token")
@click.option("--ttl", type=click.FloatRange(60, 7 * 86400), default=3600, show_default=True,
              help="Seconds the token stays valid.")
@click.pass_context
def ha_join_token_cmd(ctx: click.Context, ttl: float) -> None:
    """Print a one-time token that lets the peer pair with this node
    (`escadm install ... --ha_join_token_file F` or `escadm ha set ... --ha_join_token_file F`
    there): no shared password needed. Printed once; kept here only as scrypt of it."""
    from esc.pairing import credentials

    paths = paths_of(ctx)
    if not paths.config.exists():
        fail(f"no node installed under {paths.root}", 2)
    click.echo(credentials.issue_join_token(paths, ttl))


@cli.group()
def bgp() -> None:
    """Northbound over BGP anycast (docs/bgp.md)."""


@bgp.command("set")
@secret_files("md5")
@bgp_options("")
@click.pass_context
def bgp_set_cmd(ctx: click.Context, local_ip, anycast_ip, remote_ip, local_as, remote_as,  # type: ignore[no-untyped-def]
                local_router_id, md5) -> None:
    """Announce an anycast address from the active node (then `escadm reload`)."""
    args = BgpArgs(local_ip, anycast_ip, remote_ip, local_as, remote_as, local_router_id, md5)
    try:
        cfg = bgp_set(ctx.obj["root"], args)
    except ConfigError as e:
        fail(str(e), 2)
    assert cfg.bgp
    b = cfg.bgp
    done(f"BGP set: {b.anycast_prefix} from {b.local_ip} AS {b.local_as} to {b.remote_ip} AS "
         f"{b.remote_as}{', MD5' if b.md5 else ''}; run `escadm reload` to apply")


@cli.group()
def tls() -> None:
    """The certificate of the northbound HTTPS port."""


@tls.command("set")
@click.option("--tls_cert", required=True, help="PEM certificate (chain); give both nodes the same.")
@click.option("--tls_key", required=True, help="PEM private key of --tls_cert.")
@click.pass_context
def tls_set(ctx: click.Context, tls_cert: str, tls_key: str) -> None:
    """Use the operator's certificate (then `escadm restart`, or the next activation)."""
    from esc import tls as esc_tls

    paths = paths_of(ctx)
    try:
        load_config(paths)
        cert_pem, key_pem = esc_tls.check_supplied(tls_cert, tls_key)
    except ConfigError as e:
        fail(str(e), 2)
    esc_tls.write_material(paths, cert_pem, key_pem, supplied=True)
    done(f"certificate set, SHA-256 {esc_tls.fingerprint(paths)}; it is served from the next activation")


@cli.group()
def witness() -> None:
    """The witness: a lease server on a third host that decides, in a partition, who is active."""


@witness.command("run")
@click.option("--listen", required=True, help="ADDR:PORT to listen on, e.g. 10.0.0.9:8025.")
@click.option("--token-file", required=True, type=click.Path(exists=True, dir_okay=False),
              help="The token (`escadm witness token` on a node).")
@click.option("--max-lease", type=float, default=5.0, show_default=True,
              help="Longest lease granted; no lease is granted this long after a start.")
@click.option("--max-skew", type=float, default=30.0, show_default=True,
              help="Seconds a request's send time may differ from this host's clock; older ones are "
                   "refused as replays (keep the clocks of the nodes and the witness in time).")
@click.option("--state-file", default=None,
              help="Where the outdated marks are kept (default: witness-state.json beside the token).")
def witness_run(listen: str, token_file: str, max_lease: float, max_skew: float,
                state_file: str | None) -> None:
    """Run the witness in the foreground (as a service of the third host)."""
    from esc.witness import main as witness_main

    sys.exit(witness_main(["--listen", listen, "--token-file", token_file, "--max-lease", str(max_lease),
                           "--max-skew", str(max_skew),
                           *(["--state-file", state_file] if state_file else [])]))


@witness.command("token")
@click.pass_context
def witness_token(ctx: click.Context) -> None:
    """Print the tokens the witness needs: one per node, derived from the pair key (the
    witness's --token-file holds these lines as printed)."""
    from esc.config import load_config, peer_app_name
    from esc.pairing.material import load

    paths = paths_of(ctx)
    material = load(paths)
    ha = load_config(paths).ha
    if material is None or ha is None:
        fail("this node holds no pair material (not an HA node, or not paired yet)", 2)
    for address in ha.node_list:
        name = peer_app_name(address)
        click.echo(f"{name} {material.witness_token(name)}")


@cli.group("op_mode")
def op_mode() -> None:
    """The pair's operation mode: operation, or maintenance (the northbound refuses new
    requests with 503, the VNF monitor pauses, no automatic failover)."""


@op_mode.command("set")
@click.option("--mode", type=click.Choice(["operation", "maintenance"]), required=True)
@click.option("--ipt_check", is_flag=True,
              help="The original's check of its iptables rule; here the controller itself refuses "
                   "new requests, so nothing else is needed (accepted for its command lines).")
@click.pass_context
def op_mode_set(ctx: click.Context, mode: str, ipt_check: bool) -> None:
    """Set it on this node and tell the peer (the newer setting wins on both)."""
    body = _command(ctx, "op_mode", {"mode": mode})
    peer = f"; peer {body['peer']}" if body.get("peer") else ""
    if ipt_check:
        click.echo("--ipt_check: no iptables rule here; the controller refuses new northbound requests")
    done(f"operation mode {mode}{peer}" + ("; new northbound requests get 503, the monitor pauses"
                                            if mode == "maintenance" else ""))


@op_mode.command("show")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def op_mode_show(ctx: click.Context, as_json: bool) -> None:
    """Print the operation mode (from the agent, or the saved setting if it is stopped)."""
    from esc.agent import opmode

    try:
        op = AgentClient(paths_of(ctx)).status().get("op_mode") or {}
    except AgentDown:
        op = opmode.load(paths_of(ctx)).to_dict()
    if as_json:
        click.echo(json.dumps(op))
        return
    click.echo(health.op_mode_line(op))


@cli.group()
def callback() -> None:
    """Where the controller may send callbacks."""


@callback.command("set")
@click.option("--allow", "allow", multiple=True, required=True,
              help="Network callbacks may go to (repeat; 0.0.0.0/0 and ::/0 for any).")
@click.option("--deny", "deny", multiple=True,
              help="Network they never go to (repeat; default: loopback, link-local, multicast).")
@click.pass_context
def callback_set(ctx: click.Context, allow: tuple[str, ...], deny: tuple[str, ...]) -> None:
    """Set the callback allow/deny-lists (then `escadm reload`)."""
    from esc.config import CallbackConfig, save_config

    paths = paths_of(ctx)
    try:
        cfg = load_config(paths)
        cb = CallbackConfig(allow=list(allow), **({"deny": list(deny)} if deny else {}))
    except (ConfigError, ValueError) as e:
        fail(validation_message(e), 2)
    save_config(paths, cfg.model_copy(update={"callbacks": cb}))
    done(f"callbacks: allow {' '.join(cb.allow)}; deny {' '.join(cb.deny) or '-'}; run `escadm reload`")


@cli.group()
def rest() -> None:
    """The northbound REST API's transport."""


@rest.command("set")
@click.option("--http", "http", type=click.Choice(["on", "off"]), required=True,
              help="off: HTTPS only; HTTP answers 301 to HTTPS without reading credentials.")
@click.pass_context
def rest_set(ctx: click.Context, http: str) -> None:
    """Serve the REST API over HTTP and HTTPS, or HTTPS only (then `escadm reload`; the
    serving controller applies it at its next start)."""
    from esc.config import save_config

    paths = paths_of(ctx)
    try:
        cfg = load_config(paths)
    except ConfigError as e:
        fail(str(e), 2)
    if http == "off" and not (paths.tls_cert.exists() and paths.tls_key.exists()):
        fail(f"no TLS material in {paths.tls_dir}: HTTPS could not be served", 2)
    save_config(paths, cfg.model_copy(update={"http": http == "on"}))
    done(f"REST API: {'HTTP and HTTPS' if http == 'on' else 'HTTPS only (HTTP redirects)'}; "
         "run `escadm reload`")


@cli.group()
def snmp() -> None:
    """SNMP traps (v2c or v3), sent by both nodes (docs/operations.md#snmp-traps)."""


def engine_id_for(node: str) -> str:
    """An engine ID of the node's own (RFC 3411 text format: enterprise 32473, format 4)."""
    return "80007ed904" + node.encode()[:27].hex()


@snmp.command("set")
@secret_files("community", "auth_key", "priv_key")
@click.option("--target", "targets", multiple=True, metavar="HOST[:PORT]",
              help="A trap receiver (repeatable; port 162 by default).")
@click.option("--community", default=None, help="SNMP v2c: the community.")
@click.option("--v3_user", default=None, help="SNMP v3: the USM user (authentication and privacy).")
@click.option("--auth_protocol", type=click.Choice(SNMP_AUTH, case_sensitive=False), default="SHA256",
              show_default=True)
@click.option("--auth_key", default=None, help="SNMP v3: the authentication passphrase (8 or more).")
@click.option("--priv_protocol", type=click.Choice(SNMP_PRIV, case_sensitive=False), default="AES",
              show_default=True)
@click.option("--priv_key", default=None, help="SNMP v3: the privacy passphrase (8 characters or more).")
@click.option("--enterprise_oid", default=None, metavar="OID",
              help="Where ESC-HA-MIB sits (default 1.3.6.1.4.1.32473.1).")
@click.option("--agent_port", type=click.IntRange(1, 65535), default=None, metavar="PORT",
              help="Also answer GETs of the node's state (ESC-HA-MIB escHaStatus) on this UDP port, "
                   "e.g. 161, with the same community or v3 user.")
@click.option("--disable", is_flag=True, help="No traps.")
@click.pass_context
def snmp_set(ctx: click.Context, targets: tuple[str, ...], community: str | None, v3_user: str | None,
             auth_protocol: str, auth_key: str | None, priv_protocol: str, priv_key: str | None,
             enterprise_oid: str | None, agent_port: int | None, disable: bool) -> None:
    """Where and how to send traps, and whether to answer GETs (then `escadm reload`;
    set it on both nodes)."""
    from esc.config import SnmpConfig, SnmpTarget, save_config
    from esc.install import set_secret

    paths = paths_of(ctx)
    try:
        cfg = load_config(paths)
    except ConfigError as e:
        fail(str(e), 2)
    if disable:
        if targets or community or v3_user or agent_port:
            fail("--disable takes no other option", 2)
        save_config(paths, cfg.model_copy(update={"snmp": None}))
        for key in ("snmp_community", "snmp_auth_key", "snmp_priv_key"):
            set_secret(paths, key, None)
        done("SNMP traps off; run `escadm reload`")
        return
    if not targets:
        fail("give at least one --target HOST[:PORT]", 2)
    if bool(community) == bool(v3_user):
        fail("give --community (v2c) or --v3_user with --auth_key and --priv_key (v3)", 2)
    if v3_user and not (auth_key and priv_key):
        fail("SNMP v3 needs --auth_key and --priv_key (authentication and privacy)", 2)
    for key, value in (("--auth_key", auth_key), ("--priv_key", priv_key)):
        if value is not None and len(value) < 8:
            fail(f"{key}: 8 characters or more (RFC 3414)", 2)
    kept = cfg.snmp or SnmpConfig(targets=[SnmpTarget(host="localhost")], engine_id=engine_id_for(cfg.name))
    try:
        conf = SnmpConfig(targets=[SnmpTarget.parse(t) for t in targets], version="3" if v3_user else "2c",
                          user=v3_user, auth_protocol=auth_protocol, priv_protocol=priv_protocol,
                          engine_id=kept.engine_id, enterprise_oid=enterprise_oid or kept.enterprise_oid,
                          agent_port=agent_port)
    except (ConfigError, ValueError) as e:
        fail(validation_message(e) if not isinstance(e, ConfigError) else str(e), 2)
    set_secret(paths, "snmp_community", community)
    set_secret(paths, "snmp_auth_key", auth_key)
    set_secret(paths, "snmp_priv_key", priv_key)
    save_config(paths, cfg.model_copy(update={"snmp": conf}))
    done(f"SNMP v{conf.version} traps to {', '.join(f'{t.host}:{t.port}' for t in conf.targets)}"
         + (f", user {v3_user}, engine ID 0x{conf.engine_id}" if v3_user else "")
         + (f"; GETs answered on UDP {agent_port}" if agent_port else "") + "; run `escadm reload`")


@snmp.command("show")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def snmp_show(ctx: click.Context, as_json: bool) -> None:
    """The trap settings, secrets left out; the engine ID a v3 receiver needs."""
    try:
        cfg = load_config(paths_of(ctx))
    except ConfigError as e:
        fail(str(e), 2)
    conf = cfg.snmp.model_dump(mode="json") if cfg.snmp else None
    if as_json:
        click.echo(json.dumps(conf, indent=2))
        return
    if conf is None:
        click.echo("SNMP traps: off")
        return
    to = ", ".join(f"{t['host']}:{t['port']}" for t in conf["targets"])
    click.echo(f"SNMP v{conf['version']} traps to {to}")
    if conf["version"] == "3":
        click.echo(f"user {conf['user']}, {conf['auth_protocol']} / {conf['priv_protocol']}")
    click.echo(f"engine ID 0x{conf['engine_id']}  (snmptrapd: createUser -e 0x{conf['engine_id']} ...)")
    click.echo(f"MIB under {conf['enterprise_oid']} (docs/ESC-HA-MIB.txt)")
    click.echo(f"GETs of escHaStatus answered on UDP {conf['agent_port']}" if conf.get("agent_port")
               else "GETs: not answered (--agent_port)")


@snmp.command("test")
@click.pass_context
def snmp_test(ctx: click.Context) -> None:
    """Send an escTest trap to every target now."""
    body = _command(ctx, "snmp_test", {})
    done(body.get("result", "sent"))


@cli.group()
def metrics() -> None:
    """Prometheus metrics on the health port (/metrics, both nodes)."""


@metrics.command("set")
@secret_files("user_pass")
@click.option("--user_pass", metavar="USER:PASSWORD", default=None,
              help="Ask scrapers for HTTP Basic as this user.")
@click.option("--open", "open_", is_flag=True, help="No authentication (the default).")
@click.pass_context
def metrics_set(ctx: click.Context, user_pass: str | None, open_: bool) -> None:
    """Who may read /metrics (then `escadm reload`; set it on both nodes)."""
    from esc import secrets as esc_secrets
    from esc.config import User, save_config

    if bool(user_pass) == open_:
        fail("give --user_pass USER:PASSWORD (or --user_pass_file) or --open", 2)
    paths = paths_of(ctx)
    try:
        cfg = load_config(paths)
        user = None
        if user_pass:
            name, password = esc_secrets.split_user_pass(user_pass, "--user_pass")
            user = User(name=name, password_hash=esc_secrets.hash_password(password))
    except (ConfigError, ValueError) as e:
        fail(str(e), 2)
    save_config(paths, cfg.model_copy(update={"metrics_user": user}))
    done(f"/metrics on port {cfg.health_port}: " + (f"HTTP Basic as {user.name}" if user else "open")
         + "; run `escadm reload`")


@cli.command("backup")
@click.option("--file", "file", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write the backup (mode 0600).")
@click.option("--force", is_flag=True, help="Replace an existing file.")
@click.pass_context
def backup_cmd(ctx: click.Context, file: Path, force: bool) -> None:
    """The controller's data (a consistent dump of its database) and this node's
    configuration, in one file; on either node (a standby dumps its replica)."""
    from esc.backup import BackupError, backup

    paths = paths_of(ctx)
    try:
        cfg = load_config(paths)
    except ConfigError as e:
        fail(str(e), 2)
    file = file.resolve()
    if file.exists() and not force:
        fail(f"{file} exists: give --force to replace it", 2)
    if not file.parent.is_dir():
        fail(f"{file.parent}: no such directory", 2)
    try:
        manifest = backup(paths, cfg, file)
    except BackupError as e:
        fail(str(e))
    rows = sum(manifest["tables"].values())
    done(f"backup of {cfg.name}'s {manifest['from']} database: {len(manifest['tables'])} tables, "
         f"{rows} rows, in {file} ({file.stat().st_size} bytes)")


@cli.command("restore")
@click.option("--file", "file", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A file written by `escadm backup`.")
@click.pass_context
def restore_cmd(ctx: click.Context, file: Path) -> None:
    """Replace the controller's data with a backup's, on the active, in maintenance mode
    (`escadm op_mode set --mode=maintenance` first; the standby follows by replication)."""
    from esc.backup import BackupError, restore

    paths = paths_of(ctx)
    try:
        cfg = load_config(paths)
    except ConfigError as e:
        fail(str(e), 2)
    try:
        status = AgentClient(paths).status()
    except AgentDown as e:
        fail(f"the agent does not answer ({e}): restore on the running active")
    try:
        manifest = restore(paths, cfg, file.resolve(), status)
    except BackupError as e:
        fail(str(e))
    made = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(manifest["made_at"]))
    done(f"restored the backup of {manifest['node']} made {made}: {len(manifest['tables'])} tables, "
         f"{sum(manifest['tables'].values())} rows, counts checked; "
         "`escadm op_mode set --mode=operation` to serve again")


@cli.group()
def portal() -> None:
    """The portal (https://VIP:9001/, on the active): its users."""


def _portal_db(ctx: click.Context, write: bool):  # type: ignore[no-untyped-def]
    """The local database, as its superuser; for a write, the active's (a standby's is a
    replica: its users are the active's)."""
    import psycopg

    from esc.ha.postgres import local_conninfo

    paths = paths_of(ctx)
    try:
        cfg = load_config(paths)
        conn = psycopg.connect(local_conninfo(paths, cfg, "esc"), connect_timeout=2)
    except (ConfigError, psycopg.Error, OSError) as e:
        fail(f"the local database is not readable: {str(e).strip() or type(e).__name__}")
    if write and conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]:  # type: ignore[index]
        conn.close()
        fail("this node's database is a standby's replica: run this on the active")
    return cfg, conn


@portal.command("show")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def portal_show(ctx: click.Context, as_json: bool) -> None:
    """The portal's address and users."""
    import psycopg

    cfg, conn = _portal_db(ctx, write=False)
    with conn:
        try:
            rows = conn.execute("SELECT name, role, created_at FROM portal_users ORDER BY name").fetchall()
        except psycopg.errors.UndefinedTable:
            rows = []
    host = cfg.ha.vip.address if cfg.ha else (cfg.ipaddr[0].split("/")[0] if cfg.ipaddr else "NODE")
    users = ([{"name": cfg.portal_user.name, "role": "admin", "from": "--user_portal_pass"}]
             if cfg.portal_user else []) + [{"name": n, "role": r, "from": "escadm portal user add"}
                                            for n, r, _ in rows]
    out = {"url": f"https://{host}:{cfg.portal_port}/", "enabled": cfg.portal_user is not None,
           "users": users}
    if as_json:
        click.echo(json.dumps(out, indent=2))
        return
    click.echo(f"portal: {out['url']}" + ("" if out["enabled"] else
                                           " (off: install with --user_portal_pass USER:PASSWORD)"))
    for u in users:
        click.echo(f"  {u['name']:<20} {u['role']:<7} ({u['from']})")


@portal.group("user")
def portal_user() -> None:
    """Users of the portal beside the installer's (kept in the replicated database)."""


@portal_user.command("add")
@secret_files("user_pass")
@click.option("--user_pass", metavar="USER:PASSWORD", required=True)
@click.option("--role", type=click.Choice(["viewer", "admin"]), default="viewer", show_default=True,
              help="viewer: every page; admin: also switchover and maintenance.")
@click.pass_context
def portal_user_add(ctx: click.Context, user_pass: str, role: str) -> None:
    """Add a user of the portal, or set its password and role (on the active)."""
    from esc import secrets as esc_secrets

    try:
        name, password = esc_secrets.split_user_pass(user_pass, "--user_pass")
    except ValueError as e:
        fail(str(e), 2)
    cfg, conn = _portal_db(ctx, write=True)
    if cfg.portal_user is not None and name == cfg.portal_user.name:
        conn.close()
        fail(f"{name} is the installer's portal user (--user_portal_pass): choose another name", 2)
    import psycopg

    try:
        with conn:
            conn.execute("INSERT INTO portal_users (name, role, password_hash) VALUES (%s, %s, %s) "
                         "ON CONFLICT (name) DO UPDATE SET role = excluded.role, "
                         "password_hash = excluded.password_hash",
                         (name, role, esc_secrets.hash_password(password)))
            conn.execute("DELETE FROM portal_sessions WHERE user_name = %s", (name,))
    except psycopg.errors.UndefinedTable:
        fail("the controller has not made its tables yet: start the node (escadm start) first")
    done(f"portal user {name}: {role}")


@portal_user.command("del")
@click.argument("name")
@click.pass_context
def portal_user_del(ctx: click.Context, name: str) -> None:
    """Remove a user of the portal and end its sessions (on the active)."""
    import psycopg

    _, conn = _portal_db(ctx, write=True)
    try:
        with conn:
            gone = conn.execute("DELETE FROM portal_users WHERE name = %s", (name,)).rowcount
            conn.execute("DELETE FROM portal_sessions WHERE user_name = %s", (name,))
    except psycopg.errors.UndefinedTable:
        gone = 0
    if not gone:
        fail(f"no portal user {name!r} (the installer's is changed by a reinstall)", 1)
    done(f"portal user {name} removed, its sessions ended")


@cli.group()
def etsi() -> None:
    """The ETSI NFV SOL003 VNF lifecycle service (ports 8250/8251, on the active)."""


@etsi.command("show")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def etsi_show(ctx: click.Context, as_json: bool) -> None:
    """Its server address, ports, and the ETSI user and password (alike on both nodes)."""
    from esc.etsi import auth as etsi_auth

    paths = paths_of(ctx)
    try:
        cfg = load_config(paths)
    except ConfigError as e:
        fail(str(e), 2)
    out = {"enabled": cfg.etsi.enabled, "server_address": cfg.etsi_server_address,
           "http_port": cfg.etsi.http_port, "https_port": cfg.etsi.https_port,
           "user": etsi_auth.ETSI_USER, "password": etsi_auth.password(paths),
           "token_endpoint": f"http://{cfg.etsi_server_address}:{cfg.etsi.http_port}{etsi_auth.TOKEN_PATH}",
           "grant_url": cfg.etsi.grant.url if cfg.etsi.grant else None,
           "package_url": cfg.etsi.packages.url if cfg.etsi.packages else None}
    if as_json:
        click.echo(json.dumps(out, indent=2))
        return
    for key, value in out.items():
        click.echo(f"{key + ':':16}{value}")


@etsi.command("set")
@click.option("--server_address", default=None,
              help="The address every link names (default: the VIP, or the anycast address).")
@click.option("--enable/--disable", "enabled", default=None, help="Serve it (on the active) or not.")
@click.option("--grant_url", default=None,
              help="The NFVO's Granting API, e.g. http://nfvo:8080/grant/v1 ('' for none).")
@click.option("--grant_user_pass", default=None, help="USER:PASS towards the NFVO (HTTP Basic).")
@click.option("--package_url", default=None,
              help="The NFVO's VNF package management API, e.g. http://nfvo:8080/vnfpkgm/v1 ('' for none).")
@click.option("--package_user_pass", default=None, help="USER:PASS towards it (HTTP Basic).")
@click.pass_context
def etsi_set(ctx: click.Context, server_address: str | None, enabled: bool | None, grant_url: str | None,
             grant_user_pass: str | None, package_url: str | None, package_user_pass: str | None) -> None:
    """Change the ETSI service's settings (then `escadm reload`; the serving service
    applies them at its next start)."""
    from esc.config import save_config
    from esc.secrets import split_user_pass

    paths = paths_of(ctx)
    try:
        cfg = load_config(paths)
        etsi_cfg = cfg.etsi.model_dump()
        if server_address is not None:
            etsi_cfg["server_address"] = server_address or None
        if enabled is not None:
            etsi_cfg["enabled"] = enabled
        for key, url, user_pass, option in (("grant", grant_url, grant_user_pass, "grant"),
                                            ("packages", package_url, package_user_pass, "package")):
            if url is not None:
                etsi_cfg[key] = {"url": url} if url else None
            if user_pass is not None:
                if not etsi_cfg.get(key):
                    raise ConfigError(f"--{option}_user_pass needs --{option}_url")
                user, password = split_user_pass(user_pass, f"--{option}_user_pass")
                etsi_cfg[key] = {**etsi_cfg[key], "user": user, "password": password}
        new = NodeConfig.model_validate({**cfg.model_dump(), "etsi": etsi_cfg})
    except (ConfigError, ValueError) as e:
        fail(validation_message(e), 2)
    save_config(paths, new)
    done(f"etsi: {'enabled' if new.etsi.enabled else 'disabled'}, server address "
         f"{new.etsi_server_address}; run `escadm reload`")


@etsi.group("package")
def etsi_package() -> None:
    """VNF packages (CSAR with a TOSCA SOL001 VNFD)."""


@etsi_package.command("sample")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option("--vdus", type=click.IntRange(1, 20), default=2, show_default=True)
def etsi_package_sample(output: Path, vdus: int) -> None:
    """Write an example VNF package (TOSCA SOL001 VNFD, VDUs cirros and web, aspect worker)."""
    from esc.etsi.samples import SAMPLE_VNFD_ID, sample_csar

    output.write_bytes(sample_csar(vdus))
    done(f"{output}: VNFD {SAMPLE_VNFD_ID}, flavour simple, {vdus} VDU(s)")


@etsi_package.command("onboard")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.pass_context
def etsi_package_onboard(ctx: click.Context, file: Path) -> None:
    """Onboard FILE through the active's ETSI service (the server address)."""
    import httpx

    from esc.etsi import auth as etsi_auth

    paths = paths_of(ctx)
    try:
        cfg = load_config(paths)
    except ConfigError as e:
        fail(str(e), 2)
    host = cfg.etsi_server_address
    url = f"http://{'[' + host + ']' if ':' in host else host}:{cfg.etsi.http_port}/esc/v1/vnf_packages"
    try:
        r = httpx.post(url, content=file.read_bytes(), headers={"Content-Type": "application/zip"},
                       auth=(etsi_auth.ETSI_USER, etsi_auth.password(paths)), timeout=60, trust_env=False)
    except httpx.HTTPError as e:
        fail(f"the ETSI service at {url} did not answer: {e}")
    if r.status_code not in (200, 201):
        try:
            detail = r.json().get("detail", r.text)
        except (ValueError, AttributeError):
            detail = r.text
        fail(f"onboarding refused (HTTP {r.status_code}) by {url}: "
             f"{detail or 'not the ETSI service (is the server address the pair VIP?)'}")
    data = r.json()
    done(f"VNF package {data['id']}: VNFD {data['vnfdId']}, flavours {', '.join(data['flavours'])}"
         + ("" if r.status_code == 201 else " (already onboarded)"))


@cli.group()
def retention() -> None:
    """How long events and finished transactions are kept."""


@retention.command("set")
@click.option("--days", type=float, required=True, help="Keep events and finished transactions this long.")
@click.option("--max-events", type=int, default=100_000, show_default=True,
              help="Keep at most this many events.")
@click.pass_context
def retention_set(ctx: click.Context, days: float, max_events: int) -> None:
    """Set the retention (then `escadm reload`)."""
    from esc.config import Retention, save_config

    paths = paths_of(ctx)
    try:
        cfg = load_config(paths)
        keep = Retention(days=days, max_events=max_events)
    except (ConfigError, ValueError) as e:
        fail(validation_message(e), 2)
    save_config(paths, cfg.model_copy(update={"retention": keep}))
    done(f"retention: {keep.days:g} days, at most {keep.max_events} events; run `escadm reload`")


@cli.group()
def vim() -> None:
    """The VIM the controller deploys VMs to."""


@vim.command("set")
@click.option("--driver", type=click.Choice(["local"]), default="local", show_default=True)
@click.option("--state-dir", required=True, help="VIM state, shared by both nodes.")
@click.option("--ns-prefix", default="", help="Prefix of the VMs' labels (a lab's prefix).")
@click.option("--network", required=True, help="NAMESPACE[:BRIDGE] the VMs attach to.")
@click.option("--pool", required=True, help="IPv4 network the VMs' addresses come from.")
@click.option("--prefixlen", type=click.IntRange(1, 32), default=None,
              help="Prefix length of the VMs' network (default: the pool's).")
@click.option("--probe-interval", type=click.FloatRange(0.1, 3600), default=1.0, show_default=True,
              help="Seconds between pings of a VM whose KPI section gives none.")
@click.option("--down-after", type=click.IntRange(1, 100), default=3, show_default=True,
              help="Failed pings in a row that make such a VM down.")
@click.pass_context
def vim_set(ctx: click.Context, driver: str, state_dir: str, ns_prefix: str, network: str,
            pool: str, prefixlen: int | None, probe_interval: float, down_after: int) -> None:
    """Configure the VIM (then `escadm restart`, or the next activation, applies it)."""
    from esc.config import VimConfig, save_config

    paths = paths_of(ctx)
    ns, _, bridge = network.partition(":")
    try:
        cfg = load_config(paths)
        vim_cfg = VimConfig(driver=driver, state_dir=str(Path(state_dir).resolve()),  # type: ignore[arg-type]
                            ns_prefix=ns_prefix, network_ns=ns, bridge=bridge or "br0", pool=pool,
                            prefixlen=prefixlen, probe_interval=probe_interval, down_after=down_after)
    except (ConfigError, ValueError) as e:
        fail(validation_message(e), 2)
    save_config(paths, cfg.model_copy(update={"vim": vim_cfg}))
    done(f"VIM set: {driver}, network {vim_cfg.network_ns}:{vim_cfg.bridge}, pool {pool}")


def _command(ctx: click.Context, name: str, body: dict | None = None) -> dict:
    try:
        code, body = AgentClient(paths_of(ctx)).command(name, body)
    except AgentDown as e:
        fail(str(e))
    if code >= 300:
        fail(body.get("error", f"agent answered {code}"))
    return body


def _wait_role(ctx: click.Context, roles: set[str], timeout: float) -> str:
    deadline = time.monotonic() + timeout
    role = "?"
    while time.monotonic() < deadline:
        try:
            role = AgentClient(paths_of(ctx)).status()["role"]
        except AgentDown:
            role = "STOPPED"
        if role in roles:
            return role
        time.sleep(0.1)
    fail(f"still {role} after {timeout:.0f}s")
    return role


def parse_since(text: str, now: float | None = None) -> float:
    """--since: an ISO 8601 time (UTC unless it says), or an age such as 90s, 10m, 2h, 7d."""
    import datetime

    now = time.time() if now is None else now
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd])\s*", text)
    if m:
        return now - float(m[1]) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m[2]]
    try:
        when = datetime.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(f"{text!r} is neither a time (2026-12-03T14:00:00Z) nor an age "
                                 "(90s, 10m, 2h, 7d)") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return when.timestamp()


@ha.command("history")
@click.option("--since", "since_text", default=None, metavar="TIME|AGE",
              help="From this time (2026-12-03T14:00:00Z) or this long ago (90s, 10m, 2h, 7d).")
@click.option("--kind", "kinds", multiple=True, type=click.Choice(HISTORY_KINDS),
              help="Only events of this kind (repeatable).")
@click.option("--node", default=None, help="Only this node's events.")
@click.option("--limit", type=click.IntRange(1, 100000), default=200, show_default=True,
              help="The latest this many events.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def ha_history(ctx: click.Context, since_text: str | None, kinds: tuple[str, ...], node: str | None,
               limit: int, as_json: bool) -> None:
    """Role transitions, failovers, switchovers, fences, rejoins, op_mode changes and
    reloads of both nodes, oldest first: from the replicated database, and this node's
    own journal for what has not reached it."""
    from esc.agent import history

    paths = paths_of(ctx)
    since = parse_since(since_text) if since_text else None
    stored, problem = history_from_db(paths, since, kinds, node, limit)
    _, own = history.read_file(paths.lib / "history.jsonl")
    own = [e for e in own if (since is None or e.at >= since) and (not kinds or e.kind in kinds)
           and (node is None or e.node == node)]
    events = history.merge(stored, own)[-limit:]
    if as_json:
        click.echo(json.dumps({"events": [e.to_dict() for e in events],
                               "database": problem or "read"}, indent=2))
        return
    if problem:
        click.echo(f"(the database was not read: {problem}; this node's journal only)", err=True)
    for e in events:
        click.echo(e.line())
    if not events:
        click.echo("no events", err=True)


def history_from_db(paths: NodePaths, since: float | None, kinds: tuple[str, ...], node: str | None,
                    limit: int) -> tuple[list, str]:
    """The events the local database holds (the standby's too: it is a replica), or why none."""
    import psycopg

    from esc.agent import history
    from esc.ha.postgres import local_conninfo

    try:
        cfg = load_config(paths)
        with psycopg.connect(local_conninfo(paths, cfg, "esc"), connect_timeout=2) as conn:
            if conn.execute("SELECT to_regclass('ha_events')").fetchone()[0] is None:  # type: ignore[index]
                return [], ""
            return history.query(conn, since, limit, kinds, node), ""
    except (ConfigError, psycopg.Error, OSError) as e:
        return [], str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


@ha.command("rules")
@click.option("--dot", "fmt", flag_value="dot", help="Print the table as a Graphviz digraph.")
@click.option("--json", "fmt", flag_value="json", help="Print the table as JSON.")
@click.option("--width", type=click.IntRange(60, 400), default=None,
              help="Columns of the text table (default: the terminal's).")
def ha_rules(fmt: str | None, width: int | None) -> None:
    """Print the role state machine's rule table (the first matching row decides)."""
    from esc.roles import dot

    if fmt == "dot":
        click.echo(dot.digraph(), nl=False)
    elif fmt == "json":
        click.echo(dot.to_json(), nl=False)
    else:
        width = width or max(60, shutil.get_terminal_size((100, 24)).columns)
        # on a terminal, drawn by rich (colours); piped, or without rich, the same as plain text
        table = dot.rich_table(width) if sys.stdout.isatty() else None
        if table is None:
            click.echo(dot.text_table(width), nl=False)
        else:
            from rich.console import Console

            Console(width=width).print(table)


@ha.group("secret")
def ha_secret() -> None:
    """The pair's material (pair key, certificates)."""


@ha_secret.command("rotate")
@click.option("--https", is_flag=True,
              help="Renew the HTTPS key and certificate too (clients that pinned the old one must "
                   "pin the new one).")
@click.pass_context
def ha_secret_rotate(ctx: click.Context, https: bool) -> None:
    """Renew the pair key and the peer certificate on both nodes, with no outage (run on
    either node of a healthy pair; run again to go on if it stopped half-way)."""
    body = _command(ctx, "rotate", {"https": https})
    done(body.get("result", "renewed"))


@ha.command("switchover")
@click.option("--wait/--no-wait", default=True, help="Wait until the roles have swapped.")
@click.option("--timeout", default=60.0, show_default=True)
@click.pass_context
def switchover(ctx: click.Context, wait: bool, timeout: float) -> None:
    """Planned role swap: the active steps down, the synchronous standby takes over."""
    try:
        before = AgentClient(paths_of(ctx)).status()["role"]
    except AgentDown as e:
        fail(str(e))
    _command(ctx, "switchover")
    if wait:
        want = {"STANDBY"} if before == "ACTIVE" else {"ACTIVE"}
        done(f"switchover: this node is now {_wait_role(ctx, want, timeout)}")
    else:
        click.echo("switchover requested")


@ha.command("force-active")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--timeout", default=30.0, show_default=True)
@click.pass_context
def force_active(ctx: click.Context, yes: bool, timeout: float) -> None:
    """Make a lone node active without its peer (it commits alone)."""
    if not yes:
        click.confirm("Force this node ACTIVE without its peer? If the peer is in fact active "
                      "behind a partition, both will accept writes", abort=True)
    _command(ctx, "force_active")
    done(f"force-active: this node is now {_wait_role(ctx, {'ACTIVE'}, timeout)}")


@cli.command()
@click.pass_context
def reload(ctx: click.Context) -> None:
    """Re-render generated configs and apply them."""
    from esc.render import render_all

    paths = paths_of(ctx)
    try:
        cfg = load_config(paths)
        written = render_all(paths, cfg)
    except (ConfigError, ValueError) as e:
        fail(str(e), 2)
    try:
        body = _command(ctx, "reload") if paths.agent_sock.exists() else {"result": "agent not running"}
    except SystemExit:
        raise
    done(f"rendered {len(written)} file(s); agent: {body.get('result')}")


@cli.command()
@click.option("--timeout", default=20.0, show_default=True)
@click.pass_context
def start(ctx: click.Context, timeout: float) -> None:
    """Start the agent (which starts everything else)."""
    paths = paths_of(ctx)
    try:
        load_config(paths)
    except ConfigError as e:
        fail(str(e), 2)
    client = AgentClient(paths)
    try:
        client.status(timeout=1)
        click.echo("already running")
        return
    except AgentDown:
        pass
    from esc import systemd

    paths.log.mkdir(parents=True, exist_ok=True)
    proc = None
    if systemd.manages(paths):  # a real host: systemd runs it (and again after a reboot)
        res = systemd.systemctl("start", systemd.UNIT)
        if res.returncode != 0:
            fail(f"systemctl start {systemd.UNIT}: {res.stderr.strip()} (journalctl -u {systemd.UNIT})")
    else:
        with open(paths.log / "agent.out", "ab") as out:
            proc = subprocess.Popen([sys.executable, "-m", "esc.agent", "--root", str(paths.root)],
                                    stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True, cwd="/")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = (paths.log / "agent.out").read_text(errors="replace").strip().splitlines()[-3:]
            fail(f"the agent exited at start ({proc.returncode}): {' | '.join(tail)}")
        try:
            role = client.status(timeout=1)["role"]
            done(f"agent started ({role})")
            return
        except AgentDown:
            time.sleep(0.05)
    fail(f"the agent did not answer within {timeout:.0f}s; see {paths.log / 'agent.out'}")


def _stop(ctx: click.Context, timeout: float) -> None:
    from esc import systemd

    paths = paths_of(ctx)
    if systemd.manages(paths):  # systemd sends the agent SIGTERM and waits for it
        res = systemd.systemctl("stop", systemd.UNIT)
        if res.returncode != 0:
            fail(f"systemctl stop {systemd.UNIT}: {res.stderr.strip()}")
        done("stopped")
        return
    try:
        pid = int(paths.agent_pid.read_text())
    except (FileNotFoundError, ValueError):
        click.echo("not running")
        return
    try:
        AgentClient(paths).command("stop")
    except AgentDown:
        try:
            os.kill(pid, 15)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
        try:  # reap it if we are its parent (tests); else PID 1 does
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.05)
    if Path(f"/proc/{pid}").exists():
        fail(f"the agent (pid {pid}) did not stop within {timeout:.0f}s")
    done("stopped")


@cli.command()
@click.option("--timeout", default=60.0, show_default=True)
@click.pass_context
def stop(ctx: click.Context, timeout: float) -> None:
    """Stop the agent and everything it runs (an active hands over to its standby)."""
    _stop(ctx, timeout)


@cli.command()
@click.option("--timeout", default=60.0, show_default=True)
@click.pass_context
def restart(ctx: click.Context, timeout: float) -> None:
    """Stop, then start."""
    _stop(ctx, timeout)
    ctx.invoke(start)


@cli.command()
@click.option("-v", "--verbose", is_flag=True, help="Peer, VIP, replication and services.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def status(ctx: click.Context, verbose: bool, as_json: bool) -> None:
    """The node's role (one line); -v for details. Exit code 0 while the agent runs,
    3 when the node is STOPPED, 1 when it is FAULT (for scripts and monitors)."""
    try:
        st = AgentClient(paths_of(ctx)).status()
    except AgentDown as e:
        st = {"role": "STOPPED", "reason": str(e)}
    st.update(northbound(paths_of(ctx)))
    if verbose and isinstance(st.get("etsi"), dict):
        st["etsi"]["instances"] = etsi_instances(paths_of(ctx))
    if as_json:
        click.echo(json.dumps(st, indent=2, default=str))
    else:
        click.echo(health.status_line(st))
        if verbose:
            click.echo(health.status_details(st))
    code = {"STOPPED": 3, "FAULT": 1}.get(str(st.get("role")), 0)
    if code:
        ctx.exit(code)


def northbound(paths: NodePaths) -> dict:
    """The ports and the certificate the controller serves with (read here, not by
    the agent: the certificate is a file the operator may have just replaced)."""
    from esc import tls as esc_tls

    try:
        cfg = load_config(paths)
    except ConfigError:
        return {}
    return {"northbound": {"http_port": cfg.api_port, "https_port": cfg.https_port,
                           "tls_sha256": esc_tls.fingerprint(paths),
                           "tls_supplied": esc_tls.is_supplied(paths)}}


def etsi_instances(paths: NodePaths) -> int | None:
    """How many VNF instances the local database holds (the standby's too), or None."""
    import psycopg

    from esc.ha.postgres import local_conninfo

    try:
        cfg = load_config(paths)
        with psycopg.connect(local_conninfo(paths, cfg, "esc"), connect_timeout=1) as conn:
            row = conn.execute("SELECT count(*) FROM etsi_vnf_instances").fetchone()
        return int(row[0]) if row else None
    except (ConfigError, psycopg.Error, OSError):
        return None


@cli.command("health")
@click.pass_context
def health_cmd(ctx: click.Context) -> None:
    """One line per service, then ESC HEALTH PASSED or FAILED (exit code to match)."""
    try:
        st = AgentClient(paths_of(ctx)).status()
    except AgentDown:
        st = {"role": "STOPPED", "services": {}}
    text, ok = health.report(st)
    click.echo(text)
    sys.exit(0 if ok else 1)


@cli.group("log")
def log_group() -> None:
    """Logs."""


@log_group.command("collect")
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None)
@click.pass_context
def log_collect(ctx: click.Context, output: Path | None) -> None:
    """One archive: logs, configs (secrets removed) and status."""
    path = logcollect.collect(paths_of(ctx), output)
    done(f"collected {path}")


from esc.cli.lab_cmd import lab  # noqa: E402

cli.add_command(lab)


def main() -> None:
    cli.main(args=normalise_argv(sys.argv[1:]), prog_name="escadm")


def bootvm_main() -> None:
    """`bootvm.py NAME ...`, as the original's installer is typed: `escadm install NAME ...`
    on this host (the root is $ESC_ROOT, or /)."""
    cli.main(args=["install", *normalise_argv(sys.argv[1:])], prog_name="bootvm.py")


def health_main() -> None:
    """`health.sh`, as operators of the original type it: `escadm health` (``--root R`` taken)."""
    cli.main(args=[*sys.argv[1:], "health"], prog_name="health.sh")


if __name__ == "__main__":
    main()
