"""The agent's systemd unit, written at install: checked by systemd-analyze verify, and
what it says (ordered after the network, restarted on failure, SIGTERM to the agent
alone, the packages' own keepalived and PostgreSQL kept out)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from esc import systemd
from esc.config import NodeConfig, NodePaths


def test_the_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed (bootstrap installs systemd)")
    paths = NodePaths(tmp_path / "root with space")
    unit = tmp_path / systemd.UNIT
    unit.write_text(systemd.unit_text(paths, NodeConfig(name="esc-ha-1"), python=sys.executable))
    res = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)], capture_output=True, text=True)
    assert res.returncode == 0 and not (res.stdout + res.stderr).strip(), res.stdout + res.stderr
    bad = tmp_path / "bad" / systemd.UNIT  # the check catches a wrong line
    bad.parent.mkdir()
    bad.write_text(unit.read_text().replace("KillMode=mixed", "KillMode=bogus"))
    res = subprocess.run(["systemd-analyze", "verify", "--man=no", str(bad)], capture_output=True, text=True)
    assert "kill mode" in res.stderr.lower()


def test_what_the_unit_says(tmp_path: Path) -> None:
    text = systemd.unit_text(NodePaths(tmp_path), NodeConfig(name="n1"), python="/usr/bin/python3")
    lines = set(text.splitlines())
    assert {"After=network-online.target", "Wants=network-online.target", "Restart=on-failure",
            "KillMode=mixed", "WantedBy=multi-user.target"} <= lines
    assert f"ExecStart=/usr/bin/python3 -m esc.agent --root {tmp_path}" in lines
    assert "Conflicts=keepalived.service postgresql.service postgresql@15-main.service" in lines


def test_exec_start_reads_back_what_the_install_wrote(tmp_path: Path) -> None:
    paths = NodePaths(tmp_path / "a root with spaces")
    path = systemd.unit_path(paths)
    path.parent.mkdir(parents=True)
    path.write_text(systemd.unit_text(paths, NodeConfig(name="n1"), python="/opt/esc/bin/python"))
    assert systemd.exec_start(paths) == ["/opt/esc/bin/python", "-m", "esc.agent", "--root", str(paths.root)]


def test_a_node_under_another_root_has_its_unit_written_and_is_not_run_by_systemd(tmp_path: Path) -> None:
    paths = NodePaths(tmp_path)
    said = systemd.install_unit(paths, NodeConfig(name="n1"))
    assert systemd.unit_path(paths).read_text().startswith("# Written by `escadm install`")
    assert said == [f"systemd unit {systemd.unit_path(paths)}"] and not systemd.manages(paths)
