"""make bench (part 5): the NETCONF service through the VIP.

A fresh lab; bench/netconf_client.py in the client namespace measures get-config,
edit-config (a tenant: the transaction accepted, committed on both nodes), a deployment
of one VM from edit-config to its CREATE_DEPLOYMENT notification; then the active is
killed and the client measures, from the kill, the first get-config answered through
the VIP by the new active (three times, the node started again in between). Writes a
dated Markdown report to docs/benchmarks/.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import write_report  # noqa: E402

from esc.lab import lab as labmod  # noqa: E402
from esc.lab import provenance  # noqa: E402


def client(state: dict, *extra: str, timeout: float = 600) -> dict:
    res = labmod.client_run([sys.executable, str(ROOT / "bench/netconf_client.py"), "--host", state["vip"],
                             "--user", state["confd_user"], "--password", state["confd_password"], *extra],
                            timeout=timeout)
    if res.returncode != 0:
        raise RuntimeError(res.stderr[-3000:])
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gets", type=int, default=200)
    ap.add_argument("--edits", type=int, default=50)
    ap.add_argument("--deployments", type=int, default=10)
    ap.add_argument("--failovers", type=int, default=3)
    args = ap.parse_args()
    if labmod.is_up():
        labmod.down()
    state = labmod.up(log=lambda *_: None)
    reconnects = []
    try:
        out = client(state, "--gets", str(args.gets), "--edits", str(args.edits),
                     "--deployments", str(args.deployments))
        for _ in range(args.failovers):
            active = labmod.active_node()
            assert active is not None
            killed = labmod.kill(active)
            done = client(state, "--reconnect", timeout=90)["done_at"]
            reconnects.append(done - killed.at)  # one clock: the namespaces share it
            labmod.start(active)
            labmod.wait_roles({"ACTIVE", "STANDBY"}, timeout=120)
    finally:
        labmod.down()

    now = datetime.now(UTC)
    ms = lambda v: f"{v * 1000:.1f}"  # noqa: E731

    def row(what: str, s: dict) -> str:
        return f"| {what} | {s['n']} | {ms(s['p50'])} | {ms(s['p99'])} | {ms(s['max'])} |"

    lines = [
        f"# NETCONF benchmark, {now:%Y-%m-%d %H:%M} UTC", "", provenance.line(), "",
        "Through the VIP from the lab's client namespace, one SSH session (asyncssh, chunked framing),"
        " one request at a time. An edit-config answers once its transactions are committed on both"
        " nodes; the deployment's VM is made afterwards, and its CREATE_DEPLOYMENT notification ends"
        " the measure.", "",
        "| request | n | p50 (ms) | p99 (ms) | max (ms) |", "|---|---|---|---|---|",
        f"| SSH connect, password login, hellos | 1 | {ms(out['connect'])} | | |",
        row("get-config", out["get_config"]),
        row("edit-config: one tenant", out["edit_tenant"]),
        row("edit-config of a 1-VM deployment → its CREATE_DEPLOYMENT notification",
            out["deployment_notified"]),
        "",
        f"After a power cut of the active (`escadm lab kill`), the first get-config answered through the VIP,"
        f" from the kill, {len(reconnects)} runs: "
        + ", ".join(f"{r:.2f} s" for r in reconnects) + ".",
    ]
    write_report("netconf", "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
