"""Answers SNMP GET, GETNEXT and GETBULK for the node's state: the scalars of
ESC-HA-MIB's ``escHaStatus`` (docs/ESC-HA-MIB.txt), read-only, with the same v2c
community or v3 USM user as the traps, and nothing else of the tree.

The values come from the agent, a line a second (``{"status": {...}}``, made by
:func:`values`); older than ``STALE_S``, the node answers that it does not know
(role UNKNOWN, health failed) rather than what was true once.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import Any

STALE_S = 5.0

# escHaStatus (escHaMIB 3): name -> (sub-identifier, SMI type)
SCALARS = {"node": (1, "text"), "role": (2, "text"), "health": (3, "health"), "peer_role": (4, "text"),
           "replication_sync": (5, "truth"), "replication_lag_bytes": (6, "gauge"),
           "op_mode": (7, "text"), "vip": (8, "text"), "age_s": (9, "gauge")}


def values(st: dict, healthy: bool) -> dict[str, Any]:
    """What the scalars say, from the agent's status (the sender stamps when it got them)."""
    peer, db, vip = st.get("peer") or {}, st.get("db") or {}, st.get("vip") or {}
    return {"node": str(st.get("node", "")), "role": str(st.get("role", "STOPPED")), "health": healthy,
            "peer_role": str(peer.get("role") or ("" if not st.get("ha") else "UNKNOWN")),
            "replication_sync": bool(db.get("sync") and db.get("peer_complete"))
            if db.get("state") == "primary" else bool(db.get("streaming")),
            "replication_lag_bytes": int((st.get("replication") or {}).get("lag_bytes") or 0),
            "op_mode": str((st.get("op_mode") or {}).get("mode", "")),
            "vip": str(vip.get("address", ""))}


def current(latest: dict[str, Any] | None, now: float | None = None) -> dict[str, Any]:
    """The values to answer now: the latest, or "unknown" when they are stale."""
    now = time.monotonic() if now is None else now
    if latest is None or now - latest["at"] > STALE_S:
        age = None if latest is None else now - latest["at"]
        return {"node": "" if latest is None else latest["node"], "role": "UNKNOWN", "health": False,
                "peer_role": "UNKNOWN", "replication_sync": False, "replication_lag_bytes": 0,
                "op_mode": "", "vip": "", "age_s": int(age) if age is not None else 4294967295}
    return {**latest, "age_s": int(now - latest["at"])}


class Responder:
    """A pysnmp command responder on ``port`` (UDP, every address), answering from
    ``latest()`` (the last values the agent sent)."""

    def __init__(self, cfg: dict[str, Any], port: int, latest: Callable[[], dict[str, Any] | None]) -> None:
        self.cfg, self.port, self.latest = cfg, port, latest
        self.engine: Any = None

    def open(self) -> None:
        from pysnmp.carrier.asyncio.dgram import udp, udp6
        from pysnmp.entity import config, engine
        from pysnmp.entity.rfc3413 import cmdrsp, context
        from pysnmp.proto import rfc1902
        from pysnmp.proto.rfc1902 import OctetString

        root = tuple(int(x) for x in self.cfg["enterprise_oid"].split("."))
        subtree = (*root, 3)
        self.engine = engine.SnmpEngine(OctetString(hexValue=self.cfg["engine_id"]))
        # bound here, so that a port in use is an error now (pysnmp would bind later, in a task)
        v4 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        v4.bind(("0.0.0.0", self.port))
        config.add_transport(self.engine, udp.DOMAIN_NAME,
                             udp.UdpAsyncioTransport().open_server_mode(sock=v4))
        if socket.has_ipv6:
            v6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            v6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                v6.bind(("::", self.port))
            except OSError:  # a host without IPv6 addresses: IPv4 only
                v6.close()
            else:
                config.add_transport(self.engine, udp6.DOMAIN_NAME,
                                     udp6.Udp6AsyncioTransport().open_server_mode(sock=v6))
        if self.cfg["version"] == "2c":
            config.add_v1_system(self.engine, "esc-area", self.cfg["community"])
            config.add_vacm_user(self.engine, 2, "esc-area", "noAuthNoPriv", subtree)
        else:
            from esc.snmp.sender import _auth

            usm = _auth(self.cfg)
            config.add_v3_user(self.engine, self.cfg["user"], usm.authentication_protocol,
                               self.cfg["auth_key"], usm.privacy_protocol, self.cfg["priv_key"])
            config.add_vacm_user(self.engine, 3, self.cfg["user"], "authPriv", subtree)
        snmp_context = context.SnmpContext(self.engine)
        builder = snmp_context.get_mib_instrum().get_mib_builder()
        mib_scalar, mib_instance = builder.import_symbols("SNMPv2-SMI", "MibScalar", "MibScalarInstance")
        latest = self.latest

        def syntax(kind: str) -> Any:  # with a value: pysnmp answers noSuchInstance to one without
            return {"text": rfc1902.OctetString(""), "health": rfc1902.Integer32(2),
                    "truth": rfc1902.Integer32(2), "gauge": rfc1902.Gauge32(0)}[kind]

        class Value(mib_instance):  # type: ignore[misc,valid-type]
            key = ""

            def getValue(self, name: Any, **context: Any) -> Any:  # noqa: N802 - pysnmp's name
                v = current(latest())[self.key]
                kind = SCALARS[self.key][1]
                if kind == "health":
                    v = 1 if v else 2  # passed(1), failed(2)
                elif kind == "truth":
                    v = 1 if v else 2  # TruthValue: true(1), false(2)
                elif kind == "gauge":
                    v = max(0, min(int(v), 4294967295))
                return self.getSyntax().clone(v)

        symbols = {}
        for key, (sub, kind) in SCALARS.items():
            oid = (*subtree, sub)
            instance = type(f"Value_{key}", (Value,), {"key": key})(oid, (0,), syntax(kind))
            symbols[f"esc_{key}"] = mib_scalar(oid, syntax(kind)).setMaxAccess("read-only")
            symbols[f"esc_{key}_0"] = instance
        builder.export_symbols("__ESC_HA_STATUS", **symbols)
        cmdrsp.GetCommandResponder(self.engine, snmp_context)
        cmdrsp.NextCommandResponder(self.engine, snmp_context)
        cmdrsp.BulkCommandResponder(self.engine, snmp_context)
        self.engine.transport_dispatcher.job_started(1)

    def close(self) -> None:
        if self.engine is not None:
            self.engine.transport_dispatcher.job_finished(1)
            self.engine.close_dispatcher()
