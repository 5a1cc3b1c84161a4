"""Notifications: one row per event in table ``events``, listed by
``GET /v0/notifications?since=<id>`` for clients that poll rather than take callbacks.

Types written today: the result of each transaction (``CREATE_TENANT``,
``UPDATE_DEPLOYMENT``, ``DELETE_IMAGE``..., status ``SUCCESS`` or ``FAILURE``),
``VM_DEPLOYED`` / ``VM_UNDEPLOYED`` / ``VM_ERROR`` from the deployment executor. The
VNF monitor (a later step) writes ``VM_ALIVE``, ``VM_DOWN``, ``SERVICE_ALIVE`` and the
recovery events with :func:`record_event`, in the same database transaction as the
state change it reports.
"""

from __future__ import annotations

from typing import Any

import psycopg

VM_DEPLOYED = "VM_DEPLOYED"
VM_UNDEPLOYED = "VM_UNDEPLOYED"
VM_ERROR = "VM_ERROR"
VM_ALIVE = "VM_ALIVE"
VM_DOWN = "VM_DOWN"
SERVICE_ALIVE = "SERVICE_ALIVE"
SERVICE_DOWN = "SERVICE_DOWN"
SUCCESS, FAILURE = "SUCCESS", "FAILURE"


def transaction_event_type(op: str, kind: str) -> str:
    return f"{op}_{kind}".upper()


def record_event(
    conn: psycopg.Connection,
    type: str,
    *,
    status: str | None = None,
    transaction_id: int | None = None,
    tenant: str | None = None,
    resource_type: str | None = None,
    resource: str | None = None,
    vm: str | None = None,
    message: str = "",
) -> None:
    """Add an event; it is visible once the caller's database transaction commits."""
    conn.execute(
        "INSERT INTO events (type, status, transaction_id, tenant, resource_type, resource, vm, message)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
        (type, status, transaction_id, tenant, resource_type, resource, vm, message),
    )


EVENT_COLUMNS = "id, type, status, created_at, transaction_id, tenant, resource_type, resource, vm, message"


def event_dict(row: tuple[Any, ...]) -> dict[str, Any]:
    keys = [c.strip() for c in EVENT_COLUMNS.split(",")]
    d = dict(zip(keys, row, strict=True))
    d["created_at"] = d["created_at"].isoformat()
    return d


def list_events(conn: psycopg.Connection, since: int, limit: int) -> list[dict[str, Any]]:
    """Events with id > since, oldest first. Ids only grow, so a client polls with
    the last id it saw. (An id may become visible after a larger one when two
    transactions commit out of order; a client that must see every event keeps a
    small overlap, e.g. ``since = last_id - 100``, and ignores ids it has seen.)"""
    rows = conn.execute(
        f"SELECT {EVENT_COLUMNS} FROM events WHERE id > %s ORDER BY id LIMIT %s", (since, limit)
    ).fetchall()
    return [event_dict(r) for r in rows]
