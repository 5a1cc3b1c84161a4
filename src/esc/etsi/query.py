"""The query parameters of SOL013 (clause 5.2 and 5.4.2) for the list resources:
attribute-based ``filter``, attribute selectors (``all_fields``, ``fields``,
``exclude_fields``, ``exclude_default``) and paging (``nextpage_opaque_marker`` with a
``Link: <...>; rel="next"`` header). Pure functions on the representations."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

OPERATORS = ("eq", "neq", "in", "nin", "gt", "gte", "lt", "lte", "cont", "ncont")


class QueryError(ValueError):
    """A malformed parameter: 400 with this detail."""


def _split(text: str, sep: str) -> list[str]:
    """Split on ``sep`` outside single quotes ('' is a quote inside a quoted value)."""
    out, cur, quoted, i = [], "", False, 0
    while i < len(text):
        ch = text[i]
        if ch == "'":
            if quoted and text[i + 1:i + 2] == "'":
                cur += "'"
                i += 2
                continue
            quoted = not quoted
        elif ch == sep and not quoted:
            out.append(cur)
            cur = ""
            i += 1
            continue
        else:
            cur += ch
        i += 1
    if quoted:
        raise QueryError("filter: an unterminated quote")
    out.append(cur)
    return out


def parse_filter(text: str) -> list[tuple[str, list[str], list[str]]]:
    """``(op,attr/path,value[,value]);(...)`` -> [(op, path, values)]."""
    if len(text) > 4096:
        raise QueryError("filter: too long")
    out = []
    for expr in _split(text, ";"):
        m = re.fullmatch(r"\((.*)\)", expr.strip(), re.S)
        if not m:
            raise QueryError(f"filter: {expr!r} is not (op,attribute,value...)")
        parts = _split(m.group(1), ",")
        if len(parts) < 3 or parts[0] not in OPERATORS:
            raise QueryError(f"filter: {expr!r} needs an operator of {', '.join(OPERATORS)}, "
                             "an attribute and a value")
        if parts[0] not in ("in", "nin", "cont", "ncont") and len(parts) != 3:
            raise QueryError(f"filter: {parts[0]} takes one value")
        path = [p for p in parts[1].split("/") if p]
        if not path:
            raise QueryError(f"filter: {expr!r} names no attribute")
        out.append((parts[0], path, parts[2:]))
    return out


def _values(obj: Any, path: list[str]) -> list[Any]:
    """Every value at ``path`` (arrays on the way are looked into)."""
    if not path:
        return obj if isinstance(obj, list) else [obj]
    if isinstance(obj, list):
        return [v for item in obj for v in _values(item, path)]
    if isinstance(obj, Mapping) and path[0] in obj:
        return _values(obj[path[0]], path[1:])
    return []


def _compare(op: str, have: Any, want: list[str]) -> bool:
    text = "true" if have is True else "false" if have is False else str(have)
    if op == "eq":
        return text == want[0]
    if op == "neq":
        return text != want[0]
    if op == "in":
        return text in want
    if op == "nin":
        return text not in want
    if op in ("cont", "ncont"):
        found = any(w in text for w in want)
        return found if op == "cont" else not found
    try:
        a, b = float(text), float(want[0])
    except ValueError:
        a, b = text, want[0]  # type: ignore[assignment]
    return {"gt": a > b, "gte": a >= b, "lt": a < b, "lte": a <= b}[op]


def matches(item: Mapping[str, Any], exprs: list[tuple[str, list[str], list[str]]]) -> bool:
    for op, path, want in exprs:
        have = _values(item, path)
        if op in ("neq", "nin", "ncont"):
            if not all(_compare(op, h, want) for h in have):
                return False
        elif not any(_compare(op, h, want) for h in have):
            return False
    return True


def select(item: dict[str, Any], params: Mapping[str, str], defaults: Iterable[str]) -> dict[str, Any]:
    """Apply the attribute selectors; ``defaults``: what ``exclude_default`` (and
    ``fields``, which adds to it) leaves out. With no selector, everything: version 1.1.1 of
    the API has none, and its clients expect whole representations."""
    given = [k for k in ("all_fields", "fields", "exclude_fields", "exclude_default") if k in params]
    if len(given) > 1 and not (set(given) == {"fields", "exclude_default"}):
        raise QueryError(f"{' and '.join(given)} cannot be combined")
    if "all_fields" in params:
        return item
    if "exclude_fields" in params:
        return _drop(item, _paths(params["exclude_fields"]))
    if "exclude_default" not in params and "fields" not in params:
        return item  # SOL003 v2.4.1 (API 1.1.1) has no selectors: a plain GET lists everything
    out = _drop(item, [[d] for d in defaults])
    if "fields" in params:
        for path in _paths(params["fields"]):
            _copy(item, out, path)
    return out


def _paths(text: str) -> list[list[str]]:
    paths = [[p for p in f.split("/") if p] for f in text.split(",") if f.strip()]
    if not paths:
        raise QueryError("an attribute list is empty")
    return paths


def _drop(item: dict[str, Any], paths: list[list[str]]) -> dict[str, Any]:
    out = dict(item)
    for path in paths:
        if len(path) == 1:
            out.pop(path[0], None)
        elif isinstance(out.get(path[0]), dict):
            out[path[0]] = _drop(out[path[0]], [path[1:]])
    return out


def _copy(src: dict[str, Any], dst: dict[str, Any], path: list[str]) -> None:
    if path[0] not in src:
        return
    if len(path) == 1 or not isinstance(src[path[0]], dict):
        dst[path[0]] = src[path[0]]
    else:
        dst.setdefault(path[0], {})
        _copy(src[path[0]], dst[path[0]], path[1:])


def page(items: list[dict[str, Any]], marker: str | None, size: int
         ) -> tuple[list[dict[str, Any]], str | None]:
    """(this page, the marker of the next or None). The marker is the last id shown: a
    page stays right while items are added or removed."""
    start = 0
    if marker is not None:
        ids = [i["id"] for i in items]
        if marker not in ids:
            raise QueryError("nextpage_opaque_marker: unknown or expired")
        start = ids.index(marker) + 1
    chunk = items[start:start + size]
    more = start + size < len(items)
    return chunk, (chunk[-1]["id"] if more and chunk else None)
