"""The role state machine: observations in, role + desired state + one job out.

Pure: no I/O, no clock reads (``now`` is an observation). The agent gathers an
:class:`Observation` every tick, calls :func:`decide`, logs the reason of every
role change and makes reality match :class:`Desired` (database role, services,
the VRRP gate, synchronous replication). Long actions (promote, rejoin) are
returned as a ``job`` that the agent runs off the loop.

The rules, in the words of DESIGN.md:

* a database becomes primary only where keepalived is MASTER and the peer's
  database is not a primary (one writer);
* a standby promotes only within ``promote_window`` of the active's last
  confirmation that it was a complete synchronous standby (complete data);
* the active waits for a missing standby (commits block) until
  ``alone_after`` has passed since it last confirmed that standby complete; the
  timing rule ``alone_after > promote_window + heartbeat_timeout`` (checked in
  config) means a standby that lost the active can no longer promote by then;
* a node that never reached its peer since it started serves nothing
  (SWITCHING_TO_ACTIVE) unless the operator forces it;
* the newer history wins: an active steps down when the peer's database is a
  primary on a later timeline (the peer took over while this node was frozen
  or cut off), and a node never rewinds its database onto a peer on an earlier
  timeline than its own (that would discard the newer writes);
* an active that was frozen longer than a takeover takes (``pause_fence``)
  fences itself before anything else: the peer may be active by now;
* in maintenance mode a standby never takes over by itself (its VRRP gate stays
  closed); an operator's switchover or force-active still works;
* peer liveness counts over every network (``--ha_heartbeat_list``): while the peer
  answers as ACTIVE with keepalived MASTER on any of them, a standby never promotes
  and keeps its VRRP gate closed when its own keepalived is MASTER too or when the
  peer no longer answers on VRRP's network (VRRP's network is cut, not the peer dead);
* with a witness, only the holder of its lease may promote or commit alone: a
  standby that lost the active waits for the lease (the active's runs out within
  ``lease`` of its death), and keeps out of the way while the witness says the peer
  holds it; an active whose lease went to the peer steps down.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum


class Role(StrEnum):
    STANDALONE = "STANDALONE"
    SWITCHING_TO_ACTIVE = "SWITCHING_TO_ACTIVE"
    ACTIVE = "ACTIVE"
    SWITCHING_TO_STANDBY = "SWITCHING_TO_STANDBY"
    STANDBY = "STANDBY"
    FAULT = "FAULT"
    MAINTENANCE = "MAINTENANCE"
    STOPPED = "STOPPED"


class Vrrp(StrEnum):
    MASTER = "MASTER"
    BACKUP = "BACKUP"
    FAULT = "FAULT"
    UNKNOWN = "UNKNOWN"


class Db(StrEnum):
    ABSENT = "absent"  # no data directory (never cloned, or wiped)
    STOPPED = "stopped"
    STARTING = "starting"  # process up, not yet answering
    PRIMARY = "primary"
    STANDBY = "standby"  # running in recovery


class Job(StrEnum):
    PROMOTE = "promote"
    REJOIN = "rejoin"  # stop, pg_rewind from the peer (or clone), come back as standby


class Command(StrEnum):
    FORCE_ACTIVE = "force_active"
    SWITCHOVER = "switchover"


@dataclass(frozen=True)
class DbView:
    state: Db = Db.STOPPED
    timeline: int = 0
    lsn: int = 0
    system_id: str = ""
    streaming: bool = False  # standby: WAL receiver is streaming from the peer
    peer_streaming: bool = False  # primary: the peer's walsender is in state streaming
    peer_complete: bool = False  # primary: peer is the sync standby and caught up
    alone: bool = False  # primary: synchronous_standby_names is empty
    was_primary: bool = False  # stopped: the data was last a primary (needs a rewind)

    def data_key(self, index: int) -> tuple[int, int, int, int]:
        """Order for electing the node with the best data (ties: first listed)."""
        return (self.state != Db.ABSENT, self.timeline, self.lsn, -index)


@dataclass(frozen=True)
class PeerView:
    role: Role
    db: DbView
    index: int  # the peer's position in ha_node_list
    vrrp: Vrrp = Vrrp.UNKNOWN  # the peer's keepalived, as its agent reports it


@dataclass(frozen=True)
class Observation:
    now: float
    ha: bool = True
    self_index: int = 0
    vrrp: Vrrp = Vrrp.UNKNOWN
    db: DbView = field(default_factory=DbView)
    peer: PeerView | None = None  # None: no answer on any network within the heartbeat timeout
    # the peer answered on VRRP's (and replication's) network, not only on another one
    peer_on_vrrp_path: bool = True
    peer_elsewhere: bool = False  # another network answers while VRRP's has fallen silent
    peer_ever_seen: bool = False  # since this agent started
    last_confirm_recv: float | None = None  # standby: peer last confirmed us complete
    last_confirm_sent: float | None = None  # active: we last confirmed the peer complete
    # standby db running but not streaming (or streaming a timeline the active left) since
    not_streaming_since: float | None = None
    volume_ok: bool = True
    job_running: Job | None = None
    job_failed: Job | None = None  # the last job failed (the agent backs off)
    job_done: Job | None = None  # a job finished successfully (reported once)
    command: Command | None = None
    promote_window: float = 2.0
    alone_after: float = 4.0
    rejoin_grace: float = 3.0  # a standby not streaming for this long is rejoined
    maintenance: bool = False  # the pair's operation mode: no automatic failover
    witness: bool = False  # a witness is configured
    lease_valid: bool = False  # we hold the witness's lease now
    lease_peer: bool = False  # the witness's last answer: the peer holds it
    lease_peer_for: float = 0.0  # ... and has named the peer for this long (it keeps renewing)
    lease: float = 1.0  # the lease's length
    paused_for: float = 0.0  # the agent's loop did not run for this long before this tick
    pause_fence: float = 0.6  # a pause this long may have let the peer take over


@dataclass(frozen=True)
class Desired:
    db: str = "stopped"  # "primary" | "standby" | "stopped"
    services: bool = False
    vrrp_gate: bool = False  # keepalived may be MASTER
    alone: bool = False  # primary: commit without waiting for the peer (never by default)
    lease: bool = False  # hold (ask for, renew) the witness's lease


@dataclass(frozen=True)
class Decision:
    role: Role
    desired: Desired
    reason: str
    job: Job | None = None
    consumed: bool = False  # the pending operator command was acted on


OFF = Desired()
FOLLOW = Desired(db="standby")
SERVE_ALONE = Desired(db="primary", services=True, vrrp_gate=True, alone=True)


def lease_blocks(obs: Observation) -> Decision | None:
    """Before a promotion: with a witness, the lease first. None: go ahead.

    A peer that died still holds the lease for up to ``lease``: wait for it with the
    VRRP gate open. A peer named holder for longer than that is renewing it: it is
    alive behind a partition, so close the gate (the VIP stays with it) and keep asking."""
    if not obs.witness or obs.lease_valid:
        return None
    if obs.lease_peer and obs.lease_peer_for > obs.lease:
        return Decision(Role.SWITCHING_TO_ACTIVE, replace(FOLLOW, lease=True),
                        f"the witness has kept the lease with the peer for {obs.lease_peer_for:.1f}s: "
                        "it is alive; not taking over")
    return Decision(Role.SWITCHING_TO_ACTIVE, Desired(db="standby", vrrp_gate=True, lease=True),
                    "asking the witness for the lease before promoting")


def confirmed_complete(obs: Observation) -> bool:
    """Standby side: may this node's data be trusted to hold every acknowledged write?"""
    return (
        obs.last_confirm_recv is not None
        and obs.now - obs.last_confirm_recv < obs.promote_window
    )


