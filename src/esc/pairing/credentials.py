"""What lets two nodes pair: a password both were installed with (``--user_pass``, or
``--ha_secret``), or a one-time join token one node issued (``escadm ha join-token``)
and the other was given (``--ha_join_token``).

Neither is ever sent, nor anything an eavesdropper could test guesses against: it is
the password of a SPAKE2 exchange (esc.pairing.handshake). What is stored (in
``secrets.json``, 0600) is scrypt of it, so the file does not hold the admin password
itself.
"""

from __future__ import annotations

import fcntl
import hashlib
import math
import re
import secrets
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from esc.config import ConfigError, NodePaths, load_secrets, write_json_atomic

_SALT = b"esc-pairing-v1"
MIN_SECRET_BITS = 128
JOIN_TOKEN_TTL_S = 3600.0
_TOKEN_RE = re.compile(r"escjoin-([0-9a-f]{8})-([A-Za-z0-9_-]{22,64})")


def stretch(credential: str) -> str:
    """The SPAKE2 password for ``credential``: scrypt (a stolen secrets.json costs a slow
    guess per candidate, as the password hash does)."""
    return hashlib.scrypt(credential.encode(), salt=_SALT, n=2**15, r=8, p=1, dklen=32,
                          maxmem=2**26).hex()


def entropy_bits(text: str) -> float:
    """An estimate, the lower of two: length times log2 of the alphabet its character
    classes span, and length times the Shannon entropy of its own characters (so that
    "aaaa..." or a repeated pattern counts for little)."""
    pool = sum(size for pattern, size in ((r"[a-z]", 26), (r"[A-Z]", 26), (r"[0-9]", 10),
                                          (r"[^a-zA-Z0-9]", 33)) if re.search(pattern, text))
    if not pool:
        return 0.0
    counts = Counter(text)
    shannon = -sum(n / len(text) * math.log2(n / len(text)) for n in counts.values())
    return len(text) * min(math.log2(pool), shannon)


def check_ha_secret(value: str) -> None:
    bits = entropy_bits(value)
    if bits < MIN_SECRET_BITS:
        raise ConfigError(f"--ha_secret is too weak ({bits:.0f} bits; at least {MIN_SECRET_BITS}): "
                          "e.g. `openssl rand -base64 32`")


@dataclass(frozen=True)
class ClientCredential:
    kind: str  # "password" or "token"
    token_id: str  # the public half of a join token ("" for a password)
    password: str  # stretched


def parse_join_token(token: str) -> tuple[str, str]:
    """(public id, secret) of ``escjoin-<id>-<secret>``; ConfigError otherwise."""
    m = _TOKEN_RE.fullmatch(token.strip())
    if not m:
        raise ConfigError("--ha_join_token: not a join token (`escadm ha join-token` on the peer "
                          "prints one: escjoin-...)")
    return m.group(1), m.group(2)


@contextmanager
def _locked(paths: NodePaths) -> Iterator[dict]:
    """secrets.json read, changed and written under a lock (escadm and the agent both
    change it)."""
    paths.etc.mkdir(parents=True, exist_ok=True)
    with open(paths.etc / ".secrets.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        data = load_secrets(paths)
        before = dict(data)
        yield data
        if data != before:
            write_json_atomic(paths.secrets, data, mode=0o600)


def store_password(paths: NodePaths, credential: str) -> None:
    with _locked(paths) as data:
        data["pairing_password"] = stretch(credential)


def store_join_token(paths: NodePaths, token: str) -> None:
    """The token this node was given, kept until it has paired with it."""
    parse_join_token(token)
    with _locked(paths) as data:
        data["join_token"] = token.strip()


def client_credential(paths: NodePaths) -> ClientCredential | None:
    """What this node pairs with: a join token it was given first, else its password."""
    data = load_secrets(paths)
    token = data.get("join_token")
    if isinstance(token, str):
        token_id, secret = parse_join_token(token)
        return ClientCredential("token", token_id, stretch(secret))
    password = data.get("pairing_password")
    if isinstance(password, str):
        return ClientCredential("password", "", password)
    return None


def forget_join_token(paths: NodePaths) -> None:
    with _locked(paths) as data:
        data.pop("join_token", None)


def issue_join_token(paths: NodePaths, ttl: float = JOIN_TOKEN_TTL_S) -> str:
    """A new one-time token for the peer; expired ones are dropped on the way."""
    token_id, secret = secrets.token_hex(4), secrets.token_urlsafe(24)
    now = time.time()
    with _locked(paths) as data:
        tokens = {k: v for k, v in dict(data.get("join_tokens") or {}).items()
                  if isinstance(v, dict) and v.get("expires", 0) > now}
        tokens[token_id] = {"password": stretch(secret), "expires": now + ttl}
        data["join_tokens"] = tokens
    return f"escjoin-{token_id}-{secret}"


def server_password(paths: NodePaths, kind: str, token_id: str) -> str | None:
    """What a pairing request of ``kind`` must prove it knows; None if this node has no
    such credential (no password stored, an unknown or expired token)."""
    data = load_secrets(paths)
    if kind == "password":
        value = data.get("pairing_password")
        return value if isinstance(value, str) else None
    if kind == "token":
        entry = (data.get("join_tokens") or {}).get(token_id)
        if isinstance(entry, dict) and entry.get("expires", 0) > time.time():
            return entry.get("password")
    return None


def use_join_token(paths: NodePaths, token_id: str) -> None:
    """A token paired once: it pairs no more."""
    with _locked(paths) as data:
        tokens = dict(data.get("join_tokens") or {})
        if tokens.pop(token_id, None) is not None:
            data["join_tokens"] = tokens
