"""The pair's event history (esc.agent.history): what the real agent loop records under
the simulation, the journal file, the table both nodes' events are copied into, the
peer API that hands a journal over, and `escadm ha history`."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from pathlib import Path

import httpx
import psycopg
import pytest
from click.testing import CliRunner

from esc.agent import history
from esc.agent.api import serve_peer
from esc.agent.history import Event, Journal, Shipper, transition_kind
from esc.agent.peer import TOKEN_HEADER, PeerPoller
from esc.cli.escadm import cli, parse_since
from esc.roles import Command, Role
from esc.sim.world import World

# --- what a role change is called ------------------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new", "command", "peer", "stopping", "was", "kind"),
    [
        (Role.SWITCHING_TO_ACTIVE, Role.ACTIVE, None, None, False, True, "failover"),
        (Role.SWITCHING_TO_ACTIVE, Role.ACTIVE, None, Role.FAULT, False, True, "failover"),
        (Role.STANDBY, Role.ACTIVE, None, Role.SWITCHING_TO_STANDBY, False, True, "switchover"),
        (
            Role.SWITCHING_TO_ACTIVE,
            Role.ACTIVE,
            None,
            Role.SWITCHING_TO_STANDBY,
            False,
            False,
            "transition",
        ),  # the pair's first election
        (Role.SWITCHING_TO_ACTIVE, Role.ACTIVE, Command.FORCE_ACTIVE, None, False, False, "force_active"),
        (
            Role.ACTIVE,
            Role.SWITCHING_TO_STANDBY,
            Command.SWITCHOVER,
            Role.STANDBY,
            False,
            False,
            "switchover",
        ),
        (Role.ACTIVE, Role.SWITCHING_TO_STANDBY, None, None, False, False, "fence"),
        (Role.ACTIVE, Role.FAULT, None, Role.STANDBY, False, False, "fence"),
        (Role.ACTIVE, Role.STOPPED, None, Role.STANDBY, True, False, "stop"),
        (Role.SWITCHING_TO_STANDBY, Role.STANDBY, None, Role.ACTIVE, False, True, "transition"),
        (Role.STOPPED, Role.STANDBY, None, Role.ACTIVE, False, True, "transition"),
    ],
)
def test_what_a_role_change_is_called(old, new, command, peer, stopping, was, kind) -> None:  # type: ignore[no-untyped-def]
    assert transition_kind(old, new, command, peer, stopping, was) == kind


# --- the real loop under the simulation -------------------------------------------------------


def _settle(w: World, until: float) -> None:
    w.sched.run_until(until, w.check)


def _kinds(w: World, node: str) -> list[str]:
    return [e.kind for e in w.agents[node].journal.recent(1000)]


def test_the_loop_records_a_failover_and_the_rejoin() -> None:
    w = World(seed=4)
    _settle(w, 15)
    roles = {n: a.role for n, a in w.agents.items()}
    active = next(n for n, r in roles.items() if r == Role.ACTIVE)
    standby = w.peer_of(active)
    w.power_cut(active)
    _settle(w, 30)
    assert w.agents[standby].role == Role.ACTIVE
    took_over = [e for e in w.agents[standby].journal.recent(1000) if e.kind == "failover"]
    assert len(took_over) == 1
    ev = took_over[0]
    assert ev.role == Role.ACTIVE and ev.node == standby and ev.reason and ev.at > 15
    assert ev.peer_role is None  # the peer was not heard: that is why
    assert 0 < ev.detail["active_lost_s"] < 10  # from its last ACTIVE answer to the promotion
    w.start_node(active)
    _settle(w, 60)
    assert w.agents[active].role == Role.STANDBY
    back = w.agents[active].journal.recent(1000)
    rejoins = [e for e in back if e.kind == "rejoin"]
    assert rejoins and rejoins[-1].detail["ok"] and rejoins[-1].detail["how"], back
    assert back[-1].role == Role.STANDBY and back[-1].peer_role == Role.ACTIVE
    # every event is named once, in order
    seqs = [e.seq for e in back]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)


def test_a_switchover_says_who_asked_on_both_nodes() -> None:
    w = World(seed=6)
    _settle(w, 15)
    active = next(n for n, a in w.agents.items() if a.role == Role.ACTIVE)
    standby = w.peer_of(active)
    w.agents[active].queue(Command.SWITCHOVER, by="admin on portal")
    _settle(w, 30)
    assert w.agents[standby].role == Role.ACTIVE
    gave = [e for e in w.agents[active].journal.recent(100) if e.kind == "switchover"]
    took = [e for e in w.agents[standby].journal.recent(100) if e.kind == "switchover"]
    assert gave and gave[0].by == "admin on portal" and gave[0].role_from == Role.ACTIVE
    assert took and took[0].role == Role.ACTIVE
    assert "failover" not in _kinds(w, standby)


def test_a_freeze_is_recorded() -> None:
    w = World(seed=8)
    _settle(w, 15)
    active = next(n for n, a in w.agents.items() if a.role == Role.ACTIVE)
    w.freeze(active, 6.0)
    _settle(w, 40)
    frozen = [e for e in w.agents[active].journal.recent(1000) if e.kind == "freeze"]
    assert frozen and frozen[0].detail["paused_s"] > 5


# --- the journal file -------------------------------------------------------------------------


def test_the_journal_survives_a_restart_and_a_torn_line(tmp_path: Path) -> None:
    path = tmp_path / "history.jsonl"
    j = Journal(path, "n1")
    for i in range(3):
        j.record("transition", Role.STANDBY, f"step {i}")
    j.close()
    with open(path, "a") as f:
        f.write('{"node": "n1", "epoch": "x", "se')  # a crash mid-write
    again = Journal(path, "n1")
    assert again.latest() == (j.epoch, 3)
    ev = again.record("reload", Role.STANDBY, "configuration reloaded", by="escadm on n1")
    assert ev.seq == 4 and ev.epoch == j.epoch
    again.close()
    epoch, events = history.read_file(path)
    assert epoch == j.epoch and [e.seq for e in events] == [1, 2, 3, 4]
    assert events[-1].by == "escadm on n1"


def test_a_new_journal_has_a_new_epoch(tmp_path: Path) -> None:
    a = Journal(tmp_path / "a.jsonl", "n1")
    b = Journal(tmp_path / "b.jsonl", "n1")  # a reinstalled node: its names never repeat
    assert a.epoch != b.epoch
    a.record("start", Role.STOPPED, "agent started")
    assert [e.seq for e in a.after(a.epoch, 0)] == [1]
    assert a.after(a.epoch, 1) == [] and len(a.after("other", 5)) == 1
    a.close()
    b.close()


def test_the_journal_file_is_compacted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(history, "FILE_MAX_BYTES", 4000)
    path = tmp_path / "history.jsonl"
    j = Journal(path, "n1", keep=10)
    for i in range(60):
        j.record("transition", Role.STANDBY, f"step {i}")
    j.close()
    epoch, events = history.read_file(path)
    assert path.stat().st_size < 8000 and events[-1].seq == 60 and len(events) <= 60
    assert [e.seq for e in events] == list(range(events[0].seq, 61))


def test_a_bad_event_is_refused() -> None:
    for bad in (
        [],
        {"node": "n1"},
        {"node": "n1", "epoch": "e", "seq": 0, "at": 1, "kind": "start", "role": "STOPPED", "reason": ""},
        {"node": "n1", "epoch": "e", "seq": 1, "at": 1, "kind": "hack", "role": "X", "reason": ""},
        {"node": "n1", "epoch": "e", "seq": "x", "at": 1, "kind": "start", "role": "X", "reason": ""},
    ):
        with pytest.raises(ValueError):
            Event.from_dict(bad)


# --- the table ------------------------------------------------------------------------------


def test_the_shipper_copies_both_journals_once(pg_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    own = Journal(tmp_path / "n1.jsonl", "n1")
    peer = Journal(None, "n2")
    for i in range(3):
        own.record("transition", Role.ACTIVE, f"n1 step {i}")
        peer.record("transition", Role.STANDBY, f"n2 step {i}")
    asked: list[tuple[str | None, int]] = []

    def fetch(epoch: str | None, after: int) -> tuple[str, list[Event]]:
        asked.append((epoch, after))
        # a peer speaks for itself only: an event it claims for n1 is not stored
        forged = Event(node="n1", epoch="forged", seq=1, at=time.time(), kind="fence", role="FAULT",
                       reason="x")
        return peer.epoch, [*peer.after(epoch, after), forged]

    shipper = Shipper(
        own,
        lambda: psycopg.connect(pg_server.conninfo("postgres", "esc")),
        lambda: True,
        fetch,
        peer_latest=lambda: tuple(peer.heartbeat()),  # type: ignore[arg-type]
    )
    with psycopg.connect(pg_server.conninfo("postgres", "esc"), autocommit=True) as conn:
        conn.execute(history.SCHEMA)
        conn.execute("TRUNCATE ha_events")
        ancient = Event(
            node="n0",
            epoch="old",
            seq=1,
            at=time.time() - 2 * 365 * 86400,
            kind="start",
            role="STOPPED",
            reason="long ago",
        )
        assert history.store(conn, [ancient, ancient]) == 1
    try:
        assert shipper.ship_once() == 6
        assert shipper.ship_once() == 0 and len(asked) == 1  # nothing new: the peer is not asked
        peer.record("rejoin", Role.STANDBY, "pg_rewind from the peer")
        own.record("switchover", Role.SWITCHING_TO_STANDBY, "asked", by="admin")
        assert shipper.ship_once() == 2 and asked[-1] == (peer.epoch, 3)
        # the peer reinstalled: a new epoch, all of it copied
        peer2 = Journal(None, "n2")
        peer2.record("start", Role.STOPPED, "agent started")
        peer = peer2
        assert shipper.ship_once() == 1
    finally:
        shipper._drop()
        own.close()
    with psycopg.connect(pg_server.conninfo("esc", "esc")) as conn:
        events = history.query(conn)
        assert {(e.node, e.kind) for e in events[-3:]} == {
            ("n2", "rejoin"),
            ("n2", "start"),
            ("n1", "switchover"),
        }
        # 9, the ancient one pruned
        assert len(events) == 9 and history.query(conn, kinds=["switchover"])[0].by == "admin"
        assert len(history.query(conn, node="n2")) == 5
        assert history.query(conn, since=time.time() + 60) == []
        assert all(e.epoch != "forged" for e in events)
        # the controller reads it and cannot rewrite it
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DELETE FROM ha_events")


def test_the_shipper_waits_while_not_serving(pg_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    own = Journal(None, "n9")
    own.record("start", Role.STOPPED, "agent started")
    serving = threading.Event()
    shipper = Shipper(
        own,
        lambda: psycopg.connect(pg_server.conninfo("postgres", "esc")),
        serving.is_set,
        None,
        interval=0.05,
    )
    shipper.start()
    try:
        time.sleep(0.3)
        with psycopg.connect(pg_server.conninfo("postgres", "esc")) as conn:
            conn.execute(history.SCHEMA)
            conn.commit()
            assert history.query(conn, node="n9") == []
        serving.set()
        shipper.nudge()
        deadline = time.monotonic() + 5
        while True:
            with psycopg.connect(pg_server.conninfo("postgres", "esc")) as conn:
                if history.query(conn, node="n9"):
                    break
            assert time.monotonic() < deadline, shipper.last_error
            time.sleep(0.05)
    finally:
        shipper.stop()
        shipper.join(5)


# --- the peer API -----------------------------------------------------------------------------


class _Api:
    def __init__(self) -> None:
        self.journal = Journal(None, "n2")
        for i in range(4):
            self.journal.record("transition", Role.STANDBY, f"step {i}")

    def status(self) -> dict:
        return {"role": "STANDBY"}

    def peer_state(self, caller: str) -> dict:
        return {"role": "STANDBY"}

    def command(self, name: str, body: dict) -> tuple[int, dict]:
        return 200, {}

    def history(self, epoch: str | None, after: int) -> dict:
        return {
            "epoch": self.journal.epoch,
            "events": [e.to_dict() for e in self.journal.after(epoch, after)],
        }


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_peer_hands_its_journal_over_with_the_token_only() -> None:
    api, port = _Api(), _port()
    srv = serve_peer("127.0.0.1", port, api, "the-token")
    try:
        poller = PeerPoller("127.0.0.1", port, "the-token", "n1", 0.1, 1.0, threading.Event())
        got = poller.fetch("/v1/peer/history", {"epoch": api.journal.epoch, "after": "2"})
        assert got is not None and [e["seq"] for e in got["events"]] == [3, 4]
        got = poller.fetch("/v1/peer/history", {"epoch": "", "after": "0"})
        assert got is not None and len(got["events"]) == 4
        url = f"http://127.0.0.1:{port}/v1/peer/history"
        assert httpx.get(url, headers={TOKEN_HEADER: "wrong"}).status_code == 403
        assert httpx.get(url + "?after=x", headers={TOKEN_HEADER: "the-token"}).status_code == 400
        stranger = PeerPoller("127.0.0.1", port, "wrong", "n1", 0.1, 1.0, threading.Event())
        assert stranger.fetch("/v1/peer/history", {"after": "0"}) is None
    finally:
        srv.shutdown()


# --- escadm ha history ----------------------------------------------------------------------


def test_since_takes_a_time_or_an_age() -> None:
    now = 1_800_000_000.0
    assert parse_since("90s", now) == now - 90
    assert parse_since("2h", now) == now - 7200
    assert parse_since("1.5d", now) == now - 1.5 * 86400
    assert parse_since("2026-12-03T14:00:00Z") == parse_since("2026-12-03T14:00:00") == 1796306400.0
    assert parse_since("2026-12-03T15:00:00+01:00") == 1796306400.0
    import click

    with pytest.raises(click.BadParameter, match="neither a time"):
        parse_since("yesterday")


def test_escadm_ha_history_reads_the_journal_when_the_database_is_down(tmp_path: Path) -> None:
    from esc.config import NodePaths

    root = tmp_path / "root"
    paths = NodePaths(root)
    j = Journal(paths.lib / "history.jsonl", "n1")
    j.record("start", Role.STOPPED, "agent started")
    j.record("failover", Role.ACTIVE, "the peer is lost", role_from=Role.SWITCHING_TO_ACTIVE)
    j.record("op_mode", Role.ACTIVE, "operation mode set to maintenance", by="escadm on n1")
    j.close()
    runner = CliRunner()
    res = runner.invoke(cli, ["--root", str(root), "ha", "history"])
    assert res.exit_code == 0, res.output
    lines = res.stdout.strip().splitlines()
    assert len(lines) == 3 and "SWITCHING_TO_ACTIVE -> ACTIVE: the peer is lost" in lines[1]
    assert "failover" in lines[1] and "(by escadm on n1)" in lines[2]
    assert "journal only" in res.stderr
    res = runner.invoke(cli, ["--root", str(root), "ha", "history", "--json", "--kind", "failover"])
    out = json.loads(res.stdout)
    assert [e["kind"] for e in out["events"]] == ["failover"] and out["database"] != "read"
    res = runner.invoke(cli, ["--root", str(root), "ha", "history", "--since", "1h", "--limit", "1"])
    assert res.exit_code == 0 and len(res.stdout.strip().splitlines()) == 1
    res = runner.invoke(cli, ["--root", str(root), "ha", "history", "--since", "soon"])
    assert res.exit_code == 2 and "neither a time" in res.output
    assert os.path.exists(paths.lib / "history.jsonl")
