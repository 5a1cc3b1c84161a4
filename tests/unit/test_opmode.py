"""The pair's operation mode: parsing, the newer setting wins, kept on disk, shown."""

from __future__ import annotations

from pathlib import Path

import pytest

from esc import health
from esc.agent import opmode
from esc.agent.opmode import OpMode
from esc.config import NodePaths


@pytest.mark.parametrize("data", [None, [], {}, {"mode": "sleeping"}, {"mode": "maintenance", "set_at": "x"}])
def test_malformed_is_refused(data: object) -> None:
    assert OpMode.parse(data) is None


def test_the_newer_setting_wins() -> None:
    old, new = OpMode("maintenance", 10.0, "n1"), OpMode("operation", 20.0, "n2")
    assert opmode.newer(old, new) == new and opmode.newer(new, old) == new
    assert opmode.newer(old, None) == old


def test_saved_and_loaded(tmp_path: Path) -> None:
    paths = NodePaths(tmp_path)
    assert opmode.load(paths) == OpMode()  # never set: operation
    op = OpMode.now("maintenance", "n1")
    opmode.save(paths, op)
    assert opmode.load(paths) == op and op.maintenance
    opmode.path(paths).write_text("{not json")
    assert opmode.load(paths) == OpMode()


def test_shown_in_status_and_health() -> None:
    st = {"role": "STANDBY", "ha": True, "op_mode": OpMode("maintenance", 0.0, "n2").to_dict()}
    assert health.status_line(st) == "STANDBY, maintenance mode"
    assert "op_mode:     maintenance (set on n2" in health.status_details(st)
    assert "operation mode is maintenance" in health.report(st)[0]
    assert health.status_line({"role": "ACTIVE", "op_mode": OpMode().to_dict()}) == "ACTIVE"


def test_a_full_disk_fails_health() -> None:
    st = {"role": "STANDBY", "ha": True, "disk": {"path": "/x", "free_bytes": 2**20, "total_bytes": 2**30,
                                                   "full": True}}
    text, ok = health.report(st)
    assert "disk /x is full (1 MiB free)" in text and not ok
    assert "1 MiB free of 1024 MiB under /x (FULL)" in health.status_details(st)
