"""edit-config's operations (RFC 6241 section 7.2) on the configuration as XML: merge,
replace, create, delete, remove, and none, with a default operation, element by
element as the schema (yangtree) says: list entries are matched by their keys, leaves
and containers by name. The result is a new tree; nothing is written here."""

from __future__ import annotations

import copy

from lxml import etree

from esc.netconf.errors import RpcError, bad_element
from esc.netconf.names import ESC_NS, NC_NS
from esc.netconf.yangtree import SCHEMA, Node, local

OPERATION = f"{{{NC_NS}}}operation"
OPERATIONS = ("merge", "replace", "create", "delete", "remove", "none")


def apply(current: etree._Element, edit: etree._Element, default_operation: str) -> etree._Element:
    """``current`` (an <esc_datamodel>) with ``edit`` (another) applied; ``current`` is
    left as it was."""
    if default_operation not in ("merge", "replace", "none"):
        raise bad_element("invalid-value", "default-operation",
                          f"default-operation {default_operation!r}: merge, replace or none")
    result = copy.deepcopy(current)
    if default_operation == "replace" and edit.get(OPERATION) is None:
        # the whole configuration is the one given (RFC 6241 7.2, default-operation replace)
        for child in list(result):
            result.remove(child)
        default_operation = "merge"
    holder = etree.Element("holder")
    holder.append(result)
    _edit(holder, edit, SCHEMA, default_operation, "")
    found = holder.find(f"{{{ESC_NS}}}{SCHEMA.name}")
    return found if found is not None else etree.Element(f"{{{ESC_NS}}}{SCHEMA.name}", nsmap={None: ESC_NS})


def _operation(el: etree._Element, inherited: str, path: str) -> str:
    op = el.get(OPERATION)
    if op is None:
        return inherited
    if op not in OPERATIONS:
        raise RpcError("bad-attribute", f"{path}: operation {op!r} is not one of {', '.join(OPERATIONS)}",
                       type="protocol", info={"bad-attribute": "operation", "bad-element": local(el)})
    return op


def _match(parent: etree._Element, edit: etree._Element, node: Node) -> etree._Element | None:
    for child in parent:
        if child.tag != edit.tag:
            continue
        if node.kind != "list":
            return child
        if all(_key_text(child, k) == _key_text(edit, k) for k in node.keys):
            return child
    return None


def _key_text(el: etree._Element, key: str) -> str | None:
    found = el.find(f"{{{ESC_NS}}}{key}")
    return (found.text or "").strip() if found is not None else None


def _instance(node: Node, edit: etree._Element, path: str) -> str:
    if node.kind != "list":
        return f"{path}/{node.name}"
    keys = "".join(f"[{k}='{_key_text(edit, k)}']" for k in node.keys)
    return f"{path}/{node.name}{keys}"


def _clean(el: etree._Element) -> etree._Element:
    """A copy with no operation attributes (the whole subtree is what was asked)."""
    out = copy.deepcopy(el)
    for e in out.iter():
        if isinstance(e.tag, str) and OPERATION in e.attrib:
            del e.attrib[OPERATION]
    return out


def _skeleton(edit: etree._Element, node: Node) -> etree._Element:
    """The element itself with only its keys (a list entry) or nothing (a container)."""
    el = etree.Element(edit.tag)
    for k in node.keys:
        key = edit.find(f"{{{ESC_NS}}}{k}")
        if key is not None:
            etree.SubElement(el, key.tag).text = key.text
    return el


def _edit(parent: etree._Element, edit: etree._Element, node: Node, inherited: str, path: str) -> None:
    if etree.QName(edit).namespace != ESC_NS or local(edit) != node.name:
        raise bad_element("unknown-element", local(edit), f"{path} has no element {local(edit)}",
                          type="application")
    if not node.config:
        raise bad_element("invalid-value", node.name, f"{path}/{node.name} is state data, not configuration",
                          type="application")
    if node.kind == "list":
        for k in node.keys:
            if _key_text(edit, k) is None:
                raise bad_element("missing-element", k, f"{path}/{node.name}: an entry without its key {k}")
    here = _instance(node, edit, path)
    op = _operation(edit, inherited, here)
    existing = _match(parent, edit, node)
    if op == "create":
        if existing is not None:
            raise RpcError("data-exists", f"{here} exists already", path=here)
        parent.append(_clean(edit))
        return
    if op in ("delete", "remove"):
        if existing is None:
            if op == "delete":
                raise RpcError("data-missing", f"{here} does not exist", path=here)
            return
        if node.kind == "list" or node.name not in _keys_of_parent(parent):
            parent.remove(existing)
            return
        raise bad_element("invalid-value", node.name, f"{here}: a list entry's key cannot be deleted",
                          type="application")
    if op == "replace":
        if existing is not None:
            existing.addprevious(_clean(edit))
            parent.remove(existing)
        else:
            parent.append(_clean(edit))
        return
    # merge, or none (the element is only a path to the operations below it)
    if node.kind == "leaf":
        if op == "merge":
            if existing is None:
                parent.append(_clean(edit))
            else:
                existing.text = edit.text
        elif existing is None:
            raise RpcError("data-missing", f"{here} does not exist", path=here)
        return
    made = existing is None
    target = existing if existing is not None else _skeleton(edit, node)
    if made:
        parent.append(target)
    for child in edit:
        if not isinstance(child.tag, str):
            continue
        sub = node.child(local(child)) if etree.QName(child).namespace == ESC_NS else None
        if sub is None:
            raise bad_element("unknown-element", local(child), f"{here} has no element {local(child)}",
                              type="application")
        if sub.name in node.keys:
            continue  # the entry's identity, matched already
        _edit(target, child, sub, op, here)
    if made and op == "none" and len(target) == len(node.keys):
        parent.remove(target)  # only a path, and nothing was made below it


def _keys_of_parent(parent: etree._Element) -> tuple[str, ...]:
    """The keys of the list entry ``parent`` is, if any (by walking the schema)."""
    names: list[str] = []
    el: etree._Element | None = parent
    while el is not None and isinstance(el.tag, str) and etree.QName(el).namespace == ESC_NS:
        names.append(local(el))
        el = el.getparent()
    node: Node | None = None
    for name in reversed(names):
        node = SCHEMA if node is None else node.child(name)
        if node is None:
            return ()
    return node.keys if node is not None else ()
