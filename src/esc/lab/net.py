"""Network namespaces for the lab: a bridge, one namespace per host, links that can be cut.

The bridges live in their own namespace (``esc-sw``) so nothing of the lab
touches the machine's own network. A host's link is a veth pair: ``eth0`` in
the host, ``p-<host>`` on the bridge; a host on more networks has ``eth1`` ...
with ``p1-<host>`` ... on their bridges. Cutting the bridge side leaves the host's
``ethN`` without carrier, as a pulled cable does.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

BRIDGE = "br0"


def ns(host: str) -> str:
    """The namespace of a lab host. ``ESC_LAB_NS_PREFIX`` lets a second lab (the test
    suite's) run beside an operator's without touching it."""
    return os.environ.get("ESC_LAB_NS_PREFIX", "") + host


def switch() -> str:
    return ns("esc-sw")


@dataclass(frozen=True)
class Link:
    """One more network cable of a host (eth1, eth2 ...)."""

    bridge: str
    ipv4: str | None  # None: an IPv6-only network
    ipv6: str


@dataclass(frozen=True)
class Host:
    name: str
    ipv4: str  # with prefix, e.g. 10.77.0.11/24
    ipv6: str  # with prefix, e.g. fd77::11/64
    bridge: str = BRIDGE  # the network (bridge in the switch namespace) it is cabled to
    gateway4: str | None = None  # default routes, when the host sits behind a router
    gateway6: str | None = None
    extra: tuple[Link, ...] = ()  # eth1, eth2 ... on other networks


def port(host: str, index: int = 0) -> str:
    """The bridge side of a host's ``eth<index>``."""
    return f"p-{host}" if index == 0 else f"p{index}-{host}"


@dataclass(frozen=True)
class RouterPort:
    bridge: str
    ipv4: str
    ipv6: str


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and res.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {res.stderr.strip()}")
    return res


def namespaces() -> list[str]:
    res = ip("netns", "list", check=False)
    return [line.split()[0] for line in res.stdout.splitlines() if line.strip()]


def netns_exec(host: str, *argv: str, check: bool = True, timeout: float = 60
               ) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(["ip", "netns", "exec", ns(host), *argv], capture_output=True, text=True,
                         timeout=timeout)
    if check and res.returncode != 0:
        raise RuntimeError(f"[{host}] {' '.join(argv)}: {(res.stderr or res.stdout).strip()}")
    return res


def create(hosts: list[Host], bridges: tuple[str, ...] = (BRIDGE,)) -> None:
    sw = switch()
    ip("netns", "add", sw)
    ip("-n", sw, "link", "set", "lo", "up")
    for br in bridges:
        ip("-n", sw, "link", "add", br, "type", "bridge")
        ip("-n", sw, "link", "set", br, "up")
    for h in hosts:
        hn = ns(h.name)
        ip("netns", "add", hn)
        ip("-n", hn, "link", "set", "lo", "up")
        # Global IPv6 addresses must survive a link cut.
        netns_exec(h.name, "sysctl", "-qw", "net.ipv6.conf.all.keep_addr_on_down=1",
                   "net.ipv6.conf.default.keep_addr_on_down=1")
        ip("link", "add", f"v-{h.name}", "netns", hn, "type", "veth",
           "peer", "name", f"p-{h.name}", "netns", sw)
        ip("-n", sw, "link", "set", f"p-{h.name}", "master", h.bridge)
        ip("-n", sw, "link", "set", f"p-{h.name}", "up")
        ip("-n", hn, "link", "set", f"v-{h.name}", "name", "eth0")
        ip("-n", hn, "addr", "add", h.ipv4, "dev", "eth0")
        ip("-n", hn, "addr", "add", h.ipv6, "dev", "eth0", "nodad")
        ip("-n", hn, "link", "set", "eth0", "up")
        for i, link in enumerate(h.extra, start=1):
            ip("link", "add", f"v{i}-{h.name}", "netns", hn, "type", "veth",
               "peer", "name", port(h.name, i), "netns", sw)
            ip("-n", sw, "link", "set", port(h.name, i), "master", link.bridge)
            ip("-n", sw, "link", "set", port(h.name, i), "up")
            ip("-n", hn, "link", "set", f"v{i}-{h.name}", "name", f"eth{i}")
            if link.ipv4:
                ip("-n", hn, "addr", "add", link.ipv4, "dev", f"eth{i}")
            ip("-n", hn, "addr", "add", link.ipv6, "dev", f"eth{i}", "nodad")
            ip("-n", hn, "link", "set", f"eth{i}", "up")
        if h.gateway4:
            ip("-n", hn, "route", "add", "default", "via", h.gateway4)
        if h.gateway6:
            ip("-n", hn, "-6", "route", "add", "default", "via", h.gateway6)


def create_router(name: str, ports: list[RouterPort]) -> None:
    """A namespace that forwards between several of the switch's bridges (eth0, eth1...)."""
    rn, sw = ns(name), switch()
    ip("netns", "add", rn)
    ip("-n", rn, "link", "set", "lo", "up")
    netns_exec(name, "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1",
               "net.ipv6.conf.all.keep_addr_on_down=1")
    for i, port in enumerate(ports):
        ip("link", "add", f"v-{name}{i}", "netns", rn, "type", "veth",
           "peer", "name", f"p-{name}{i}", "netns", sw)
        ip("-n", sw, "link", "set", f"p-{name}{i}", "master", port.bridge)
        ip("-n", sw, "link", "set", f"p-{name}{i}", "up")
        ip("-n", rn, "link", "set", f"v-{name}{i}", "name", f"eth{i}")
        ip("-n", rn, "addr", "add", port.ipv4, "dev", f"eth{i}")
        ip("-n", rn, "addr", "add", port.ipv6, "dev", f"eth{i}", "nodad")
        ip("-n", rn, "link", "set", f"eth{i}", "up")


def ports(host: str) -> list[str]:
    """Every bridge port of a host (eth0's first)."""
    res = ip("-n", switch(), "-o", "link", "show", check=False)
    names = {line.split(":")[1].strip().split("@")[0] for line in res.stdout.splitlines() if ":" in line}
    out = [port(host)] if port(host) in names else []
    i = 1
    while port(host, i) in names:
        out.append(port(host, i))
        i += 1
    return out


def set_link(host: str, up: bool, index: int | None = None) -> None:
    """Cut or restore a host's cables (the bridge side of its veths): every one of them
    (a pulled power or all cables), or only ``eth<index>``'s."""
    for p in [port(host, index)] if index is not None else ports(host):
        ip("-n", switch(), "link", "set", p, "up" if up else "down")


def pids(host: str) -> list[int]:
    res = ip("netns", "pids", ns(host), check=False)
    return [int(p) for p in res.stdout.split()]


def _gone(pid: int) -> bool:
    """Reaped, not merely dead: a zombie still holds its PID."""
    return not os.path.exists(f"/proc/{pid}")


def signal_all(targets: list[int], sig: int = signal.SIGKILL) -> None:
    for pid in targets:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def kill_all(host: str, timeout: float = 15.0) -> list[int]:
    """SIGKILL every process in a namespace, all at once; wait until they are
    reaped (PID 1 here reaps lazily; a zombie postmaster blocks the next start)."""
    killed = pids(host)
    signal_all(killed)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = [p for p in killed if not _gone(p)] + [p for p in pids(host) if p not in killed]
        if not left:
            break
        signal_all(left)
        for pid in left:
            try:
                os.waitpid(pid, os.WNOHANG)  # ours, if we started it
            except ChildProcessError:
                pass
        time.sleep(0.05)
    return killed


def kill_by_pid_file(pid_file: Path) -> None:
    """SIGKILL the process group a pid file names (a process the lab started with its own
    session, and what ``ip netns exec`` started under it), wait until it is gone, and
    remove the file. Nothing to do when the file is absent."""
    try:
        pid = int(pid_file.read_text())
    except (OSError, ValueError):
        return
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:  # started by another process (escadm lab up): wait until it is gone
        deadline = time.monotonic() + 10
        while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
            time.sleep(0.05)
    pid_file.unlink(missing_ok=True)


def exists(host: str) -> bool:
    return ns(host) in namespaces()


def host_ip(host: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """``ip -n <host's namespace> ...``"""
    return ip("-n", ns(host), *args, check=check)


def destroy(hosts: list[str]) -> None:
    for host in [*hosts, "esc-sw"]:
        if exists(host):
            kill_all(host)
            ip("netns", "del", ns(host), check=False)
