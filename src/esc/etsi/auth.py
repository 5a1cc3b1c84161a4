"""Who may use the ETSI service (SOL013 clause 8): HTTP Basic with the ETSI user, or an
OAuth 2.0 access token from the token endpoint (client credentials grant, the client
being the ETSI user).

The ETSI user and its password are the pair's, alike on both nodes and across failovers
and key renewals: the password is derived from the pair's kept key (the one the witness
tokens come from, esc.pairing.material), generated at install, never typed. ``escadm
etsi show`` prints them. A standalone node keeps its own key in secrets.json.

Access tokens carry their expiry and an HMAC from the same key: either node checks them
with no database and no shared memory, so a token stays good after a failover.

The ETSI process runs as the unprivileged service user and never reads the pair's
material: the agent hands it ``etsi-auth.json`` (the user, the password's scrypt hash,
the token key) in its own directory (esc.privileges).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from pathlib import Path

from esc.config import NodePaths, User, load_secrets, write_json_atomic
from esc.secrets import derive, generate, hash_password

ETSI_USER = "etsi"
TOKEN_PATH = "/oauth2/token"


@dataclass(frozen=True)
class EtsiAuth:
    user: User
    token_key: str


def kept_key(paths: NodePaths) -> str:
    """The pair's kept key, or this standalone node's own (made once, in secrets.json)."""
    from esc.pairing.material import load

    material = load(paths)
    if material is not None:
        return material.witness_key
    secrets = load_secrets(paths)
    key = secrets.get("etsi_key")
    if not key:
        key = hashlib.sha256(generate().encode() + generate().encode()).hexdigest()
        write_json_atomic(paths.secrets, {**secrets, "etsi_key": key}, mode=0o600)
    return key


def password(paths: NodePaths) -> str:
    return derive(kept_key(paths), "etsi password")[:32]


def auth_file(paths: NodePaths) -> Path:
    return paths.manager_dir / "etsi-auth.json"


def make_auth(paths: NodePaths) -> EtsiAuth:
    key = kept_key(paths)
    return EtsiAuth(User(name=ETSI_USER, password_hash=hash_password(derive(key, "etsi password")[:32])),
                    derive(key, "etsi oauth2 tokens"))


def auth_data(auth: EtsiAuth) -> bytes:
    return json.dumps({"user": auth.user.name, "password_hash": auth.user.password_hash,
                       "token_key": auth.token_key}).encode()


def load_auth(paths: NodePaths) -> EtsiAuth:
    """What the ETSI process checks credentials against: the file the agent made, else
    (run as root, by hand or in tests) computed."""
    try:
        data = json.loads(auth_file(paths).read_text())
        return EtsiAuth(User(name=data["user"], password_hash=data["password_hash"]), data["token_key"])
    except (OSError, ValueError, KeyError, TypeError):
        return make_auth(paths)


# --- access tokens --------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def issue_token(key: str, client: str, ttl: int, now: float | None = None) -> str:
    now = time.time() if now is None else now
    claims = _b64(json.dumps({"sub": client, "exp": int(now + ttl)}, separators=(",", ":")).encode())
    mac = hmac.new(key.encode(), claims.encode(), hashlib.sha256).digest()
    return f"{claims}.{_b64(mac)}"


def check_token(key: str, token: str, now: float | None = None) -> str | None:
    """The client a valid, unexpired token was issued to; None otherwise."""
    claims, sep, mac = token.partition(".")
    if not sep or len(token) > 512:
        return None
    want = _b64(hmac.new(key.encode(), claims.encode(), hashlib.sha256).digest())
    if not hmac.compare_digest(want, mac):
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(claims + "=" * (-len(claims) % 4)))
        exp, sub = int(data["exp"]), str(data["sub"])
    except (ValueError, KeyError, TypeError, binascii.Error):
        return None
    return sub if (time.time() if now is None else now) < exp else None
