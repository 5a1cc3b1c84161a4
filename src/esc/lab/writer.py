"""A northbound client that writes numbered records through the VIP and records
every acknowledgement. Runs in the lab's client namespace; used by the tests,
the demo and the benchmark.

A request that got no answer is retried with the same name (an in-doubt
commit); a 409 on a retry means the first attempt had committed. Only a 2xx
counts as acknowledged. Names carry a token of the run (``PREFIX-TOKEN-N``): a
name written before, by an earlier run on the same pair, would be answered 2xx
with the transaction that made it, and count as a write that committed nothing.
"""

from __future__ import annotations

import argparse
import json
import secrets
import signal
import ssl
import sys
import time

import httpx


def run(url: str, user: str, password: str, duration: float, prefix: str, out: str,
        pause: float = 0.0, read_timeout: float = 0.5, connect_timeout: float = 0.1) -> None:
    stop = False

    def _stop(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    acked: list[tuple[str, float, str, float]] = []  # name, wall time of the answer, node, sent
    in_doubt: list[str] = []
    errors: dict[str, int] = {}
    # A request in flight when the active dies waits for its read timeout (the
    # dead node's kernel acknowledged the bytes): keep it short and retry.
    # A SYN sent to the VIP while it still points at the dead node goes nowhere: a short
    # connect timeout (a LAN answers in < 1 ms) keeps the client from measuring its own wait.
    timeout = httpx.Timeout(read_timeout, connect=connect_timeout)
    # one TLS context for every client: building one loads the CA bundle (~20 ms), which
    # the client would otherwise spend after each error, i.e. inside the failover measured
    tls = ssl.create_default_context()
    client = httpx.Client(auth=(user, password), timeout=timeout, verify=tls)
    deadline = time.monotonic() + duration
    i = 0
    run = secrets.token_hex(3)
    retrying = False
    while not stop and time.monotonic() < deadline:
        name = f"{prefix}-{run}-{i:07d}"
        sent = time.time()
        try:
            r = client.post(f"{url}/v0/deployments", json={"name": name})
            if 200 <= r.status_code < 300:
                acked.append((name, time.time(), r.headers.get("x-esc-node", "?"), sent))
                i, retrying = i + 1, False
            elif r.status_code == 409 and retrying:
                in_doubt.append(name)  # committed by an unanswered attempt
                i, retrying = i + 1, False
            else:
                errors[f"http {r.status_code}"] = errors.get(f"http {r.status_code}", 0) + 1
                retrying = True
                time.sleep(0.01)
        except httpx.HTTPError as e:
            key = type(e).__name__
            errors[key] = errors.get(key, 0) + 1
            retrying = True
            client.close()
            client = httpx.Client(auth=(user, password), timeout=timeout, verify=tls)
            time.sleep(0.01)
        if pause:
            time.sleep(pause)
    client.close()
    with open(out, "w") as f:
        json.dump({"acked": acked, "in_doubt": in_doubt, "errors": errors}, f)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--user", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--duration", type=float, default=30.0)
    p.add_argument("--prefix", default="w")
    p.add_argument("--pause", type=float, default=0.0)
    p.add_argument("--timeout", type=float, default=0.5, help="read timeout, seconds")
    p.add_argument("--connect-timeout", type=float, default=0.1, help="connect timeout, seconds")
    p.add_argument("--out", required=True)
    a = p.parse_args()
    run(a.url, a.user, a.password, a.duration, a.prefix, a.out, a.pause, a.timeout,
        a.connect_timeout)


if __name__ == "__main__":
    sys.exit(main())
