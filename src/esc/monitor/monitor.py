"""The monitor's edge: probe each VM every ``interval_s`` (its own, from its KPI
section, or the monitor's default), feed the pure core
(``esc.monitor.core``), hand its events and recovery actions to the caller.

Threads: one loop thread (probe rounds, ``on_event`` calls, in order), a pool
for the probes of a round (at most ``max_parallel`` at once, each bounded by
``timeout_s``), and a pool that runs ``on_action`` (the caller's driver call),
so a slow reboot never delays the probes of other VMs. A probe that was out
while a recovery action ran or finished is discarded (generation counter), so
a VM is never counted down for a probe sent while it was being rebooted.

The caller, the controller on the ACTIVE node, builds it from its database
(``Monitor.load(records, ...)``), starts it when it starts serving and stops
it when it stops.
"""

from __future__ import annotations

import logging
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any

from esc.monitor.core import Action, Event, Fleet, Output, Target, Thresholds

log = logging.getLogger("esc.monitor")

Probe = Callable[[str, float], bool]  # (address, timeout_s) -> answered
EventCallback = Callable[[Event], None]
ActionCallback = Callable[[Action], None]


def ping(address: str, timeout_s: float = 1.0) -> bool:
    """One ICMP echo from this process's network namespace (``ping -c1 -W``): no raw
    socket of ours, bounded by ``timeout_s`` (plus a margin for the process)."""
    try:
        res = subprocess.run(["ping", "-c1", "-n", "-q", "-W", f"{timeout_s:g}", address],
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, timeout=timeout_s + 2)
    except subprocess.TimeoutExpired:
        return False
    return res.returncode == 0


