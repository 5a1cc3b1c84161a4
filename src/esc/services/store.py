"""Resources in the database: reads for the API, and the writes a transaction does.

Every function takes an open connection and runs inside the caller's database
transaction; none commits. The writes (``apply_*``) are *idempotent per
transaction*: run again for the same transaction (a resumed one), they find their
own earlier work (``created_tx``) rather than failing or doing it twice.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.types.json import Jsonb
from pydantic import BaseModel

from esc.services import events
from esc.services import models as m
from esc.services.executor import DeploymentWork, VmWork
from esc.services.schema import DEFAULT_TENANT


class Fail(Exception):
    """The request cannot be done: a client error with an HTTP-like status code."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


@dataclass(frozen=True)
class Kind:
    name: str                      # "subnet"
    plural: str                    # "subnets"
    table: str
    parent: str | None             # the parent kind: "network", "tenant" or None
    spec_model: type[BaseModel]    # body of PUT
    in_model: type[BaseModel]      # body of POST
    out_model: type[BaseModel]

    @property
    def parent_table(self) -> str | None:
        return KINDS[self.parent].table if self.parent else None

    @property
    def parent_col(self) -> str | None:
        return f"{self.parent}_id" if self.parent else None

    def key(self, parent: str | None, name: str) -> str:
        return f"{parent}/{name}" if self.parent else name

    def lock_key(self, parent: str | None, name: str) -> str:
        return f"{self.name}:{self.key(parent, name)}"


KINDS: dict[str, Kind] = {
    k.name: k
    for k in [
        Kind("tenant", "tenants", "tenants", None, m.TenantSpec, m.TenantIn, m.Tenant),
        Kind("network", "networks", "networks", None, m.NetworkSpec, m.NetworkIn, m.Network),
        Kind("subnet", "subnets", "subnets", "network", m.SubnetSpec, m.SubnetIn, m.Subnet),
        Kind("flavor", "flavors", "flavors", None, m.FlavorSpec, m.FlavorIn, m.Flavor),
        Kind("image", "images", "images", None, m.ImageSpec, m.ImageIn, m.Image),
        Kind("volume", "volumes", "volumes", "tenant", m.VolumeSpec, m.VolumeIn, m.Volume),
        Kind("deployment", "deployments", "deployments", "tenant",
             m.DeploymentSpec, m.DeploymentIn, m.Deployment),
    ]
}


# --- reads ---------------------------------------------------------------------------------


def _select(kind: Kind) -> str:
    """SELECT of the API representation's columns, with ``p.name`` the parent's name."""
    extra = ""
    if kind.name == "deployment":
        extra = (
            ", r.status, r.created_tx, COALESCE((SELECT json_agg(json_build_object("
            "'name', v.name, 'vm_group', v.vm_group, 'status', v.status, 'interfaces', v.interfaces)"
            " ORDER BY v.id) FROM vms v WHERE v.deployment_id = r.id), '[]')"
        )
    if kind.parent:
        return (
            f"SELECT r.id, r.name, r.spec, r.created_at, r.updated_at, p.name{extra}"
            f" FROM {kind.table} r JOIN {kind.parent_table} p ON p.id = r.{kind.parent_col}"
        )
    return f"SELECT r.id, r.name, r.spec, r.created_at, r.updated_at, NULL{extra} FROM {kind.table} r"


def _as_dict(kind: Kind, row: tuple[Any, ...]) -> dict[str, Any]:
    rid, name, spec, created, updated, parent = row[:6]
    d: dict[str, Any] = {"id": rid, "name": name}
    if kind.parent:
        d[kind.parent] = parent
    if kind.name == "deployment":
        d["description"] = spec.get("description", "")
        d["vm_groups"] = spec.get("vm_groups", [])
        d["status"], d["transaction_id"], d["vms"] = row[6], row[7], row[8]
    else:
        d.update(spec)
    d["created_at"], d["updated_at"] = created.isoformat(), updated.isoformat()
    return d


def get(conn: psycopg.Connection, kind: Kind, parent: str | None, name: str) -> dict[str, Any] | None:
    sql = _select(kind) + " WHERE r.name = %s"
    params: list[Any] = [name]
    if kind.parent:
        sql += " AND p.name = %s"
        params.append(parent)
    row = conn.execute(sql, params).fetchone()
    return _as_dict(kind, row) if row else None


