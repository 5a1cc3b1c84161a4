"""The rule table drawn and printed: Graphviz ``digraph`` text, JSON, and a text table.

All three are generated from :data:`esc.roles.rules.TABLE`, so they cannot disagree
with what :func:`esc.roles.decide` does. ``escadm ha rules`` prints them
(``--dot``, ``--json``); ``docs/rules.dot`` is the committed picture (a unit test fails
when it differs from :func:`digraph`).

JSON: ``{"rows": [...], "predicates": {name: why}}``; each row has ``order``, ``kind``
(``rename``, ``rule``, ``override``), ``name``, ``from`` (states), ``when`` (guard
names, ``not <name>`` for a negation), ``to`` (``SAME``: keeps its role), ``desired``
(a constant's or a function's name), ``job``, ``consumed``, ``reason`` (a format string
over ``obs``, or the template of ``reason_fn``). :func:`table_from_json` reads it back.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Callable, Iterable
from typing import Any

from esc.roles import observation, rules
from esc.roles.observation import Desired, Job, Role
from esc.roles.predicates import Guard, Not, guard_name
from esc.roles.rules import (
    ANY,
    JOINING,
    OVERRIDES,
    RENAMES,
    RULES,
    SAME,
    TABLE,
    Override,
    Phase,
    Rename,
    Row,
    Rule,
    State,
)

STATE_ORDER: tuple[State, ...] = (*Role, *Phase)
SHORT: dict[State, str] = {Role.SWITCHING_TO_ACTIVE: "STA", Role.SWITCHING_TO_STANDBY: "STS"}
DESIRED_CONSTANTS = ("OFF", "FOLLOW", "SERVE_ALONE", "GATED", "ASK_FOR_LEASE", "LEASE_WITH_PEER")
ROLE_SET_NAMES: dict[str, frozenset[State]] = {
    "any": ANY,
    "joining": JOINING,
    "joining, STANDBY": rules.JOINING_OR_STANDBY,
    "any but ACTIVE": rules.NOT_ACTIVE,
}
FIRST_MATCH = ("Renames rewrite the role the rules see; then the first rule whose 'from' holds "
               "the role and whose guards ('when') all hold decides; then every matching override "
               "amends the decision.")


# ------------------------------------------------------------------ names


def _first_line(doc: str | None) -> str:
    return (doc or "").strip().splitlines()[0].strip() if doc else ""


def _desired_name(d: Desired | Callable[..., Desired]) -> str:
    if isinstance(d, Desired):
        for name in DESIRED_CONSTANTS:
            if getattr(observation, name) == d:
                return name
        raise ValueError(f"unnamed desired state {d}: add it to observation.py")
    return d.__name__


def _states(states: Iterable[State]) -> list[str]:
    s = set(states)
    return [str(x) for x in STATE_ORDER if x in s]


def _reason(reason: str | Callable[..., str]) -> tuple[str, str | None]:
    if isinstance(reason, str):
        return reason, None
    return (reason.__doc__ or "").strip(), reason.__name__


def guards_used() -> dict[str, Callable[..., bool]]:
    """Every predicate the table names (negations resolved), by name."""
    out: dict[str, Callable[..., bool]] = {}
    for row in TABLE:
        guards: tuple[Any, ...] = row.when
        if isinstance(row, Override):
            guards = (*row.decided, *row.when)
        for g in guards:
            base = g.pred if isinstance(g, Not) else g
            out[base.__name__] = base
    return out


# ------------------------------------------------------------------ JSON


def row_dict(order: int, row: Row) -> dict[str, Any]:
    """One row of the table as plain data."""
    if isinstance(row, Rename):
        return {"order": order, "kind": "rename", "name": row.name, "from": _states(row.from_roles),
                "when": [guard_name(g) for g in row.when], "to": str(row.to), "desired": None,
                "job": None, "consumed": False, "reason": row.why, "reason_fn": None}
    if isinstance(row, Rule):
        reason, fn = _reason(row.reason)
        return {"order": order, "kind": "rule", "name": row.name, "from": _states(row.from_roles),
                "when": [guard_name(g) for g in row.when], "to": str(row.to),
                "desired": _desired_name(row.desired), "job": row.job.value if row.job else None,
                "consumed": row.consumed, "reason": reason, "reason_fn": fn}
    return {"order": order, "kind": "override", "name": row.name, "from": _states(row.roles),
            "when": [d.__name__ for d in row.decided] + [guard_name(g) for g in row.when], "to": SAME,
            "desired": row.then.__name__, "job": None, "consumed": False, "reason": row.reason,
            "reason_fn": None}


def table_json() -> dict[str, Any]:
    """The whole table (and what each predicate means) as plain data."""
    return {
        "semantics": FIRST_MATCH,
        "rows": [row_dict(i, row) for i, row in enumerate(TABLE, 1)],
        "predicates": {name: _first_line(fn.__doc__) for name, fn in sorted(guards_used().items())},
    }


def to_json() -> str:
    return json.dumps(table_json(), indent=2) + "\n"


def _state(name: str) -> State:
    return Phase(name) if name in Phase.__members__ else Role(name)


def _named(name: str, allowed: Iterable[str], *modules: Any) -> Any:
    if name not in set(allowed):
        raise ValueError(f"unknown name {name!r}")
    for m in modules:
        if hasattr(m, name):
            return getattr(m, name)
    raise ValueError(f"unknown name {name!r}")


def table_from_json(data: dict[str, Any]) -> tuple[Row, ...]:
    """The rows back from :func:`table_json`'s data (names resolved to the functions)."""
    known = guards_used()
    outcomes = {_desired_name(r.desired) for r in RULES} | {o.then.__name__ for o in OVERRIDES}
    reason_fns = {fn for r in RULES if (fn := _reason(r.reason)[1])}

    def guard(name: str) -> Guard:
        if name.startswith("not "):
            return Not(guard(name[4:]))
        return known[name]

    out: list[Row] = []
    for d in data["rows"]:
        frm = frozenset(_state(s) for s in d["from"])
        if d["kind"] == "rename":
            out.append(Rename(d["name"], frm, tuple(guard(g) for g in d["when"]), _state(d["to"]),
                              d["reason"]))
        elif d["kind"] == "rule":
            desired = _named(d["desired"], outcomes, observation, rules)
            reason = _named(d["reason_fn"], reason_fns, rules) if d["reason_fn"] else d["reason"]
            to = SAME if d["to"] == SAME else Role(d["to"])
            out.append(Rule(d["name"], frm, tuple(guard(g) for g in d["when"]), to, desired, reason,
                            job=Job(d["job"]) if d["job"] else None, consumed=d["consumed"]))
        else:
            decided = tuple(g for g in d["when"] if g in {x.__name__ for o in OVERRIDES for x in o.decided})
            when = tuple(guard(g) for g in d["when"] if g not in decided)
            out.append(Override(d["name"], frozenset(Role(s) for s in d["from"]),
                                tuple(_named(g, decided, rules) for g in decided), when,
                                _named(d["desired"], outcomes, rules), d["reason"]))
    return tuple(out)


