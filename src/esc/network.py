"""The node's network as the installer asked it: ``--ipaddr`` on the interfaces in
order, ``--gateway_ip``, ``--route``, ``--network_params_file`` and
``--host_mapping_file``.

The original's bootvm hands these to the VM it creates; here the agent applies them
at each start, adding what is missing and never removing anything (an address or
route the host has and the arguments do not name is left alone). :func:`plan` decides
from what ``ip -j`` reports, with no I/O; :func:`apply` runs it.

``--network_params_file`` is INI, a section per interface::

    [eth1]
    prefixlen = 24      ; of the address --ipaddr gives this interface (default 24 / 64)
    mtu = 9000
    gateway = 192.168.0.1   ; a default route of this interface's family, via it

``--host_mapping_file`` is in /etc/hosts form (``ADDRESS NAME [ALIAS...]``, ``#``
comments); the names go into a block of ``<root>/etc/hosts`` the agent keeps.
"""

from __future__ import annotations

import configparser
import ipaddress
import json
import logging
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from esc.config import (
    ConfigError,
    HostEntry,
    InterfaceParams,
    NodeConfig,
    NodePaths,
    check_ifname,
    parse_ip,
    validation_message,
)

log = logging.getLogger("esc.network")

HOSTS_BEGIN = "# BEGIN esc host mapping (--host_mapping_file; kept by the agent)"
HOSTS_END = "# END esc host mapping"
HOST_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]{0,252}")


def read_network_params(path: str) -> dict[str, InterfaceParams]:
    parser = configparser.ConfigParser(inline_comment_prefixes=(";", "#"))
    try:
        with open(path) as f:
            parser.read_file(f)
    except OSError as e:
        raise ConfigError(f"--network_params_file {path}: {e.strerror or e}") from None
    except configparser.Error as e:
        raise ConfigError(f"--network_params_file {path}: not INI ({str(e).splitlines()[0]})") from None
    out: dict[str, InterfaceParams] = {}
    for section in parser.sections():
        check_ifname(section, f"--network_params_file {path}: section [{section}]")
        values = dict(parser.items(section))
        unknown = set(values) - set(InterfaceParams.model_fields)
        if unknown:
            raise ConfigError(f"--network_params_file {path}: [{section}] {', '.join(sorted(unknown))}: "
                              f"unknown (known: {', '.join(InterfaceParams.model_fields)})")
        try:
            params = InterfaceParams(**values)  # type: ignore[arg-type]
        except ValueError as e:
            raise ConfigError(f"--network_params_file {path}: [{section}] {validation_message(e)}") from None
        if params.gateway:
            params = params.model_copy(update={"gateway": str(parse_ip(
                params.gateway, f"--network_params_file {path}: [{section}] gateway"))})
        out[section] = params
    return out


def read_host_mapping(path: str) -> list[HostEntry]:
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise ConfigError(f"--host_mapping_file {path}: {e.strerror or e}") from None
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        if len(fields) < 2:
            raise ConfigError(f"--host_mapping_file {path} line {n}: ADDRESS NAME [ALIAS...]")
        address = str(parse_ip(fields[0], f"--host_mapping_file {path} line {n}"))
        for name in fields[1:]:
            if not HOST_NAME_RE.fullmatch(name):
                raise ConfigError(f"--host_mapping_file {path} line {n}: {name!r} is not a host name")
        out.append(HostEntry(address=address, names=fields[1:]))
    return out


# --- what to do -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Link:
    name: str
    index: int
    addresses: tuple[str, ...]  # without the prefix length
    mtu: int


def default_prefix(address: str) -> int:
    return 24 if ipaddress.ip_address(address).version == 4 else 64


