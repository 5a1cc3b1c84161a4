"""The monitor's edge (esc.monitor.monitor) with a fake probe and the in-memory VIM
driver: scheduling, callbacks, recovery through a driver, load/snapshot, stop."""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from esc.monitor import recovery
from esc.monitor.core import Action, Event, Health, Recovery, Thresholds
from esc.monitor.monitor import Monitor, ping
from esc.vim.driver import Network, VmSpec
from esc.vim.fake import FakeDriver

NET = Network("sw")
TH = Thresholds(rise=2, down_after=2)


def wait_for(cond: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.005)
    raise AssertionError(f"timed out waiting for {what}")


class World:
    """VMs in a FakeDriver; the probe answers when the VM runs (and ``deaf`` is clear)."""

    def __init__(self, *names: str, policy: Recovery = Recovery.REBOOT, max_attempts: int = 3) -> None:
        self.driver = FakeDriver()
        self.specs = {n: VmSpec(n, "cirros", f"10.0.0.{i + 1}/24", NET) for i, n in enumerate(names)}
        for spec in self.specs.values():
            self.driver.create_vm(spec)
        self.by_ip = {s.ip: n for n, s in self.specs.items()}
        self.records = [{"name": n, "deployment": "dep", "address": s.address, "recovery": str(policy),
                         "max_attempts": max_attempts} for n, s in self.specs.items()]
        self.events: list[Event] = []
        self.actions: list[Action] = []
        self.probes: list[str] = []
        self.deaf: set[str] = set()  # VMs whose probe fails even when running
        self.lock = threading.Lock()

    def probe(self, address: str, timeout_s: float) -> bool:
        with self.lock:
            self.probes.append(address)
        name = self.by_ip[address]
        info = self.driver.get(name)
        return info is not None and info.state == "running" and name not in self.deaf

    def on_event(self, ev: Event) -> None:
        with self.lock:
            self.events.append(ev)

    def on_action(self, action: Action) -> None:
        with self.lock:
            self.actions.append(action)
        recovery.execute(self.driver, action, self.specs[action.vm])

    def monitor(self, **kw: object) -> Monitor:
        kw.setdefault("thresholds", TH)
        kw.setdefault("interval_s", 0.01)
        kw.setdefault("timeout_s", 0.05)
        return Monitor.load(self.records, self.on_event, self.on_action, probe=self.probe, **kw)  # type: ignore[arg-type]

    def kinds(self) -> list[tuple[str, str | None]]:
        with self.lock:
            return [(str(e.kind), e.vm) for e in self.events]


def test_run_once_detects_and_reboots() -> None:
    w = World("a", "b")
    m = w.monitor()
    m.run_once()
    m.run_once()
    assert w.kinds() == [("VM_ALIVE", "a"), ("VM_ALIVE", "b"), ("SERVICE_ALIVE", None)]
    pid = w.driver.get("a").pid  # type: ignore[union-attr]
    w.driver.kill("a")
    m.run_once()
    out = m.run_once()
    assert [str(o.kind) for o in out] == ["VM_DOWN", "reboot"]
    assert ("reboot", "a") in w.driver.calls
    new = w.driver.get("a")
    assert new is not None and new.state == "running" and new.pid != pid
    m.run_once()
    m.run_once()
    assert w.kinds()[-1] == ("VM_ALIVE", "a")
    assert {r["name"]: r["health"] for r in m.snapshot()} == {"a": "ALIVE", "b": "ALIVE"}


def test_redeploy_deletes_and_creates_the_same_spec() -> None:
    w = World("a", policy=Recovery.REDEPLOY)
    m = w.monitor()
    m.run_once()
    m.run_once()
    w.driver.kill("a")
    m.run_once()
    m.run_once()
    assert w.driver.calls[-2:] == [("delete", "a"), ("create", "a")]
    assert w.driver.spec("a") == w.specs["a"]


def test_redeploy_needs_a_spec() -> None:
    with pytest.raises(ValueError, match="spec"):
        recovery.execute(FakeDriver(), Action(Recovery.REDEPLOY, "a", "d", 1, 3, "why"))


