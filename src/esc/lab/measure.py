"""Figures from a writer's record: lost acknowledged writes, outage windows, and
moments when two nodes accepted writes."""

from __future__ import annotations

import bisect
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


@dataclass(frozen=True)
class Ack:
    node: str
    name: str
    sent: float  # wall time the request left the client
    answered: float  # wall time the 2xx came back: the commit happened in between


def acks_of(writer: dict | None = None, prober: dict | None = None) -> list[Ack]:
    """Every acknowledged write of a writer's and a prober's records."""
    out = []
    for a in (writer or {}).get("acked", []):
        answered = float(a[1])
        out.append(Ack(a[2] if len(a) > 2 else "?", a[0], float(a[3]) if len(a) > 3 else answered, answered))
    for node, name, sent, answered in (prober or {}).get("acks", []):
        out.append(Ack(node, name, float(sent), float(answered)))
    return out


def dual_writer_windows(acks: list[Ack], gap: float = 1.0, within: float = 1.0) -> list[tuple[float, float]]:
    """Time windows (first, last answer) in which two nodes certainly both accepted
    writes: a write acknowledged by one node while another node was acknowledging
    writes just before it (answered before it was sent) and just after it (sent after
    it was answered), those two less than ``within`` apart, so that the other node
    cannot have stopped and started again in between (a takeover alone takes longer).
    Client-side ordering only: request latency can hide a short overlap but never
    invent one; a failover and a failback (a double failure) are not flagged. Windows
    less than ``gap`` apart are merged."""
    by_node: dict[str, tuple[list[float], list[float]]] = {}
    for node in {a.node for a in acks}:
        mine = [a for a in acks if a.node == node]
        by_node[node] = (sorted(a.answered for a in mine), sorted(a.sent for a in mine))
    flagged = []
    for b in acks:
        for node, (answered, sent) in by_node.items():
            if node == b.node:
                continue
            i = bisect.bisect_left(answered, b.sent)  # X's acks answered before b was sent
            j = bisect.bisect_right(sent, b.answered)  # X's acks sent after b was answered
            if i > 0 and j < len(sent) and sent[j] - answered[i - 1] < within:
                flagged.append(b.answered)
                break
    flagged.sort()
    windows: list[tuple[float, float]] = []
    for t in flagged:
        if windows and t - windows[-1][1] <= gap:
            windows[-1] = (windows[-1][0], t)
        else:
            windows.append((t, t))
    return windows
