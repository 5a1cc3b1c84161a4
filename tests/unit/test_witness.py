"""The witness's lease table (pure), its HTTP server and the node's lease client."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from esc import clock
from esc.agent.lease import LeaseClient
from esc.witness import MAC_HEADER, LeaseTable, parse_request, serve, signed, signed_leases_path

T0 = 100.0


def table() -> LeaseTable:
    return LeaseTable(started=T0 - 10, max_duration=5.0)  # past its quiet time


def test_one_holder_at_a_time_until_it_expires() -> None:
    t = table()
    assert t.request("p", "a", True, 1.0, T0)["granted"]
    refused = t.request("p", "b", True, 1.0, T0 + 0.5)
    assert not refused["granted"] and refused["holder"] == "a" and refused["remaining"] == pytest.approx(0.5)
    assert t.request("p", "a", True, 1.0, T0 + 0.9)["granted"]  # renewal: until T0 + 1.9
    assert not t.request("p", "b", True, 1.0, T0 + 1.8)["granted"]
    got = t.request("p", "b", True, 1.0, T0 + 1.9)
    assert got["granted"] and got["term"] == 2
    assert t.request("other-pair", "a", True, 1.0, T0)["granted"]  # pairs are independent


def test_release_lets_the_other_node_in_at_once() -> None:
    t = table()
    t.request("p", "a", True, 1.0, T0)
    t.request("p", "b", False, 1.0, T0 + 0.1)  # not b's to release
    assert not t.request("p", "b", True, 1.0, T0 + 0.2)["granted"]
    t.request("p", "a", False, 1.0, T0 + 0.3)
    assert t.request("p", "b", True, 1.0, T0 + 0.3)["granted"]


def test_no_grant_right_after_a_start() -> None:
    """A restarted witness forgot who held the lease: it waits the longest lease out."""
    t = LeaseTable(started=T0, max_duration=2.0)
    out = t.request("p", "a", True, 1.0, T0 + 1.0)
    assert not out["granted"] and out["holder"] is None and out["remaining"] == pytest.approx(1.0)
    assert t.request("p", "a", True, 1.0, T0 + 2.0)["granted"]


@pytest.mark.parametrize(("body", "message"), [
    ([], "JSON object"), ({"node": "a"}, "'pair'"), ({"pair": "p"}, "'node'"),
    ({"pair": "p", "node": "a", "want": "yes"}, "'want'"),
    ({"pair": "p", "node": "a", "duration": 99}, "'duration'"),
    ({"pair": "p", "node": "a", "duration": True}, "'duration'"),
    ({"pair": "p", "node": "a", "duration": float("nan")}, "'duration'"),
])
def test_bad_requests(body: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_request(body)


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def witness() -> Iterator[str]:
    port = _port()
    srv = serve("127.0.0.1", port, "tok", LeaseTable(clock.now() - 10, max_duration=5.0))
    yield f"127.0.0.1:{port}"
    srv.shutdown()
    srv.server_close()


def post(url: str, token: str, body: dict) -> httpx.Response:
    raw, headers = signed(token, body)
    return httpx.post(url, content=raw, headers=headers)


def test_server_checks_the_mac_and_the_body(witness: str) -> None:
    url = f"http://{witness}/v1/lease"
    assert httpx.post(url, json={"pair": "p", "node": "a"}).status_code == 401
    # a MAC with non-ASCII characters is a wrong MAC, not a crash of the handler
    raw, headers = signed("tok", {"pair": "p", "node": "a"})
    bad = httpx.post(url, content=raw, headers={MAC_HEADER: "t\u00f6k".encode("latin-1")})
    assert bad.status_code == 401
    assert post(url, "not-the-token", {"pair": "p", "node": "a"}).status_code == 401
    r = httpx.post(url, content=b"{nope", headers=headers)
    assert r.status_code == 400 and "error" in r.json()
    r = post(url, "tok", {"pair": "p", "node": "a", "duration": 1})
    assert r.status_code == 200 and r.json()["granted"]
    path, headers = signed_leases_path("tok", "a")
    leases = httpx.get(f"http://{witness}{path}", headers=headers).json()
    assert leases["p"]["holder"] == "a"
    assert httpx.get(f"http://{witness}{path}", headers=headers).status_code == 401  # replayed
    assert httpx.get(f"http://{witness}/v1/leases", headers={MAC_HEADER: "x"}).status_code == 401


def test_the_token_never_travels_and_a_recorded_request_is_no_use(witness: str) -> None:
    """What someone on the path sees (the body, the MAC) cannot be played again, altered,
    or replayed late: the lease cannot be released, taken or marked in a node's name."""
    url = f"http://{witness}/v1/lease"
    raw, headers = signed("tok", {"pair": "p", "node": "a", "want": True, "duration": 1})
    assert b"tok" not in raw and "tok" not in headers.values()
    assert httpx.post(url, content=raw, headers=headers).json()["granted"]
    again = httpx.post(url, content=raw, headers=headers)
    assert again.status_code == 401 and "replay" in again.json()["error"]
    # the same request altered (a release, a mark on the other node): the MAC no longer fits
    for change in ((b'"want": true', b'"want": false'), (b'"pair": "p"', b'"pair": "p", "outdated": "b"')):
        assert httpx.post(url, content=raw.replace(*change), headers=headers).status_code == 401
    # made with the token but sent late (recorded, held back, replayed after the nonce cache)
    body = json.loads(raw)
    body.update(nonce="f" * 32, sent=time.time() - 3600)
    late = json.dumps(body).encode()
    from esc.witness import request_mac

    r = httpx.post(url, content=late, headers={MAC_HEADER: request_mac("tok", late)})
    assert r.status_code == 401 and "from the witness's clock" in r.json()["error"]