def test_started_monitor_recovers_a_killed_vm() -> None:
    w = World("a", "b")
    m = w.monitor()
    m.start()
    try:
        assert m.running
        wait_for(lambda: ("SERVICE_ALIVE", None) in w.kinds(), what="SERVICE_ALIVE")
        w.driver.kill("b")
        wait_for(lambda: w.kinds()[-1:] == [("VM_ALIVE", "b")], what="b alive again")
        assert w.kinds()[3:] == [("VM_DOWN", "b"), ("VM_ALIVE", "b")]
        assert [(str(a.kind), a.vm, a.attempt) for a in w.actions] == [("reboot", "b", 1)]
    finally:
        m.stop()
    assert not m.running


def test_each_vm_is_probed_at_its_own_kpi_interval() -> None:
    """A VM whose KPI says every 0.5 s is probed far less often than one at the
    monitor's default (0.02 s here); both are probed from the first round, and a VM
    added later is probed at once, not after the longest interval."""
    w = World("fast", "slow", "late")
    w.records[1]["interval_s"] = 0.5
    late = w.records.pop()
    m = w.monitor(interval_s=0.02)
    m.start()
    try:
        wait_for(lambda: w.probes.count(w.specs["slow"].ip) >= 2, what="two probes of slow")
        with w.lock:
            fast, slow = w.probes.count(w.specs["fast"].ip), w.probes.count(w.specs["slow"].ip)
        assert fast >= 5 * slow, (fast, slow)
        late["interval_s"] = 60
        m.add([late])
        wait_for(lambda: w.specs["late"].ip in w.probes, timeout=2, what="a probe of the late VM")
    finally:
        m.stop()


def test_no_probe_while_recovering_and_results_from_before_discarded() -> None:
    w = World("a")
    release = threading.Event()
    started = threading.Event()

    def slow_action(action: Action) -> None:
        started.set()
        release.wait(5)
        w.on_action(action)

    m = Monitor.load(w.records, w.on_event, slow_action, probe=w.probe, thresholds=TH, interval_s=0.01,
                     timeout_s=0.05)
    w.driver.kill("a")
    m.start()
    try:
        assert started.wait(5)
        n = len(w.probes)
        time.sleep(0.1)  # ~10 rounds
        assert len(w.probes) == n, "a VM under recovery was probed"
        assert m.snapshot()[0]["recovering"]
        release.set()
        wait_for(lambda: ("SERVICE_ALIVE", None) in w.kinds(), what="a alive")
        assert w.kinds() == [("VM_DOWN", "a"), ("VM_ALIVE", "a"), ("SERVICE_ALIVE", None)]
    finally:
        release.set()
        m.stop()


def test_retries_then_gives_up() -> None:
    w = World("a", max_attempts=2)
    w.deaf.add("a")  # reboots do not help
    m = w.monitor()
    for _ in range(12):
        m.run_once()
    assert [str(a.kind) + str(a.attempt) for a in w.actions] == ["reboot1", "reboot2"]
    assert w.kinds() == [("VM_DOWN", "a"), ("VM_RECOVERY_FAILED", "a")]
    w.deaf.clear()
    m.run_once()
    m.run_once()
    assert w.kinds()[-2:] == [("VM_ALIVE", "a"), ("SERVICE_ALIVE", None)]


def test_failing_callbacks_do_not_stop_it() -> None:
    w = World("a")
    calls = []

    def bad_event(ev: Event) -> None:
        calls.append(ev.kind)
        raise RuntimeError("database down")

    def bad_action(action: Action) -> None:
        calls.append(action.kind)
        raise RuntimeError("VIM down")

    w.driver.kill("a")
    m = Monitor.load(w.records, bad_event, bad_action, probe=w.probe, thresholds=TH, interval_s=0.01,
                     timeout_s=0.05)
    for _ in range(6):
        m.run_once()
    # the failed reboot counted as an attempt; the next came down_after probes later
    assert [str(c) for c in calls] == ["VM_DOWN", "reboot", "reboot", "reboot"]


