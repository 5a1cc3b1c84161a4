"""The LCM worker: moves every operation occurrence from STARTING to where it ends.

A VNF instance is a controller deployment (tenant ``etsi``, named by the instance id):
one VM group per VDU, as many VMs as the instantiation level and the scale levels say.
The worker does the VIM work through the controller's own transactions (the ones of
``/v0``): it records them, and escmanager's worker makes the VMs with the same VIM
driver and VNF monitor as any deployment; the occurrence waits for them to finish.
Nothing is kept in memory: each step is one database transaction on the occurrence's
row (locked), so the next active resumes an operation where it stood, and the VIM work
itself is resumed by the controller's worker (idempotent by VM name).

One step per state (esc.etsi.lcm has the rules)::

    STARTING      grant (when an NFVO is configured), then PROCESSING
    PROCESSING    record the controller transactions; once they finished: COMPLETED,
                  or FAILED_TEMP with the reason
    ROLLING_BACK  the same towards the state before the operation: ROLLED_BACK or FAILED_TEMP

Every state change commits with its notifications (esc.etsi.store.notify_op).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from typing import Any

import psycopg

from esc.etsi import lcm, store
from esc.etsi.package import PackageError, Vnfd
from esc.services import transactions
from esc.services.db import commit_durably, one_line
from esc.services.models import FlavorIn, ImageIn, TenantIn
from esc.services.store import Fail
from esc.services.threads import PollingThreads
from esc.services.transactions import WriteRequest
from esc.services.vim_wiring import vim_name

log = logging.getLogger("esc.etsi.worker")

# The next occurrence with something to do: not waiting for a controller transaction
# still unfinished (unless a cancel came).
CLAIM_SQL = f"""
SELECT {store.OP_COLUMNS} FROM etsi_op_occs o
WHERE o.state IN ('STARTING', 'PROCESSING', 'ROLLING_BACK') AND NOT (o.id = ANY(%s))
  AND (o.deployment_tx IS NULL OR o.cancel_pending OR NOT EXISTS (
       SELECT 1 FROM transactions t WHERE t.id = o.deployment_tx AND t.status IN ('accepted', 'running')))
ORDER BY o.seq
LIMIT 1
FOR UPDATE OF o SKIP LOCKED
"""


class StepFailed(Exception):
    """The operation cannot go on: FAILED_TEMP with this ProblemDetails."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.problem = {"status": status, "detail": detail}


# --- what an instance becomes ---------------------------------------------------------------

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


def image_name(vdu_image: Any) -> str:
    version = f"-{vdu_image.version}" if vdu_image.version else ""
    return "etsi-" + _UNSAFE.sub("-", f"{vdu_image.name}{version}")[:100]


def flavor_name(vdu: Any) -> str:
    return f"etsi-{vdu.vcpus}c-{vdu.memory_mb}m-{vdu.disk_gb}g"


