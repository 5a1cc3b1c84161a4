"""``escadm lab``: the two-node lab in namespaces on this machine."""

from __future__ import annotations

import json
import os
import sys

import click

from esc.lab import lab as labmod


def _guard(fn, *args):  # type: ignore[no-untyped-def]
    try:
        return fn(*args)
    except labmod.LabError as e:
        click.echo(f"escadm lab: error: {e}", err=True)
        sys.exit(1)


@click.group()
def lab() -> None:
    """Two HA nodes (n1, n2) and a client in network namespaces on this machine (and a
    BIRD router with --bgp)."""


@lab.command()
@click.option("--timeout", default=120.0, show_default=True)
@click.option("--mode", type=click.Choice(labmod.MODES), default="drbd", show_default=True,
              help="drbd: database on each node's disk; drbd_on_cinder: on a volume per node; "
                   "standalone: two standalone nodes (to try `escadm ha set`).")
@click.option("--witness", type=click.Choice(labmod.WITNESS_KINDS), is_flag=False, flag_value="builtin",
              default=None, help="Use a witness: --witness (or --witness builtin) runs esc's in the client "
                                 "namespace; --witness etcd a 3-member etcd cluster beside it.")
@click.option("--bgp", is_flag=True,
              help="Northbound over BGP anycast: n1 and n2 in two subnets behind a BIRD router, "
                   f"the client behind it too, anycast {labmod.ANYCAST}.")
@click.option("--md5/--no-md5", default=True, show_default=True,
              help="With --bgp: protect the BGP sessions with a TCP MD5 key.")
@click.option("--paths", type=click.IntRange(1, labmod.MAX_PATHS), default=1, show_default=True,
              help="Networks between the nodes: 2 adds br1 (eth1, 10.78.0.0/24) for the heartbeat "
                   "(--ha_heartbeat_list), 3 also br2 (eth2, 10.79.0.0/24); VRRP, replication and "
                   "the client stay on the first.")
@click.option("--replication-path", "replication_path", type=click.IntRange(0, labmod.MAX_PATHS - 1),
              default=0, show_default=True,
              help="With --paths: the network PostgreSQL replicates over (0: the first, VRRP's; "
                   "1: br1), given to the nodes as --ha_replication_list.")
@click.option("--northbound-ipv6", "northbound_ipv6", is_flag=True,
              help="The original's three-interface form: the last of --paths is an IPv6-only "
                   "northbound network (fd78::/64 or fd79::/64) holding the VIP ::50 and the "
                   "client; VRRP stays IPv4 on eth0.")
def up(timeout: float, mode: str, witness: str | None, bgp: bool, md5: bool, paths: int,
       replication_path: int, northbound_ipv6: bool) -> None:
    """Build the lab, install both nodes, start them; return when ACTIVE + STANDBY."""
    if replication_path >= paths:
        raise click.UsageError(f"--replication-path {replication_path} needs --paths {replication_path + 1} "
                               "or more")
    _guard(labmod.up, timeout, print, mode, bgp, labmod.BGP_MD5 if md5 else None, witness, paths,
           replication_path, northbound_ipv6)
    click.echo(json.dumps(labmod.roles()))


@lab.command()
def down() -> None:
    """Remove every namespace and process of the lab."""
    labmod.down()
    click.echo("lab down")


@lab.command()
@click.option("--json", "as_json", is_flag=True)
def status(as_json: bool) -> None:
    """Roles of the nodes, VIP and REST credentials."""
    st = _guard(labmod.status)
    if as_json:
        click.echo(json.dumps(st, indent=2))
    else:
        for n, v in st["nodes"].items():
            click.echo(f"{n} {v['address']:<12} {v['role']}")
        if st.get("bgp"):
            from esc.lab import router

            hops = " ".join(router.next_hops(labmod.lab_dir(), st["vip"] + "/32")) or "no route"
            click.echo(f"anycast {st['vip']} via {hops}  rest user {st['rest_user']}")
        else:
            click.echo(f"vip {st['vip']}  rest user {st['rest_user']}")
        if st.get("etsi_user"):
            click.echo(f"etsi on {labmod.vip_host(st)}:{st['etsi_port']} (https {st['etsi_https_port']})  "
                       f"user {st['etsi_user']}  (escadm lab status --json for the passwords)")
        if st.get("confd_user"):
            click.echo(f"netconf on {st['vip']}:{st['confd_port']}  user {st['confd_user']}")


@lab.command(context_settings={"ignore_unknown_options": True})
@click.argument("node")
@click.argument("argv", nargs=-1, type=click.UNPROCESSED, required=True)
def exec(node: str, argv: tuple[str, ...]) -> None:  # noqa: A001
    """Run a command in a lab host's namespace: escadm lab exec n1 -- CMD..."""
    args = _guard(labmod.exec_argv, node, list(argv))
    os.execvp(args[0], args)


