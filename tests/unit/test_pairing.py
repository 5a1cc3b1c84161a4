"""Pairing: two nodes come to share the pair's material over the network, keyed by a
credential neither sends (SPAKE2). Real servers on loopback, real crypto."""

from __future__ import annotations

import base64
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from esc.config import NodePaths
from esc.pairing import credentials, service
from esc.pairing.handshake import Decision, Handshake, decide
from esc.pairing.material import PairMaterial

NODES = ["10.0.0.1", "10.0.0.2"]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Peer:
    def __init__(self, root: Path, material: PairMaterial | None, serving: bool = False) -> None:
        self.paths = NodePaths(root)
        self.material = material
        self.serving = serving
        self.port = _port()
        self.server = service.PairingServer(self.paths, NODES, lambda: self.material, lambda: self.serving)
        self.thread = service.serve("127.0.0.1", self.port, self.server)

    def pair(self, client: NodePaths, own: PairMaterial | None = None, replace: bool = False
             ) -> service.Outcome:
        credential = credentials.client_credential(client)
        assert credential is not None
        return service.pair_with("127.0.0.1", self.port, credential, list(reversed(NODES)), "n2", own,
                                 replace)


@pytest.fixture
def peer(tmp_path: Path) -> Iterator[Peer]:
    p = Peer(tmp_path / "server", PairMaterial.generate())
    credentials.store_password(p.paths, "admin:the-password")
    yield p
    p.thread.shutdown()


@pytest.fixture
def client(tmp_path: Path) -> NodePaths:
    return NodePaths(tmp_path / "client")


def test_the_same_password_hands_over_the_pairs_material(peer: Peer, client: NodePaths) -> None:
    credentials.store_password(client, "admin:the-password")
    outcome = peer.pair(client)
    assert outcome.decision == Decision.TAKE and outcome.material == peer.material
    assert peer.pair(client, own=outcome.material).decision == Decision.SAME


