"""make bench-scale: failover and rejoin with a large database, against a small one.

On the project's lab (esc.lab.lab, the ``ESC_LAB_NS_PREFIX`` / ``ESC_LAB_DIR`` of the
environment): a few power cuts of the active with the database as ``lab up`` makes it
(small), then the active's database is loaded through its PostgreSQL (so it replicates
to the standby by the normal synchronous replication) with 100,000 deployments and
1,000,000 events, 2 GB or more, vacuumed and checkpointed, and the same power cuts again.

Each run measures (a) kill -> first write accepted through the VIP (esc.lab.writer, as
bench/failover.py) and (b) the rejoin of the killed node: ``lab start`` -> STANDBY again,
after the small change the failover made (the writer's rows, what the new active wrote
when it took over). For the rejoin it also reads the old node's agent.log (job rejoin,
pg_rewind or clone) and the bytes its eth0 received during the rejoin (every byte
pg_rewind or a clone copied came that way; heartbeats, VRRP and WAL streaming too, so
it is an upper bound on what pg_rewind copied).

The lab's retention is raised on both nodes first (``escadm retention set --max-events``
above the loaded count): with the default cap (100,000 events) the new active's janitor
would delete 900,000 events right after each takeover.

Writes docs/benchmarks/scale-YYYY-MM-DD.md; ``--json``: the figures as JSON on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import MILESTONES, Writer, escadm, io_pressure, machine, median, timeline  # noqa: E402

from esc.config import NodePaths  # noqa: E402
from esc.lab import lab as labmod  # noqa: E402
from esc.lab import net, provenance  # noqa: E402
from esc.lab.measure import analyse  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PSQL = "/usr/lib/postgresql/15/bin/psql"

REJOIN_MILESTONES = {
    "rejoin started": "job rejoin started",
    "pg_rewind done": "pg_rewind: ",
    "pg_rewind failed": "pg_rewind failed",
    "cloned": "cloned the peer's database",
    "rejoin done": "job rejoin done",
    "standby": "-> STANDBY",
}


def log(*a: object) -> None:
    print(*a, file=sys.stderr, flush=True)


def psql(node: str, sql: str, db: str = "esc", timeout: float = 3600) -> str:
    """SQL on a node's own server, over its unix socket, as postgres."""
    sock = NodePaths(labmod.node_root(node)).pg_socket_dir
    res = subprocess.run(["runuser", "-u", "postgres", "--", PSQL, "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1",
                          "-h", str(sock), "-d", db, "-c", sql],
                         capture_output=True, text=True, timeout=timeout, cwd="/")
    if res.returncode != 0:
        raise RuntimeError(f"[{node}] {sql[:80]}...: {res.stderr.strip()}")
    return res.stdout.strip()


def rx_bytes(node: str) -> int:
    res = net.netns_exec(node, "cat", "/sys/class/net/eth0/statistics/rx_bytes")
    return int(res.stdout)


# ------------------------------------------------------------------ loading
LOAD_DEPLOYMENTS = """
INSERT INTO deployments (name, tenant_id, spec, status, created_at, updated_at)
SELECT format('scale-%s', lpad(i::text, 7, '0')),
       (SELECT id FROM tenants WHERE name = 'default'),
       jsonb_build_object(
           'description', repeat(md5(i::text), 24),
           'vm_groups', jsonb_build_array(jsonb_build_object(
               'name', 'g1', 'image', 'img-' || (i % 50), 'flavor', 'flv-' || (i % 10),
               'count', 1 + i % 4, 'config', repeat(md5((i + 1)::text), 8)))),
       'deployed', now() - make_interval(secs => %(max)s - i), now() - make_interval(secs => %(max)s - i)
  FROM generate_series(%(lo)s, %(hi)s) AS i
"""

