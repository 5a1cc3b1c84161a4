"""The running datastore, kept in the controller's database: read from the resource
tables with the writes still in progress laid over them (so a client reads back what
it just wrote, as the REST API's transactions will leave it), and written as the REST
API's transactions (esc.services.transactions.submit): one per resource that an
edit-config creates, changes or deletes, all accepted in one database transaction,
done by the controller's worker, reported as events and so as notifications."""

from __future__ import annotations

from typing import Any

import psycopg

from esc.netconf.errors import RpcError
from esc.netconf.mapping import KIND_ORDER, Key, Resources, empty, normalize
from esc.services import store, transactions
from esc.services.db import commit_durably
from esc.services.store import KINDS, Fail
from esc.services.transactions import WriteRequest

METHOD = "NETCONF"  # a transaction's "method", as GET /v0/transactions shows it

_SELECT = {
    "tenant": "SELECT NULL, name, spec FROM tenants ORDER BY id",
    "network": "SELECT NULL, name, spec FROM networks ORDER BY id",
    "flavor": "SELECT NULL, name, spec FROM flavors ORDER BY id",
    "image": "SELECT NULL, name, spec FROM images ORDER BY id",
    "subnet": "SELECT n.name, s.name, s.spec FROM subnets s JOIN networks n ON n.id = s.network_id"
              " ORDER BY s.id",
    "deployment": "SELECT t.name, d.name, d.spec FROM deployments d JOIN tenants t ON t.id = d.tenant_id"
                  " ORDER BY d.id",
}


def _stored(kind: str, body: dict[str, Any]) -> dict[str, Any]:
    """A stored body as its model normalizes it (what an edit is compared with); as it is
    if it no longer passes (an older version's row): shown, and replaced only if edited."""
    try:
        return normalize(kind, body, kind)
    except RpcError:
        return body


def read(conn: psycopg.Connection) -> Resources:
    """The configuration: the tables, then every unfinished transaction in order."""
    out = empty()
    for kind in KIND_ORDER:
        for parent, name, spec in conn.execute(_SELECT[kind]):
            out[kind][(parent, name)] = _stored(kind, {**(spec or {}), "name": name})
    for kind, parent, name, op, request in conn.execute(
            "SELECT kind, parent, name, op, request FROM transactions"
            " WHERE status IN ('accepted', 'running') ORDER BY id"):
        if kind not in out:
            continue  # volumes: not in the YANG module
        key: Key = (parent if KINDS[kind].parent else None, name)
        if op == "delete":
            out[kind].pop(key, None)
        else:
            out[kind][key] = _stored(kind, {**(request or {}), "name": name})
    return out


def read_state(conn: psycopg.Connection) -> list[dict[str, Any]]:
    """The deployments with their VMs, as the REST API shows them."""
    return store.list_all(conn, store.DEPLOYMENT)


def instance_path(kind: str, parent: str | None, name: str) -> str:
    root = "/esc_datamodel"
    if kind == "deployment":
        return f"{root}/tenants/tenant[name='{parent}']/deployments/deployment[name='{name}']"
    if kind == "subnet":
        return f"{root}/networks/network[name='{parent}']/subnet[name='{name}']"
    return f"{root}/{KINDS[kind].plural}/{kind}[name='{name}']"


def changes(old: Resources, new: Resources) -> list[WriteRequest]:
    """The REST API's writes that make ``old`` into ``new``: creates and updates with
    parents and referenced resources first, then deletes with their users first."""
    out: list[WriteRequest] = []
    for kind in KIND_ORDER:
        for (parent, name), body in new[kind].items():
            if (parent, name) not in old[kind]:
                op = "create"
            elif old[kind][(parent, name)] != body:
                op = "update"
            else:
                continue
            out.append(WriteRequest(op, kind, parent, name, body, METHOD, instance_path(kind, parent, name)))
    for kind in reversed(KIND_ORDER):
        for parent, name in old[kind]:
            if (parent, name) not in new[kind]:
                out.append(WriteRequest("delete", kind, parent, name, None, METHOD,
                                        instance_path(kind, parent, name)))
    return out


def fail_error(f: Fail, req: WriteRequest) -> RpcError:
    """The rpc-error of a write the controller refused (esc.services.store.Fail)."""
    path = req.path
    if f.code == 404:
        return RpcError("data-missing", f.message, path=path)
    if f.code == 409 and f.message.endswith(" exists"):
        return RpcError("data-exists", f.message, path=path)
    if f.code == 409 and " in use " in f.message:
        return RpcError("in-use", f.message, path=path)
    if f.code in (400, 422):
        return RpcError("invalid-value", f.message, path=path)
    return RpcError("operation-failed", f.message, path=path)


def submit(conn: psycopg.Connection, requests: list[WriteRequest]) -> list[int]:
    """Accept ``requests`` as transactions, all or none, committed on both nodes; their
    ids. The controller's worker is told at the commit (esc.services.transactions)."""
    ids = []
    try:
        for req in requests:
            tx, _ = transactions.submit(conn, req)
            ids.append(tx["id"])
        conn.execute(f"NOTIFY {transactions.WORK_CHANNEL}")
        commit_durably(conn)
    except Fail as f:
        conn.rollback()
        raise fail_error(f, req) from None
    except BaseException:
        conn.rollback()
        raise
    return ids