def plan(cfg: NodeConfig, links: list[Link], routes: list[dict]) -> tuple[list[list[str]], list[str]]:
    """The ``ip`` commands that bring the node to what its arguments ask, and what
    cannot be done (said in the log). ``links``: the non-loopback interfaces;
    ``routes``: ``ip -j route show table main`` of both families."""
    cmds: list[list[str]] = []
    notes: list[str] = []
    order = sorted(links, key=lambda link: link.index)
    by_name = {link.name: link for link in links}
    have = {a for link in links for a in link.addresses}
    for i, address in enumerate(cfg.ipaddr):
        address = str(parse_ip(address, "--ipaddr"))
        if address in have:
            continue
        if i >= len(order):
            notes.append(f"--ipaddr {address}: no interface number {i + 1} on this host")
            continue
        link = order[i]
        params = cfg.network.interfaces.get(link.name)
        prefix = params.prefixlen if params and params.prefixlen else default_prefix(address)
        cmds.append(["ip", "addr", "add", f"{address}/{prefix}", "dev", link.name])
    for name, params in cfg.network.interfaces.items():
        if name not in by_name:
            notes.append(f"--network_params_file: no interface {name} on this host")
            continue
        if params.mtu and by_name[name].mtu != params.mtu:
            cmds.append(["ip", "link", "set", "dev", name, "mtu", str(params.mtu)])

    def default_via(version: int) -> str | None:
        for r in routes:
            if r.get("dst") == "default" and r.get("gateway") and \
                    ipaddress.ip_address(r["gateway"]).version == version:
                return str(r["gateway"])
        return None

    gateways = [cfg.network.gateway] if cfg.network.gateway else []
    gateways += [p.gateway for p in cfg.network.interfaces.values() if p.gateway]
    for gw in dict.fromkeys(gateways):
        version = ipaddress.ip_address(gw).version
        if default_via(version) != gw:
            cmds.append(["ip", f"-{version}", "route", "replace", "default", "via", gw])
    present = {(str(ipaddress.ip_network(r["dst"], strict=False)) if r.get("dst") != "default" else "",
                r.get("gateway"), r.get("dev")) for r in routes}
    for route in cfg.network.routes:
        if route.interface not in by_name:
            notes.append(f"--route {route.network}: no interface {route.interface} on this host")
            continue
        if (route.network, route.gateway, route.interface) in present:
            continue
        cmd = ["ip", "route", "replace", route.network]
        if route.gateway:
            cmd += ["via", route.gateway]
        cmds.append([*cmd, "dev", route.interface])
    return cmds, notes


def hosts_text(current: str, entries: list[HostEntry]) -> str:
    """``current`` (an /etc/hosts) with the block of ``entries`` in place of the old one."""
    lines, skip = [], False
    for line in current.splitlines():
        if line == HOSTS_BEGIN:
            skip = True
        elif line == HOSTS_END:
            skip = False
        elif not skip:
            lines.append(line)
    if entries:
        lines += [HOSTS_BEGIN, *(f"{e.address}\t{' '.join(e.names)}" for e in entries), HOSTS_END]
    return "\n".join(lines) + "\n" if lines else ""


# --- doing it ---------------------------------------------------------------------------------


def observe() -> tuple[list[Link], list[dict]]:
    out = subprocess.run(["ip", "-j", "addr", "show"], capture_output=True, text=True, check=True).stdout
    links = [Link(x["ifname"], int(x["ifindex"]), tuple(a["local"] for a in x.get("addr_info", [])),
                  int(x.get("mtu", 0)))
             for x in json.loads(out or "[]") if x.get("link_type") != "loopback"]
    routes: list[dict] = []
    for family in ("-4", "-6"):
        res = subprocess.run(["ip", family, "-j", "route", "show", "table", "main"],
                             capture_output=True, text=True)
        if res.returncode == 0:
            routes += json.loads(res.stdout or "[]")
    return links, routes


def apply(cfg: NodeConfig, paths: NodePaths) -> list[str]:
    """Apply what is missing; the lines of what was done and what could not be."""
    said: list[str] = []
    try:
        links, routes = observe()
    except (OSError, subprocess.CalledProcessError, ValueError) as e:
        return [f"network not checked: {e}"]
    cmds, notes = plan(cfg, links, routes)
    for cmd in cmds:
        res = subprocess.run(cmd, capture_output=True, text=True)
        said.append(f"{' '.join(cmd[1:])}: " + ("done" if res.returncode == 0 else
                                                f"failed ({res.stderr.strip()})"))
    said += notes
    hosts = paths.etc.parent / "hosts"
    try:
        current = hosts.read_text() if hosts.exists() else ""
        wanted = hosts_text(current, cfg.network.hosts)
        if wanted != current and (cfg.network.hosts or HOSTS_BEGIN in current):
            hosts.write_text(wanted)
            said.append(f"{hosts}: {len(cfg.network.hosts)} host mapping(s)")
    except OSError as e:
        said.append(f"{hosts}: not written ({e.strerror or e})")
    return said
