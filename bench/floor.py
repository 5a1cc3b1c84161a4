"""The raw failover floor: keepalived plus a PostgreSQL promote, no project code.

What the project's failover (bench/failover.py) is compared with: the least any
keepalived + streaming-replication pair can do on this machine with the same timers.

Two namespaces on a bridge (esc.lab.net, under the lab's prefix + ``floor-``), a
third for the client. Each node runs keepalived (the project's VRRP settings: VRRPv3,
advert_int as esc.config.Timing, unicast, nopreempt, both BACKUP, priority 101/100,
GARP repeat 3) with a ``notify_master`` script that clears synchronous_standby_names
and runs ``pg_promote()`` on the local server through psql. PostgreSQL 15 primary and
hot standby, synchronous replication with ``synchronous_commit = remote_apply`` (the
project's postgresql.conf settings). The client writes one row per ~10 ms through the
VIP (psycopg, 0.1 s connect and 0.5 s statement timeouts, reconnect on error, retry of
the same row). Fault: every process of the primary's namespace SIGSTOPped then SIGKILLed,
its link down and the VIP gone with it (as ``escadm lab kill``). Figure: kill -> first row
acknowledged by the new primary. Every run starts from a fresh standby (pg_basebackup
of the primary: the killed node is re-cloned from the new one); directions alternate.

    python bench/floor.py [--runs 10] [--json]

``--json``: the figures as JSON on stdout (progress goes to stderr). The Markdown
report goes to docs/benchmarks/floor-YYYY-MM-DD.md either way.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

ROOT = Path(__file__).resolve().parent.parent
PG_BIN = Path("/usr/lib/postgresql/15/bin")
KEEPALIVED = "/usr/sbin/keepalived"
SUBNET = "10.77.0"
ADDR = {"n1": 11, "n2": 12, "cli": 100}
VIP = f"{SUBNET}.50"
PORT = 5432
VRID = 78
WRITE_EVERY = 0.01  # one row per ~10 ms
CONNECT_TIMEOUT = 0.1
STATEMENT_TIMEOUT = 0.5


def log(*a: object) -> None:
    print(*a, file=sys.stderr, flush=True)


# ------------------------------------------------------------------ the client
async def _client(out: str, first_row: int, duration: float) -> None:
    import psycopg

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    acked: list[tuple[str, float, str, float]] = []  # row, answered, node, sent
    in_doubt: list[str] = []
    errors: dict[str, int] = {}
    conn = None
    i, retrying = first_row, False
    deadline = time.monotonic() + duration
    next_at = time.monotonic()

    async def drop() -> None:
        nonlocal conn
        if conn is not None:
            try:
                await asyncio.wait_for(conn.close(), 0.1)
            except Exception:
                pass
        conn = None

    while not stop.is_set() and time.monotonic() < deadline:
        sent = time.time()
        try:
            if conn is None:
                conn = await asyncio.wait_for(psycopg.AsyncConnection.connect(
                    host=VIP, port=PORT, user="postgres", dbname="postgres", autocommit=True,
                    application_name="floor-client"), CONNECT_TIMEOUT)
            cur = await asyncio.wait_for(conn.execute(
                "INSERT INTO w(i, node) VALUES (%s, current_setting('cluster_name')) RETURNING node",
                (i,)), STATEMENT_TIMEOUT)
            row = await cur.fetchone()
            acked.append((str(i), time.time(), row[0] if row else "?", sent))
            i, retrying = i + 1, False
            next_at = max(next_at + WRITE_EVERY, time.monotonic())
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            continue
        except psycopg.errors.UniqueViolation:
            if retrying:  # an unanswered attempt had committed it
                in_doubt.append(str(i))
                i, retrying = i + 1, False
                continue
            errors["UniqueViolation"] = errors.get("UniqueViolation", 0) + 1
        except TimeoutError:
            errors["timeout"] = errors.get("timeout", 0) + 1
            await drop()
        except psycopg.Error as e:
            key = type(e).__name__
            errors[key] = errors.get(key, 0) + 1
            if conn is None or conn.broken or conn.closed:
                await drop()
        except OSError as e:
            errors[type(e).__name__] = errors.get(type(e).__name__, 0) + 1
            await drop()
        retrying = True
        await asyncio.sleep(WRITE_EVERY)
    await drop()
    with open(out, "w") as f:
        json.dump({"acked": acked, "in_doubt": in_doubt, "errors": errors}, f)


# ------------------------------------------------------------------ the pair
class Floor:
    """The namespaces, the pair's processes and files; everything under the lab's
    namespace prefix + ``floor-`` and the lab directory + ``-floor``."""

    def __init__(self) -> None:
        base_prefix = os.environ.get("ESC_LAB_NS_PREFIX", "")
        self.prefix = base_prefix + "floor-"
        self.dir = Path(os.environ.get("ESC_LAB_DIR", "/var/tmp/esc-lab") + "-floor")
        # esc.lab.net reads the prefix from the environment: ours for the whole process
        os.environ["ESC_LAB_NS_PREFIX"] = self.prefix
        from esc.lab import net

        self.net = net

    # -- network
    def create_network(self) -> None:
        net = self.net
        if any(net.exists(h) for h in (*ADDR, "esc-sw")):
            raise RuntimeError(f"namespaces with prefix {self.prefix!r} exist already: "
                               "a floor run is under way or was left over (see --cleanup)")
        net.create([net.Host(h, f"{SUBNET}.{a}/24", f"fd77::{a}/64") for h, a in ADDR.items()])

    def destroy(self) -> None:
        self.net.destroy(list(ADDR))
        shutil.rmtree(self.dir, ignore_errors=True)

    def exec(self, host: str, *argv: str, check: bool = True, timeout: float = 120
             ) -> subprocess.CompletedProcess[str]:
        return self.net.netns_exec(host, *argv, check=check, timeout=timeout)

    def as_postgres(self, host: str, *argv: str, check: bool = True, timeout: float = 120
                    ) -> subprocess.CompletedProcess[str]:
        return self.exec(host, "setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups",
                         *argv, check=check, timeout=timeout)

    def spawn(self, host: str, argv: list[str], log_file: Path) -> None:
        """A daemon in the host's namespace, our child (reaped by net.kill_all)."""
        with open(log_file, "ab") as f:
            subprocess.Popen(["ip", "netns", "exec", self.net.ns(host), *argv], stdin=subprocess.DEVNULL,
                             stdout=f, stderr=f, cwd="/")

    # -- files
    def node_dir(self, n: str) -> Path:
        return self.dir / n

    def sock(self, n: str) -> Path:
        return self.node_dir(n) / "sock"

    def data(self, n: str) -> Path:
        return self.node_dir(n) / "data"

    def prepare(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True)
        os.chmod(self.dir, 0o755)
        for n in ("n1", "n2"):
            for d in (self.node_dir(n), self.sock(n)):
                d.mkdir(exist_ok=True)
                shutil.chown(d, "postgres", "postgres")
            os.chmod(self.sock(n), 0o700)
            self.write_keepalived(n)

    def write_keepalived(self, n: str) -> None:
        from esc.config import Timing

        peer = "n2" if n == "n1" else "n1"
        d = self.node_dir(n)
        # keepalived runs only scripts no one but root can change, nor the directories above
        scripts = self.dir / "scripts"
        scripts.mkdir(mode=0o755, exist_ok=True)
        script = scripts / f"promote-{n}.sh"
        notify_log = d / "notify.log"
        psql = (f"{PG_BIN}/psql -X -q -At -h {self.sock(n)} -p {PORT} -U postgres -d postgres "
                "-c \"ALTER SYSTEM SET synchronous_standby_names = ''\" "
                "-c 'SELECT pg_reload_conf()' -c 'SELECT pg_promote()'")
        script.write_text("#!/bin/sh\n"
                          f"echo \"master $(date +%s.%N)\" >> {notify_log}\n"
                          f"{psql} >> {notify_log} 2>&1\n"
                          f"echo \"promoted $(date +%s.%N)\" >> {notify_log}\n")
        script.chmod(0o755)
        (d / "keepalived.conf").write_text(f"""global_defs {{
    router_id floor_{n}
    script_user root
    enable_script_security
    vrrp_garp_master_repeat 3
    vrrp_garp_master_refresh 5
}}

vrrp_instance FLOOR {{
    state BACKUP
    nopreempt
    interface eth0
    virtual_router_id {VRID}
    priority {101 if n == 'n1' else 100}
    version 3
    advert_int {Timing().advert_int:g}
    unicast_src_ip {SUBNET}.{ADDR[n]}
    unicast_peer {{
        {SUBNET}.{ADDR[peer]}
    }}
    virtual_ipaddress {{
        {VIP}/24 dev eth0
    }}
    notify_master "{script}"
}}
""")

    # -- processes
    def start_pg(self, n: str) -> None:
        self.spawn(n, ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups",
                       f"{PG_BIN}/postgres", "-D", str(self.data(n)), "-c", f"port={PORT}",
                       "-c", f"unix_socket_directories={self.sock(n)}", "-c", f"cluster_name={n}"],
                   self.node_dir(n) / "postgres.log")
        deadline = time.monotonic() + 30
        while self.as_postgres(n, f"{PG_BIN}/pg_isready", "-q", "-h", str(self.sock(n)), "-p", str(PORT),
                               check=False).returncode != 0:
            if time.monotonic() > deadline:
                raise RuntimeError(f"postgres on {n} did not start: "
                                   + (self.node_dir(n) / "postgres.log").read_text()[-800:])
            time.sleep(0.05)

    def sql(self, n: str, query: str) -> str:
        return self.as_postgres(n, f"{PG_BIN}/psql", "-X", "-q", "-At", "-h", str(self.sock(n)),
                                "-p", str(PORT), "-U", "postgres", "-d", "postgres", "-c", query
                                ).stdout.strip()

    def start_keepalived(self, n: str) -> None:
        d = self.node_dir(n)
        for f in ("keepalived.pid", "vrrp.pid", "chk.pid"):  # a killed one's: its PID may be reused
            (d / f).unlink(missing_ok=True)
        self.spawn(n, [KEEPALIVED, "-n", "-l", "-D", "-P", "-f", str(d / "keepalived.conf"),
                       "-p", str(d / "keepalived.pid"), "-r", str(d / "vrrp.pid"), "-c", str(d / "chk.pid")],
                   d / "keepalived.log")

    def has_vip(self, n: str) -> bool:
        res = self.net.host_ip(n, "-o", "addr", "show", "dev", "eth0", check=False)
        return f" {VIP}/" in res.stdout

    def clone(self, n: str, source: str) -> None:
        """``n`` becomes a fresh hot standby of ``source`` (pg_basebackup), then synchronous."""
        shutil.rmtree(self.data(n), ignore_errors=True)
        self.as_postgres(n, f"{PG_BIN}/pg_basebackup", "-D", str(self.data(n)), "-X", "stream",
                         "-c", "fast", "-R", "--no-sync", "-d",
                         f"host={SUBNET}.{ADDR[source]} port={PORT} user=postgres application_name={n}")
        self.start_pg(n)
        self.sql(source, "ALTER SYSTEM SET synchronous_standby_names = '*'")
        self.sql(source, "SELECT pg_reload_conf()")
        deadline = time.monotonic() + 30
        while self.sql(source, "SELECT sync_state FROM pg_stat_replication "
                               f"WHERE application_name = '{n}'") != "sync":
            if time.monotonic() > deadline:
                raise RuntimeError(f"{n} did not become a synchronous standby")
            time.sleep(0.1)

    def power_on(self, n: str) -> None:
        """After a kill: cable in, no process, no VIP left on the interface."""
        self.net.kill_all(n)
        self.net.set_link(n, True)
        self.net.host_ip(n, "link", "set", "eth0", "up")
        self.net.host_ip(n, "addr", "del", f"{VIP}/24", "dev", "eth0", check=False)

    def build(self) -> None:
        """The first pair: n1 primary holding the VIP, n2 synchronous hot standby."""
        from esc.ha.postgres import POSTGRESQL_CONF

        self.prepare()
        res = subprocess.run([f"{PG_BIN}/initdb", "-N", "-D", str(self.data("n1")), "-U", "postgres",
                              "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8"], user="postgres",
                             group="postgres", capture_output=True, text=True, cwd="/")
        if res.returncode:
            raise RuntimeError(f"initdb: {res.stderr}")
        with open(self.data("n1") / "postgresql.conf", "a") as f:
            f.write(POSTGRESQL_CONF)  # the project's settings (remote_apply, timeouts ...)
            f.write("listen_addresses = '*'\n")  # the project sets it per node, at start
        with open(self.data("n1") / "pg_hba.conf", "a") as f:
            f.write(f"host all all {SUBNET}.0/24 trust\nhost replication all {SUBNET}.0/24 trust\n")
        self.start_pg("n1")
        self.sql("n1", "CREATE TABLE w (i bigint PRIMARY KEY, node text NOT NULL, "
                       "at timestamptz NOT NULL DEFAULT now())")
        # n1 takes the VIP alone first (its notify_master clears synchronous_standby_names)
        self.start_keepalived("n1")
        deadline = time.monotonic() + 30
        while not (self.has_vip("n1") and "promoted" in self.notify_times("n1")):
            if time.monotonic() > deadline:
                raise RuntimeError("n1 did not take the VIP: "
                                   + (self.node_dir("n1") / "keepalived.log").read_text()[-800:])
            time.sleep(0.05)
        self.clone("n2", "n1")
        self.join_keepalived("n2", "n1")

    def join_keepalived(self, n: str, master: str) -> None:
        self.start_keepalived(n)
        time.sleep(1.5)  # hears the master's adverts, stays BACKUP (nopreempt)
        if self.has_vip(n) or not self.has_vip(master):
            raise RuntimeError(f"VIP not on {master} alone after {n}'s keepalived started")

    def rejoin(self, n: str, primary: str) -> None:
        """The killed node back as a fresh standby of the new primary (re-cloned)."""
        self.power_on(n)
        self.clone(n, primary)
        self.join_keepalived(n, primary)

    def kill(self, n: str) -> float:
        """Power cut, as esc.lab.lab.kill: every process at once, link down, VIP gone.

        SIGSTOP first, then SIGKILL: killed in PID order, keepalived's parent died before
        its VRRP child, whose parent-death signal (SIGTERM) then made it send a
        priority-0 advert, a graceful release that no power cut gives (seen here in
        1 of 3 runs: MASTER 0.15 s after the kill instead of ~0.6 s)."""
        net = self.net
        pids = net.pids(n)
        net.signal_all(pids, signal.SIGSTOP)
        at = time.time()
        net.signal_all(pids, signal.SIGKILL)
        net.set_link(n, False)
        net.host_ip(n, "addr", "del", f"{VIP}/24", "dev", "eth0", check=False)
        net.kill_all(n)
        return at

    def notify_times(self, n: str) -> dict[str, float]:
        out: dict[str, float] = {}
        try:
            lines = (self.node_dir(n) / "notify.log").read_text().splitlines()
        except FileNotFoundError:
            return out
        for line in lines:
            parts = line.split()
            if len(parts) == 2 and parts[0] in ("master", "promoted") and parts[0] not in out:
                try:
                    out[parts[0]] = float(parts[1])
                except ValueError:
                    pass
        return out


