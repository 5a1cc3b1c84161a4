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

from common import api, wait_transaction, write_report  # noqa: E402

from esc.lab import lab as labmod  # noqa: E402
from esc.lab import net, provenance  # noqa: E402

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

# A client that is logged in (its header verified once), measured while others send
# wrong passwords at a fixed rate from ``sources`` addresses of their own.
FLOOD = r'''
import base64, json, sys, threading, time, httpx
url, user, pw, rate, seconds = sys.argv[1:6]
sources = sys.argv[6].split(",")
rate, seconds = float(rate), float(seconds)
codes, lock = {}, threading.Lock()
stop = time.monotonic() + seconds
def flood(i, src):
    c = httpx.Client(timeout=10, transport=httpx.HTTPTransport(local_address=src))
    period = len(sources) / rate
    nxt = time.monotonic()
    n = 0
    while True:
        nxt += period
        if nxt > stop:
            break
        try:
            r = c.get(url + "/v0/tenants/default", auth=(user, f"wrong-{i}-{n}"))
            code = str(r.status_code)
        except httpx.HTTPError as e:
            code = type(e).__name__
        with lock:
            codes[code] = codes.get(code, 0) + 1
        n += 1
        time.sleep(max(0.0, nxt - time.monotonic()))
    c.close()
lat, errors = [], [0]
def legit():
    c = httpx.Client(auth=(user, pw), timeout=10)
    c.get(url + "/v0/tenants/default")  # logged in before the flood
    time.sleep(1.0)
    while time.monotonic() < stop - 0.5:
        t = time.perf_counter()
        r = c.get(url + "/v0/tenants/default")
        d = time.perf_counter() - t
        if r.status_code == 200:
            lat.append(d)
        else:
            errors[0] += 1
        time.sleep(0.01)
ts = [threading.Thread(target=flood, args=(i, s)) for i, s in enumerate(sources)]
ts.append(threading.Thread(target=legit))
[t.start() for t in ts]; [t.join() for t in ts]
lat.sort()
q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] * 1000 if lat else float("nan")
sent = sum(codes.values())
print(json.dumps({"n": len(lat), "p50": q(0.5), "p99": q(0.99), "max": q(1.0),
                  "errors": errors[0], "flood": codes, "flood_rps": sent / seconds}))
'''
FLOOD_RATE = 200.0  # wrong-password requests per second
FLOOD_SOURCES = (1, 20)  # addresses they come from


def run_flood(state: dict, sources: int, seconds: float) -> dict:
    """The client namespace gets ``sources`` addresses more for the flood."""
    prefix = state["vip"].rsplit(".", 1)[0]
    addrs = [f"{prefix}.{200 + i}" for i in range(sources)]
    for a in addrs:
        net.host_ip(labmod.CLIENT, "addr", "add", f"{a}/24", "dev", "eth0", check=False)
    try:
        url = labmod.vip_url(state)
        res = labmod.client_run([sys.executable, "-c", FLOOD, url, state["rest_user"],
                                 state["rest_password"], str(FLOOD_RATE), str(seconds),
                                 ",".join(addrs)], timeout=seconds + 120)
        if res.returncode != 0:
            raise RuntimeError(res.stderr)
        return json.loads(res.stdout)
    finally:
        for a in addrs:
            net.host_ip(labmod.CLIENT, "addr", "del", f"{a}/24", "dev", "eth0", check=False)


CASES = [
    ("GET", "/v0/tenants/default", "one resource"),
    ("GET", "/health", "no auth; one SELECT"),
    ("POST", "/v0/deployments", "create (201 after the synchronous commit)"),
    ("POST", "/v0/tenants", "create (202, transaction recorded)"),
]


def run_case(state: dict, method: str, path: str, clients: int, seconds: float) -> dict:
    url = labmod.vip_url(state)
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
        floods = []
        for sources in FLOOD_SOURCES:
            r = run_flood(state, sources, max(args.seconds, 10.0))
            floods.append((sources, r))
            print(f"wrong passwords at {FLOOD_RATE:.0f}/s from {sources} address(es): logged-in "
                  f"client p50 {r['p50']:.2f} ms, p99 {r['p99']:.2f} ms, max {r['max']:.2f} ms, "
                  f"errors {r['errors']}; flood answers {r['flood']}", flush=True)
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
    lines += ["", "Logged-in client under a flood of wrong passwords: one client whose header was "
              f"verified before, one GET at a time (10 ms apart), while {FLOOD_RATE:.0f} requests/s "
              "with wrong passwords arrive, spread over the given number of source addresses "
              "(a budget of 10 failed checks per address, then one a second; past it 429 with "
              "no check). Target: p99 at most 20 ms.", "",
              "| flood sources | flood req/s sent | flood answers | client requests | p50 (ms) "
              "| p99 (ms) | max (ms) | client errors |", "|---|---|---|---|---|---|---|---|"]
    for sources, r in floods:
        answers = ", ".join(f"{k}: {v}" for k, v in sorted(r["flood"].items()))
        lines.append(f"| {sources} | {r['flood_rps']:.0f} | {answers} | {r['n']} | {r['p50']:.2f} "
                     f"| {r['p99']:.2f} | {r['max']:.2f} | {r['errors']} |")
    report = "\n".join(lines) + "\n"
    write_report("api", report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
