"""A few daemon threads that poll the database and can be woken or stopped (the
transaction worker and the callback sender are both one)."""

from __future__ import annotations

import logging
import threading
import time

import psycopg

from esc.services.db import one_line

log = logging.getLogger(__name__)


class PollingThreads:
    """Each thread: connect, ``drain`` the work (which returns how long to sleep), sleep
    until woken or that long; on any error log, back off (0.1 s doubling to 5 s) and
    reconnect. Subclasses set ``conninfo`` and implement ``drain``."""

    conninfo: str

    def __init__(self, name: str, threads: int) -> None:
        self.name = name
        self.wakeup = threading.Condition()
        self.generation = 0
        self.stopping = threading.Event()
        self.start_after = 0.0
        self.threads = [threading.Thread(target=self._run, name=f"{name}-{i}", daemon=True)
                        for i in range(threads)]

    def drain(self, conn: psycopg.Connection) -> float:
        """Do what is due; return the seconds to wait before looking again."""
        raise NotImplementedError

    def thread_done(self) -> None:
        """Called by each thread as it ends (per-thread clean-up)."""

    def _run(self) -> None:
        conn: psycopg.Connection | None = None
        backoff = 0.1
        try:
            self.stopping.wait(self.start_after)
            while not self.stopping.is_set():
                with self.wakeup:
                    seen = self.generation
                try:
                    if conn is None or conn.closed:
                        conn = psycopg.connect(self.conninfo, application_name=self.name,
                                               connect_timeout=2)
                    wait = self.drain(conn)
                    backoff = 0.1
                except Exception as e:  # database gone, or a bug: log, wait, reconnect
                    log.warning("%s: %s", self.name, one_line(e))
                    if conn is not None:
                        conn.close()
                    conn = None
                    self.stopping.wait(backoff)
                    backoff = min(backoff * 2, 5.0)
                    continue
                with self.wakeup:
                    if self.generation == seen and not self.stopping.is_set():
                        self.wakeup.wait(wait)
        finally:
            if conn is not None:
                conn.close()
            self.thread_done()

    def start(self, after: float = 0.0) -> None:
        """Start the threads; each connects and looks for work ``after`` seconds later
        (sooner if stopped meanwhile)."""
        self.start_after = after
        for t in self.threads:
            t.start()

    def wake(self) -> None:
        with self.wakeup:
            self.generation += 1
            self.wakeup.notify_all()

    def request_stop(self) -> None:
        """Take nothing new; what is in progress finishes (or is resumed later)."""
        self.stopping.set()
        self.wake()

    def stop(self, timeout: float = 2.0) -> None:
        self.request_stop()
        deadline = time.monotonic() + timeout
        for t in self.threads:
            if t.is_alive():
                t.join(max(0.0, deadline - time.monotonic()))
