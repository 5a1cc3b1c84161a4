"""The agent: one loop per node that observes, decides (esc.roles) and actuates.

Each tick: poll the children, gather an Observation, call the pure ``decide``,
log any role change with its reason, start a job if one is asked for, then
make reality match the desired state (gate file, keepalived, PostgreSQL,
synchronous replication, the controller service). Notifications (keepalived's
FIFO, the peer poller, the API) only wake the loop.
"""

from __future__ import annotations

import collections
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

from esc import clock
from esc import secrets as esc_secrets
from esc.agent import api, health_api, opmode
from esc.agent.lease import LeaseClient
from esc.agent.peer import PeerPoller
from esc.agent.peer import merge as peer_merge
from esc.agent.supervisor import Child
from esc.config import BgpConfig, NodeConfig, NodePaths, load_config, load_secrets
from esc.ha import bgp, keepalived, postgres, vip
from esc.priority import priority_bonus
from esc.render import render_all
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
    should_announce,
)

log = logging.getLogger("esc.agent")

COMMAND_TTL = 10.0  # seconds an operator command may wait for the loop to act on it


class Agent:
    def __init__(self, root: Path) -> None:
        self.paths = NodePaths(root)
        self.cfg: NodeConfig = load_config(self.paths)
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.role = Role.STOPPED
        self.reason = "starting"
        self.role_since = clock.now()
        self.transitions: collections.deque[dict] = collections.deque(maxlen=30)
        self.vrrp = Vrrp.UNKNOWN
        self.notify_reader: keepalived.NotifyReader | None = None
        self.peer_timeline_seen = 0  # the peer's database timeline when it last answered
        self.vip_checked_at = -1e9
        self.vip_missing_since: float | None = None
        self.vip_missing_logged = False
        self.pending: Command | None = None
        self.pending_at = 0.0
        self.stop_requested = False
        self.last_confirm_sent: float | None = None
        self.alone = True
        self.sync = postgres.SyncState()
        self.sync_generation = 0  # bumped on every change of synchronous_standby_names
        self.sync_proving = False
        self.db_view = DbView()
        self.peer_view: PeerView | None = None
        self.desired = Desired()
        self.not_streaming_since: float | None = None
        self.op_mode = opmode.load(self.paths)
        self.lease: LeaseClient | None = None
        self.stopped_db: DbView | None = None  # cached: read from pg_control once per stop
        self.observed_at = 0.0  # esc.clock time of the last observation
        self.beat_at = clock.now()  # the freeze sentinel's last beat
        self.freeze_seen = 0.0  # the longest freeze the sentinel saw since the last tick
        self.job: Job | None = None
        self.job_outcome: tuple[Job, bool] | None = None
        self.job_failed: Job | None = None
        self.job_failed_at = 0.0
        self.pg_down = threading.Event()
        self.serving = False
        self.localdb = postgres.LocalDb(self.paths, self.cfg)
        logs = self.paths.log
        self.pg = Child("pgsql", lambda: postgres.server_argv(self.paths, self.cfg),
                        logs / "postgres.log", user=postgres.PG_USER,
                        stop_signal=signal.SIGINT, grace=15.0)
        self.keepalived = Child("keepalived", lambda: keepalived.argv(self.paths),
                                logs / "keepalived.log", grace=5.0)
        self.manager = Child("escmanager", lambda: [sys.executable, "-m", "esc.services.manager",
                                                    "--root", str(self.paths.root)],
                             logs / "escmanager.out", stdin_pipe=True, grace=5.0)
        self.exabgp = Child("exabgp", lambda: bgp.argv(self.paths), logs / "exabgp.log",
                            grace=3.0, env=bgp.env(self.paths))
        self.announce: tuple[bool, int] | None = None  # what bgp_desired says (None: not yet)
        self.exabgp_conf_seen = b""  # exabgp.conf as the running ExaBGP read it
        self.pollers: list[PeerPoller] = []  # one per network, VRRP's first (HaConfig.paths)
        self.peer_paths: list[bool] = []  # fresh answer per path, at the last observation
        self.servers: list = []
        self.token = ""

    # ----------------------------------------------------------------- run
    def run(self) -> int:
        self.paths.run.mkdir(parents=True, exist_ok=True)
        self.paths.agent_pid.write_text(f"{os.getpid()}\n")
        signal.signal(signal.SIGTERM, lambda *_: self._request_stop())
        signal.signal(signal.SIGINT, lambda *_: self._request_stop())
        postgres.prepare_dirs(self.paths, self.cfg)
        ha = self.cfg.ha
        log.info("agent starting (pid %d, %s)", os.getpid(),
                 f"HA with {ha.peer_address}, VIP {ha.vip.cidr}" if ha else "standalone")
        if ha:
            shared = load_secrets(self.paths).get("ha_secret", "")
            self.token = esc_secrets.derive(shared, "peer-token")
            keepalived.write_gate(self.paths, False)
            keepalived.write_priority(self.paths, 0)
            self._start_notify_reader()
            # one poller per network: the peer is alive while it answers on any of them
            self.pollers = [PeerPoller(peer_addr, self.cfg.peer_port, self.token, ha.self_name,
                                       self.cfg.timing.heartbeat_interval,
                                       self.cfg.timing.heartbeat_timeout, self.wake)
                            for _, peer_addr in ha.paths]
            for poller in self.pollers:
                poller.start()
            if ha.witness:
                self.lease = LeaseClient(ha.witness, esc_secrets.derive(shared, "witness-token"),
                                         ha.pair_id, ha.self_name, duration=self.cfg.timing.lease,
                                         wake=self.wake)
                self.lease.start()
            for own, _ in ha.paths:
                self.servers.append(api.serve_peer(own, self.cfg.peer_port, self, self.token))
        if self.cfg.bgp:
            self._set_announce(False)  # before ExaBGP starts: a fresh node announces nothing
            if bgp.ensure_anycast(self.cfg.bgp):
                log.info("anycast %s added to %s", self.cfg.bgp.anycast_ip, bgp.LOOPBACK)
        self.servers.append(api.serve_unix(self.paths.agent_sock, self))
        self.beat_at = clock.now()
        threading.Thread(target=self._freeze_sentinel, name="freeze-sentinel", daemon=True).start()
        try:
            self.servers.append(health_api.serve(self.status, self.cfg.health_port))
        except OSError as e:  # the pair works without it; say so
            log.error("health API not served on port %d: %s", self.cfg.health_port, e)
        try:
            while not self.stop_requested:
                try:
                    self.tick()
                except Exception:  # the loop must go on; the next tick re-applies everything
                    log.exception("tick failed")
                self.wake.wait(self.cfg.timing.tick)
                self.wake.clear()
        finally:
            self.shutdown()
        return 0

    def _request_stop(self) -> None:
        self.stop_requested = True
        self.wake.set()

    def _start_notify_reader(self) -> None:
        self.notify_reader = keepalived.NotifyReader(self.paths.vrrp_fifo, self._on_vrrp)
        self.notify_reader.start()

    VIP_POLL_S = 0.5  # keepalived's word is checked against the VIP this often
    VIP_MISSING_S = 1.0  # MASTER without its VIP this long: not trusted as MASTER

    def _checked_vrrp(self, reported: Vrrp, now: float) -> Vrrp:
        """keepalived's state as its notifications report it, checked against what can
        be seen: a dead FIFO reader means nothing is known (FAULT: an active fences),
        and a MASTER whose VIP is not on the interface has lost a notification (an
        active that fenced on nothing would hold on without the VIP)."""
        reader = self.notify_reader
        if reader is not None and not reader.is_alive():
            log.error("keepalived's notify reader died (%s): VRRP state unknown, treated as "
                      "FAULT; reader restarted", reader.error or "no reason")
            with self.lock:
                self.vrrp = Vrrp.FAULT
            self._start_notify_reader()
            return Vrrp.FAULT
        ha = self.cfg.ha
        if reported != Vrrp.MASTER or ha is None:
            self.vip_missing_since = None
            return reported
        if now - self.vip_checked_at >= self.VIP_POLL_S:
            self.vip_checked_at = now
            if vip.has_address(ha.vip.address, ha.vip.interface):
                self.vip_missing_since = None
            elif self.vip_missing_since is None:
                self.vip_missing_since = now
        if self.vip_missing_since is not None and now - self.vip_missing_since >= self.VIP_MISSING_S:
            if not self.vip_missing_logged:
                log.error("keepalived reported MASTER but the VIP %s has not been on %s for "
                          "%.1fs: not trusted as MASTER", ha.vip.cidr, ha.vip.interface,
                          now - self.vip_missing_since)
                self.vip_missing_logged = True
            return Vrrp.UNKNOWN
        self.vip_missing_logged = False
        return reported

    def _on_vrrp(self, state: Vrrp) -> None:
        with self.lock:
            old, self.vrrp = self.vrrp, state
        if old != state:
            log.info("keepalived reports %s (was %s)", state, old)
        self.wake.set()

    # ---------------------------------------------------------------- tick
    def children(self) -> tuple[Child, ...]:
        return (self.pg, self.keepalived, self.manager, self.exabgp)

    def tick(self) -> None:
        now = clock.now()
        with self.lock:
            paused_for = max(now - self.beat_at, self.freeze_seen)
            self.freeze_seen = 0.0
        if paused_for > self.pause_fence:
            log.warning("this node was frozen for %.2fs (SIGSTOP, a paused VM, or starved)", paused_for)
        else:
            paused_for = 0.0
        for child in self.children():
            was = child.pid
            if not child.poll() and was is not None:
                if child is self.manager:
                    self.serving = False
                if child is self.keepalived:
                    self._on_vrrp(Vrrp.UNKNOWN)
                if child.crashed:
                    log.warning("%s (pid %d) died (exit %s)", child.name, was, child.last_exit)
                child.crashed = False
        obs = replace(self._observe(now), paused_for=paused_for, pause_fence=self.pause_fence)
        dec = decide(self.role, obs)
        if self.lease is not None:
            self.lease.set_want(dec.desired.lease)
        self._record(dec)
        if self.cfg.is_ha:
            keepalived.write_priority(self.paths,
                                      priority_bonus(dec.role, obs.db, self.peer_timeline_seen))
        # The route goes first, as the VRRP gate does: withdrawn before anything stops.
        self._actuate_bgp(should_announce(dec, obs.db.state, self.serving))
        if dec.job is not None:
            self._start_job(dec.job, now)
        self._actuate(dec.desired, obs, now)
        # ... and announced in the same tick the controller starts serving.
        self._actuate_bgp(should_announce(dec, obs.db.state, self.serving))

    def _observe(self, now: float) -> Observation:
        running = self.pg.running
        if running:
            self.pg_down.clear()
            self.stopped_db = None
        else:
            self.pg_down.set()
        db = self.localdb.observe(running, self.sync)
        if db.state == Db.STOPPED:
            db = self._stopped_db()
        peer, ever_seen, confirm_recv, on_first_path, elsewhere = None, False, None, True, False
        if self.pollers:
            t = self.cfg.timing
            merged = peer_merge([p.snapshot() for p in self.pollers], now,
                                t.heartbeat_timeout + 2 * t.heartbeat_interval, 2 * t.heartbeat_interval)
            elsewhere = merged.elsewhere
            peer, ever_seen, confirm_recv = merged.view, merged.ever_seen, merged.last_confirm_recv
            on_first_path, self.peer_paths = merged.on_first_path, merged.fresh
            if merged.raw:
                self._adopt_op_mode(opmode.OpMode.parse(merged.raw.get("op_mode")), "the peer's heartbeat")
        if peer is not None and peer.db.timeline > 0:
            self.peer_timeline_seen = peer.db.timeline
        # "Not streaming" includes streaming an old timeline: a standby whose history
        # forked before its own end of WAL reconnects and drops again, in a loop, and
        # would look healthy half of the time.
        behind = peer is not None and peer.db.state == Db.PRIMARY and \
            0 < db.timeline < peer.db.timeline
        if db.state in (Db.STANDBY, Db.STARTING) and (not db.streaming or behind):
            self.not_streaming_since = self.not_streaming_since or now
        else:
            self.not_streaming_since = None
        outcome, self.job_outcome = self.job_outcome, None
        job_done = None
        if outcome is not None:
            done, ok = outcome
            if ok:
                job_done, self.job_failed = done, None
            else:
                self.job_failed, self.job_failed_at = done, now
        with self.lock:
            self.db_view, self.peer_view, self.observed_at = db, peer, now
            if self.pending is not None and now - self.pending_at > COMMAND_TTL:
                # A command the state machine could not act on must not fire later,
                # in another situation (e.g. a switchover once this node is active again).
                log.warning("command %s expired after %.0fs without effect", self.pending,
                            COMMAND_TTL)
                self.pending = None
            command, vrrp, confirm_sent = self.pending, self.vrrp, self.last_confirm_sent
        if self.cfg.is_ha:
            vrrp = self._checked_vrrp(vrrp, now)
        t = self.cfg.timing
        return Observation(
            now=now, ha=self.cfg.is_ha, self_index=self.cfg.ha.self_index if self.cfg.ha else 0,
            vrrp=vrrp, db=db, peer=peer, peer_ever_seen=ever_seen,
            last_confirm_recv=confirm_recv, last_confirm_sent=confirm_sent,
            not_streaming_since=self.not_streaming_since, volume_ok=self._volume_ok(),
            job_running=self.job, job_failed=self.job_failed, job_done=job_done,
            command=command, promote_window=t.promote_window, alone_after=t.alone_after,
            maintenance=self.op_mode.maintenance, peer_on_vrrp_path=on_first_path,
            peer_elsewhere=elsewhere,
            **self._lease_observation(now),
        )

    def _lease_observation(self, now: float) -> dict:
        if self.lease is None or self.cfg.ha is None:
            return {}
        view = self.lease.view()
        peer = view.holder == self.cfg.ha.peer_name
        return {"witness": True, "lease_valid": view.valid(now), "lease_peer": peer,
                "lease_peer_for": now - view.holder_since if peer and view.holder_since else 0.0,
                "lease": self.cfg.timing.lease}

    def _adopt_op_mode(self, theirs: opmode.OpMode | None, source: str) -> bool:
        """Take the peer's operation mode if it was set after ours."""
        with self.lock:
            new = opmode.newer(self.op_mode, theirs)
            changed, self.op_mode = new != self.op_mode, new
        if changed:
            opmode.save(self.paths, new)
            log.warning("operation mode %s (set on %s), from %s", new.mode, new.by, source)
            self.wake.set()
        return changed

    DISK_FULL_BYTES = 64 * 1024 * 1024  # below this the database cannot be trusted to write WAL

    def _disk(self) -> dict:
        """Free space where the database lives (a full disk stops PostgreSQL)."""
        target = self.paths.pgdata(self.cfg)
        while not target.exists() and target != target.parent:
            target = target.parent
        try:
            st = os.statvfs(target)
        except OSError as e:
            return {"path": str(target), "error": str(e)}
        free = st.f_bavail * st.f_frsize
        aside = [{"path": str(a.path), "bytes": a.bytes, "made_at": a.made_at}
                 for a in postgres.aside_copies(self.paths.pgdata(self.cfg))]
        return {"path": str(target), "free_bytes": free, "total_bytes": st.f_blocks * st.f_frsize,
                "full": free < self.DISK_FULL_BYTES, "aside": aside}

    def _refresh_db_view(self) -> None:
        """A fresh look at the local database outside the loop (while shutting down)."""
        db = self.localdb.observe(self.pg.running, self.sync)
        with self.lock:
            self.db_view, self.observed_at = db, clock.now()

    def _freeze_sentinel(self) -> None:
        """Beats every 50 ms. A slow tick (a slow query) does not stop it; a frozen
        process stops it too, and the first of it and the loop to run after the
        freeze sees the gap, so the loop fences before it acts on what it saw before."""
        while not self.stop_requested:
            time.sleep(0.05)
            now = clock.now()
            with self.lock:
                self.freeze_seen = max(self.freeze_seen, now - self.beat_at)
                self.beat_at = now

    @property
    def pause_fence(self) -> float:
        """A freeze this long may have let the peer take over: keepalived's master-down
        interval is at least three adverts."""
        return 3 * self.cfg.timing.advert_int

    def _stopped_db(self) -> DbView:
        """A stopped database's position: whether it was last a primary (it needs a
        rewind to follow) and its timeline (never rewound onto an older one)."""
        if self.stopped_db is None:
            pgdata = self.paths.pgdata(self.cfg)
            if not postgres.has_data(pgdata):
                return DbView(state=Db.STOPPED)
            control = postgres.controldata(pgdata)
            state = control.get("Database cluster state", "")
            self.stopped_db = DbView(
                state=Db.STOPPED, timeline=postgres.stopped_timeline(pgdata, control),
                was_primary=state in ("shut down", "in production")
                and not (pgdata / "standby.signal").exists())
        return self.stopped_db

    def _volume_ok(self, mount: bool = True) -> bool:
        ha = self.cfg.ha
        if ha is None or ha.mode != "drbd_on_cinder":
            return True
        assert ha.db_volume_id
        dev = Path(ha.db_volume_id)
        target = self.paths.db_volume_mount(self.cfg)
        if mount and dev.is_block_device() and not os.path.ismount(target):
            target.mkdir(parents=True, exist_ok=True)
            subprocess.run(["mount", str(dev), str(target)], capture_output=True)
        return os.path.ismount(target)

    def _record(self, dec: Decision) -> None:
        with self.lock:
            if dec.consumed:
                self.pending = None
            old = self.role
            if dec.role != old:
                self.role, self.role_since = dec.role, clock.now()
                self.transitions.append({"at": time.time(), "from": old, "to": dec.role,
                                         "reason": dec.reason})
            changed_reason = dec.reason != self.reason
            self.reason, self.desired = dec.reason, dec.desired
        if dec.role != old:
            log.warning("role %s -> %s: %s", old, dec.role, dec.reason)
        elif changed_reason:
            log.info("%s", dec.reason)

    # ---------------------------------------------------------------- jobs
    def _start_job(self, job: Job, now: float) -> None:
        if self.job is not None:
            return
        # Back off after a failure; briefly for a promotion, which must be retried
        # while the data is still confirmed complete (promote_window).
        backoff = 0.3 if job == Job.PROMOTE else 2.0
        if self.job_failed == job and now - self.job_failed_at < backoff:
            return
        self.job = job
        log.info("job %s started", job)
        threading.Thread(target=self._run_job, args=(job,), name=f"job-{job}",
                         daemon=True).start()

    def _run_job(self, job: Job) -> None:
        ok = False
        started = clock.now()
        try:
            if job == Job.PROMOTE:
                db = postgres.LocalDb(self.paths, self.cfg)
                try:
                    db.promote()
                finally:
                    db.close()
            else:
                self._rejoin()
            ok = True
            log.info("job %s done in %.3fs", job, clock.now() - started)
        except Exception as e:
            log.error("job %s failed after %.3fs: %s", job, clock.now() - started, e)
        finally:
            self.job_outcome = (job, ok)
            self.job = None
            self.wake.set()

    def _rejoin(self) -> None:
        """Stop (the loop does it), then follow the peer: pg_rewind, or a fresh clone.

        Cancelled as soon as its premise fails (the peer is no longer becoming or being
        the active, or its history is older than ours), and the peer's timeline is read
        again right before anything on disk changes: the decision may be 15 s old."""
        if not self.pg_down.wait(30):
            raise RuntimeError("the local database did not stop within 30s")
        deadline = clock.now() + 15  # a switchover or failover promotes within ~1 s
        pgdata = self.paths.pgdata(self.cfg)
        while True:
            self._rejoin_premise()
            pos = postgres.peer_position(self.paths, self.cfg)
            if pos is not None and pos[0]:
                break
            if clock.now() > deadline:
                raise RuntimeError("the peer's database is not a primary; cannot rejoin yet")
            time.sleep(0.2)
        if postgres.has_data(pgdata):
            postgres.checkpoint_peer(self.paths, self.cfg)
            self._rejoin_premise()
            ours = postgres.stopped_timeline(pgdata, postgres.controldata(pgdata))
            pos = postgres.peer_position(self.paths, self.cfg)
            if pos is None or not pos[0]:
                raise RuntimeError("the peer's database stopped being a primary")
            if pos[1] < ours:
                raise RuntimeError(f"the peer is on timeline {pos[1]}, older than ours ({ours}): "
                                   "not rewinding onto it")
            res = postgres.rewind(self.paths, self.cfg)
            if res.returncode == 0:
                log.info("pg_rewind: %s", (res.stderr.strip().splitlines() or ["done"])[-1])
            else:
                log.warning("pg_rewind failed (exit %d: %s); cloning the peer, the local data "
                            "moved aside", res.returncode, res.stderr.strip()[-300:])
                self._clone()
        else:
            self._clone()
        postgres.write_managed_files(self.paths, self.cfg)
        postgres.set_standby_signal(pgdata, True)
        self.stopped_db = None

    def _clone(self) -> None:
        aside = postgres.clone(self.paths, self.cfg)
        if aside is None:
            log.info("cloned the peer's database")
        else:
            log.warning("cloned the peer's database; the old data directory is kept at %s "
                        "(%.1f MiB; only the newest such copy is kept, remove it when not needed)",
                        aside.path, aside.bytes / 2**20)

    def _rejoin_premise(self) -> None:
        """Raise if the rejoin should not go on: the peer is gone, stepping down, or
        on an older timeline than ours."""
        if self.stop_requested:
            raise RuntimeError("cancelled: the agent is stopping")
        with self.lock:
            peer, db = self.peer_view, self.db_view
        if peer is None:
            raise RuntimeError("cancelled: the peer stopped answering")
        if peer.role not in (Role.ACTIVE, Role.SWITCHING_TO_ACTIVE, Role.STANDBY):
            raise RuntimeError(f"cancelled: the peer is {peer.role}, not becoming the active")
        if 0 < peer.db.timeline < db.timeline:
            raise RuntimeError(f"cancelled: the peer is on timeline {peer.db.timeline}, older than "
                               f"ours ({db.timeline})")

    # ------------------------------------------------------------- actuate
    def _actuate(self, desired: Desired, obs: Observation, now: float) -> None:
        if self.cfg.is_ha:
            keepalived.write_gate(self.paths, desired.vrrp_gate)
            if not self.keepalived.running and not self.stop_requested:
                ha = self.cfg.ha
                assert ha
                if vip.remove(ha.vip.address, ha.vip.prefixlen, ha.vip.interface):
                    log.warning("removed a stale VIP %s left by a dead keepalived", ha.vip.cidr)
                self._on_vrrp(Vrrp.UNKNOWN)
                if self.keepalived.start():
                    log.info("keepalived started (pid %s)", self.keepalived.pid)
        self._actuate_db(desired, obs)
        if obs.db.state == Db.PRIMARY and self.cfg.is_ha:
            # only a serving primary may commit alone: one stepping down (fencing) keeps
            # its commits waiting for the peer, or it would acknowledge what the peer lacks
            self._actuate_sync(desired.alone and desired.db == "primary", obs, now)
        # STOPPED too: a primary that crashed is restarted in place as a primary; stopping
        # the controller meanwhile would only add a restart of its own to the outage
        self._actuate_services(desired.services and obs.db.state in (Db.PRIMARY, Db.STARTING, Db.STOPPED))

    def _set_announce(self, announce: bool, timeline: int = 0) -> None:
        want = (announce, bgp.med_for(timeline) if announce else bgp.MED_BASE)
        if want != self.announce:
            bgp.write_desired(self.paths, *want)
            if self.announce is not None or announce:
                log.warning("BGP: %s %s%s", "announcing" if announce else "withdrawing",
                            self.cfg.bgp.anycast_prefix if self.cfg.bgp else "?",
                            f" (med {want[1]}, timeline {timeline})" if announce else "")
            self.announce = want

    def _actuate_bgp(self, announce: bool) -> None:
        if self.cfg.bgp is None:
            return
        self._set_announce(announce and not self.stop_requested, self.db_view.timeline)
        if not self.exabgp.running and not self.stop_requested and self.paths.exabgp_conf.exists() \
                and self._read_exabgp_conf() and self.exabgp.start():
            log.info("exabgp started (pid %s), neighbor %s", self.exabgp.pid, self.cfg.bgp.remote_ip)

    def _read_exabgp_conf(self) -> bool:
        try:
            self.exabgp_conf_seen = self.paths.exabgp_conf.read_bytes()
            return True
        except OSError:
            return False

    def _actuate_db(self, desired: Desired, obs: Observation) -> None:
        if desired.db == "stopped":
            if self.pg.running and not self.pg.stopping:
                log.info("stopping the database (fast)")
                self.pg.stop()
            return
        if self.pg.running or self.job is not None or obs.db.state == Db.ABSENT:
            return
        pgdata = self.paths.pgdata(self.cfg)
        if desired.db == "standby":
            postgres.set_standby_signal(pgdata, True)
        self.localdb.close()
        if self.pg.start():
            log.info("database started as %s (pid %s)", desired.db, self.pg.pid)

    def _actuate_sync(self, want_alone: bool, obs: Observation, now: float) -> None:
        assert self.cfg.ha
        with self.lock:
            if want_alone and (obs.db.peer_streaming or (
                    self.last_confirm_sent is not None
                    and now - self.last_confirm_sent < self.cfg.timing.alone_after)):
                want_alone = False  # a confirmation raced the decision: keep waiting
            if want_alone:
                self.alone = True  # no more confirmations from this moment
        if want_alone == obs.db.alone:
            if not want_alone:
                with self.lock:
                    self.alone = False
                self._prove_sync_if_needed()  # e.g. a primary restarted with it set
            return
        if want_alone:
            with self.lock:
                self.sync_generation += 1  # a proof still running is for the old setting
                self.sync.from_lsn = None
            self.localdb.set_sync(None)
            log.warning("synchronous replication off: committing alone (peer %s)",
                        "never confirmed" if self.last_confirm_sent is None else
                        f"unconfirmed for {now - self.last_confirm_sent:.1f}s")
            return
        with self.lock:
            self.sync_generation += 1
            self.sync.from_lsn = None  # not complete for anyone until proven in force
        self.localdb.set_sync(self.cfg.ha.peer_name)
        log.info("synchronous replication on: commits wait for %s", self.cfg.ha.peer_name)
        self._prove_sync_if_needed()

    def _prove_sync_if_needed(self) -> None:
        """Synchronous replication is set but not yet proven in force: prove it off the
        loop (it needs a checkpoint). Until then the peer is never confirmed complete."""
        with self.lock:
            if self.sync.from_lsn is not None or self.sync_proving:
                return
            self.sync_proving, generation = True, self.sync_generation
        threading.Thread(target=self._prove_sync, args=(generation,), name="sync-proof",
                         daemon=True).start()

    def _prove_sync(self, generation: int) -> None:
        started = clock.now()
        try:
            lsn: int | None = postgres.prove_sync_in_force(
                postgres.local_conninfo(self.paths, self.cfg))
        except Exception as e:  # the loop tries again at its next tick
            log.warning("could not prove synchronous replication in force: %s", e)
            lsn = None
        with self.lock:
            self.sync_proving = False
            if lsn is not None and generation == self.sync_generation:
                self.sync.from_lsn = lsn
                log.info("synchronous replication in force (proven in %.3fs): commits past "
                         "%X/%X wait for the peer", clock.now() - started, lsn >> 32,
                         lsn & 0xFFFFFFFF)
        self.wake.set()

    def _actuate_services(self, on: bool) -> None:
        m = self.manager
        if on:
            if not m.running:
                self.serving = False
                if not m.start():
                    return
            # the serving lease (esc.services.serving), renewed every tick: a node
            # frozen longer than pause_fence answers nothing when it wakes
            if not m.send_line(f"lease {clock.now() + self.pause_fence:.3f}"):
                return
            if not self.serving and m.send_line("serve"):
                self.serving = True
                log.info("escmanager serving (pid %s)", m.pid)
            return
        if self.serving:
            log.info("escmanager stopped")
            m.stop()
            self.serving = False
        elif not m.running and not self.stop_requested:
            m.start()  # parked: imported and ready, serving nothing

    # ------------------------------------------------------------ shutdown
    def shutdown(self) -> None:
        log.warning("agent stopping (role %s)", self.role)
        if self.cfg.bgp:
            self._set_announce(False)
            self.exabgp.stop()  # a NOTIFICATION: the router drops the route at once
        if self.cfg.is_ha:
            keepalived.write_gate(self.paths, False)  # hand the VIP over first
        # Services and database stop together: the peer promotes only once our
        # database is down, so every second spent here is a second without service.
        self.manager.stop(grace=2)
        self.pg.stop()
        # The peer promotes when it sees our database down, and only within its promote
        # window: keep what we tell it true (and fresh) while the database stops.
        deadline = clock.now() + 20
        while self.pg.running and clock.now() < deadline:
            self._refresh_db_view()
            time.sleep(0.05)
        self.pg.stop_wait(1)
        with self.lock:
            self.db_view, self.observed_at = DbView(state=Db.STOPPED), clock.now()
            self.role = Role.STOPPED
        self.manager.stop_wait(5)
        self.keepalived.stop_wait(5)
        self.exabgp.stop_wait(5)
        for poller in self.pollers:
            poller.stop()
        if self.lease:
            self.lease.stop()
        for srv in self.servers:
            srv.shutdown()
        self.paths.agent_sock.unlink(missing_ok=True)
        self.paths.agent_pid.unlink(missing_ok=True)
        with self.lock:
            self.role = Role.STOPPED
        log.warning("agent stopped")

    # ----------------------------------------------------------------- API
    def peer_state(self, caller: str) -> dict:
        now = clock.now()
        with self.lock:
            ha = self.cfg.ha
            # only on a fresh observation: right after a freeze, what we saw before it
            # says nothing about the peer now
            fresh = now - self.observed_at < self.cfg.timing.heartbeat_timeout
            complete = (ha is not None and caller == ha.peer_name and self.role == Role.ACTIVE
                        and self.db_view.state == Db.PRIMARY and not self.alone
                        and self.db_view.peer_complete and fresh)
            if complete:
                self.last_confirm_sent = now
            return {"name": self.cfg.name, "index": ha.self_index if ha else 0,
                    "role": self.role, "vrrp": self.vrrp, "complete_for_you": complete,
                    "op_mode": self.op_mode.to_dict(),
                    "db": {"state": self.db_view.state, "timeline": self.db_view.timeline,
                           "lsn": self.db_view.lsn, "system_id": self.db_view.system_id}}

    def command(self, name: str, body: dict) -> tuple[int, dict]:
        via_peer = bool(body.get("_via_peer"))
        if via_peer and name not in ("switchover", "op_mode"):
            return 403, {"error": f"{name} cannot be asked by the peer"}
        if name == "op_mode":
            return self._set_op_mode(body, via_peer)
        if name == "stop":
            self._request_stop()
            return 202, {"result": "stopping"}
        if name == "reload":
            return self._reload()
        if name not in ("force_active", "switchover"):
            return 404, {"error": f"unknown command {name!r}"}
        if not self.cfg.is_ha:
            return 409, {"error": "this node is STANDALONE (no HA configured)"}
        with self.lock:
            role, peer, db, alone = self.role, self.peer_view, self.db_view, self.alone
        if name == "force_active":
            if role != Role.SWITCHING_TO_ACTIVE:
                return 409, {"error": f"force-active is for a lone node waiting in "
                             f"SWITCHING_TO_ACTIVE; this node is {role}"}
            self._queue(Command.FORCE_ACTIVE)
            return 202, {"result": "forcing active"}
        # switchover
        if self.op_mode.maintenance:
            return 409, {"error": "maintenance mode: roles do not change; "
                         "`escadm op_mode set --mode=operation` first"}
        if role == Role.STANDBY and not via_peer:
            return self._forward_switchover()
        if role != Role.ACTIVE:
            return 409, {"error": f"switchover needs an ACTIVE and a STANDBY; this node is {role}"}
        def refuse(why: str) -> tuple[int, dict]:
            return 409, {"error": f"the peer is not a complete synchronous standby ({why}); "
                         "a switchover now could lose writes or leave no active"}

        if peer is None or peer.role != Role.STANDBY or not db.peer_complete or alone:
            return refuse(f"peer {peer.role if peer else 'unreachable'}")
        # The loop's view may be a few hundred ms old: ask the peer and the database now,
        # so a standby that died a moment ago does not get the role handed to it.
        fresh = next((a for a in (p.ask_now() for p in self.pollers) if a), None)
        if not fresh or fresh.get("role") != Role.STANDBY:
            return refuse("the peer does not answer as STANDBY now")
        if not self._standby_replying():
            return refuse("its database has not confirmed replication in the last 1.5 s")
        self._queue(Command.SWITCHOVER)
        return 202, {"result": "switching over"}

    def _standby_replying(self, within_s: float = 1.5) -> bool:
        """The peer's walreceiver replied within ``within_s`` (status every 1 s) and is sync."""
        assert self.cfg.ha
        db = postgres.LocalDb(self.paths, self.cfg)
        try:
            rows = db.execute(
                "SELECT 1 FROM pg_stat_replication WHERE application_name = %s AND "
                "state = 'streaming' AND sync_state = 'sync' AND "
                "now() - reply_time < make_interval(secs => %s)",
                (self.cfg.ha.peer_name, within_s))
            return bool(rows)
        except Exception:
            return False
        finally:
            db.close()

    def _queue(self, command: Command) -> None:
        with self.lock:
            self.pending, self.pending_at = command, clock.now()
        log.info("operator command %s queued", command)
        self.wake.set()

    def _peer_command(self, name: str, body: dict) -> tuple[int, dict]:
        import httpx

        ha = self.cfg.ha
        assert ha
        errors = []
        for _, peer_addr in ha.paths:  # VRRP's network first, then each heartbeat network
            host = f"[{peer_addr}]" if ":" in peer_addr else peer_addr
            try:
                r = httpx.post(f"http://{host}:{self.cfg.peer_port}/v1/peer/command/{name}",
                               json=body, headers={"X-ESC-Peer-Token": self.token}, timeout=5)
                return r.status_code, r.json()
            except httpx.ConnectError as e:  # not sent: another network may carry it
                errors.append(f"{peer_addr}: {e}")
            except (httpx.HTTPError, ValueError) as e:  # may have been received: never twice
                return 502, {"error": f"could not reach the peer: {peer_addr}: {e}"}
        return 502, {"error": f"could not reach the peer: {'; '.join(errors)}"}

    def _forward_switchover(self) -> tuple[int, dict]:
        code, body = self._peer_command("switchover", {})
        if code == 502:
            body = {"error": body["error"].replace("the peer", "the active peer")}
        return code, body

    def _set_op_mode(self, body: dict, via_peer: bool) -> tuple[int, dict]:
        """Set here, then tell the peer (from the peer: adopt it if newer)."""
        if via_peer:
            theirs = opmode.OpMode.parse(body.get("op_mode"))
            if theirs is None:
                return 400, {"error": "malformed op_mode"}
            self._adopt_op_mode(theirs, "the peer's op_mode command")
            return 200, {"result": self.op_mode.mode}
        mode = body.get("mode")
        if mode not in opmode.MODES:
            return 400, {"error": f"mode must be one of {', '.join(opmode.MODES)}, not {mode!r}"}
        with self.lock:
            new = self.op_mode.next(mode, self.cfg.name)
            self.op_mode = new
        opmode.save(self.paths, new)
        log.warning("operation mode set to %s by the operator%s", mode,
                    ": no automatic failover" if new.maintenance else "")
        self.wake.set()
        result = {"result": mode, "op_mode": new.to_dict()}
        if self.cfg.is_ha:
            code, answer = self._peer_command("op_mode", {"op_mode": new.to_dict()})
            result["peer"] = "told" if code == 200 else \
                f"not told ({answer.get('error', code)}); it takes the setting when it is back"
        return 200, result

    def _reload(self) -> tuple[int, dict]:
        try:
            cfg = load_config(self.paths)
        except ValueError as e:
            return 400, {"error": str(e)}
        render_all(self.paths, cfg)
        # the pollers and peer servers of every network are made at start
        if cfg.is_ha != self.cfg.is_ha or (cfg.ha and self.cfg.ha and
                                           cfg.ha.paths != self.cfg.ha.paths):
            log.warning("configuration changed the HA membership: applied at the next restart")
            return 200, {"result": "files rendered; HA membership changed: "
                         "`escadm restart` applies it"}
        old_bgp, self.cfg = self.cfg.bgp, cfg
        self._reload_bgp(old_bgp)
        if self.keepalived.running and self.keepalived.proc:
            self.keepalived.proc.send_signal(signal.SIGHUP)
        if self.pg.running:
            try:
                self.localdb.execute("SELECT pg_reload_conf()")
            except Exception:
                pass
        if not self.serving and self.manager.running:
            self.manager.stop()  # parked: the loop starts it again, reading the new esc.json
        log.info("configuration reloaded")
        if self.serving:
            return 200, {"result": "reloaded; the serving controller applies controller settings "
                         "(callbacks, retention, TLS) at its next start: `escadm restart` or a switchover"}
        return 200, {"result": "reloaded"}

    def _reload_bgp(self, old: BgpConfig | None) -> None:
        new = self.cfg.bgp
        try:
            conf = self.paths.exabgp_conf.read_bytes()
        except OSError:
            conf = b""
        # The file, not only esc.json: a new MD5 key changes only secrets.json and the file.
        if old == new and (new is None or (self.exabgp.running and conf == self.exabgp_conf_seen)):
            return
        if old is not None and (new is None or old.anycast_ip != new.anycast_ip):
            bgp.remove_anycast(old)
        if new is not None and bgp.ensure_anycast(new):
            log.info("anycast %s added to %s", new.anycast_ip, bgp.LOOPBACK)
        if self.exabgp.running:
            # ExaBGP re-reads its file only on a restart we control; the loop starts it again.
            log.info("BGP settings changed: restarting exabgp")
            self.exabgp.stop()
        if new is None:
            self.announce = None
            self.paths.bgp_desired.unlink(missing_ok=True)

    def status(self) -> dict:
        now = clock.now()
        with self.lock:
            db, peer, role = self.db_view, self.peer_view, self.role
            out: dict = {
                "node": self.cfg.name, "role": role, "reason": self.reason,
                "role_for_s": round(now - self.role_since, 3), "ha": self.cfg.is_ha,
                "vrrp": self.vrrp, "job": self.job,
                "alone": self.alone if db.state == Db.PRIMARY else None,
                "transitions": list(self.transitions),
                "op_mode": self.op_mode.to_dict(),
            }
        out["db"] = {"state": db.state, "timeline": db.timeline, "lsn": db.lsn,
                     "streaming": db.streaming, "peer_streaming": db.peer_streaming,
                     "peer_complete": db.peer_complete, "sync": not db.alone}
        out["services"] = {
            "keepalived": self._svc(self.keepalived, self.cfg.is_ha),
            "pgsql": self._svc(self.pg, True, db.state.value),
            "escmanager": self._svc(self.manager, True,
                                    "serving" if self.serving else "parked"),
            "filesystem": {"state": "running" if self._volume_ok(mount=False) else "stopped",
                           "pid": 0},
        }
        if self.cfg.bgp:
            out["services"]["bgp"] = self._svc(self.exabgp, True)
            out["bgp"] = self._bgp_status()
        out["disk"] = self._disk()
        ha = self.cfg.ha
        if ha and self.lease is not None:
            lv = self.lease.view()
            out["witness"] = {"address": ha.witness, "held": lv.valid(now), "holder": lv.holder,
                              "last_answer_s": round(now - lv.answered_at, 3) if lv.answered_at else None,
                              "error": lv.error}
        if ha:
            out["vip"] = {"address": ha.vip.cidr, "interface": ha.vip.interface,
                          "present": vip.has_address(ha.vip.address, ha.vip.interface)}
            snaps = [p.snapshot() for p in self.pollers]
            seen = [s.received_at for s in snaps if s.received_at]
            out["peer"] = {
                "address": ha.peer_address,
                "reachable": peer is not None,
                "role": peer.role if peer else None,
                "last_seen_s": round(now - max(seen), 3) if seen else None,
                "error": snaps[0].last_error if snaps else "",
                # per network, VRRP's first: a cut one shows here before anything fails over
                "paths": [{"address": p.host, "reachable": bool(fresh),
                           "last_seen_s": round(now - s.received_at, 3) if s.received_at else None,
                           "error": s.last_error}
                          for p, s, fresh in zip(self.pollers, snaps,
                                                 self.peer_paths or [False] * len(snaps), strict=True)],
            }
            if peer is not None and {role, peer.role} == {Role.ACTIVE, Role.STANDBY}:
                lag = peer.db.lsn - db.lsn if role != Role.ACTIVE else db.lsn - peer.db.lsn
                out["replication"] = {"lag_bytes": max(lag, 0),
                                      "peer_timeline": peer.db.timeline}
        return out

    def _bgp_status(self) -> dict:
        """The session and the route as the API helper last saw them (bgp_state.json)."""
        b = self.cfg.bgp
        assert b
        seen = bgp.read_state(self.paths)
        wall = time.time()
        alive = self.exabgp.running and wall - float(seen.get("updated") or 0) < 5
        session = str(seen.get("session", "down")) if alive else "down"
        since = seen.get("session_since") if alive else None
        return {
            "neighbor": b.remote_ip, "local_ip": b.local_ip, "local_as": b.local_as,
            "remote_as": b.remote_as, "router_id": b.local_router_id, "prefix": b.anycast_prefix,
            "md5": b.md5, "hold_time": b.hold_time, "exabgp": self.exabgp.running,
            "session": session, "established": session == "up",
            "session_for_s": round(wall - float(since), 1) if since else None,
            "last_reason": seen.get("last_reason", "") if alive else "ExaBGP not running",
            "desired": "announce" if self.announce and self.announce[0] else "withdraw",
            "med": seen.get("med"),
            "announced": bool(alive and session == "up" and seen.get("announced")),
            "loopback": bgp.anycast_present(b),
        }

    @staticmethod
    def _svc(child: Child, enabled: bool, detail: str = "") -> dict:
        if not enabled:
            return {"state": "disabled", "pid": None}
        running = child.pid is not None
        return {"state": "running" if running else "stopped", "pid": child.pid,
                "detail": detail, "restarts": child.exits}


def main(argv: list[str] | None = None) -> int:
    import argparse

    from esc import logs

    parser = argparse.ArgumentParser(prog="esc-agent")
    parser.add_argument("--root", required=True)
    args = parser.parse_args(argv)
    agent = Agent(Path(args.root))
    listener = logs.setup(agent.paths.log, "agent.log", agent.cfg.name, lambda: agent.role)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request is noise
    try:
        return agent.run()
    finally:
        listener.stop()


if __name__ == "__main__":
    sys.exit(main())
