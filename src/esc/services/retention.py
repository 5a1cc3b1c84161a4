"""Retention: events and finished transactions do not pile up forever.

The janitor runs on the active only (with the worker) and deletes, in small
batches so that no statement holds locks or a long wait for the standby:

- events older than ``days``, and the oldest beyond the newest ``max_events``;
- transactions finished (succeeded or failed) more than ``days`` ago, with their
  callbacks (cascade), unless a callback is still pending. Unfinished ones are
  never touched;
- the ETSI service's notifications delivered or given up, and its operation
  occurrences COMPLETED, FAILED or ROLLED_BACK, more than ``days`` ago.

A transaction deleted here is gone from ``GET /v0/transactions/{id}`` and its
Idempotency-Key is forgotten: a retry is recognised only within ``days``.
"""

from __future__ import annotations

import logging

import psycopg

from esc.config import Retention
from esc.services.threads import PollingThreads

log = logging.getLogger("esc.escmanager.retention")

BATCH = 1000

PRUNE_SQL = {
    "old events": """
        DELETE FROM events WHERE id IN (
            SELECT id FROM events WHERE created_at < now() - make_interval(secs => %(secs)s)
            ORDER BY id LIMIT %(batch)s)""",
    "events over the cap": """
        DELETE FROM events WHERE id IN (
            SELECT id FROM events
             WHERE id <= (SELECT max(id) FROM events) - %(max_events)s
             ORDER BY id LIMIT %(batch)s)""",
    "finished transactions": """
        DELETE FROM transactions WHERE id IN (
            SELECT t.id FROM transactions t
             WHERE t.status IN ('succeeded', 'failed')
               AND t.finished_at < now() - make_interval(secs => %(secs)s)
               AND NOT EXISTS (SELECT 1 FROM callbacks c
                                WHERE c.transaction_id = t.id AND c.status = 'pending')
             ORDER BY t.id LIMIT %(batch)s)""",
    # the ETSI service's: notifications sent (or given up), and operation occurrences that
    # ended (an instance is never held by one of these)
    "sent notifications": """
        DELETE FROM etsi_notifications WHERE id IN (
            SELECT id FROM etsi_notifications
             WHERE status IN ('delivered', 'abandoned')
               AND created_at < now() - make_interval(secs => %(secs)s)
             ORDER BY id LIMIT %(batch)s)""",
    "ended operations": """
        DELETE FROM etsi_op_occs WHERE id IN (
            SELECT id FROM etsi_op_occs
             WHERE state IN ('COMPLETED', 'FAILED', 'ROLLED_BACK')
               AND state_entered < now() - make_interval(secs => %(secs)s)
             ORDER BY seq LIMIT %(batch)s)""",
}


def prune(conn: psycopg.Connection, keep: Retention, batch: int = BATCH) -> dict[str, int]:
    """Delete what ``keep`` no longer keeps; one commit per batch. Returns counts."""
    params = {"secs": keep.days * 86400, "max_events": keep.max_events, "batch": batch}
    counts = {}
    for what, sql in PRUNE_SQL.items():
        total = 0
        while True:
            n = conn.execute(sql, params).rowcount
            conn.commit()
            total += n
            if n < batch:
                break
        counts[what] = total
    return counts


class Janitor(PollingThreads):
    """One thread: ``prune`` every ``interval`` seconds (first at start)."""

    def __init__(self, conninfo: str, keep: Retention, interval: float = 300.0) -> None:
        self.conninfo, self.keep, self.interval = conninfo, keep, interval
        super().__init__("escmanager-retention", 1)

    def drain(self, conn: psycopg.Connection) -> float:
        counts = prune(conn, self.keep)
        if any(counts.values()):
            log.info("retention (%g days, %d events): deleted %s", self.keep.days, self.keep.max_events,
                     ", ".join(f"{n} {what}" for what, n in counts.items() if n))
        return self.interval
