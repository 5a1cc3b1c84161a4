"""make bench: failover write-unavailability, lost writes, spurious failovers under
CPU load, and commit latency with and without the synchronous standby.

Writes a dated Markdown report to docs/benchmarks/ and prints it. ``--floor FILE``: the
JSON that bench/floor.py --json wrote in the same ``make bench`` run (the raw
keepalived + promote floor); the report then states the floor and the ratio to it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import MILESTONES, failover_once, median, write_report  # noqa: E402

from esc.config import NodePaths, Timing  # noqa: E402
from esc.lab import lab as labmod  # noqa: E402
from esc.lab import net, provenance  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def cpu_hogs(per_node: int) -> list[subprocess.Popen[bytes]]:
    """Busy loops inside each node's namespace (same CPUs as the agents)."""
    hogs = []
    for n in labmod.NODES:
        for _ in range(per_node):
            hogs.append(subprocess.Popen(["ip", "netns", "exec", net.ns(n), "sh", "-c",
                                          "while :; do :; done"]))
    return hogs


def stop_hogs(hogs: list[subprocess.Popen[bytes]]) -> None:
    for h in hogs:
        h.kill()
    for h in hogs:
        h.wait()
    # the shells were exec'd by ip netns exec; anything left dies with kill_all later


def transitions_count() -> int:
    return sum(len(labmod.node_status(n).get("transitions", [])) for n in labmod.NODES)


def pgbench_latency(node: str, seconds: int = 5) -> float:
    """Mean latency (ms) of one-row INSERT commits, one client, on the node's socket."""
    sock = NodePaths(labmod.node_root(node)).pg_socket_dir
    script = Path("/tmp/esc-bench-insert.sql")
    script.write_text("INSERT INTO bench_commit(v) VALUES (1);\n")
    script.chmod(0o644)
    psql = ["runuser", "-u", "postgres", "--"]
    subprocess.run([*psql, "psql", "-h", str(sock), "-d", "esc", "-qc",
                    "CREATE TABLE IF NOT EXISTS bench_commit(v int)"], check=True,
                   capture_output=True)
    res = subprocess.run([*psql, "/usr/lib/postgresql/15/bin/pgbench", "-h", str(sock), "-n",
                          "-f", str(script), "-T", str(seconds), "-c", "1", "esc"],
                         capture_output=True, text=True, check=True)
    for line in res.stdout.splitlines():
        if line.startswith("latency average"):
            return float(line.split("=")[1].split()[0])
    raise RuntimeError(res.stdout)


def wait_alone(node: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while labmod.node_status(node).get("db", {}).get("sync", True):
        if time.monotonic() > deadline:
            raise RuntimeError("the active did not go alone")
        time.sleep(0.1)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=10, help="failovers per condition (>= 1)")
    ap.add_argument("--load", type=int, default=2, help="busy loops per node for the loaded runs")
    ap.add_argument("--quiet-period", type=float, default=30.0,
                    help="seconds of loaded steady state watched for spurious failovers")
    ap.add_argument("--ipv6-runs", type=int, default=None,
                    help="failovers through an IPv6 northbound VIP (lab --paths 3 --northbound-ipv6); "
                         "default --runs, 0 for none")
    ap.add_argument("--floor", type=Path, metavar="FILE",
                    help="bench/floor.py --json output of this run: report the floor and the ratio")
    args = ap.parse_args()
    floor = json.loads(args.floor.read_text()) if args.floor else None
    if args.runs < 1 or args.load < 0 or args.quiet_period < 0:
        ap.error("--runs must be >= 1, --load and --quiet-period >= 0")
    if labmod.is_up():
        labmod.down()
    state = labmod.up(log=lambda *_: None)
    # link-first: idle, but the cable goes before the processes die, so the clients and
    # the peer get no RST or FIN from the old active (as when a host loses power)
    results: dict[str, list] = {"idle": [], "loaded": [], "link-first": [], IPV6: []}
    spurious = 0
    try:
        for cond in ("idle", "loaded", "link-first"):
            hogs = cpu_hogs(args.load) if cond == "loaded" else []
            try:
                if cond == "loaded" and args.quiet_period:
                    before = transitions_count()
                    time.sleep(args.quiet_period)
                    spurious = transitions_count() - before
                runs(state, cond, args.runs, results[cond])
            finally:
                stop_hogs(hogs)
        active = labmod.active_node()
        assert active
        sync_ms = [pgbench_latency(active) for _ in range(3)]
        standby = "n2" if active == "n1" else "n1"
        labmod.kill(standby)
        wait_alone(active)
        alone_ms = [pgbench_latency(active) for _ in range(3)]
        ipv6_runs = args.runs if args.ipv6_runs is None else args.ipv6_runs
        if ipv6_runs > 0:  # the original's three-interface form: its own lab
            labmod.down()
            state = labmod.up(log=lambda *_: None, paths=3, northbound_ipv6=True)
            runs(state, IPV6, ipv6_runs, results[IPV6])
    finally:
        labmod.down()
        net.destroy([])  # the switch namespace, if anything was left
    report = render(args, results, spurious, sync_ms, alone_ms, floor)
    write_report("failover", report)
    lost = sum(len(r.outcome.lost) for rs in results.values() for r in rs)
    return 1 if lost else 0


