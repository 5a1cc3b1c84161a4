"""Authorization headers already verified, shared by the pair through the database.

Checking a REST password costs ~50 ms of scrypt on purpose. A node remembers the
headers it verified in memory, but a node that has just taken over knows none, so
the first request of every client after a failover paid that again, on the critical
path of the failover. The active therefore also records each header it verified in
the ``auth_verified`` table (esc.services.schema), which replication carries to the standby; the next
active finds it there with one indexed read.

What is stored is HMAC-SHA256 under a key derived from the pair key
(``pair.json``, mode 0600, never in the database) over the stored
password hash and the header. So a copy of the database alone gives nothing to
guess passwords against, and a changed password (a new hash) voids every row at
once. Rows older than ``MAX_AGE`` are deleted when a new one is written: a client
idle that long pays one scrypt again. Any database trouble (no pool yet, the table
missing on a database made by an older version, a timeout) falls back to scrypt.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from typing import Any

import psycopg

from esc.secrets import derive

log = logging.getLogger("escmanager")

MAX_AGE = "7 days"
DB_TIMEOUT = 0.5  # seconds: past it, scrypt is faster than waiting


class VerifiedHeaders:
    def __init__(self, shared_secret: str, password_hash: str) -> None:
        self.key = derive(shared_secret, "rest-auth-cache").encode()
        self.password_hash = password_hash.encode()
        self.warned = False

    def digest(self, header: str) -> bytes:
        return hmac.new(self.key, self.password_hash + b"\n" + header.encode(), hashlib.sha256).digest()

    def known(self, pool: Any, digest: bytes) -> bool:
        """Whether either node verified this header (False on any database trouble)."""
        try:
            with pool.connection(timeout=DB_TIMEOUT) as conn:
                row = conn.execute("SELECT 1 FROM auth_verified WHERE digest = %s", (digest,)).fetchone()
            return row is not None
        except (psycopg.Error, OSError, RuntimeError) as e:  # the pool raises PoolTimeout (an Error)
            self._warn(e)
            return False

    def remember(self, pool: Any, digest: bytes) -> None:
        try:
            with pool.connection(timeout=DB_TIMEOUT) as conn:
                conn.execute("INSERT INTO auth_verified (digest) VALUES (%s) ON CONFLICT (digest) "
                             "DO UPDATE SET verified_at = now()", (digest,))
                conn.execute(f"DELETE FROM auth_verified WHERE verified_at < now() - interval '{MAX_AGE}'")
        except (psycopg.Error, OSError, RuntimeError) as e:
            self._warn(e)

    def _warn(self, e: Exception) -> None:
        if not self.warned:  # once: a missing table would say so on every new client
            self.warned = True
            log.warning("verified-header cache unavailable, using scrypt alone: %s",
                        str(e).splitlines()[0] if str(e) else type(e).__name__)
