"""Notifications to the subscribers (SOL003 5.4.20.3.1): the outbox rows of
``etsi_notifications`` POSTed to each subscription's callback URI.

A row is written in the database transaction of the state change it reports, so a
notification is never lost, and there is exactly one row per (state change,
subscription). The sender locks a row, POSTs it and marks it delivered in the same
database transaction: only a node that dies between the POST and that commit makes the
next active POST it again (with the same ``id``, by which a receiver tells a repeat).
A failed attempt is retried after 1, 2, 4 ... s (at most 300 s), for 20 attempts. Each
subscriber gets its notifications in the order they were written: a row waits while an
older one to the same subscription is pending.

Where a notification may go is decided as for the controller's callbacks
(esc.services.callbacks.CallbackPolicy: allow- and deny-lists, never the pair itself);
the subscriber's authentication is sent as the subscription says: HTTP Basic, or an
OAuth 2.0 bearer token fetched from its token endpoint (client credentials), kept until
it expires.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import httpx
import psycopg

from esc.services.callbacks import CallbackPolicy, client_error, pinned_request
from esc.services.db import commit_durably, one_line
from esc.services.threads import PollingThreads

log = logging.getLogger("esc.etsi.notify")

API_VERSION = "1.1.1"

CLAIM_SQL = """
SELECT n.id, n.notification_id, n.body, n.attempts, s.callback_uri, s.auth
FROM etsi_notifications n JOIN etsi_subscriptions s ON s.id = n.subscription_id
WHERE n.status = 'pending' AND n.next_attempt_at <= now()
  AND NOT EXISTS (SELECT 1 FROM etsi_notifications e WHERE e.subscription_id = n.subscription_id
                  AND e.status = 'pending' AND e.id < n.id)
