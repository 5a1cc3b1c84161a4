"""XPath filtering (RFC 6241 section 8.9, the :xpath capability) of get and get-config:
the nodes an XPath 1.0 expression selects (lxml), each with its ancestors and, for a list
entry, its keys. Names without a prefix match in any namespace, as netconf-console's
``-x /esc_datamodel/tenants`` expects."""

from __future__ import annotations

import copy
import re

from lxml import etree

from esc.netconf.errors import RpcError
from esc.netconf.names import ESC_NS
from esc.netconf.yangtree import SCHEMA, Node, local

MAX_SELECT = 4096


def apply(data: list[etree._Element], select: str, nsmap: dict[str | None, str]) -> list[etree._Element]:
    """The top-level elements of the answer: the selected nodes of ``data`` within
    their ancestors."""
    if not select or len(select) > MAX_SELECT:
        raise RpcError("invalid-value", "an xpath filter needs a select of at most "
                                        f"{MAX_SELECT} characters", info={"bad-attribute": "select"})
    holder = etree.Element("data")
    for el in data:
        holder.append(copy.deepcopy(el))
    namespaces = {p: u for p, u in nsmap.items() if p}
    # "/" is the datastore's root, whose children are the top-level elements: here that
    # is <data>, so a location path from the root becomes one from it
    select = re.sub(r"(^|\|)\s*/", r"\1./", select.strip())
    found = _evaluate(holder, select, namespaces)
    if not found and not re.search(r"[A-Za-z_][\w.-]*:[A-Za-z_*]", select.replace("::", "")):
        found = _unqualified(holder, select)
    out: dict[str, etree._Element] = {}  # a data element's path -> its copy in the answer
    tops: list[etree._Element] = []
    for el in found:
        if isinstance(el, etree._Element) and el is not holder:
            _place(el, holder, out, tops)
    return tops


def _evaluate(root: etree._Element, select: str, namespaces: dict[str, str]) -> list[etree._Element]:
    try:
        result = root.xpath(select, namespaces=namespaces)
    except (etree.XPathError, TypeError) as e:
        raise RpcError("invalid-value", f"xpath {select!r}: {e}", info={"bad-attribute": "select"}) from None
    if not isinstance(result, list):
        return []  # a number, a string or a boolean selects no node
    nodes = [r if isinstance(r, etree._Element) else getattr(r, "getparent", lambda: None)() for r in result]
    return [n for n in nodes if n is not None]  # a text or an attribute: its element


def _unqualified(holder: etree._Element, select: str) -> list[etree._Element]:
    """``select`` on a copy without namespaces, its nodes found again by position."""
    bare = copy.deepcopy(holder)
    for el in bare.iter():
        if isinstance(el.tag, str):
            el.tag = etree.QName(el).localname
    etree.cleanup_namespaces(bare)
    out = []
    for el in _evaluate(bare, select, {}):
        if not isinstance(el, etree._Element):
            continue
        chain = []
        while el is not None and el is not bare:
            parent = el.getparent()
            if parent is None:
                break
            chain.append(parent.index(el))
            el = parent
        target = holder
        for i in reversed(chain):
            target = target[i]
        out.append(target)
    return out


def _node(el: etree._Element) -> Node | None:
    """The schema node of an element of the esc module (None elsewhere)."""
    names = []
    e: etree._Element | None = el
    while e is not None and e.tag != "data":
        if etree.QName(e).namespace != ESC_NS:
            return None
        names.append(local(e))
        e = e.getparent()
    node: Node | None = None
    for name in reversed(names):
        node = (SCHEMA if name == SCHEMA.name else None) if node is None else node.child(name)
        if node is None:
            return None
    return node


def _place(el: etree._Element, holder: etree._Element, out: dict[str, etree._Element],
           tops: list[etree._Element]) -> None:
    """``el`` copied into the answer under copies of its ancestors (made once each, with
    a list entry's keys), keyed by their paths in ``holder``."""
    tree = holder.getroottree()
    chain = []
    e: etree._Element | None = el
    while e is not None and e is not holder:
        chain.append(e)
        e = e.getparent()
    parent_copy: etree._Element | None = None
    for depth, src in enumerate(reversed(chain)):
        last = depth == len(chain) - 1
        path = tree.getpath(src)
        made = out.get(path)
        if made is None:
            made = copy.deepcopy(src) if last else etree.Element(src.tag, nsmap=src.nsmap)
            if not last:
                node = _node(src)
                for k in node.keys if node is not None else ():
                    key = src.find(f"{{{ESC_NS}}}{k}")
                    if key is not None:
                        made.append(copy.deepcopy(key))
                        out[tree.getpath(key)] = made[-1]
            out[path] = made
            if parent_copy is None:
                tops.append(made)
            else:
                parent_copy.append(made)
        elif last:  # selected itself after being only an ancestor: whole
            for child in list(made):
                made.remove(child)
            made.text = src.text
            for child in src:
                made.append(copy.deepcopy(child))
        parent_copy = made
