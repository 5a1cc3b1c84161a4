"""A deterministic simulation of the pair: two real agent loops (esc.agent.loop) on
fake databases, fake keepalived and a fake network, under one seeded scheduler.

Only the edges are fake: :class:`SimAgent` implements the loop's ``io_*`` methods on
a :class:`FakeDb` (histories of writes per timeline, streaming replication, synchronous
commits that wait for the standby, a checkpointer that reads a new setting late), a
:class:`FakeVrrp` (adverts, master-down timer, priorities, nopreempt, the gate) and
heartbeats that go through :class:`Network` (delays, losses, cuts). Everything the
agents decide is the real code's. Faults (power cuts, freezes, cut links, lossy links,
links that duplicate and reorder)
are injected at random steps, and after every step the world checks the safety rules:

* no acknowledged write is lost: a database only promotes with every acknowledged
  write in its history, and at the end the primary has them all;
* never two writers: writes are acknowledged by one node at a time (an acknowledged
  write on a node's timeline is never followed by one on another node's earlier or
  concurrent timeline).

A failing seed replays exactly: the same seed gives the same run, step for step.
"""

from __future__ import annotations

import heapq
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from esc.agent import opmode
from esc.agent.lease import LeaseBook, LeaseView
from esc.agent.loop import AgentLoop
from esc.agent.peer import PeerSnapshot, view_from_json
from esc.config import WITNESS_TIMING_DEFAULTS, HaConfig, NodeConfig, Timing, Vip
from esc.roles import Db, DbView, Vrrp
from esc.witness import UNSET, LeaseTable


class SafetyViolation(AssertionError):
    pass


class Scheduler:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.now = 0.0
        self.queue: list[tuple[float, int, Callable[[], None]]] = []
        self.seq = 0
        self.trace: list[str] = []

    def at(self, t: float, fn: Callable[[], None]) -> None:
        self.seq += 1
        heapq.heappush(self.queue, (max(t, self.now), self.seq, fn))

    def after(self, dt: float, fn: Callable[[], None]) -> None:
        self.at(self.now + dt, fn)

    def run_until(self, t: float, check: Callable[[], None]) -> None:
        while self.queue and self.queue[0][0] <= t:
            when, _, fn = heapq.heappop(self.queue)
            self.now = when
            fn()
            check()
        self.now = t

    def note(self, text: str) -> None:
        self.trace.append(f"{self.now:9.3f} {text}")


class Done:
    """The simulator's Pending: done once the scheduler has run the work."""

    def __init__(self) -> None:
        self._done, self._value, self._error = False, None, None

    def done(self) -> bool:
        return self._done

    def result(self) -> Any:
        if self._error is not None:
            raise self._error
        return self._value

    def finish(self, fn: Callable[[], Any]) -> None:
        try:
            self._value = fn()
        except Exception as e:
            self._error = e
        self._done = True


# ------------------------------------------------------------------ the database
@dataclass
class FakeDb:
    """One node's PostgreSQL, as far as safety goes: a history of (timeline, write)."""

    name: str
    history: list[tuple[int, str]] = field(default_factory=list)
    timeline: int = 1
    state: Db = Db.STOPPED
    sync_name: str = ""  # synchronous_standby_names, as configured
    sync_in_force: str = ""  # ... as the checkpointer last read it (commits wait on this)
    waiting: list[tuple[int, str, Callable[[], None]]] = field(default_factory=list)
    streaming: bool = False
    was_primary: bool = False
    # the primary no longer has the WAL this standby needs (it was away past
    # max_slot_wal_keep_size, or its slot was not there):
    # it cannot stream, and pg_rewind does not help; only a clone does
    wal_gone: bool = False

    def has(self, writes: set[str]) -> bool:
        mine = {w for _, w in self.history}
        return writes <= mine