def list_all(conn: psycopg.Connection, kind: Kind, parent: str | None = None) -> list[dict[str, Any]]:
    """Every resource of the kind (under ``parent`` if given), oldest first."""
    sql, params = _select(kind), []
    if parent is not None:
        sql += " WHERE p.name = %s"
        params.append(parent)
    rows = conn.execute(sql + " ORDER BY r.id", params).fetchall()
    return [_as_dict(kind, r) for r in rows]


def row_id(conn: psycopg.Connection, kind: Kind, parent: str | None, name: str) -> int | None:
    if kind.parent:
        row = conn.execute(
            f"SELECT r.id FROM {kind.table} r JOIN {kind.parent_table} p ON p.id = r.{kind.parent_col}"
            " WHERE r.name = %s AND p.name = %s",
            (name, parent),
        ).fetchone()
    else:
        row = conn.execute(f"SELECT id FROM {kind.table} WHERE name = %s", (name,)).fetchone()
    return row[0] if row else None


def exists(conn: psycopg.Connection, kind: Kind, parent: str | None, name: str) -> bool:
    return row_id(conn, kind, parent, name) is not None


# --- checks shared by the API (at accept) and the worker (authoritative) ---------------------


def deployment_refs(spec: dict[str, Any]) -> list[tuple[str, str]]:
    """(kind, name) of every image, flavor and network the deployment uses, in order."""
    refs: list[tuple[str, str]] = []
    for g in spec.get("vm_groups", []):
        refs += [("image", g["image"]), ("flavor", g["flavor"])]
        refs += [("network", i["network"]) for i in g.get("interfaces", [])]
    return list(dict.fromkeys(refs))


def check_deployment_refs(conn: psycopg.Connection, name: str, spec: dict[str, Any], visible: Any) -> None:
    """Fail(422) naming every unknown image/flavor/network, or a static ip outside the
    network's subnets. ``visible(kind, name) -> bool`` says whether a resource exists."""
    missing = [f"{k} {n}" for k, n in deployment_refs(spec) if not visible(k, n)]
    if missing:
        raise Fail(422, f"deployment {name} refers to unknown {', '.join(missing)}")
    for g in spec.get("vm_groups", []):
        for i in g.get("interfaces", []):
            if not i.get("ip"):
                continue
            cidrs = [r[0] for r in conn.execute(
                "SELECT s.spec->>'cidr' FROM subnets s JOIN networks n ON n.id = s.network_id"
                " WHERE n.name = %s", (i["network"],))]
            ip = ipaddress.ip_address(i["ip"])
            if cidrs and not any(ip in ipaddress.ip_network(c) for c in cidrs):
                raise Fail(422, f"vm_group {g['name']}: ip {ip} is in no subnet of network {i['network']}")


def users_of(conn: psycopg.Connection, kind: Kind, parent: str | None, name: str,
             going: Callable[[str, str | None, str], bool] | None = None) -> list[str]:
    """What keeps the resource from being deleted: "subnet net1/a", "deployment t/d"...
    ``going(kind, parent, name)``: whether a user is on its way out (a delete accepted
    before, in the same request or not: the worker does that one first), so not counted."""
    rid = row_id(conn, kind, parent, name)
    if rid is None:
        return []
    users: list[tuple[str, str, str]] = []  # (kind, parent, name)
    if kind.name == "tenant":
        for table, what in (("volumes", "volume"), ("deployments", "deployment")):
            users += [(what, name, r[0]) for r in conn.execute(
                f"SELECT name FROM {table} WHERE tenant_id = %s ORDER BY id LIMIT 10", (rid,))]
    if kind.name == "network":
        users += [("subnet", name, r[0]) for r in conn.execute(
            "SELECT name FROM subnets WHERE network_id = %s ORDER BY id LIMIT 10", (rid,))]
    if kind.name in ("network", "image", "flavor"):
        users += [("deployment", r[0], r[1]) for r in conn.execute(
            "SELECT DISTINCT t.name, d.name FROM deployment_refs x"
            " JOIN deployments d ON d.id = x.deployment_id"
            f" JOIN tenants t ON t.id = d.tenant_id WHERE x.{kind.name}_id = %s ORDER BY 1, 2 LIMIT 10",
            (rid,))]
    return [f"{k} {p}/{n}" for k, p, n in users if going is None or not going(k, p, n)]


