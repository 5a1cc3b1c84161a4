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
that a client cannot make the controller POST into the node itself; the pair's own
addresses (nodes, VIP, anycast) are refused whatever the lists say. A URL whose host
is an address is checked when the request comes (400); a name is resolved and every
address checked before each attempt (a refused one is abandoned at once), and the
attempt connects to the address checked (Host and SNI keep the name). A client sees
the receiver's HTTP status or "could not deliver" in ``last_error``; the detail is in
the log.

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

from esc.config import CallbackConfig, NodeConfig
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


def pair_addresses(cfg: NodeConfig) -> list[str]:
    """Every address of the pair itself: the nodes' (each network), the VIP, the anycast
    address, the BGP session's. A callback there would be the controller POSTing into
    its own pair (its health, peer or database ports): never allowed, whatever the lists."""
    out = list(cfg.ipaddr)
    if cfg.ha:
        out += [*cfg.ha.node_list, cfg.ha.vip.address, *(a for p in cfg.ha.heartbeat for a in p)]
    if cfg.bgp:
        out += [cfg.bgp.anycast_ip, cfg.bgp.local_ip]
    return out


def ha_networks(cfg: NodeConfig, local: list[tuple[str, str, int]]) -> list[str]:
    """The networks of this node's HA addresses (``--ha_node_list``, ``--ha_heartbeat_list``)
    that carry no VIP, from ``local`` (esc.ha.vip.addresses()): networks only the pair
    uses. Callbacks go nowhere there unless the allow-list names them. (A network with
    the VIP is the northbound too: clients are there, so it is not refused whole.)"""
    if cfg.ha is None:
        return []
    own = {cfg.ha.self_address, *(pair[cfg.ha.self_index] for pair in cfg.ha.heartbeat)}
    vip = ipaddress.ip_address(cfg.ha.vip.address)
    out = []
    for _, address, prefixlen in local:
        if address in own:
            net = ipaddress.ip_network(f"{address}/{prefixlen}", strict=False)
            if vip not in net and str(net) not in out:
                out.append(str(net))
    return out


class CallbackPolicy:
    """The allow- and deny-lists of CallbackConfig, applied to URLs and addresses; the
    pair's own addresses (``pair``), always refused; the pair's own networks (``ha``,
    ha_networks), refused unless the allow-list names them (a network narrower than
    "everything")."""

    def __init__(self, cfg: CallbackConfig | None = None, pair: list[str] | None = None,
                 ha: list[str] | None = None) -> None:
        cfg = cfg or CallbackConfig()
        self.allow = [ipaddress.ip_network(n) for n in cfg.allow]
        self.deny = [ipaddress.ip_network(n) for n in cfg.deny]
        self.pair = {ipaddress.ip_address(a) for a in pair or []}
        self.ha = [ipaddress.ip_network(n) for n in ha or []]

    def address_problem(self, ip: IP) -> str | None:
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
            ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
        if ip in self.pair:
            return f"callback address {ip} is an address of this pair"
        for net in self.ha:
            if net.version == ip.version and ip in net and not any(
                    ip in n and n.prefixlen > 0 for n in self.allow if n.version == ip.version):
                return (f"callback address {ip} is on the pair's HA network {net} (allow it with "
                        "`escadm callback set --allow`)")
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

    def resolve(self, url: str) -> tuple[IP | None, str | None]:
        """Before an attempt: (the address to connect to, None), or (None, why not).
        Every address the host resolves to must be allowed, and the attempt goes to the
        first of them, the one checked: a name resolved again when connecting could
        point elsewhere by then (DNS rebinding). (None, None) when it does not resolve
        now (the attempt fails and is retried)."""
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            infos = socket.getaddrinfo(parts.hostname or "", port, proto=socket.IPPROTO_TCP)
        except (OSError, UnicodeError):
            return None, None
        addresses = [ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos]
        for ip in addresses:
            problem = self.address_problem(ip)
            if problem:
                return None, f"{parts.hostname}: {problem}"
        return (addresses[0] if addresses else None), None


def pinned_request(url: str, ip: IP) -> tuple[str, dict[str, str], dict[str, Any]]:
    """(the URL with the host replaced by ``ip``, the Host header, httpx extensions): the
    connection goes to the address that was checked, while the server still sees its
    name (Host) and TLS still checks the certificate against it (SNI)."""
    parts = urlsplit(url)
    host = f"[{ip}]" if ip.version == 6 else str(ip)
    netloc = host + (f":{parts.port}" if parts.port else "")
    pinned = parts._replace(netloc=netloc).geturl()
    name = parts.hostname or ""
    shown = (f"[{name}]" if ":" in name else name) + (f":{parts.port}" if parts.port else "")
    extensions = {"sni_hostname": name} if parts.scheme == "https" else {}
    return pinned, {"host": shown}, extensions


def client_error(error: str) -> str:
    """What a client is told of a failed attempt: the receiver's HTTP status, or a
    class; the detail (refused or timed out, and by which address) is in the log only,
    so that last_error does not tell open ports from closed ones."""
    if error.startswith("HTTP ") or "callback address" in error:
        return error
    return "could not deliver (no answer from the receiver)"


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
        ip, refused = self.policy.resolve(url)
        error, status = refused, None
        if refused is None:
            try:
                if ip is None:
                    raise httpx.ConnectError(f"{urlsplit(url).hostname} does not resolve")
                target, host, extensions = pinned_request(url, ip)
                response = client.post(target, json=body, headers={**headers, **host},
                                        extensions=extensions)
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
                ("abandoned" if give_up else "pending", attempts, client_error(error), status,
                 self.delay(attempts), cb_id),
            )
            log.warning("callback of transaction %d to %s failed (attempt %d%s): %s",
                        tx["id"], url, attempts, ", giving up" if give_up else "", error)
        commit_durably(conn)
        return True