# rows below the 2 kB TOAST threshold: stored as they are, no compression
LOAD_EVENTS = """
INSERT INTO events (type, status, created_at, transaction_id, tenant, resource_type, resource, vm, message)
SELECT (ARRAY['VM_DEPLOYED', 'VM_ALIVE', 'SERVICE_UPDATED', 'VM_RECOVERY'])[1 + i % 4],
       'SUCCESS', now() - make_interval(secs => (%(max)s - i) / 10.0), NULL, 'default', 'deployment',
       format('scale-%s', lpad((i % %(deployments)s)::text, 7, '0')), format('vm-%s', i % 7),
       repeat(md5(i::text), 53)
  FROM generate_series(%(lo)s, %(hi)s) AS i
"""


def load(node: str, deployments: int, events: int, chunk: int = 50_000) -> dict:
    """Fill the active's database in chunks (each a synchronous commit: the standby keeps
    up, nothing is kept back for it), then VACUUM ANALYZE and CHECKPOINT, as a database
    that has lived: no hint bits nor visibility map left for the first readers to write."""
    t0 = time.monotonic()
    for what, sql, count in (("deployments", LOAD_DEPLOYMENTS, deployments), ("events", LOAD_EVENTS, events)):
        base = int(psql(node, f"SELECT count(*) FROM {what}"))
        for lo in range(1, count + 1, chunk):
            hi = min(lo + chunk - 1, count)
            q = sql.replace("%(lo)s", str(lo)).replace("%(hi)s", str(hi)).replace(
                "%(max)s", str(count)).replace("%(deployments)s", str(deployments))
            psql(node, q)
            log(f"  {what}: {hi - lo + 1 + (lo - 1)} of {count} (+{base} there before), "
                f"{time.monotonic() - t0:.0f}s")
    t_insert = time.monotonic() - t0
    psql(node, "VACUUM ANALYZE")
    psql(node, "CHECKPOINT", db="postgres")
    t_total = time.monotonic() - t0
    return {"insert_s": round(t_insert, 1), "vacuum_checkpoint_s": round(t_total - t_insert, 1)}


def sizes(node: str) -> dict:
    row = psql(node, "SELECT pg_database_size('esc'), (SELECT count(*) FROM deployments), "
                     "(SELECT count(*) FROM events), pg_total_relation_size('events'), "
                     "pg_total_relation_size('deployments')").split("|")
    return {"db_bytes": int(row[0]), "deployments": int(row[1]), "events": int(row[2]),
            "events_bytes": int(row[3]), "deployments_bytes": int(row[4])}


def wait_caught_up(active: str, standby: str, timeout: float = 600) -> None:
    """Until the standby has replayed everything the active wrote so far."""
    target = psql(active, "SELECT pg_current_wal_lsn()", db="postgres")
    deadline = time.monotonic() + timeout
    while psql(standby, f"SELECT pg_last_wal_replay_lsn() >= '{target}'", db="postgres") != "t":
        if time.monotonic() > deadline:
            raise RuntimeError(f"{standby} did not replay up to {target} within {timeout:.0f}s")
        time.sleep(0.5)


