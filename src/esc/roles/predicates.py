"""The guards of the rule table: small named pure functions of an :class:`Observation`.

Each answers one question about what the agent saw this tick; its docstring's first
line says why the answer matters. The rule table (:mod:`esc.roles.rules`) combines
them by name, so a row reads as the list of these names that must all hold.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from esc.roles.observation import Command, Db, DbView, Job, Observation, PeerView, Role, Vrrp

Predicate = Callable[[Observation], bool]

KNOWN_POSITION = (Db.PRIMARY, Db.STANDBY, Db.ABSENT)
BEHIND_GRACE = 1.0  # a standby on an earlier timeline has this long to follow the switch itself
ELECTION_ROLES = (Role.SWITCHING_TO_ACTIVE, Role.SWITCHING_TO_STANDBY, Role.STOPPED, Role.FAULT,
                  Role.STANDBY)


@dataclass(frozen=True)
class Not:
    """The negation of a named predicate, printed ``not <name>`` (see :func:`not_`)."""

    pred: Predicate

    def __call__(self, obs: Observation) -> bool:
        return not self.pred(obs)


def not_(pred: Predicate) -> Not:
    """``not_(peer_lost)``: holds when ``peer_lost`` does not; printed as ``not peer_lost``."""
    return Not(pred)


Guard = Predicate | Not


def guard_name(guard: Guard) -> str:
    """The printed name of a guard: the function's name, or ``not <name>``."""
    if isinstance(guard, Not):
        return f"not {guard_name(guard.pred)}"
    return guard.__name__


# ------------------------------------------------------------------ the mode and the node


def ha_configured(obs: Observation) -> bool:
    """An HA pair: without it the node serves alone and none of the pair's rules apply."""
    return obs.ha


def volume_present(obs: Observation) -> bool:
    """The database volume is there: without it nothing can run, whatever the role."""
    return obs.volume_ok


def db_absent(obs: Observation) -> bool:
    """No data directory: nothing to serve or promote; only a clone from the peer helps."""
    return obs.db.state == Db.ABSENT


def db_in_recovery(obs: Observation) -> bool:
    """The database runs as a standby: the only state a promotion can start from."""
    return obs.db.state == Db.STANDBY


def db_primary(obs: Observation) -> bool:
    """Our database is a primary: it must not stay one without keepalived MASTER."""
    return obs.db.state == Db.PRIMARY


def streaming_standby(obs: Observation) -> bool:
    """Our database is a standby streaming WAL from the peer: it keeps up with the active."""
    return obs.db.state == Db.STANDBY and obs.db.streaming


def keepalived_master(obs: Observation) -> bool:
    """Our keepalived is MASTER: only there may a database be (or become) the primary."""
    return obs.vrrp == Vrrp.MASTER


def frozen_too_long(obs: Observation) -> bool:
    """The agent's loop stalled longer than a takeover takes: the peer may be active now."""
    return obs.paused_for > obs.pause_fence


def maintenance_mode(obs: Observation) -> bool:
    """The pair is in maintenance: no automatic failover (operator commands still work)."""
    return obs.maintenance


# ------------------------------------------------------------------ jobs and commands


def no_job_running(obs: Observation) -> bool:
    """No long job runs: a new one may be asked (never two at once)."""
    return obs.job_running is None


def job_running(obs: Observation) -> bool:
    """A promotion or a rejoin is running: wait for it, it owns the database meanwhile."""
    return obs.job_running is not None


def promote_running(obs: Observation) -> bool:
    """A promotion is running: hold the VRRP gate open until it is done."""
    return obs.job_running == Job.PROMOTE


def promotion_finished(obs: Observation) -> bool:
    """A promotion just finished: the database is a primary, the node acts as the active."""
    return obs.job_done == Job.PROMOTE


def switchover_requested(obs: Observation) -> bool:
    """The operator asked for a switchover: the active hands over to its standby."""
    return obs.command == Command.SWITCHOVER


