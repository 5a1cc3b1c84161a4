"""Notifications (RFC 5277): the controller's events (the ``events`` table, as
``GET /v0/notifications`` lists them) as ``escEvent``, and the pair's history (the
``ha_events`` table: failovers, switchovers, restarts...) as ``escHaEvent``.

Both tables are replicated, so the event history a subscription replays (``startTime``)
is the same on either node, before and after a failover. One feed per process polls
them and hands each new event to the live subscriptions."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from lxml import etree

from esc.netconf.names import ESC_NS, NC_NOTIF_NS, NOTIF_NS
from esc.services.events import EVENT_COLUMNS

log = logging.getLogger("esc.netconf.notifications")

HA_COLUMNS = "node, epoch, seq, at, kind, role, role_from, reason"


@dataclass(frozen=True, order=True)
class Notification:
    at: dt.datetime
    key: tuple[Any, ...] = field(compare=False)  # ("event", id) or ("ha", node, epoch, seq)
    content: etree._Element = field(compare=False)

    def xml(self) -> etree._Element:
        return envelope(self.at, self.content)


def envelope(at: dt.datetime, content: etree._Element) -> etree._Element:
    n = etree.Element(f"{{{NOTIF_NS}}}notification", nsmap={None: NOTIF_NS})
    etree.SubElement(n, f"{{{NOTIF_NS}}}eventTime").text = at.isoformat()
    n.append(content)
    return n


def _leaf(parent: etree._Element, name: str, value: Any) -> None:
    if value is not None:
        etree.SubElement(parent, f"{{{ESC_NS}}}{name}").text = str(value)


def esc_event(row: tuple[Any, ...]) -> Notification:
    """An ``events`` row (EVENT_COLUMNS) as an escEvent."""
    ev = dict(zip([c.strip() for c in EVENT_COLUMNS.split(",")], row, strict=True))
    el = etree.Element(f"{{{ESC_NS}}}escEvent", nsmap={None: ESC_NS})
    _leaf(el, "event_id", ev["id"])
    if ev["status"] in ("SUCCESS", "FAILURE"):
        _leaf(el, "status", ev["status"])
        _leaf(el, "status_code", 200 if ev["status"] == "SUCCESS" else 500)
    _leaf(el, "status_message", ev["message"])
    _leaf(el, "tenant", ev["tenant"])
    if ev["resource_type"] == "deployment" and ev["resource"]:
        _leaf(el, "depname", str(ev["resource"]).split("/", 1)[-1])
    _leaf(el, "resource_type", ev["resource_type"])
    _leaf(el, "resource", ev["resource"])
    _leaf(el, "transaction_id", ev["transaction_id"])
    if ev["vm"]:
        _leaf(etree.SubElement(el, f"{{{ESC_NS}}}vm_source"), "vmname", ev["vm"])
    _leaf(etree.SubElement(el, f"{{{ESC_NS}}}event"), "type", ev["type"])
    return Notification(ev["created_at"], ("event", ev["id"]), el)


def ha_event(row: tuple[Any, ...]) -> Notification:
    """An ``ha_events`` row (HA_COLUMNS) as an escHaEvent."""
    node, epoch, seq, at, kind, role, role_from, reason = row
    el = etree.Element(f"{{{ESC_NS}}}escHaEvent", nsmap={None: ESC_NS})
    for name, value in (("node", node), ("kind", kind), ("role", role), ("role_from", role_from),
                        ("reason", reason)):
        _leaf(el, name, value)
    return Notification(at, ("ha", node, epoch, seq), el)


def signal(name: str) -> etree._Element:
    """replayComplete or notificationComplete (RFC 5277 section 2.1.1)."""
    el = etree.Element(f"{{{NC_NOTIF_NS}}}{name}", nsmap={None: NC_NOTIF_NS})
    return envelope(dt.datetime.now(dt.UTC), el)


def history(conn: psycopg.Connection, start: dt.datetime, stop: dt.datetime | None) -> list[Notification]:
    """Every event from ``start`` (to ``stop``), oldest first: the replay."""
    until = stop or dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
    out = [esc_event(r) for r in conn.execute(
        f"SELECT {EVENT_COLUMNS} FROM events WHERE created_at >= %s AND created_at <= %s ORDER BY id",
        (start, until))]
    out += [ha_event(r) for r in conn.execute(
        f"SELECT {HA_COLUMNS} FROM ha_events WHERE at >= %s AND at <= %s ORDER BY at, node, seq",
        (start, until))] if _has_ha_events(conn) else []
    return sorted(out)


def oldest(conn: psycopg.Connection) -> dt.datetime | None:
    """When the event history starts (replayLogCreationTime)."""
    row = conn.execute("SELECT min(created_at) FROM events").fetchone()
    return row[0] if row else None


def _has_ha_events(conn: psycopg.Connection) -> bool:
    row = conn.execute("SELECT to_regclass('ha_events') IS NOT NULL").fetchone()
    return bool(row and row[0])


Listener = Callable[[Notification], None]


class EventFeed:
    """Polls the event tables every ``interval`` seconds on its own thread and its own
    connection, and gives each new event to every listener (which must not block)."""

    HA_WINDOW = dt.timedelta(minutes=5)  # a node's history reaches the table late (shipped)

    def __init__(self, conninfo: str, interval: float = 0.2) -> None:
        self.conninfo, self.interval = conninfo, interval
        self.listeners: set[Listener] = set()
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.thread: threading.Thread | None = None
        self.last_id: int | None = None
        self.ha_seen: dict[tuple[Any, ...], dt.datetime] = {}  # within HA_WINDOW

    def add(self, listener: Listener) -> None:
        with self.lock:
            self.listeners.add(listener)

    def remove(self, listener: Listener) -> None:
        with self.lock:
            self.listeners.discard(listener)

    def start(self) -> None:
        self.thread = threading.Thread(target=self._run, name="netconf-events", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        if self.thread is not None:
            self.thread.join(2.0)

    def _run(self) -> None:
        conn: psycopg.Connection | None = None
        while not self.stopping.is_set():
            try:
                if conn is None or conn.closed:
                    conn = psycopg.connect(self.conninfo, autocommit=True, connect_timeout=2,
                                           application_name="escconfd-events")
                for n in self.poll(conn):
                    with self.lock:
                        listeners = list(self.listeners)
                    for listener in listeners:
                        listener(n)
            except psycopg.Error as e:
                log.warning("event feed: %s", str(e).strip().splitlines()[0] if str(e).strip() else e)
                if conn is not None:
                    conn.close()
                conn = None
            self.stopping.wait(self.interval)
        if conn is not None:
            conn.close()

    def poll(self, conn: psycopg.Connection) -> list[Notification]:
        """The events since the last poll: the controller's from the first poll on (ids
        grow), the pair's history of the last HA_WINDOW not given before."""
        first = self.last_id is None
        if first:
            row = conn.execute("SELECT COALESCE(max(id), 0) FROM events").fetchone()
            self.last_id = int(row[0]) if row else 0
        rows = conn.execute(f"SELECT {EVENT_COLUMNS} FROM events WHERE id > %s ORDER BY id LIMIT 1000",
                            (self.last_id,)).fetchall()
        out = [esc_event(r) for r in rows]
        if rows:
            self.last_id = rows[-1][0]
        if _has_ha_events(conn):
            since = dt.datetime.now(dt.UTC) - self.HA_WINDOW
            for r in conn.execute(f"SELECT {HA_COLUMNS} FROM ha_events WHERE at >= %s ORDER BY at, node, seq",
                                  (since,)):
                n = ha_event(r)
                if n.key not in self.ha_seen:
                    # even at the first poll: a node's history reaches the table up to a
                    # second late, and a subscription's replay may have read it before
                    # (a subscription drops what it replayed: rpc.Session._deliver)
                    self.ha_seen[n.key] = n.at
                    out.append(n)
            self.ha_seen = {k: at for k, at in self.ha_seen.items() if at >= since}
        return out


def asyncio_listener(loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[Notification],
                     overflow: Callable[[], None]) -> Listener:
    """A listener that puts each event on ``queue`` (from the feed's thread); ``overflow``
    is called, on the loop, when the queue is full."""
    def put_or_overflow(n: Notification) -> None:
        try:
            queue.put_nowait(n)
        except asyncio.QueueFull:
            overflow()

    def put(n: Notification) -> None:
        loop.call_soon_threadsafe(put_or_overflow, n)
    return put