# ------------------------------------------------------------------ one power cut
def failover_and_rejoin(state: dict, prefix: str, warmup: float = 1.0, settle: float = 1.0) -> dict:
    """As common.failover_once, with the writer's rows checked in the new active's database
    (listing 100,000 deployments through the API is not the point here) and the rejoin
    looked at closely."""
    old = labmod.active_node()
    assert old, labmod.roles()
    new = "n2" if old == "n1" else "n1"
    writer = Writer(state, prefix)
    time.sleep(warmup)
    killed_at = labmod.kill(old).at
    labmod.wait_roles({"ACTIVE", "STOPPED"}, timeout=60)
    time.sleep(settle)  # the writer's first acknowledgements by the new active
    record = writer.stop()
    present = set(psql(new, f"SELECT name FROM deployments WHERE name LIKE '{prefix}-%'").split())
    outcome = analyse(record, present, killed_at, new_node=new)
    steps = timeline(new, killed_at, MILESTONES)
    rx0, started = rx_bytes(old), time.time()
    t0 = time.monotonic()
    labmod.start(old)
    try:
        labmod.wait_roles({"ACTIVE", "STANDBY"}, timeout=900)
    except labmod.LabError:
        labmod.dump_logs(lines=80)
        raise
    rejoin_s = time.monotonic() - t0
    rx = rx_bytes(old) - rx0
    rejoin_steps = timeline(old, started, REJOIN_MILESTONES)
    rewind_line, rejoin_log = "", []
    log_file = NodePaths(labmod.node_root(old)).log / "agent.log"
    for line in log_file.read_text(errors="replace").splitlines():
        if not any(k in line for k in ("job ", "pg_rewind", "clone", "role ", "not streaming")):
            continue
        try:
            at = datetime.strptime(line[:23], "%Y-%m-%dT%H:%M:%S.%f").timestamp()
        except ValueError:
            continue
        if at >= started:
            rejoin_log.append(f"+{at - started:.2f}s {line[24:].strip()[:300]}")
            if "pg_rewind" in line or "cloned the peer" in line:
                rewind_line = line[24:].strip()[:200]
    return {"old": old, "new": new, "first_write_s": outcome.kill_to_first_ack, "gap_s": outcome.max_gap,
            "pg_starts": pg_starts(old, started), "path": rejoin_path(rejoin_log),
            "acked": outcome.acked, "lost": len(outcome.lost), "takeover": steps,
            "rejoin_s": rejoin_s, "rejoin_rx_bytes": rx, "rejoin_steps": rejoin_steps,
            "rewind_log": rewind_line, "cloned": "cloned" in rejoin_steps,
            "rejoin_jobs": sum("job rejoin started" in x for x in rejoin_log), "rejoin_log": rejoin_log}


def pg_starts(node: str, since: float) -> list[dict]:
    """The rejoining node's PostgreSQL starts (its postgres.log, UTC): whether it started
    from an interrupted state (crash recovery: every file of the data directory fsynced
    first), how long until it entered standby mode, and whether the agent stopped it first."""
    out: list[dict] = []
    log_file = NodePaths(labmod.node_root(node)).log / "postgres.log"
    for line in log_file.read_text(errors="replace").splitlines():
        try:
            at = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=UTC).timestamp()
        except ValueError:
            continue
        if at < since:
            continue
        if "LOG:  starting PostgreSQL" in line:
            out.append({"at": at - since, "interrupted": False, "standby_mode_s": None, "stopped_s": None})
        elif out and "database system was interrupted" in line:
            out[-1]["interrupted"] = True
        elif out and "entering standby mode" in line and out[-1]["standby_mode_s"] is None:
            out[-1]["standby_mode_s"] = at - since - out[-1]["at"]
        elif out and "received fast shutdown request" in line and out[-1]["stopped_s"] is None:
            out[-1]["stopped_s"] = at - since - out[-1]["at"]
    return out


def rejoin_path(rejoin_log: list[str]) -> str:
    """The rejoin's steps from the agent's log, in short."""
    steps = []
    for line in rejoin_log:
        at = line.split()[0]
        if "not streaming from the active" in line:
            steps.append(f"{at} not streaming after 3 s: rejoin again")
        elif "no rewind required" in line:
            steps.append(f"{at} pg_rewind: no rewind required")
        elif "pg_rewind: Done" in line:
            steps.append(f"{at} pg_rewind done")
        elif "pg_rewind failed" in line:
            steps.append(f"{at} pg_rewind failed")
        elif "cloned the peer" in line:
            size = line.split("(")[-1].split(";")[0] if "MiB" in line else ""
            steps.append(f"{at} clone done" + (f" (old copy {size} moved aside)" if size else ""))
        elif "-> STANDBY" in line:
            steps.append(f"{at} STANDBY")
    return "; ".join(steps)


