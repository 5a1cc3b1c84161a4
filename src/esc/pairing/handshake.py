"""One pairing exchange, with no I/O: SPAKE2 (symmetric, python-spake2) keyed by the
pairing credential and bound to the pair (its two node addresses), then key
confirmation, then AES-GCM boxes for what the nodes tell each other.

Someone who records the exchange learns nothing to test password guesses against; a
fake peer gets one guess per exchange (which the server rate-limits) and learns only
whether that guess was right.

    client                                  server
    start: msg_c ------------------------>  finish SPAKE2, confirm_s
           <------------------------------  msg_s, confirm_s
    check confirm_s (else: wrong credential)
    finish: confirm_c, box_c(own state) --> check confirm_c
           <------------------------------  box_s(decision, material)

And :func:`decide`: which material the pair keeps when the two sides meet.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
from enum import StrEnum

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from spake2 import SPAKE2_Symmetric


def identity(nodes: list[str]) -> bytes:
    """What the exchange is bound to: a credential run for one pair is useless for another."""
    return ("esc-pair " + " ".join(sorted(nodes))).encode()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unb64(text: object) -> bytes:
    if not isinstance(text, str):
        raise ValueError("expected base64 text")
    try:
        return base64.b64decode(text, validate=True)
    except ValueError:
        raise ValueError("bad base64") from None


class Handshake:
    """One side. ``password``: the stretched credential (esc.pairing.credentials)."""

    def __init__(self, password: str, nodes: list[str]) -> None:
        self._spake = SPAKE2_Symmetric(bytes.fromhex(password), idSymmetric=identity(nodes))
        self.message = self._spake.start()
        self._key: bytes | None = None
        self._transcript = b""

    def finish(self, their_message: bytes) -> None:
        try:
            self._key = self._spake.finish(their_message)
        except Exception as e:  # python-spake2 raises its own classes on a bad message
            raise ValueError(f"bad SPAKE2 message: {e.__class__.__name__}") from None
        first, second = sorted((self.message, their_message))
        self._transcript = hashlib.sha256(first + second).digest()

    def _sub(self, label: str) -> bytes:
        assert self._key is not None, "finish() first"
        return hmac.new(self._key, label.encode() + self._transcript, "sha256").digest()

    def confirmation(self, role: str) -> bytes:
        """``role`` "server" or "client": proof of the key (and so of the credential)."""
        return self._sub(f"confirm {role}")

    def confirms(self, role: str, tag: bytes) -> bool:
        return hmac.compare_digest(self.confirmation(role), tag)

    def seal(self, role: str, payload: dict) -> str:
        nonce = os.urandom(12)
        sealed = AESGCM(self._sub("box")).encrypt(nonce, json.dumps(payload).encode(), role.encode())
        return b64(nonce + sealed)

    def open(self, role: str, box: object) -> dict:
        data = unb64(box)
        try:
            plain = AESGCM(self._sub("box")).decrypt(data[:12], data[12:], role.encode())
            payload = json.loads(plain)
        except Exception:
            raise ValueError("a box that does not open with the pairing key") from None
        if not isinstance(payload, dict):
            raise ValueError("a box that holds no object")
        return payload


class Decision(StrEnum):
    SAME = "same"  # both hold the same material
    TAKE = "take"  # the client takes the server's
    WAIT = "wait"  # the server has none to give: the client tries again later
    CONFLICT = "conflict"  # both hold material, different, and nothing says whose wins


def decide(server_id: str | None, server_serving: bool, client_id: str | None,
           client_replaces: bool) -> Decision:
    """The server's answer. A client pairs only when it is not serving (at install, or
    an agent starting unpaired), so taking the server's material never changes a
    serving node. ``client_replaces``: the operator asked this client to take the
    peer's material (``escadm ha pair``), e.g. after reinstalling a node while its peer
    was down."""
    if server_id is None:
        return Decision.WAIT
    if client_id == server_id:
        return Decision.SAME
    if client_id is None or client_replaces or server_serving:
        return Decision.TAKE
    return Decision.CONFLICT