class Monitor:
    def __init__(self, on_event: EventCallback, on_action: ActionCallback, *, interval_s: float = 1.0,
                 timeout_s: float = 1.0, thresholds: Thresholds | None = None, probe: Probe = ping,
                 max_parallel: int = 16, action_workers: int = 4) -> None:
        if interval_s <= 0 or timeout_s <= 0:
            raise ValueError("interval_s and timeout_s must be > 0")
        self.on_event, self.on_action, self.probe = on_event, on_action, probe
        self.interval_s, self.timeout_s = interval_s, timeout_s
        self.max_parallel, self.action_workers = max(1, max_parallel), max(1, action_workers)
        self._fleet = Fleet(thresholds or Thresholds())
        self._lock = threading.Lock()
        self._gen: dict[str, int] = {}
        self._due: dict[str, float] = {}  # vm -> monotonic time of its next probe
        self._wake = threading.Event()  # a VM was added, or stop: reschedule now
        self._inflight: dict[str, tuple[Future[None], int]] = {}  # vm -> (action, thread ident or 0)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._probes: ThreadPoolExecutor | None = None
        self._actions: ThreadPoolExecutor | None = None

    @classmethod
    def load(cls, vms: Iterable[Mapping[str, Any] | Target], on_event: EventCallback,
             on_action: ActionCallback, **options: Any) -> Monitor:
        """Rebuild a monitor from plain records (the database's VMs after a failover):
        ``name``, ``deployment``, ``address``, optional ``recovery``, ``max_attempts``,
        ``health``, ``attempts``, ``gave_up``, ``service_alive``. Not started."""
        monitor = cls(on_event, on_action, **options)
        monitor.add(vms)
        return monitor

    # --- what is watched

    def add(self, vms: Iterable[Mapping[str, Any] | Target]) -> None:
        """Watch these VMs (all VMs of a new deployment in one call)."""
        vms = list(vms)
        with self._lock:
            for t in self._fleet.add(vms):
                self._gen.setdefault(t.name, 0)
                self._due.setdefault(t.name, 0.0)  # new: probe at the next round
        self._wake.set()

    def remove(self, names: Iterable[str], wait_s: float = 30.0) -> None:
        """Stop watching these VMs, and wait (up to ``wait_s``) for a recovery action
        already running on them to finish: after this returns, the monitor will not
        touch them, so the caller may delete them."""
        names = list(names)
        me = threading.get_ident()
        with self._lock:
            self._fleet.remove(names)
            for n in names:
                self._gen.pop(n, None)
                self._due.pop(n, None)
            pending = [f for n in names if n in self._inflight
                       for f, owner in [self._inflight[n]] if owner != me]
        if pending:
            wait(pending, timeout=wait_s)

    def remove_deployment(self, deployment: str, wait_s: float = 30.0) -> None:
        with self._lock:
            names = [n for n, t in self._fleet.targets.items() if t.deployment == deployment]
        self.remove(names, wait_s)

    def snapshot(self) -> list[dict[str, Any]]:
        """Every watched VM as a plain record (health, attempts, ...): what ``load`` takes."""
        with self._lock:
            return self._fleet.snapshot()

    # --- running

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        if self.running:
            return
        self._stop.clear()
        self._wake.clear()
        self._actions = ThreadPoolExecutor(self.action_workers, thread_name_prefix="esc-monitor-action")
        self._thread = threading.Thread(target=self._loop, name="esc-monitor", daemon=True)
        self._thread.start()
        log.info("monitor started: %d VM(s), every %.2gs", len(self._fleet.targets), self.interval_s)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop probing; wait for the round and for running recovery actions (queued
        ones are dropped)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        if self._actions is not None:
            self._actions.shutdown(wait=True, cancel_futures=True)
            self._actions = None
        with self._lock:  # a dropped action counts as finished: probe those VMs again on start
            self._inflight.clear()
            for name, h in self._fleet.health.items():
                if h.recovering:
                    self._fleet.action_finished(name)
                    self._gen[name] += 1
        if self._probes is not None:
            self._probes.shutdown(wait=False, cancel_futures=True)
            self._probes = None
        log.info("monitor stopped")

    def run_once(self) -> list[Output]:
        """One probe round now, recovery actions run inline (tests; not while started)."""
        return self._round(inline=True)

    # --- inside

    def interval_of(self, target: Target) -> float:
        return target.interval_s or self.interval_s

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._round(inline=False, now=time.monotonic())
            except Exception:
                log.exception("monitor round failed")
            with self._lock:
                nxt = min(self._due.values(), default=time.monotonic() + self.interval_s)
            # wait for the next VM due (at most a second: a clock to re-check), or a wake-up
            self._wake.wait(min(1.0, max(0.0, nxt - time.monotonic())))
            self._wake.clear()

    def _probe_one(self, address: str, timeout_s: float) -> bool:
        try:
            return bool(self.probe(address, timeout_s))
        except Exception:
            log.exception("probe of %s raised", address)
            return False

    def _round(self, inline: bool, now: float | None = None) -> list[Output]:
        """Probe the VMs due at ``now`` (every VM when None) in parallel, each due
        again one interval after this round started."""
        with self._lock:
            batch = []
            for n, t in sorted(self._fleet.targets.items()):
                if now is not None and self._due.get(n, 0.0) > now:
                    continue
                if now is not None:
                    self._due[n] = now + self.interval_of(t)
                if not self._fleet.health[n].recovering:
                    batch.append((n, t.address, self._gen[n], min(self.timeout_s, self.interval_of(t))))
        if not batch:
            return []
        if self._probes is None:
            self._probes = ThreadPoolExecutor(self.max_parallel, thread_name_prefix="esc-monitor-probe")
        futures = [self._probes.submit(self._probe_one, addr, timeout) for _, addr, _, timeout in batch]
        wait(futures, timeout=max(timeout for *_, timeout in batch) + 5)
        outputs: list[Output] = []
        for (name, _, gen, _), fut in zip(batch, futures, strict=True):
            ok = fut.done() and not fut.cancelled() and fut.result()
            with self._lock:
                if self._gen.get(name) != gen:
                    continue  # removed, or a recovery started or ended while the probe was out
                out = self._fleet.observe(name, ok)
                if any(isinstance(o, Action) for o in out):
                    self._gen[name] += 1
            outputs += out
            self._dispatch(out, inline)
        return outputs

    def _dispatch(self, out: list[Output], inline: bool) -> None:
        for o in out:
            if isinstance(o, Event):
                log.info("%s %s: %s", o.kind, o.vm or o.deployment, o.reason)
                try:
                    self.on_event(o)
                except Exception:
                    log.exception("on_event(%s) raised", o)
            elif inline or self._actions is None:
                self._run_action(o)
            else:
                with self._lock:
                    fut = self._actions.submit(self._run_action, o)
                    self._inflight[o.vm] = (fut, 0)

    def _run_action(self, action: Action) -> None:
        with self._lock:
            if action.vm not in self._fleet.targets:
                self._inflight.pop(action.vm, None)
                return  # removed while queued: the caller is deleting it
            if action.vm in self._inflight:
                self._inflight[action.vm] = (self._inflight[action.vm][0], threading.get_ident())
        log.info("recovery of %s: %s", action.vm, action.reason)
        t0 = time.monotonic()
        try:
            self.on_action(action)
            log.info("recovery of %s (%s) done in %.2fs", action.vm, action.kind, time.monotonic() - t0)
        except Exception:
            log.exception("recovery of %s (%s) failed", action.vm, action.kind)
        finally:
            with self._lock:
                self._inflight.pop(action.vm, None)
                if action.vm in self._fleet.targets:
                    self._fleet.action_finished(action.vm)
                    self._gen[action.vm] += 1
