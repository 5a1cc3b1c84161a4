"""PollingThreads' delayed start: a new active's first requests go before the backlog."""

from __future__ import annotations

import threading

import psycopg

from esc.services.threads import PollingThreads


class Recorder(PollingThreads):
    conninfo = "host=/nonexistent-socket-dir dbname=none connect_timeout=1"

    def __init__(self) -> None:
        super().__init__("recorder", threads=2)
        self.done = threading.Event()

    def drain(self, conn: psycopg.Connection) -> float:  # never reached: no database
        raise AssertionError("drained without a database")

    def thread_done(self) -> None:
        self.done.set()


def test_threads_do_nothing_before_their_start_delay_and_stop_during_it(monkeypatch):
    calls: list[str] = []
    monkeypatch.setattr(psycopg, "connect", lambda *a, **k: calls.append("connect"))
    threads = Recorder()
    threads.start(after=30.0)
    assert not threads.done.wait(0.3)
    assert calls == [], "a thread connected before its start delay"
    threads.request_stop()
    for t in threads.threads:
        t.join(5)
        assert not t.is_alive(), "a stop during the start delay must end the thread"
    assert calls == []


def test_without_a_delay_threads_connect_at_once(monkeypatch):
    connected = threading.Event()

    def connect(*a: object, **k: object) -> None:
        connected.set()
        raise psycopg.OperationalError("no database here")

    monkeypatch.setattr(psycopg, "connect", connect)
    threads = Recorder()
    threads.start()
    try:
        assert connected.wait(5)
    finally:
        threads.request_stop()
        for t in threads.threads:
            t.join(5)
