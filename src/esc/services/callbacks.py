"""Callbacks: the result of a transaction POSTed to the URL the client gave in the
``callback`` header of its request.

Delivery is **at least once**. The row in ``callbacks`` is written in the same
database transaction that finishes the transaction, so a result is never lost; a
sender thread then locks the row (``FOR UPDATE SKIP LOCKED``), POSTs, and marks it
delivered in that same database transaction. If escmanager dies (or the node fails
over) between the POST and that commit, the new active POSTs again: a receiver must
treat a repeated ``esc-transaction-id`` as a duplicate. A failed attempt (connection
error, timeout, any non-2xx answer) is retried after 1, 2, 4 ... s, capped at 300 s,
and given up (``abandoned``) after 20 attempts (about an hour); the state of each
callback shows in ``GET /v0/transactions/{id}``. Redirects are not followed.

Where a callback may go is the operator's choice (``callbacks`` in esc.json,
``escadm callback set``): an allow-list and a deny-list of networks, the deny-list
by default holding loopback, link-local (cloud metadata), multicast and "any", so
that a client cannot make the controller POST into the node itself. A URL whose
host is an address is checked when the request comes (400); a name is resolved
and every address checked before each attempt (a refused one is abandoned at once).

The request::

    POST <callback url>
    content-type: application/json
    esc-status-code: 200                (the transaction's status_code)
    esc-status-message: tenant t1 created
    esc-transaction-id: 42
    esc-transaction-type: CREATE_TENANT

    {"transaction_id": 42, "status": "succeeded", "status_code": 200,
     "status_message": "tenant t1 created", "event_type": "CREATE_TENANT",
     "operation": "create", "resource_type": "tenant", "parent": null, "resource": "t1"}
"""

from __future__ import annotations

import ipaddress
import logging
import re
import socket
import threading
from typing import Any
from urllib.parse import urlsplit

import httpx
import psycopg

from esc.config import CallbackConfig
from esc.services.db import commit_durably, one_line
from esc.services.events import transaction_event_type
from esc.services.threads import PollingThreads

log = logging.getLogger("esc.escmanager.callbacks")

MAX_URL = 2048


def check_callback_url(url: str) -> str | None:
    """Why the URL cannot be a callback target, or None if it can."""
    if len(url) > MAX_URL:
        return f"callback URL longer than {MAX_URL} characters"
    if re.search(r"[\x00-\x20\x7f]", url):
        return "callback URL must not contain spaces or control characters"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError as e:
        return f"invalid callback URL: {e}"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "callback URL must be an http:// or https:// URL with a host"
    return None


IP = ipaddress.IPv4Address | ipaddress.IPv6Address


class CallbackPolicy:
    """The allow- and deny-lists of CallbackConfig, applied to URLs and addresses."""

    def __init__(self, cfg: CallbackConfig | None = None) -> None:
        cfg = cfg or CallbackConfig()
        self.allow = [ipaddress.ip_network(n) for n in cfg.allow]
        self.deny = [ipaddress.ip_network(n) for n in cfg.deny]

    def address_problem(self, ip: IP) -> str | None:
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
            ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
        if any(ip in n for n in self.deny if n.version == ip.version):
            return f"callback address {ip} is in the callback deny-list"
        if not any(ip in n for n in self.allow if n.version == ip.version):
            return f"callback address {ip} is not in the callback allow-list"
        return None

    def url_problem(self, url: str) -> str | None:
        """At request time: a malformed URL, or a literal address the lists refuse."""
        problem = check_callback_url(url)
        if problem:
            return problem
        host = urlsplit(url).hostname or ""
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            return None  # a name: resolved and checked before each attempt
        return self.address_problem(ip)

    def target_problem(self, url: str) -> str | None:
        """Before an attempt: every address the host resolves to must be allowed.
        None too when it does not resolve now (the attempt fails and is retried)."""
        parts = urlsplit(url)
        try:
            infos = socket.getaddrinfo(parts.hostname or "", parts.port or 80, proto=socket.IPPROTO_TCP)
        except (OSError, UnicodeError):
            return None
        for info in infos:
            problem = self.address_problem(ipaddress.ip_address(info[4][0].split("%")[0]))
            if problem:
                return f"{parts.hostname}: {problem}"
        return None


def _header_value(text: str, limit: int = 1000) -> str:
    ascii_text = text.encode("ascii", "backslashreplace").decode()
    return re.sub(r"[\x00-\x1f\x7f]", " ", ascii_text)[:limit]