def target_after(op: Mapping[str, Any], inst: Mapping[str, Any], vnfd: Vnfd) -> dict[str, Any]:
    """The instance's attributes once ``op`` is done (StepFailed if its parameters do not
    fit the VNFD): state, vnf_state, flavour_id, level_id, scale_levels, ext_vls."""
    p = op["params"]
    t = {k: inst[k] for k in ("state", "vnf_state", "flavour_id", "level_id", "scale_levels", "ext_vls")}
    operation = op["operation"]
    if operation == "INSTANTIATE":
        flavour = _flavour(vnfd, p["flavourId"])
        level = p.get("instantiationLevelId") or flavour.default_level
        t.update(state=lcm.INSTANTIATED, vnf_state="STARTED", flavour_id=flavour.id, level_id=level,
                 scale_levels=_level_scale(flavour, level), ext_vls=p.get("extVirtualLinks") or [])
    elif operation == "TERMINATE":
        t.update(state=lcm.NOT_INSTANTIATED, flavour_id=None, level_id=None, scale_levels={}, ext_vls=[])
    elif operation == "SCALE":
        flavour = _flavour(vnfd, inst["flavour_id"])
        aspect = flavour.aspects.get(p["aspectId"])
        if aspect is None:
            raise StepFailed(400, f"no scaling aspect {p['aspectId']!r} in flavour {flavour.id}")
        steps = int(p.get("numberOfSteps") or 1) * (1 if p["type"] == "SCALE_OUT" else -1)
        level = int(inst["scale_levels"].get(aspect.id, 0)) + steps
        if not 0 <= level <= aspect.max_scale_level:
            raise StepFailed(400, f"aspect {aspect.id}: scale level {level} is outside "
                                  f"0..{aspect.max_scale_level}")
        t["scale_levels"] = {**inst["scale_levels"], aspect.id: level}
    elif operation == "SCALE_TO_LEVEL":
        flavour = _flavour(vnfd, inst["flavour_id"])
        if p.get("instantiationLevelId"):
            t.update(level_id=p["instantiationLevelId"],
                     scale_levels=_level_scale(flavour, p["instantiationLevelId"]))
        elif p.get("scaleInfo"):
            t["scale_levels"] = {**inst["scale_levels"], **{s["aspectId"]: int(s["scaleLevel"])
                                                            for s in p["scaleInfo"]}}
        else:
            raise StepFailed(400, "scale_to_level needs instantiationLevelId or scaleInfo")
    elif operation == "CHANGE_FLAVOUR":
        flavour = _flavour(vnfd, p["newFlavourId"])
        level = p.get("instantiationLevelId") or flavour.default_level
        t.update(flavour_id=flavour.id, level_id=level, scale_levels=_level_scale(flavour, level))
        if p.get("extVirtualLinks"):
            t["ext_vls"] = p["extVirtualLinks"]
    elif operation == "CHANGE_EXT_CONN":
        t["ext_vls"] = p["extVirtualLinks"]
    elif operation == "OPERATE":
        t["vnf_state"] = p["changeStateTo"]
    # HEAL keeps every attribute: the VMs are made to match them again
    if t["state"] == lcm.INSTANTIATED:
        counts(vnfd, t)  # the VNFD must accept the result
    return t


def _flavour(vnfd: Vnfd, flavour_id: str | None) -> Any:
    if not flavour_id or flavour_id not in vnfd.flavours:
        raise StepFailed(400, f"no deployment flavour {flavour_id!r} in VNFD {vnfd.id}")
    return vnfd.flavours[flavour_id]


def _level_scale(flavour: Any, level: str | None) -> dict[str, int]:
    if level is None:
        return {a: 0 for a in flavour.aspects}
    if level not in flavour.levels:
        raise StepFailed(400, f"no instantiation level {level!r} in flavour {flavour.id}")
    return {a: int(flavour.levels[level].scale_info.get(a, 0)) for a in flavour.aspects}


def counts(vnfd: Vnfd, t: Mapping[str, Any]) -> dict[str, int]:
    flavour = _flavour(vnfd, t["flavour_id"])
    try:
        return flavour.instances(t["level_id"], {a: int(n) for a, n in (t["scale_levels"] or {}).items()})
    except PackageError as e:
        raise StepFailed(400, str(e)) from None


def deployment_spec(vnfd: Vnfd, pkg_id: str, t: Mapping[str, Any]) -> dict[str, Any]:
    """The controller deployment of an instance in state ``t``: a VM group per VDU."""
    flavour = _flavour(vnfd, t["flavour_id"])
    networks = {}  # external CP id -> the network its external virtual link names
    for vl in t["ext_vls"] or []:
        for cp in vl.get("extCps", []):
            networks[cp["cpdId"]] = vl["resourceId"]
    groups = []
    for vdu_id, n in counts(vnfd, t).items():
        vdu = flavour.vdus[vdu_id]
        if n <= 0 or vdu.image is None:
            continue
        interfaces = [{"network": networks[cp]} for cp in vdu.cps if cp in networks]
        groups.append({"name": vdu_id, "image": image_name(vdu.image), "flavor": flavor_name(vdu),
                       "count": n, "interfaces": interfaces})
    return {"name": "", "description": f"VNF instance of {vnfd.product_name} ({vnfd.id})",
            "vm_groups": groups, "vm_state": "stopped" if t["vnf_state"] == "STOPPED" else "running"}


