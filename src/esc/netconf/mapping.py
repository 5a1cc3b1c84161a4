"""The esc YANG module's shapes (nested dicts of yangtree) to the controller's resources
(the REST API's bodies, esc.services.models) and back.

``Resources``: kind -> (parent, name) -> the resource's body as the REST API takes it
in a POST (name included), normalized by its model. ESC's names map onto the REST
API's fields: a VM group's ``scaling/min_active`` is its ``count``, its interfaces are
ordered by ``nicid``, the ``VM_ALIVE`` KPI's ``poll_frequency`` and
``metric_occurrences_false`` are ``kpi.interval_s`` and ``kpi.down_after``,
``recovery_type MANUAL`` is ``recovery.policy none``; a subnet's ``address`` and
``netmask`` are its ``cidr``; a flavor's disks are kept in GB (``*_disk_mb`` / 1024).
"""

from __future__ import annotations

import ipaddress
from typing import Any

from pydantic import BaseModel, ValidationError

from esc.netconf.errors import RpcError
from esc.services.store import KINDS

Key = tuple[str | None, str]
Resources = dict[str, dict[Key, dict[str, Any]]]

# in the order they are made (a parent or a referenced resource first)
KIND_ORDER = ("tenant", "network", "subnet", "flavor", "image", "deployment")
RECOVERY = {"REBOOT_ONLY": "reboot", "REDEPLOY_ONLY": "redeploy"}


def empty() -> Resources:
    return {k: {} for k in KIND_ORDER}


def normalize(kind: str, body: dict[str, Any], path: str) -> dict[str, Any]:
    """``body`` checked by the REST API's model of ``kind`` (the same rules), as it stores it."""
    model: type[BaseModel] = KINDS[kind].in_model
    try:
        return model.model_validate(body).model_dump(mode="json")
    except ValidationError as e:
        details = []
        for err in e.errors(include_url=False, include_input=False, include_context=False):
            loc = ".".join(str(x) for x in err["loc"])
            details.append(f"{loc}: {err['msg']}" if loc else err["msg"])
        raise RpcError("invalid-value", f"{path}: {'; '.join(details)}", path=path) from None


# --- YANG -> resources ---------------------------------------------------------------------


def _int(value: str | None, path: str, default: int | None = None) -> int | None:
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise RpcError("invalid-value", f"{path}: {value!r} is not an integer", path=path) from None


def _number(value: str | None, path: str) -> int | float | None:
    if value is None:
        return None
    try:
        n = float(value)
    except ValueError:
        raise RpcError("invalid-value", f"{path}: {value!r} is not a number", path=path) from None
    return int(n) if n.is_integer() else n


def _bool(value: str | None, path: str, default: bool) -> bool:
    if value is None:
        return default
    if value not in ("true", "false"):
        raise RpcError("invalid-value", f"{path}: {value!r} is not true or false", path=path)
    return value == "true"


def _enum(value: str | None, allowed: tuple[str, ...], path: str, default: str) -> str:
    if value is None:
        return default
    if value not in allowed:
        raise RpcError("invalid-value", f"{path}: {value!r} is not one of {', '.join(allowed)}", path=path)
    return value


def _gb(value: str | None, path: str) -> int:
    mb = _int(value, path, 0) or 0
    if mb % 1024:
        raise RpcError("invalid-value", f"{path}: {mb} is not a whole number of GB (a multiple of 1024)",
                       path=path)
    return mb // 1024


