"""The pair's event history: every role transition, failover, switchover, fence,
rejoin, operation-mode change and reload, with the reason and the node's view of its
peer at that moment.

Each node keeps its own events in a :class:`Journal`: in memory (the latest
``KEEP``) and in a file under ``var/lib/esc`` that a thread of its own appends to, so a
stalled disk stalls that thread and never the agent's loop. An event is named by
(node, epoch, seq): the epoch is drawn when the journal file is made, so a reinstalled
node never reuses a name.

The serving node's :class:`Shipper` copies its own events and its peer's (fetched over
the peer API) into the replicated table ``ha_events``, owned by the database
superuser: the controller reads it (the portal) and cannot rewrite it. What a node
recorded while it could not reach the database (it was dying, fenced or alone) is in
its journal and is copied when it is back, so both nodes' views end up in the table.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from esc.roles import Command, Role

log = logging.getLogger("esc.agent.history")

KINDS = ("start", "stop", "transition", "failover", "switchover", "force_active", "fence",
         "freeze", "rejoin", "op_mode", "reload")
KEEP = 1000  # events kept in memory, and in the file after a compaction
TABLE_KEEP_DAYS = 365  # the table forgets events older than this (pruned once an hour)
FILE_MAX_BYTES = 1 << 20


@dataclass(frozen=True)
class Event:
    node: str
    epoch: str
    seq: int
    at: float  # wall-clock seconds
    kind: str
    role: str  # the node's role after the event
    reason: str
    role_from: str | None = None
    peer_role: str | None = None  # the peer as this node saw it (None: not heard)
    by: str | None = None  # who asked, for an operator's command
    detail: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Any) -> Event:
        """An event read back (a file, the peer): ValueError if it is not one."""
        if not isinstance(d, dict):
            raise ValueError("an event is an object")
        try:
            ev = cls(node=str(d["node"]), epoch=str(d["epoch"]), seq=int(d["seq"]), at=float(d["at"]),
                     kind=str(d["kind"]), role=str(d["role"]), reason=str(d["reason"]),
                     role_from=_opt_str(d.get("role_from")), peer_role=_opt_str(d.get("peer_role")),
                     by=_opt_str(d.get("by")), detail=dict(d.get("detail") or {}))
        except (KeyError, TypeError) as e:
            raise ValueError(f"not an event: {e}") from None
        if ev.kind not in KINDS or ev.seq < 1 or not ev.node or not ev.epoch:
            raise ValueError(f"not an event: kind {ev.kind!r}, seq {ev.seq}")
        return ev

    def line(self) -> str:
        """One line for an operator."""
        when = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(self.at)) + f".{int(self.at % 1 * 1000):03d}Z"
        change = f"{self.role_from} -> {self.role}" if self.role_from and self.role_from != self.role \
            else self.role
        extra = []
        if self.peer_role is not None:
            extra.append(f"peer {self.peer_role}")
        if "active_lost_s" in self.detail:
            extra.append(f"the active's last answer {self.detail['active_lost_s']:.2f}s before")
        if self.by:
            extra.append(f"by {self.by}")
        tail = f" ({', '.join(extra)})" if extra else ""
        return f"{when}  {self.node:<8} {self.kind:<12} {change}: {self.reason}{tail}"


def _opt_str(v: Any) -> str | None:
    return None if v is None else str(v)


def transition_kind(old: Role, new: Role, command: Command | None, peer_role: Role | None,
                    stopping: bool, peer_was_active: bool) -> str:
    """What a role change is, for the history. A node becoming ACTIVE by the operator's
    word: force_active; after its peer was the active (``peer_was_active``: seen ACTIVE
    since this node last was): from a peer that stepped down alive, a switchover, else a
    failover; with no active before it (the pair's first election): a transition. An
    ACTIVE that stops being one for any reason but a switchover or its own stop gave way
    (fence)."""
    if new == Role.ACTIVE and old != Role.ACTIVE:
        if command == Command.FORCE_ACTIVE:
            return "force_active"
        if not peer_was_active:
            return "transition"
        if peer_role in (Role.SWITCHING_TO_STANDBY, Role.STANDBY):
            return "switchover"
        return "failover"
    if old == Role.ACTIVE and new != Role.ACTIVE:
        if command == Command.SWITCHOVER:
            return "switchover"
        return "stop" if stopping else "fence"
    return "transition"


class Journal:
    """This node's events. ``path`` None: in memory only (the simulator)."""

    def __init__(self, path: Path | None, node: str, keep: int = KEEP,
                 clock: Callable[[], float] = time.time) -> None:
        self.path, self.node, self.clock = path, node, clock
        self.lock = threading.Lock()
        self.events: deque[Event] = deque(maxlen=keep)
        self.epoch = ""
        self.seq = 0
        if path is not None:
            _end_torn_line(path)
            self.epoch, events = read_file(path, node)
            self.events.extend(events[-keep:])
            self.seq = events[-1].seq if events else 0
        if not self.epoch:
            self.epoch = secrets.token_hex(4)
            self.seq = 0
            self.events.clear()
        self.kind_counts: dict[str, int] = {}  # recorded since this process started
        self.queue: queue.SimpleQueue[Event | None] = queue.SimpleQueue()
        self.writer: threading.Thread | None = None
        if path is not None:
            self.writer = threading.Thread(target=self._write, name="history-journal", daemon=True)
            self.writer.start()

    def record(self, kind: str, role: str, reason: str, **kw: Any) -> Event:
        if kind not in KINDS:
            raise ValueError(f"unknown event kind {kind!r}")
        with self.lock:
            self.seq += 1
            ev = Event(node=self.node, epoch=self.epoch, seq=self.seq, at=self.clock(), kind=kind,
                       role=str(role), reason=reason, **kw)
            self.events.append(ev)
            self.kind_counts[kind] = self.kind_counts.get(kind, 0) + 1
        if self.writer is not None:
            self.queue.put(ev)
        return ev

    def latest(self) -> tuple[str, int]:
        with self.lock:
            return self.epoch, self.seq

    def heartbeat(self) -> list:
        """What the peer is told of this journal: the node's name, the epoch, the last seq."""
        with self.lock:
            return [self.node, self.epoch, self.seq]

    def after(self, epoch: str | None, seq: int, limit: int = KEEP) -> list[Event]:
        """Events past ``seq`` of ``epoch``; every one kept when the epoch is another."""
        with self.lock:
            out = [e for e in self.events if epoch != self.epoch or e.seq > seq]
        return out[:limit]

    def counts(self) -> dict[str, int]:
        with self.lock:
            return dict(self.kind_counts)

    def last(self, kind: str) -> Event | None:
        """The latest event of ``kind`` kept (of any run of this node)."""
        with self.lock:
            return next((e for e in reversed(self.events) if e.kind == kind), None)

    def recent(self, n: int) -> list[Event]:
        with self.lock:
            return list(self.events)[-n:]

    def close(self, timeout: float = 2.0) -> None:
        if self.writer is not None:
            self.queue.put(None)
            self.writer.join(timeout)

    def _write(self) -> None:
        assert self.path is not None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        written: deque[Event] = deque(self.events, maxlen=self.events.maxlen)  # what the file ends with
        while True:
            ev = self.queue.get()
            if ev is None:
                return
            written.append(ev)
            try:
                with open(self.path, "a", encoding="utf-8") as f:
                    f.write(_line(ev))
                if self.path.stat().st_size > FILE_MAX_BYTES:
                    tmp = self.path.with_suffix(".tmp")
                    tmp.write_text("".join(_line(e) for e in written), encoding="utf-8")
                    os.replace(tmp, self.path)
            except OSError as e:  # the journal is the operator's, never the node's safety
                log.warning("history journal %s: %s", self.path, e)


def _line(ev: Event) -> str:
    return json.dumps(ev.to_dict(), separators=(",", ":")) + "\n"


def _end_torn_line(path: Path) -> None:
    """A crash mid-write leaves a line with no end: end it, or the next event joins it."""
    try:
        with open(path, "rb+") as f:
            if f.seek(0, os.SEEK_END) and (f.seek(-1, os.SEEK_END), f.read(1))[1] != b"\n":
                f.write(b"\n")
    except FileNotFoundError:
        pass
    except OSError as e:
        log.warning("history journal %s: %s", path, e)


def read_file(path: Path, node: str | None = None) -> tuple[str, list[Event]]:
    """The journal's epoch and events (those of the latest epoch, of ``node`` if given);
    ("", []) when there is none. A torn last line (a crash mid-write) is skipped."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return "", []
    events: list[Event] = []
    for raw in text.splitlines():
        try:
            ev = Event.from_dict(json.loads(raw))
        except ValueError:
            continue
        if node is None or ev.node == node:
            events.append(ev)
    if not events:
        return "", []
    epoch = events[-1].epoch
    return epoch, [e for e in events if e.epoch == epoch]


# ----------------------------------------------------------------- the database side

SCHEMA = """
CREATE TABLE IF NOT EXISTS ha_events (
    node text NOT NULL,
    epoch text NOT NULL,
    seq bigint NOT NULL,
    at timestamptz NOT NULL,
    kind text NOT NULL,
    role text NOT NULL,
    role_from text,
    peer_role text,
    by_whom text,
    reason text NOT NULL,
    detail jsonb NOT NULL DEFAULT '{}',
    PRIMARY KEY (node, epoch, seq)
);
CREATE INDEX IF NOT EXISTS ha_events_at ON ha_events (at);
GRANT SELECT ON ha_events TO esc;
"""

COLUMNS = ("node, epoch, seq, extract(epoch FROM at)::float8, kind, role, reason, role_from, "
           "peer_role, by_whom, detail")


def row_event(row: tuple) -> Event:
    node, epoch, seq, at, kind, role, reason, role_from, peer_role, by, detail = row
    return Event(node=node, epoch=epoch, seq=seq, at=at, kind=kind, role=role, reason=reason,
                 role_from=role_from, peer_role=peer_role, by=by, detail=detail or {})


def stored_upto(conn: Any, node: str) -> tuple[str | None, int]:
    """The epoch and highest seq stored for ``node``'s latest epoch (None, 0: nothing)."""
    row = conn.execute("SELECT epoch, max(seq) FROM ha_events WHERE node = %s GROUP BY epoch "
                       "ORDER BY max(at) DESC LIMIT 1", (node,)).fetchone()
    return (row[0], int(row[1])) if row else (None, 0)


def store(conn: Any, events: Iterable[Event]) -> int:
    """Insert ``events`` (those already there are left): how many were new."""
    from psycopg.types.json import Jsonb

    n = 0
    for e in events:
        cur = conn.execute(
            "INSERT INTO ha_events (node, epoch, seq, at, kind, role, reason, role_from, peer_role, "
            "by_whom, detail) VALUES (%s, %s, %s, to_timestamp(%s), %s, %s, %s, %s, %s, %s, %s) "
            "ON CONFLICT DO NOTHING",
            (e.node, e.epoch, e.seq, e.at, e.kind, e.role, e.reason, e.role_from, e.peer_role, e.by,
             Jsonb(e.detail)))
        n += cur.rowcount
    return n


def query(conn: Any, since: float | None = None, limit: int = 1000, kinds: Iterable[str] = (),
          node: str | None = None, before: float | None = None) -> list[Event]:
    """The stored events, oldest first: the latest ``limit`` at or after ``since``
    (wall-clock seconds) and before ``before``, of ``kinds`` and ``node`` if given."""
    where, args = ["TRUE"], []
    if since is not None:
        where.append("at >= to_timestamp(%s)")
        args.append(since)
    if before is not None:
        where.append("at < to_timestamp(%s)")
        args.append(before)
    kinds = list(kinds)
    if kinds:
        where.append("kind = ANY(%s)")
        args.append(kinds)
    if node:
        where.append("node = %s")
        args.append(node)
    rows = conn.execute(f"SELECT {COLUMNS} FROM ha_events WHERE {' AND '.join(where)} "
                        "ORDER BY at DESC, node, seq DESC LIMIT %s", (*args, limit)).fetchall()
    return [row_event(r) for r in reversed(rows)]


def merge(*sources: Iterable[Event]) -> list[Event]:
    """One list, oldest first, each event once."""
    seen: dict[tuple[str, str, int], Event] = {}
    for src in sources:
        for e in src:
            seen.setdefault((e.node, e.epoch, e.seq), e)
    return sorted(seen.values(), key=lambda e: (e.at, e.node, e.seq))


PeerFetch = Callable[[str | None, int], "tuple[str, list[Event]] | None"]


class Shipper(threading.Thread):
    """Copies both nodes' journals into ``ha_events`` while this node is the serving
    primary (``serving()``). Its own connection, with a statement timeout and
    ``synchronous_commit = local``: waiting for a missing standby is the controller's
    business, not the history's (what a failover loses of it is in the journals and
    copied again)."""

    def __init__(self, journal: Journal, connect: Callable[[], Any], serving: Callable[[], bool],
                 peer_fetch: PeerFetch | None,
                 peer_latest: Callable[[], tuple[str, str, int] | None] | None = None,
                 interval: float = 1.0) -> None:
        """``peer_latest``: the peer's name and latest (epoch, seq) as its heartbeat said,
        None when it is not heard: its journal is fetched only when it has something new."""
        super().__init__(name="history-shipper", daemon=True)
        self.journal, self.connect, self.serving = journal, connect, serving
        self.peer_fetch, self.peer_latest = peer_fetch, peer_latest
        self.stored: dict[str, tuple[str | None, int]] = {}  # per node, as of the last look
        self.interval = interval
        self.stopped = threading.Event()
        self.nudged = threading.Event()
        self.conn: Any = None
        self.last_error = ""
        self.pruned_at = -1e18

    def stop(self) -> None:
        self.stopped.set()
        self.nudged.set()

    def nudge(self) -> None:
        self.nudged.set()

    def run(self) -> None:
        while not self.stopped.is_set():
            if self.serving():
                try:
                    self.ship_once()
                    self.last_error = ""
                except Exception as e:  # noqa: BLE001 - logged once per distinct error, retried
                    self._drop()
                    if str(e) != self.last_error:
                        log.warning("history not stored yet: %s", str(e).strip().splitlines()[0][:200])
                    self.last_error = str(e)
            else:
                self._drop()
            self.nudged.wait(self.interval)
            self.nudged.clear()

    def _drop(self) -> None:
        self.stored.clear()
        if self.conn is not None:
            try:
                self.conn.close()
            except Exception:  # noqa: BLE001
                pass
            self.conn = None

    def ship_once(self) -> int:
        if self.conn is None:
            conn = self.connect()
            conn.autocommit = True
            conn.execute("SET statement_timeout = '3s'")
            conn.execute("SET synchronous_commit = local")
            conn.execute(SCHEMA)
            self.conn = conn
        if time.monotonic() - self.pruned_at > 3600:
            self.conn.execute("DELETE FROM ha_events WHERE at < now() - make_interval(days => %s)",
                              (TABLE_KEEP_DAYS,))
            self.pruned_at = time.monotonic()
        n = 0
        own = self.journal.node
        if self.stored.get(own) != self.journal.latest():
            epoch, seq = stored_upto(self.conn, own)
            n += store(self.conn, self.journal.after(epoch, seq))
            self.stored[own] = stored_upto(self.conn, own)
        latest = self.peer_latest() if self.peer_latest and self.peer_fetch else None
        if latest is not None and self.peer_fetch is not None:
            peer, *position = latest
            if peer != own and self.stored.get(peer) != tuple(position):
                epoch, seq = stored_upto(self.conn, peer)
                got = self.peer_fetch(epoch, seq)
                if got is not None:  # only its own events: a peer speaks for itself
                    n += store(self.conn, (e for e in got[1] if e.node == peer))
                self.stored[peer] = stored_upto(self.conn, peer)
        return n
