"""The second observer of a fault run: writes to *each node's own address* (not the
VIP) every ``interval`` seconds, all nodes at once, and records who accepted.

The writer (writer.py) sees the pair as a client does, through the VIP; the prober
sees each node, so that two nodes accepting writes at the same time (split brain)
shows even when the VIP points at only one of them. Every write it got a 2xx for
is an acknowledged write like any other: the checker looks for it afterwards.

Runs in the lab's client namespace::

    python -m esc.lab.prober --node n1=http://10.77.0.11:8080 --node n2=... \\
        --user admin --password=PW --out probe.json

and stops on SIGTERM, writing ``{"acks": [[node, name, sent, answered], ...],
"rounds": N, "errors": {...}}`` (wall-clock times).
"""

from __future__ import annotations

import argparse
import json
import secrets
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx


def run(nodes: dict[str, str], user: str, password: str, out: str, interval: float = 0.05,
        timeout: float = 0.3, duration: float = 600.0) -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    acks: list[tuple[str, str, float, float]] = []
    errors: dict[str, int] = {}
    lock = threading.Lock()
    clients = {n: httpx.Client(auth=(user, password), timeout=httpx.Timeout(timeout, connect=timeout))
               for n in nodes}

    def probe(node: str, seq: int) -> None:
        name = f"probe-{node}-{run}-{seq:07d}"
        sent = time.time()
        try:
            r = clients[node].post(f"{nodes[node]}/v0/deployments", json={"name": name})
            answered = time.time()
            with lock:
                if 200 <= r.status_code < 300:
                    acks.append((r.headers.get("x-esc-node", node), name, sent, answered))
                else:
                    key = f"{node} http {r.status_code}"
                    errors[key] = errors.get(key, 0) + 1
        except httpx.HTTPError as e:
            with lock:
                key = f"{node} {type(e).__name__}"
                errors[key] = errors.get(key, 0) + 1

    rounds = 0
    run = secrets.token_hex(3)  # names never written before: see the writer
    deadline = time.monotonic() + duration
    with ThreadPoolExecutor(len(nodes)) as pool:
        while not stop.is_set() and time.monotonic() < deadline:
            t0 = time.monotonic()
            # every node in the same round: a round with two 2xx is two writers at once
            list(pool.map(probe, nodes, [rounds] * len(nodes)))
            rounds += 1
            stop.wait(max(0.0, interval - (time.monotonic() - t0)))
    for c in clients.values():
        c.close()
    with open(out, "w") as f:
        json.dump({"acks": acks, "rounds": rounds, "errors": errors}, f)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--node", action="append", required=True, help="NAME=URL (repeat)")
    p.add_argument("--user", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--interval", type=float, default=0.05)
    p.add_argument("--timeout", type=float, default=0.3)
    p.add_argument("--duration", type=float, default=600.0)
    a = p.parse_args()
    nodes = dict(n.split("=", 1) for n in a.node)
    run(nodes, a.user, a.password, a.out, a.interval, a.timeout, a.duration)


if __name__ == "__main__":
    main()
