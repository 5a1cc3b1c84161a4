"""The agent's peer API (HTTP on the HA address): the token check."""

from __future__ import annotations

import socket
import threading
import time

import httpx

from esc.agent.api import serve_peer
from esc.agent.peer import TOKEN_HEADER


class _Api:
    def status(self) -> dict:
        return {"role": "STANDBY"}

    def peer_state(self, caller: str) -> dict:
        return {"role": "STANDBY", "caller": caller}

    def command(self, name: str, body: dict) -> tuple[int, dict]:
        return 200, {"name": name, "body": body}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_wrong_token_is_refused_even_with_non_ascii_characters() -> None:
    """A header is read as latin-1, so anyone can send a token with non-ASCII characters:
    it is a wrong token (403), not an exception in the handler."""
    port = _port()
    srv = serve_peer("127.0.0.1", port, _Api(), "the-token")
    try:
        url = f"http://127.0.0.1:{port}/v1/peer"
        assert httpx.get(url, headers={TOKEN_HEADER: "the-token"}).status_code == 200
        assert httpx.get(url, headers={TOKEN_HEADER: "wrong"}).status_code == 403
        r = httpx.get(url, headers={TOKEN_HEADER: "t\u00f6ken".encode("latin-1")})
        assert r.status_code == 403 and "token" in r.json()["error"]
    finally:
        srv.shutdown()
        srv.server_close()


def test_the_peer_api_is_mutual_tls_with_the_pairs_certificate(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Only the holder of the pair's key gets an answer, and only from the holder of it:
    a client with no certificate or another pair's is refused in the handshake, and a
    client that expects another pair's certificate refuses the server."""
    import ssl

    import pytest

    from esc import tls
    from esc.agent.peer import PeerPoller
    from esc.config import NodePaths
    from esc.pairing.material import PairMaterial

    ours, theirs = NodePaths(tmp_path / "a"), NodePaths(tmp_path / "b")
    pair, other = PairMaterial.generate(), PairMaterial.generate()
    assert tls.write_peer_material(ours, pair.peer_cert.encode(), pair.peer_key.encode())
    assert not tls.write_peer_material(ours, pair.peer_cert.encode(), pair.peer_key.encode())  # already there
    assert tls.write_peer_material(theirs, other.peer_cert.encode(), other.peer_key.encode())
    assert ours.peer_key.stat().st_mode & 0o777 == 0o600
    port = _port()
    srv = serve_peer("127.0.0.1", port, _Api(), "the-token", tls.peer_server_options(ours))
    try:
        url = f"https://127.0.0.1:{port}/v1/peer"
        headers = {TOKEN_HEADER: "the-token"}
        r = httpx.get(url, headers=headers, verify=tls.peer_client_context(ours))
        assert r.status_code == 200 and r.json()["role"] == "STANDBY"
        plain = ssl.create_default_context()
        plain.check_hostname, plain.verify_mode = False, ssl.CERT_NONE
        for ctx in (plain, tls.peer_client_context(theirs)):  # no certificate; another pair's
            with pytest.raises(httpx.HTTPError):
                httpx.get(url, headers=headers, verify=ctx)
        with pytest.raises(httpx.HTTPError):  # plain HTTP gets no answer
            httpx.get(f"http://127.0.0.1:{port}/v1/peer", headers=headers, timeout=3)
        poller = PeerPoller("127.0.0.1", port, "the-token", "esc_me", 0.05, 1.0,
                            threading.Event(), tls.peer_client_context(ours))
        assert poller.ask_now() == {"role": "STANDBY", "caller": "esc_me"}
        # a node holding other material: its status says so, and the way out
        stranger = PeerPoller("127.0.0.1", port, "the-token", "esc_me", 0.05, 1.0,
                              threading.Event(), tls.peer_client_context(theirs))
        stranger.start()
        deadline = time.monotonic() + 5
        while "other pair material" not in stranger.snapshot().last_error:
            assert time.monotonic() < deadline, stranger.snapshot().last_error
            time.sleep(0.05)
        stranger.stop()
        assert "escadm ha pair --take-peers" in stranger.snapshot().last_error
    finally:
        srv.shutdown()


def test_peer_commands_check_the_body_size_and_shape() -> None:
    port = _port()
    srv = serve_peer("127.0.0.1", port, _Api(), "tok")
    url = f"http://127.0.0.1:{port}/v1/peer/command/switchover"
    headers = {"X-ESC-Peer-Token": "tok"}
    try:
        r = httpx.post(url, headers=headers, json={"a": 1, "_via_peer": False})
        assert r.status_code == 200 and r.json()["body"] == {"a": 1, "_via_peer": True}
        assert httpx.post(url, headers=headers, content=b"x" * 70_000).status_code == 413
        assert httpx.post(url, headers=headers, content=b"[1]").status_code == 400
        assert httpx.post(url, headers=headers, content=b"{").status_code == 400
        assert httpx.post(url, json={}).status_code == 403  # no token: nothing read
        assert httpx.get(f"http://127.0.0.1:{port}/nowhere", headers=headers).status_code == 404
    finally:
        srv.shutdown()


def test_the_peer_api_takes_new_trust_without_a_restart(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """While the pair renews its material, a node trusts the old and the new peer
    certificate, then only the new: the running server hands each new connection the
    context of the moment."""
    from esc import tls
    from esc.config import NodePaths
    from esc.pairing.material import PairMaterial

    old, new = PairMaterial.generate(), PairMaterial.generate()
    server, old_client, new_client = (NodePaths(tmp_path / n) for n in ("s", "o", "n"))
    for paths, m in ((server, old), (old_client, old), (new_client, new)):
        tls.write_peer_material(paths, m.peer_cert.encode(), m.peer_key.encode())
        tls.write_peer_trust(paths, [m.peer_cert.encode()])
    current = {"ctx": tls.peer_server_context(server)}
    port = _port()
    srv = serve_peer("127.0.0.1", port, _Api(), lambda: ["the-token"], tls.peer_server_options(server),
                     context=lambda: current["ctx"])
    url = f"https://127.0.0.1:{port}/v1/peer"
    headers = {TOKEN_HEADER: "the-token"}

    def answers(client: NodePaths) -> bool:
        try:
            return httpx.get(url, headers=headers, verify=tls.peer_client_context(client)).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        assert answers(old_client) and not answers(new_client)
        # both trusted (the new client trusts the old server certificate too)
        tls.write_peer_trust(server, [old.peer_cert.encode(), new.peer_cert.encode()])
        tls.write_peer_trust(new_client, [old.peer_cert.encode(), new.peer_cert.encode()])
        current["ctx"] = tls.peer_server_context(server)
        assert answers(old_client) and answers(new_client)
        # the server switches to the new certificate and trusts only it
        tls.write_peer_material(server, new.peer_cert.encode(), new.peer_key.encode())
        tls.write_peer_trust(server, [new.peer_cert.encode()])
        current["ctx"] = tls.peer_server_context(server)
        assert answers(new_client) and not answers(old_client)
    finally:
        srv.shutdown()