def check_deletable(conn: psycopg.Connection, kind: Kind, parent: str | None, name: str,
                    going: Callable[[str, str | None, str], bool] | None = None) -> None:
    if kind.name == "tenant" and name == DEFAULT_TENANT:
        raise Fail(409, f"tenant {DEFAULT_TENANT} is built in and cannot be deleted")
    users = users_of(conn, kind, parent, name, going)
    if users:
        raise Fail(409, f"{kind.name} {kind.key(parent, name)} is in use by {', '.join(users)}")


# --- writes: tenants, networks, subnets, flavors, images, volumes ---------------------------


@dataclass(frozen=True)
class Tx:
    """The transaction row fields the work needs."""

    id: int
    op: str
    kind: str
    parent: str | None
    name: str
    request: dict[str, Any] | None
    callback_url: str | None = None
    status: str = "accepted"


def _parent_id(conn: psycopg.Connection, kind: Kind, parent: str | None) -> int | None:
    if not kind.parent:
        return None
    pid = row_id(conn, KINDS[kind.parent], None, parent or "")
    if pid is None:
        raise Fail(404, f"{kind.parent} {parent} not found")
    return pid


def apply_simple(conn: psycopg.Connection, tx: Tx) -> str:
    """Do a transaction on a resource that needs no VIM work; the result message."""
    kind = KINDS[tx.kind]
    key = kind.key(tx.parent, tx.name)
    spec = {k: v for k, v in (tx.request or {}).items() if k != "name"}
    if tx.op == "create":
        pid = _parent_id(conn, kind, tx.parent)
        cols, vals = ["name", "spec", "created_tx"], [tx.name, Jsonb(spec), tx.id]
        if kind.parent:
            cols.append(kind.parent_col or "")
            vals.append(pid)
        row = conn.execute(
            f"INSERT INTO {kind.table} ({', '.join(cols)}) VALUES ({', '.join(['%s'] * len(cols))})"
            " ON CONFLICT DO NOTHING RETURNING id",
            vals,
        ).fetchone()
        if row is None and not _created_by(conn, kind, tx):
            raise Fail(409, f"{kind.name} {key} exists")
        return f"{kind.name} {key} created"
    rid = row_id(conn, kind, tx.parent, tx.name)
    if rid is None:
        raise Fail(404, f"{kind.name} {key} not found")
    if tx.op == "update":
        conn.execute(
            f"UPDATE {kind.table} SET spec = %s, updated_at = now() WHERE id = %s", (Jsonb(spec), rid)
        )
        return f"{kind.name} {key} updated"
    check_deletable(conn, kind, tx.parent, tx.name)
    try:
        with conn.transaction():  # a savepoint: a foreign key still in use is a 409
            conn.execute(f"DELETE FROM {kind.table} WHERE id = %s", (rid,))
    except psycopg.errors.ForeignKeyViolation:
        raise Fail(409, f"{kind.name} {key} is in use") from None
    return f"{kind.name} {key} deleted"


def _created_by(conn: psycopg.Connection, kind: Kind, tx: Tx) -> bool:
    """Whether the resource that exists was created by this very transaction (resumed)."""
    rid = row_id(conn, kind, tx.parent, tx.name)
    if rid is None:
        return False
    row = conn.execute(f"SELECT created_tx FROM {kind.table} WHERE id = %s", (rid,)).fetchone()
    return bool(row and row[0] == tx.id)


# --- writes: deployments -------------------------------------------------------------------

DEPLOYMENT = KINDS["deployment"]


def vm_name(deployment: str, group: str, index: int) -> str:
    return f"{deployment}_{group}_{index}"


def _resource_spec(conn: psycopg.Connection, table: str, name: str) -> dict[str, Any]:
    row = conn.execute(f"SELECT spec FROM {table} WHERE name = %s", (name,)).fetchone()
    return {"name": name, **(row[0] if row else {})}