def prefix_of(a: list[tuple[int, str]], b: list[tuple[int, str]]) -> bool:
    """Whether history a is a prefix of b. Every entry is unique (a write on a timeline)
    and histories only fork, so sharing the last entry of a means sharing all of a."""
    return len(a) <= len(b) and (not a or b[len(a) - 1] == a[-1])


class Cluster:
    """Both databases and the replication between them."""

    def __init__(self, sched: Scheduler, names: list[str], world: World) -> None:
        self.sched, self.world = sched, world
        self.dbs = {n: FakeDb(n, state=Db.STOPPED) for n in names}
        self.peer = {n: self.dbs[m] for n in names for m in names if m != n}
        self.stalled_until = 0.0

    def other(self, name: str) -> FakeDb:
        return self.peer[name]

    def replicate(self) -> None:
        """Every 10 ms: a streaming standby receives what its primary has; waiters
        whose write the standby now has are acknowledged."""
        if self.sched.now >= self.stalled_until and self.sched.rng.random() < 0.02:
            # the standby's disk or network stalls for a moment: it lags behind
            self.stalled_until = self.sched.now + self.sched.rng.uniform(0.05, 0.5)
        for db in self.dbs.values():
            if db.state == Db.STANDBY and self.sched.now < self.stalled_until:
                continue  # keeps its last streaming state, receives nothing
            src = self.other(db.name)
            ok = (db.state == Db.STANDBY and src.state == Db.PRIMARY
                  and self.world.link_up() and not self.world.frozen(src.name)
                  and not self.world.frozen(db.name) and prefix_of(db.history, src.history)
                  and not db.wal_gone)
            db.streaming = ok
            if ok:  # a few records per step: catching up after a while alone takes time
                n = len(db.history)
                db.history.extend(src.history[n:n + self.sched.rng.randint(1, 3)])
                db.timeline = src.timeline
        for db in self.dbs.values():
            if db.state != Db.PRIMARY or not db.waiting or self.world.frozen(db.name):
                continue
            peer = self.other(db.name)
            still = []
            for lsn, w, ack in db.waiting:
                if not db.sync_in_force:
                    ack()  # nobody to wait for any more (alone)
                elif peer.streaming and len(peer.history) >= lsn:
                    ack()
                else:
                    still.append((lsn, w, ack))
            db.waiting = still
        self.sched.after(0.01, self.replicate)


# ------------------------------------------------------------------ keepalived
@dataclass
class FakeVrrp:
    name: str
    index: int
    state: Vrrp = Vrrp.BACKUP
    gate: bool = False
    bonus: int = 0
    last_advert: float = 0.0
    running: bool = True

    @property
    def priority(self) -> int:
        return max(1, min(254, (101 if self.index == 0 else 100) + self.bonus))


