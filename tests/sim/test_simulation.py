"""The real agent loop (esc.agent.loop) under the deterministic simulation (esc.sim):
two nodes, fake databases, keepalived and network, faults at random steps, and the
safety rules checked after every step. ``make sim SEEDS=N`` runs more seeds; a failing
seed is replayed with ``python -m esc.sim --seed N --trace``.

Odd seeds run with a witness (the real lease table) and add the partition faults only
a witness survives. The simulation is only worth its seeds if it catches a broken rule:
three tests break one on purpose (a node that vouches for a standby still catching up; a
synchronous setting trusted before the checkpointer has read it; a witness that grants
the lease to a node held outdated) and expect a failing seed. Links also lose,
duplicate and reorder messages (the jittery-link fault)."""

from __future__ import annotations

import os

import pytest

from esc.roles import Db
from esc.sim import world
from esc.sim.run import first_failure, replay, run_many

SEEDS = int(os.environ.get("SIM_SEEDS", "600"))  # make test: 600 (25-minute budget); make sim: 10000


def test_no_seed_loses_a_write_or_makes_two_writers() -> None:
    failures = run_many(range(SEEDS), jobs=2)
    assert not failures, "\n".join(
        f"seed {s}: {why} (replay: python -m esc.sim --seed {s} --trace)" for s, why in failures[:5])


def test_a_seed_replays_exactly() -> None:
    ok1, trace1 = replay(11)
    ok2, trace2 = replay(11)
    assert ok1 and ok2 and trace1 == trace2 and "PROMOTED" in trace1


def test_it_finds_a_standby_vouched_for_while_catching_up(monkeypatch: pytest.MonkeyPatch) -> None:
    """A database adapter that reports the standby complete as soon as it streams (not
    once it has passed the proven LSN): the active vouches for a standby that lacks
    writes it acknowledged alone, and that standby promotes without them."""
    observe = world.SimAgent.io_db_observe

    def lying(self: world.SimAgent, running: bool):  # type: ignore[no-untyped-def]
        view = observe(self, running)
        if view.state == Db.PRIMARY and view.peer_streaming and not view.alone:
            from dataclasses import replace
            return replace(view, peer_complete=True)
        return view
    monkeypatch.setattr(world.SimAgent, "io_db_observe", lying)
    found = first_failure(range(400))
    assert found is not None and "promoted without" in found[1], found


def test_it_finds_a_synchronous_setting_trusted_too_early(monkeypatch: pytest.MonkeyPatch) -> None:
    """The proof of synchronous replication returns at once (what set_sync did before):
    commits acknowledged before the checkpointer read the setting count as covered."""
    def unproven(self: world.SimAgent) -> int:
        return len(self.db.history)
    monkeypatch.setattr(world.SimAgent, "io_prove_sync", unproven)
    found = first_failure(range(1500))
    assert found is not None and "promoted without" in found[1], found


def test_it_finds_a_witness_that_ignores_the_outdated_mark(monkeypatch: pytest.MonkeyPatch) -> None:
    """With a witness the active commits alone as soon as the witness holds its lost
    standby outdated. A witness that grants the lease to that standby anyway (after a
    partition, then the active's death) lets it promote without those writes."""
    from esc import witness

    grant = witness.LeaseTable._request

    def forgetful(self: witness.LeaseTable, pair: str, node: str, want: bool, duration: float,
                  now: float) -> dict:
        saved = self.outdated.pop(pair, None)
        try:
            return grant(self, pair, node, want, duration, now)
        finally:
            if saved is not None:
                self.outdated[pair] = saved
    monkeypatch.setattr(witness.LeaseTable, "_request", forgetful)
    found = first_failure(range(1, 1600, 2))  # odd seeds run with a witness
    assert found is not None and "promoted without" in found[1], found


@pytest.mark.parametrize("witness", [False, True])
def test_a_link_that_duplicates_and_reorders_keeps_the_pair_safe(witness: bool) -> None:
    """Heartbeat requests delivered twice, answers landing after newer ones, witness
    requests delivered twice, for 20 s over a settled pair, then a power cut of the
    active while the link still misbehaves: it must really have duplicated and
    reordered, and still nothing acknowledged is lost and one node writes at a time."""
    w = world.World(3, witness=witness)
    w.sched.run_until(5.0, w.check)
    w.loss, w.dup, w.jitter = 0.05, 0.5, 0.5
    w.sched.run_until(20.0, w.check)
    active = next(n for n, a in w.agents.items() if a.role == "ACTIVE")
    w.power_cut(active)
    w.sched.run_until(25.0, w.check)
    w.loss, w.dup, w.jitter = 0.0, 0.0, 0.0
    w.start_node(active)
    w.sched.run_until(40.0, w.check)
    w.final_check()
    assert w.stats["duplicated"] > 50 and w.stats["reordered"] > 10, w.stats
    assert sum(a.role == "ACTIVE" for a in w.agents.values()) == 1


def test_a_standby_the_active_no_longer_has_wal_for_is_cloned_not_rewound_forever() -> None:
    """A standby away longer than the active keeps WAL for it cannot stream,
    and pg_rewind ("no rewind required") does not help: the rejoin after a rewind that
    did not get it streaming clones instead, and it is a standby again."""
    w = world.World(5)
    w.sched.run_until(5.0, w.check)
    standby = next(n for n, a in w.agents.items() if a.role == "STANDBY")
    w.cluster.dbs[standby].wal_gone = True
    w.sched.run_until(60.0, w.check)
    agent = w.agents[standby]
    assert agent.role == "STANDBY" and w.cluster.dbs[standby].streaming, w.sched.trace[-20:]
    assert agent.clones == 1
    w.final_check()


