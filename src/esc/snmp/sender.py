"""escsnmp: sends the node's notifications as SNMP traps (v2c or v3), with pysnmp.

Run by the agent as the unprivileged service user, on both nodes while traps are
configured. It reads JSON lines on stdin: the first is its configuration (targets,
version, the USM user and keys: secrets travel by pipe, never by file or argument),
each further one a notification (esc.agent.alarms.Notification). EOF or "exit" ends
it. A trap that cannot be sent is logged, never retried (SNMP traps are datagrams;
the history and the metrics keep what was lost).

    python -m esc.snmp.sender --root ROOT
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from esc.snmp import responder

log = logging.getLogger("esc.snmp")


def _auth(cfg: dict[str, Any]) -> Any:
    from pysnmp.hlapi.v3arch import asyncio as h

    if cfg["version"] == "2c":
        return h.CommunityData(cfg["community"], mpModel=1)
    auth = {"SHA": h.usmHMACSHAAuthProtocol, "SHA224": h.usmHMAC128SHA224AuthProtocol,
            "SHA256": h.usmHMAC192SHA256AuthProtocol, "SHA384": h.usmHMAC256SHA384AuthProtocol,
            "SHA512": h.usmHMAC384SHA512AuthProtocol, "MD5": h.usmHMACMD5AuthProtocol}[cfg["auth_protocol"]]
    priv = {"AES": h.usmAesCfb128Protocol, "AES192": h.usmAesBlumenthalCfb192Protocol,
            "AES256": h.usmAesBlumenthalCfb256Protocol, "DES": h.usmDESPrivProtocol}[cfg["priv_protocol"]]
    return h.UsmUserData(cfg["user"], authKey=cfg["auth_key"], privKey=cfg["priv_key"],
                         authProtocol=auth, privProtocol=priv)


class Sender:
    def __init__(self, cfg: dict[str, Any]) -> None:
        from pysnmp.hlapi.v3arch import asyncio as h
        from pysnmp.proto.rfc1902 import OctetString

        self.h, self.cfg = h, cfg
        self.engine = h.SnmpEngine(OctetString(hexValue=cfg["engine_id"]))
        self.auth = _auth(cfg)
        self.root = cfg["enterprise_oid"]
        self.targets: list[Any] = []

    async def open(self) -> None:
        for t in self.cfg["targets"]:
            host, port = t["host"], int(t["port"])
            make = self.h.Udp6TransportTarget if ":" in host else self.h.UdpTransportTarget
            self.targets.append((f"{host}:{port}", await make.create((host, port), timeout=2, retries=0)))

    async def send(self, n: dict[str, Any]) -> None:
        from pysnmp.proto.rfc1902 import OctetString

        from esc.snmp import mib

        varbinds = [(mib.object_oid(self.root, k), OctetString(str(n.get(k) or "")))
                    for k in ("node", "role", "reason")]
        for k, v in sorted((n.get("detail") or {}).items()):
            if k in mib.OBJECTS and v not in (None, ""):
                varbinds.append((mib.object_oid(self.root, k), OctetString(str(v))))
        kind = self.h.NotificationType(self.h.ObjectIdentity(mib.notification_oid(self.root, n["name"])))
        kind = kind.add_varbinds(*varbinds)
        for where, target in self.targets:
            error, status, _, _ = await self.h.send_notification(
                self.engine, self.auth, target, self.h.ContextData(), "trap", kind)
            if error or status:
                log.warning("trap %s to %s not sent: %s", n["name"], where, error or status.prettyPrint())
            else:
                log.info("trap %s to %s: %s", n["name"], where, n.get("reason", ""))

    def close(self) -> None:
        self.engine.close_dispatcher()


async def run(lines: Any) -> int:
    """``lines``: an async iterator of the input lines (the configuration first; then
    notifications, and with ``agent_port`` the status for GETs)."""
    sender: Sender | None = None
    agent: responder.Responder | None = None
    latest: list[dict[str, Any] | None] = [None]  # the agent's last status line, for GETs
    async for raw in lines:
        line = raw.strip()
        if not line:
            continue
        if line == "exit":
            break
        try:
            msg = json.loads(line)
        except ValueError:
            log.warning("ignoring a line that is not JSON")
            continue
        if sender is None:
            try:
                sender = Sender(msg)
                await sender.open()
            except Exception as e:  # noqa: BLE001 - a bad configuration: said, then exit
                log.error("cannot send traps with this configuration: %s", e)
                return 2
            log.info("sending SNMP v%s traps to %s", msg["version"],
                     ", ".join(f"{t['host']}:{t['port']}" for t in msg["targets"]))
            if msg.get("agent_port"):
                try:
                    agent = responder.Responder(msg, int(msg["agent_port"]), lambda: latest[0])
                    agent.open()
                    log.info("answering SNMP v%s GETs on UDP port %s", msg["version"], msg["agent_port"])
                except Exception as e:  # noqa: BLE001 - the traps still go
                    log.error("cannot answer GETs on UDP port %s: %s", msg["agent_port"], e)
                    agent = None
            continue
        if "status" in msg:
            if isinstance(msg["status"], dict):
                latest[0] = {**msg["status"], "at": time.monotonic()}
            continue
        try:
            await sender.send(msg)
        except Exception as e:  # noqa: BLE001 - one bad notification does not stop the others
            log.warning("trap %s not sent: %s", msg.get("name"), e)
    if agent is not None:
        agent.close()
    if sender is not None:
        sender.close()
    return 0


async def _stdin_lines() -> Any:
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            return
        yield line


def main(argv: list[str] | None = None) -> int:
    from esc import logs
    from esc.config import NodePaths, load_config

    parser = argparse.ArgumentParser(prog="escsnmp", description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True)
    args = parser.parse_args(argv)
    paths = NodePaths(Path(args.root))
    try:
        node = load_config(paths).name
    except Exception:  # noqa: BLE001
        node = "?"
    handler = logging.FileHandler(paths.log / "escsnmp.log")
    handler.setFormatter(logs.OneLineFormatter(
        f"%(asctime)s.%(msecs)03d {node.replace('%', '%%')} escsnmp[%(process)d] %(levelname)s %(message)s",
        "%Y-%m-%dT%H:%M:%S"))
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.INFO)
    return asyncio.run(run(_stdin_lines()))


if __name__ == "__main__":
    sys.exit(main())