def deployment_phase_a(conn: psycopg.Connection, tx: Tx) -> DeploymentWork:
    """The database half of a deployment transaction, before the executor runs:
    create/update the deployment, its references and VM rows (new VMs ``pending``,
    VMs to remove ``deleting``); for a delete, mark everything ``deleting``.
    Returns what the executor must do."""
    tenant, name = tx.parent or DEFAULT_TENANT, tx.name
    key = DEPLOYMENT.key(tenant, name)
    tenant_id = _parent_id(conn, DEPLOYMENT, tenant)
    spec = {k: v for k, v in (tx.request or {}).items() if k != "name"}
    row = conn.execute(
        "SELECT id, status, created_tx FROM deployments WHERE tenant_id = %s AND name = %s FOR UPDATE",
        (tenant_id, name),
    ).fetchone()
    if tx.op == "create":
        if row is not None and row[2] != tx.id:
            raise Fail(409, f"deployment {key} exists")
    elif row is None:
        raise Fail(404, f"deployment {key} not found")
    if tx.op == "update" and row and row[1] == "deleting":
        raise Fail(409, f"deployment {key} is being deleted")

    if tx.op == "delete":
        assert row is not None
        dep_id = row[0]
        conn.execute("UPDATE deployments SET status = 'deleting', updated_at = now() WHERE id = %s",
                     (dep_id,))
        conn.execute("UPDATE vms SET status = 'deleting', updated_at = now() WHERE deployment_id = %s",
                     (dep_id,))
        current = conn.execute("SELECT spec FROM deployments WHERE id = %s", (dep_id,)).fetchone()
        return _work(conn, tx, tenant, dep_id, current[0] if current else {})

    check_deployment_refs(conn, name, spec, lambda k, n: exists(conn, KINDS[k], None, n))
    if row is None:
        dep_id = conn.execute(
            "INSERT INTO deployments (tenant_id, name, spec, status, created_tx)"
            " VALUES (%s, %s, %s, 'pending', %s) RETURNING id",
            (tenant_id, name, Jsonb(spec), tx.id),
        ).fetchone()[0]  # type: ignore[index]
    else:
        dep_id = row[0]
        if tx.op == "update":
            conn.execute(
                "UPDATE deployments SET spec = %s, status = 'updating', updated_at = now() WHERE id = %s",
                (Jsonb(spec), dep_id),
            )
    # references: replaced as a whole, so running this again changes nothing
    conn.execute("DELETE FROM deployment_refs WHERE deployment_id = %s", (dep_id,))
    for k, n in deployment_refs(spec):
        conn.execute(
            f"INSERT INTO deployment_refs (deployment_id, {k}_id)"
            f" SELECT %s, id FROM {KINDS[k].table} WHERE name = %s",
            (dep_id, n),
        )
    # VM rows: one per (group, index); new ones pending, the others kept as they are
    wanted: dict[str, tuple[str, int, list[dict[str, Any]]]] = {}
    for g in spec.get("vm_groups", []):
        for i in range(g["count"]):
            wanted[vm_name(name, g["name"], i)] = (g["name"], i, g.get("interfaces", []))
    have = {r[0] for r in conn.execute("SELECT name FROM vms WHERE deployment_id = %s", (dep_id,))}
    for vm, (group, i, interfaces) in wanted.items():
        if vm in have:
            conn.execute(
                "UPDATE vms SET interfaces = %s, updated_at = now() WHERE deployment_id = %s AND name = %s",
                (Jsonb(interfaces), dep_id, vm),
            )
        else:
            conn.execute(
                "INSERT INTO vms (deployment_id, vm_group, idx, name, status, interfaces)"
                " VALUES (%s, %s, %s, %s, 'pending', %s)",
                (dep_id, group, i, vm, Jsonb(interfaces)),
            )
    gone = sorted(have - set(wanted))
    if gone:
        conn.execute(
            "UPDATE vms SET status = 'deleting', updated_at = now()"
            " WHERE deployment_id = %s AND name = ANY(%s)",
            (dep_id, gone),
        )
    return _work(conn, tx, tenant, dep_id, spec)


