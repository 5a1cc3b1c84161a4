"""The role state machine as one ordered table.

:func:`decide` takes the role the node has and what it observed this tick, and walks
three lists in order:

1. :data:`RENAMES`: every matching row rewrites the role the rules below see. A FAULT
   starts over as SWITCHING_TO_STANDBY (a fault that persists is found again by the
   rules); a node other than ACTIVE whose promotion just finished is ``PROMOTED`` (not a
   role: the set of rows it shares with ACTIVE, reporting that it was promoted).
2. :data:`RULES`: **the first row that matches decides**: a row matches when the role is
   one of its ``from_roles`` and every guard in ``when`` holds. Guards are named
   predicates (:mod:`esc.roles.predicates`); a row lists only what the rows above it have
   not already ruled out. The row gives the new role (``SAME``: the role it was given),
   the desired state, at most one long job, whether the operator's command was acted on,
   and the reason (a format string over ``obs``, or a function of it).
3. :data:`OVERRIDES`: cross-cutting amendments of the decision, applied in order.

The last row of every role set has no guard, so every (role, observation) is decided.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Final, Literal

from esc.roles.observation import (
    ASK_FOR_LEASE,
    FOLLOW,
    GATED,
    LEASE_WITH_PEER,
    OFF,
    SERVE_ALONE,
    Db,
    Decision,
    Desired,
    Job,
    Observation,
    Role,
)
from esc.roles.predicates import (
    Guard,
    behind_the_active,
    confirmed_complete,
    db_absent,
    db_in_recovery,
    db_primary,
    force_active_requested,
    frozen_too_long,
    ha_configured,
    job_running,
    keepalived_master,
    lease_kept_by_peer,
    lease_missing,
    lease_went_to_peer,
    maintenance_mode,
    must_wait_for_peer,
    needs_rejoin,
    no_job_running,
    not_,
    not_streaming_for,
    not_streaming_too_long,
    peer_active_and_master,
    peer_db_may_be_primary,
    peer_db_primary,
    peer_ever_seen,
    peer_gone_or_behind,
    peer_held_outdated,
    peer_in_election,
    peer_is_active,
    peer_is_newer,
    peer_is_older,
    peer_is_standby,
    peer_lost,
    peer_ready_for_switchover,
    peer_serves_elsewhere,
    positions_unknown,
    promote_running,
    promotion_finished,
    ready_to_take_over,
    streaming_standby,
    switchover_requested,
    volume_present,
    wins_election,
)


class Phase(StrEnum):
    """A state the rows see that is not a role the node reports."""

    PROMOTED = "PROMOTED"  # a role other than ACTIVE whose promotion just finished


State = Role | Phase
SAME: Final[Literal["SAME"]] = "SAME"  # a rule's target: the node keeps the role it was given
Target = Role | Literal["SAME"]
Outcome = Desired | Callable[[Observation], Desired]
Reason = str | Callable[[Observation], str]

STA = Role.SWITCHING_TO_ACTIVE
STS = Role.SWITCHING_TO_STANDBY
PROMOTED = Phase.PROMOTED

# The states the rules see (renamed: FAULT never reaches them, PROMOTED may).
ANY: Final[frozenset[State]] = frozenset({*Role, PROMOTED} - {Role.FAULT})
AS_ACTIVE: Final[frozenset[State]] = frozenset({Role.ACTIVE, PROMOTED})
# Finding its place in the pair. (STANDALONE and MAINTENANCE are never kept by an HA node
# but are accepted like STOPPED.)
JOINING: Final[frozenset[State]] = frozenset({STA, STS, Role.STOPPED, Role.STANDALONE, Role.MAINTENANCE})
JOINING_OR_STANDBY: Final[frozenset[State]] = JOINING | {Role.STANDBY}
NOT_ACTIVE: Final[frozenset[Role]] = frozenset(set(Role) - {Role.ACTIVE})

MAINTENANCE_HINT = "no automatic failover (escadm op_mode set --mode=operation, or ha force-active)"


# ------------------------------------------------------------------ desired states that depend on obs


def active_desired(obs: Observation) -> Desired:
    """Primary, services, gate open; alone only when the peer need not be waited for and,
    with a witness, while we hold the lease (a partitioned active refuses writes, they wait
    for the standby, rather than acknowledge ones the peer lacks)."""
    alone = not must_wait_for_peer(obs) and (not obs.witness or obs.lease_valid)
    outdate: bool | None = None
    if obs.witness and obs.lease_valid:
        # set while the peer is gone (its agent silent: the walsender may still call it a
        # complete standby for seconds after a cable is pulled) or does not stream;
        # cleared once it is heard and a complete standby again
        if obs.peer is not None and obs.db.peer_complete:
            outdate = False
        elif peer_gone_or_behind(obs):
            outdate = True
    return Desired(db="primary", services=True, vrrp_gate=True, alone=alone, lease=obs.witness,
                   outdate_peer=outdate)


def while_promoting(obs: Observation) -> Desired:
    """While promoting: the database still a standby, the gate open, alone once primary,
    and the witness's lease held."""
    return Desired(db="standby", services=False, vrrp_gate=True, alone=True, lease=obs.witness)