# ------------------------------------------------------------------ the agent
class SimAgent(AgentLoop):
    def __init__(self, world: World, name: str, cfg: NodeConfig) -> None:
        self.world, self.name = world, name
        super().__init__(cfg, opmode.OpMode())
        self.snaps = [PeerSnapshot() for _ in range(world.paths)]  # one per network, VRRP's first
        self.newest_sent = [-1.0] * world.paths  # per network: the newest answer's request time
        self.clones = 0
        self.book = LeaseBook("pair", cfg.ha.self_name if cfg.ha else name,
                              duration=world.timing.lease) if world.witness else None
        self.alive = True
        self.last_tick = world.sched.now

    # io
    def now(self) -> float:
        return self.world.sched.now

    def wall_time(self) -> float:  # the history's clock: simulated seconds
        return self.world.sched.now

    def submit(self, name: str, fn: Callable[[], Any]) -> Done:
        d = Done()
        dt = self.world.sched.rng.uniform(0.01, 0.3 if name in ("rewind", "clone") else 0.1)

        def run() -> None:
            if self.alive:
                d.finish(fn)
        self.world.sched.after(dt, run)
        return d

    def io_paused_for(self, now: float) -> float:
        paused, self.last_tick = now - self.last_tick, now
        return paused

    @property
    def db(self) -> FakeDb:
        return self.world.cluster.dbs[self.name]

    @property
    def vr(self) -> FakeVrrp:
        return self.world.vrrp[self.name]

    def io_db_running(self) -> bool:
        return self.db.state in (Db.PRIMARY, Db.STANDBY)

    def io_db_observe(self, running: bool) -> DbView:
        db = self.db
        if not running:
            if not db.history and db.state == Db.ABSENT:
                return DbView(state=Db.ABSENT)
            return DbView(state=Db.STOPPED, timeline=db.timeline, was_primary=db.was_primary)
        peer = self.world.cluster.other(self.name)
        complete = False
        peer_streaming = db.state == Db.PRIMARY and peer.streaming
        if peer_streaming and db.sync_name and self.sync_from_lsn is not None:
            complete = len(peer.history) >= self.sync_from_lsn
        return DbView(state=db.state, timeline=db.timeline, lsn=len(db.history), system_id="s",
                      streaming=db.streaming, peer_streaming=peer_streaming,
                      peer_complete=complete, alone=not db.sync_name)

    def io_db_start(self, as_standby: bool) -> bool:
        db = self.db
        db.state = Db.STANDBY if as_standby or not db.was_primary else Db.PRIMARY
        db.sync_in_force = db.sync_name if db.state == Db.PRIMARY else ""
        self.world.sched.note(f"{self.name} db started as {db.state}")
        return True

    def io_db_stop(self) -> None:
        db = self.db
        if db.state == Db.PRIMARY:
            db.was_primary = True
        db.state, db.waiting, db.streaming = Db.STOPPED, [], False

    def io_set_sync(self, peer_name: str | None) -> None:
        db = self.db
        db.sync_name = peer_name or ""
        if not peer_name:
            db.sync_in_force = ""  # releases the waiters at the next replication step
            return
        delay = self.world.sched.rng.choice([0.0, 0.01, 0.2, 1.0])  # a busy checkpointer

        def in_force() -> None:
            if db.sync_name:
                db.sync_in_force = db.sync_name
        self.world.sched.after(delay, in_force)

    def io_keep_peer_slot(self, keep_from: int | None) -> str | None:
        return None  # WAL retention is modelled by Cluster.wal_gone, not by slots

    def io_least_privilege_replication(self) -> bool:
        return False

    def io_prove_sync(self) -> int:
        db = self.db
        if db.state != Db.PRIMARY or db.sync_in_force != db.sync_name or not db.sync_name:
            raise RuntimeError("not in force yet")
        return len(db.history)

    def io_promote(self) -> None:
        self.world.promote(self.name)

    def io_peer_position(self) -> tuple[bool, int] | None:
        if not self.world.link_up() or not self.world.alive(self.world.peer_of(self.name)):
            return None
        peer = self.world.cluster.other(self.name)
        return peer.state == Db.PRIMARY, peer.timeline

    def io_checkpoint_peer(self) -> None:
        if self.io_peer_position() is None:
            raise RuntimeError("peer unreachable")

    def io_db_has_data(self) -> bool:
        return True

    def io_local_timeline(self) -> int:
        return self.db.timeline

    def io_rewind(self) -> tuple[bool, str]:
        peer = self.world.cluster.other(self.name)
        if peer.state != Db.PRIMARY or not self.world.link_up():
            return False, "source unreachable"
        # pg_rewind: keep the common prefix, take the rest of the source's history
        self.db.history, self.db.timeline = list(peer.history), peer.timeline
        self.db.was_primary = False
        return True, "rewound"

    def io_clone(self) -> str:
        ok, why = self.io_rewind()
        if not ok:
            raise RuntimeError(why)
        self.db.wal_gone = False
        self.clones += 1
        return "cloned"

    def io_prepare_standby(self) -> None:
        self.db.was_primary = False

    def io_vip_present(self) -> bool:
        return self.vr.state == Vrrp.MASTER

    def io_keepalived(self, gate: bool) -> None:
        self.vr.gate = gate
        self.world.vrrp_gate_changed(self.name)

    def io_priority(self, bonus: int) -> None:
        self.vr.bonus = bonus

    def io_peer_snapshots(self) -> list[PeerSnapshot]:
        return self.snaps

    def io_lease_view(self) -> LeaseView | None:
        return self.book.state if self.book is not None else None

    def io_lease_want(self, want: bool) -> None:
        if self.book is not None and self.book.set_want(want, self.now()):
            self.world.lease_now(self.name)

    def io_lease_outdate_peer(self, outdated: bool) -> None:
        if self.book is not None and self.cfg.ha is not None \
                and self.book.set_outdated(self.cfg.ha.peer_name if outdated else None):
            self.world.lease_now(self.name)

    def io_lease_force(self) -> None:
        if self.book is not None:
            self.book.force(self.now())

    def io_services(self, on: bool, observed_at: float) -> None:
        self.serving = on and self.db.state == Db.PRIMARY


