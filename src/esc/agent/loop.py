"""The agent's loop, without the host: observe -> decide (esc.roles) -> act, jobs and
the peer's questions, every input and output through the ``io_*`` methods.

:class:`AgentLoop` holds everything the agent decides or remembers: the role, the
confirmations given and received, the synchronous-replication proof, the jobs
(promote, rejoin) as cancellable step functions, the VRRP cross-check, the answer
to the peer's heartbeat. It does no I/O of its own and starts no thread: a subclass
supplies the ``io_*`` methods. The host agent (esc.agent.core.Agent) runs them on
processes, PostgreSQL, keepalived and HTTP; the simulator (tests/sim) runs the same
loop against fakes under a seeded scheduler, so what the simulation proves is about
this code, not a copy of it.

Blocking work (a promotion, pg_rewind, a checkpoint) is handed to ``submit`` and
awaited by the job step by step, so the loop keeps ticking while it runs.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Generator
from dataclasses import dataclass, replace
from typing import Any, Protocol

from esc.agent import history, opmode
from esc.agent.lease import LeaseView
from esc.agent.peer import PeerSnapshot
from esc.agent.peer import merge as peer_merge
from esc.config import NodeConfig
from esc.priority import priority_bonus
from esc.roles import (
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
    decide,
    must_wait_for_peer,
    should_announce,
)
from esc.roles.predicates import NotStreamingClock, not_streaming_clock, vouches_for_peer

log = logging.getLogger("esc.agent")

COMMAND_TTL = 10.0  # seconds an operator command may wait for the loop to act on it


class Pending(Protocol):
    """Blocking work running off the loop (a concurrent.futures.Future, or the
    simulator's)."""

    def done(self) -> bool: ...

    def result(self) -> Any: ...


@dataclass(frozen=True)
class Sleep:
    """A job step: come back after this long."""

    seconds: float


class JobCancelled(RuntimeError):
    """The job's premise no longer holds."""


JobSteps = Generator["Pending | Sleep", Any, None]


class RunningJob:
    """A job as a generator the loop advances: it yields work to wait for (a Pending,
    whose result it is sent back) or a Sleep."""

    def __init__(self, kind: Job, steps: JobSteps, started: float) -> None:
        self.kind, self.steps, self.started = kind, steps, started
        self.waiting: Pending | Sleep | None = None
        self.until = 0.0
        self.error = ""  # why it failed

    def advance(self, now: float) -> bool | None:
        """Run what can run now; True: finished, False: failed, None: not yet."""
        send: Any = None
        error: BaseException | None = None
        while True:
            w = self.waiting
            if isinstance(w, Sleep):
                if now < self.until:
                    return None
            elif w is not None:
                if not w.done():
                    return None
                try:
                    send = w.result()
                except Exception as e:  # thrown into the job, which may handle it
                    error = e
            try:
                step = self.steps.throw(error) if error is not None else self.steps.send(send)
            except StopIteration:
                return True
            except Exception as e:
                log.error("job %s failed after %.3fs: %s", self.kind, now - self.started, e)
                self.error = str(e)
                return False
            send, error = None, None
            self.waiting = step
            if isinstance(step, Sleep):
                self.until = now + step.seconds


@dataclass(frozen=True)
class Planned:
    """A tick's observations and decision, before it acts on them."""

    now: float
    obs: Observation
    dec: Decision


class AgentLoop:
    """One node's decisions and memory. Subclasses provide the ``io_*`` methods."""

    VIP_POLL_S = 0.5  # keepalived's word is checked against the VIP this often
    VIP_MISSING_S = 1.0  # MASTER without its VIP this long: not trusted as MASTER

    def __init__(self, cfg: NodeConfig, op_mode: opmode.OpMode) -> None:
        self.cfg = cfg
        self.lock = threading.Lock()
        self.role = Role.STOPPED
        self.reason = "starting"
        self.role_since = self.now()
        # the history (esc.agent.history): in memory here, in a file on a real node
        self.journal = history.Journal(None, cfg.name, clock=self.wall_time)
        self.pending_by: str | None = None  # who asked for the pending command
        self.peer_was_active = False  # the peer seen ACTIVE since this node last was
        self.peer_active_seen_at = 0.0  # when it last answered as ACTIVE
        self.rejoin_how = ""  # what the last rejoin did, for the history
        self.vrrp = Vrrp.UNKNOWN
        self.peer_timeline_seen = 0  # the peer's database timeline when it last answered
        self.vip_checked_at = -1e9
        self.vip_missing_since: float | None = None
        self.vip_missing_logged = False
        self.pending: Command | None = None
        self.pending_at = 0.0
        self.stop_requested = False
        self.last_confirm_sent: float | None = None
        self.alone = True
        self.sync_from_lsn: int | None = None  # every commit past it waited for the peer
        self.sync_generation = 0  # bumped on every change of synchronous_standby_names
        self.sync_proof: tuple[int, Pending, float] | None = None
        self.sync_proof_failed_at = -1e9  # a failed proof (a CHECKPOINT) is retried after a second
        self.db_view = DbView()
        self.peer_view: PeerView | None = None
        self.desired = Desired()
        self.not_streaming: NotStreamingClock | None = None  # see not_streaming_clock
        self.op_mode = op_mode
        self.observed_at = 0.0
        self.job: RunningJob | None = None
        self.job_outcome: tuple[Job, bool] | None = None
        self.job_failed: Job | None = None
        self.job_failed_at = 0.0
        # a pg_rewind that completed, and the database has not streamed since: the peer
        # may no longer hold the WAL this node needs (it was away past the slot's limit), and
        # rewinding again would only repeat it: the next rejoin clones
        self.rewound_not_streamed = False
        self.serving = False
        self.peer_paths: list[bool] = []  # fresh answer per path, at the last observation
        self.slot_kept: tuple[Db, float] = (Db.STOPPED, -1e9)  # database state, when
        self.role_checked = False  # the replication role made least-privileged on this primary
        self.slot_error = ""
        self.last_decision: Decision | None = None

    # ------------------------------------------------------------ io (abstract)
    def now(self) -> float:
        raise NotImplementedError

    def wakeup(self) -> None:
        """Run the loop soon (a state change, a finished job)."""

    def submit(self, name: str, fn: Callable[[], Any]) -> Pending:
        raise NotImplementedError

    def io_paused_for(self, now: float) -> float:
        """How long the loop could not run before this tick (frozen, suspended)."""
        return 0.0

    def io_before_tick(self) -> None:
        """Reap and report children that exited."""

    def io_db_running(self) -> bool:
        raise NotImplementedError

    def io_db_observe(self, running: bool) -> DbView:
        raise NotImplementedError

    def io_db_start(self, as_standby: bool) -> bool:
        raise NotImplementedError

    def io_db_stop(self) -> None:
        raise NotImplementedError

    def io_set_sync(self, peer_name: str | None) -> None:
        raise NotImplementedError

    # blocking, through submit
    def io_prove_sync(self) -> int:
        raise NotImplementedError

    def io_keep_peer_slot(self, keep_from: int | None) -> str | None:
        """See esc.ha.postgres.LocalDb.keep_peer_slot."""
        raise NotImplementedError

    def io_least_privilege_replication(self) -> bool:
        """See esc.ha.postgres.LocalDb.least_privilege_replication."""
        raise NotImplementedError

    def io_promote(self) -> None:
        raise NotImplementedError

    def io_peer_position(self) -> tuple[bool, int] | None:
        raise NotImplementedError

    def io_checkpoint_peer(self) -> None:
        raise NotImplementedError

    def io_db_has_data(self) -> bool:
        raise NotImplementedError

    def io_local_timeline(self) -> int:
        raise NotImplementedError

    def io_rewind(self) -> tuple[bool, str]:
        raise NotImplementedError

    def io_clone(self) -> str:
        """Replace the local data with a copy of the peer's; what was set aside."""
        raise NotImplementedError

    def io_prepare_standby(self) -> None:
        raise NotImplementedError

    # keepalived and the VIP
    def io_vrrp_reader_ok(self) -> str | None:
        """None while keepalived's notifications are being read; else why not."""
        return None

    def io_restart_vrrp_reader(self) -> None:
        pass

    def io_vip_present(self) -> bool:
        raise NotImplementedError

    def io_keepalived(self, gate: bool) -> None:
        """Write the gate; keep keepalived running."""
        raise NotImplementedError

    def io_priority(self, bonus: int) -> None:
        raise NotImplementedError

    # the peer, the witness, the rest
    def io_peer_snapshots(self) -> list[PeerSnapshot]:
        return []

    def io_lease_view(self) -> LeaseView | None:
        return None

    def io_lease_want(self, want: bool) -> None:
        pass

    def io_lease_outdate_peer(self, outdated: bool) -> None:
        """Ask the witness to hold the peer outdated (True) or to clear the mark."""

    def io_lease_force(self) -> None:
        """The operator forced this node active: ask the witness to drop a mark on us."""

    def io_volume_ok(self) -> bool:
        return True

    def io_services(self, on: bool, observed_at: float) -> None:
        """Make the controller serve (on) or park it; keeps ``self.serving`` true.
        ``observed_at``: when the observations that decided it were made (the serving
        lease runs from then)."""
        raise NotImplementedError

    def io_bgp(self, announce: bool) -> None:
        pass

    def io_save_op_mode(self, op: opmode.OpMode) -> None:
        pass

    # --------------------------------------------------------------- the tick
    def tick(self) -> Decision:
        return self.act(self.observe_and_decide())

    def observe_and_decide(self) -> Planned:
        """The first half of a tick: what is seen, and what the rules decide; nothing
        acted on yet. A node can freeze between the halves (the simulation makes it)."""
        now = self.now()
        paused_for = self.io_paused_for(now)
        if paused_for > self.pause_fence:
            log.warning("this node was frozen for %.2fs (SIGSTOP, a paused VM, or starved)",
                        paused_for)
            self.journal.record("freeze", self.role, f"frozen for {paused_for:.2f}s (SIGSTOP, a paused "
                                "VM, or starved): fenced before acting on what it saw before",
                                detail={"paused_s": round(paused_for, 3)})
        else:
            paused_for = 0.0
        self.io_before_tick()
        self._advance_job(now)
        obs = replace(self._observe(now), paused_for=paused_for, pause_fence=self.pause_fence)
        return Planned(now, obs, decide(self.role, obs))

    def act(self, planned: Planned) -> Decision:
        """The second half: record the decision and act on it, with the observations'
        time (a lease or a step that must not outlive them is dated from it)."""
        now, obs, dec = planned.now, planned.obs, planned.dec
        self.io_lease_want(dec.desired.lease)
        if dec.desired.outdate_peer is not None:
            self.io_lease_outdate_peer(dec.desired.outdate_peer)
        self._record(dec)
        if dec.consumed and obs.command == Command.FORCE_ACTIVE and dec.job == Job.PROMOTE:
            self.io_lease_force()
        if self.cfg.is_ha:
            self.io_priority(priority_bonus(dec.role, obs.db, self.peer_timeline_seen))
        # The route goes first, as the VRRP gate does: withdrawn before anything stops.
        self.io_bgp(should_announce(dec, obs.db.state, self.serving))
        if dec.job is not None:
            self._start_job(dec.job, now)
        self._actuate(dec.desired, obs, now)
        # ... and announced in the same tick the controller starts serving.
        self.io_bgp(should_announce(dec, obs.db.state, self.serving))
        self.last_decision = dec
        return dec

    @property
    def pause_fence(self) -> float:
        """A freeze this long may have let the peer take over: keepalived's master-down
        interval is at least three adverts."""
        return 3 * self.cfg.timing.advert_int

    def on_vrrp(self, state: Vrrp) -> None:
        """keepalived said so (its notify FIFO): record it and wake the loop."""
        with self.lock:
            old, self.vrrp = self.vrrp, state
        if old != state:
            log.info("keepalived reports %s (was %s)", state, old)
        self.wakeup()

    def _observe(self, now: float) -> Observation:
        db = self.io_db_observe(self.io_db_running())
        peer, ever_seen, confirm_recv, on_first_path, elsewhere = None, False, None, True, False
        snaps = self.io_peer_snapshots()
        if snaps:
            t = self.cfg.timing
            # an answer counts for heartbeat_timeout and one more interval (one late answer
            # is not a lost peer); not longer: a dead active's last answer must be stale
            # before its keepalived's last advert is (>= master-down - advert_int), or a
            # standby whose keepalived became MASTER would still see an active peer and wait
            merged = peer_merge(snaps, now, t.heartbeat_timeout + t.heartbeat_interval,
                                2 * t.heartbeat_interval)
            elsewhere = merged.elsewhere
            peer, ever_seen, confirm_recv = merged.view, merged.ever_seen, merged.last_confirm_recv
            on_first_path, self.peer_paths = merged.on_first_path, merged.fresh
            if merged.raw:
                self.adopt_op_mode(opmode.OpMode.parse(merged.raw.get("op_mode")),
                                   "the peer's heartbeat")
            if peer is not None and peer.role == Role.ACTIVE:  # for the history's failover length
                self.peer_active_seen_at = max((s.received_at for s in snaps if s.received_at is not None
                                                and s.view is not None and s.view.role == Role.ACTIVE),
                                               default=now)
        if peer is not None and peer.db.timeline > 0:
            self.peer_timeline_seen = peer.db.timeline
        # restarted when the database becomes consistent: see not_streaming_clock
        self.not_streaming = not_streaming_clock(self.not_streaming, db, peer, now)
        outcome, self.job_outcome = self.job_outcome, None
        job_done = None
        if outcome is not None:
            done, ok = outcome
            if ok:
                job_done, self.job_failed = done, None
            else:
                self.job_failed, self.job_failed_at = done, now
        if db.streaming:
            self.rewound_not_streamed = False
        with self.lock:
            self.db_view, self.peer_view, self.observed_at = db, peer, now
            if self.pending is not None and now - self.pending_at > COMMAND_TTL:
                # A command the state machine could not act on must not fire later,
                # in another situation (e.g. a switchover once this node is active again).
                log.warning("command %s expired after %.0fs without effect", self.pending,
                            COMMAND_TTL)
                self.pending = self.pending_by = None
            command, vrrp, confirm_sent = self.pending, self.vrrp, self.last_confirm_sent
        if self.cfg.is_ha:
            vrrp = self._checked_vrrp(vrrp, now)
        t = self.cfg.timing
        lease = self._lease_observation(now)
        return Observation(
            now=now, ha=self.cfg.is_ha, self_index=self.cfg.ha.self_index if self.cfg.ha else 0,
            vrrp=vrrp, db=db, peer=peer, peer_ever_seen=ever_seen,
            last_confirm_recv=confirm_recv, last_confirm_sent=confirm_sent,
            not_streaming_since=self.not_streaming[0] if self.not_streaming else None,
            volume_ok=self.io_volume_ok(),
            job_running=self.job.kind if self.job else None, job_failed=self.job_failed,
            job_done=job_done, command=command, promote_window=t.promote_window,
            alone_after=t.alone_after, maintenance=self.op_mode.maintenance,
            peer_on_vrrp_path=on_first_path, peer_elsewhere=elsewhere, **lease,
        )

    def _lease_observation(self, now: float) -> dict:
        view = self.io_lease_view()
        if view is None or self.cfg.ha is None:
            return {}
        peer = view.holder == self.cfg.ha.peer_name
        return {"witness": True, "lease_valid": view.valid(now), "lease_peer": peer,
                "lease_peer_for": now - view.holder_since if peer and view.holder_since else 0.0,
                "lease": self.cfg.timing.lease,
                "peer_outdated": view.outdated == self.cfg.ha.peer_name,
                "self_outdated": view.outdated == self.cfg.ha.self_name}

    def _checked_vrrp(self, reported: Vrrp, now: float) -> Vrrp:
        """keepalived's state as its notifications report it, checked against what can
        be seen: a dead FIFO reader means nothing is known (FAULT: an active fences),
        and a MASTER whose VIP is not on the interface has lost a notification (an
        active that fenced on nothing would hold on without the VIP)."""
        why = self.io_vrrp_reader_ok()
        if why is not None:
            log.error("keepalived's notify reader died (%s): VRRP state unknown, treated as "
                      "FAULT; reader restarted", why)
            with self.lock:
                self.vrrp = Vrrp.FAULT
            self.io_restart_vrrp_reader()
            return Vrrp.FAULT
        if reported != Vrrp.MASTER:
            self.vip_missing_since = None
            return reported
        if now - self.vip_checked_at >= self.VIP_POLL_S:
            self.vip_checked_at = now
            if self.io_vip_present():
                self.vip_missing_since = None
            elif self.vip_missing_since is None:
                self.vip_missing_since = now
        if self.vip_missing_since is not None and now - self.vip_missing_since >= self.VIP_MISSING_S:
            if not self.vip_missing_logged:
                log.error("keepalived reported MASTER but the VIP has not been on its interface "
                          "for %.1fs: not trusted as MASTER", now - self.vip_missing_since)
                self.vip_missing_logged = True
            return Vrrp.UNKNOWN
        self.vip_missing_logged = False
        return reported

    def adopt_op_mode(self, theirs: opmode.OpMode | None, source: str) -> bool:
        """Take the peer's operation mode if it was set after ours."""
        with self.lock:
            new = opmode.newer(self.op_mode, theirs)
            changed, self.op_mode = new != self.op_mode, new
        if changed:
            self.io_save_op_mode(new)
            log.warning("operation mode %s (set on %s), from %s", new.mode, new.by, source)
            self.journal.record("op_mode", self.role, f"operation mode {new.mode} (set on {new.by}), "
                                f"from {source}", detail={"mode": new.mode})
            self.wakeup()
        return changed

    def _record(self, dec: Decision) -> None:
        with self.lock:
            command, by = (self.pending, self.pending_by) if dec.consumed else (None, None)
            if dec.consumed:
                self.pending = self.pending_by = None
            old = self.role
            peer_role = self.peer_view.role if self.peer_view is not None else None
            if peer_role == Role.ACTIVE:
                self.peer_was_active = True
            kind = history.transition_kind(old, dec.role, command, peer_role, self.stop_requested,
                                           self.peer_was_active)
            # a failover's length as this node saw it: from the active's last answer
            # (as ACTIVE) to this node's promotion
            detail = ({"active_lost_s": round(self.now() - self.peer_active_seen_at, 3)}
                      if kind == "failover" else {})
            if dec.role == Role.ACTIVE:
                self.peer_was_active = False
            if dec.role != old:
                self.role, self.role_since = dec.role, self.now()
            changed_reason = dec.reason != self.reason
            self.reason, self.desired = dec.reason, dec.desired
        if dec.role != old:
            log.warning("role %s -> %s: %s", old, dec.role, dec.reason)
            self.journal.record(kind, dec.role, dec.reason, role_from=old,
                                peer_role=peer_role, by=by, detail=detail)
        elif changed_reason:
            log.info("%s", dec.reason)

    def wall_time(self) -> float:
        """For the operator's eyes only (the history's times)."""
        return 0.0

    # ------------------------------------------------------------------ jobs
    def _start_job(self, job: Job, now: float) -> None:
        if self.job is not None:
            return
        # Back off after a failure; briefly for a promotion, which must be retried
        # while the data is still confirmed complete (promote_window).
        backoff = 0.3 if job == Job.PROMOTE else 2.0
        if self.job_failed == job and now - self.job_failed_at < backoff:
            return
        steps = self._promote_steps() if job == Job.PROMOTE else self._rejoin_steps()
        self.job = RunningJob(job, steps, now)
        log.info("job %s started", job)
        self._advance_job(now)

    def _advance_job(self, now: float) -> None:
        if self.job is None:
            return
        outcome = self.job.advance(now)
        if outcome is None:
            return
        if outcome:
            log.info("job %s done in %.3fs", self.job.kind, now - self.job.started)
        if self.job.kind == Job.REJOIN:
            took = round(now - self.job.started, 3)
            self.journal.record("rejoin", self.role, f"{self.rejoin_how or 'rejoined'} in {took:.1f}s"
                                if outcome else f"rejoin failed after {took:.1f}s: {self.job.error}",
                                detail={"ok": bool(outcome), "took_s": took, "how": self.rejoin_how})
        self.job_outcome = (self.job.kind, outcome)
        self.job = None
        self.wakeup()

    def _promote_steps(self) -> JobSteps:
        yield self.submit("promote", self.io_promote)

    def _rejoin_steps(self) -> JobSteps:
        """Stop (the loop does it), then follow the peer: pg_rewind, or a fresh clone.

        Cancelled as soon as its premise fails (the peer is no longer becoming or being
        the active, or its history is older than ours), and the peer's timeline is read
        again right before anything on disk changes: the decision may be 15 s old."""
        deadline = self.now() + 30
        while self.io_db_running():
            if self.now() > deadline:
                raise RuntimeError("the local database did not stop within 30s")
            yield Sleep(0.05)
        deadline = self.now() + 15  # a switchover or failover promotes within ~1 s
        while True:
            self._rejoin_premise()
            pos = yield self.submit("peer-position", self.io_peer_position)
            if pos is not None and pos[0]:
                break
            if self.now() > deadline:
                raise RuntimeError("the peer's database is not a primary; cannot rejoin yet")
            yield Sleep(0.2)
        self.rejoin_how = ""
        has_data = yield self.submit("has-data", self.io_db_has_data)
        if has_data and self.rewound_not_streamed:
            log.warning("the last pg_rewind did not get this node streaming (the peer may no "
                        "longer have the WAL it needs): cloning the peer, the local data "
                        "moved aside")
            log.warning("%s", (yield self.submit("clone", self.io_clone)))
            self.rejoin_how = "cloned the peer (the last pg_rewind did not get it streaming)"
            self.rewound_not_streamed = False
        elif has_data:
            yield self.submit("checkpoint-peer", self.io_checkpoint_peer)
            self._rejoin_premise()
            ours = yield self.submit("local-timeline", self.io_local_timeline)
            pos = yield self.submit("peer-position", self.io_peer_position)
            if pos is None or not pos[0]:
                raise RuntimeError("the peer's database stopped being a primary")
            if pos[1] < ours:
                raise JobCancelled(f"the peer is on timeline {pos[1]}, older than ours ({ours}): "
                                   "not rewinding onto it")
            ok, detail = yield self.submit("rewind", self.io_rewind)
            if ok:
                log.info("pg_rewind: %s", detail)
                self.rejoin_how = f"pg_rewind from the peer ({detail})"
                self.rewound_not_streamed = True
            else:
                log.warning("pg_rewind failed (%s); cloning the peer, the local data moved aside",
                            detail)
                log.warning("%s", (yield self.submit("clone", self.io_clone)))
                self.rejoin_how = f"cloned the peer (pg_rewind failed: {detail})"
        else:
            log.info("%s", (yield self.submit("clone", self.io_clone)))
            self.rejoin_how = "cloned the peer (no data here)"
        yield self.submit("standby-files", self.io_prepare_standby)

    def _rejoin_premise(self) -> None:
        """Raise if the rejoin should not go on: the peer is gone, stepping down, or
        on an older timeline than ours."""
        if self.stop_requested:
            raise JobCancelled("cancelled: the agent is stopping")
        with self.lock:
            peer, db = self.peer_view, self.db_view
        if peer is None:
            raise JobCancelled("cancelled: the peer stopped answering")
        if peer.role not in (Role.ACTIVE, Role.SWITCHING_TO_ACTIVE, Role.STANDBY):
            raise JobCancelled(f"cancelled: the peer is {peer.role}, not becoming the active")
        if 0 < peer.db.timeline < db.timeline:
            raise JobCancelled(f"cancelled: the peer is on timeline {peer.db.timeline}, older "
                               f"than ours ({db.timeline})")

    # --------------------------------------------------------------- actuate
    def _actuate(self, desired: Desired, obs: Observation, now: float) -> None:
        if self.cfg.is_ha:
            self.io_keepalived(desired.vrrp_gate)
        self._actuate_db(desired, obs)
        if obs.db.state == Db.PRIMARY and self.cfg.is_ha:
            # only a serving primary may commit alone: one stepping down (fencing) keeps
            # its commits waiting for the peer, or it would acknowledge what the peer lacks
            self._actuate_sync(desired.alone and desired.db == "primary", obs, now)
        # STOPPED too: a primary that crashed is restarted in place as a primary; stopping
        # the controller meanwhile would only add a restart of its own to the outage
        self.io_services(desired.services
                         and obs.db.state in (Db.PRIMARY, Db.STARTING, Db.STOPPED), now)
        # after the services: on a new active's first tick this SQL is not in the outage
        if obs.db.state in (Db.PRIMARY, Db.STANDBY) and self.cfg.is_ha and self.job is None:
            self._keep_peer_slot(obs, now)
        if obs.db.state != Db.PRIMARY:
            self.role_checked = False
        elif self.cfg.is_ha and not self.role_checked:
            self._check_replication_role()

    def _actuate_db(self, desired: Desired, obs: Observation) -> None:
        running = self.io_db_running()
        if desired.db == "stopped":
            if running:
                self.io_db_stop()
            return
        if running or self.job is not None or obs.db.state == Db.ABSENT:
            return
        if self.io_db_start(desired.db == "standby"):
            log.info("database started as %s", desired.db)

    def _actuate_sync(self, want_alone: bool, obs: Observation, now: float) -> None:
        assert self.cfg.ha
        with self.lock:
            # the rule again, on what the peer's heartbeat thread may have changed since
            # the decision (a confirmation given a moment ago): then keep waiting
            if want_alone and must_wait_for_peer(
                    replace(obs, now=now, last_confirm_sent=self.last_confirm_sent)):
                want_alone = False
            if want_alone:
                self.alone = True  # no more confirmations from this moment
        if want_alone == obs.db.alone:
            if not want_alone:
                with self.lock:
                    self.alone = False
                self._prove_sync_if_needed(now)  # e.g. a primary restarted with it set
            return
        if want_alone:
            if self.now() - now > self.pause_fence:
                # frozen since the observations: the peer may have taken over meanwhile, and
                # going alone would acknowledge the commits waiting here; the next tick fences
                log.warning("not committing alone: this tick's observations are %.2fs old",
                            self.now() - now)
                with self.lock:
                    self.alone = False
                return
            with self.lock:
                self.sync_generation += 1  # a proof still running is for the old setting
                self.sync_from_lsn = None
            self.io_set_sync(None)
            log.warning("synchronous replication off: committing alone (peer %s)",
                        "never confirmed" if self.last_confirm_sent is None else
                        f"unconfirmed for {now - self.last_confirm_sent:.1f}s")
            return
        with self.lock:
            self.sync_generation += 1
            self.sync_from_lsn = None  # not complete for anyone until proven in force
        self.io_set_sync(self.cfg.ha.peer_name)
        log.info("synchronous replication on: commits wait for %s", self.cfg.ha.peer_name)
        self._prove_sync_if_needed(now)

    def _check_replication_role(self) -> None:
        """Once per start as a primary: the replication role gets no more than it needs (a
        pair installed before had it SUPERUSER). Retried next tick on an error."""
        try:
            was_super = self.io_least_privilege_replication()
        except Exception as e:
            log.warning("could not check the replication role: %s", str(e).strip())
            return
        self.role_checked = True
        if was_super:
            log.warning("the replication role was a superuser: now only REPLICATION and the "
                        "grants pg_rewind needs")

    SLOT_EVERY_S = 1.0

    def _keep_peer_slot(self, obs: Observation, now: float) -> None:
        """Once a second, and at once when the database becomes a primary or a standby:
        the replication slot the peer streams from (a primary's must exist before the
        peer connects). A standby keeps in it the WAL from the active's latest
        checkpoint it has replayed past: what a rewind of the active needs after a
        failover. (Past the checkpoint *record*: one the standby has not replayed is
        not before the divergence, and the rewind starts from an earlier one.)"""
        state, at = self.slot_kept
        if state == obs.db.state and now - at < self.SLOT_EVERY_S:
            return
        self.slot_kept = (obs.db.state, now)
        keep_from = None
        peer = obs.peer
        if (obs.db.state == Db.STANDBY and peer is not None and peer.db.state == Db.PRIMARY
                and peer.db.system_id == obs.db.system_id
                and 0 < peer.db.checkpoint_lsn < obs.db.lsn):
            keep_from = peer.db.redo_lsn
        try:
            note = self.io_keep_peer_slot(keep_from)
        except Exception as e:  # tried again a second later; said once
            if str(e) != self.slot_error:
                log.warning("replication slot for the peer: %s", str(e).strip())
            self.slot_error = str(e)
            return
        self.slot_error = ""
        if note:
            log.info("%s", note)

    def _prove_sync_if_needed(self, now: float) -> None:
        """Synchronous replication is set but not yet proven in force: prove it off the
        loop (it takes a checkpoint). Until then the peer is never confirmed complete."""
        proof = self.sync_proof
        if proof is not None:
            generation, pending, started = proof
            if not pending.done():
                return
            self.sync_proof = None
            try:
                lsn = pending.result()
            except Exception as e:  # tried again a second later
                log.warning("could not prove synchronous replication in force: %s", e)
                self.sync_proof_failed_at = now
            else:
                if generation == self.sync_generation:
                    with self.lock:
                        self.sync_from_lsn = lsn
                    log.info("synchronous replication in force (proven in %.3fs): commits "
                             "past %X/%X wait for the peer", now - started, lsn >> 32,
                             lsn & 0xFFFFFFFF)
                    return
        if self.sync_from_lsn is None and self.sync_proof is None \
                and now - self.sync_proof_failed_at >= 1.0:
            self.sync_proof = (self.sync_generation, self.submit("sync-proof", self.io_prove_sync),
                               now)

    # ------------------------------------------------------------- the peer
    def peer_state(self, caller: str) -> dict:
        """The heartbeat's answer to the peer: our role, database position, op_mode,
        and whether we vouch for it as a complete synchronous standby."""
        now = self.now()
        with self.lock:
            ha = self.cfg.ha
            # only on a fresh observation: right after a freeze, what we saw before it
            # says nothing about the peer now
            fresh = now - self.observed_at < self.cfg.timing.heartbeat_timeout
            complete = (ha is not None and caller == ha.peer_name
                        and vouches_for_peer(self.role, self.db_view, self.alone, fresh))
            if complete:
                self.last_confirm_sent = now
            return {"name": self.cfg.name, "index": ha.self_index if ha else 0,
                    "role": self.role, "vrrp": self.vrrp, "complete_for_you": complete,
                    "op_mode": self.op_mode.to_dict(),
                    "history": self.journal.heartbeat(),
                    "db": {"state": self.db_view.state, "timeline": self.db_view.timeline,
                           "lsn": self.db_view.lsn, "system_id": self.db_view.system_id,
                           "checkpoint": self.db_view.checkpoint_lsn,
                           "redo": self.db_view.redo_lsn}}

    def queue(self, command: Command, by: str | None = None) -> None:
        """An operator's intent; the loop acts on it (or lets it expire)."""
        with self.lock:
            self.pending, self.pending_at, self.pending_by = command, self.now(), by
        log.info("operator command %s queued%s", command, f" by {by}" if by else "")
        self.wakeup()

    def request_stop(self) -> None:
        self.stop_requested = True
        self.wakeup()