def follow_if_data(obs: Observation) -> Desired:
    """FOLLOW, or OFF when there is no database to run."""
    return FOLLOW if obs.db.state != Db.ABSENT else OFF


def standby_follow(obs: Observation) -> Desired:
    """FOLLOW with the gate open while confirmed complete and not in maintenance mode."""
    return replace(FOLLOW, vrrp_gate=confirmed_complete(obs) and not obs.maintenance)


def while_job_runs(obs: Observation) -> Desired:
    """OFF while a rejoin replaces the database, FOLLOW while anything else runs."""
    return OFF if obs.job_running == Job.REJOIN else FOLLOW


# ------------------------------------------------------------------ reasons that compute


def master_promotes_reason(obs: Observation) -> str:
    """keepalived MASTER, {peer lost | peer is <role>}, data complete: promoting"""
    lost = "peer lost" if obs.peer is None else f"peer is {obs.peer.role}"
    return f"keepalived MASTER, {lost}, data complete: promoting"


def not_streaming_reason(obs: Observation) -> str:
    """not streaming from the active after {not_streaming_for:.1f}s: rewinding"""
    return f"not streaming from the active after {not_streaming_for(obs):.1f}s: rewinding"


# ------------------------------------------------------------------ the rows


@dataclass(frozen=True)
class Rename:
    """Rewrite the role the rules see (every matching rename applies, in order)."""

    name: str
    from_roles: frozenset[State]
    when: tuple[Guard, ...]
    to: State
    why: str

    def matches(self, state: State, obs: Observation) -> bool:
        return state in self.from_roles and all(g(obs) for g in self.when)


@dataclass(frozen=True)
class Rule:
    """One row: from these roles, when every guard holds, decide this."""

    name: str
    from_roles: frozenset[State]
    when: tuple[Guard, ...]
    to: Target
    desired: Outcome
    reason: Reason
    job: Job | None = None
    consumed: bool = False

    def matches(self, state: State, obs: Observation) -> bool:
        return state in self.from_roles and all(g(obs) for g in self.when)

    def decision(self, state: State, obs: Observation) -> Decision:
        if self.to == SAME:
            assert isinstance(state, Role), f"{self.name}: {state} has no role to keep"
            role = state
        else:
            role = Role(self.to)
        desired = self.desired if isinstance(self.desired, Desired) else self.desired(obs)
        reason = self.reason.format(obs=obs) if isinstance(self.reason, str) else self.reason(obs)
        return Decision(role, desired, reason, job=self.job, consumed=self.consumed)


DecisionGuard = Callable[[Decision], bool]


def decided_gate_open(dec: Decision) -> bool:
    """The decision so far opens the VRRP gate (keepalived may become MASTER)."""
    return dec.desired.vrrp_gate


def close_vrrp_gate(dec: Decision) -> Decision:
    """Close the VRRP gate, and drop a promotion (never two writers)."""
    job = None if dec.job == Job.PROMOTE else dec.job
    return replace(dec, desired=replace(dec.desired, vrrp_gate=False), job=job)