# ------------------------------------------------------------------ text


def _from_label(states: Iterable[str]) -> str:
    s = frozenset(_state(x) for x in states)
    for label, members in ROLE_SET_NAMES.items():
        if s == members:
            return label
    return " ".join(SHORT.get(x, str(x)) for x in STATE_ORDER if x in s)


def _to_label(to: str) -> str:
    return SAME if to == SAME else SHORT.get(_state(to), to)


LEGEND = ("STA = SWITCHING_TO_ACTIVE, STS = SWITCHING_TO_STANDBY; joining = STA STS STOPPED "
          "STANDALONE MAINTENANCE; any = every role (FAULT is renamed first); PROMOTED = any role "
          "but ACTIVE whose promotion just finished; SAME = keeps its role. A reason's {field} is "
          "the observation's.")
KIND_TITLE = {"rename": "renames: every match applies", "rule": "rules: the first match decides",
              "override": "overrides: amend the decision"}
# (header, width or None for the column that takes the rest)
COLUMNS: tuple[tuple[str, int | None], ...] = (
    ("#", 2), ("rule / reason", None), ("from", 9), ("when", 22), ("to / desired", 15), ("job", 7))


def cells(d: dict[str, Any]) -> tuple[str, str, str, str, str, str]:
    """A row of :func:`table_json` as the text table's cells (lines split by newlines)."""
    reason = d["reason"].replace("{obs.", "{")
    to = _to_label(d["to"]) + (f"\n{d['desired']}" if d["desired"] else "")
    return (str(d["order"]), f"{d['name']}\n{reason}", _from_label(d["from"]),
            "\n".join(d["when"]) or "-", to, d["job"] or "")


