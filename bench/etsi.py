"""make bench (part 4): ETSI SOL003 instantiation through the VIP.

A fresh lab; two VNF packages onboarded (the sample 2-VDU VNF, and a 1-VDU one for the
burst: 100 instances of 2 VMs would not fit the lab's VM pool of 126 addresses); then
bench/etsi_client.py in the client namespace, which subscribes its own receiver and
measures from the 202 of each instantiate to its COMPLETED notification: N one after the
other, then 100 sent at once. Writes a dated Markdown report to docs/benchmarks/.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import escadm, write_report  # noqa: E402

from esc.config import NodePaths  # noqa: E402
from esc.etsi import auth as etsi_auth  # noqa: E402
from esc.etsi.samples import SAMPLE_VNFD_ID, sample_csar  # noqa: E402
from esc.lab import lab as labmod  # noqa: E402
from esc.lab import provenance  # noqa: E402

BURST_VNFD_ID = "0b0d1e5c-77aa-4e53-9c42-5b1a2f3c4d5e"
RECEIVER_PORT = 9090


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sequential", type=int, default=20)
    ap.add_argument("--burst", type=int, default=100)
    args = ap.parse_args()
    if args.sequential < 1 or not 1 <= args.burst <= 120:
        ap.error("--sequential >= 1 and --burst between 1 and 120 (the lab's VM pool)")
    if labmod.is_up():
        labmod.down()
    state = labmod.up(log=lambda *_: None)
    try:
        active = labmod.active_node()
        assert active is not None
        with tempfile.TemporaryDirectory() as tmp:
            for name, data in (("vnf2.csar", sample_csar(2)),
                               ("vnf1.csar", sample_csar(1, descriptor_id=BURST_VNFD_ID))):
                path = Path(tmp) / name
                path.write_bytes(data)
                print(escadm(active, "etsi", "package", "onboard", str(path)), flush=True)
        password = etsi_auth.password(NodePaths(labmod.node_root(active)))
        client_ip = state["client"]["address"]
        res = labmod.client_run([
            sys.executable, str(ROOT / "bench/etsi_client.py"), "--base", labmod.vip_url(state, 8250),
            "--user", etsi_auth.ETSI_USER, "--password", password,
            "--listen", f"{client_ip}:{RECEIVER_PORT}", "--vnfd", SAMPLE_VNFD_ID,
            "--vnfd-burst", BURST_VNFD_ID, "--sequential", str(args.sequential),
            "--burst", str(args.burst)], timeout=1800)
        if res.returncode != 0:
            raise RuntimeError(res.stderr[-3000:])
        out = json.loads(res.stdout.strip().splitlines()[-1])
    finally:
        labmod.down()

    s, b = out["sequential"], out["burst"]
    now = datetime.now(UTC)
    ms = lambda v: f"{v * 1000:.0f}"  # noqa: E731
    lines = [
        f"# ETSI SOL003 instantiation benchmark, {now:%Y-%m-%d %H:%M} UTC", "", provenance.line(), "",
        "Through the VIP from the lab's client namespace: `POST /vnflcm/v1/vnf_instances/{id}/instantiate`"
        " (flavour `simple`, default level), timed to the COMPLETED VnfLcmOperationOccurrenceNotification"
        " at a receiver in the same process (one clock). Each VM is a process in its own network"
        " namespace made by the lab's VIM driver, then watched by the VNF monitor; every state change"
        " commits synchronously on both nodes.", "",
        "| case | n | completed | 202 → COMPLETED p50 (ms) | p99 (ms) | max (ms) "
        "| request → COMPLETED p50 (ms) | p99 (ms) |", "|---|---|---|---|---|---|---|---|",
        f"| one at a time, 2-VDU VNF (2 VMs each) | {s['n']} | {s['completed']} | {ms(s['from_202']['p50'])} "
        f"| {ms(s['from_202']['p99'])} | {ms(s['from_202']['max'])} | {ms(s['from_request']['p50'])} "
        f"| {ms(s['from_request']['p99'])} |",
        f"| {b['n']} at once, 1-VDU VNF (1 VM each) | {b['n']} | {b['completed']} "
        f"| {ms(b['from_202']['p50'])} | {ms(b['from_202']['p99'])} | {ms(b['from_202']['max'])} "
        f"| {ms(b['from_request']['p50'])} | {ms(b['from_request']['p99'])} |", "",
        f"At once: {b['accepted']} of {b['n']} answered 202 ({b['n_errors']} errors), the 202 itself "
        f"p50 {ms(b['accept']['p50'])} ms / p99 {ms(b['accept']['p99'])} ms; the last COMPLETED came "
        f"{b['all_done_s']:.1f} s after they were sent.",
    ]
    report = "\n".join(lines) + "\n"
    write_report("etsi", report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