def series(state: dict, label: str, runs: int) -> list[dict]:
    out = []
    for i in range(runs):
        r = failover_and_rejoin(state, f"{label}{i}")
        out.append(r)
        fw = f"{r['first_write_s']:.3f}s" if r["first_write_s"] is not None else "NONE"
        rs = ", ".join(f"{k} +{v:.2f}s" for k, v in r["rejoin_steps"].items())
        log(f"{label} run {i + 1}/{runs}: {r['old']}->{r['new']} first write after {fw}, "
            f"lost {r['lost']} of {r['acked']}; rejoin {r['rejoin_s']:.1f}s, "
            f"{r['rejoin_rx_bytes'] / 2**20:.1f} MiB received ({rs}); {r['rewind_log']}")
    return out


def summary(rs: list[dict]) -> dict:
    first = [r["first_write_s"] for r in rs if r["first_write_s"] is not None]
    out = {
        "runs": len(rs), "first_write_median_s": median(first),
        "first_write_worst_s": max(first, default=None),
        "rejoin_median_s": median([r["rejoin_s"] for r in rs]),
        "rejoin_worst_s": max(r["rejoin_s"] for r in rs),
        "rejoin_rx_median_bytes": median([r["rejoin_rx_bytes"] for r in rs]),
        "lost": sum(r["lost"] for r in rs), "acked": sum(r["acked"] for r in rs),
        "clones": sum(1 for r in rs if r["cloned"]),
        "rejoin_jobs": sum(r["rejoin_jobs"] for r in rs),
    }
    for k in MILESTONES:
        out[f"takeover {k}"] = median([r["takeover"][k] for r in rs if k in r["takeover"]])
    for k in REJOIN_MILESTONES:
        out[f"rejoin {k}"] = median([r["rejoin_steps"][k] for r in rs if k in r["rejoin_steps"]])
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3, help="power cuts per database size")
    ap.add_argument("--deployments", type=int, default=100_000)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--json", action="store_true", help="the figures as JSON on stdout")
    ap.add_argument("--no-report", action="store_true")
    ap.add_argument("--keep-logs", type=Path, metavar="DIR",
                    help="copy the nodes' logs there before lab down")
    args = ap.parse_args()
    if args.runs < 1:
        ap.error("--runs must be >= 1")
    t_start, load0 = time.monotonic(), os.getloadavg()[0]
    if labmod.is_up():
        labmod.down()
    state = labmod.up(log=log)
    result: dict = {"benchmark": "scale", "commit": provenance.commit(), "machine": machine(),
                    "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "loadavg_1min_start": load0,
                    "io_pressure_start": io_pressure()}
    try:
        for n in labmod.NODES:  # keep what is loaded (see the module's docstring)
            out = escadm(n, "retention", "set", "--days", "3650", "--max-events",
                         str(max(10 * args.events, 100_000)))
            log(f"{n}: {out}")
            log(f"{n}: {escadm(n, 'reload')}")
        active = labmod.active_node()
        assert active
        result["small_size"] = sizes(active)
        log(f"small database: {result['small_size']}")
        small = series(state, "small", args.runs)
        active = labmod.active_node()
        assert active
        standby = "n2" if active == "n1" else "n1"
        log(f"loading {args.deployments} deployments and {args.events} events on {active}")
        result["load"] = load(active, args.deployments, args.events)
        wait_caught_up(active, standby)
        result["large_size"] = sizes(active)
        result["large_size_standby"] = sizes(standby)
        result["pgdata_bytes"] = {n: int(subprocess.run(
            ["du", "-sb", str(NodePaths(labmod.node_root(n)).lib / "pgdata")], capture_output=True,
            text=True).stdout.split()[0]) for n in labmod.NODES}
        log(f"large database: {result['large_size']} (load {result['load']}); data directories "
            f"{result['pgdata_bytes']}")
        large = series(state, "large", args.runs)
        active = labmod.active_node()
        assert active
        result["after_size"] = sizes(active)
    finally:
        if args.keep_logs:
            import shutil

            for n in labmod.NODES:
                src = NodePaths(labmod.node_root(n)).log
                if src.exists():
                    shutil.copytree(src, args.keep_logs / n, dirs_exist_ok=True)
        labmod.down()
        net.destroy([])
    result["small"], result["large"] = summary(small), summary(large)
    result["small_runs"], result["large_runs"] = small, large
    result["ratio_first_write"] = (result["large"]["first_write_median_s"]
                                   / result["small"]["first_write_median_s"])
    result["ratio_rejoin"] = result["large"]["rejoin_median_s"] / result["small"]["rejoin_median_s"]
    result["loadavg_1min_end"] = os.getloadavg()[0]
    result["io_pressure_end"] = io_pressure()
    result["duration_s"] = round(time.monotonic() - t_start, 1)
    if not args.no_report:
        path = ROOT / "docs/benchmarks" / f"scale-{datetime.now(UTC).strftime('%Y-%m-%d')}.md"
        path.write_text(render(result))
        result["report"] = str(path.relative_to(ROOT))
        log(f"written to {result['report']}")
    if args.json:
        print(json.dumps(result, indent=1, default=str))
    else:
        print(render(result))
    lost = result["small"]["lost"] + result["large"]["lost"]
    return 1 if lost else 0