IPV6 = "ipv6-northbound"


def runs(state: dict, cond: str, count: int, into: list) -> None:  # type: ignore[type-arg]
    for i in range(count):
        r = failover_once(state, f"{cond}{i}", link_first=cond == "link-first")
        into.append(r)
        o = r.outcome
        steps = ", ".join(f"{k} +{v:.3f}s" for k, v in r.timeline.items())
        print(f"{cond} run {i + 1}/{count}: {r.old}->{r.new} "
              f"first write after {o.kill_to_first_ack:.3f}s, gap {o.max_gap:.3f}s, "
              f"lost {len(o.lost)} of {o.acked}, rejoin {r.rejoin_s:.1f}s ({steps})", flush=True)


def floor_lines(results: dict[str, list], floor: dict) -> list[str]:
    """The raw floor (bench/floor.py, same make bench run) and the project's ratio to it."""
    f_med, f_worst = floor["first_write_median_s"], floor["first_write_worst_s"]
    lines = ["", f"Floor: keepalived + `pg_promote()` with no project code, same machine and timers "
             f"(bench/floor.py, same `make bench` run, commit `{floor['commit']}`, {floor['date']}, "
             f"{floor['runs']} runs, report {floor.get('report', '-')}): first write "
             f"**{f_med:.3f} s** median, {f_worst:.3f} s worst.", "",
             "| condition | project first write median | floor median | project / floor |",
             "|---|---|---|---|"]
    for cond, rs in results.items():
        if rs:
            med = median([r.outcome.kill_to_first_ack or float("nan") for r in rs])
            lines.append(f"| {cond} | {med:.3f} s | {f_med:.3f} s | **{med / f_med:.2f}** |")
    return lines


def render(args, results, spurious, sync_ms, alone_ms, floor=None) -> str:  # type: ignore[no-untyped-def]
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    t = Timing()
    lines = [f"# Failover benchmark, {now}", "",
             provenance.line(), "",
             "Fault: power cut of the active node in the lab (`escadm lab kill`: every process "
             "stopped, then SIGKILLed, link down). Client: `esc.lab.writer` in the client namespace, "
             "one request at a time through the VIP, 0.1 s connect and 0.5 s read timeouts, retry "
             "of the same name on error. *First write* = time from the kill to the first write "
             "acknowledged by the new active; *gap* = longest time between two acknowledged "
             f"writes. *link-first*: idle, the cable pulled before the processes die (no RST or "
             f"FIN reaches anyone). *{IPV6}*: idle, the original's three-interface form "
             f"(`escadm lab up --paths 3 --northbound-ipv6`): VRRP on the IPv4 network, the VIP an "
             f"IPv6 address on the IPv6-only northbound network where the client is. "
             f"Timers: VRRPv3 advert {t.advert_int:g} s, heartbeat "
             f"{t.heartbeat_interval:g} s / {t.heartbeat_timeout:g} s, promote window "
             f"{t.promote_window:g} s, alone after {t.alone_after:g} s.", "",
             "| condition | runs | first write median | worst | gap median | worst | "
             "acked writes | lost | rejoin median |",
             "|---|---|---|---|---|---|---|---|---|"]
    for cond, rs in results.items():
        if not rs:
            continue
        first = [r.outcome.kill_to_first_ack or float("nan") for r in rs]
        gaps = [r.outcome.max_gap for r in rs]
        lines.append(
            f"| {cond}{f' ({args.load} busy loops per node)' if cond == 'loaded' else ''} "
            f"| {len(rs)} | {median(first):.3f} s | {max(first):.3f} s | {median(gaps):.3f} s "
            f"| {max(gaps):.3f} s | {sum(r.outcome.acked for r in rs)} "
            f"| {sum(len(r.outcome.lost) for r in rs)} | {median([r.rejoin_s for r in rs]):.1f} s |")
    if floor:
        lines += floor_lines(results, floor)
    lines += ["", "Where the time goes (median seconds after the kill, on the new active):", "",
              "| condition | " + " | ".join(MILESTONES) + " | first write |",
              "|---|" + "---|" * (len(MILESTONES) + 1)]
    for cond, rs in results.items():
        if not rs:
            continue
        cells = [median([r.timeline[m] for r in rs if m in r.timeline]) for m in MILESTONES]
        first = median([r.outcome.kill_to_first_ack or float("nan") for r in rs])
        lines.append(f"| {cond} | " + " | ".join(f"{c:.3f}" for c in cells) + f" | {first:.3f} |")
    lines += ["", f"Spurious role changes during {args.quiet_period:.0f} s of loaded steady "
              f"state: **{spurious}**.", "",
              "Commit latency (pgbench, one client, one-row INSERT, on the active's socket, "
              "3 runs of 5 s):", "",
              "| mode | mean latency (ms) |", "|---|---|",
              f"| synchronous standby attached (remote_apply) | "
              f"{statistics.mean(sync_ms):.3f} ({', '.join(f'{x:.3f}' for x in sync_ms)}) |",
              f"| standby lost, committing alone | "
              f"{statistics.mean(alone_ms):.3f} ({', '.join(f'{x:.3f}' for x in alone_ms)}) |", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
