"""The node under systemd, on a real host (a node installed at ``/``): a unit for the
agent, written at install, enabled so that the node comes back after a reboot (as
STANDBY, or ACTIVE if its peer is gone: the agent decides as at any start); Debian's
own keepalived and PostgreSQL units disabled, since the agent starts those itself.

Elsewhere (a node under another root, the lab's namespaces, a container without
systemd) the unit is still written under ``<root>/etc/systemd/system`` for whoever
packages it, and ``escadm start`` starts the agent itself, as before.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

from esc.config import NodeConfig, NodePaths

UNIT = "esc-agent.service"
# the packages' own services: they would start a second keepalived / PostgreSQL
OTHERS = ("keepalived.service", "postgresql.service", "postgresql@15-main.service")


def unit_text(paths: NodePaths, cfg: NodeConfig, python: str | None = None) -> str:
    python = python or sys.executable
    root = shlex.quote(str(paths.root))
    return f"""# Written by `escadm install`; `escadm start/stop/restart` use it on this host.
[Unit]
Description=ESC HA agent (node {cfg.name})
Wants=network-online.target
After=network-online.target
# the agent starts keepalived and PostgreSQL itself
Conflicts={" ".join(OTHERS)}

[Service]
Type=simple
ExecStart={shlex.quote(python)} -m esc.agent --root {root}
Restart=on-failure
RestartSec=2
# SIGTERM to the agent alone: an active hands over and stops what it runs; what is
# left after it exits is killed
KillMode=mixed
TimeoutStopSec=90
LimitNOFILE=65536

[Install]
WantedBy=multi-user.target
"""


def unit_path(paths: NodePaths) -> Path:
    return paths.root / "etc/systemd/system" / UNIT


def exec_start(paths: NodePaths) -> list[str]:
    """The unit's ExecStart, as systemd would run it (the lab's reboot runs it so)."""
    for line in unit_path(paths).read_text().splitlines():
        if line.startswith("ExecStart="):
            return shlex.split(line.removeprefix("ExecStart="))
    raise ValueError(f"{unit_path(paths)}: no ExecStart line")


def running() -> bool:
    """systemd is this host's init (sd_booted(3))."""
    return Path("/run/systemd/system").is_dir()


def manages(paths: NodePaths) -> bool:
    """Whether escadm starts and stops this node through systemd."""
    return running() and paths.root == Path("/") and unit_path(paths).exists()


def systemctl(*args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["systemctl", *args], capture_output=True, text=True, check=check, timeout=120)


def install_unit(paths: NodePaths, cfg: NodeConfig) -> list[str]:
    """Write the unit; on a host run by systemd (root ``/``), enable it and disable the
    packages' own services. What was done, one line each."""
    path = unit_path(paths)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(unit_text(paths, cfg))
    said = [f"systemd unit {path}"]
    if not (running() and paths.root == Path("/")):
        return said
    systemctl("daemon-reload")
    res = systemctl("enable", UNIT)
    said.append(f"{UNIT} enabled" if res.returncode == 0 else f"{UNIT} not enabled: {res.stderr.strip()}")
    for other in OTHERS:
        if systemctl("cat", other).returncode == 0:
            systemctl("disable", "--now", other)
            said.append(f"{other} disabled (the agent starts it)")
    return said


def remove_unit(paths: NodePaths) -> None:
    if running() and paths.root == Path("/") and unit_path(paths).exists():
        systemctl("disable", "--now", UNIT)
    unit_path(paths).unlink(missing_ok=True)