@dataclass(frozen=True)
class Override:
    """Amend any decision to one of ``roles`` for which ``decided`` and ``when`` hold."""

    name: str
    roles: frozenset[Role]  # the decided roles it amends
    decided: tuple[DecisionGuard, ...]
    when: tuple[Guard, ...]
    then: Callable[[Decision], Decision]
    reason: str

    def matches(self, dec: Decision, obs: Observation) -> bool:
        return (dec.role in self.roles and all(g(dec) for g in self.decided)
                and all(g(obs) for g in self.when))

    def apply(self, dec: Decision, obs: Observation) -> Decision:
        return replace(self.then(dec), reason=self.reason.format(obs=obs))


RENAMES: Final[tuple[Rename, ...]] = (
    Rename("fault-cleared", frozenset({Role.FAULT}), (), STS,
           "a FAULT starts over as a follower; a fault that persists is found again "
           "(standalone-no-database, volume-absent)"),
    Rename("promotion-finished", NOT_ACTIVE, (promotion_finished,), PROMOTED,
           "a promotion just finished: the node follows the active's rows"),
)

R = Rule
RULES: Final[tuple[Rule, ...]] = (
    # ---- no HA, no volume: whatever the role
    R("standalone-no-database", ANY, (not_(ha_configured), db_absent), Role.FAULT, OFF,
      "no database on this node"),
    R("standalone-promotes", ANY, (not_(ha_configured), db_in_recovery, no_job_running),
      Role.STANDALONE, SERVE_ALONE, "standalone node: promoting its database", job=Job.PROMOTE),
    R("standalone", ANY, (not_(ha_configured),), Role.STANDALONE, SERVE_ALONE, "standalone node"),
    R("volume-absent", ANY, (not_(volume_present),), Role.FAULT, OFF,
      "the database volume is absent: not serving"),
    # ---- the active (and a node whose promotion just finished): fence first
    R("active-frozen-too-long", AS_ACTIVE, (frozen_too_long,), STS, OFF,
      "frozen for {obs.paused_for:.1f}s, long enough for the peer to take over: "
      "fencing before anything else"),
    R("active-lease-went-to-peer", AS_ACTIVE, (lease_went_to_peer,), STS, OFF,
      "the witness gave the lease to the peer: fencing and stepping down"),
    R("active-peer-is-newer", AS_ACTIVE, (peer_is_newer,), STS, OFF,
      "the peer's database is on timeline {obs.peer.db.timeline}, later than ours "
      "({obs.db.timeline}): fencing and stepping down"),
    R("active-switchover", AS_ACTIVE, (switchover_requested, peer_ready_for_switchover), STS, OFF,
      "switchover requested: stepping down for the peer", job=Job.REJOIN, consumed=True),
    R("switchover-refused-fences", AS_ACTIVE, (switchover_requested, not_(keepalived_master)),
      STS, OFF, "switchover refused (the peer is not a complete synchronous standby), and "
      "keepalived is {obs.vrrp}, not MASTER: fencing and stepping down", consumed=True),
    # no rejoin job yet: the joining rows decide whom to follow, and never rewind onto a
    # peer whose history is older than ours
    R("active-not-master", AS_ACTIVE, (not_(keepalived_master),), STS, OFF,
      "keepalived is {obs.vrrp}, not MASTER: fencing and stepping down"),
    R("active-promotes-recovery", AS_ACTIVE, (db_in_recovery, no_job_running), Role.ACTIVE,
      active_desired, "database still in recovery: promoting", job=Job.PROMOTE),
    R("promoted-now-active", frozenset({PROMOTED}), (), Role.ACTIVE, active_desired,
      "promoted: now active"),
    R("active-switchover-refused", frozenset({Role.ACTIVE}), (switchover_requested,), Role.ACTIVE,
      active_desired, "switchover refused: the peer is not a complete synchronous standby",
      consumed=True),
    R("active-no-lease-waits", frozenset({Role.ACTIVE}), (lease_missing, not_(must_wait_for_peer)),
      Role.ACTIVE, active_desired,
      "peer not a complete standby, and no lease from the witness: commits wait"),
    R("active-alone-peer-outdated", frozenset({Role.ACTIVE}), (peer_held_outdated,), Role.ACTIVE,
      active_desired, "the witness holds the peer outdated: committing alone"),
    R("active-commits-alone", frozenset({Role.ACTIVE}), (not_(must_wait_for_peer),), Role.ACTIVE,
      active_desired, "peer not a complete standby within alone_after: committing alone"),
    R("active-serving", frozenset({Role.ACTIVE}), (), Role.ACTIVE, active_desired,
      "serving; commits wait for the synchronous standby"),
    # ---- a promotion under way
    R("promoting", frozenset({STA}), (promote_running,), STA, while_promoting,
      "promoting the database"),
    # ---- the standby
    # a lone standby the operator forces leaves its role; the rows for a lone node below
    # carry the command out
    R("standby-forced", frozenset({Role.STANDBY}), (force_active_requested, peer_lost), STA,
      FOLLOW, "forced active by the operator: the peer is lost, leaving the standby role"),
    R("standby-force-active-refused", frozenset({Role.STANDBY}), (force_active_requested,),
      Role.STANDBY, standby_follow, "force-active refused: the peer is reachable (use switchover)",
      consumed=True),
    R("standby-maintenance-lost", frozenset({Role.STANDBY}), (maintenance_mode, peer_lost), STA,
      FOLLOW, f"peer lost in maintenance mode: {MAINTENANCE_HINT}"),
    R("standby-maintenance", frozenset({Role.STANDBY}), (maintenance_mode, confirmed_complete),
      Role.STANDBY, standby_follow, "following the active (maintenance mode)"),
    R("standby-master-unconfirmed", frozenset({Role.STANDBY}),
      (keepalived_master, not_(confirmed_complete)), STA, FOLLOW,
      "keepalived MASTER but data not confirmed complete within promote_window: refusing to promote"),
    # confirmed, yet the local data cannot be promoted as it is (absent after a failed clone,
    # or left a primary): never promote it, follow and let the rejoin repair it
    R("standby-master-data-unusable", frozenset({Role.STANDBY}),
      (keepalived_master, needs_rejoin), STA, FOLLOW,
      "keepalived MASTER but the local data must be rejoined first: refusing to promote"),
    R("standby-master-peer-db-up", frozenset({Role.STANDBY}),
      (keepalived_master, peer_db_may_be_primary), Role.STANDBY, standby_follow,
      "keepalived MASTER; waiting for the peer's database to stop"),
    # alive (on some network) and holding its VIP, its database restarting after a crash:
    # it stays active by itself; never a second primary. (An active that stops hands over:
    # it closes its gate first, so its keepalived is not MASTER.)
    R("standby-master-peer-active", frozenset({Role.STANDBY}),
      (keepalived_master, peer_active_and_master), Role.STANDBY, standby_follow,
      "keepalived MASTER; the peer still answers as ACTIVE: waiting for it"),
    R("standby-lease-with-peer", frozenset({Role.STANDBY}),
      (keepalived_master, lease_missing, lease_kept_by_peer), STA, LEASE_WITH_PEER,
      "the witness has kept the lease with the peer for {obs.lease_peer_for:.1f}s: it is alive; "
      "not taking over"),
    # still a standby while it asks: as SWITCHING_TO_ACTIVE, a peer that answers (an active
    # that stepped down when its keepalived died) would send it to an election instead
    R("standby-asks-for-lease", frozenset({Role.STANDBY}), (keepalived_master, lease_missing),
      Role.STANDBY, ASK_FOR_LEASE, "asking the witness for the lease before promoting"),
    R("standby-promotes", frozenset({Role.STANDBY}), (keepalived_master,), STA, while_promoting,
      master_promotes_reason, job=Job.PROMOTE),
    R("standby-peer-lost-ready", frozenset({Role.STANDBY}), (peer_lost, confirmed_complete),
      Role.STANDBY, standby_follow, "peer not answering; ready to take over"),
    R("standby-peer-lost", frozenset({Role.STANDBY}), (peer_lost,), STA, FOLLOW,
      "peer lost and data no longer confirmed complete: waiting for the peer"),
    R("standby-catching-up", frozenset({Role.STANDBY}), (not_(confirmed_complete), peer_is_active),
      STS, FOLLOW, "the active no longer confirms this standby complete: catching up"),
    R("standby-following", frozenset({Role.STANDBY}), (confirmed_complete,), Role.STANDBY,
      standby_follow, "following the active"),
    # a standby no longer confirmed whose peer is not active joins the election below as
    # SWITCHING_TO_STANDBY
    R("standby-waits-for-job", frozenset({Role.STANDBY}), (job_running,), STS, while_job_runs,
      "waiting for {obs.job_running}"),
    # ---- finding its place in the pair
    R("waiting-for-job", JOINING, (job_running,), SAME, while_job_runs,
      "waiting for {obs.job_running}"),
    # -- the peer answers on no network
    R("force-active-no-database", JOINING, (peer_lost, force_active_requested, db_absent), STA, OFF,
      "force-active refused: no database on this node", consumed=True),
    R("forced-waiting-for-master", JOINING,
      (peer_lost, force_active_requested, not_(keepalived_master)), STA, GATED,
      "forced active by the operator: waiting for keepalived MASTER"),
    # a promotion starts from a running standby (or keeps a primary); the command waits
    # for the database rather than failing on a stopped one
    R("forced-waiting-for-database", JOINING,
      (peer_lost, force_active_requested, not_(db_in_recovery), not_(db_primary)), STA, GATED,
      "forced active by the operator: waiting for the database to run"),
    R("forced-promotes", JOINING, (peer_lost, force_active_requested), STA, while_promoting,
      "forced active by the operator: promoting alone", job=Job.PROMOTE, consumed=True),
    R("peer-never-seen", JOINING, (peer_lost, not_(peer_ever_seen)), STA, follow_if_data,
      "peer never reached since start: not serving (force-active overrides)"),
    R("maintenance-peer-lost", JOINING, (peer_lost, maintenance_mode), STA, follow_if_data,
      f"peer lost in maintenance mode: {MAINTENANCE_HINT}"),
    # e.g. a promotion that failed: try again
    R("lost-lease-with-peer", JOINING,
      (peer_lost, ready_to_take_over, keepalived_master, lease_missing, lease_kept_by_peer), STA,
      LEASE_WITH_PEER,
      "the witness has kept the lease with the peer for {obs.lease_peer_for:.1f}s: it is alive; "
      "not taking over"),
    R("lost-asks-for-lease", JOINING, (peer_lost, ready_to_take_over, keepalived_master, lease_missing),
      STA, ASK_FOR_LEASE, "asking the witness for the lease before promoting"),
    R("lost-promotes", JOINING, (peer_lost, ready_to_take_over, keepalived_master), STA,
      while_promoting, "keepalived MASTER, peer lost, data complete: promoting", job=Job.PROMOTE),
    R("lost-waiting-for-master", JOINING, (peer_lost, ready_to_take_over), STA, GATED,
      "peer lost, data complete: waiting for keepalived MASTER"),
    R("lost-stops-primary", JOINING, (peer_lost, db_primary), STA, OFF,
      "peer lost while stepping down: stopping the database until the peer is back"),
    R("lost-waiting", JOINING, (peer_lost,), STA, follow_if_data, "peer lost: waiting for it"),
    # -- the peer answers
    R("force-active-refused", JOINING, (force_active_requested,), SAME, follow_if_data,
      "force-active refused: the peer is reachable", consumed=True),
    R("active-peer-is-older", JOINING, (peer_is_active, peer_is_older), STS, follow_if_data,
      "the peer is active on timeline {obs.peer.db.timeline}, earlier than ours "
      "({obs.db.timeline}): not rewinding onto it; waiting for it to step down"),
    R("rejoin-the-active", JOINING, (peer_is_active, needs_rejoin), STS, OFF,
      "the peer is active: rejoining as its standby", job=Job.REJOIN),
    R("rewind-behind-the-active", JOINING, (peer_is_active, behind_the_active), STS, OFF,
      "on timeline {obs.db.timeline}, the active on {obs.peer.db.timeline}: "
      "rewinding onto its history", job=Job.REJOIN),
    R("rewind-not-streaming", JOINING, (peer_is_active, not_streaming_too_long), STS, OFF,
      not_streaming_reason, job=Job.REJOIN),
    R("joined-as-standby", JOINING, (peer_is_active, streaming_standby, confirmed_complete),
      Role.STANDBY, GATED, "streaming and confirmed complete by the active"),
    R("catching-up", JOINING, (peer_is_active,), STS, FOLLOW, "catching up with the active"),
    # -- nobody is active: the better data is elected
    R("peer-db-still-primary", JOINING_OR_STANDBY, (peer_in_election, peer_db_primary), STS, FOLLOW,
      "the peer's database is still primary: waiting"),
    R("elected-waiting-for-master", JOINING_OR_STANDBY,
      (peer_in_election, wins_election, not_(peer_is_standby), not_(keepalived_master)), STA, GATED,
      "elected (best data): waiting for keepalived MASTER"),
    R("elected-lease-with-peer", JOINING,
      (peer_in_election, wins_election, not_(peer_is_standby), lease_missing, lease_kept_by_peer),
      STA, LEASE_WITH_PEER,
      "the witness has kept the lease with the peer for {obs.lease_peer_for:.1f}s: it is alive; "
      "not taking over"),
    R("elected-asks-for-lease", JOINING,
      (peer_in_election, wins_election, not_(peer_is_standby), lease_missing), STA, ASK_FOR_LEASE,
      "asking the witness for the lease before promoting"),
    R("elected-promotes", JOINING, (peer_in_election, wins_election, not_(peer_is_standby)), STA,
      while_promoting, "elected (best data) and keepalived MASTER: promoting", job=Job.PROMOTE),
    R("positions-unknown", JOINING_OR_STANDBY, (peer_in_election, positions_unknown), STS,
      follow_if_data, "waiting until both databases report their position to elect"),
    R("peer-has-better-claim", JOINING_OR_STANDBY, (peer_in_election,), STS, follow_if_data,
      "the peer ({obs.peer.role}) has the better claim: waiting for it to be active"),
    R("peer-role-waiting", JOINING_OR_STANDBY, (), STS, follow_if_data,
      "peer is {obs.peer.role}: waiting"),
)
del R

