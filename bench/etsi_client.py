"""Run in the lab's client namespace by bench/etsi.py: an NFVO's view of the ETSI service.

A notification receiver of its own (so that the times are read on one clock), one
subscription for the RESULT of every operation, then:

- ``sequential``: N instantiations of the 2-VDU VNF, one after the other: the time from the
  202 to the COMPLETED notification, and from sending the request to it;
- ``burst``: M instances created, then M instantiations sent at once (M threads): the same
  times for each, and the time until the last COMPLETED.

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from esc import web


class Receiver:
    def __init__(self) -> None:
        self.done: dict[str, tuple[float, str]] = {}  # op id -> (received at, state)
        self.cond = threading.Condition()

    async def notify(self, request: Request) -> Response:
        if request.method == "POST":
            body = await request.json()
            at = time.monotonic()
            if body.get("notificationStatus") == "RESULT":
                with self.cond:
                    self.done.setdefault(body["vnfLcmOpOccId"], (at, body["operationState"]))
                    self.cond.notify_all()
        return Response(status_code=204)

    def wait(self, op_ids: list[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self.cond:
            while not all(o in self.done for o in op_ids):
                left = deadline - time.monotonic()
                if left <= 0:
                    missing = [o for o in op_ids if o not in self.done]
                    raise RuntimeError(f"{len(missing)} operation(s) without a RESULT after {timeout:g}s")
                self.cond.wait(left)


def quantile(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(p * len(values)))] if values else float("nan")


def summary(values: list[float]) -> dict[str, float]:
    return {"p50": quantile(values, 0.5), "p99": quantile(values, 0.99), "max": max(values, default=0.0)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True)  # http://VIP:8250
    ap.add_argument("--user", required=True)
    ap.add_argument("--password", required=True)
    ap.add_argument("--listen", required=True)  # ADDR:PORT of the receiver
    ap.add_argument("--vnfd", required=True)  # the 2-VDU VNF
    ap.add_argument("--vnfd-burst", required=True)
    ap.add_argument("--sequential", type=int, default=20)
    ap.add_argument("--burst", type=int, default=100)
    args = ap.parse_args()

    receiver = Receiver()
    host, _, port = args.listen.rpartition(":")
    app = Starlette(routes=[Route("/notify", receiver.notify, methods=["GET", "POST"])])
    server = (web.config(app, max_per_client=512), web.tcp_socket(host, int(port)))
    web.ServerThread("receiver", [server]).start()

    api = f"{args.base}/vnflcm/v1"
    client = httpx.Client(auth=(args.user, args.password), timeout=30)
    r = client.post(f"{api}/subscriptions", json={
        "callbackUri": f"http://{args.listen}/notify",
        "filter": {"notificationTypes": ["VnfLcmOperationOccurrenceNotification"],
                   "operationStates": ["COMPLETED", "FAILED_TEMP", "FAILED", "ROLLED_BACK"]}})
    r.raise_for_status()

    def create(vnfd: str, name: str) -> str:
        r = client.post(f"{api}/vnf_instances", json={"vnfdId": vnfd, "vnfInstanceName": name})
        r.raise_for_status()
        return str(r.json()["id"])

    def instantiate(c: httpx.Client, inst: str) -> tuple[str, float, float]:
        t0 = time.monotonic()
        r = c.post(f"{api}/vnf_instances/{inst}/instantiate", json={"flavourId": "simple"})
        t1 = time.monotonic()
        if r.status_code != 202:
            raise RuntimeError(f"instantiate {inst}: HTTP {r.status_code} {r.text}")
        return r.headers["location"].rsplit("/", 1)[1], t0, t1

    out: dict[str, Any] = {}
    seq_202, seq_req, states, seq_insts = [], [], [], []
    for i in range(args.sequential):
        seq_insts.append(create(args.vnfd, f"seq-{i}"))
        op, t0, t1 = instantiate(client, seq_insts[-1])
        receiver.wait([op], 120)
        at, state = receiver.done[op]
        seq_202.append(at - t1)
        seq_req.append(at - t0)
        states.append(state)
    out["sequential"] = {"n": args.sequential, "from_202": summary(seq_202), "from_request": summary(seq_req),
                         "completed": states.count("COMPLETED")}

    # their VMs go before the burst: the lab's VM pool is 126 addresses
    ops = []
    for inst in seq_insts:
        r = client.post(f"{api}/vnf_instances/{inst}/terminate", json={"terminationType": "FORCEFUL"})
        r.raise_for_status()
        ops.append(r.headers["location"].rsplit("/", 1)[1])
    receiver.wait(ops, 300)

    insts = [create(args.vnfd_burst, f"burst-{i}") for i in range(args.burst)]
    results: list[tuple[str, float, float]] = []
    errors: list[str] = []
    lock = threading.Lock()
    go = threading.Event()

    def one(inst: str) -> None:
        with httpx.Client(auth=(args.user, args.password), timeout=60) as c:
            c.get(f"{api}/api_versions")  # logged in and connected before the start
            go.wait()
            try:
                res = instantiate(c, inst)
            except Exception as e:  # counted, not fatal
                with lock:
                    errors.append(str(e))
                return
            with lock:
                results.append(res)

    threads = [threading.Thread(target=one, args=(i,)) for i in insts]
    for t in threads:
        t.start()
    time.sleep(1.0)
    start = time.monotonic()
    go.set()
    for t in threads:
        t.join()
    receiver.wait([op for op, _, _ in results], 600)
    ats = {op: receiver.done[op] for op, _, _ in results}
    out["burst"] = {
        "n": args.burst, "accepted": len(results), "errors": errors[:5], "n_errors": len(errors),
        "from_202": summary([ats[op][0] - t1 for op, _, t1 in results]),
        "from_request": summary([ats[op][0] - t0 for op, t0, _ in results]),
        "accept": summary([t1 - t0 for _, t0, t1 in results]),
        "all_done_s": max(at for at, _ in ats.values()) - start,
        "completed": sum(1 for _, s in ats.values() if s == "COMPLETED"),
    }
    print(json.dumps(out))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