def must_wait_for_peer(obs: Observation) -> bool:
    """Active side: must commits wait for the peer (synchronous), or may we commit alone?"""
    if obs.db.peer_streaming:
        return True
    return obs.last_confirm_sent is not None and obs.now - obs.last_confirm_sent < obs.alone_after


KNOWN_POSITION = (Db.PRIMARY, Db.STANDBY, Db.ABSENT)
BEHIND_GRACE = 1.0  # a standby on an earlier timeline has this long to follow the switch itself


def wins_election(obs: Observation) -> bool:
    """Both nodes are starting: the one with the better data becomes active.

    Only positions that are known count: a stopped or starting database reports
    none, and electing against it could discard the peer's newer writes. The
    agent starts a stopped database as a standby, so the wait is short."""
    assert obs.peer is not None
    if obs.db.state not in KNOWN_POSITION or obs.peer.db.state not in KNOWN_POSITION:
        return False
    mine = obs.db.data_key(obs.self_index)
    theirs = obs.peer.db.data_key(obs.peer.index)
    if obs.db.state == Db.ABSENT:
        return False
    if obs.peer.db.state != Db.ABSENT and obs.db.system_id and obs.peer.db.system_id \
            and obs.db.system_id != obs.peer.db.system_id:
        return obs.self_index == 0  # two unrelated databases: the first listed node's wins
    return mine > theirs


