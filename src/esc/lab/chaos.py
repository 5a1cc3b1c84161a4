"""Fault injection on the lab: a catalogue of faults, and a runner that injects one
while a client writes, repairs it, and checks the safety rules.

One run of a fault:

1. the pair is healthy (one ACTIVE, one STANDBY);
2. in the client namespace, the writer (writer.py) writes numbered records through
   the VIP and the prober (prober.py) writes to each node's own address every 50 ms;
3. the fault is injected, held for its time, then repaired (SIGCONT, cable back,
   ``escadm start`` ...; faults the agent repairs by itself need nothing);
4. the run waits until the pair is healthy again and the writer is acknowledged;
5. the checker reads every record from the active and reports acknowledged writes
   that are missing (must be none), windows where two nodes accepted writes (must be
   none), how long the service was out, how long the pair took to be healthy after
   the repair, and the final roles.

``escadm lab chaos`` runs faults repeatedly and writes the table (``make chaos``);
the test suite runs each fault once (tests/lab/test_chaos.py).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from esc.config import NodePaths
from esc.lab import lab, net
from esc.lab.measure import acks_of, dual_writer_windows


@dataclass(frozen=True)
class Pair:
    active: str
    standby: str

    def node(self, which: str) -> str:
        return self.active if which == "active" else self.standby


@dataclass(frozen=True)
class Fault:
    name: str
    doc: str
    inject: Callable[[Pair], None]
    repair: Callable[[Pair], None]
    hold: float = 0.0  # seconds between inject and repair
    mode: str = "drbd"  # the lab mode it needs
    needs_witness: bool = False  # without one, a documented failure (docs/failure-modes.md)
    witness_only: bool = False  # a fault of the witness itself ...
    witness_kind: str = "builtin"  # ... of this kind (lab up --witness KIND)
    same_roles: bool = False  # nothing may change: the same active and standby afterwards
    # a second network between the nodes (lab --paths 2) handles it without a witness
    paths_suffice: bool = False

    def needs_witness_with(self, paths: int) -> bool:
        """Whether, on a lab with ``paths`` networks between the nodes, this fault is a
        documented failure without a witness."""
        return self.needs_witness and not (self.paths_suffice and paths > 1)


# --- fault verbs ---------------------------------------------------------------------


def service_pid(node: str, kind: str) -> int:
    """The PID of one of a node's processes: the agent, or a service it supervises."""
    if kind == "agent":
        return int(NodePaths(lab.node_root(node)).agent_pid.read_text())
    st = lab.node_status(node)
    pid = st.get("services", {}).get(kind, {}).get("pid")
    if not pid:
        raise lab.LabError(f"{node}: no {kind} process to kill ({st.get('role')})")
    return int(pid)


def kill_process(which: str, kind: str) -> Callable[[Pair], None]:
    def inject(pair: Pair) -> None:
        os.kill(service_pid(pair.node(which), kind), signal.SIGKILL)
    return inject


def nothing(pair: Pair) -> None:
    """The agent repairs this one by itself."""


def restart_node(which: str) -> Callable[[Pair], None]:
    def repair(pair: Pair) -> None:
        lab.start(pair.node(which))
    return repair


def power_cut(which: str) -> Callable[[Pair], None]:
    def inject(pair: Pair) -> None:
        lab.kill(pair.node(which))
    return inject


def pause(which: str, sig: signal.Signals) -> Callable[[Pair], None]:
    """SIGSTOP / SIGCONT every process of the node: a frozen VM."""
    def act(pair: Pair) -> None:
        net.signal_all(net.pids(pair.node(which)), sig)
    return act


def cable(which: str, connected: bool) -> Callable[[Pair], None]:
    def act(pair: Pair) -> None:
        (lab.heal if connected else lab.cut)(pair.node(which))
    return act


