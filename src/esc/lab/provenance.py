"""Where a measured figure comes from: the commit, the date, the machine. Every report in
docs/benchmarks/ starts with this line, written by the command that measured it."""

from __future__ import annotations

import os
import platform
import subprocess
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def commit() -> str:
    """The short commit, with ``-dirty`` when the tree has uncommitted changes."""
    def git(*args: str) -> str:
        res = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
        return res.stdout.strip() if res.returncode == 0 else ""
    head = git("rev-parse", "--short", "HEAD") or "unknown"
    # the reports a benchmark writes (floor.json before failover.py reads it) do not count
    changed = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!docs/benchmarks")
    return head + ("-dirty" if changed else "")


def machine() -> str:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{platform.node()}, {os.cpu_count()} cores, {cpu}, Linux {platform.release()}"


def line() -> str:
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    load = os.getloadavg()[0]
    return f"Commit `{commit()}`, {now}. Machine: {machine()}; load average {load:.2f} at the end."
