"""Figures from a writer's record: lost acknowledged writes, outage windows, and
moments when two nodes accepted writes."""

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


def dual_writer_windows(acks: list[Ack], gap: float = 1.0) -> list[tuple[float, float]]:
    """Time windows (first, last answer) in which two nodes certainly both accepted
    writes: a write acknowledged by one node that another node acknowledged writes
    both *before* it (answered before it was sent) and *after* it (sent after it was
    answered). Client-side ordering only, so request latency can hide a short
    overlap but never invent one; one failover (X then Y) is never flagged, two in
    one run (X, Y, X) are. Windows less than ``gap`` apart are merged."""
    first_answer: dict[str, float] = {}
    last_sent: dict[str, float] = {}
    for a in acks:
        first_answer[a.node] = min(first_answer.get(a.node, a.answered), a.answered)
        last_sent[a.node] = max(last_sent.get(a.node, a.sent), a.sent)
    flagged = sorted(
        a.answered for a in acks
        if any(x != a.node and first_answer[x] < a.sent and last_sent[x] > a.answered for x in first_answer)
    )
    windows: list[tuple[float, float]] = []
    for t in flagged:
        if windows and t - windows[-1][1] <= gap:
            windows[-1] = (windows[-1][0], t)
        else:
            windows.append((t, t))
    return windows
