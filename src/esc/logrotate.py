"""Every file under ``<root>/var/log/esc`` kept to a size: copy, then truncate.

The writers are many (the agent's and the controller's logging, and the output of
PostgreSQL, keepalived and ExaBGP that the supervisor sends to a file), and all of them
append (O_APPEND): after a truncation their next line lands at the start of the file,
so no process needs to reopen anything, as with logrotate's ``copytruncate``. A line
written between the copy and the truncation can be lost; nothing else is.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
from pathlib import Path

log = logging.getLogger(__name__)

MAX_BYTES = 20 * 2**20  # per file
KEEP = 5  # older copies: FILE.1 (newest) .. FILE.5
SUFFIXES = (".log", ".out")


def rotate(path: Path, keep: int = KEEP) -> None:
    """FILE -> FILE.1 -> ... -> FILE.keep (dropped), FILE truncated in place."""
    for i in range(keep - 1, 0, -1):
        older = path.with_name(f"{path.name}.{i}")
        if older.exists():
            os.replace(older, path.with_name(f"{path.name}.{i + 1}"))
    shutil.copyfile(path, path.with_name(f"{path.name}.1"))
    os.truncate(path, 0)


def rotate_dir(log_dir: Path, max_bytes: int = MAX_BYTES, keep: int = KEEP) -> list[str]:
    """Rotate every log in ``log_dir`` larger than ``max_bytes``; the names rotated."""
    done = []
    try:
        entries = sorted(log_dir.iterdir())
    except OSError:
        return done
    for path in entries:
        try:
            if path.suffix in SUFFIXES and path.is_file() and path.stat().st_size > max_bytes:
                rotate(path, keep)
                done.append(path.name)
        except OSError as e:  # a full disk, a file removed meanwhile: next time
            log.warning("could not rotate %s: %s", path, e)
    return done


class Rotator(threading.Thread):
    """Looks every ``interval`` seconds, off the decision loop (a copy takes disk time)."""

    def __init__(self, log_dir: Path, interval: float = 30.0, max_bytes: int = MAX_BYTES,
                 keep: int = KEEP) -> None:
        super().__init__(name="log-rotator", daemon=True)
        self.log_dir, self.interval, self.max_bytes, self.keep = log_dir, interval, max_bytes, keep
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            for name in rotate_dir(self.log_dir, self.max_bytes, self.keep):
                log.info("log %s rotated (over %d MiB)", name, self.max_bytes // 2**20)

    def stop(self) -> None:
        self.stopped.set()