def partition(on: bool, every_network: bool = False) -> Callable[[Pair], None]:
    """The two nodes stop reaching each other on the first network (VRRP, replication),
    or on ``every_network``; both still reach the client (their bridge ports isolated
    from each other, not from the client's)."""
    def act(pair: Pair) -> None:
        for n in lab.NODES:
            for p in net.ports(n) if every_network else [net.port(n)]:
                subprocess.run(["ip", "netns", "exec", net.switch(), "bridge", "link", "set", "dev", p,
                                "isolated", "on" if on else "off"], check=True, capture_output=True)
    return act


NETEM = ["delay", "40ms", "10ms", "loss", "5%"]
# Kernels without sch_netem (this lab machine's): a token bucket small enough that
# replication bursts queue (delay) and overflow (loss); both directions of the link.
TBF = ["tbf", "rate", "2mbit", "burst", "16kb", "latency", "40ms"]


def netem(which: str, on: bool) -> Callable[[Pair], None]:
    """Delay and loss on the node's link, both ways (replication and heartbeats pass
    there): netem where the kernel has it, else a token bucket."""
    def act(pair: Pair) -> None:
        node = pair.node(which)
        if not on:
            net.netns_exec(node, "tc", "qdisc", "del", "dev", "eth0", "root", check=False)
            subprocess.run(["ip", "netns", "exec", net.switch(), "tc", "qdisc", "del", "dev", f"p-{node}",
                            "root"], capture_output=True)
            return
        res = net.netns_exec(node, "tc", "qdisc", "replace", "dev", "eth0", "root", "netem", *NETEM,
                             check=False)
        if res.returncode == 0:
            return
        net.netns_exec(node, "tc", "qdisc", "replace", "dev", "eth0", "root", *TBF)
        subprocess.run(["ip", "netns", "exec", net.switch(), "tc", "qdisc", "replace", "dev", f"p-{node}",
                        "root", *TBF], check=True, capture_output=True)
    return act


def fill_disk(which: str, full: bool) -> Callable[[Pair], None]:
    """Fill (or free) the node's database volume (lab mode drbd_on_cinder)."""
    def act(pair: Pair) -> None:
        filler = lab.volume_path(pair.node(which)) / "chaos-filler"
        if full:
            subprocess.run(["fallocate", "-l", "10G", str(filler)], capture_output=True)
            if not filler.exists():  # fallocate refuses more than the free space: write until full
                subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=1M"], capture_output=True)
        else:
            filler.unlink(missing_ok=True)
    return act


def witness_down(pair: Pair) -> None:
    lab.kill_witness()


def witness_up(pair: Pair) -> None:
    lab.start_witness()


def etcd_down(member: str | None) -> Callable[[Pair], None]:
    """kill -9 of one etcd member (None: every one)."""
    def act(pair: Pair) -> None:
        lab.etcd_kill(member)
    return act


def etcd_up(member: str | None) -> Callable[[Pair], None]:
    def act(pair: Pair) -> None:
        lab.etcd_start(member)
    return act


def restart_both(pair: Pair) -> None:
    """Both nodes lose power at the same instant."""
    net.signal_all([pid for n in lab.NODES for pid in net.pids(n)])
    for n in lab.NODES:
        lab.kill(n)  # links down, VIP gone, every process reaped


def active_then_standby(pair: Pair) -> None:
    """The active dies; the standby takes over and acknowledges writes alone; then it
    dies too. When both come back, only the second one's data holds every write."""
    lab.kill(pair.active)
    deadline = time.monotonic() + 15
    while lab.node_status(pair.standby).get("role") != "ACTIVE" and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)  # writes acknowledged by the new active alone
    lab.kill(pair.standby)


def start_both(pair: Pair) -> None:
    for n in lab.NODES:
        lab.start(n)


