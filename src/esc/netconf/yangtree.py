"""The shape of the esc YANG module (yang/esc.yang) as the server walks it: containers,
lists with their keys, and leaves; config true or false. Written out here rather than
read with pyang at start-up (a parked service imports little); tests/unit/test_netconf_yang.py
checks it against the module as pyang reads it.

``from_xml`` turns an <esc_datamodel> element into nested dicts (containers: dicts,
lists: lists of dicts, leaves: their text), refusing unknown or repeated elements with
the rpc-error RFC 6241 gives them; ``to_xml`` is the reverse, in schema order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lxml import etree

from esc.netconf.errors import RpcError, bad_element
from esc.netconf.names import ESC_NS


@dataclass(frozen=True)
class Node:
    name: str
    kind: str  # "container" | "list" | "leaf"
    children: tuple[Node, ...] = ()
    keys: tuple[str, ...] = ()
    config: bool = True

    def child(self, name: str) -> Node | None:
        return next((c for c in self.children if c.name == name), None)


def leaf(name: str) -> Node:
    return Node(name, "leaf")


def leaves(*names: str) -> tuple[Node, ...]:
    return tuple(leaf(n) for n in names)


def container(name: str, *children: Node, config: bool = True) -> Node:
    return Node(name, "container", tuple(children), config=config)


def list_(name: str, keys: tuple[str, ...], *children: Node) -> Node:
    return Node(name, "list", tuple(children), keys)


INTERFACE = (leaf("nicid"), leaf("network"), leaf("ip_address"))

VM_GROUP = list_(
    "vm_group", ("name",),
    *leaves("name", "image", "flavor"),
    container("scaling", *leaves("min_active", "max_active")),
    container("interfaces", list_("interface", ("nicid",), *INTERFACE)),
    container("kpi_data", list_("kpi", ("event_name",), *leaves("event_name", "metric_occurrences_false"),
                                container("metric_collector", *leaves("type", "poll_frequency")))),
    container("recovery_policy", *leaves("recovery_type", "action_on_recovery")),
)

OPDATA = container(
    "opdata",
    container("tenants", list_(
        "tenant", ("name",), leaf("name"),
        list_("deployments", ("deployment_name",),
              *leaves("deployment_name", "deployment_id", "transaction_id"),
              container("state_machine", leaf("state")),
              list_("vm_group", ("name",), leaf("name"),
                    list_("vm_instance", ("name",), *leaves("name", "state"),
                          container("interfaces", list_("interface", ("nicid",), *INTERFACE))))))),
    config=False,
)

SCHEMA = container(
    "esc_datamodel",
    container("tenants", list_(
        "tenant", ("name",), *leaves("name", "description"),
        container("deployments", list_("deployment", ("name",), *leaves("name", "description", "vm_state"),
                                       VM_GROUP)))),
    container("networks", list_(
        "network", ("name",), *leaves("name", "description", "shared"),
        list_("subnet", ("name",), *leaves("name", "ipversion", "address", "netmask", "gateway", "dhcp")))),
    container("flavors", list_("flavor", ("name",),
                               *leaves("name", "vcpus", "memory_mb", "root_disk_mb", "ephemeral_disk_mb"))),
    container("images", list_("image", ("name",), *leaves("name", "src", "disk_format", "container_format"))),
    OPDATA,
)


def local(el: etree._Element) -> str:
    return etree.QName(el).localname


def _ns(el: etree._Element) -> str | None:
    return etree.QName(el).namespace


def from_xml(el: etree._Element, node: Node = SCHEMA, path: str = "", config_only: bool = True) -> Any:
    """The nested dicts of ``el`` (an instance of ``node``); RpcError on anything the
    module does not have, a leaf given twice, a list entry without its keys, or (with
    ``config_only``) state data."""
    path = f"{path}/{node.name}"
    if node.kind == "leaf":
        if len(el):
            raise bad_element("bad-element", node.name, f"{path} is a leaf: it has no children",
                              type="application")
        return (el.text or "").strip()
    out: dict[str, Any] = {}
    for child in el:
        if not isinstance(child.tag, str):
            continue  # comments, processing instructions
        name, ns = local(child), _ns(child)
        sub = node.child(name)
        if ns != ESC_NS or sub is None:
            raise bad_element("unknown-element", name, f"{path} has no element {name}"
                              + ("" if ns == ESC_NS else f" in namespace {ns}"), type="application")
        if config_only and not sub.config:
            raise bad_element("invalid-value", name, f"{path}/{name} is state data, not configuration",
                              type="application")
        value = from_xml(child, sub, path, config_only)
        if sub.kind == "list":
            missing = [k for k in sub.keys if k not in value]
            if missing:
                raise bad_element("missing-element", missing[0],
                                  f"{path}/{name}: an entry without its key {missing[0]}")
            out.setdefault(name, []).append(value)
        elif name in out:
            raise bad_element("bad-element", name, f"{path}/{name} given twice", type="application")
        else:
            out[name] = value
    for name, entries in out.items():
        sub = node.child(name)
        if sub is not None and sub.kind == "list":
            seen: set[tuple[str, ...]] = set()
            for e in entries:
                key = tuple(e[k] for k in sub.keys)
                if key in seen:
                    raise RpcError("bad-element", f"{path}/{name}[{', '.join(key)}] given twice",
                                   info={"bad-element": name})
                seen.add(key)
    return out


def to_xml(value: Any, node: Node = SCHEMA, parent: etree._Element | None = None) -> etree._Element | None:
    """``value`` (nested dicts, as from_xml makes them; a leaf's value is its text) as
    XML under ``parent``; the element (the first, for a list)."""
    tag = f"{{{ESC_NS}}}{node.name}"
    if node.kind == "list":
        first = None
        for entry in value:
            el = _element(parent, tag)
            _fill(el, entry, node)
            first = first if first is not None else el
        return first
    el = _element(parent, tag)
    if node.kind == "leaf":
        el.text = value if isinstance(value, str) else _text(value)
    else:
        _fill(el, value, node)
    return el


def _element(parent: etree._Element | None, tag: str) -> etree._Element:
    if parent is None:
        return etree.Element(tag, nsmap={None: ESC_NS})
    return etree.SubElement(parent, tag)


def _fill(el: etree._Element, value: dict[str, Any], node: Node) -> None:
    for sub in node.children:  # schema order: keys first, as RFC 7950 wants for lists
        if sub.name in value and value[sub.name] is not None:
            to_xml(value[sub.name], sub, el)


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