class World:
    NODES = ("n1", "n2")

    def __init__(self, seed: int, timing: Timing | None = None, witness: bool = False,
                 paths: int = 1) -> None:
        self.seed = seed
        # networks between the nodes (--ha_heartbeat_list): heartbeats on each; VRRP and
        # replication on the first only
        self.paths = paths
        self.cut_paths: set[int] = set()
        # the real lease table of esc.witness, past its quiet time after a start
        self.witness = LeaseTable(started=-10.0, max_duration=5.0) if witness else None
        self.sched = Scheduler(seed)
        self.timing = timing or (Timing(**WITNESS_TIMING_DEFAULTS) if witness else Timing())
        self.cluster = Cluster(self.sched, list(self.NODES), self)
        self.vrrp = {n: FakeVrrp(n, i) for i, n in enumerate(self.NODES)}
        self.agents: dict[str, SimAgent] = {}
        self.cut = False
        self.loss = 0.0
        # a jittery link: heartbeat requests delivered twice (a retransmission), answers
        # held back up to heartbeat_timeout so that an older one lands after a newer one
        # (two networks race), witness requests delivered twice
        self.dup = 0.0
        self.jitter = 0.0
        self.stats = {"duplicated": 0, "reordered": 0}  # what the jittery link did
        self.frozen_until = {n: 0.0 for n in self.NODES}
        self.mid_tick_freeze: dict[str, float] = {}  # node -> freeze between a tick's halves
        self.down = {n: False for n in self.NODES}
        self.acked: dict[str, tuple[str, int]] = {}  # write -> (node, timeline)
        self.writer_eras: dict[int, str] = {}  # timeline -> the node that acked on it
        self.last_ack_timeline = 0
        self.vip_owner: str | None = None
        self.counter = 0
        self.violation = ""
        # both start as in a fresh install: n1 was the primary, n2 its standby
        self.cluster.dbs["n1"].was_primary = True
        for n in self.NODES:
            self.start_node(n)
        self.sched.after(0.01, self.cluster.replicate)
        self.sched.after(0.5, self.client)

    # --- nodes
    def cfg(self, name: str) -> NodeConfig:
        ha = HaConfig(node_list=["10.0.0.1", "10.0.0.2"], vip=Vip(address="10.0.0.50", prefixlen=24,
                                                                   interface="eth0"),
                      vif="eth0", self_index=self.NODES.index(name))
        return NodeConfig(name=name, ha=ha, timing=self.timing)

    def peer_of(self, name: str) -> str:
        return next(n for n in self.NODES if n != name)

    def alive(self, name: str) -> bool:
        return not self.down[name]

    def frozen(self, name: str) -> bool:
        return self.sched.now < self.frozen_until[name]

    def link_up(self) -> bool:
        """VRRP's and replication's network (the first) joins the nodes."""
        return not self.cut and 0 not in self.cut_paths

    def start_node(self, name: str) -> None:
        self.down[name] = False
        agent = SimAgent(self, name, self.cfg(name))
        self.agents[name] = agent
        vr = self.vrrp[name]
        vr.state, vr.gate, vr.running, vr.last_advert = Vrrp.BACKUP, False, True, self.sched.now
        agent.on_vrrp(Vrrp.BACKUP)
        self._loop(name, agent)
        for path in range(self.paths):
            self._poll(name, agent, path)
        self._vrrp_timer(name)
        if self.witness is not None:
            self._lease_timer(name, agent)

    def power_cut(self, name: str) -> None:
        self.sched.note(f"FAULT power cut {name}")
        self.down[name] = True
        self.agents[name].alive = False
        db = self.cluster.dbs[name]
        if db.state == Db.PRIMARY:
            db.was_primary = True
        db.state, db.waiting, db.streaming = Db.STOPPED, [], False
        self.vrrp[name].running = False
        self.vrrp[name].state = Vrrp.FAULT
        if self.vip_owner == name:
            self.vip_owner = None

    def freeze(self, name: str, seconds: float) -> None:
        self.sched.note(f"FAULT freeze {name} {seconds:.2f}s")
        self.frozen_until[name] = self.sched.now + seconds

    # --- the agent loop, heartbeats
    def freeze_mid_tick(self, name: str, seconds: float) -> None:
        """The node's next tick freezes between its observations and its actions: it
        acts ``seconds`` later on what it saw before, while the others went on."""
        self.mid_tick_freeze[name] = seconds

    def _loop(self, name: str, agent: SimAgent) -> None:
        def noted(dec: Any) -> None:
            if dec.role != getattr(agent, "_noted_role", None):
                self.sched.note(f"{name} {dec.role}: {dec.reason}")
                agent._noted_role = dec.role  # type: ignore[attr-defined]

        def tick() -> None:
            if not agent.alive:
                return
            if self.frozen(name):
                self.sched.at(self.frozen_until[name], tick)
                return
            hold = self.mid_tick_freeze.pop(name, None)
            if hold is not None:
                planned = agent.observe_and_decide()
                self.freeze(name, hold)

                def resume() -> None:
                    if agent.alive:
                        noted(agent.act(planned))
                        self.sched.after(self.timing.tick, tick)
                self.sched.at(self.frozen_until[name], resume)
                return
            noted(agent.tick())
            self.sched.after(self.timing.tick, tick)
        self.sched.after(self.sched.rng.uniform(0, self.timing.tick), tick)

    def _poll(self, name: str, agent: SimAgent, path: int = 0) -> None:
        t = self.timing

        def cut() -> bool:
            return self.cut or path in self.cut_paths

        def ask() -> None:
            if not agent.alive:
                return
            if self.frozen(name):
                self.sched.at(self.frozen_until[name], ask)
                return
            sent = self.sched.now
            peer = self.agents[self.peer_of(name)]
            rng = self.sched.rng
            d1 = rng.expovariate(1 / 0.002)

            def deliver(copy: bool = False) -> None:
                if not peer.alive or cut() or rng.random() < self.loss:
                    return
                if self.frozen(peer.name):
                    self.sched.at(self.frozen_until[peer.name], lambda: deliver(copy))
                    return
                if not copy and rng.random() < self.dup:
                    self.stats["duplicated"] += 1
                    self.sched.after(rng.uniform(0.0, 0.05), lambda: deliver(True))
                answer = peer.peer_state(agent.cfg.ha.self_name if agent.cfg.ha else "")
                d2 = rng.expovariate(1 / 0.002)
                if rng.random() < self.jitter:
                    d2 += rng.uniform(0.0, t.heartbeat_timeout)

                def arrive() -> None:
                    now = self.sched.now
                    if not agent.alive or cut() or now - sent > t.heartbeat_timeout:
                        return
                    if self.frozen(name):  # read once we run again: late, then dropped
                        return
                    s = agent.snaps[path]
                    if sent < agent.newest_sent[path]:
                        self.stats["reordered"] += 1  # an older answer after a newer one
                    agent.newest_sent[path] = max(sent, agent.newest_sent[path])
                    s.view, s.received_at, s.ever_seen, s.raw = view_from_json(answer), now, True, answer
                    if answer.get("complete_for_you"):
                        s.last_confirm_recv = now
                self.sched.after(d2, arrive)
            self.sched.after(d1, deliver)
            self.sched.after(t.heartbeat_interval, ask)
        self.sched.after(self.sched.rng.uniform(0, t.heartbeat_interval), ask)

    # --- the witness (the real LeaseTable; the node's side is the real LeaseBook)
    def _lease_timer(self, name: str, agent: SimAgent) -> None:
        def renew() -> None:
            if not agent.alive:
                return
            if self.frozen(name):
                self.sched.at(self.frozen_until[name], renew)
                return
            self._lease_ask(agent)
            self.sched.after(0.2, renew)
        self.sched.after(self.sched.rng.uniform(0, 0.2), renew)

    def lease_now(self, name: str) -> None:
        agent = self.agents[name]
        self.sched.after(0.0, lambda: agent.alive and not self.frozen(name) and self._lease_ask(agent))

    def _lease_ask(self, agent: SimAgent) -> None:
        book, table = agent.book, self.witness
        assert book is not None and table is not None
        now = self.sched.now
        if not (book.want or book.state.valid(now)):
            # not wanting it: a look at the witness every second (as LeaseClient does)
            if now - getattr(agent, "looked", -1e9) < 1.0:
                return
            agent.looked = now  # type: ignore[attr-defined]
        sent, body = now, book.request(book.want, now)
        d1, d2 = (self.sched.rng.expovariate(1 / 0.002) for _ in range(2))

        def deliver() -> None:
            if self.sched.rng.random() < self.loss:
                return
            answer = table.request(body["pair"], body["node"], body["want"], body["duration"],
                                   self.sched.now, body.get("outdated", UNSET),
                                   body.get("force", False))
            if self.sched.rng.random() < self.dup:  # retransmitted; one answer is read
                again = self.sched.now + self.sched.rng.uniform(0.0, 0.1)
                self.sched.at(again, lambda: table.request(
                    body["pair"], body["node"], body["want"], body["duration"], self.sched.now,
                    body.get("outdated", UNSET), body.get("force", False)))

            def arrive() -> None:
                if not agent.alive or self.frozen(agent.name) or self.sched.now - sent > 0.3:
                    return
                book.on_answer(sent, self.sched.now, answer)
            self.sched.after(d2, arrive)
        self.sched.after(d1, deliver)

    # --- VRRP
    def _vrrp_timer(self, name: str) -> None:
        t = self.timing
        vr = self.vrrp[name]

        def step() -> None:
            if not vr.running or self.down[name]:
                return
            if self.frozen(name):
                self.sched.at(self.frozen_until[name], step)
                return
            other = self.vrrp[self.peer_of(name)]
            if not vr.gate:
                self._set_vrrp(name, Vrrp.FAULT)
            elif vr.state == Vrrp.FAULT:
                self._set_vrrp(name, Vrrp.BACKUP)
                vr.last_advert = self.sched.now
            elif vr.state == Vrrp.MASTER:
                # advertise; the other side hears it unless cut, lost, frozen or down
                if self.link_up() and self.sched.rng.random() >= self.loss and other.running \
                        and not self.frozen(other.name):
                    other.last_advert = self.sched.now
                    if other.state == Vrrp.MASTER and (other.priority > vr.priority
                                                       or (other.priority == vr.priority
                                                           and other.index < vr.index)):
                        pass  # the other one yields below when it hears us
                    elif other.state == Vrrp.MASTER:
                        self._set_vrrp(other.name, Vrrp.BACKUP)
            else:  # BACKUP: master down after 3 adverts plus skew
                skew = (256 - vr.priority) / 256 * t.advert_int
                if self.sched.now - vr.last_advert > 3 * t.advert_int + skew:
                    self._set_vrrp(name, Vrrp.MASTER)
            self.sched.after(t.advert_int / 2, step)
        self.sched.after(0.0, step)

    def vrrp_gate_changed(self, name: str) -> None:
        vr = self.vrrp[name]
        if not vr.gate and vr.state != Vrrp.FAULT and vr.running:
            self._set_vrrp(name, Vrrp.FAULT)  # releases at once (priority-0 advert)
            other = self.vrrp[self.peer_of(name)]
            if self.link_up():
                other.last_advert = -1e9

    def _set_vrrp(self, name: str, state: Vrrp) -> None:
        vr = self.vrrp[name]
        if vr.state == state:
            return
        vr.state = state
        self.sched.note(f"{name} keepalived {state}")
        if state == Vrrp.MASTER:
            self.vip_owner = name  # gratuitous ARP: clients now go here
        elif self.vip_owner == name:
            self.vip_owner = None
        agent = self.agents[name]
        delay = self.sched.rng.uniform(0.0005, 0.005)
        self.sched.after(delay, lambda: agent.alive and agent.on_vrrp(state))

    # --- the database's promotion, checked
    def promote(self, name: str) -> None:
        db = self.cluster.dbs[name]
        if db.state == Db.PRIMARY:
            return
        if db.state != Db.STANDBY:
            raise RuntimeError("not a standby")
        missing = set(self.acked) - {w for _, w in db.history}
        if missing:  # recorded, not only raised: the agent's job would catch it
            self.violation = (f"{name} promoted without {len(missing)} acknowledged writes, "
                              f"e.g. {sorted(missing)[:3]}")
            raise SafetyViolation(self.violation)
        db.timeline += 1
        db.state, db.streaming, db.was_primary = Db.PRIMARY, False, False
        db.sync_in_force = db.sync_name = ""
        self.sched.note(f"{name} PROMOTED to timeline {db.timeline}")

    # --- the client: a write through the VIP every 20 ms
    def client(self) -> None:
        node = self.vip_owner
        if node is None or self.vrrp[node].state != Vrrp.MASTER:
            # a gratuitous ARP refresh: the VIP is wherever keepalived is MASTER
            node = next((n for n, v in self.vrrp.items() if v.state == Vrrp.MASTER
                         and self.alive(n)), None)
        if node is not None and self.alive(node) and not self.frozen(node):
            agent, db = self.agents[node], self.cluster.dbs[node]
            if agent.serving and db.state == Db.PRIMARY:
                self.counter += 1
                w = f"w{self.counter}"
                db.history.append((db.timeline, w))
                lsn, tl = len(db.history), db.timeline

                def ack(node: str = node, w: str = w, tl: int = tl) -> None:
                    self._acked(node, w, tl)
                if not db.sync_in_force:
                    ack()
                else:
                    db.waiting.append((lsn, w, ack))
        self.sched.after(0.02, self.client)

    def _acked(self, node: str, w: str, tl: int) -> None:
        era = self.writer_eras.setdefault(tl, node)
        if era != node:
            self.violation = (f"two writers: {node} and {era} both acknowledged writes on "
                              f"timeline {tl}")
        elif tl < self.last_ack_timeline:
            self.violation = (f"two writers: {node} acknowledged {w} on timeline {tl} after a "
                              f"write on timeline {self.last_ack_timeline}")
        self.last_ack_timeline = tl
        self.acked[w] = (node, tl)

    # --- checks
    def check(self) -> None:
        """After every step: a violation seen anywhere (a promotion without every
        acknowledged write, two writers) stops the run here, with its trace."""
        if self.violation:
            raise SafetyViolation(self.violation)

    def final_check(self) -> None:
        primaries = [n for n, d in self.cluster.dbs.items() if d.state == Db.PRIMARY]
        if len(primaries) > 1:
            raise SafetyViolation(f"two primaries at the end: {primaries}")
        if not primaries:
            raise SafetyViolation("no primary at the end (the pair did not recover)")
        db = self.cluster.dbs[primaries[0]]
        missing = set(self.acked) - {w for _, w in db.history}
        if missing:
            raise SafetyViolation(f"{len(missing)} acknowledged writes lost, e.g. {sorted(missing)[:3]}")