def peer_is_newer(obs: Observation) -> bool:
    """The peer's database is on a later timeline than ours: it took over from us (we
    were frozen, cut off, or partitioned from it). As a primary, or already stepped down
    (a standby or stopped): either way its history is the newer, and an active that
    stays put would leave it waiting forever for us to step down."""
    return (obs.peer is not None and obs.peer.db.state in (Db.PRIMARY, Db.STANDBY, Db.STOPPED)
            and obs.peer.db.timeline > obs.db.timeline > 0)


def peer_is_older(obs: Observation) -> bool:
    """Our data is on a later timeline than the peer's: rewinding onto the peer would
    discard our newer history."""
    return obs.peer is not None and 0 < obs.peer.db.timeline < obs.db.timeline


def active_desired(obs: Observation) -> Desired:
    # with a witness, committing alone needs the lease: a partitioned active refuses
    # writes (they wait for the standby) rather than acknowledge ones the peer lacks
    alone = not must_wait_for_peer(obs) and (not obs.witness or obs.lease_valid)
    return Desired(db="primary", services=True, vrrp_gate=True, alone=alone, lease=obs.witness)


def should_announce(dec: Decision, db: Db, serving: bool) -> bool:
    """BGP anycast: announce the route exactly while this node serves as the writer: the
    decision keeps it ACTIVE (or STANDALONE) with services on, its database is a primary
    and its controller serves. Anything else withdraws: STANDBY, FAULT, SWITCHING_*, a
    promotion still running, a controller that died. The agent withdraws *before* it
    stops anything, as it closes the VRRP gate first."""
    return (dec.role in (Role.ACTIVE, Role.STANDALONE) and dec.desired.services
            and dec.desired.db == "primary" and db == Db.PRIMARY and serving)


def peer_serves_elsewhere(obs: Observation) -> bool:
    """The peer answers (on some network) as an ACTIVE whose keepalived is MASTER, while
    VRRP between us is broken: our keepalived is MASTER too, or the peer does not answer
    on VRRP's network; and another network answered after VRRP's fell silent
    (``peer_elsewhere``: a peer that just died still looks fresh everywhere for a moment,
    and closing the gate then would only delay the takeover). The peer is alive and
    serving; VRRP's network is cut, not the peer dead. Taking the VIP would put it on
    both nodes (clients follow whichever announced it last, and this node serves
    nothing); promoting would make two writers."""
    p = obs.peer
    return (p is not None and p.role == Role.ACTIVE and p.vrrp == Vrrp.MASTER and obs.peer_elsewhere
            and (obs.vrrp == Vrrp.MASTER or not obs.peer_on_vrrp_path))


def decide(role: Role, obs: Observation) -> Decision:
    """One step of the state machine."""
    dec = _decide(role, obs)
    if dec.role != Role.ACTIVE and dec.desired.vrrp_gate and peer_serves_elsewhere(obs):
        # One place for every non-active rule: closing the gate makes our keepalived
        # FAULT (it drops the VIP it may have taken); it opens again once VRRP's network
        # carries the peer's answers, and adverts, again.
        why = ("keepalived MASTER but the peer answers as ACTIVE (on another path): not taking over"
               if obs.vrrp == Vrrp.MASTER else
               "the peer answers as ACTIVE on another path only (VRRP's network is cut): "
               "VRRP gate closed, not taking over")
        job = None if dec.job == Job.PROMOTE else dec.job  # (never reached: defence in depth)
        dec = replace(dec, desired=replace(dec.desired, vrrp_gate=False), reason=why, job=job)
    return dec