def _vm_group(g: dict[str, Any], path: str) -> dict[str, Any]:
    path = f"{path}/vm_group[name='{g['name']}']"
    scaling = g.get("scaling", {})
    count = _int(scaling.get("min_active"), f"{path}/scaling/min_active", 1)
    top = _int(scaling.get("max_active"), f"{path}/scaling/max_active", count)
    if top != count:
        raise RpcError("invalid-value", f"{path}/scaling: max_active must equal min_active "
                                        "(groups do not scale by themselves)", path=f"{path}/scaling",
                       app_tag="must-violation")
    interfaces = []
    entries = g.get("interfaces", {}).get("interface", [])
    for i in sorted(entries, key=lambda e: _int(e["nicid"], f"{path}/interfaces/interface/nicid") or 0):
        ipath = f"{path}/interfaces/interface[nicid='{i['nicid']}']"
        if "network" not in i:
            raise RpcError("missing-element", f"{ipath}: network is mandatory", type="protocol",
                           info={"bad-element": "network"})
        interfaces.append({"network": i["network"], **({"ip": i["ip_address"]} if "ip_address" in i else {})})
    kpi: dict[str, Any] = {"type": "icmp_ping"}
    for k in g.get("kpi_data", {}).get("kpi", []):
        kpath = f"{path}/kpi_data/kpi[event_name='{k['event_name']}']"
        _enum(k["event_name"], ("VM_ALIVE",), f"{kpath}/event_name", "VM_ALIVE")
        collector = k.get("metric_collector", {})
        _enum(collector.get("type"), ("ICMPPing",), f"{kpath}/metric_collector/type", "ICMPPing")
        kpi["interval_s"] = _number(collector.get("poll_frequency"),
                                    f"{kpath}/metric_collector/poll_frequency")
        kpi["down_after"] = _int(k.get("metric_occurrences_false"), f"{kpath}/metric_occurrences_false")
    if len(g.get("kpi_data", {}).get("kpi", [])) > 1:
        raise RpcError("too-many-elements", f"{path}/kpi_data: one kpi at most", type="protocol")
    recovery = g.get("recovery_policy", {})
    rtype = _enum(recovery.get("recovery_type"), ("AUTO", "MANUAL"), f"{path}/recovery_policy/recovery_type",
                  "AUTO")
    action = _enum(recovery.get("action_on_recovery"), tuple(RECOVERY),
                   f"{path}/recovery_policy/action_on_recovery", "REBOOT_ONLY")
    for leaf_name in ("image", "flavor"):
        if leaf_name not in g:
            raise RpcError("missing-element", f"{path}: {leaf_name} is mandatory", type="protocol",
                           info={"bad-element": leaf_name})
    return {"name": g["name"], "image": g["image"], "flavor": g["flavor"], "count": count,
            "interfaces": interfaces, "kpi": kpi,
            "recovery": {"policy": "none" if rtype == "MANUAL" else RECOVERY[action]}}


def _mandatory(entry: dict[str, Any], names: tuple[str, ...], path: str) -> None:
    for name in names:
        if name not in entry:
            raise RpcError("missing-element", f"{path}: {name} is mandatory", type="protocol",
                           info={"bad-element": name})


def _cidr(s: dict[str, Any], path: str) -> str:
    _mandatory(s, ("address", "netmask"), path)
    mask = s["netmask"]
    try:
        net = ipaddress.ip_network(f"{s['address']}/{mask}", strict=True)
    except ValueError as e:
        raise RpcError("invalid-value", f"{path}: address {s['address']} netmask {mask}: {e}",
                       path=path) from None
    version = _enum(s.get("ipversion"), ("ipv4", "ipv6"), f"{path}/ipversion", f"ipv{net.version}")
    if version != f"ipv{net.version}":
        raise RpcError("invalid-value", f"{path}/ipversion: {version}, but {net} is IPv{net.version}",
                       path=f"{path}/ipversion")
    return str(net)


def resources(tree: dict[str, Any]) -> Resources:
    """The resources an <esc_datamodel> configuration (yangtree.from_xml) describes,
    each checked by the REST API's model; RpcError naming the path of the first fault."""
    out = empty()
    root = "/esc_datamodel"
    for t in tree.get("tenants", {}).get("tenant", []):
        tpath = f"{root}/tenants/tenant[name='{t['name']}']"
        out["tenant"][(None, t["name"])] = normalize(
            "tenant", {"name": t["name"], "description": t.get("description", "")}, tpath)
        for d in t.get("deployments", {}).get("deployment", []):
            dpath = f"{tpath}/deployments/deployment[name='{d['name']}']"
            body = {"name": d["name"], "description": d.get("description", ""),
                    "vm_state": _enum(d.get("vm_state"), ("running", "stopped"), f"{dpath}/vm_state",
                                      "running"),
                    "vm_groups": [_vm_group(g, dpath) for g in d.get("vm_group", [])]}
            out["deployment"][(t["name"], d["name"])] = normalize("deployment", body, dpath)
    for n in tree.get("networks", {}).get("network", []):
        npath = f"{root}/networks/network[name='{n['name']}']"
        out["network"][(None, n["name"])] = normalize(
            "network", {"name": n["name"], "description": n.get("description", ""),
                        "shared": _bool(n.get("shared"), f"{npath}/shared", False)}, npath)
        for s in n.get("subnet", []):
            spath = f"{npath}/subnet[name='{s['name']}']"
            body = {"name": s["name"], "cidr": _cidr(s, spath),
                    "dhcp": _bool(s.get("dhcp"), f"{spath}/dhcp", True)}
            if "gateway" in s:
                body["gateway_ip"] = s["gateway"]
            out["subnet"][(n["name"], s["name"])] = normalize("subnet", body, spath)
    for f in tree.get("flavors", {}).get("flavor", []):
        fpath = f"{root}/flavors/flavor[name='{f['name']}']"
        _mandatory(f, ("vcpus", "memory_mb"), fpath)
        out["flavor"][(None, f["name"])] = normalize("flavor", {
            "name": f["name"], "vcpus": _int(f["vcpus"], f"{fpath}/vcpus"),
            "memory_mb": _int(f["memory_mb"], f"{fpath}/memory_mb"),
            "root_disk_gb": _gb(f.get("root_disk_mb"), f"{fpath}/root_disk_mb"),
            "ephemeral_disk_gb": _gb(f.get("ephemeral_disk_mb"), f"{fpath}/ephemeral_disk_mb")}, fpath)
    for i in tree.get("images", {}).get("image", []):
        ipath = f"{root}/images/image[name='{i['name']}']"
        _mandatory(i, ("src",), ipath)
        body = {"name": i["name"], "src": i["src"]}
        body.update({k: i[k] for k in ("disk_format", "container_format") if k in i})
        out["image"][(None, i["name"])] = normalize("image", body, ipath)
    return out