def _widths(width: int, gap: int) -> list[int]:
    fixed = sum(w for _, w in COLUMNS if w)
    rest = max(24, width - fixed - gap * (len(COLUMNS) - 1))
    return [w or rest for _, w in COLUMNS]


def text_table(width: int = 100) -> str:
    """The table as plain text, one row per rule, wrapped to fit ``width`` columns."""
    gap = 2
    widths = _widths(width, gap)
    out = [textwrap.fill(FIRST_MATCH, width), ""]

    def line(parts: Iterable[str]) -> str:
        cols = [p.rjust(w) if i == 0 else p.ljust(w) for i, (p, w) in enumerate(zip(parts, widths,
                                                                                  strict=True))]
        return (" " * gap).join(cols).rstrip()

    out.append(line(h for h, _ in COLUMNS))
    kind = ""
    for d in table_json()["rows"]:
        if d["kind"] != kind:
            kind = d["kind"]
            title = f"-- {KIND_TITLE[kind]} "
            out.append(title + "-" * (width - len(title)))
        wrapped = []
        for cell, w in zip(cells(d), widths, strict=True):
            lines: list[str] = []
            for i, part in enumerate(cell.split("\n")):
                indent = "  " if (i > 0 and w == widths[1]) else ""  # the reason, under the name
                lines += textwrap.wrap(part, w, initial_indent=indent, subsequent_indent=indent,
                                       break_on_hyphens=False) or [""]
            wrapped.append(lines)
        for i in range(max(len(c) for c in wrapped)):
            out.append(line(c[i] if i < len(c) else "" for c in wrapped))
    out += ["", textwrap.fill(LEGEND, width), "", *glossary(width)]
    return "\n".join(out) + "\n"


def glossary(width: int = 100) -> list[str]:
    """The guards and why each matters (their docstrings' first lines), one per entry."""
    preds = table_json()["predicates"]
    w = max(len(name) for name in preds) + 2
    out = ["Guards (esc.roles.predicates; `not x` is the negation):"]
    for name, why in preds.items():
        out += textwrap.wrap(why.replace("``", ""), width, initial_indent=f"  {name.ljust(w)}",
                             subsequent_indent=" " * (w + 2))
    return out


def rich_table(width: int = 100) -> Any:
    """The same table as a ``rich`` renderable (None when rich is not installed)."""
    try:
        from rich import box
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text
    except ImportError:  # pragma: no cover - rich is a dependency, but optional here
        return None
    widths = _widths(width, 3)
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1),
                  width=width, expand=True)
    for (header, _), w in zip(COLUMNS, widths, strict=True):
        table.add_column(header, width=w, no_wrap=False, overflow="fold",
                         justify="right" if header == "#" else "left",
                         ratio=1 if header.startswith("rule") else None)
    kind = ""
    for d in table_json()["rows"]:
        if d["kind"] != kind:
            if kind:
                table.add_section()
            kind = d["kind"]
            table.add_row("", Text(KIND_TITLE[kind], style="italic"), end_section=True)
        order, rule, frm, when, to, job = cells(d)
        name, _, reason = rule.partition("\n")
        first = Text(name, style="bold")
        first.append("\n")
        first.append(Text(reason, style="dim"))
        table.add_row(order, first, frm, Text(when, style="cyan"), to,
                      Text(job, style="magenta"))
    return Group(Text(FIRST_MATCH), table, Text(LEGEND), Text(""), Text("\n".join(glossary(width))))