def _decide(role: Role, obs: Observation) -> Decision:
    if not obs.ha:
        return _standalone(obs)
    if not obs.volume_ok:
        return Decision(Role.FAULT, OFF, "the database volume is absent: not serving")
    if role == Role.FAULT:
        role = Role.SWITCHING_TO_STANDBY  # the fault cleared: start over as a follower
    if obs.job_done == Job.PROMOTE and role != Role.ACTIVE:
        return _active(obs, "promoted: now active")
    if role == Role.ACTIVE:
        return _active(obs)
    if role == Role.STANDBY:
        return _standby(obs)
    if role == Role.SWITCHING_TO_ACTIVE and obs.job_running == Job.PROMOTE:
        return Decision(role, _promoting(obs), "promoting the database")
    return _joining(role, obs)


def _standalone(obs: Observation) -> Decision:
    if obs.db.state == Db.ABSENT:
        return Decision(Role.FAULT, OFF, "no database on this node")
    if obs.db.state == Db.STANDBY and obs.job_running is None:
        return Decision(Role.STANDALONE, SERVE_ALONE, "standalone node: promoting its database",
                        job=Job.PROMOTE)
    return Decision(Role.STANDALONE, SERVE_ALONE, "standalone node")


def _promoting(obs: Observation) -> Desired:
    return Desired(db="standby", services=False, vrrp_gate=True, alone=True, lease=obs.witness)


def _active(obs: Observation, why: str = "") -> Decision:
    if obs.paused_for > obs.pause_fence:
        return Decision(Role.SWITCHING_TO_STANDBY, OFF,
                        f"frozen for {obs.paused_for:.1f}s, long enough for the peer to take over: "
                        "fencing before anything else")
    if obs.witness and obs.lease_peer and not obs.lease_valid:
        return Decision(Role.SWITCHING_TO_STANDBY, OFF,
                        "the witness gave the lease to the peer: fencing and stepping down")
    if peer_is_newer(obs):
        assert obs.peer is not None
        return Decision(Role.SWITCHING_TO_STANDBY, OFF,
                        f"the peer's database is on timeline {obs.peer.db.timeline}, later than ours "
                        f"({obs.db.timeline}): fencing and stepping down")
    if obs.command == Command.SWITCHOVER:
        return Decision(Role.SWITCHING_TO_STANDBY, OFF,
                        "switchover requested: stepping down for the peer", job=Job.REJOIN,
                        consumed=True)
    if obs.vrrp != Vrrp.MASTER:
        # No rejoin job yet: the joining rules decide whom to follow, and never rewind
        # onto a peer whose history is older than ours.
        return Decision(Role.SWITCHING_TO_STANDBY, OFF,
                        f"keepalived is {obs.vrrp}, not MASTER: fencing and stepping down")
    if obs.db.state == Db.STANDBY and obs.job_running is None:
        return Decision(Role.ACTIVE, active_desired(obs), "database still in recovery: promoting",
                        job=Job.PROMOTE)
    desired = active_desired(obs)
    if obs.witness and not obs.lease_valid and not must_wait_for_peer(obs):
        why = why or "peer not a complete standby, and no lease from the witness: commits wait"
    elif desired.alone:
        why = why or "peer not a complete standby within alone_after: committing alone"
    else:
        why = why or "serving; commits wait for the synchronous standby"
    return Decision(Role.ACTIVE, desired, why)


MAINTENANCE_HINT = "no automatic failover (escadm op_mode set --mode=operation, or ha force-active)"


