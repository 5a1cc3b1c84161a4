"""The ETSI service's rows (esc.etsi.schema) and their SOL003 representations.

Every representation is built from the database and the ``Links`` of the server address
(the VIP or the anycast address, esc.config.NodeConfig.etsi_server_address): a link never
names a node's own address, whichever node answers.
"""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from esc.etsi import lcm
from esc.etsi.package import Vnfd

API_BASE = "/vnflcm/v1"
ETSI_TENANT = "etsi"  # the controller tenant that holds the VNF instances' deployments
VIM_CONNECTION_ID = "esc-vim"


def iso(t: datetime.datetime | None) -> str | None:
    if t is None:
        return None
    return t.astimezone(datetime.UTC).isoformat().replace("+00:00", "Z")


def new_id() -> str:
    return str(uuid.uuid4())


@dataclass(frozen=True)
class Links:
    """Absolute URLs on the server address: ``base`` is ``scheme://host:port``."""

    base: str

    def href(self, path: str) -> dict[str, str]:
        return {"href": self.url(path)}

    def url(self, path: str) -> str:
        return f"{self.base}{API_BASE}{path}"


def links_base(scheme: str, host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    default = (scheme == "http" and port == 80) or (scheme == "https" and port == 443)
    return f"{scheme}://{shown}" + ("" if default else f":{port}")


# --- packages -------------------------------------------------------------------------------


def package_for_vnfd(conn: psycopg.Connection, vnfd_id: str) -> tuple[str, Vnfd] | None:
    row = conn.execute("SELECT id, vnfd FROM etsi_packages WHERE vnfd_id = %s", (vnfd_id,)).fetchone()
    return (row[0], Vnfd.from_dict(row[1])) if row else None


def package(conn: psycopg.Connection, pkg_id: str) -> Vnfd | None:
    row = conn.execute("SELECT vnfd FROM etsi_packages WHERE id = %s", (pkg_id,)).fetchone()
    return Vnfd.from_dict(row[0]) if row else None


def save_package(conn: psycopg.Connection, vnfd: Vnfd, artifacts: Mapping[str, str], checksum: str
                 ) -> tuple[str, bool]:
    """(package id, created): the same VNFD onboarded again with the same content is the
    same package; different content under an existing vnfdId is refused (ValueError)."""
    row = conn.execute("SELECT id, checksum FROM etsi_packages WHERE vnfd_id = %s FOR UPDATE",
                       (vnfd.id,)).fetchone()
    if row:
        if row[1] != checksum:
            raise ValueError(f"a different package with VNFD {vnfd.id} is onboarded ({row[0]})")
        return row[0], False
    pkg_id = new_id()
    conn.execute("INSERT INTO etsi_packages (id, vnfd_id, vnfd, artifacts, checksum)"
                 " VALUES (%s, %s, %s, %s, %s)",
                 (pkg_id, vnfd.id, Jsonb(vnfd.to_dict()), Jsonb(dict(artifacts)), checksum))
    return pkg_id, True


def list_packages(conn: psycopg.Connection) -> list[dict[str, Any]]:
    rows = conn.execute("SELECT id, vnfd_id, vnfd, created_at FROM etsi_packages ORDER BY created_at")
    out = []
    for pkg_id, vnfd_id, vnfd, created in rows:
        out.append({"id": pkg_id, "vnfdId": vnfd_id, "vnfProvider": vnfd.get("provider"),
                    "vnfProductName": vnfd.get("product_name"),
                    "vnfSoftwareVersion": vnfd.get("software_version"),
                    "vnfdVersion": vnfd.get("descriptor_version"),
                    "flavours": sorted(vnfd.get("flavours", {})), "onboardedAt": iso(created)})
    return out


# --- VNF instances --------------------------------------------------------------------------

INSTANCE_COLUMNS = ("id, vnfd_id, pkg_id, name, description, state, vnf_state, flavour_id, level_id,"
                    " scale_levels, ext_vls, vim_info, properties, metadata, extensions, version,"
                    " op_occ, created_at, updated_at")


def _instance_row(row: tuple[Any, ...]) -> dict[str, Any]:
    return dict(zip([c.strip() for c in INSTANCE_COLUMNS.split(",")], row, strict=True))


def get_instance(conn: psycopg.Connection, inst_id: str, lock: bool = False) -> dict[str, Any] | None:
    row = conn.execute(f"SELECT {INSTANCE_COLUMNS} FROM etsi_vnf_instances WHERE id = %s"
                       + (" FOR UPDATE" if lock else ""), (inst_id,)).fetchone()
    return _instance_row(row) if row else None


def list_instances(conn: psycopg.Connection) -> list[dict[str, Any]]:
    rows = conn.execute(f"SELECT {INSTANCE_COLUMNS} FROM etsi_vnf_instances ORDER BY created_at, id")
    return [_instance_row(r) for r in rows]


def create_instance(conn: psycopg.Connection, vnfd_id: str, pkg_id: str, name: str | None,
                    description: str | None) -> dict[str, Any]:
    row = conn.execute(
        f"INSERT INTO etsi_vnf_instances (id, vnfd_id, pkg_id, name, description)"
        f" VALUES (%s, %s, %s, %s, %s) RETURNING {INSTANCE_COLUMNS}",
        (new_id(), vnfd_id, pkg_id, name, description)).fetchone()
    assert row is not None
    return _instance_row(row)


def vnfcs(conn: psycopg.Connection, inst_id: str) -> list[tuple[str, str, str]]:
    """(VM name, VDU id, status) of the instance's VMs, from the controller's deployment."""
    return [tuple(r) for r in conn.execute(  # type: ignore[misc]
        "SELECT v.name, v.vm_group, v.status FROM vms v JOIN deployments d ON d.id = v.deployment_id"
        " JOIN tenants t ON t.id = d.tenant_id WHERE t.name = %s AND d.name = %s ORDER BY v.vm_group, v.idx",
        (ETSI_TENANT, inst_id))]


def instance_identity(inst: Mapping[str, Any], vnfd: Vnfd | None) -> dict[str, Any]:
    """What subscription filters look at."""
    return {"id": inst["id"], "vnfdId": inst["vnfd_id"], "vnfInstanceName": inst["name"],
            "vnfProvider": vnfd.provider if vnfd else "", "vnfProductName": vnfd.product_name if vnfd else "",
            "vnfSoftwareVersion": vnfd.software_version if vnfd else "",
            "vnfdVersion": vnfd.descriptor_version if vnfd else ""}


def instance_body(inst: Mapping[str, Any], vnfd: Vnfd | None, links: Links,
                  vms: Iterable[tuple[str, str, str]] = ()) -> dict[str, Any]:
    """A VnfInstance (SOL003 5.5.2.2)."""
    ident = instance_identity(inst, vnfd)
    body: dict[str, Any] = {
        "id": inst["id"], "vnfdId": inst["vnfd_id"], "vnfProvider": ident["vnfProvider"],
        "vnfProductName": ident["vnfProductName"], "vnfSoftwareVersion": ident["vnfSoftwareVersion"],
        "vnfdVersion": ident["vnfdVersion"], "vnfPkgId": inst["pkg_id"],
        "instantiationState": inst["state"],
    }
    if inst["name"] is not None:
        body["vnfInstanceName"] = inst["name"]
    if inst["description"] is not None:
        body["vnfInstanceDescription"] = inst["description"]
    for key, col in (("vnfConfigurableProperties", "properties"), ("metadata", "metadata"),
                     ("extensions", "extensions")):
        if inst[col]:
            body[key] = inst[col]
    if inst["vim_info"]:
        body["vimConnectionInfo"] = inst["vim_info"]
    path = f"/vnf_instances/{inst['id']}"
    lk: dict[str, Any] = {"self": links.href(path)}
    if inst["state"] == lcm.INSTANTIATED:
        body["instantiatedVnfInfo"] = {
            "flavourId": inst["flavour_id"], "vnfState": inst["vnf_state"],
            "scaleStatus": [{"aspectId": a, "scaleLevel": n}
                            for a, n in sorted(inst["scale_levels"].items())],
            "extCpInfo": _ext_cps(inst, vnfd),
            "vnfcResourceInfo": [
                {"id": vm, "vduId": vdu,
                 "computeResource": {"vimConnectionId": VIM_CONNECTION_ID, "resourceId": vm,
                                     "vimLevelResourceType": "vm"},
                 "metadata": {"status": status}}
                for vm, vdu, status in vms],
        }
        if inst["ext_vls"]:
            body["instantiatedVnfInfo"]["extVirtualLinkInfo"] = [
                {"id": vl["id"], "resourceHandle": {"vimConnectionId": VIM_CONNECTION_ID,
                                                    "resourceId": vl["resourceId"]}}
                for vl in inst["ext_vls"]]
        for task, name in (("terminate", "terminate"), ("scale", "scale"), ("scale_to_level", "scaleToLevel"),
                           ("change_flavour", "changeFlavour"), ("heal", "heal"), ("operate", "operate"),
                           ("change_ext_conn", "changeExtConn")):
            lk[name] = links.href(f"{path}/{task}")
    else:
        lk["instantiate"] = links.href(f"{path}/instantiate")
    body["_links"] = lk
    return body


def _ext_cps(inst: Mapping[str, Any], vnfd: Vnfd | None) -> list[dict[str, Any]]:
    if vnfd is None or not inst["flavour_id"] or inst["flavour_id"] not in vnfd.flavours:
        return []
    flavour = vnfd.flavours[inst["flavour_id"]]
    return [{"id": cp.id, "cpdId": cp.id} for cp in flavour.cps.values() if cp.virtual_link is None]


# --- operation occurrences ------------------------------------------------------------------

OP_COLUMNS = ("id, vnf_instance_id, operation, state, state_entered, start_time, automatic, params,"
              " cancel_pending, cancel_mode, error, changes, changed_info, grant_id, before, target,"
              " deployment_tx, attempts, seq")


def _op_row(row: tuple[Any, ...]) -> dict[str, Any]:
    return dict(zip([c.strip() for c in OP_COLUMNS.split(",")], row, strict=True))


def get_op(conn: psycopg.Connection, op_id: str, lock: bool = False) -> dict[str, Any] | None:
    row = conn.execute(f"SELECT {OP_COLUMNS} FROM etsi_op_occs WHERE id = %s"
                       + (" FOR UPDATE" if lock else ""), (op_id,)).fetchone()
    return _op_row(row) if row else None


def list_ops(conn: psycopg.Connection) -> list[dict[str, Any]]:
    return [_op_row(r) for r in conn.execute(f"SELECT {OP_COLUMNS} FROM etsi_op_occs ORDER BY seq")]


def create_op(conn: psycopg.Connection, inst: Mapping[str, Any], operation: str,
              params: Mapping[str, Any]) -> dict[str, Any]:
    """A STARTING occurrence that holds the instance, in the caller's transaction."""
    before = {k: inst[k] for k in ("state", "vnf_state", "flavour_id", "level_id", "scale_levels", "ext_vls",
                                   "vim_info", "name", "description", "properties", "metadata",
                                   "extensions", "pkg_id", "vnfd_id")}
    before["vms"] = [list(v) for v in vnfcs(conn, inst["id"])]
    row = conn.execute(
        f"INSERT INTO etsi_op_occs (id, vnf_instance_id, operation, state, params, before)"
        f" VALUES (%s, %s, %s, 'STARTING', %s, %s) RETURNING {OP_COLUMNS}",
        (new_id(), inst["id"], operation, Jsonb(dict(params)), Jsonb(before))).fetchone()
    assert row is not None
    op = _op_row(row)
    conn.execute("UPDATE etsi_vnf_instances SET op_occ = %s, updated_at = now() WHERE id = %s",
                 (op["id"], inst["id"]))
    return op


def set_op_state(conn: psycopg.Connection, op: dict[str, Any], state: str, **columns: Any) -> dict[str, Any]:
    """Move an occurrence to ``state`` (with other columns), in the caller's transaction;
    the instance is freed when the state is final."""
    sets = ["state = %s", "state_entered = now()"]
    values: list[Any] = [state]
    for col, val in columns.items():
        sets.append(f"{col} = %s")
        values.append(Jsonb(val) if isinstance(val, dict | list) else val)
    row = conn.execute(f"UPDATE etsi_op_occs SET {', '.join(sets)} WHERE id = %s RETURNING {OP_COLUMNS}",
                       (*values, op["id"])).fetchone()
    assert row is not None
    if state in lcm.FINAL_STATES:
        conn.execute("UPDATE etsi_vnf_instances SET op_occ = NULL, updated_at = now()"
                     " WHERE id = %s AND op_occ = %s", (op["vnf_instance_id"], op["id"]))
    return _op_row(row)


def op_body(op: Mapping[str, Any], links: Links) -> dict[str, Any]:
    """A VnfLcmOpOcc (SOL003 5.5.2.13)."""
    body: dict[str, Any] = {
        "id": op["id"], "operationState": op["state"], "stateEnteredTime": iso(op["state_entered"]),
        "startTime": iso(op["start_time"]), "vnfInstanceId": op["vnf_instance_id"],
        "operation": op["operation"], "isAutomaticInvocation": op["automatic"],
        "operationParams": op["params"], "isCancelPending": op["cancel_pending"],
    }
    if op["cancel_mode"]:
        body["cancelMode"] = op["cancel_mode"]
    if op["grant_id"]:
        body["grantId"] = op["grant_id"]
    if op["error"]:
        body["error"] = op["error"]
    if op["changes"]:
        body["resourceChanges"] = op["changes"]
    if op["changed_info"]:
        body["changedInfo"] = op["changed_info"]
    path = f"/vnf_lcm_op_occs/{op['id']}"
    lk = {"self": links.href(path), "vnfInstance": links.href(f"/vnf_instances/{op['vnf_instance_id']}")}
    for task in lcm.links_for(op["state"], op["operation"]):
        lk[task] = links.href(f"{path}/{task}")
    body["_links"] = lk
    return body


# --- subscriptions and notifications --------------------------------------------------------

SUB_COLUMNS = "id, callback_uri, filter, filter_key, auth, created_at"


def _sub_row(row: tuple[Any, ...]) -> dict[str, Any]:
    return dict(zip([c.strip() for c in SUB_COLUMNS.split(",")], row, strict=True))


def get_subscription(conn: psycopg.Connection, sub_id: str) -> dict[str, Any] | None:
    row = conn.execute(f"SELECT {SUB_COLUMNS} FROM etsi_subscriptions WHERE id = %s", (sub_id,)).fetchone()
    return _sub_row(row) if row else None


def find_subscription(conn: psycopg.Connection, callback: str, key: str) -> str | None:
    row = conn.execute("SELECT id FROM etsi_subscriptions WHERE callback_uri = %s AND filter_key = %s",
                       (callback, key)).fetchone()
    return row[0] if row else None


def list_subscriptions(conn: psycopg.Connection) -> list[dict[str, Any]]:
    return [_sub_row(r) for r in conn.execute(f"SELECT {SUB_COLUMNS} FROM etsi_subscriptions ORDER BY seq")]


def create_subscription(conn: psycopg.Connection, callback: str, filter_: Mapping[str, Any], key: str,
                        auth: Mapping[str, Any] | None) -> dict[str, Any]:
    row = conn.execute(
        f"INSERT INTO etsi_subscriptions (id, callback_uri, filter, filter_key, auth)"
        f" VALUES (%s, %s, %s, %s, %s) ON CONFLICT (callback_uri, filter_key) DO NOTHING"
        f" RETURNING {SUB_COLUMNS}",
        (new_id(), callback, Jsonb(dict(filter_)), key, Jsonb(dict(auth)) if auth else None)).fetchone()
    if row is None:
        raise ValueError("exists")
    return _sub_row(row)


def delete_subscription(conn: psycopg.Connection, sub_id: str) -> bool:
    return conn.execute("DELETE FROM etsi_subscriptions WHERE id = %s", (sub_id,)).rowcount == 1


def subscription_body(sub: Mapping[str, Any], links: Links) -> dict[str, Any]:
    """An LccnSubscription (SOL003 5.5.2.16): never its credentials."""
    body: dict[str, Any] = {"id": sub["id"], "callbackUri": sub["callback_uri"],
                            "_links": {"self": links.href(f"/subscriptions/{sub['id']}")}}
    if sub["filter"]:
        body["filter"] = sub["filter"]
    return body


def notify(conn: psycopg.Connection, links: Links, notification_type: str, identity: Mapping[str, Any],
           fields: Mapping[str, Any], op: Mapping[str, Any] | None = None) -> int:
    """One outbox row per subscription that hears this notification, in the caller's
    database transaction (the state change and its notifications commit together).
    Returns how many."""
    operation, state = (op["operation"], op["state"]) if op else (None, None)
    count = 0
    for sub in list_subscriptions(conn):
        if not lcm.matches(sub["filter"], notification_type, identity, operation, state):
            continue
        notification_id = new_id()
        body = {"id": notification_id, "notificationType": notification_type,
                "subscriptionId": sub["id"], "timeStamp": iso(datetime.datetime.now(datetime.UTC)),
                "vnfInstanceId": identity["id"], **fields}
        lk = {"vnfInstance": links.href(f"/vnf_instances/{identity['id']}"),
              "subscription": links.href(f"/subscriptions/{sub['id']}")}
        if op is not None:
            lk["vnfLcmOpOcc"] = links.href(f"/vnf_lcm_op_occs/{op['id']}")
        body["_links"] = lk
        conn.execute("INSERT INTO etsi_notifications (notification_id, subscription_id, body)"
                     " VALUES (%s, %s, %s)", (notification_id, sub["id"], Jsonb(body)))
        count += 1
    return count


def notify_op(conn: psycopg.Connection, links: Links, identity: Mapping[str, Any],
              op: Mapping[str, Any]) -> int:
    """The VnfLcmOperationOccurrenceNotification of ``op`` entering its current state."""
    fields: dict[str, Any] = {
        "notificationStatus": lcm.notification_status(op["state"]), "operationState": op["state"],
        "vnfLcmOpOccId": op["id"], "operation": op["operation"],
        "isAutomaticInvocation": op["automatic"],
    }
    if op["state"] in lcm.FINAL_STATES or op["state"] == lcm.FAILED_TEMP:
        changes = op.get("changes") or {}
        for key in ("affectedVnfcs", "affectedVirtualLinks", "affectedVirtualStorages"):
            if changes.get(key):
                fields[key] = changes[key]
        if op.get("changed_info"):
            fields["changedInfo"] = op["changed_info"]
        if op.get("error"):
            fields["error"] = op["error"]
    return notify(conn, links, "VnfLcmOperationOccurrenceNotification", identity, fields, op)
