"""The agent's peer API (HTTP on the HA address): the token check."""

from __future__ import annotations

import socket

import httpx

from esc.agent.api import serve_peer
from esc.agent.peer import TOKEN_HEADER


class _Api:
    def status(self) -> dict:
        return {"role": "STANDBY"}

    def peer_state(self, caller: str) -> dict:
        return {"role": "STANDBY", "caller": caller}

    def command(self, name: str, body: dict) -> tuple[int, dict]:
        return 404, {"error": name}


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