FAULTS = ("power-cut-active", "power-cut-standby", "freeze-active", "freeze-standby",
          "freeze-mid-tick-active", "freeze-mid-tick-standby", "lossy-link", "jittery-link", "none")
# A cut of the only link between the nodes while both still reach the client is the
# partition that splits a pair without a witness (documented); with one, it must not.
WITNESS_FAULTS = (*FAULTS, "cut-link", "cut-link-then-power-cut-active")


def run_seed(seed: int, duration: float = 40.0, witness: bool = False, paths: int = 1) -> World:
    """One simulated run: the pair settles, faults strike at random moments, every fault
    is repaired, and the pair must settle with every acknowledged write. With two
    networks, a cut of the first (VRRP's, replication's) must not split the pair even
    without a witness: the agents still hear each other on the second."""
    for name in ("esc.agent", "esc.witness"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    w = World(seed, witness=witness, paths=paths)
    faults = (WITNESS_FAULTS if witness else FAULTS) + (("cut-first-network",) if paths > 1 else ())
    rng = random.Random(seed * 7919 + 1)
    w.sched.run_until(5.0, w.check)
    t = 5.0
    while t < duration - 10:
        fault = rng.choice(faults)
        active = next((n for n, a in w.agents.items() if a.role == "ACTIVE" and w.alive(n)), "n1")
        standby = w.peer_of(active)
        hold = rng.uniform(0.2, 8.0)
        if fault.startswith("power-cut"):
            victim = active if fault.endswith("active") else standby
            w.power_cut(victim)
            w.sched.run_until(t + hold, w.check)
            w.sched.note(f"REPAIR restart {victim}")
            w.start_node(victim)
        elif fault.startswith("freeze-mid-tick"):
            w.freeze_mid_tick(active if fault.endswith("active") else standby, hold)
            w.sched.run_until(t + hold + w.timing.tick, w.check)
        elif fault.startswith("freeze"):
            w.freeze(active if fault.endswith("active") else standby, hold)
            w.sched.run_until(t + hold, w.check)
        elif fault == "cut-link":
            w.sched.note("FAULT link cut")
            w.cut = True
            w.sched.run_until(t + hold, w.check)
            w.cut = False
            w.sched.note("REPAIR link")
        elif fault == "cut-link-then-power-cut-active":
            # the active goes alone behind the partition, then dies while the standby's
            # confirmation is still fresh: only the witness's outdated mark keeps the
            # standby from promoting without what the active committed alone
            w.sched.note("FAULT link cut")
            w.cut = True
            w.sched.run_until(t + rng.uniform(0.5, 1.5), w.check)
            w.power_cut(active)
            w.sched.run_until(t + hold + 1.5, w.check)
            w.cut = False
            w.sched.note(f"REPAIR link, restart {active}")
            w.start_node(active)
            hold += 1.5
        elif fault == "cut-first-network":
            w.sched.note("FAULT first network cut")
            w.cut_paths = {0}
            w.sched.run_until(t + hold, w.check)
            w.cut_paths = set()
            w.sched.note("REPAIR first network")
        elif fault == "lossy-link":
            w.loss = 0.3
            w.sched.run_until(t + hold, w.check)
            w.loss = 0.0
        elif fault == "jittery-link":
            w.sched.note("FAULT jittery link")
            w.loss, w.dup, w.jitter = 0.1, 0.3, 0.3
            w.sched.run_until(t + hold, w.check)
            w.loss, w.dup, w.jitter = 0.0, 0.0, 0.0
            w.sched.note("REPAIR link")
        t += hold + rng.uniform(0.3, 6.0)
        w.sched.run_until(t, w.check)
    w.sched.run_until(duration + 10, w.check)
    w.final_check()
    return w
