"""Peer liveness over every network: the pollers' merged view, the peer API served on
each address, and how `escadm status -v` shows the paths."""

from __future__ import annotations

import threading
import time

from esc import clock
from esc.agent import api
from esc.agent.peer import PeerPoller, PeerSnapshot, merge, view_from_json
from esc.health import peer_seen_text
from esc.roles import Db, DbView, PeerView, Role, Vrrp

NOW = 100.0
FRESH = 0.6


def snap(at: float | None, role: Role = Role.ACTIVE, confirm: float | None = None,
         vrrp: Vrrp = Vrrp.MASTER) -> PeerSnapshot:
    view = PeerView(role=role, db=DbView(state=Db.PRIMARY), index=1, vrrp=vrrp) if at else None
    return PeerSnapshot(view=view, received_at=at, ever_seen=at is not None, last_confirm_recv=confirm,
                        raw={"role": role, "op_mode": None} if at else None)


def test_merge_freshest_answer_of_any_path() -> None:
    m = merge([snap(NOW - 5, Role.STANDBY), snap(NOW - 0.1, Role.ACTIVE)], NOW, FRESH)
    assert m.view is not None and m.view.role == Role.ACTIVE
    assert m.fresh == [False, True] and not m.on_first_path and m.ever_seen


def test_merge_prefers_the_newest_of_two_fresh_answers() -> None:
    m = merge([snap(NOW - 0.3, Role.SWITCHING_TO_STANDBY), snap(NOW - 0.05, Role.STANDBY)], NOW, FRESH)
    assert m.view is not None and m.view.role == Role.STANDBY and m.on_first_path


def test_merge_lost_on_every_path() -> None:
    m = merge([snap(NOW - 1), snap(None)], NOW, FRESH)
    assert m.view is None and m.raw is None and m.fresh == [False, False] and m.ever_seen


def test_confirmations_count_from_any_path() -> None:
    m = merge([snap(NOW - 3, confirm=NOW - 3), snap(NOW - 0.1, confirm=NOW - 0.1)], NOW, FRESH)
    assert m.last_confirm_recv == NOW - 0.1


def test_view_carries_the_peers_keepalived_state() -> None:
    data = {"role": "ACTIVE", "index": 0, "vrrp": "MASTER", "db": {"state": "primary"}}
    assert view_from_json(data).vrrp == Vrrp.MASTER
    assert view_from_json({**data, "vrrp": "SOMETHING_NEW"}).vrrp == Vrrp.UNKNOWN
    assert view_from_json({k: v for k, v in data.items() if k != "vrrp"}).vrrp == Vrrp.UNKNOWN


def test_status_text_per_path() -> None:
    p = {"address": "10.77.0.12", "role": "STANDBY", "last_seen_s": 0.05, "paths": [
        {"address": "10.77.0.12", "reachable": True, "last_seen_s": 0.05},
        {"address": "10.78.0.12", "reachable": False, "last_seen_s": 4.2}]}
    assert peer_seen_text(p) == ", via 10.77.0.12 0.05s, via 10.78.0.12 unreachable"
    one = {**p, "paths": p["paths"][:1]}
    assert peer_seen_text(one) == ", last answer 0.05s ago"


class FakeAgent:
    def __init__(self) -> None:
        self.callers: list[str] = []
        self.cut = threading.Event()  # answers come too late: as if its network were cut

    def status(self) -> dict:
        return {}

    def peer_state(self, caller: str) -> dict:
        self.callers.append(caller)
        if self.cut.is_set():
            time.sleep(0.6)
        return {"name": "n2", "index": 1, "role": "ACTIVE", "vrrp": "MASTER", "complete_for_you": True,
                "db": {"state": "primary", "timeline": 2, "lsn": 7}}

    def command(self, name: str, body: dict) -> tuple[int, dict]:
        return 404, {}


def test_one_poller_per_path_against_real_peer_servers() -> None:
    """The peer API on two addresses (as on two networks), a poller on each; one of them
    stops answering (its network cut): the merged view still has the peer, from the other."""
    agents = [FakeAgent(), FakeAgent()]
    servers = [api.serve_peer(host, 0, agent, "tok")
               for host, agent in zip(("127.0.0.1", "127.0.0.2"), agents, strict=True)]
    wake = threading.Event()
    pollers = [PeerPoller(host, srv.server_address[1], "tok", "esc_me", 0.05, 0.4, wake)
               for host, srv in zip(("127.0.0.1", "127.0.0.2"), servers, strict=True)]
    try:
        for p in pollers:
            p.start()
        deadline = clock.now() + 5
        while clock.now() < deadline and not all(p.snapshot().received_at for p in pollers):
            time.sleep(0.02)
        m = merge([p.snapshot() for p in pollers], clock.now(), FRESH)
        assert m.view is not None and m.view.vrrp == Vrrp.MASTER and m.fresh == [True, True]
        assert m.last_confirm_recv is not None and set(agents[1].callers) == {"esc_me"}
        agents[0].cut.set()
        time.sleep(FRESH + 0.3)
        m = merge([p.snapshot() for p in pollers], clock.now(), FRESH)
        assert m.fresh == [False, True] and not m.on_first_path
        assert m.view is not None and m.view.role == Role.ACTIVE
    finally:
        agents[0].cut.clear()
        for p in pollers:
            p.stop()
        for srv in servers:
            srv.shutdown()
            srv.server_close()
