"""Logging to ``<root>/var/log/esc/<file>``: one line per event, never blocking the caller.

Lines go through a queue to a writer thread (the decision loop must not wait
on a slow disk). Each line carries the node name and its current role.
"""

from __future__ import annotations

import logging
import logging.handlers
import queue
import re
import sys
import threading
from collections.abc import Callable
from pathlib import Path

FORMAT = "%(asctime)s.%(msecs)03d %(node)s %(role)s %(levelname)s %(message)s"
DATEFMT = "%Y-%m-%dT%H:%M:%S"


class OneLineFormatter(logging.Formatter):
    """One line per event, even for multi-line messages and tracebacks, so that a log
    can be grepped and merged with the other services' logs."""

    def format(self, record: logging.LogRecord) -> str:
        return re.sub(r"\s*\n\s*", " | ", super().format(record).strip())


class _StreamToLog:
    """sys.stdout / sys.stderr of a service: each line a log record, so that nothing
    it prints escapes the log's format, its rotation or its rate limits."""

    def __init__(self, logger: logging.Logger, level: int) -> None:
        self.logger, self.level, self.buf = logger, level, ""

    def write(self, text: str) -> int:
        self.buf += text
        while "\n" in self.buf:
            line, self.buf = self.buf.split("\n", 1)
            if line.strip():
                self.logger.log(self.level, "%s", line.rstrip())
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


def capture_output(stdout: bool = True) -> None:
    """Uncaught exceptions (in any thread) and anything printed go to the log (stdout
    only with ``stdout``: the controller talks to its agent on it)."""
    err = logging.getLogger("esc.stderr")

    def thread_died(args: threading.ExceptHookArgs) -> None:
        name = args.thread.name if args.thread else "?"
        err.error("thread %s died", name,
                  exc_info=(args.exc_type, args.exc_value, args.exc_traceback))

    threading.excepthook = thread_died
    sys.excepthook = lambda t, v, tb: err.critical("uncaught exception", exc_info=(t, v, tb))
    if stdout:
        sys.stdout = _StreamToLog(logging.getLogger("esc.stdout"), logging.INFO)  # type: ignore[assignment]
    sys.stderr = _StreamToLog(err, logging.WARNING)  # type: ignore[assignment]


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
    file_handler.setFormatter(OneLineFormatter(FORMAT, DATEFMT))
    q: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    qh = logging.handlers.QueueHandler(q)
    qh.addFilter(_Context(node, role))
    root = logging.getLogger()
    root.handlers[:] = [qh]
    root.setLevel(logging.INFO)
    listener = logging.handlers.QueueListener(q, file_handler)
    listener.start()
    return listener