ORDER BY n.next_attempt_at, n.id
LIMIT 1
FOR UPDATE OF n SKIP LOCKED
"""


class Tokens:
    """OAuth 2.0 client-credentials tokens of the subscribers' token endpoints, by
    (endpoint, client): fetched when needed, kept until shortly before they expire."""

    def __init__(self, policy: CallbackPolicy) -> None:
        self.policy = policy
        self.lock = threading.Lock()
        self.tokens: dict[tuple[str, str], tuple[str, float]] = {}

    def get(self, client: httpx.Client, params: Mapping[str, Any]) -> str:
        key = (params["tokenEndpoint"], params["clientId"])
        with self.lock:
            token, until = self.tokens.get(key, ("", 0.0))
        if token and time.monotonic() < until:
            return token
        url = params["tokenEndpoint"]
        ip, refused = self.policy.resolve(url)
        if refused or ip is None:
            raise httpx.ConnectError(refused or f"{urlsplit(url).hostname} does not resolve")
        target, host, extensions = pinned_request(url, ip)
        r = client.post(target, data={"grant_type": "client_credentials"}, headers=host,
                        auth=(params["clientId"], params["clientPassword"]), extensions=extensions)
        if r.status_code != 200:
            raise httpx.HTTPError(f"token endpoint answered HTTP {r.status_code}")
        data = r.json()
        token = str(data["access_token"])
        ttl = float(data.get("expires_in") or 300)
        with self.lock:
            self.tokens[key] = (token, time.monotonic() + max(1.0, ttl - 10))
        return token

    def forget(self, params: Mapping[str, Any]) -> None:
        with self.lock:
            self.tokens.pop((params["tokenEndpoint"], params["clientId"]), None)


def auth_headers(auth: Mapping[str, Any] | None, client: httpx.Client, tokens: Tokens) -> dict[str, str]:
    """The Authorization a subscriber asked for (none when it asked for none)."""
    if not auth:
        return {}
    kinds = auth.get("authType") or []
    if "OAUTH2_CLIENT_CREDENTIALS" in kinds and auth.get("paramsOauth2ClientCredentials"):
        return {"Authorization": f"Bearer {tokens.get(client, auth['paramsOauth2ClientCredentials'])}"}
    if "BASIC" in kinds and auth.get("paramsBasic"):
        p = auth["paramsBasic"]
        return {"Authorization": httpx.BasicAuth(p["userName"], p["password"])._auth_header}
    return {}


def send(client: httpx.Client, policy: CallbackPolicy, tokens: Tokens, url: str,
         auth: Mapping[str, Any] | None, method: str = "POST", body: Any = None
         ) -> tuple[int | None, str | None]:
    """One request to a subscriber: (HTTP status or None, error or None)."""
    ip, refused = policy.resolve(url)
    if refused is not None:
        return None, refused
    try:
        if ip is None:
            raise httpx.ConnectError(f"{urlsplit(url).hostname} does not resolve")
        target, host, extensions = pinned_request(url, ip)
        headers = {**host, "Version": API_VERSION, "Accept": "application/json",
                   **auth_headers(auth, client, tokens)}
        r = client.request(method, target, json=body, headers=headers, extensions=extensions)
        if r.status_code == 401 and auth and auth.get("paramsOauth2ClientCredentials"):
            tokens.forget(auth["paramsOauth2ClientCredentials"])  # expired early: a new one next time
        return r.status_code, None
    except (httpx.HTTPError, ValueError, KeyError) as e:
        return None, one_line(e)


class NotificationSender(PollingThreads):
    def __init__(self, conninfo: str, policy: CallbackPolicy, *, threads: int = 2, poll: float = 1.0,
                 timeout: float = 5.0, first_delay: float = 1.0, max_delay: float = 300.0,
                 max_attempts: int = 20) -> None:
        self.conninfo, self.policy = conninfo, policy
        self.poll, self.timeout = poll, timeout
        self.first_delay, self.max_delay, self.max_attempts = first_delay, max_delay, max_attempts
        self.tokens = Tokens(policy)
        self.local = threading.local()
        super().__init__("escetsi-notify", threads)

    def delay(self, attempts: int) -> float:
        return min(self.first_delay * 2 ** max(0, attempts - 1), self.max_delay)

    def _client(self) -> httpx.Client:
        client = getattr(self.local, "client", None)
        if client is None:
            client = httpx.Client(timeout=self.timeout, follow_redirects=False, trust_env=False)
            self.local.client = client
        return client

    def thread_done(self) -> None:
        client = getattr(self.local, "client", None)
        if client is not None:
            client.close()

    def drain(self, conn: psycopg.Connection) -> float:
        while not self.stopping.is_set() and self.send_one(conn):
            pass
        row = conn.execute("SELECT EXTRACT(EPOCH FROM min(next_attempt_at) - now()) FROM etsi_notifications"
                           " WHERE status = 'pending'").fetchone()
        conn.rollback()
        if not row or row[0] is None:
            return self.poll
        return max(0.01, min(float(row[0]), self.poll))

    def send_one(self, conn: psycopg.Connection) -> bool:
        row = conn.execute(CLAIM_SQL).fetchone()
        if row is None:
            conn.rollback()
            return False
        row_id, notification_id, body, attempts, url, auth = row
        status, error = send(self._client(), self.policy, self.tokens, url, auth, "POST", body)
        if error is None and status is not None and not 200 <= status < 300:
            error = f"HTTP {status}"
        attempts += 1
        if error is None:
            conn.execute("UPDATE etsi_notifications SET status = 'delivered', attempts = %s,"
                         " delivered_at = now(), last_status = %s, last_error = NULL WHERE id = %s",
                         (attempts, status, row_id))
            log.info("notification %s (%s) delivered to %s", notification_id, body.get("notificationType"),
                     url)
        else:
            give_up = attempts >= self.max_attempts or (status is None and "callback address" in error)
            conn.execute("UPDATE etsi_notifications SET status = %s, attempts = %s, last_error = %s,"
                         " last_status = %s, next_attempt_at = now() + make_interval(secs => %s)"
                         " WHERE id = %s",
                         ("abandoned" if give_up else "pending", attempts, client_error(error), status,
                          self.delay(attempts), row_id))
            log.warning("notification %s to %s failed (attempt %d%s): %s", notification_id, url, attempts,
                        ", giving up" if give_up else "", error)
        commit_durably(conn)
        return True