def mib(b: float) -> str:
    return f"{b / 2**20:,.1f} MiB"


def render(r: dict) -> str:
    s, lg = r["small"], r["large"]
    ss, ls = r["small_size"], r["large_size"]
    lines = [
        f"# Scale benchmark: failover and rejoin with a large database, {r['date']}", "",
        f"Commit: `{r['commit']}`. Machine: {r['machine']}. Load average (1 min) at the start "
        f"{r['loadavg_1min_start']:.2f}, at the end {r['loadavg_1min_end']:.2f}; I/O pressure "
        f"(/proc/pressure/io, some, avg60) {r['io_pressure_start']} % at the start, "
        f"{r['io_pressure_end']} % at the end (other work on the machine shows here). Whole run: "
        f"{r['duration_s'] / 60:.1f} min (`make bench-scale`, "
        "`bench/scale.py`).", "",
        "Method: the project's lab (`escadm lab up`, VRRP mode). Retention raised on both nodes "
        "(`escadm retention set --days 3650 --max-events ...`) so that the loaded events are kept. "
        f"{s['runs']} power cuts of the active (`escadm lab kill`) with the database as `lab up` "
        "makes it; then the active's database is loaded through its own PostgreSQL, in "
        "synchronous commits of 50,000 rows (so it replicates to the standby as any write "
        "does), `VACUUM ANALYZE`, `CHECKPOINT`, the standby waited for; then the same power "
        f"cuts again ({lg['runs']}). Writer: `esc.lab.writer` through the VIP as in "
        "bench/failover.py; its rows are then looked up in the new active's database. "
        "*Rejoin* = `lab start` of the killed node -> both nodes ACTIVE/STANDBY again, after "
        "only the change the failover made (the writer's rows, the new active's own writes). "
        "*Received* = bytes the rejoining node's eth0 received meanwhile: everything pg_rewind "
        "(or a clone) copied came that way, with heartbeats and WAL streaming, so it bounds "
        "what pg_rewind copied from above (the agent's log has only pg_rewind's last line).", "",
        "| database | deployments | events | database size | events table |",
        "|---|---|---|---|---|",
        *(f"| {name} | {x['deployments']:,} | {x['events']:,} | {mib(x['db_bytes'])} "
          f"| {mib(x['events_bytes'])} |" for name, x in (("small", ss), ("large", ls),
                                                         ("large, after the runs", r["after_size"]))),
        "",
        f"Loading took {r['load']['insert_s']:.0f} s (inserts, synchronous) + "
        f"{r['load']['vacuum_checkpoint_s']:.0f} s (VACUUM ANALYZE, CHECKPOINT); data "
        "directories afterwards: " + ", ".join(f"{n} {mib(b)}" for n, b in r["pgdata_bytes"].items())
        + ".", "",
        "| database | runs | first write median | worst | rejoin median | worst | received "
        "during rejoin (median) | rejoin jobs | clones | acked | lost |",
        "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, x in (("small", s), ("large", lg)):
        lines.append(f"| {name} | {x['runs']} | {x['first_write_median_s']:.3f} s "
                     f"| {x['first_write_worst_s']:.3f} s "
                     f"| {x['rejoin_median_s']:.1f} s | {x['rejoin_worst_s']:.1f} s "
                     f"| {mib(x['rejoin_rx_median_bytes'])} | {x['rejoin_jobs']} | {x['clones']} "
                     f"| {x['acked']} | {x['lost']} |")
    fw_pct = (r["ratio_first_write"] - 1) * 100
    lines += ["", f"Large / small: first write **{r['ratio_first_write']:.2f}×** ({fw_pct:+.0f} %; "
              f"target within ±10 %: **{'met' if abs(fw_pct) <= 10 else 'missed'}**), rejoin "
              f"**{r['ratio_rejoin']:.2f}×** for a database {ls['db_bytes'] / ss['db_bytes']:.0f}× "
              "larger.", "",
              "Where the time goes, medians in seconds. Takeover: after the kill, on the new active. "
              "Rejoin: after `lab start`, on the rejoining node.", "",
              "| database | " + " | ".join(MILESTONES) + " | first write | "
              + " | ".join(k for k in REJOIN_MILESTONES if k not in ("pg_rewind failed", "cloned")) + " |",
              "|---|" + "---|" * (len(MILESTONES) + 1 + len(REJOIN_MILESTONES) - 2)]
    for name, x in (("small", s), ("large", lg)):
        cells = [x[f"takeover {k}"] for k in MILESTONES] + [x["first_write_median_s"]] + [
            x[f"rejoin {k}"] for k in REJOIN_MILESTONES if k not in ("pg_rewind failed", "cloned")]
        lines.append(f"| {name} | " + " | ".join(f"{c:.3f}" for c in cells) + " |")
    lines += ["", "Per run:", "",
              "| database | run | nodes | first write | gap | rejoin | received | rejoin steps "
              "(seconds after `lab start`, agent log) |",
              "|---|---|---|---|---|---|---|---|"]
    for name in ("small", "large"):
        for i, x in enumerate(r[f"{name}_runs"], 1):
            fw = f"{x['first_write_s']:.3f} s" if x["first_write_s"] is not None else "none"
            lines.append(f"| {name} | {i} | {x['old']}->{x['new']} | {fw} | {x['gap_s']:.3f} s "
                         f"| {x['rejoin_s']:.1f} s | {mib(x['rejoin_rx_bytes'])} | {x['path']} |")
    lines += ["", "PostgreSQL starts on the rejoining node (its postgres.log): *crash start* = from "
              "an interrupted state (after a kill, pg_rewind or pg_basebackup: PostgreSQL first "
              "fsyncs the data directory and replays from the last checkpoint); *to standby mode* = "
              "`starting PostgreSQL` -> `entering standby mode`; *stopped at* = the agent's fast "
              "shutdown request (rejoin_grace, 3 s, expired).", "",
              "| database | starts | crash starts | to standby mode, crash starts (median, max) "
              "| clean starts | starts stopped by the agent before standby mode |",
              "|---|---|---|---|---|---|"]
    for name in ("small", "large"):
        starts = [st for x in r[f"{name}_runs"] for st in x["pg_starts"]]
        crash = [st for st in starts if st["interrupted"]]
        to_sb = [st["standby_mode_s"] for st in crash if st["standby_mode_s"] is not None]
        cut = [st for st in starts if st["stopped_s"] is not None
               and (st["standby_mode_s"] is None or st["stopped_s"] < st["standby_mode_s"])]
        lines.append(f"| {name} | {len(starts)} | {len(crash)} | "
                     + (f"{median(to_sb):.2f} s, {max(to_sb):.2f} s" if to_sb else "-")
                     + f" | {len(starts) - len(crash)} | {len(cut)} |")
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