def run_once(fl: Floor, i: int, primary: str, warmup: float = 1.0, settle: float = 1.0) -> dict:
    """Kill ``primary``; the other node must take over. Rows numbered from i * 10**7."""
    from esc.lab.measure import analyse

    new = "n2" if primary == "n1" else "n1"
    state = fl.sql(primary, "SELECT current_setting('synchronous_standby_names') || ' ' || "
                            f"(SELECT sync_state FROM pg_stat_replication WHERE application_name = '{new}')")
    if state != "* sync":
        raise RuntimeError(f"{new} is not a synchronous standby of {primary} before the kill: {state!r}")
    (fl.node_dir(new) / "notify.log").unlink(missing_ok=True)
    fd, out = tempfile.mkstemp(prefix="bf-floor-client-", suffix=".json")
    os.close(fd)
    client = subprocess.Popen(["ip", "netns", "exec", fl.net.ns("cli"), sys.executable, __file__,
                               "--client", out, "--first-row", str(i * 10**7)], stdin=subprocess.DEVNULL)
    try:
        time.sleep(warmup)
        killed_at = fl.kill(primary)
        deadline = time.monotonic() + 30
        while "promoted" not in fl.notify_times(new) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(settle)
    finally:
        client.send_signal(signal.SIGTERM)
        client.wait(30)
    try:
        record = json.loads(Path(out).read_text())
    finally:
        Path(out).unlink(missing_ok=True)
    present = set(fl.sql(new, "SELECT i FROM w").split())
    outcome = analyse(record, present, killed_at, new_node=new)
    marks = {k: v - killed_at for k, v in fl.notify_times(new).items()}
    return {"run": i + 1, "old": primary, "new": new, "first_write_s": outcome.kill_to_first_ack,
            "gap_s": outcome.max_gap, "acked": outcome.acked, "lost": len(outcome.lost),
            "in_doubt": len(record["in_doubt"]), "errors": outcome.errors,
            "master_s": marks.get("master"), "promoted_s": marks.get("promoted")}