# --- resources -> YANG ---------------------------------------------------------------------


def _yang_vm_group(g: dict[str, Any]) -> dict[str, Any]:
    kpi = g.get("kpi") or {}
    out: dict[str, Any] = {
        "name": g["name"], "image": g["image"], "flavor": g["flavor"],
        "scaling": {"min_active": g["count"], "max_active": g["count"]},
        "interfaces": {"interface": [{"nicid": n, "network": i["network"], "ip_address": i.get("ip")}
                                     for n, i in enumerate(g.get("interfaces", []))]},
    }
    if kpi.get("interval_s") is not None or kpi.get("down_after") is not None:
        out["kpi_data"] = {"kpi": [{"event_name": "VM_ALIVE",
                                    "metric_occurrences_false": kpi.get("down_after"),
                                    "metric_collector": {"type": "ICMPPing",
                                                         "poll_frequency": kpi.get("interval_s")}}]}
    policy = (g.get("recovery") or {}).get("policy", "reboot")
    out["recovery_policy"] = ({"recovery_type": "MANUAL"} if policy == "none" else
                              {"recovery_type": "AUTO",
                               "action_on_recovery": {v: k for k, v in RECOVERY.items()}[policy]})
    return out


def config_tree(res: Resources) -> dict[str, Any]:
    """The <esc_datamodel> configuration (yangtree nested dicts) of ``res``."""
    tenants = []
    for (_, name), t in res["tenant"].items():
        deployments = [{"name": d["name"], "description": d.get("description", ""),
                        "vm_state": d.get("vm_state", "running"),
                        "vm_group": [_yang_vm_group(g) for g in d.get("vm_groups", [])]}
                       for (parent, _), d in res["deployment"].items() if parent == name]
        tenants.append({"name": name, "description": t.get("description", ""),
                        "deployments": {"deployment": deployments}})
    networks = []
    for (_, name), n in res["network"].items():
        subnets = []
        for (parent, _), s in res["subnet"].items():
            if parent != name:
                continue
            net = ipaddress.ip_network(s["cidr"])
            subnets.append({"name": s["name"], "ipversion": f"ipv{net.version}",
                            "address": str(net.network_address),
                            "netmask": str(net.netmask) if net.version == 4 else str(net.prefixlen),
                            "gateway": s.get("gateway_ip"), "dhcp": s.get("dhcp", True)})
        networks.append({"name": name, "description": n.get("description", ""),
                         "shared": n.get("shared", False), "subnet": subnets})
    flavors = [{"name": f["name"], "vcpus": f["vcpus"], "memory_mb": f["memory_mb"],
                "root_disk_mb": f.get("root_disk_gb", 0) * 1024,
                "ephemeral_disk_mb": f.get("ephemeral_disk_gb", 0) * 1024} for f in res["flavor"].values()]
    images = [{k: i[k] for k in ("name", "src", "disk_format", "container_format")}
              for i in res["image"].values()]
    return {"tenants": {"tenant": tenants}, "networks": {"network": networks},
            "flavors": {"flavor": flavors}, "images": {"image": images}}


def opdata_tree(deployments: list[dict[str, Any]]) -> dict[str, Any]:
    """The state of ``deployments`` (as esc.services.store.list_all gives them), as opdata."""
    by_tenant: dict[str, list[dict[str, Any]]] = {}
    for d in deployments:
        groups: dict[str, list[dict[str, Any]]] = {}
        for vm in d.get("vms", []):
            groups.setdefault(vm["vm_group"], []).append({
                "name": vm["name"], "state": vm["status"],
                "interfaces": {"interface": [{"nicid": n, "network": i["network"], "ip_address": i.get("ip")}
                                             for n, i in enumerate(vm.get("interfaces") or [])]}})
        by_tenant.setdefault(d["tenant"], []).append({
            "deployment_name": d["name"], "deployment_id": d["id"], "transaction_id": d.get("transaction_id"),
            "state_machine": {"state": d["status"]},
            "vm_group": [{"name": g, "vm_instance": vms} for g, vms in groups.items()]})
    return {"tenants": {"tenant": [{"name": t, "deployments": ds} for t, ds in by_tenant.items()]}}