def resource_requests(vnfd: Vnfd, pkg_id: str, t: Mapping[str, Any]) -> list[WriteRequest]:
    """The tenant, images and flavors the deployment needs, as create requests."""
    flavour = _flavour(vnfd, t["flavour_id"])
    tenant = TenantIn(name=store.ETSI_TENANT, description="ETSI VNF instances").model_dump(mode="json")
    out = [WriteRequest("create", "tenant", None, store.ETSI_TENANT, tenant, "POST", "/vnflcm/v1")]
    seen: set[str] = set()
    for vdu in flavour.vdus.values():
        if vdu.image is None:
            continue
        name = image_name(vdu.image)
        if name not in seen:
            seen.add(name)
            src = f"vnfpkg://{pkg_id}/{vdu.image.file or vdu.image.name}"
            fmt = vdu.image.disk_format if vdu.image.disk_format in ("qcow2", "raw", "vmdk", "vdi", "vhd",
                                                                        "iso") else "qcow2"
            spec = ImageIn(name=name, src=src, disk_format=fmt).model_dump(mode="json")
            out.append(WriteRequest("create", "image", None, name, spec, "POST", "/vnflcm/v1"))
        fname = flavor_name(vdu)
        if fname not in seen:
            seen.add(fname)
            spec = FlavorIn(name=fname, vcpus=max(1, vdu.vcpus), memory_mb=max(1, vdu.memory_mb),
                            root_disk_gb=vdu.disk_gb).model_dump(mode="json")
            out.append(WriteRequest("create", "flavor", None, fname, spec, "POST", "/vnflcm/v1"))
    return out


def submit_vim_work(conn: psycopg.Connection, op: Mapping[str, Any], inst: Mapping[str, Any],
                    vnfd: Vnfd, t: Mapping[str, Any]) -> int | None:
    """Record the controller transactions that make the VIM match ``t`` (in the caller's
    database transaction); the deployment's transaction id, or None when nothing is to do."""
    name = inst["id"]
    exists = transactions._visible(conn, "tenant", None, store.ETSI_TENANT) and \
        transactions._visible(conn, "deployment", store.ETSI_TENANT, name)
    path = f"/vnflcm/v1/vnf_lcm_op_occs/{op['id']}"
    if t["state"] != lcm.INSTANTIATED:
        if not exists:
            return None
        req = WriteRequest("delete", "deployment", store.ETSI_TENANT, name, None, "DELETE", path)
    else:
        for r in resource_requests(vnfd, inst["pkg_id"], t):
            if not transactions._visible(conn, r.kind, r.parent, r.name):
                transactions.submit(conn, r)
        spec = {**deployment_spec(vnfd, inst["pkg_id"], t), "name": name}
        req = WriteRequest("update" if exists else "create", "deployment", store.ETSI_TENANT, name, spec,
                           "PUT" if exists else "POST", path)
    tx, _ = transactions.submit(conn, req)
    conn.execute(f"NOTIFY {transactions.WORK_CHANNEL}")  # escmanager's worker starts at commit
    return int(tx["id"])


# --- the worker -----------------------------------------------------------------------------