def become_subreaper() -> None:
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER


def median(xs: list[float]) -> float:
    s = sorted(xs)
    n = len(s)
    return (s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2) if s else float("nan")


def summarize(runs: list[dict]) -> dict:
    from common import machine

    from esc.lab import provenance

    first = [r["first_write_s"] for r in runs if r["first_write_s"] is not None]
    return {
        "benchmark": "floor", "commit": provenance.commit(),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(), "runs": len(runs), "failed_runs": len(runs) - len(first),
        "first_write_median_s": round(median(first), 4) if first else None,
        "first_write_worst_s": round(max(first), 4) if first else None,
        "gap_median_s": round(median([r["gap_s"] for r in runs]), 4),
        "master_median_s": round(median([r["master_s"] for r in runs if r["master_s"] is not None]), 4),
        "promoted_median_s": round(median([r["promoted_s"] for r in runs if r["promoted_s"] is not None]), 4),
        "acked": sum(r["acked"] for r in runs), "lost": sum(r["lost"] for r in runs),
        "loadavg_1min_end": round(os.getloadavg()[0], 2),
        "per_run": runs,
    }


def render(s: dict) -> str:
    from esc.config import Timing

    lines = [
        f"# Failover floor: keepalived + PostgreSQL promote, {s['date']}", "",
        f"Commit: `{s['commit']}`. Machine: {s['machine']}. Load average (1 min) at the start "
        f"{s.get('loadavg_1min_start', float('nan')):.2f}, at the end {s['loadavg_1min_end']:.2f} "
        "(other work on the machine shows here).", "",
        "What any keepalived + streaming-replication pair needs on this machine, with no project "
        "code: the reference for the project's failover figure (bench/failover.py reports the "
        "ratio). Made by `bench/floor.py` (`make bench` runs it first).", "",
        "Method: two network namespaces on a bridge and a client namespace (esc.lab.net). Each "
        "node runs keepalived with the project's VRRP settings (VRRPv3, advert_int "
        f"{Timing().advert_int:g} s, unicast, nopreempt, both BACKUP, priority 101/100, GARP "
        "repeat 3) and a `notify_master` shell script that runs psql on the local socket: "
        "`ALTER SYSTEM SET synchronous_standby_names = ''`, `pg_reload_conf()`, `pg_promote()`. "
        "PostgreSQL 15 primary and hot standby with the project's postgresql.conf settings "
        "(synchronous replication, `synchronous_commit = remote_apply`). The client (psycopg, "
        f"asyncio) inserts one row per ~{WRITE_EVERY * 1000:.0f} ms through the VIP, "
        f"{CONNECT_TIMEOUT:g} s connect and {STATEMENT_TIMEOUT:g} s statement timeouts, "
        "reconnecting on error and retrying the same row. Fault: every process of the primary's "
        "namespace (keepalived, postgres) SIGSTOPped, then SIGKILLed, its link down, the VIP "
        "removed (as `escadm lab kill`, plus the SIGSTOP: without it keepalived's VRRP child, "
        "whose parent died first, sometimes got its parent-death SIGTERM in time to send a "
        "priority-0 advert, a graceful handover a power cut never gives). *First write* = kill "
        "-> first row acknowledged by the new primary; *gap* = longest time between two "
        "acknowledged rows. Every run starts from a "
        "fresh standby: the first from initdb and pg_basebackup; then the killed node is powered "
        "on, re-cloned from the new primary (pg_basebackup), its keepalived joins as BACKUP, and "
        "the next run kills the other node (directions alternate).", "",
        "| runs | first write median | worst | gap median | VRRP MASTER (script start) median "
        "| promoted (script end) median | acked rows | lost |",
        "|---|---|---|---|---|---|---|---|",
        f"| {s['runs']} | {s['first_write_median_s']:.3f} s | {s['first_write_worst_s']:.3f} s "
        f"| {s['gap_median_s']:.3f} s | {s['master_median_s']:.3f} s | {s['promoted_median_s']:.3f} s "
        f"| {s['acked']} | {s['lost']} |", "",
        "Per run (seconds after the kill):", "",
        "| run | MASTER | promoted | first write | gap | client errors |", "|---|---|---|---|---|---|"]
    for r in s["per_run"]:
        errs = ", ".join(f"{k} {v}" for k, v in sorted(r["errors"].items()))
        fw = f"{r['first_write_s']:.3f}" if r["first_write_s"] is not None else "none"
        ms = f"{r['master_s']:.3f}" if r["master_s"] is not None else "-"
        ps = f"{r['promoted_s']:.3f}" if r["promoted_s"] is not None else "-"
        lines.append(f"| {r['run']} | {ms} | {ps} | {fw} | {r['gap_s']:.3f} | {errs} |")
    lines.append("")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--json", action="store_true", help="the figures as JSON on stdout")
    ap.add_argument("--no-report", action="store_true", help="do not write docs/benchmarks/floor-DATE.md")
    ap.add_argument("--cleanup", action="store_true", help="remove what a failed run left, and exit")
    ap.add_argument("--client", metavar="OUT", help=argparse.SUPPRESS)
    ap.add_argument("--first-row", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.client:
        asyncio.run(_client(args.client, args.first_row, duration=120))
        return 0
    if args.runs < 1:
        ap.error("--runs must be >= 1")
    fl = Floor()
    if args.cleanup:
        fl.destroy()
        return 0
    runs: list[dict] = []
    t0 = time.monotonic()
    load0 = os.getloadavg()[0]
    become_subreaper()  # the killed postmasters' children are reaped at once (by kill_all)
    fl.create_network()
    try:
        fl.build()
        primary = "n1"
        for i in range(args.runs):
            if i:
                fl.rejoin(primary, runs[-1]["new"])
                primary = runs[-1]["new"]
            r = run_once(fl, i, primary)
            runs.append(r)
            fw = f"{r['first_write_s']:.3f}s" if r["first_write_s"] is not None else "NONE"
            log(f"floor run {i + 1}/{args.runs} ({r['old']}->{r['new']}): first write after {fw}, "
                f"gap {r['gap_s']:.3f}s, MASTER +{r['master_s'] or float('nan'):.3f}s, "
                f"promoted +{r['promoted_s'] or float('nan'):.3f}s, lost {r['lost']} of {r['acked']}")
    finally:
        fl.destroy()
    s = summarize(runs)
    s["duration_s"] = round(time.monotonic() - t0, 1)
    s["loadavg_1min_start"] = round(load0, 2)
    if not args.no_report:
        path = ROOT / "docs/benchmarks" / f"floor-{datetime.now(UTC).strftime('%Y-%m-%d')}.md"
        path.write_text(render(s))
        s["report"] = str(path.relative_to(ROOT))
        log(f"written to {s['report']}")
    if args.json:
        print(json.dumps(s, indent=1))
    else:
        print(render(s))
    return 1 if s["lost"] or s["failed_runs"] else 0


if __name__ == "__main__":
    sys.exit(main())
