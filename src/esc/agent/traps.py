"""The agent's side of the SNMP traps: a thread that looks at the node once a second
(its status, its new history events, and on the serving node the monitor's VM events)
and hands what changed (esc.agent.alarms) to the sender process (esc.snmp.sender),
which it starts, feeds its configuration and stops.

It runs only while traps are configured; on both nodes, each telling its own view.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from esc.agent import alarms
from esc.agent.history import Journal
from esc.agent.supervisor import Child
from esc.snmp import responder

log = logging.getLogger("esc.agent.traps")

SETTLED = ("ACTIVE", "STANDBY", "STANDALONE")
VM_EVENTS_SQL = ("SELECT id, type, coalesce(vm, ''), coalesce(tenant, '') || '/' || coalesce(resource, ''), "
                 "message FROM events WHERE id > %s AND type IN ('VM_DOWN', 'VM_ALIVE') "
                 "ORDER BY id LIMIT 100")


class TrapWatcher(threading.Thread):
    def __init__(self, child: Child, config: Callable[[], dict[str, Any] | None],
                 status: Callable[[], dict], healthy: Callable[[dict], bool], journal: Journal,
                 peer_name: str | None, connect: Callable[[], Any], serving: Callable[[], bool],
                 interval: float = 1.0, ready: threading.Event | None = None) -> None:
        """``config()``: the sender's configuration line (secrets included), None when
        traps are off."""
        super().__init__(name="traps", daemon=True)
        self.child, self.config, self.status, self.healthy = child, config, status, healthy
        self.journal, self.peer_name, self.connect, self.serving = journal, peer_name, connect, serving
        self.interval = interval
        self.ready = ready  # set once the service users are settled (the sender runs as one)
        self.stopped = threading.Event()
        self.prev: alarms.Signals | None = None
        self.seen_seq = journal.latest()  # events before the watcher are not news
        self.vm_event_id: int | None = None  # the last VM event seen (None: not looked yet)
        self.sent_config: dict[str, Any] | None = None
        self.lock = threading.Lock()

    def stop(self) -> None:
        self.stopped.set()
        self.join(3)
        self._stop_sender()

    def run(self) -> None:
        while self.ready is not None and not self.ready.wait(0.5):
            if self.stopped.is_set():
                return
        while not self.stopped.is_set():
            try:
                self.step()
            except Exception:  # the next second tries again
                log.exception("traps: step failed")
            self.stopped.wait(self.interval)

    # ------------------------------------------------------------------ one look
    def step(self) -> list[alarms.Notification]:
        cfg = self.config()
        if cfg is None:
            self._stop_sender()
            return []
        if cfg != self.sent_config:  # changed by a reload: a sender with the new one
            self._stop_sender()
        if not self.child.running:
            if not self.child.start():  # restarted a moment ago: the next look starts it
                return []
            if not self.child.send_line(json.dumps(cfg)):
                return []
            self.sent_config = cfg
        st = self.status()
        healthy = self.healthy(st)
        out = self.notifications(st, healthy)
        for n in out:
            self.send(n)
        if cfg.get("agent_port"):  # what the sender answers to GETs (esc.snmp.responder)
            with self.lock:
                self.child.send_line(json.dumps({"status": responder.values(st, healthy)}))
        return out

    def send(self, n: alarms.Notification) -> bool:
        with self.lock:  # the API's test trap and the watcher's write whole lines
            return self.sent_config is not None and self.child.send_line(json.dumps(asdict(n)))

    def notifications(self, st: dict, healthy: bool) -> list[alarms.Notification]:
        node = str(st.get("node", ""))
        out: list[alarms.Notification] = []
        epoch, seq = self.seen_seq
        for ev in self.journal.after(epoch, seq):
            out.extend(alarms.from_event(ev))
        self.seen_seq = self.journal.latest()
        sig = alarms.signals(st, healthy)
        if self.prev is not None or sig.role in SETTLED:  # a starting node is not yet news
            out.extend(alarms.changes(self.prev, sig, node, self.peer_name))
            self.prev = sig
        out.extend(self._vm_events(node, sig.role))
        return out

    def _vm_events(self, node: str, role: str) -> list[alarms.Notification]:
        if not self.serving():
            self.vm_event_id = None  # the next serving spell starts from what is there then
            return []
        try:
            with self.connect() as conn:
                if self.vm_event_id is None:
                    row = conn.execute("SELECT coalesce(max(id), 0) FROM events").fetchone()
                    self.vm_event_id = int(row[0])
                    return []
                rows = conn.execute(VM_EVENTS_SQL, (self.vm_event_id,)).fetchall()
        except Exception as e:  # noqa: BLE001 - the database comes and goes with the role
            log.debug("traps: VM events not read: %s", e)
            return []
        out = []
        for event_id, kind, vm, deployment, message in rows:
            self.vm_event_id = max(self.vm_event_id, int(event_id))
            n = alarms.from_vm_event(node, role, kind, vm, deployment, message)
            if n is not None:
                out.append(n)
        return out

    def _stop_sender(self) -> None:
        if self.child.running:
            self.child.send_line("exit")
            self.child.stop(grace=2)
            self.child.stop_wait(3)
        self.sent_config = None