def peer_ready_for_switchover(obs: Observation) -> bool:
    """The peer answers as STANDBY and is our complete synchronous standby: nothing is lost.

    The operator's API checks the same before it queues the command (and asks the peer
    once more); the table keeps the rule so that no path around that check can hand
    the role to a standby that lacks writes."""
    return (obs.peer is not None and obs.peer.role == Role.STANDBY and obs.db.peer_complete
            and not obs.db.alone)


def force_active_requested(obs: Observation) -> bool:
    """The operator asked to force this node active: only honoured on a lone node."""
    return obs.command == Command.FORCE_ACTIVE


# ------------------------------------------------------------------ our data


def confirmed_complete(obs: Observation) -> bool:
    """Standby: the active confirmed within ``promote_window`` that we hold every write."""
    return (
        obs.last_confirm_recv is not None
        and obs.now - obs.last_confirm_recv < obs.promote_window
    )


def must_wait_for_peer(obs: Observation) -> bool:
    """Active: commits wait for the peer: it answers and streams, or was complete lately.

    Lately: within alone_after of our last confirmation.
    Not once the witness holds it outdated under our lease: it can never get the lease,
    so never promote without what we commit alone. A walsender's "streaming" alone is no
    sign of life: after a pulled cable it says so until its TCP times out."""
    answers_and_streams = obs.db.peer_streaming and obs.peer is not None
    if peer_held_outdated(obs) and not answers_and_streams:
        return False  # gone (its walsender may not know yet), or back but not streaming
    if answers_and_streams:
        return True  # back and streaming: synchronous again, so it can become complete
    return obs.last_confirm_sent is not None and obs.now - obs.last_confirm_sent < obs.alone_after


def peer_held_outdated(obs: Observation) -> bool:
    """Under our valid lease, the witness confirmed it holds the peer outdated (no lease for it)."""
    return obs.witness and obs.lease_valid and obs.peer_outdated


def peer_gone_or_behind(obs: Observation) -> bool:
    """Active: the peer is silent on every network, or does not stream: mark it outdated."""
    return obs.peer is None or not obs.db.peer_streaming


def ready_to_take_over(obs: Observation) -> bool:
    """A standby database confirmed complete: the only data that may be promoted after a loss."""
    return confirmed_complete(obs) and obs.db.state == Db.STANDBY


def needs_rejoin(obs: Observation) -> bool:
    """Our data cannot just follow the active: it must be rewound or cloned first.

    Absent, a primary, stopped after being a primary, or the last rejoin failed."""
    return (obs.db.state in (Db.ABSENT, Db.PRIMARY) or obs.job_failed == Job.REJOIN
            or (obs.db.state == Db.STOPPED and obs.db.was_primary))


def not_streaming_for(obs: Observation) -> float:
    """Seconds the standby database has been running without streaming (0 if it streams)."""
    since = obs.not_streaming_since
    return obs.now - since if since is not None else 0.0


NotStreamingClock = tuple[float, Db]  # since when, and the database's state when it started


def not_streaming_clock(clock: NotStreamingClock | None, db: DbView, peer: PeerView | None,
                        now: float) -> NotStreamingClock | None:
    """The clock of ``not_streaming_since`` after this observation: since when the database
    has been a standby (or starting) that does not stream from the active, and the state
    it was in then; None while it streams or is no standby.

    "Not streaming" includes streaming an old timeline: a standby whose history forked
    before its own end of WAL reconnects and drops again, in a loop, and would look
    healthy half of the time.

    The clock starts again, once, when a starting database becomes a standby
    (consistent, open for read-only connections). Its start-up had its own, longer
    grace (STARTING_GRACE_FACTOR), and its walreceiver starts only once the local WAL is
    replayed, which after a pg_rewind is where it becomes consistent: counted from the
    start, a start-up longer than ``rejoin_grace`` (the fsync of the data directory after
    a rewind, on a busy disk) left the walreceiver no time to connect, and the next
    rejoin cloned a database that pg_rewind had just made right."""
    if db.state not in (Db.STANDBY, Db.STARTING) or (
            db.streaming and not on_a_timeline_the_active_left(db, peer)):
        return None
    if clock is None or (db.state == Db.STANDBY and clock[1] == Db.STARTING):
        return now, db.state
    return clock


