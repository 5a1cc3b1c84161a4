"""Figures from a writer's record: lost acknowledged writes, outage windows."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Outcome:
    acked: int
    lost: list[str]  # acknowledged but missing afterwards: must be empty
    kill_to_first_ack: float | None  # fault -> first write accepted by the new node
    max_gap: float  # largest gap between consecutive acknowledgements
    errors: dict[str, int]
    nodes: list[str]  # the nodes that answered, in order of first answer


def analyse(record: dict, present: set[str], fault_at: float | None = None,
            new_node: str | None = None) -> Outcome:
    """``new_node``: count the recovery from the first write *that node* accepted
    (a write the dying node answered just after the fault instant does not count)."""
    acked = [(a[0], float(a[1]), a[2] if len(a) > 2 else "?") for a in record["acked"]]
    lost = sorted(name for name, _, _ in acked if name not in present)
    acked.sort(key=lambda a: a[1])
    times = [t for _, t, _ in acked]
    gap = max((b - a for a, b in zip(times, times[1:], strict=False)), default=0.0)
    first_after = None
    if fault_at is not None:
        after = [t for _, t, node in acked if t > fault_at and new_node in (None, node)]
        if after:
            first_after = after[0] - fault_at
    nodes: list[str] = []
    for _, _, node in acked:
        if node not in nodes:
            nodes.append(node)
    return Outcome(len(acked), lost, first_after, gap, dict(record.get("errors", {})), nodes)
