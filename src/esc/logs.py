"""Logging to ``<root>/var/log/esc/<file>``: one line per event, never blocking the caller.

Lines go through a queue to a writer thread (the decision loop must not wait
on a slow disk). Each line carries the node name and its current role.
"""

from __future__ import annotations

import logging
import logging.handlers
import queue
from collections.abc import Callable
from pathlib import Path

FORMAT = "%(asctime)s.%(msecs)03d %(node)s %(role)s %(levelname)s %(message)s"
DATEFMT = "%Y-%m-%dT%H:%M:%S"


class _Context(logging.Filter):
    def __init__(self, node: str, role: Callable[[], str]) -> None:
        super().__init__()
        self.node, self.role = node, role

    def filter(self, record: logging.LogRecord) -> bool:
        record.node = self.node
        record.role = self.role()
        return True


def setup(log_dir: Path, filename: str, node: str,
          role: Callable[[], str] = lambda: "-") -> logging.handlers.QueueListener:
    log_dir.mkdir(parents=True, exist_ok=True)
    file_handler = logging.handlers.WatchedFileHandler(log_dir / filename)
    file_handler.setFormatter(logging.Formatter(FORMAT, DATEFMT))
    q: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    qh = logging.handlers.QueueHandler(q)
    qh.addFilter(_Context(node, role))
    root = logging.getLogger()
    root.handlers[:] = [qh]
    root.setLevel(logging.INFO)
    listener = logging.handlers.QueueListener(q, file_handler)
    listener.start()
    return listener