def test_probe_exceptions_count_as_failures() -> None:
    w = World("a")

    def boom(address: str, timeout_s: float) -> bool:
        raise OSError("no route")

    m = Monitor.load(w.records, w.on_event, w.on_action, probe=boom, thresholds=TH, interval_s=0.01,
                     timeout_s=0.05)
    m.run_once()
    m.run_once()
    assert w.kinds()[0] == ("VM_DOWN", "a")


def test_remove_waits_for_a_running_action() -> None:
    w = World("a")
    started, finished = threading.Event(), threading.Event()

    def slow_action(action: Action) -> None:
        started.set()
        time.sleep(0.2)
        finished.set()

    w.driver.kill("a")
    m = Monitor.load(w.records, w.on_event, slow_action, probe=w.probe, thresholds=TH, interval_s=0.01,
                     timeout_s=0.05)
    m.start()
    try:
        assert started.wait(5)
        m.remove(["a"])
        assert finished.is_set()
        assert m.snapshot() == []
    finally:
        m.stop()


def test_stop_then_start_probes_a_vm_whose_action_was_dropped() -> None:
    w = World("a")
    gate = threading.Event()
    ran: list[str] = []

    def held(action: Action) -> None:
        ran.append(action.vm)
        gate.wait(5)

    w.driver.kill("a")
    m = Monitor.load(w.records, w.on_event, held, probe=w.probe, thresholds=TH, interval_s=0.01,
                     timeout_s=0.05)
    m.start()
    wait_for(lambda: ran == ["a"], what="the action")
    gate.set()
    m.stop()
    assert not m.snapshot()[0]["recovering"]


def test_load_rebuilds_from_plain_records() -> None:
    w = World("a", "b")
    m = w.monitor()
    for _ in range(2):
        m.run_once()
    w.driver.kill("a")
    w.deaf.add("a")
    for _ in range(2):
        m.run_once()
    snap = m.snapshot()
    assert [(r["name"], r["health"], r["attempts"], r["service_alive"]) for r in snap] == \
        [("a", "DOWN", 1, True), ("b", "ALIVE", 0, True)]
    # the new active: only plain records from its database
    w2 = World("a", "b")
    w2.driver, w2.deaf = w.driver, w.deaf
    m2 = Monitor.load(snap, w2.on_event, w2.on_action, probe=w2.probe, thresholds=TH)
    for _ in range(2):
        m2.run_once()
    assert [(a.vm, a.attempt) for a in w2.actions] == [("a", 2)]
    assert ("SERVICE_ALIVE", None) not in w2.kinds() and ("VM_ALIVE", "b") not in w2.kinds()
    assert m2.snapshot()[0]["health"] == str(Health.DOWN)


def test_bad_options() -> None:
    with pytest.raises(ValueError):
        Monitor(lambda e: None, lambda a: None, interval_s=0)
    with pytest.raises(ValueError):
        Monitor.load([{"name": "a", "address": "10.0.0.1"}], lambda e: None, lambda a: None)


@pytest.mark.skipif(not shutil.which("ping"), reason="needs ping")
def test_ping_answers_on_loopback() -> None:
    assert ping("127.0.0.1", 1.0)


def fake_ping(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: str) -> Path:
    """A ``ping`` first on PATH that records its arguments and runs ``body``."""
    args = tmp_path / "args"
    script = tmp_path / "ping"
    script.write_text(f"#!/bin/sh\necho \"$@\" > {args}\n{body}\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    return args


def test_ping_arguments_and_answer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    args = fake_ping(tmp_path, monkeypatch, "exit 0")
    assert ping("10.1.2.3", 0.3)
    assert args.read_text().split() == ["-c1", "-n", "-q", "-W", "0.3", "10.1.2.3"]
    fake_ping(tmp_path, monkeypatch, "exit 1")
    assert not ping("10.1.2.3", 0.3)


def test_ping_that_hangs_is_cut_short(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_ping(tmp_path, monkeypatch, "exec sleep 30")
    t0 = time.monotonic()
    assert not ping("10.1.2.3", 0.1)
    assert time.monotonic() - t0 < 3