# ------------------------------------------------------------------ Graphviz


def _dot_id(state: State | str) -> str:
    return f'"{state}"'


# Role sets drawn as one source node: (node id, attributes)
SET_NODES: dict[frozenset[State], tuple[str, str]] = {
    ANY: ("any role", 'shape=point, width=0.12, xlabel="any role"'),
    rules.NOT_ACTIVE: ("any role but ACTIVE", 'shape=point, width=0.12, xlabel="any role but ACTIVE"'),
    JOINING: ("joining", 'shape=box, style="rounded,dotted", fontsize=9, '
                         'label="joining:\\nSWITCHING_TO_ACTIVE, SWITCHING_TO_STANDBY,\\n'
                         'STOPPED, STANDALONE, MAINTENANCE"'),
}


def _sources(states: frozenset[State]) -> list[str]:
    """The nodes a row's edges start from: a set's own node, or one per state."""
    if states in SET_NODES:
        return [SET_NODES[states][0]]
    if states >= JOINING:
        return [SET_NODES[JOINING][0], *_states(states - JOINING)]
    return _states(states)


def digraph() -> str:
    """The table as a Graphviz digraph: nodes are roles, edges rules labelled by name.

    Rows between the same two nodes share one edge whose label lists them in table
    order. A row from every role starts at the point ``any role``; rows from the joining
    roles start at the dotted ``joining`` box (a ``SAME`` row is a loop on it: each keeps
    its role); renames are dashed; the overrides, which keep the role, are in a note."""
    edges: dict[tuple[str, str, str], list[str]] = {}

    def add(src: str, dst: str, style: str, name: str) -> None:
        edges.setdefault((src, dst, style), []).append(name)

    for row in RENAMES:
        for src in _sources(row.from_roles):
            add(src, str(row.to), "dashed", row.name)
    for rule in RULES:
        for src in _sources(rule.from_roles):
            add(src, src if rule.to == SAME else str(rule.to), "solid", rule.name)
    lines = [
        "// Generated by esc.roles.dot.digraph() from esc.roles.rules.TABLE: do not edit.",
        "// Regenerate: make rules-docs (escadm ha rules --dot > docs/rules.dot)",
        "digraph roles {",
        '  graph [rankdir=LR, fontname="Helvetica", fontsize=11, nodesep=0.35, ranksep=1.0];',
        '  node [shape=box, style="rounded", fontname="Helvetica", fontsize=11];',
        '  edge [fontname="Helvetica", fontsize=8, arrowsize=0.6];',
    ]
    lines += [f"  {_dot_id(node)} [{attrs}];" for node, attrs in SET_NODES.values()]
    lines.append(f'  {_dot_id(Phase.PROMOTED)} [style="rounded,dashed", '
                 'label="PROMOTED\\n(promotion just finished)"];')
    lines += [f"  {_dot_id(r)};" for r in Role]
    # membership, not a transition (STA and STS are targets too: leave their rank alone)
    lines += [f'  {_dot_id(r)} -> "joining" [style=dotted, arrowhead=none'
              + (", constraint=false" if r in (str(rules.STA), str(rules.STS)) else "") + "];"
              for r in _states(JOINING)]
    note = "\\l".join(
        f"{o.name}: {', '.join([d.__name__ for d in o.decided] + [guard_name(g) for g in o.when])}"
        for o in OVERRIDES)
    lines.append(f'  "overrides" [shape=note, fontsize=9, label="overrides, on every decision but '
                 f'ACTIVE:\\l{note}\\l=> close_vrrp_gate (keeps the role)\\l"];')
    for (src, dst, style), names in edges.items():
        label = "\\n".join(names)
        extra = f", style={style}" if style != "solid" else ""
        lines.append(f'  {_dot_id(src)} -> {_dot_id(dst)} [label="{label}"{extra}];')
    lines.append("}")
    return "\n".join(lines) + "\n"


__all__ = ["digraph", "glossary", "rich_table", "row_dict", "table_from_json", "table_json", "text_table",
           "to_json"]