def _catalogue() -> dict[str, Fault]:
    faults = []
    for which in ("active", "standby"):
        for kind, label in (("agent", "agent"), ("pgsql", "postgres"), ("keepalived", "keepalived"),
                            ("escmanager", "controller")):
            faults.append(Fault(
                f"kill-{label}-{which}", f"kill -9 of the {which}'s {label}",
                kill_process(which, kind),
                restart_node(which) if kind == "agent" else nothing,
                hold=2.0 if kind == "agent" else 0.0))
        faults.append(Fault(f"power-cut-{which}", f"every process of the {which} killed, link down",
                            power_cut(which), restart_node(which), hold=2.0))
        faults.append(Fault(f"cut-{which}", f"the {which}'s cable pulled for 3 s",
                            cable(which, False), cable(which, True), hold=3.0))
    faults += [
        Fault("pause-active", "every process of the active stopped (SIGSTOP) for 3 s, then SIGCONT",
              pause("active", signal.SIGSTOP), pause("active", signal.SIGCONT), hold=3.0),
        Fault("partition", "the nodes cannot reach each other on the first network (VRRP, replication) "
              "for 6 s; both reach the client; a second network (lab --paths 2) still joins them",
              partition(True), partition(False), hold=6.0, needs_witness=True, paths_suffice=True),
        Fault("partition-all", "the nodes cannot reach each other on any network for 6 s; both reach "
              "the client", partition(True, every_network=True), partition(False, every_network=True),
              hold=6.0, needs_witness=True),
        Fault("netem-standby", f"netem {' '.join(NETEM)} on the standby's link for 6 s (or, without "
              f"netem in the kernel, {' '.join(TBF)} both ways)",
              netem("standby", True), netem("standby", False), hold=6.0),
        Fault("disk-full-standby", "the standby's database volume filled for 6 s",
              fill_disk("standby", True), fill_disk("standby", False), hold=6.0, mode="drbd_on_cinder"),
        Fault("restart-both", "both nodes killed at once, then both started", restart_both, start_both,
              hold=1.0),
        Fault("double-failure", "the active killed, then the new active once it has acknowledged "
              "writes alone; then both started", active_then_standby, start_both, hold=1.0),
        Fault("kill-witness", "the witness killed for 3 s, then started again (it grants no lease "
              "for 2 s after a start)", witness_down, witness_up, hold=3.0, witness_only=True),
        # etcd1 is the member both nodes ask first: they go on with the next one
        Fault("kill-etcd-member", "etcd witness: the first member killed for 3 s, then started; "
              "nothing may change (the same active, no lost write)", etcd_down("etcd1"), etcd_up("etcd1"),
              hold=3.0, witness_only=True, witness_kind="etcd", same_roles=True),
        Fault("kill-etcd-all", "etcd witness: every member killed for 6 s, then started; no lease, so "
              "no failover could happen, and the active keeps serving with its synchronous standby",
              etcd_down(None), etcd_up(None), hold=6.0, witness_only=True, witness_kind="etcd",
              same_roles=True),
    ]
    return {f.name: f for f in faults}


FAULTS = _catalogue()


# --- one run ---------------------------------------------------------------------------


@dataclass
class Result:
    fault: str
    ok: bool
    acked: int
    lost: list[str]
    dual_writer_windows: list[tuple[float, float]]
    service_gap_s: float  # longest time without an acknowledged write (writer, through the VIP)
    recovered_s: float | None  # repair -> pair healthy and writes acknowledged; None: never
    roles_before: dict[str, str]
    roles_after: dict[str, str]
    notes: list[str] = field(default_factory=list)

    def row(self) -> dict:
        return {"fault": self.fault, "ok": self.ok, "acked": self.acked, "lost": len(self.lost),
                "dual_writer_windows": len(self.dual_writer_windows),
                "service_gap_s": round(self.service_gap_s, 2),
                "recovered_s": None if self.recovered_s is None else round(self.recovered_s, 2),
                "roles_before": self.roles_before, "roles_after": self.roles_after, "notes": self.notes}