def _standby(obs: Observation) -> Decision:
    complete = confirmed_complete(obs)
    follow = replace(FOLLOW, vrrp_gate=complete and not obs.maintenance)
    if obs.command == Command.FORCE_ACTIVE:
        return Decision(Role.STANDBY, follow, "force-active refused: the peer is reachable "
                        "or this node is a standby (use switchover)", consumed=True)
    if obs.maintenance:
        if obs.peer is None:
            return Decision(Role.SWITCHING_TO_ACTIVE, FOLLOW,
                            f"peer lost in maintenance mode: {MAINTENANCE_HINT}")
        if complete:
            return Decision(Role.STANDBY, follow, "following the active (maintenance mode)")
    if obs.vrrp == Vrrp.MASTER:
        if not complete:
            return Decision(Role.SWITCHING_TO_ACTIVE, FOLLOW,
                            "keepalived MASTER but data not confirmed complete within "
                            "promote_window: refusing to promote")
        if obs.peer is not None and obs.peer.db.state in (Db.PRIMARY, Db.STARTING):
            return Decision(Role.STANDBY, follow,
                            "keepalived MASTER; waiting for the peer's database to stop")
        if obs.peer is not None and obs.peer.role == Role.ACTIVE and obs.peer.vrrp == Vrrp.MASTER:
            # alive (on some network) and holding its VIP, its database restarting after a
            # crash: it stays active by itself; never a second primary. (An active that
            # stops hands over: it closes its gate first, so its keepalived is not MASTER.)
            return Decision(Role.STANDBY, follow,
                            "keepalived MASTER; the peer still answers as ACTIVE: waiting for it")
        blocked = lease_blocks(obs)
        if blocked is not None:
            return blocked
        lost = "peer lost" if obs.peer is None else f"peer is {obs.peer.role}"
        return Decision(Role.SWITCHING_TO_ACTIVE, _promoting(obs),
                        f"keepalived MASTER, {lost}, data complete: promoting", job=Job.PROMOTE)
    if obs.peer is None:
        if complete:
            return Decision(Role.STANDBY, follow, "peer not answering; ready to take over")
        return Decision(Role.SWITCHING_TO_ACTIVE, FOLLOW,
                        "peer lost and data no longer confirmed complete: waiting for the peer")
    if not complete:
        if obs.peer.role == Role.ACTIVE:
            return Decision(Role.SWITCHING_TO_STANDBY, FOLLOW,
                            "the active no longer confirms this standby complete: catching up")
        return _joining(Role.SWITCHING_TO_STANDBY, obs)
    return Decision(Role.STANDBY, follow, "following the active")


