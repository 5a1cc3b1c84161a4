"""Shared by the demo and the benchmark: drive the lab and measure a fault."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from esc.config import NodePaths
from esc.lab import lab as labmod
from esc.lab import net, provenance
from esc.lab.measure import Outcome, analyse

ROOT = Path(__file__).resolve().parent.parent


def write_report(kind: str, report: str) -> Path:
    """docs/benchmarks/KIND-DATE.md (today's, replaced), printed with its path."""
    from datetime import UTC, datetime

    out_dir = ROOT / "docs/benchmarks"
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{kind}-{datetime.now(UTC):%Y-%m-%d}.md"
    path.write_text(report)
    print(report)
    print(f"written to {path.relative_to(ROOT)}")
    return path


def machine() -> str:
    return provenance.machine()


def io_pressure() -> float | None:
    """The share of the last minute some task waited for I/O (/proc/pressure/io, %): other
    work on the machine slows fsyncs, and with them PostgreSQL's start after a crash."""
    try:
        some = Path("/proc/pressure/io").read_text().splitlines()[0]
        return float(some.split("avg60=")[1].split()[0])
    except (OSError, IndexError, ValueError):
        return None


def escadm(node: str, *args: str) -> str:
    res = net.netns_exec(node, sys.executable, "-m", "esc.cli.escadm", "--root",
                         str(labmod.node_root(node)), *args, check=False, timeout=120)
    return (res.stdout + res.stderr).rstrip()


class Writer:
    def __init__(self, state: dict, prefix: str, timeout: float = 0.5) -> None:
        self.out = Path(tempfile.mkstemp(prefix=f"esc-writer-{prefix}-", suffix=".json")[1])
        url = labmod.vip_url(state)
        argv = labmod.exec_argv(labmod.CLIENT, [
            sys.executable, "-m", "esc.lab.writer", "--url", url, "--user", state["rest_user"],
            f"--password={state['rest_password']}", "--duration", "600", "--prefix", prefix,
            "--out", str(self.out), "--timeout", str(timeout)])
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL)

    def stop(self) -> dict:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(30)
        data = json.loads(self.out.read_text())
        self.out.unlink(missing_ok=True)
        return data


def api(state: dict, method: str, path: str, body: dict | None = None) -> tuple[int, object]:
    """One REST call through the VIP from the client namespace."""
    url = f"{labmod.vip_url(state)}{path}"
    code = (f"import httpx,json;r=httpx.request({method!r},{url!r},json={body!r},"
            f"auth=({state['rest_user']!r},{state['rest_password']!r}),timeout=30);"
            "print(json.dumps([r.status_code, r.json() if r.content else None]))")
    res = labmod.client_run([sys.executable, "-c", code])
    if res.returncode != 0:
        raise RuntimeError(res.stderr)
    status, out = json.loads(res.stdout)
    return status, out


def wait_transaction(state: dict, tx: int, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        status, body = api(state, "GET", f"/v0/transactions/{tx}")
        if status == 200 and isinstance(body, dict) and body["status"] in ("succeeded", "failed"):
            return body
        if time.monotonic() > deadline:
            raise RuntimeError(f"transaction {tx} not finished: {body}")
        time.sleep(0.2)


def names_via_vip(state: dict) -> set[str]:
    status, out = api(state, "GET", "/v0/deployments")
    if status != 200 or not isinstance(out, list):
        raise RuntimeError(f"GET /v0/deployments answered {status}: {out}")
    return {d["name"] for d in out}


@dataclass
class FailoverResult:
    old: str
    new: str
    outcome: Outcome
    rejoin_s: float
    timeline: dict[str, float]  # event on the new active -> seconds after the kill


MILESTONES = {
    "keepalived MASTER": "keepalived reports MASTER",
    "promote started": "job promote started",
    "promoted": "job promote done",
    "serving": "escmanager serving",
}


def timeline(node: str, since: float, milestones: dict[str, str] | None = None) -> dict[str, float]:
    """When each milestone of a takeover appears in the node's agent.log, after ``since``."""
    from datetime import datetime

    milestones = MILESTONES if milestones is None else milestones
    out: dict[str, float] = {}
    log = NodePaths(labmod.node_root(node)).log / "agent.log"
    for line in log.read_text(errors="replace").splitlines():
        try:
            at = datetime.strptime(line[:23], "%Y-%m-%dT%H:%M:%S.%f").timestamp()
        except ValueError:
            continue
        if at < since:
            continue
        for name, text in milestones.items():
            if name not in out and text in line:
                out[name] = at - since
    return out


def failover_once(state: dict, prefix: str, warmup: float = 1.0, link_first: bool = False,
                  milestones: dict[str, str] | None = None, settle: float = 1.0) -> FailoverResult:
    """Writer on; kill the active (power cut; ``link_first``: the cable goes before the
    processes die, so no FIN leaves the node); wait for the new active's writes;
    power the old node back on and wait for it to be STANDBY."""
    old = labmod.active_node()
    assert old, labmod.roles()
    new = "n2" if old == "n1" else "n1"
    writer = Writer(state, prefix)
    time.sleep(warmup)
    killed_at = labmod.kill(old, link_first=link_first).at
    labmod.wait_roles({"ACTIVE", "STOPPED"}, timeout=30)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # until the writer has written through the new active
        time.sleep(0.5)
        if labmod.node_status(new).get("role") == "ACTIVE":
            break
    time.sleep(settle)  # the writer's first acknowledgements by the new active
    record = writer.stop()
    outcome = analyse(record, names_via_vip(state), killed_at, new_node=new)
    steps = timeline(new, killed_at, milestones)
    t0 = time.monotonic()
    labmod.start(old)
    try:
        labmod.wait_roles({"ACTIVE", "STANDBY"}, timeout=90)
    except labmod.LabError:
        labmod.dump_logs(lines=80)  # before the lab (and its logs) goes away
        raise
    return FailoverResult(old, new, outcome, time.monotonic() - t0, steps)


def median(xs: list[float]) -> float:
    s = sorted(xs)
    n = len(s)
    return (s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2) if s else float("nan")