def test_nonce_cache_forgets_after_its_window_and_stays_bounded() -> None:
    from esc.witness import NonceCache

    cache = NonceCache(window=10, limit=3)
    assert cache.fresh("a", 0) and not cache.fresh("a", 5)
    assert cache.fresh("a", 10.5)  # the window passed: the send time check refuses it by then
    for n in "bcd":
        assert cache.fresh(n, 11)
    assert len(cache.seen) == 3


def test_two_clients_never_both_hold_it(witness: str) -> None:
    """a holds and renews; b keeps asking and is refused; a stops renewing (dies):
    b gets it only after a's own view of its lease has already ended."""
    wake = threading.Event()
    a = LeaseClient(witness, "tok", "p", "a", duration=1.0, renew=0.1, margin=0.25, wake=wake)
    b = LeaseClient(witness, "tok", "p", "b", duration=1.0, renew=0.1, margin=0.25)
    a.start()
    b.start()
    try:
        a.set_want(True)
        deadline = clock.now() + 5
        while not a.view().valid(clock.now()):
            assert clock.now() < deadline
            time.sleep(0.01)
        b.set_want(True)
        time.sleep(0.5)
        assert not b.view().valid(clock.now()) and b.view().holder == "a"
        a.stop(release=False)  # a dies holding it
        a_until = a.view().valid_until
        while not b.view().valid(clock.now()):
            assert clock.now() < deadline + 5
            time.sleep(0.01)
        assert clock.now() >= a_until  # never both
    finally:
        a.stop(release=False)
        b.stop()


def test_an_unreachable_witness_is_an_error_not_a_lease() -> None:
    c = LeaseClient(f"127.0.0.1:{_port()}", "tok", "p", "a", renew=0.05, timeout=0.2)
    c.start()
    try:
        c.set_want(True)
        time.sleep(0.3)
        v = c.view()
        assert not v.valid(clock.now()) and "witness 127.0.0.1" in v.error
    finally:
        c.stop()