def _joining(role: Role, obs: Observation) -> Decision:
    """SWITCHING_TO_ACTIVE / SWITCHING_TO_STANDBY / STOPPED: find our place in the pair."""
    if obs.job_running is not None:
        return Decision(role, OFF if obs.job_running == Job.REJOIN else FOLLOW,
                        f"waiting for {obs.job_running}")
    peer = obs.peer
    if peer is None:
        if obs.command == Command.FORCE_ACTIVE:
            if obs.db.state == Db.ABSENT:
                return Decision(Role.SWITCHING_TO_ACTIVE, OFF,
                                "force-active refused: no database on this node", consumed=True)
            if obs.vrrp != Vrrp.MASTER:
                return Decision(Role.SWITCHING_TO_ACTIVE, Desired(db="standby", vrrp_gate=True),
                                "forced active by the operator: waiting for keepalived MASTER")
            return Decision(Role.SWITCHING_TO_ACTIVE, _promoting(obs),
                            "forced active by the operator: promoting alone",
                            job=Job.PROMOTE, consumed=True)
        if not obs.peer_ever_seen:
            return Decision(Role.SWITCHING_TO_ACTIVE, _follow_if_data(obs),
                            "peer never reached since start: not serving (force-active overrides)")
        if obs.maintenance:
            return Decision(Role.SWITCHING_TO_ACTIVE, _follow_if_data(obs),
                            f"peer lost in maintenance mode: {MAINTENANCE_HINT}")
        if confirmed_complete(obs) and obs.db.state == Db.STANDBY:
            if obs.vrrp == Vrrp.MASTER:  # e.g. a promotion that failed: try again
                blocked = lease_blocks(obs)
                if blocked is not None:
                    return blocked
                return Decision(Role.SWITCHING_TO_ACTIVE, _promoting(obs),
                                "keepalived MASTER, peer lost, data complete: promoting",
                                job=Job.PROMOTE)
            return Decision(Role.SWITCHING_TO_ACTIVE, replace(FOLLOW, vrrp_gate=True),
                            "peer lost, data complete: waiting for keepalived MASTER")
        if obs.db.state == Db.PRIMARY:
            return Decision(Role.SWITCHING_TO_ACTIVE, OFF, "peer lost while stepping down: "
                            "stopping the database until the peer is back")
        return Decision(Role.SWITCHING_TO_ACTIVE, _follow_if_data(obs),
                        "peer lost: waiting for it")
    if obs.command == Command.FORCE_ACTIVE:
        return Decision(role, _follow_if_data(obs),
                        "force-active refused: the peer is reachable", consumed=True)
    if peer.role == Role.ACTIVE:
        if peer_is_older(obs):
            return Decision(Role.SWITCHING_TO_STANDBY, _follow_if_data(obs),
                            f"the peer is active on timeline {peer.db.timeline}, earlier than ours "
                            f"({obs.db.timeline}): not rewinding onto it; waiting for it to step down")
        if obs.db.state in (Db.ABSENT, Db.PRIMARY) or obs.job_failed == Job.REJOIN \
                or (obs.db.state == Db.STOPPED and obs.db.was_primary):
            return Decision(Role.SWITCHING_TO_STANDBY, OFF,
                            "the peer is active: rejoining as its standby", job=Job.REJOIN)
        since = obs.not_streaming_since
        not_streaming_for = obs.now - since if since is not None else 0.0
        behind = peer.db.state == Db.PRIMARY and 0 < obs.db.timeline < peer.db.timeline
        if obs.db.state in (Db.STANDBY, Db.STARTING) and since is not None and behind \
                and not_streaming_for > BEHIND_GRACE:
            # only the old primary can be a standby on an earlier timeline than the
            # active's; it has likely written past the fork, so rewind without waiting
            return Decision(Role.SWITCHING_TO_STANDBY, OFF,
                            f"on timeline {obs.db.timeline}, the active on {peer.db.timeline}: "
                            "rewinding onto its history", job=Job.REJOIN)
        if obs.db.state in (Db.STANDBY, Db.STARTING) and since is not None \
                and not_streaming_for > obs.rejoin_grace:
            # STARTING too: a standby that never reaches a consistent state (diverged
            # history) must not wait forever either.
            return Decision(Role.SWITCHING_TO_STANDBY, OFF,
                            f"not streaming from the active after {not_streaming_for:.1f}s: "
                            "rewinding", job=Job.REJOIN)
        if obs.db.state == Db.STANDBY and obs.db.streaming and confirmed_complete(obs):
            return Decision(Role.STANDBY, replace(FOLLOW, vrrp_gate=True),
                            "streaming and confirmed complete by the active")
        return Decision(Role.SWITCHING_TO_STANDBY, FOLLOW, "catching up with the active")
    if peer.role in (Role.SWITCHING_TO_ACTIVE, Role.SWITCHING_TO_STANDBY, Role.STOPPED,
                     Role.FAULT, Role.STANDBY):
        if peer.db.state == Db.PRIMARY:
            return Decision(Role.SWITCHING_TO_STANDBY, FOLLOW,
                            "the peer's database is still primary: waiting")
        if wins_election(obs) and peer.role != Role.STANDBY:
            gate = Desired(db="standby", vrrp_gate=True)
            if obs.vrrp != Vrrp.MASTER:
                return Decision(Role.SWITCHING_TO_ACTIVE, gate,
                                "elected (best data): waiting for keepalived MASTER")
            blocked = lease_blocks(obs)
            if blocked is not None:
                return blocked
            return Decision(Role.SWITCHING_TO_ACTIVE, _promoting(obs),
                            "elected (best data) and keepalived MASTER: promoting",
                            job=Job.PROMOTE)
        if obs.db.state not in KNOWN_POSITION or peer.db.state not in KNOWN_POSITION:
            return Decision(Role.SWITCHING_TO_STANDBY, _follow_if_data(obs),
                            "waiting until both databases report their position to elect")
        return Decision(Role.SWITCHING_TO_STANDBY, _follow_if_data(obs),
                        f"the peer ({peer.role}) has the better claim: waiting for it to be active")
    return Decision(Role.SWITCHING_TO_STANDBY, _follow_if_data(obs),
                    f"peer is {peer.role}: waiting")


def _follow_if_data(obs: Observation) -> Desired:
    return FOLLOW if obs.db.state != Db.ABSENT else OFF
