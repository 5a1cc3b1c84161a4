"""make bench (part 2): northbound throughput and latency through the VIP.

Clients in the lab's client namespace, each with its own keep-alive connection, for a
fixed time per case. Writes a dated Markdown report to docs/benchmarks/.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import api, wait_transaction  # noqa: E402

from esc.lab import lab as labmod  # noqa: E402
from esc.lab import provenance  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

LOAD = r'''
import json, sys, threading, time, httpx
url, user, pw, method, path, clients, seconds = sys.argv[1:8]
clients, seconds = int(clients), float(seconds)
lat, errors = [], [0]
lock = threading.Lock()
def run(i):
    c = httpx.Client(auth=(user, pw), timeout=10)
    n = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        body = {"name": f"b{i}-{n}-{time.monotonic_ns()}"} if method == "POST" else None
        t = time.perf_counter()
        r = c.request(method, url + path, json=body)
        d = time.perf_counter() - t
        with lock:
            if r.status_code < 300:
                lat.append(d)
            else:
                errors[0] += 1
        n += 1
    c.close()
ts = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
t0 = time.monotonic()
[t.start() for t in ts]; [t.join() for t in ts]
el = time.monotonic() - t0
lat.sort()
q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] * 1000 if lat else float("nan")
print(json.dumps({"n": len(lat), "rps": len(lat) / el, "p50": q(0.5), "p99": q(0.99),
                  "errors": errors[0]}))
'''

CASES = [
    ("GET", "/v0/tenants/default", "one resource"),
    ("GET", "/health", "no auth; one SELECT"),
    ("POST", "/v0/deployments", "create (201 after the synchronous commit)"),
    ("POST", "/v0/tenants", "create (202, transaction recorded)"),
]


def run_case(state: dict, method: str, path: str, clients: int, seconds: float) -> dict:
    url = f"http://{state['vip']}:{state['api_port']}"
    res = labmod.client_run([sys.executable, "-c", LOAD, url, state["rest_user"],
                             state["rest_password"], method, path, str(clients), str(seconds)],
                            timeout=seconds + 60)
    if res.returncode != 0:
        raise RuntimeError(res.stderr)
    return json.loads(res.stdout)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--clients", default="1,4", help="comma-separated client counts")
    args = ap.parse_args()
    try:
        counts = [int(x) for x in args.clients.split(",")]
        if args.seconds <= 0 or not counts or min(counts) < 1:
            raise ValueError
    except ValueError:
        ap.error("--seconds must be > 0 and --clients a list of counts >= 1")
    if labmod.is_up():
        labmod.down()
    state = labmod.up(log=lambda *_: None)
    rows = []
    try:
        status, out = api(state, "GET", "/v0/tenants/default")
        if status != 200:
            raise RuntimeError(f"GET /v0/tenants/default: {status} {out}")
        for method, path, what in CASES:
            for clients in counts:
                r = run_case(state, method, path, clients, args.seconds)
                rows.append((method, path, what, clients, r))
                print(f"{method} {path} x{clients}: {r['rps']:.0f} req/s, p50 {r['p50']:.2f} ms, "
                      f"p99 {r['p99']:.2f} ms, errors {r['errors']}", flush=True)
        # the 202 path: how long until the transactions are done
        status, out = api(state, "POST", "/v0/tenants", {"name": "bench-last"})
        done = wait_transaction(state, out["transaction_id"])  # type: ignore[index]
        print(f"last tenant transaction: {done['status']}")
    finally:
        labmod.down()
    now = datetime.now(UTC)
    lines = [f"# Northbound API benchmark, {now:%Y-%m-%d %H:%M} UTC", "",
             provenance.line(), "",
             f"Through the VIP from the lab's client namespace to the active node, each client "
             f"one keep-alive connection, one request at a time, {args.seconds:g} s per case; "
             "writes commit synchronously on both nodes (remote_apply).", "",
             "| request | clients | req/s | p50 (ms) | p99 (ms) | errors |",
             "|---|---|---|---|---|---|"]
    for method, path, what, clients, r in rows:
        lines.append(f"| {method} {path} ({what}) | {clients} | {r['rps']:.0f} | {r['p50']:.2f} "
                     f"| {r['p99']:.2f} | {r['errors']} |")
    report = "\n".join(lines) + "\n"
    out_dir = ROOT / "docs/benchmarks"
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"api-{now:%Y-%m-%d}.md"
    path.write_text(report)
    print(report)
    print(f"written to {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
