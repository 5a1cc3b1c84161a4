"""What the state machine reads and what it returns.

An :class:`Observation` is everything the agent saw in one tick (its own keepalived and
database, the peer's last answer, the operator's pending command, the running job,
the clock, the timing settings); a :class:`Decision` is the role to take, the
:class:`Desired` state to make real, at most one long :class:`Job`, and a sentence
saying why. Nothing here reads a clock or does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
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
    # its latest checkpoint (a standby's: restartpoint): the record's position and
    # where its replay starts (what the peer keeps for a rewind of this node)
    checkpoint_lsn: int = 0
    redo_lsn: int = 0

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
    promote_window: float = 1.7
    alone_after: float = 2.2
    rejoin_grace: float = 3.0  # a standby not streaming for this long is rejoined
    maintenance: bool = False  # the pair's operation mode: no automatic failover
    witness: bool = False  # a witness is configured
    lease_valid: bool = False  # we hold the witness's lease now
    lease_peer: bool = False  # the witness's last answer: the peer holds it
    lease_peer_for: float = 0.0  # ... and has named the peer for this long (it keeps renewing)
    lease: float = 1.0  # the lease's length
    peer_outdated: bool = False  # the witness holds the peer outdated (at our request, as holder)
    self_outdated: bool = False  # the witness holds this node outdated (the peer asked, as holder)
    paused_for: float = 0.0  # the agent's loop did not run for this long before this tick
    pause_fence: float = 0.6  # a pause this long may have let the peer take over


@dataclass(frozen=True)
class Desired:
    db: str = "stopped"  # "primary" | "standby" | "stopped"
    services: bool = False
    vrrp_gate: bool = False  # keepalived may be MASTER
    alone: bool = False  # primary: commit without waiting for the peer (never by default)
    lease: bool = False  # hold (ask for, renew) the witness's lease
    # the witness's outdated mark on the peer: True set it, False clear it, None leave it
    outdate_peer: bool | None = None


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
GATED = Desired(db="standby", vrrp_gate=True)  # a standby database; keepalived may become MASTER
ASK_FOR_LEASE = Desired(db="standby", vrrp_gate=True, lease=True)
LEASE_WITH_PEER = Desired(db="standby", lease=True)  # keep asking for the lease, gate closed


def should_announce(dec: Decision, db: Db, serving: bool) -> bool:
    """BGP anycast: announce the route exactly while this node serves as the writer: the
    decision keeps it ACTIVE (or STANDALONE) with services on, its database is a primary
    and its controller serves. Anything else withdraws: STANDBY, FAULT, SWITCHING_*, a
    promotion still running, a controller that died. The agent withdraws *before* it
    stops anything, as it closes the VRRP gate first."""
    return (dec.role in (Role.ACTIVE, Role.STANDALONE) and dec.desired.services
            and dec.desired.db == "primary" and db == Db.PRIMARY and serving)