def on_a_timeline_the_active_left(db: DbView, peer: PeerView | None) -> bool:
    """Our database is on an earlier timeline than the peer's primary: streaming it (a
    history that forked before our end of WAL) only loops, so it counts as not streaming."""
    return (peer is not None and peer.db.state == Db.PRIMARY
            and 0 < db.timeline < peer.db.timeline)


def behind_the_active(obs: Observation) -> bool:
    """On an earlier timeline than the active and not streaming: rewind without the full grace.

    A standby (or starting) database, not streaming for ``BEHIND_GRACE``, while the peer is
    a primary on a later timeline: only the old primary gets there, and it has likely
    written past the fork, so waiting ``rejoin_grace`` would only delay it."""
    return (obs.db.state in (Db.STANDBY, Db.STARTING) and obs.not_streaming_since is not None
            and on_a_timeline_the_active_left(obs.db, obs.peer)
            and not_streaming_for(obs) > BEHIND_GRACE)


STARTING_GRACE_FACTOR = 10  # a database still starting gets this many rejoin_graces


def not_streaming_too_long(obs: Observation) -> bool:
    """Not streaming from the active for ``rejoin_grace``: waiting longer would wait forever.

    A standby database: its history diverged from the active's (its time counts from
    when it became consistent, see not_streaming_clock). One still starting (not
    yet consistent) gets ten times as long: after a rewind PostgreSQL first fsyncs its
    data directory and replays from the last checkpoint, which takes seconds on a busy
    disk, and stopping it then made the next rewind fail and fall back to a full clone."""
    if obs.not_streaming_since is None:
        return False
    if obs.db.state == Db.STANDBY:
        return not_streaming_for(obs) > obs.rejoin_grace
    return (obs.db.state == Db.STARTING
            and not_streaming_for(obs) > STARTING_GRACE_FACTOR * obs.rejoin_grace)


# ------------------------------------------------------------------ the peer


def peer_lost(obs: Observation) -> bool:
    """The peer answers on no network: dead, or cut off; only complete data may take over."""
    return obs.peer is None


def peer_ever_seen(obs: Observation) -> bool:
    """We reached the peer since this agent started: a node that never did may be the stale one."""
    return obs.peer_ever_seen


def peer_is_active(obs: Observation) -> bool:
    """The peer answers as ACTIVE: follow it (or wait for it), never compete with it."""
    return obs.peer is not None and obs.peer.role == Role.ACTIVE


def peer_is_standby(obs: Observation) -> bool:
    """The peer answers as STANDBY: it follows an active, so it is not in an election."""
    return obs.peer is not None and obs.peer.role == Role.STANDBY


def peer_active_and_master(obs: Observation) -> bool:
    """The peer answers as ACTIVE with keepalived MASTER: it still serves (maybe restarting)."""
    return obs.peer is not None and obs.peer.role == Role.ACTIVE and obs.peer.vrrp == Vrrp.MASTER


def peer_db_primary(obs: Observation) -> bool:
    """The peer's database is a primary: a second one would make two writers."""
    return obs.peer is not None and obs.peer.db.state == Db.PRIMARY


def peer_db_may_be_primary(obs: Observation) -> bool:
    """The peer's database is a primary or starting (it may come up as one): do not promote."""
    return obs.peer is not None and obs.peer.db.state in (Db.PRIMARY, Db.STARTING)


def peer_in_election(obs: Observation) -> bool:
    """The peer is switching, stopped, in FAULT or a STANDBY: nobody is active, elect one.

    A STANDBY peer does not compete, but its data still counts against ours."""
    return obs.peer is not None and obs.peer.role in ELECTION_ROLES


