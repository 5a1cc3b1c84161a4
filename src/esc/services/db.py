"""Database helpers shared by the API and the worker."""

from __future__ import annotations

import time

import psycopg

from esc.services.metrics import COMMIT_LATENCY

# Advisory lock namespaces (the two-int form; the worker's per-transaction session
# locks use the one-bigint form, which never collides with these).
LOCK_IDEMPOTENCY_KEY = 4531
LOCK_RESOURCE_KEY = 4532


class CommitNotConfirmed(Exception):
    """COMMIT returned, but PostgreSQL warned it did not wait for the synchronous standby."""


def commit_durably(conn: psycopg.Connection) -> None:
    """Commit, and fail unless the commit is known to be on both nodes.

    If the wait for the synchronous standby is cancelled (pg_cancel_backend,
    statement_timeout), PostgreSQL still reports COMMIT as successful, with only a
    WARNING saying the transaction "might not have been replicated". Answering 2xx
    then would promise durability we do not have, so any WARNING during COMMIT
    counts as a failure. (Terminating the backend instead drops the connection,
    which raises on its own.)
    """
    warnings: list[str] = []

    def on_notice(diag: psycopg.errors.Diagnostic) -> None:
        if diag.severity_nonlocalized == "WARNING":
            warnings.append(diag.message_primary or "warning")

    conn.add_notice_handler(on_notice)
    started = time.perf_counter()
    try:
        conn.commit()
    finally:
        conn.remove_notice_handler(on_notice)
        COMMIT_LATENCY.observe(time.perf_counter() - started)
    if warnings:
        raise CommitNotConfirmed("commit not confirmed by the standby: " + "; ".join(warnings))


def lock_key(conn: psycopg.Connection, namespace: int, key: str) -> None:
    """Serialize, until the end of this database transaction, with every other
    transaction that locks the same key (hash collisions only serialize more)."""
    conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (namespace, key))


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"
