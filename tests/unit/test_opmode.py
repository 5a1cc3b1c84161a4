"""The pair's operation mode: parsing, the newer setting wins, kept on disk, shown."""

from __future__ import annotations

from pathlib import Path

import pytest

from esc import health
from esc.agent import opmode
from esc.agent.opmode import OpMode
from esc.config import NodePaths


@pytest.mark.parametrize("data", [
    None, [], {}, {"mode": "sleeping"}, {"mode": "maintenance", "set_at": "x"},
    {"mode": "maintenance", "version": "3"}, {"mode": "maintenance", "version": -1},
    {"mode": "maintenance", "version": 2**40}, {"mode": "maintenance", "version": True},
    {"mode": "maintenance", "set_at": float("inf")}, {"mode": "maintenance", "set_at": float("nan")},
    {"mode": "maintenance", "by": ["n1"]},
])
def test_malformed_is_refused(data: object) -> None:
    assert OpMode.parse(data) is None


def test_the_newer_setting_wins() -> None:
    old, new = OpMode("maintenance", 1, "n1"), OpMode("operation", 2, "n2")
    assert opmode.newer(old, new) == new and opmode.newer(new, old) == new
    assert opmode.newer(old, None) == old


def test_a_skewed_clock_cannot_undo_a_later_setting() -> None:
    """n1's clock runs an hour ahead: n2's later setting still wins (the wall-clock
    order let n1's earlier maintenance setting come back)."""
    on_n1 = OpMode().next("maintenance", "n1")
    on_n1 = OpMode(on_n1.mode, on_n1.version, "n1", on_n1.set_at + 3600)
    on_n2 = opmode.newer(OpMode(), on_n1).next("operation", "n2")  # n2 saw n1's, then set
    assert on_n2.set_at < on_n1.set_at
    assert opmode.newer(on_n1, on_n2) == on_n2 and opmode.newer(on_n2, on_n1) == on_n2


def test_settings_made_apart_agree_on_maintenance() -> None:
    """Set on both sides of a partition with the same version: both nodes keep the same
    one, maintenance (no automatic failover) over operation."""
    a, b = OpMode().next("maintenance", "n2"), OpMode().next("operation", "n1")
    assert opmode.newer(a, b) == opmode.newer(b, a) == a


def test_saved_and_loaded(tmp_path: Path) -> None:
    paths = NodePaths(tmp_path)
    assert opmode.load(paths) == OpMode()  # never set: operation
    op = OpMode().next("maintenance", "n1")
    opmode.save(paths, op)
    assert opmode.load(paths) == op and op.maintenance
    opmode.path(paths).write_text("{not json")
    assert opmode.load(paths) == OpMode()


def test_shown_in_status_and_health() -> None:
    st = {"role": "STANDBY", "ha": True, "op_mode": OpMode("maintenance", 1, "n2").to_dict()}
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
