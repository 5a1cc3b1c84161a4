"""What a serving controller's parts are doing, for the node's health output.

The controller (escmanager, unprivileged) writes a small JSON file in the directory
it is handed, every ``INTERVAL_S`` while it serves: its pid, the time, and for each
part whether it runs (true), has stopped (false) or is not configured (null). The
agent (root) reads it into its status: the health lines for the VIM driver, the
monitor and the transaction worker come from it. A file older than ``MAX_AGE_S``
says nothing (a controller that stopped writing is not vouched for).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

FILE = "components.json"  # in the controller's directory (NodePaths.manager_dir)
INTERVAL_S = 1.0
MAX_AGE_S = 5.0


class Reporter(threading.Thread):
    def __init__(self, path: Path, probes: dict[str, Callable[[], bool | None]],
                 interval: float = INTERVAL_S) -> None:
        super().__init__(name="components", daemon=True)
        self.path, self.probes, self.interval = path, probes, interval
        self.stopped = threading.Event()

    def snapshot(self) -> dict:
        parts: dict[str, bool | None] = {}
        for name, probe in self.probes.items():
            try:
                parts[name] = probe()
            except Exception:  # noqa: BLE001 - a probe that fails says the part is not running
                parts[name] = False
        return {"pid": os.getpid(), "at": time.time(), "components": parts}

    def write(self) -> None:
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        try:
            tmp.write_text(json.dumps(self.snapshot()))
            os.replace(tmp, self.path)
        except OSError as e:
            log.warning("cannot write %s: %s", self.path, e)

    def run(self) -> None:
        while not self.stopped.is_set():
            self.write()
            self.stopped.wait(self.interval)

    def stop(self) -> None:
        self.stopped.set()
        self.join(2)
        self.path.unlink(missing_ok=True)


def read(path: Path, pid: int | None, max_age: float = MAX_AGE_S) -> dict[str, bool | None] | None:
    """The parts as the controller of ``pid`` last wrote them, or None: no file, another
    process's, or too old."""
    try:
        data = json.loads(path.read_text())
        if pid is None or data.get("pid") != pid or time.time() - float(data["at"]) > max_age:
            return None
        parts = data["components"]
        return {str(k): (None if v is None else bool(v)) for k, v in parts.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