def _work(conn: psycopg.Connection, tx: Tx, tenant: str, dep_id: int, spec: dict[str, Any]) -> DeploymentWork:
    groups = {g["name"]: g for g in spec.get("vm_groups", [])}
    images: dict[str, dict[str, Any]] = {}
    flavors: dict[str, dict[str, Any]] = {}
    keep: list[VmWork] = []
    remove: list[VmWork] = []
    rows = conn.execute(
        "SELECT name, vm_group, idx, status, interfaces FROM vms WHERE deployment_id = %s ORDER BY id",
        (dep_id,),
    ).fetchall()
    for vm, group, idx, status, interfaces in rows:
        g = groups.get(group, {})
        image, flavor = g.get("image"), g.get("flavor")
        if image and image not in images:
            images[image] = _resource_spec(conn, "images", image)
        if flavor and flavor not in flavors:
            flavors[flavor] = _resource_spec(conn, "flavors", flavor)
        w = VmWork(
            name=vm, vm_group=group, index=idx, status=status,
            image=images.get(image or "", {}), flavor=flavors.get(flavor or "", {}),
            interfaces=interfaces, kpi=g.get("kpi", {}), recovery=g.get("recovery", {}),
        )
        (remove if status == "deleting" else keep).append(w)
    return DeploymentWork(
        transaction_id=tx.id, operation=tx.op,  # type: ignore[arg-type]
        tenant=tenant, deployment=tx.name, spec=spec, vms=keep, remove=remove,
    )


def deployment_phase_b(
    conn: psycopg.Connection, tx: Tx, work: DeploymentWork, result: Any
) -> tuple[bool, int, str]:
    """Write the executor's result (statuses by VM name, or the exception it raised):
    VM statuses, removed VMs, the deployment's status (or the deployment deleted).
    Returns (succeeded, status code, message) for the transaction."""
    key = DEPLOYMENT.key(work.tenant, work.deployment)
    tenant_id = _parent_id(conn, DEPLOYMENT, work.tenant)
    row = conn.execute(
        "SELECT id FROM deployments WHERE tenant_id = %s AND name = %s FOR UPDATE", (tenant_id, tx.name)
    ).fetchone()
    if row is None:
        raise Fail(404, f"deployment {key} not found")
    dep_id = row[0]
    ev = {"transaction_id": tx.id, "tenant": work.tenant, "resource_type": "deployment", "resource": key}
    if isinstance(result, BaseException):
        conn.execute(
            "UPDATE vms SET status = 'error', updated_at = now()"
            " WHERE deployment_id = %s AND status = 'pending'",
            (dep_id,),
        )
        conn.execute("UPDATE deployments SET status = 'failed', updated_at = now() WHERE id = %s", (dep_id,))
        return False, 500, f"deployment {key}: {tx.op} failed: {result}"
    for vm in work.remove:
        events.record_event(conn, events.VM_UNDEPLOYED, vm=vm.name, status=events.SUCCESS, **ev)
    if tx.op == "delete":
        conn.execute("DELETE FROM deployments WHERE id = %s", (dep_id,))
        return True, 200, f"deployment {key} deleted"
    if work.remove:
        conn.execute(
            "DELETE FROM vms WHERE deployment_id = %s AND name = ANY(%s)",
            (dep_id, [vm.name for vm in work.remove]),
        )
    failed = []
    for vm in work.vms:
        status = result.get(vm.name, "error")
        if status not in ("deployed", "error", "alive", "down", "stopped"):
            status = "error"
        if status == "error":
            failed.append(vm.name)
        if status != vm.status:
            conn.execute(
                "UPDATE vms SET status = %s, updated_at = now() WHERE deployment_id = %s AND name = %s",
                (status, dep_id, vm.name),
            )
            if status == "error":
                events.record_event(conn, events.VM_ERROR, vm=vm.name, status=events.FAILURE, **ev)
            elif vm.status in ("pending", "error"):
                events.record_event(conn, events.VM_DEPLOYED, vm=vm.name, status=events.SUCCESS, **ev)
    conn.execute(
        "UPDATE deployments SET status = %s, updated_at = now() WHERE id = %s",
        ("failed" if failed else "deployed", dep_id),
    )
    if failed:
        return False, 500, f"deployment {key}: VM(s) failed: {', '.join(failed)}"
    return True, 200, f"deployment {key} {tx.op}d"