def payload(tx: dict[str, Any]) -> tuple[dict[str, str], dict[str, Any]]:
    """(headers, JSON body) of the callback for a finished transaction."""
    event_type = transaction_event_type(tx["op"], tx["kind"])
    message = tx["message"] or ""
    headers = {
        "esc-status-code": str(tx["status_code"] or 0),
        "esc-status-message": _header_value(message),
        "esc-transaction-id": str(tx["id"]),
        "esc-transaction-type": event_type,
    }
    body = {
        "transaction_id": tx["id"], "status": tx["status"], "status_code": tx["status_code"],
        "status_message": message, "event_type": event_type, "operation": tx["op"],
        "resource_type": tx["kind"], "parent": tx["parent"], "resource": tx["name"],
    }
    return headers, body


CLAIM_SQL = """
SELECT c.id, c.url, c.attempts, t.id, t.op, t.kind, t.parent, t.name, t.status, t.status_code, t.message
FROM callbacks c JOIN transactions t ON t.id = c.transaction_id
WHERE c.status = 'pending' AND c.next_attempt_at <= now()
ORDER BY c.next_attempt_at, c.id
LIMIT 1
FOR UPDATE OF c SKIP LOCKED
"""


class CallbackSender(PollingThreads):
    def __init__(
        self,
        conninfo: str,
        *,
        threads: int = 1,
        poll: float = 1.0,
        timeout: float = 5.0,
        first_delay: float = 1.0,
        max_delay: float = 300.0,
        max_attempts: int = 20,
        policy: CallbackPolicy | None = None,
    ) -> None:
        self.conninfo = conninfo
        self.policy = policy or CallbackPolicy()
        self.poll, self.timeout = poll, timeout
        self.first_delay, self.max_delay, self.max_attempts = first_delay, max_delay, max_attempts
        self.local = threading.local()
        super().__init__("escmanager-callbacks", threads)

    def delay(self, attempts: int) -> float:
        """Seconds before the next try, after ``attempts`` failed ones."""
        return min(self.first_delay * 2 ** max(0, attempts - 1), self.max_delay)

    def _client(self) -> httpx.Client:
        """One HTTP client per sender thread."""
        client = getattr(self.local, "client", None)
        if client is None:
            client = httpx.Client(timeout=self.timeout, follow_redirects=False, trust_env=False)
            self.local.client = client
        return client

    def drain(self, conn: psycopg.Connection) -> float:
        while not self.stopping.is_set() and self.send_one(conn, self._client()):
            pass
        return self._next_due(conn)

    def thread_done(self) -> None:
        client = getattr(self.local, "client", None)
        if client is not None:
            client.close()

    def _next_due(self, conn: psycopg.Connection) -> float:
        row = conn.execute(
            "SELECT EXTRACT(EPOCH FROM min(next_attempt_at) - now()) FROM callbacks WHERE status = 'pending'"
        ).fetchone()
        conn.rollback()
        if not row or row[0] is None:
            return self.poll
        return max(0.01, min(float(row[0]), self.poll))

    def send_one(self, conn: psycopg.Connection, client: httpx.Client) -> bool:
        """Deliver the next due callback, if any; False when none is due."""
        row = conn.execute(CLAIM_SQL).fetchone()
        if row is None:
            conn.rollback()
            return False
        cb_id, url, attempts = row[0], row[1], row[2]
        keys = ["id", "op", "kind", "parent", "name", "status", "status_code", "message"]
        tx = dict(zip(keys, row[3:], strict=True))
        headers, body = payload(tx)
        error, status, refused = None, None, self.policy.target_problem(url)
        if refused:
            error = refused
        else:
            try:
                response = client.post(url, json=body, headers=headers)
                status = response.status_code
                if not 200 <= status < 300:
                    error = f"HTTP {status}"
            except (httpx.HTTPError, ValueError) as e:
                error = one_line(e)
        attempts += 1
        if error is None:
            conn.execute(
                "UPDATE callbacks SET status = 'delivered', attempts = %s, delivered_at = now(),"
                " last_status = %s, last_error = NULL WHERE id = %s",
                (attempts, status, cb_id),
            )
            log.info("callback of transaction %d delivered to %s", tx["id"], url)
        else:
            give_up = attempts >= self.max_attempts or refused is not None
            conn.execute(
                "UPDATE callbacks SET status = %s, attempts = %s, last_error = %s, last_status = %s,"
                " next_attempt_at = now() + make_interval(secs => %s) WHERE id = %s",
                ("abandoned" if give_up else "pending", attempts, error, status, self.delay(attempts), cb_id),
            )
            log.warning("callback of transaction %d to %s failed (attempt %d%s): %s",
                        tx["id"], url, attempts, ", giving up" if give_up else "", error)
        commit_durably(conn)
        return True