@lab.command()
@click.argument("node")
def kill(node: str) -> None:
    """Power cut: kill every process of NODE at once and take its link down."""
    killed = _guard(labmod.kill, node)
    click.echo(f"{node}: killed {len(killed.pids)} processes, link down")


@lab.group()
def etcd() -> None:
    """The etcd members of a lab made with --witness etcd (etcd1, etcd2, etcd3)."""


@etcd.command("kill")
@click.argument("member", required=False)
def etcd_kill(member: str | None) -> None:
    """Kill -9 one etcd member, or every one."""
    _guard(labmod.etcd_kill, member)
    click.echo(f"{member or 'every etcd member'}: killed")


@etcd.command("start")
@click.argument("member", required=False)
def etcd_start(member: str | None) -> None:
    """Start one etcd member again (its data kept), or every one."""
    _guard(labmod.etcd_start, member)
    click.echo(f"{member or 'every etcd member'}: serving")


@lab.command()
@click.argument("node")
def reboot(node: str) -> None:
    """Reboot NODE: a power cut, /run emptied, then the agent's systemd unit started by its
    ExecStart (as a boot would), not by escadm start."""
    _guard(labmod.reboot, node)
    click.echo(f"{node}: rebooted (the agent started by its unit's ExecStart)")


@lab.command()
@click.argument("node")
def start(node: str) -> None:
    """Power on NODE: link up, then the node's own start-up."""
    _guard(labmod.start, node)
    click.echo(f"{node}: started")


NETWORK = click.option("--network", type=int, default=None,
                       help="Only the cable of this network (0: the first, 1: --paths 2's); default: all.")


@lab.command()
@click.argument("node")
@NETWORK
def cut(node: str, network: int | None) -> None:
    """Cut NODE's network cables (processes keep running)."""
    _guard(labmod.cut, node, network)
    click.echo(f"{node}: {'links' if network is None else f'network {network} link'} cut")


@lab.command()
@click.argument("node")
@NETWORK
def heal(node: str, network: int | None) -> None:
    """Reconnect NODE's cables."""
    _guard(labmod.heal, node, network)
    click.echo(f"{node}: {'links' if network is None else f'network {network} link'} restored")


@lab.command()
@click.option("--fault", "faults", multiple=True, metavar="NAME",
              help="A fault to run (repeat); default: every fault. See --list.")
@click.option("--count", type=click.IntRange(1, 100), default=1, show_default=True,
              help="Runs of each fault.")
@click.option("--report", type=click.Path(dir_okay=False, writable=True), default=None,
              help="Write the markdown table here.")
@click.option("--json", "as_json", is_flag=True, help="Print every run's result as JSON lines.")
@click.option("--list", "list_only", is_flag=True, help="List the faults and exit.")
@click.option("--witness", type=click.Choice(labmod.WITNESS_KINDS), is_flag=False, flag_value="builtin",
              default=None, help="Run the lab with a witness (and the witness's own faults): "
                                 "--witness for esc's, --witness etcd for a 3-member etcd cluster.")
@click.option("--paths", type=click.IntRange(1, labmod.MAX_PATHS), default=1, show_default=True,
              help="Networks between the nodes (as `lab up --paths`).")
def chaos(faults: tuple[str, ...], count: int, report: str | None, as_json: bool, list_only: bool,
          witness: str | None, paths: int) -> None:
    """Inject faults while a client writes; check no acknowledged write is lost and
    never two writers (makes its own lab, one per lab mode the faults need)."""
    import datetime
    import tempfile
    from pathlib import Path

    from esc.lab import chaos as chaosmod

    if list_only:
        for f in chaosmod.FAULTS.values():
            click.echo(f"{f.name:24} {f.doc}")
        return
    try:
        selected = chaosmod.select(list(faults))
    except labmod.LabError as e:  # bad input: exit 2, as click does
        click.echo(f"escadm lab chaos: error: {e}", err=True)
        sys.exit(2)
    work = Path(tempfile.mkdtemp(prefix="esc-chaos-"))
    results = _guard(chaosmod.run_suite, selected, count, work, witness, print, paths)
    if as_json:
        for r in results:
            click.echo(json.dumps(r.row()))
    kind = ("with an etcd witness" if witness == "etcd" else "with a witness" if witness
            else "without a witness") + \
        (f", {paths} networks between the nodes" if paths > 1 else "")
    title = f"Fault injection, {datetime.date.today().isoformat()}, {kind}"
    table = chaosmod.report(results, title, witness, paths)
    if report:
        Path(report).write_text(table)
        click.echo(f"report written to {report}")
    else:
        click.echo(table)
    failed = [r for r in results
              if not r.ok and (witness or not chaosmod.FAULTS[r.fault].needs_witness_with(paths))]
    sys.exit(1 if failed else 0)