# Closing the gate makes our keepalived FAULT (it drops the VIP it may have taken); it
# opens again once VRRP's network carries the peer's answers, and adverts, again.
OVERRIDES: Final[tuple[Override, ...]] = (
    Override("peer-serves-elsewhere", NOT_ACTIVE, (decided_gate_open,),
             (peer_serves_elsewhere, keepalived_master), close_vrrp_gate,
             "keepalived MASTER but the peer answers as ACTIVE (on another path): not taking over"),
    Override("peer-serves-vrrp-cut", NOT_ACTIVE, (decided_gate_open,),
             (peer_serves_elsewhere, not_(keepalived_master)), close_vrrp_gate,
             "the peer answers as ACTIVE on another path only (VRRP's network is cut): "
             "VRRP gate closed, not taking over"),
)

Row = Rename | Rule | Override
TABLE: Final[tuple[Row, ...]] = (*RENAMES, *RULES, *OVERRIDES)


# ------------------------------------------------------------------ the walk


@dataclass(frozen=True)
class Match:
    """How a decision was reached: the renames applied, the rule, the overrides applied."""

    state: State  # what the rules saw
    renames: tuple[Rename, ...]
    rule: Rule
    overrides: tuple[Override, ...]
    decision: Decision


def rename(role: Role, obs: Observation) -> tuple[State, tuple[Rename, ...]]:
    """The state the rules see for ``role``, and the renames that made it."""
    state: State = role
    applied: list[Rename] = []
    for r in RENAMES:
        if r.matches(state, obs):
            state = r.to
            applied.append(r)
    return state, tuple(applied)


# The rows each state can match, in table order (the walk skips the others).
_RULES_FOR: Final[dict[State, tuple[Rule, ...]]] = {
    s: tuple(r for r in RULES if s in r.from_roles) for s in (*Role, *Phase)}


def first_rule(state: State, obs: Observation) -> Rule:
    """The first row of :data:`RULES` that matches."""
    for rule in _RULES_FOR[state]:
        if all(g(obs) for g in rule.when):
            return rule
    raise AssertionError(f"no rule for {state}")  # every role set ends with an unguarded row


def match(role: Role, obs: Observation) -> Match:
    """One step of the state machine, with how it was decided."""
    state, renames = rename(role, obs)
    rule = first_rule(state, obs)
    dec = rule.decision(state, obs)
    applied: list[Override] = []
    for o in OVERRIDES:
        if o.matches(dec, obs):
            dec = o.apply(dec, obs)
            applied.append(o)
    return Match(state, renames, rule, tuple(applied), dec)


def decide(role: Role, obs: Observation) -> Decision:
    """One step of the state machine: the new role, the desired state, a job, and why."""
    return match(role, obs).decision
