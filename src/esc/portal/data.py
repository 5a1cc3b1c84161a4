"""What the portal's pages show from the database: plain queries, newest first, paged
by id (``before``: the smallest id of the page shown), each page at most ``PAGE`` rows."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import dict_row

PAGE = 50


def _rows(conn: psycopg.Connection, sql: str, args: tuple | dict = ()) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(sql, args).fetchall()  # type: ignore[arg-type]


def deployments(conn: psycopg.Connection) -> list[dict[str, Any]]:
    """Every deployment with its VMs (name, group, state as the monitor last saw it)."""
    return _rows(conn, """
        SELECT d.id, t.name AS tenant, d.name, d.status, d.created_at, d.updated_at,
               coalesce(json_agg(json_build_object('name', v.name, 'group', v.vm_group,
                                                   'status', v.status, 'updated_at', v.updated_at)
                                 ORDER BY v.vm_group, v.idx) FILTER (WHERE v.id IS NOT NULL),
                        '[]') AS vms
        FROM deployments d JOIN tenants t ON t.id = d.tenant_id
        LEFT JOIN vms v ON v.deployment_id = d.id
        GROUP BY d.id, t.name ORDER BY d.id DESC LIMIT 500""")


def events(conn: psycopg.Connection, type_: str = "", resource: str = "",
           before: int | None = None) -> list[dict[str, Any]]:
    return _rows(conn, """
        SELECT id, type, status, created_at, transaction_id, tenant, resource_type, resource, vm, message
        FROM events
        WHERE (%(type)s = '' OR type = %(type)s)
          AND (%(resource)s = '' OR resource ILIKE '%%' || %(resource)s || '%%'
               OR vm ILIKE '%%' || %(resource)s || '%%')
          AND (%(before)s::bigint IS NULL OR id < %(before)s)
        ORDER BY id DESC LIMIT %(limit)s""",
                 {"type": type_, "resource": resource, "before": before, "limit": PAGE})


def event_types(conn: psycopg.Connection) -> list[str]:
    return [r[0] for r in conn.execute("SELECT DISTINCT type FROM events ORDER BY 1").fetchall()]


def transactions(conn: psycopg.Connection, status: str = "",
                 before: int | None = None) -> list[dict[str, Any]]:
    return _rows(conn, """
        SELECT x.id, x.op, x.kind, x.name, x.method, x.path, x.status, x.status_code, x.message,
               x.attempts, x.created_at, x.finished_at,
               coalesce(json_agg(json_build_object('url', c.url, 'status', c.status,
                                                   'attempts', c.attempts, 'last_status', c.last_status,
                                                   'last_error', c.last_error) ORDER BY c.id)
                        FILTER (WHERE c.id IS NOT NULL), '[]') AS callbacks
        FROM transactions x LEFT JOIN callbacks c ON c.transaction_id = x.id
        WHERE (%(status)s = '' OR x.status = %(status)s)
          AND (%(before)s::bigint IS NULL OR x.id < %(before)s)
        GROUP BY x.id ORDER BY x.id DESC LIMIT %(limit)s""",
                 {"status": status, "before": before, "limit": PAGE})


def vnf_instances(conn: psycopg.Connection) -> list[dict[str, Any]]:
    return _rows(conn, """
        SELECT id, name, vnfd_id, state, vnf_state, flavour_id, level_id, created_at, updated_at
        FROM etsi_vnf_instances ORDER BY created_at DESC LIMIT 500""")


def op_occs(conn: psycopg.Connection, before: int | None = None) -> list[dict[str, Any]]:
    return _rows(conn, """
        SELECT seq, id, vnf_instance_id, operation, state, start_time, state_entered,
               error->>'detail' AS error
        FROM etsi_op_occs WHERE (%(before)s::bigint IS NULL OR seq < %(before)s)
        ORDER BY seq DESC LIMIT %(limit)s""", {"before": before, "limit": PAGE})


def history(conn: psycopg.Connection, kind: str = "", limit: int = PAGE) -> list[dict[str, Any]]:
    """The pair's event history (esc.agent.history), newest first; none before the agent
    has made its table."""
    if conn.execute("SELECT to_regclass('ha_events')").fetchone()[0] is None:  # type: ignore[index]
        return []
    return _rows(conn, """
        SELECT node, at, kind, role_from, role, peer_role, by_whom, reason
        FROM ha_events WHERE (%(kind)s = '' OR kind = %(kind)s)
        ORDER BY at DESC LIMIT %(limit)s""", {"kind": kind, "limit": limit})
