"""A few daemon threads that poll the database and can be woken or stopped (the
transaction worker and the callback sender are both one)."""

from __future__ import annotations

import threading
import time


class PollingThreads:
    def __init__(self, name: str, threads: int) -> None:
        self.wakeup = threading.Condition()
        self.generation = 0
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._run, name=f"{name}-{i}", daemon=True)
                        for i in range(threads)]

    def _run(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
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
