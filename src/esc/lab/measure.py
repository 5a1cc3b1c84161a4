"""Figures from a writer's record: lost acknowledged writes, outage windows."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Outcome:
    acked: int
    lost: list[str]  # acknowledged but missing afterwards: must be empty
    kill_to_first_ack: float | None  # seconds from the fault to the next accepted write
    max_gap: float  # largest gap between consecutive acknowledgements around the fault
    errors: dict[str, int]


def analyse(record: dict, present: set[str], fault_at: float | None = None) -> Outcome:
    acked = [(name, float(t)) for name, t in record["acked"]]
    lost = sorted(name for name, _ in acked if name not in present)
    times = sorted(t for _, t in acked)
    first_after = None
    gap = 0.0
    if fault_at is not None:
        after = [t for t in times if t > fault_at]
        before = [t for t in times if t <= fault_at]
        if after:
            first_after = after[0] - fault_at
            gap = after[0] - (before[-1] if before else fault_at)
    else:
        gap = max((b - a for a, b in zip(times, times[1:], strict=False)), default=0.0)
    return Outcome(len(acked), lost, first_after, gap, dict(record.get("errors", {})))