def test_a_wrong_password_gets_nothing_and_is_told_so(peer: Peer, client: NodePaths,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    credentials.store_password(client, "admin:a-guess")
    with pytest.raises(service.PairingRefused, match="wrong credential"):
        peer.pair(client)


def test_a_client_that_skips_the_proof_gets_no_material(peer: Peer) -> None:
    """A fake peer that does the exchange with a guessed password and sends any
    confirmation: the server answers 403, with no box to open."""
    base = f"http://127.0.0.1:{peer.port}/v1/pair"
    hs = Handshake(credentials.stretch("admin:a-guess"), NODES)
    start = httpx.post(f"{base}/start", json={"kind": "password", "msg": _b64(hs.message)}).json()
    hs.finish(base64.b64decode(start["msg"]))
    r = httpx.post(f"{base}/finish", json={"session": start["session"], "confirm": _b64(b"x" * 32),
                                           "box": hs.seal("client", {})})
    assert r.status_code == 403 and "box" not in r.json()
    # the session is used up: a second try with it is refused too
    r = httpx.post(f"{base}/finish", json={"session": start["session"], "confirm": "", "box": ""})
    assert r.status_code == 404


def test_a_server_that_does_not_know_the_password_is_refused(tmp_path: Path, client: NodePaths) -> None:
    """A fake peer (another password) cannot hand this node its own material."""
    fake = Peer(tmp_path / "fake", PairMaterial.generate())
    credentials.store_password(fake.paths, "admin:not-the-password")
    credentials.store_password(client, "admin:the-password")
    try:
        with pytest.raises(service.PairingRefused, match="wrong credential"):
            fake.pair(client)
    finally:
        fake.thread.shutdown()


def test_guesses_are_rate_limited(peer: Peer, client: NodePaths) -> None:
    credentials.store_password(client, "admin:a-guess")
    statuses = []
    for _ in range(peer.server.BURST + 3):
        try:
            peer.pair(client)
        except service.PairingRefused:
            statuses.append(403)
        except service.PairingError as e:
            assert "429" in str(e)
            statuses.append(429)
    assert statuses.count(403) == peer.server.BURST and statuses[-1] == 429


def test_a_join_token_pairs_once(peer: Peer, client: NodePaths) -> None:
    token = credentials.issue_join_token(peer.paths)
    credentials.store_join_token(client, token)
    assert peer.pair(client).decision == Decision.TAKE
    with pytest.raises(service.PairingRefused, match="no such join token"):
        peer.pair(client)


def test_an_expired_join_token_is_refused(peer: Peer, client: NodePaths) -> None:
    token = credentials.issue_join_token(peer.paths, ttl=-1)
    credentials.store_join_token(client, token)
    with pytest.raises(service.PairingRefused, match="no such join token"):
        peer.pair(client)


def test_a_token_of_a_node_cannot_be_used_with_another_secret(peer: Peer, client: NodePaths) -> None:
    token = credentials.issue_join_token(peer.paths)
    token_id, _ = credentials.parse_join_token(token)
    credentials.store_join_token(client, f"escjoin-{token_id}-{'A' * 32}")
    with pytest.raises(service.PairingRefused, match="wrong credential"):
        peer.pair(client)


def test_a_server_without_material_says_wait_and_conflicts_are_kept(tmp_path: Path,
                                                                    client: NodePaths) -> None:
    empty = Peer(tmp_path / "empty", None)
    credentials.store_password(empty.paths, "admin:pw")
    credentials.store_password(client, "admin:pw")
    try:
        assert empty.pair(client).decision == Decision.WAIT
        empty.material = PairMaterial.generate()
        mine = PairMaterial.generate()
        outcome = empty.pair(client, own=mine)
        assert outcome.decision == Decision.CONFLICT and outcome.material is None
        assert empty.pair(client, own=mine, replace=True).material == empty.material
        empty.serving = True
        assert empty.pair(client, own=mine).decision == Decision.TAKE
    finally:
        empty.thread.shutdown()


def test_decide() -> None:
    assert decide(None, True, None, False) == Decision.WAIT
    assert decide("a", False, "a", True) == Decision.SAME
    assert decide("a", False, None, False) == Decision.TAKE
    assert decide("a", False, "b", False) == Decision.CONFLICT
    assert decide("a", True, "b", False) == Decision.TAKE
    assert decide("a", False, "b", True) == Decision.TAKE


def test_material_from_a_peer_is_checked() -> None:
    good = PairMaterial.generate().to_dict()
    other = PairMaterial.generate().to_dict()
    bad = [None, [], {**good, "pair_key": "short"}, {**good, "pair_key": "zz" * 32},
           {**good, "created": "yesterday"}, {**good, "peer_cert": "-----BEGIN nonsense"},
           {**good, "peer_key": other["peer_key"]}, {k: v for k, v in good.items() if k != "https_key"},
           {**good, "id": "not hex"}]
    for data in bad:
        with pytest.raises(ValueError, match="pair material"):
            PairMaterial.from_dict(data)
    assert PairMaterial.from_dict(good).to_dict() == good


def test_credentials_are_stored_stretched_and_private(tmp_path: Path) -> None:
    paths = NodePaths(tmp_path)
    credentials.store_password(paths, "admin:the-password")
    token = credentials.issue_join_token(paths)
    text = paths.secrets.read_text()
    assert "the-password" not in text and token.split("-")[2] not in text
    assert paths.secrets.stat().st_mode & 0o777 == 0o600


def test_entropy_estimate() -> None:
    assert credentials.entropy_bits("a" * 64) == 0
    assert credentials.entropy_bits("s3cret") < 40
    assert credentials.entropy_bits("escjoin-0123abcd-" + "A" * 32) < 128
    import secrets as stdlib_secrets

    assert credentials.entropy_bits(stdlib_secrets.token_urlsafe(32)) >= 128


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_renewed_material_keeps_what_others_pinned() -> None:
    """A renewal changes the pair key and the peer certificate; the witness key always
    stays (the witness's token file stays right), the HTTPS key only without --https
    (the certificate clients pinned)."""
    old = PairMaterial.generate()
    new = old.rotated()
    assert new.id != old.id and new.pair_key != old.pair_key and new.peer_cert != old.peer_cert
    assert (new.https_key, new.created, new.witness_key) == (old.https_key, old.created, old.witness_key)
    assert new.witness_token("esc_10_0_0_1") == old.witness_token("esc_10_0_0_1")
    assert new.derive("replication") != old.derive("replication")
    https = old.rotated(https=True)
    assert https.https_key != old.https_key and https.witness_key == old.witness_key
    assert PairMaterial.from_dict(new.to_dict()) == new


def test_material_files_during_a_renewal(tmp_path: Path) -> None:
    from esc.pairing import material

    paths = NodePaths(tmp_path)
    paths.etc.mkdir(parents=True)
    current = PairMaterial.generate()
    import json

    paths.pair_material.write_text(json.dumps(current.to_dict()))
    staged = current.rotated()
    material.save(paths, "next", staged)
    assert [m.id for m in material.trusted(paths)] == [current.id, staged.id]
    assert (paths.etc / "pair.next.json").stat().st_mode & 0o777 == 0o600
    material.save(paths, "next", None)
    assert material.trusted(paths) == [current]