class LcmWorker(PollingThreads):
    """Runs while the ETSI service serves (on the active only). ``links`` make the
    notifications' hrefs; ``grant`` (esc.etsi.grant) asks the NFVO, or None."""

    def __init__(self, conninfo: str, links: store.Links, *, threads: int = 2, poll: float = 0.2,
                 grant: Callable[[Mapping[str, Any], Mapping[str, Any], Vnfd], str | None] | None = None,
                 on_notified: Callable[[], None] | None = None,
                 vim: Any = None) -> None:
        self.conninfo, self.links, self.poll = conninfo, links, poll
        self.grant = grant
        self.vim = vim  # a VimDriver with spec() (the VIM helper's client): heal re-creates VMs
        self.on_notified = on_notified or (lambda: None)
        super().__init__("escetsi-lcm", threads)

    def drain(self, conn: psycopg.Connection) -> float:
        skip: list[str] = []
        while not self.stopping.is_set():
            row = conn.execute(CLAIM_SQL, (skip,)).fetchone()
            if row is None:
                conn.rollback()
                break
            op = store._op_row(row)
            try:
                self.step(conn, op)
            except (psycopg.OperationalError, psycopg.errors.SerializationFailure,
                    psycopg.errors.DeadlockDetected):
                conn.rollback()
                raise
            except Exception as e:
                log.exception("operation %s: internal error", op["id"])
                conn.rollback()
                self._fail_temp(conn, op, 500, f"internal error: {one_line(e)}")
                skip.append(op["id"])
        return self.poll

    def _fail_temp(self, conn: psycopg.Connection, op: dict[str, Any], status: int, detail: str) -> None:
        op = store.get_op(conn, op["id"], lock=True) or op
        if op["state"] not in lcm.ACTIVE_STATES:
            conn.rollback()
            return
        self._move(conn, op, lcm.FAILED_TEMP, error={"status": status, "detail": detail}, deployment_tx=None)
        commit_durably(conn)

    def _move(self, conn: psycopg.Connection, op: dict[str, Any], state: str,
              **columns: Any) -> dict[str, Any]:
        new = store.set_op_state(conn, op, state, **columns)
        inst = store.get_instance(conn, op["vnf_instance_id"])
        vnfd = store.package(conn, inst["pkg_id"]) if inst else None
        ident = store.instance_identity(inst, vnfd) if inst else {"id": op["vnf_instance_id"]}
        if store.notify_op(conn, self.links, ident, new):
            self.on_notified()
        log.info("operation %s (%s of %s): %s -> %s%s", op["id"], op["operation"], op["vnf_instance_id"],
                 op["state"], state, f": {columns['error']['detail']}" if columns.get("error") else "")
        return new

    def step(self, conn: psycopg.Connection, op: dict[str, Any]) -> None:
        """One step of ``op`` (its row locked by the claim), committed."""
        inst = store.get_instance(conn, op["vnf_instance_id"], lock=True)
        if inst is None:
            self._move(conn, op, lcm.FAILED, error={"status": 404, "detail": "the VNF instance is gone"})
            commit_durably(conn)
            return
        vnfd = store.package(conn, inst["pkg_id"])
        if vnfd is None:
            raise StepFailed(500, f"VNF package {inst['pkg_id']} is gone")
        if op["cancel_pending"]:
            state = lcm.on_cancel(op["state"])
            error = {"error": {"status": 409, "detail": "cancelled"}} if state == lcm.FAILED_TEMP else {}
            self._move(conn, op, state, deployment_tx=None, cancel_pending=False, **error)
            commit_durably(conn)
            return
        # a failed step goes back to here, the occurrence's row still locked: no other
        # thread takes it (and asks the NFVO again) before it is FAILED_TEMP
        conn.execute("SAVEPOINT step")
        try:
            if op["state"] == lcm.STARTING:
                self._start(conn, op, inst, vnfd)
            elif op["state"] == lcm.PROCESSING:
                self._process(conn, op, inst, vnfd, rollback=False)
            else:
                self._process(conn, op, inst, vnfd, rollback=True)
        except StepFailed as e:
            conn.execute("ROLLBACK TO SAVEPOINT step")
            self._fail_temp(conn, op, e.problem["status"], e.problem["detail"])
        except Fail as e:  # a controller transaction refused (a network not found...)
            conn.execute("ROLLBACK TO SAVEPOINT step")
            self._fail_temp(conn, op, e.code, e.message)

    def _start(self, conn: psycopg.Connection, op: dict[str, Any], inst: dict[str, Any], vnfd: Vnfd) -> None:
        target = target_after(op, inst, vnfd)  # parameters checked before asking for a grant
        grant_id = None
        if self.grant is not None:
            grant_id = self.grant(op, inst, vnfd)  # StepFailed on a refusal
        self._move(conn, op, lcm.PROCESSING, target=target, grant_id=grant_id)
        commit_durably(conn)

    def _process(self, conn: psycopg.Connection, op: dict[str, Any], inst: dict[str, Any], vnfd: Vnfd,
                 rollback: bool) -> None:
        target = op["before"] if rollback else (op["target"] or target_after(op, inst, vnfd))
        if not rollback and op["grant_id"] is None and self.grant is not None and op["deployment_tx"] is None:
            # a retry after a refused grant asks again
            grant_id = self.grant(op, inst, vnfd)
            if grant_id is not None:
                conn.execute("UPDATE etsi_op_occs SET grant_id = %s WHERE id = %s", (grant_id, op["id"]))
        if op["operation"] == "MODIFY_INFO":
            self._finish(conn, op, inst, target, rollback)
            return
        if op["deployment_tx"] is None:
            if op["operation"] == "HEAL" and not rollback:
                self._recreate(conn, inst)
            tx_id = submit_vim_work(conn, op, inst, vnfd, target)
            if tx_id is None:
                self._finish(conn, op, inst, target, rollback)
                return
            conn.execute("UPDATE etsi_op_occs SET deployment_tx = %s, target = COALESCE(target, %s)"
                         " WHERE id = %s", (tx_id, psycopg.types.json.Jsonb(dict(target)), op["id"]))
            commit_durably(conn)
            log.info("operation %s: controller transaction %d for %s", op["id"], tx_id, inst["id"])
            return
        row = conn.execute("SELECT status, message FROM transactions WHERE id = %s",
                           (op["deployment_tx"],)).fetchone()
        if row is None or row[0] == "failed":
            raise StepFailed(500, row[1] if row else f"controller transaction {op['deployment_tx']} is gone")
        self._finish(conn, op, inst, target, rollback)

    def _recreate(self, conn: psycopg.Connection, inst: dict[str, Any]) -> None:
        """Heal: each VM of the instance deleted and made again from its spec, by the VIM
        driver; the deployment update that follows makes the controller (and the VNF
        monitor) take them back. Done again if the node dies before it commits: a VM
        re-created twice is still one healthy VM."""
        if self.vim is None:
            return
        for vm, _, _ in store.vnfcs(conn, inst["id"]):
            name = vim_name(store.ETSI_TENANT, inst["id"], vm)
            spec = self.vim.spec(name)
            if spec is None:
                continue  # gone from the VIM: the deployment update makes it again
            self.vim.delete_vm(name)
            self.vim.create_vm(spec)
            log.info("heal of %s: VM %s re-created", inst["id"], name)

    def _finish(self, conn: psycopg.Connection, op: dict[str, Any], inst: dict[str, Any],
                target: Mapping[str, Any], rollback: bool) -> None:
        before_vms = {vm for vm, _, _ in _vms_before(op)}
        after = store.vnfcs(conn, inst["id"])
        after_vms = {vm: vdu for vm, vdu, _ in after}
        changes = {"affectedVnfcs": [
            *({"id": vm, "vduId": vdu, "changeType": "ADDED",
               "computeResource": {"vimConnectionId": store.VIM_CONNECTION_ID, "resourceId": vm}}
              for vm, vdu in after_vms.items() if vm not in before_vms),
            *({"id": vm, "vduId": vdu, "changeType": "REMOVED",
               "computeResource": {"vimConnectionId": store.VIM_CONNECTION_ID, "resourceId": vm}}
              for vm, vdu, _ in _vms_before(op) if vm not in after_vms),
        ]}
        if op["operation"] == "HEAL" and not rollback:
            changes["affectedVnfcs"] += [
                {"id": vm, "vduId": vdu, "changeType": "MODIFIED",
                 "computeResource": {"vimConnectionId": store.VIM_CONNECTION_ID, "resourceId": vm}}
                for vm, vdu in after_vms.items() if vm in before_vms]
        columns = {k: target[k] for k in ("state", "vnf_state", "flavour_id", "level_id") if k in target}
        sets = [f"{k} = %s" for k in columns]
        values: list[Any] = list(columns.values())
        for k in ("scale_levels", "ext_vls"):
            if k in target:
                sets.append(f"{k} = %s")
                values.append(psycopg.types.json.Jsonb(target[k]))
        changed_info = None
        if op["operation"] == "MODIFY_INFO":
            src = op["before"] if rollback else op["params"]
            mapping = {"vnfInstanceName": "name", "vnfInstanceDescription": "description",
                       "vnfConfigurableProperties": "properties", "metadata": "metadata",
                       "extensions": "extensions", "vimConnectionInfo": "vim_info", "vnfPkgId": "pkg_id"}
            changed_info = {}
            for key, col in mapping.items():
                name = col if rollback else key
                if name not in src:
                    continue
                val = src[name]
                if val is None:  # removed (a merge patch's null; vnfPkgId cannot be)
                    val = None if col in ("name", "description") else [] if col == "vim_info" else {}
                if isinstance(val, dict) and not rollback and col in ("properties", "metadata", "extensions"):
                    val = _merge_patch(inst[col] or {}, val)  # JSON merge patch (RFC 7396)
                sets.append(f"{col} = %s")
                values.append(psycopg.types.json.Jsonb(val) if isinstance(val, dict | list) else val)
                if val is not None:  # the schema has no null: a removal shows as absence
                    changed_info[key] = val
        sets.append("version = version + 1")
        conn.execute(f"UPDATE etsi_vnf_instances SET {', '.join(sets)}, updated_at = now() WHERE id = %s",
                     (*values, inst["id"]))
        state = lcm.ROLLED_BACK if rollback else lcm.COMPLETED
        extra = {"changed_info": changed_info} if changed_info else {}
        self._move(conn, op, state, changes=changes, **extra)
        commit_durably(conn)


def _vms_before(op: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    return [tuple(v) for v in (op["before"].get("vms") or [])]  # type: ignore[misc]


def _merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = _merge_patch(out.get(k), v)
    return out
