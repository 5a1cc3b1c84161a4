"""Subtree filtering (RFC 6241 section 6) of get, get-config and notifications:
containment, selection and content-match nodes. A list entry that is selected keeps
its keys (yangtree), so a client can tell the entries apart."""

from __future__ import annotations

import copy

from lxml import etree

from esc.netconf.names import ESC_NS
from esc.netconf.yangtree import SCHEMA, Node, local


def apply(data: list[etree._Element], filt: etree._Element) -> list[etree._Element]:
    """What of the top-level elements ``data`` the <filter> ``filt`` selects (copies)."""
    out: list[etree._Element] = []
    specs = [f for f in filt if isinstance(f.tag, str)]
    for d in data:
        node = SCHEMA if d.tag == f"{{{ESC_NS}}}{SCHEMA.name}" else None
        for f in specs:
            if _same(d, f):
                got = _select(d, f, node)
                if got is not None:
                    out.append(got)
                break
    return out


def _same(d: etree._Element, f: etree._Element) -> bool:
    """A filter element names a data element by its local name, and by its namespace
    when it has one."""
    fq, dq = etree.QName(f), etree.QName(d)
    return fq.localname == dq.localname and (not fq.namespace or fq.namespace == dq.namespace)


def _is_content_match(f: etree._Element) -> bool:
    return not any(isinstance(c.tag, str) for c in f) and bool((f.text or "").strip())


def _select(d: etree._Element, f: etree._Element, node: Node | None) -> etree._Element | None:
    children = [c for c in f if isinstance(c.tag, str)]
    if not children:
        if (f.text or "").strip():  # a content match on its own: D must be that leaf
            return copy.deepcopy(d) if (d.text or "").strip() == (f.text or "").strip() else None
        return copy.deepcopy(d)  # a selection node: the whole subtree
    matches = [c for c in children if _is_content_match(c)]
    for m in matches:
        if not any(_same(dc, m) and (dc.text or "").strip() == (m.text or "").strip() for dc in d):
            return None
    others = [c for c in children if not _is_content_match(c)]
    if not others:
        return copy.deepcopy(d)
    out = etree.Element(d.tag, nsmap=d.nsmap)
    keys = node.keys if node is not None else ()
    picked = 0
    for dc in d:
        if not isinstance(dc.tag, str):
            continue
        name = local(dc)
        sub = node.child(name) if node is not None else None
        if name in keys or any(_same(dc, m) for m in matches):
            out.append(copy.deepcopy(dc))
            continue
        for o in others:
            if _same(dc, o):
                got = _select(dc, o, sub)
                if got is not None:
                    out.append(got)
                    picked += 1
                break
    return out if picked or matches else None