def wins_election(obs: Observation) -> bool:
    """Both nodes are starting: the one with the better data becomes active.

    Only positions that are known count: a stopped or starting database reports
    none, and electing against it could discard the peer's newer writes. The
    agent starts a stopped database as a standby, so the wait is short. With a
    witness, a node it holds outdated never wins (it could never get the lease), and
    its peer, which marked it while active and so has every acknowledged write, does."""
    assert obs.peer is not None
    if obs.db.state not in KNOWN_POSITION or obs.peer.db.state not in KNOWN_POSITION:
        return False
    mine = obs.db.data_key(obs.self_index)
    theirs = obs.peer.db.data_key(obs.peer.index)
    if obs.db.state == Db.ABSENT:
        return False
    if obs.witness and (obs.self_outdated or obs.peer_outdated):
        return not obs.self_outdated
    if obs.peer.db.state != Db.ABSENT and obs.db.system_id and obs.peer.db.system_id \
            and obs.db.system_id != obs.peer.db.system_id:
        return obs.self_index == 0  # two unrelated databases: the first listed node's wins
    return mine > theirs


def positions_unknown(obs: Observation) -> bool:
    """Our or the peer's database is stopped or starting: no position to elect on yet."""
    return (obs.peer is None or obs.db.state not in KNOWN_POSITION
            or obs.peer.db.state not in KNOWN_POSITION)


def peer_is_newer(obs: Observation) -> bool:
    """The peer's database is on a later timeline than ours: its history is the newer.

    It took over from us (we were frozen, cut off, or partitioned from it). As a primary,
    or already stepped down (a standby or stopped): either way its history is the newer,
    and an active that stays put would leave it waiting forever for us to step down."""
    return (obs.peer is not None and obs.peer.db.state in (Db.PRIMARY, Db.STANDBY, Db.STOPPED)
            and obs.peer.db.timeline > obs.db.timeline > 0)


def peer_is_older(obs: Observation) -> bool:
    """Our data is on a later timeline than the peer's: rewinding onto it would discard ours."""
    return obs.peer is not None and 0 < obs.peer.db.timeline < obs.db.timeline


def peer_serves_elsewhere(obs: Observation) -> bool:
    """The peer serves (ACTIVE, keepalived MASTER) while VRRP between us is broken: keep out.

    The peer answers (on some network) as an ACTIVE whose keepalived is MASTER, while
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


# ------------------------------------------------------------------ the witness


def lease_missing(obs: Observation) -> bool:
    """A witness is configured and we do not hold its lease: no promotion, no committing alone."""
    return obs.witness and not obs.lease_valid


def lease_kept_by_peer(obs: Observation) -> bool:
    """The witness has named the peer holder for longer than a lease: the peer is alive.

    It keeps renewing the lease behind a partition; a dead peer's runs out within ``lease``."""
    return obs.lease_peer and obs.lease_peer_for > obs.lease


def lease_went_to_peer(obs: Observation) -> bool:
    """With a witness, the lease is the peer's and not ours: the peer may promote; step down."""
    return obs.witness and obs.lease_peer and not obs.lease_valid


# ------------------------------------------------------------------ the heartbeat's vouch


def vouches_for_peer(role: Role, db: DbView, alone: bool, fresh: bool) -> bool:
    """Active: tell the asking peer it is a complete synchronous standby (it may promote).

    Not a guard of the table: the answer is given to each heartbeat between ticks, on
    the loop's latest view. Only an ACTIVE primary that commits with the peer as its
    synchronous standby, with the peer flushed past the LSN at which synchronous mode
    was proven in force (``peer_complete``), and only on a view younger than
    ``heartbeat_timeout`` (after a freeze, what was seen before says nothing now)."""
    return (role == Role.ACTIVE and db.state == Db.PRIMARY and not alone and db.peer_complete
            and fresh)
