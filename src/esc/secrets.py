"""Password hashing and generated secrets. Nothing here logs or prints a secret."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

# scheme name -> scrypt's cost. New hashes: N=2^15, r=8 (32 MiB, ~0.1 s here); "scrypt"
# (N=2^14) is what earlier installs stored, still verified.
_SCHEMES = {"scrypt": {"n": 2**14, "r": 8, "p": 1}, "scrypt15": {"n": 2**15, "r": 8, "p": 1}}
_NEW_SCHEME = "scrypt15"
_MAXMEM = 2**26  # above 128 * r * N, which OpenSSL's default (32 MiB) is not


def hash_password(password: str, salt: bytes | None = None) -> str:
    """``scrypt15$<salt b64>$<hash b64>``; slow on purpose, verified in constant time."""
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, dklen=32, maxmem=_MAXMEM,
                            **_SCHEMES[_NEW_SCHEME])
    return f"{_NEW_SCHEME}$" + base64.b64encode(salt).decode() + "$" + base64.b64encode(digest).decode()


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, salt_b64, digest_b64 = stored.split("$")
    except ValueError:
        return False
    cost = _SCHEMES.get(scheme)
    if cost is None:
        return False
    try:
        salt, want = base64.b64decode(salt_b64, validate=True), base64.b64decode(digest_b64, validate=True)
    except ValueError:  # binascii.Error is a ValueError: a corrupt hash verifies nothing
        return False
    digest = hashlib.scrypt(password.encode(), salt=salt, dklen=32, maxmem=_MAXMEM, **cost)
    return hmac.compare_digest(digest, want)


def derive(shared: str, purpose: str) -> str:
    """A secret both nodes can compute from the pair's shared secret, one per purpose."""
    return hmac.new(shared.encode(), purpose.encode(), hashlib.sha256).hexdigest()


def generate() -> str:
    """URL-safe, and never starting with "-" (which a command line would take for an option)."""
    token = secrets.token_urlsafe(24)
    return ("x" + token[1:]) if token.startswith("-") else token


def split_user_pass(text: str, option: str) -> tuple[str, str]:
    user, sep, password = text.partition(":")
    if not sep or not user or not password:
        from esc.config import ConfigError

        raise ConfigError(f"{option}: expected USER:PASSWORD")
    return user, password
