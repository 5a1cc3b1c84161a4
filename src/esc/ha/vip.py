"""Addresses on local interfaces (iproute2, JSON output).

keepalived killed with SIGKILL leaves its VIP on the interface:
the agent removes a VIP it finds before (re)starting keepalived.
"""

from __future__ import annotations

import json
import subprocess


def interface_exists(name: str) -> bool:
    return subprocess.run(["ip", "link", "show", "dev", name],
                          capture_output=True).returncode == 0


def addresses(iface: str | None = None) -> list[tuple[str, str, int]]:
    """(interface, address, prefixlen) for every address, or those of one interface."""
    argv = ["ip", "-j", "addr", "show"] + (["dev", iface] if iface else [])
    res = subprocess.run(argv, capture_output=True, text=True)
    if res.returncode != 0:
        return []
    out = []
    for link in json.loads(res.stdout or "[]"):
        for a in link.get("addr_info", []):
            out.append((link["ifname"], a["local"], int(a["prefixlen"])))
    return out


def has_address(address: str, iface: str | None = None) -> bool:
    return any(a == address for _, a, _ in addresses(iface))


def remove(address: str, prefixlen: int, iface: str) -> bool:
    if not has_address(address, iface):
        return False
    subprocess.run(["ip", "addr", "del", f"{address}/{prefixlen}", "dev", iface],
                   capture_output=True)
    return True