def _client_proc(module: str, args: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(lab.exec_argv(lab.CLIENT, [sys.executable, "-m", module, *args]),
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _stop(proc: subprocess.Popen[bytes], out: Path, timeout: float = 20) -> dict:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    try:
        return json.loads(out.read_text())
    except (OSError, ValueError):
        return {}


def healthy_pair() -> Pair | None:
    roles = lab.roles()
    active = [n for n, r in roles.items() if r == "ACTIVE"]
    standby = [n for n, r in roles.items() if r == "STANDBY"]
    if len(active) == 1 and len(standby) == 1:
        return Pair(active[0], standby[0])
    return None


def wait_healthy(timeout: float) -> Pair | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pair = healthy_pair()
        if pair is not None:
            return pair
        time.sleep(0.1)
    return None


def names_present(state: dict) -> set[str]:
    """Every record, read through the VIP from the client namespace."""
    url = f"{lab.vip_url(state)}/v0/deployments"
    code = (f"import httpx,json;r=httpx.get({url!r},auth=({state['rest_user']!r},"
            f"{state['rest_password']!r}),timeout=30);r.raise_for_status();"
            "print(json.dumps([d['name'] for d in r.json()]))")
    res = lab.client_run([sys.executable, "-c", code], timeout=60)
    if res.returncode != 0:
        raise lab.LabError(f"cannot read the records through the VIP: {res.stderr.strip()[-300:]}")
    return set(json.loads(res.stdout))


def run_fault(fault: Fault, workdir: Path, tag: str = "", recover_timeout: float = 90.0,
              log: Callable[[str], None] = lambda _: None) -> Result:
    """One run of ``fault`` on the lab that is up. Always repairs, and always stops the
    client processes, even when something fails halfway."""
    state = lab.load_state()
    pair = wait_healthy(60)
    if pair is None:
        raise lab.LabError(f"the pair is not healthy before {fault.name}: {lab.roles()}")
    roles_before = lab.roles()
    prefix = f"{fault.name}{tag}"
    w_out, p_out = workdir / f"{prefix}-writer.json", workdir / f"{prefix}-prober.json"
    auth = ["--user", state["rest_user"], f"--password={state['rest_password']}"]
    writer = _client_proc("esc.lab.writer", [
        "--url", lab.vip_url(state), *auth, "--duration", "600",
        "--prefix", f"w-{prefix}", "--out", str(w_out)])
    prober = _client_proc("esc.lab.prober", [
        *(x for n in lab.NODES for x in ("--node", f"{n}=http://{lab.node_ip(n)}:{state['api_port']}")),
        *auth, "--out", str(p_out)])
    notes: list[str] = []
    checks: list[str] = []  # acknowledged writes of the run itself
    repaired = False
    recovered_s = None
    try:
        time.sleep(1.5)  # acknowledged writes before the fault
        log(f"{fault.name}: injecting ({fault.doc}); active {pair.active}")
        fault.inject(pair)
        time.sleep(fault.hold)
        fault.repair(pair)
        repaired = True
        t_repair = time.monotonic()
        after = wait_healthy(recover_timeout)
        if after is None:
            notes.append(f"not healthy {recover_timeout:.0f}s after the repair: {lab.roles()}")
        else:
            if write_through_vip(state, f"check-{prefix}", timeout=20):
                recovered_s = time.monotonic() - t_repair
                checks.append(f"check-{prefix}")
            else:
                notes.append("the pair is healthy but no write is acknowledged through the VIP")
        time.sleep(0.5)
    finally:
        if not repaired:
            try:
                fault.repair(pair)
            except Exception as e:  # the run has failed already; say why the repair did too
                notes.append(f"repair failed: {e}")
        w_rec, p_rec = _stop(writer, w_out), _stop(prober, p_out)
    roles_after = lab.roles()
    if fault.same_roles and roles_after != roles_before:
        notes.append(f"the roles changed: {roles_before} -> {roles_after}")
    acks = acks_of(w_rec, p_rec)
    try:
        present = names_present(state)
        lost = sorted({a.name for a in acks if a.name not in present} | set(checks) - present)
    except lab.LabError as e:
        notes.append(str(e))
        lost = []
    windows = dual_writer_windows(acks)
    times = sorted(a.answered for a in acks_of(w_rec))
    gap = max((b - a for a, b in zip(times, times[1:], strict=False)), default=0.0)
    ok = not lost and not windows and recovered_s is not None and not notes
    return Result(fault.name, ok, len(acks), lost, windows, gap, recovered_s, roles_before, roles_after,
                  notes)


def write_through_vip(state: dict, name: str, timeout: float) -> bool:
    """One write through the VIP, retried until acknowledged or ``timeout``."""
    url = f"{lab.vip_url(state)}/v0/deployments"
    code = (f"import httpx,time\nt=time.monotonic()\nwhile time.monotonic()-t<{timeout}:\n"
            f" try:\n  r=httpx.post({url!r},json={{'name':{name!r}}},auth=({state['rest_user']!r},"
            f"{state['rest_password']!r}),timeout=2)\n  if r.status_code<300 or r.status_code==409: break\n"
            f" except httpx.HTTPError: pass\n time.sleep(0.2)\nelse: raise SystemExit(1)")
    return lab.client_run([sys.executable, "-c", code], timeout=timeout + 10).returncode == 0


# --- many runs: the suite ---------------------------------------------------------------


def select(names: list[str] | None) -> list[Fault]:
    """The faults named (all when none), in catalogue order; unknown names refused."""
    if not names:
        return list(FAULTS.values())
    unknown = [n for n in names if n not in FAULTS]
    if unknown:
        raise lab.LabError(f"unknown fault(s) {', '.join(unknown)}; known: {', '.join(FAULTS)}")
    return [f for f in FAULTS.values() if f.name in names]


# A run of a single fault whose write gap is past this keeps every node's logs of the run
# (and so does a failed run), so that a rare tail can be looked at afterwards.
KEEP_LOGS_OVER_S = 1.8
LOGS_KEPT = ("agent.log", "escmanager.log", "keepalived.log", "postgres.log")
MULTIPLE = {"restart-both", "double-failure"}  # not single faults: long gaps by nature


def _log_sizes() -> dict[Path, int]:
    sizes = {}
    for node in lab.NODES:
        for name in LOGS_KEPT:
            path = lab.node_root(node) / "var/log/esc" / name
            try:
                sizes[path] = path.stat().st_size
            except OSError:
                sizes[path] = 0
    return sizes


def _keep_logs(before: dict[Path, int], into: Path) -> Path:
    """What each node's logs gained since ``before``, copied to ``into``."""
    into.mkdir(parents=True, exist_ok=True)
    for path, size in before.items():
        try:
            with open(path, "rb") as f:
                f.seek(size if path.stat().st_size >= size else 0)  # rotated meanwhile
                data = f.read()
        except OSError:
            continue
        node = path.parents[3].name
        (into / f"{node}-{path.name}").write_bytes(data)
    return into


def run_suite(faults: list[Fault], count: int, workdir: Path, witness: bool | str | None = False,
              log: Callable[[str], None] = print, paths: int = 1) -> list[Result]:
    """Each fault ``count`` times, on a lab of the mode it needs, with a witness (True or
    "builtin": esc's; "etcd": an etcd cluster) or not and ``paths`` networks between the
    nodes (made here, rebuilt when a run leaves the pair unhealthy, removed at the end).
    Faults of a witness are skipped without that kind of witness."""
    witness = lab.witness_kind(witness)
    faults = [f for f in faults if not f.witness_only or f.witness_kind == witness]
    if count < 1:
        raise lab.LabError(f"count must be at least 1, not {count}")
    if lab.is_up():
        raise lab.LabError("a lab is already up: the suite makes its own (run `escadm lab down`, "
                           "or set ESC_LAB_NS_PREFIX / ESC_LAB_DIR to keep it apart)")
    results: list[Result] = []
    for mode in dict.fromkeys(f.mode for f in faults):
        lab.up(mode=mode, log=log, witness=witness, paths=paths)
        try:
            for fault in (f for f in faults if f.mode == mode):
                for i in range(count):
                    if wait_healthy(60) is None:
                        log(f"the pair is not healthy ({lab.roles()}): rebuilding the lab")
                        lab.down()
                        lab.up(mode=mode, log=log, witness=witness, paths=paths)
                    before = _log_sizes()
                    r = run_fault(fault, workdir, tag=f"-{i}", log=log)
                    results.append(r)
                    if not r.ok or (r.service_gap_s > KEEP_LOGS_OVER_S and fault.name not in MULTIPLE):
                        kept = _keep_logs(before, workdir / f"logs-{fault.name}-{i}")
                        log(f"{fault.name} #{i + 1}: its logs are kept in {kept}")
                    log(f"{fault.name} #{i + 1}: {'ok' if r.ok else 'FAILED'}; lost {len(r.lost)}, "
                        f"two writers {len(r.dual_writer_windows)}, gap {r.service_gap_s:.2f}s, "
                        f"recovered {r.recovered_s if r.recovered_s is None else round(r.recovered_s, 2)}s"
                        + (f"; {'; '.join(r.notes)}" if r.notes else ""))
        finally:
            lab.down()
    return results


def _median(xs: list[float]) -> float:
    xs = sorted(xs)
    return xs[len(xs) // 2] if len(xs) % 2 else (xs[len(xs) // 2 - 1] + xs[len(xs) // 2]) / 2


def report(results: list[Result], title: str, witness: bool | str | None = False, paths: int = 1) -> str:
    """The markdown table of a suite's results, one line per fault."""
    from esc.config import WITNESS_TIMING_DEFAULTS, Timing
    from esc.lab import provenance

    t = Timing(**WITNESS_TIMING_DEFAULTS) if witness else Timing()
    lines = [f"# {title}", "", provenance.line(), "",
             f"Timers: VRRP advert {t.advert_int} s, heartbeat {t.heartbeat_interval} s / "
             f"{t.heartbeat_timeout} s, promote_window {t.promote_window} s, alone_after "
             f"{t.alone_after} s. Writer through the VIP, prober to each node every 50 ms "
             "(src/esc/lab/chaos.py). \"lost\": acknowledged writes missing afterwards; "
             "\"two writers\": windows where two nodes certainly both acknowledged writes; "
             "\"gap\": longest time without an acknowledged write through the VIP; "
             "\"recovered\": repair to a healthy pair with a write acknowledged. "
             + ("With an etcd witness (3 members beside the client, heartbeat 100 ms, election 600 ms; "
                "lease 1 s)." if witness == "etcd" else
                "With a witness (in the client namespace; lease 1 s)." if witness else
                "Without a witness: a partition between the nodes is the documented failure.")
             + (f" {paths} networks between the nodes (--ha_heartbeat_list)." if paths > 1 else ""), "",
             "| fault | runs | ok | lost | two writers | gap median / max (s) | recovered median / max (s) "
             "| final roles | notes |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name in dict.fromkeys(r.fault for r in results):
        rs = [r for r in results if r.fault == name]
        gaps = [r.service_gap_s for r in rs]
        rec = [r.recovered_s for r in rs if r.recovered_s is not None]
        finals = sorted({" ".join(f"{n}={role}" for n, role in sorted(r.roles_after.items())) for r in rs})
        notes = sorted({n for r in rs for n in r.notes})
        rec_txt = f"{_median(rec):.2f} / {max(rec):.2f}" if rec else "never"
        if len(rec) < len(rs) and rec:
            rec_txt += f" ({len(rs) - len(rec)} never)"
        needs = " (needs a witness)" if FAULTS[name].needs_witness_with(paths) and not witness else ""
        lines.append(f"| {name}{needs} | {len(rs)} "
                     f"| {sum(r.ok for r in rs)} | {sum(len(r.lost) for r in rs)} "
                     f"| {sum(len(r.dual_writer_windows) for r in rs)} "
                     f"| {_median(gaps):.2f} / {max(gaps):.2f} | {rec_txt} | {'; '.join(finals)} "
                     f"| {'; '.join(notes)} |")
    lines += ["", "Faults:", ""]
    lines += [f"- `{f.name}`: {f.doc}" for f in FAULTS.values() if f.name in {r.fault for r in results}]
    return "\n".join(lines) + "\n"
