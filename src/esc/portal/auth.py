"""Who may use the portal, and their sessions.

Users: the installer's ``--user_portal_pass`` user (in esc.json, an admin), and those
``escadm portal user add`` put in the replicated table ``portal_users`` (admin or
viewer). A viewer sees every page; an admin may also switch over and set maintenance.

A session is a random cookie; the database keeps only its sha256, with the user, the
role, a CSRF token for the forms, and when it expires (an idle limit and an absolute
one). The table is replicated, so a browser on the VIP is still logged in on the new
active after a failover, and a stolen copy of the table logs nobody in.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

import psycopg

from esc.config import User
from esc.secrets import verify_password

ROLES = ("admin", "viewer")
COOKIE = "esc_portal"
IDLE_S = 30 * 60  # a session unused this long is over
ABSOLUTE_S = 12 * 3600  # and every session after this long
SEEN_EVERY_S = 60  # how often a session's last use is written (not at every request)


@dataclass(frozen=True)
class Session:
    user: str
    role: str
    csrf: str

    @property
    def admin(self) -> bool:
        return self.role == "admin"


def digest(cookie: str) -> bytes:
    return hashlib.sha256(cookie.encode()).digest()


def check_user(conn: psycopg.Connection, installer: User | None, name: str, password: str) -> str | None:
    """The role of ``name`` if ``password`` is its password, else None. Slow (scrypt) on
    purpose, whether the user exists or not."""
    stored: tuple[str, str] | None = None
    if installer is not None and hmac.compare_digest(name.encode(), installer.name.encode()):
        stored = (installer.password_hash, "admin")
    else:
        row = conn.execute("SELECT password_hash, role FROM portal_users WHERE name = %s",
                           (name,)).fetchone()
        if row is not None:
            stored = (row[0], row[1])
    if stored is None:
        verify_password(password, _DUMMY_HASH)  # the same time as a wrong password
        return None
    return stored[1] if verify_password(password, stored[0]) else None


def open_session(conn: psycopg.Connection, user: str, role: str) -> tuple[str, Session]:
    """A new session: its cookie value and what it allows."""
    cookie, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(24)
    with conn.transaction():
        conn.execute("DELETE FROM portal_sessions WHERE expires_at < now()")
        conn.execute("INSERT INTO portal_sessions (digest, user_name, role, csrf, expires_at) "
                     "VALUES (%s, %s, %s, %s, now() + make_interval(secs => %s))",
                     (digest(cookie), user, role, csrf, ABSOLUTE_S))
    return cookie, Session(user, role, csrf)


def find_session(conn: psycopg.Connection, cookie: str | None) -> Session | None:
    """The session of this cookie, if it is still open (its last use noted now and then)."""
    if not cookie or len(cookie) > 100:
        return None
    row = conn.execute(
        "SELECT user_name, role, csrf, extract(epoch FROM now() - seen_at) FROM portal_sessions "
        "WHERE digest = %s AND expires_at > now() AND seen_at > now() - make_interval(secs => %s)",
        (digest(cookie), IDLE_S)).fetchone()
    if row is None:
        return None
    if row[3] > SEEN_EVERY_S:
        conn.execute("UPDATE portal_sessions SET seen_at = now() WHERE digest = %s", (digest(cookie),))
        conn.commit()
    return Session(row[0], row[1], row[2])


def close_session(conn: psycopg.Connection, cookie: str | None) -> None:
    if cookie:
        conn.execute("DELETE FROM portal_sessions WHERE digest = %s", (digest(cookie),))
        conn.commit()


def csrf_ok(session: Session, given: str | None) -> bool:
    return given is not None and hmac.compare_digest(session.csrf.encode(), given.encode())


# verified against when the user does not exist: a login takes as long either way
_DUMMY_HASH = "scrypt15$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