def _cut_the_first_network(w: world.World) -> tuple[str, list[str]]:
    w.sched.run_until(5.0, w.check)
    active = next(n for n, a in w.agents.items() if a.role == "ACTIVE")
    standby = w.peer_of(active)
    w.cut_paths = {0}
    roles = []
    for i in range(60):  # 6 s: VRRP's network down, the second one up
        w.sched.run_until(5.0 + 0.1 * (i + 1), w.check)
        roles.append(w.agents[standby].role)
    w.cut_paths = set()
    w.sched.run_until(30.0, w.check)
    w.final_check()
    return active, roles


def test_a_second_network_keeps_a_cut_of_the_first_from_splitting_the_pair() -> None:
    """Without a witness, two networks between the nodes: VRRP's (and replication's) is
    cut for 6 s. The standby's keepalived becomes MASTER, but the agent still hears the
    active on the second network: it never promotes, and nothing is lost. The same
    world whose agents read only the first network's heartbeats splits (the check
    catches two writers), so the test does test the second network."""
    active, roles = _cut_the_first_network(world.World(2, paths=2))
    assert "ACTIVE" not in roles, roles

    def first_only(self: world.SimAgent) -> list:  # type: ignore[type-arg]
        return self.snaps[:1]
    import unittest.mock
    with unittest.mock.patch.object(world.SimAgent, "io_peer_snapshots", first_only), \
            pytest.raises(world.SafetyViolation):
        _cut_the_first_network(world.World(2, paths=2))


def test_force_active_of_a_standby_held_outdated_serves_again() -> None:
    """The active goes alone behind a partition (its standby held outdated), then dies for
    good. The standby waits (it lacks those writes); the operator forces it active, giving
    them up: it promotes, the witness drops its mark, it holds the lease and commits."""
    from esc.roles import Command, Role

    w = world.World(5, witness=True)
    w.sched.run_until(5.0, w.check)
    active = next(n for n, a in w.agents.items() if a.role == Role.ACTIVE)
    standby = w.peer_of(active)
    w.cut = True
    w.sched.run_until(6.5, w.check)
    assert w.witness is not None and w.witness.outdated  # the standby is held outdated
    w.power_cut(active)
    w.sched.run_until(12.0, w.check)
    assert w.agents[standby].role != Role.ACTIVE  # it does not take over by itself
    w.acked.clear()  # the operator gives up what the dead active committed alone
    w.agents[standby].queue(Command.FORCE_ACTIVE)
    w.sched.run_until(20.0, w.check)
    # the forced node's mark is gone; now it is the dead old active that is held outdated
    name = {n: a.cfg.ha.self_name for n, a in w.agents.items() if a.cfg.ha}
    assert w.agents[standby].role == Role.ACTIVE
    assert w.witness.outdated == {"pair": name[active]}
    assert w.acked and all(node == standby for node, _ in w.acked.values())


def _alone_after_the_standby_dies(stale_by: float, monkeypatch: pytest.MonkeyPatch) -> bool:
    """The standby loses power; whether the active went on to commit alone within 10 s,
    each of its ticks acting ``stale_by`` seconds after its observations."""
    actuate = world.SimAgent._actuate_sync

    def late(self: world.SimAgent, want_alone: bool, obs, now: float) -> None:  # type: ignore[no-untyped-def]
        actuate(self, want_alone, obs, now - stale_by)
    monkeypatch.setattr(world.SimAgent, "_actuate_sync", late)
    w = world.World(3)
    w.sched.run_until(5.0, w.check)
    active = next(n for n, a in w.agents.items() if a.role == "ACTIVE")
    w.power_cut(w.peer_of(active))
    went_alone = False

    def watch() -> None:
        nonlocal went_alone
        w.check()
        went_alone |= w.cluster.dbs[active].sync_name == ""
    w.sched.run_until(15.0, watch)
    return went_alone


def test_a_tick_acting_long_after_it_observed_never_goes_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """A node frozen between its observations and its actions may have been replaced
    meanwhile: committing alone then would acknowledge the commits waiting on it."""
    assert _alone_after_the_standby_dies(0.0, monkeypatch)  # the scenario does go alone
    assert not _alone_after_the_standby_dies(1.0, monkeypatch)


def test_an_active_frozen_between_seeing_and_acting_is_replaced_and_fences() -> None:
    """The active freezes in the middle of a tick, after it decided to go on serving and
    before it acted on it; the standby takes over meanwhile; the woken node acts on what
    it saw (the rules must make that harmless), fences at its next tick and rejoins, and
    no acknowledged write is lost nor two nodes write at once (checked at every step)."""
    w = world.World(5)
    w.sched.run_until(5.0, w.check)
    old = next(n for n, a in w.agents.items() if a.role == "ACTIVE")
    new = w.peer_of(old)
    w.freeze_mid_tick(old, 3.0)
    took_over = False

    def watch() -> None:
        nonlocal took_over
        w.check()
        took_over |= w.agents[new].role == "ACTIVE" and w.frozen(old)
    w.sched.run_until(20.0, watch)
    w.final_check()
    assert took_over and w.agents[new].role == "ACTIVE" and w.agents[old].role == "STANDBY"