def until(pred, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    deadline = clock.now() + timeout
    while not pred():
        assert clock.now() < deadline, "not within the deadline"
        time.sleep(0.01)


def test_a_peer_that_held_the_lease_long_before_it_froze_is_not_taken_for_alive(witness: str) -> None:
    """a held the lease for a long time, then froze (stops renewing). b starts asking:
    the witness names a for up to one lease more. That must not count as "a keeps
    renewing" (b kept out of a takeover for seconds): the time a is named counts from
    b's first request, and b gets the lease once a's runs out."""
    a = LeaseClient(witness, "tok", "p", "a", duration=1.0, renew=0.1, margin=0.25)
    b = LeaseClient(witness, "tok", "p", "b", duration=1.0, renew=0.1, margin=0.25)
    a.start()
    b.start()
    try:
        a.set_want(True)
        until(lambda: a.view().valid(clock.now()))
        b.set_want(True)  # refused: a holds it (as a standby asks before a promotion)
        until(lambda: b.view().holder == "a")
        b.set_want(False)  # b goes back to following a, for two leases
        time.sleep(2.0)  # the time that passes is the point: a stays named meanwhile
        a.stop(release=False)  # a freezes holding it
        asked = clock.now()
        b.set_want(True)
        until(lambda: (b.view().answered_at or 0.0) > asked)
        v = b.view()
        named_for = clock.now() - v.holder_since if v.holder_since else 0.0
        assert v.holder == "a" and named_for < 1.0, named_for
        until(lambda: b.view().valid(clock.now()), timeout=3.0)
    finally:
        a.stop(release=False)
        b.stop()


def test_an_outdated_node_never_gets_the_lease(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The holder marks its peer outdated before committing alone: the peer is refused
    the lease even once the holder's has run out (it would promote without the writes
    it missed), the mark survives a restart of the witness, and only the holder clears it."""
    from esc.witness import load_marks, save_marks

    state = tmp_path / "witness-state.json"
    t = LeaseTable(started=T0 - 10, max_duration=5.0, on_marks=lambda m: save_marks(state, m))
    assert t.request("p", "a", True, 1.0, T0)["granted"]
    # b cannot mark a outdated: it does not hold the lease
    assert t.request("p", "b", True, 1.0, T0 + 0.1, outdated="a")["outdated"] is None
    out = t.request("p", "a", True, 1.0, T0 + 0.2, outdated="b")
    assert out["granted"] and out["outdated"] == "b"
    # a dies: its lease runs out, b still never gets it
    late = t.request("p", "b", True, 1.0, T0 + 5)
    assert not late["granted"] and late["outdated"] == "b"
    # a restarted witness remembers
    t2 = LeaseTable(started=T0 - 10, max_duration=5.0, marks=load_marks(state))
    assert not t2.request("p", "b", True, 1.0, T0 + 6)["granted"]
    # a (back, caught up the peer, holding the lease) clears it; b may then hold it
    assert t2.request("p", "a", True, 1.0, T0 + 7, outdated=None)["outdated"] is None
    assert t2.request("p", "b", True, 1.0, T0 + 9)["granted"]


def test_bad_outdated_values_are_refused() -> None:
    from esc.witness import parse_outdated

    for bad in ({"outdated": 3}, {"outdated": ""}, {"outdated": "x" * 101}, {"outdated": ["a"]}):
        with pytest.raises(ValueError, match="outdated"):
            parse_outdated(bad)


def test_the_client_marks_its_peer_outdated_while_it_holds_the_lease(witness: str) -> None:
    a = LeaseClient(witness, "tok", "p", "a", duration=1.0, renew=0.05, margin=0.25)
    a.start()
    try:
        a.set_want(True)
        a.set_outdated("b")
        deadline = clock.now() + 5
        while a.view().outdated != "b":
            assert clock.now() < deadline
            time.sleep(0.01)
        assert a.view().valid(clock.now())
        a.set_outdated(None)
        while a.view().outdated is not None:
            assert clock.now() < deadline
            time.sleep(0.01)
    finally:
        a.stop()


def test_a_look_at_the_witness_says_who_holds_it_and_who_is_outdated() -> None:
    """A node that does not want the lease still looks (want=false): it learns the holder
    and the outdated mark (a node that just restarted must know before an election), and
    a look never releases someone else's lease."""
    t = LeaseTable(started=T0 - 10, max_duration=5.0)
    t.request("p", "a", True, 1.0, T0)
    t.request("p", "a", True, 1.0, T0 + 0.1, outdated="b")
    look = t.request("p", "b", False, 1.0, T0 + 0.2)
    assert look["holder"] == "a" and look["outdated"] == "b" and not look["granted"]
    assert t.request("p", "a", True, 1.0, T0 + 0.3)["granted"]  # still a's


def test_an_operator_can_force_a_node_held_outdated() -> None:
    """escadm ha force-active on a standby held outdated (its active died for good): the
    forced node asks with force, and the witness drops the mark, but only once nobody
    holds the lease (a force never steals a live active's lease)."""
    t = LeaseTable(started=T0 - 10, max_duration=5.0)
    t.request("p", "a", True, 1.0, T0, outdated=None)
    t.request("p", "a", True, 1.0, T0 + 0.1, outdated="b")
    assert not t.request("p", "b", True, 1.0, T0 + 0.2, force=True)["granted"]  # a holds it
    assert t.outdated == {"p": "b"}
    assert not t.request("p", "b", True, 1.0, T0 + 5)["granted"]  # a died; no force: no
    out = t.request("p", "b", True, 1.0, T0 + 5.1, force=True)
    assert out["granted"] and out["outdated"] is None and t.outdated == {}


def test_the_lease_book_asks_with_force_only_for_a_while() -> None:
    from esc.agent.lease import LeaseBook

    book = LeaseBook("p", "b")
    assert "force" not in book.request(True, 100.0)
    book.force(100.0, seconds=30.0)
    assert book.request(True, 110.0)["force"] is True
    assert "force" not in book.request(False, 110.0) and "force" not in book.request(True, 131.0)


def test_a_look_never_makes_the_peer_look_alive() -> None:
    """A standby only looks at the witness (every second) until its keepalived becomes
    MASTER, and decides on that very tick, before it has asked once. Seen in the lab: the
    active's keepalived was killed, the active stepped down and released the lease, and
    the standby's last look still named it holder "for 4.4 s": it refused to take over
    and the pair re-elected the old active (a 3.5 s gap). Only answers to requests sent
    while wanting the lease may count the peer as renewing."""
    from esc.agent.lease import LeaseBook

    book = LeaseBook("p", "b", duration=1.0)
    for t in (100.0, 101.0, 102.0, 103.0, 104.0):  # looks: a holds it all along
        book.on_answer(t, t + 0.01, {"granted": False, "holder": "a"})
    assert book.state.holder == "a" and book.state.holder_since is None
    book.set_want(True, 104.5)
    book.on_answer(104.0, 104.51, {"granted": False, "holder": "a"})  # sent before wanting
    assert book.state.holder_since is None
    book.on_answer(104.5, 104.52, {"granted": False, "holder": "a"})  # asked: a still holds it
    assert book.state.holder_since == 104.52
    book.on_answer(105.6, 105.61, {"granted": False, "holder": "a"})  # a renews: it is alive
    assert book.state.holder_since == 104.52
    book.set_want(False, 106.0)
    book.on_answer(106.0, 106.01, {"granted": False, "holder": "a"})
    assert book.state.holder_since is None


def test_force_must_be_a_boolean() -> None:
    from esc.witness import parse_force

    with pytest.raises(ValueError, match="force"):
        parse_force({"force": "yes"})


def test_a_forged_grant_is_not_a_lease() -> None:
    """Someone on the path answers "granted" for the witness: unsigned, signed with
    another token, or a genuine answer to an earlier request replayed: never a lease."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from esc import web
    from esc.witness import SIGNATURE_HEADER, answer_signature

    recorded: list[tuple[bytes, str]] = []

    async def fake(request: Request) -> Response:
        body = json.loads(await request.body())
        data = json.dumps({"granted": True, "holder": body["node"], "term": 9, "remaining": 1.0,
                           "outdated": None}).encode()
        mode = request.app.state.mode
        if mode == "unsigned":
            headers = {}
        elif mode == "other-token":
            headers = {SIGNATURE_HEADER: answer_signature("not-the-token", body["nonce"], data)}
        else:  # replay: a signature made for an earlier nonce
            if not recorded:
                recorded.append((data, answer_signature("tok", "0" * 32, data)))
            data, sig = recorded[0]
            headers = {SIGNATURE_HEADER: sig}
        return Response(data, 200, headers=headers, media_type="application/json")

    port = _port()
    app = Starlette(routes=[Route("/v1/lease", fake, methods=["POST"])])
    srv = web.ServerThread("fake-witness", [(web.config(app), web.tcp_socket("127.0.0.1", port))]).start()
    try:
        for mode in ("unsigned", "other-token", "replay"):
            app.state.mode = mode
            c = LeaseClient(f"127.0.0.1:{port}", "tok", "p", "a", renew=0.05, timeout=1.0)
            c.start()
            try:
                c.set_want(True)
                until(lambda: "not signed by the witness" in c.view().error)  # noqa: B023
                assert not c.view().valid(clock.now()), mode
            finally:
                c.stop(release=False)
    finally:
        srv.shutdown()


def test_each_node_has_its_own_token() -> None:
    """With per-node tokens (what `escadm witness token` prints), a node's token asks for
    leases in its own name only: someone who learns one node's token cannot take the
    lease, or mark the other node outdated, in the other's name."""
    from esc.witness import parse_tokens

    tokens = parse_tokens("a token-of-a\nb token-of-b\n")
    assert tokens == {"a": "token-of-a", "b": "token-of-b"}
    port = _port()
    srv = serve("127.0.0.1", port, tokens, table())
    try:
        url = f"http://127.0.0.1:{port}/v1/lease"

        def ask(token: str, node: str) -> httpx.Response:
            return post(url, token, {"pair": "p", "node": node, "want": True})

        assert ask("token-of-a", "a").status_code == 200
        r = ask("token-of-a", "b")  # a's token, in b's name: the MAC is checked with b's
        assert r.status_code == 401
        assert ask("token-of-b", "b").json()["holder"] == "a"  # refused: a holds it
        assert ask("token-of-c", "a").status_code == 401
        path, headers = signed_leases_path("token-of-b", "b")
        assert httpx.get(f"http://127.0.0.1:{port}{path}", headers=headers).status_code == 200
        path, headers = signed_leases_path("token-of-a", "b")
        assert httpx.get(f"http://127.0.0.1:{port}{path}", headers=headers).status_code == 401
    finally:
        srv.shutdown()
    assert parse_tokens("only-one-token\n") == {None: "only-one-token"}  # one for every node
    for bad in ("", "a x\na y\n", "a x y\n", "a\nb\n"):
        with pytest.raises(ValueError):
            parse_tokens(bad)
