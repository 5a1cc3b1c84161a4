"""make bench: failover through the BGP anycast address (escadm lab up --bgp).

The client writes through the anycast address behind a BIRD 2 router; the active is
killed (power cut). Two kinds of cut: the processes die first (their kernel closes the
BGP session with a FIN, the router drops the route at once), and the link goes first
(nothing leaves the node: the router keeps the dead node's route until its hold timer
expires, and the new active's lower MED has to win). Writes a dated Markdown report to
docs/benchmarks/anycast-DATE.md and prints it.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import MILESTONES, failover_once, median, write_report  # noqa: E402

from esc.lab import lab as labmod  # noqa: E402
from esc.lab import net, provenance, router  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
STEPS = {**MILESTONES, "announced": "BGP: announcing"}
KINDS = {"processes first (FIN reaches the router)": False,
         "link first (router waits for its hold timer)": True}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=10, help="failovers per kind of cut (>= 1)")
    args = ap.parse_args()
    if args.runs < 1:
        ap.error("--runs must be >= 1")
    if labmod.is_up():
        labmod.down()
    state = labmod.up(log=lambda *_: None, bgp=True)
    results: dict[str, list] = {k: [] for k in KINDS}
    try:
        for kind, link_first in KINDS.items():
            for i in range(args.runs):
                r = failover_once(state, f"bgp{int(link_first)}{i}", link_first=link_first,
                                  milestones=STEPS, settle=3.0)
                results[kind].append(r)
                o = r.outcome
                first = f"{o.kill_to_first_ack:.3f}s" if o.kill_to_first_ack is not None else "NONE"
                print(f"{kind} run {i + 1}/{args.runs}: {r.old}->{r.new} first write after "
                      f"{first}, gap {o.max_gap:.3f}s, lost {len(o.lost)} of "
                      f"{o.acked}, route via {router.kernel_next_hop(labmod.ANYCAST)}, errors {o.errors}, "
                      f"steps {', '.join(f'{k} +{v:.3f}' for k, v in r.timeline.items())}", flush=True)
    finally:
        labmod.down()
        net.destroy([])
    report = render(args, state, results)
    write_report("anycast", report)
    return 1 if any(r.outcome.lost for rs in results.values() for r in rs) else 0


def render(args, state, results) -> str:  # type: ignore[no-untyped-def]
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    b = state["bgp"]
    lines = [f"# Anycast failover benchmark, {now}", "", provenance.line(), "",
             f"Lab: `escadm lab up --bgp`: n1 and n2 in two subnets behind a BIRD 2 router (AS "
             f"{b['router_as']}), the client behind the router, anycast {b['anycast']}/32 announced by "
             f"the active's ExaBGP, TCP MD5 on. BGP timers: hold time {b['hold_time']} s, keepalive "
             f"{b['keepalive']} s (both ends); BIRD `error wait time 1, 10`, `connect retry time 1`, "
             "`med metric yes`; the announcement's MED is 1000000 minus the database timeline. "
             "VRRPv3 advert 0.2 s (unicast, routed), heartbeat 0.1 s / 0.4 s.", "",
             "Fault: power cut of the active (`escadm lab kill`). Client: `esc.lab.writer` in the "
             "client namespace, one request at a time through the anycast address, 0.1 s connect "
             "and 0.5 s read timeouts. *First write* = kill to the first write acknowledged by the "
             "new active; *gap* = longest time between two acknowledged writes.", "",
             "| cut | runs | first write median | worst | gap median | worst | acked writes | lost |",
             "|---|---|---|---|---|---|---|---|"]
    for kind, rs in results.items():
        if not rs:
            continue
        first = [r.outcome.kill_to_first_ack or float("nan") for r in rs]
        gaps = [r.outcome.max_gap for r in rs]
        lines.append(f"| {kind} | {len(rs)} | {median(first):.3f} s | {max(first):.3f} s | "
                     f"{median(gaps):.3f} s | {max(gaps):.3f} s | {sum(r.outcome.acked for r in rs)} | "
                     f"{sum(len(r.outcome.lost) for r in rs)} |")
    lines += ["", "Where the time goes (median seconds after the kill, on the new active):", "",
              "| cut | " + " | ".join(STEPS) + " | first write |", "|---|" + "---|" * (len(STEPS) + 1)]
    for kind, rs in results.items():
        cells = [median([r.timeline[m] for r in rs if m in r.timeline]) for m in STEPS]
        first = median([r.outcome.kill_to_first_ack or float("nan") for r in rs])
        lines.append(f"| {kind} | " + " | ".join(f"{c:.3f}" for c in cells) + f" | {first:.3f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
