"""Run in the lab's client namespace by bench/netconf.py: NETCONF through the VIP with
asyncssh and the server's own framing (ncclient's reader wakes every 100 ms, which would
be measured instead of the server). Prints one JSON line of timings (seconds)."""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from typing import Any

import asyncssh

from esc.netconf.framing import Deframer, frame

NC = "urn:ietf:params:xml:ns:netconf:base:1.0"
ESC = "http://www.cisco.com/esc/esc"
HELLO = (f'<hello xmlns="{NC}"><capabilities><capability>urn:ietf:params:netconf:base:1.1</capability>'
         "</capabilities></hello>").encode()


def summary(values: list[float]) -> dict[str, float]:
    s = sorted(values)
    return {"n": len(s), "p50": statistics.median(s), "p99": s[min(len(s) - 1, int(len(s) * 0.99))],
            "max": s[-1]}


class Client:
    def __init__(self, host: str, user: str, password: str) -> None:
        self.host, self.user, self.password = host, user, password
        self.n = 0

    async def open(self) -> None:
        self.conn = await asyncssh.connect(self.host, 830, username=self.user, password=self.password,
                                           known_hosts=None)
        self.writer, self.reader, _ = await self.conn.open_session(subsystem="netconf", encoding=None)
        self.deframer = Deframer()
        await self.next()  # the server's hello
        self.writer.write(frame(HELLO, False))
        self.deframer.chunked = True

    async def next(self) -> bytes:
        while True:
            m = self.deframer.pop()
            if m is not None:
                return m
            data = await self.reader.read(65536)
            if not data:
                raise ConnectionError("closed")
            self.deframer.push(data)

    async def rpc(self, body: str) -> bytes:
        self.n += 1
        self.writer.write(frame(f'<rpc xmlns="{NC}" message-id="{self.n}">{body}</rpc>'.encode(), True))
        while True:
            m = await self.next()
            if b"<rpc-reply" in m[:200]:
                return m

    def close(self) -> None:
        self.conn.close()


def config(body: str) -> str:
    return (f'<edit-config><target><running/></target><config><esc_datamodel xmlns="{ESC}">{body}'
            "</esc_datamodel></config></edit-config>")


async def main(a: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    t = time.perf_counter()
    c = Client(a.host, a.user, a.password)
    await c.open()
    out["connect"] = time.perf_counter() - t
    get = []
    for _ in range(a.gets):
        t = time.perf_counter()
        await c.rpc("<get-config><source><running/></source></get-config>")
        get.append(time.perf_counter() - t)
    out["get_config"] = summary(get)
    edit = []
    for i in range(a.edits):
        t = time.perf_counter()
        reply = await c.rpc(config(f"<tenants><tenant><name>bench-{i}</name></tenant></tenants>"))
        edit.append(time.perf_counter() - t)
        assert b"<ok/>" in reply, reply
    out["edit_tenant"] = summary(edit)
    await c.rpc(config("<images><image><name>bench-img</name><src>file:///cirros.img</src></image></images>"
                       "<flavors><flavor><name>bench-fl</name><vcpus>1</vcpus><memory_mb>256</memory_mb>"
                       "</flavor></flavors>"))
    await c.rpc('<create-subscription xmlns="urn:ietf:params:xml:ns:netconf:notification:1.0"/>')
    notified = []
    for i in range(a.deployments):
        name = f"bench-dep-{i}"
        t = time.perf_counter()
        reply = await c.rpc(config(
            f"<tenants><tenant><name>bench-0</name><deployments><deployment><name>{name}</name>"
            "<vm_group><name>g</name><image>bench-img</image><flavor>bench-fl</flavor></vm_group>"
            "</deployment></deployments></tenant></tenants>"))
        assert b"<ok/>" in reply, reply
        while True:
            m = await c.next()
            if b"CREATE_DEPLOYMENT" in m and f"<depname>{name}</depname>".encode() in m:
                notified.append(time.perf_counter() - t)
                break
    out["deployment_notified"] = summary(notified)
    c.close()
    return out


async def reconnect(a: argparse.Namespace) -> dict[str, Any]:
    """Retry until a get-config is answered through the VIP; when (wall clock)."""
    t = time.perf_counter()
    while True:
        try:
            c = Client(a.host, a.user, a.password)
            # short: a SYN sent while the VIP moves is lost, and the kernel would send it
            # again only a second later (the REST benchmark's clients retry as fast)
            await asyncio.wait_for(c.open(), 0.5)
            await c.rpc("<get-config><source><running/></source></get-config>")
            c.close()
            return {"done_at": time.time()}
        except (OSError, asyncssh.Error, TimeoutError, ConnectionError):
            if time.perf_counter() - t > 60:
                raise
            await asyncio.sleep(0.05)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", required=True)
    ap.add_argument("--user", required=True)
    ap.add_argument("--password", required=True)
    ap.add_argument("--gets", type=int, default=200)
    ap.add_argument("--edits", type=int, default=50)
    ap.add_argument("--deployments", type=int, default=10)
    ap.add_argument("--reconnect", action="store_true")
    args = ap.parse_args()
    print(json.dumps(asyncio.run(reconnect(args) if args.reconnect else main(args))))
