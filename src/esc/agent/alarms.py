"""What an operator is told by trap (esc.snmp): the pure part.

A node's status is reduced to a few :class:`Signals` (is the peer heard, is the
replication what the role needs, is the witness answering, does the node pass its
health check); :func:`changes` turns two successive ones into notifications, one per
edge, never one per poll. The history's events (role changes, failovers,
switchovers...) and the monitor's VM events become notifications through
:func:`from_event` and :func:`from_vm_event`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from esc.agent.history import Event

# name -> the last arc of its OID under the notifications branch (docs/ESC-HA-MIB.txt)
NOTIFICATIONS = {
    "escRoleChange": 1, "escFailover": 2, "escSwitchover": 3, "escPeerLost": 4, "escPeerFound": 5,
    "escReplicationDegraded": 6, "escReplicationRestored": 7, "escWitnessLost": 8,
    "escWitnessFound": 9, "escVmDown": 10, "escVmRecovered": 11, "escHealthFailed": 12,
    "escHealthPassed": 13, "escForceActive": 14, "escTest": 15,
}


@dataclass(frozen=True)
class Notification:
    name: str  # one of NOTIFICATIONS
    node: str
    role: str
    reason: str
    detail: dict[str, str] = field(default_factory=dict)  # the other varbinds (peer, vm...)


@dataclass(frozen=True)
class Signals:
    role: str
    peer_heard: bool | None  # None: no HA
    replication_ok: bool | None  # None: no view (not ACTIVE or STANDBY)
    witness_ok: bool | None  # None: no witness
    healthy: bool


def signals(st: dict, healthy: bool) -> Signals:
    role = st.get("role", "STOPPED")
    peer = st.get("peer")
    db = st.get("db") or {}
    repl: bool | None = None
    if st.get("ha") and role == "ACTIVE":
        repl = bool(db.get("sync") and db.get("peer_complete"))
    elif st.get("ha") and role == "STANDBY":
        repl = bool(db.get("streaming"))
    w = st.get("witness")
    return Signals(role=role, peer_heard=bool(peer.get("reachable")) if isinstance(peer, dict) else None,
                   replication_ok=repl,
                   witness_ok=(not w.get("error") and w.get("last_answer_s") is not None)
                   if isinstance(w, dict) else None,
                   healthy=healthy)


def changes(prev: Signals | None, cur: Signals, node: str, peer_name: str | None = None,
            reasons: dict[str, str] | None = None) -> list[Notification]:
    """The notifications for the step from ``prev`` to ``cur`` (None: the first look,
    which raises what is wrong already and says nothing of what is fine)."""
    reasons = reasons or {}
    out: list[Notification] = []

    def edge(was: bool | None, now: bool | None, lost: str, found: str, why: str,
             **detail: str) -> None:
        if now is None:
            return
        if now is False and (was is True or (prev is None or was is None)):
            out.append(Notification(lost, node, cur.role, reasons.get(lost, why), detail))
        elif now is True and was is False:
            out.append(Notification(found, node, cur.role, reasons.get(found, why), detail))

    p = prev
    peer = {"peer": peer_name} if peer_name else {}
    edge(p.peer_heard if p else None, cur.peer_heard, "escPeerLost", "escPeerFound",
         "the peer's heartbeat", **peer)
    # a change of role changes what the replication must be: judged afresh, no edge
    if p is None or p.role == cur.role:
        edge(p.replication_ok if p else None, cur.replication_ok, "escReplicationDegraded",
             "escReplicationRestored", "synchronous replication" if cur.role == "ACTIVE"
             else "streaming from the active")
    edge(p.witness_ok if p else None, cur.witness_ok, "escWitnessLost", "escWitnessFound",
         "the witness's answers")
    edge(p.healthy if p else None, cur.healthy, "escHealthFailed", "escHealthPassed", "escadm health")
    return out


def from_event(ev: Event) -> list[Notification]:
    """The notifications of one history event of this node."""
    detail = {"peer_role": str(ev.peer_role or ""), "by": ev.by or ""}
    out = []
    if ev.role_from is not None and ev.role_from != ev.role:
        out.append(Notification("escRoleChange", ev.node, ev.role, ev.reason,
                                {"previous_role": ev.role_from, "kind": ev.kind, **detail}))
    special = {"failover": "escFailover", "switchover": "escSwitchover",
               "force_active": "escForceActive"}.get(ev.kind)
    if special:
        extra = {"seconds": str(ev.detail["active_lost_s"])} if "active_lost_s" in ev.detail else {}
        out.append(Notification(special, ev.node, ev.role, ev.reason, {**detail, **extra}))
    return out


def from_vm_event(node: str, role: str, kind: str, vm: str, deployment: str, message: str
                  ) -> Notification | None:
    """A monitor's event recorded by the controller (VM_DOWN, VM_ALIVE, ...)."""
    name = {"VM_DOWN": "escVmDown", "VM_ALIVE": "escVmRecovered"}.get(kind)
    if name is None:
        return None
    return Notification(name, node, role, message, {"vm": vm, "deployment": deployment})
