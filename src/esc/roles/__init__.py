"""The role state machine: observations in, role + desired state + one job out.

Pure: no I/O, no clock reads (``now`` is an observation). The agent gathers an
:class:`Observation` every tick, calls :func:`decide`, logs the reason of every
role change and makes reality match :class:`Desired` (database role, services,
the VRRP gate, synchronous replication). Long actions (promote, rejoin) are
returned as a ``job`` that the agent runs off the loop.

The machine is one ordered table (:mod:`esc.roles.rules`; ``escadm ha rules`` prints
it, ``--dot`` draws it): the first row whose roles and named guards
(:mod:`esc.roles.predicates`) match decides. The table keeps these rules:

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
* the newer history wins: an active steps down when the peer's database is on a
  later timeline (the peer took over while this node was frozen or cut off), and a
  node never rewinds its database onto a peer on an earlier timeline than its own
  (that would discard the newer writes);
* an active that was frozen longer than a takeover takes (``pause_fence``)
  fences itself before anything else: the peer may be active by now;
* in maintenance mode a standby never takes over by itself (its VRRP gate stays
  closed); an operator's force-active still works (the API refuses a switchover);
* a switchover hands the role only to a peer that answers as STANDBY and is the
  active's complete synchronous standby (the API checks it first, the table again);
* peer liveness counts over every network (``--ha_heartbeat_list``): while the peer
  answers as ACTIVE with keepalived MASTER on any of them, a standby never promotes
  and keeps its VRRP gate closed when its own keepalived is MASTER too or when the
  peer no longer answers on VRRP's network (VRRP's network is cut, not the peer dead);
* with a witness, only the holder of its lease may promote or commit alone: a
  standby that lost the active waits for the lease (the active's runs out within
  ``lease`` of its death), and keeps out of the way while the witness says the peer
  holds it; an active whose lease went to the peer steps down.

Modules: :mod:`~esc.roles.observation` (the types), :mod:`~esc.roles.predicates`
(the guards), :mod:`~esc.roles.rules` (the table and :func:`decide`),
:mod:`~esc.roles.dot` (the table as Graphviz, text and JSON).
"""

from esc.roles.observation import (
    ASK_FOR_LEASE,
    FOLLOW,
    GATED,
    LEASE_WITH_PEER,
    OFF,
    SERVE_ALONE,
    Command,
    Db,
    DbView,
    Decision,
    Desired,
    Job,
    Observation,
    PeerView,
    Role,
    Vrrp,
    should_announce,
)
from esc.roles.predicates import (
    BEHIND_GRACE,
    KNOWN_POSITION,
    confirmed_complete,
    must_wait_for_peer,
    peer_is_newer,
    peer_is_older,
    peer_serves_elsewhere,
    vouches_for_peer,
    wins_election,
)
from esc.roles.rules import (
    MAINTENANCE_HINT,
    OVERRIDES,
    RENAMES,
    RULES,
    TABLE,
    Match,
    Override,
    Rename,
    Rule,
    active_desired,
    decide,
    match,
)

__all__ = [
    "ASK_FOR_LEASE",
    "BEHIND_GRACE",
    "FOLLOW",
    "GATED",
    "KNOWN_POSITION",
    "LEASE_WITH_PEER",
    "MAINTENANCE_HINT",
    "OFF",
    "OVERRIDES",
    "RENAMES",
    "RULES",
    "SERVE_ALONE",
    "TABLE",
    "Command",
    "Db",
    "DbView",
    "Decision",
    "Desired",
    "Job",
    "Match",
    "Observation",
    "Override",
    "PeerView",
    "Rename",
    "Role",
    "Rule",
    "Vrrp",
    "active_desired",
    "confirmed_complete",
    "decide",
    "match",
    "must_wait_for_peer",
    "vouches_for_peer",
    "peer_is_newer",
    "peer_is_older",
    "peer_serves_elsewhere",
    "should_announce",
    "wins_election",
]
