"""Heartbeat with the peer agent: a poller thread and the view it keeps.

Every ``heartbeat_interval`` the poller asks the peer's agent for its state. There is
one poller per network the nodes share (``HaConfig.paths``: VRRP's first, then each
``--ha_heartbeat_list`` network); :func:`merge` makes one view of them: the peer is
alive while it answers on any.
The answer carries ``complete_for_you``: the active's word that this node is
its synchronous standby and has every acknowledged write. The time such an
answer *arrived* (CLOCK_BOOTTIME) is what the standby's promote window counts from.
"""

from __future__ import annotations

import http.client
import json
import ssl
import threading
from dataclasses import dataclass

from esc import clock
from esc.roles import Db, DbView, PeerView, Role, Vrrp

TOKEN_HEADER = "X-ESC-Peer-Token"


@dataclass
class PeerSnapshot:
    view: PeerView | None = None
    received_at: float | None = None  # esc.clock, last successful answer
    ever_seen: bool = False
    last_confirm_recv: float | None = None
    last_error: str = ""
    raw: dict | None = None


def view_from_json(data: dict) -> PeerView:
    db = data.get("db", {})
    try:
        vrrp = Vrrp(data.get("vrrp", Vrrp.UNKNOWN))
    except ValueError:  # a newer peer's state we do not know: not MASTER as far as we can tell
        vrrp = Vrrp.UNKNOWN
    return PeerView(
        role=Role(data["role"]),
        index=int(data["index"]),
        db=DbView(state=Db(db.get("state", "stopped")), timeline=int(db.get("timeline", 0)),
                  lsn=int(db.get("lsn", 0)), system_id=str(db.get("system_id", "")),
                  checkpoint_lsn=int(db.get("checkpoint", 0)), redo_lsn=int(db.get("redo", 0))),
        vrrp=vrrp,
    )


@dataclass(frozen=True)
class Merged:
    """The peer as every network together shows it."""

    view: PeerView | None  # the freshest answer, if fresh enough; None: lost on every path
    raw: dict | None  # that answer as received
    ever_seen: bool
    last_confirm_recv: float | None  # confirmations count from any path
    on_first_path: bool  # a fresh answer on VRRP's (and replication's) network
    fresh: list[bool]  # per path
    elsewhere: bool = False  # another network answers while VRRP's has fallen behind


# what a TLS handshake with a peer holding other pair material fails with, on either side
_OTHER_MATERIAL = ("CERTIFICATE_VERIFY_FAILED", "UNKNOWN_CA", "BAD_CERTIFICATE", "CERTIFICATE_REQUIRED")


def describe(e: BaseException) -> str:
    """A poll's failure for ``escadm status``; a certificate refused either way says what
    it most likely means, and the way out."""
    text = str(e) or type(e).__name__
    if isinstance(e, ssl.SSLError) and any(k in text for k in _OTHER_MATERIAL):
        return (f"the peer holds other pair material ({text[:160]}): `escadm ha pair --take-peers` "
                "on the node that should take the other's")
    return text


def merge(snaps: list[PeerSnapshot], now: float, fresh_for: float, lead: float = 0.2) -> Merged:
    """One view of the peer from the pollers of every path (the first is VRRP's).
    ``elsewhere``: some other path answered ``lead`` later than VRRP's did: the peer is
    alive and VRRP's network is cut. A dead peer falls silent on every path at once, so
    its last answers, still fresh for a moment, never count as alive elsewhere."""
    fresh = [s.received_at is not None and now - s.received_at <= fresh_for for s in snaps]
    first_at = snaps[0].received_at if snaps and snaps[0].received_at is not None else float("-inf")
    elsewhere = any(f and s.received_at is not None and s.received_at - first_at > lead
                    for s, f in zip(snaps[1:], fresh[1:], strict=True))
    live = [s for s, f in zip(snaps, fresh, strict=True) if f and s.view is not None]
    best = max(live, key=lambda s: s.received_at or 0.0, default=None)
    confirms = [s.last_confirm_recv for s in snaps if s.last_confirm_recv is not None]
    return Merged(view=best.view if best else None, raw=best.raw if best else None,
                  ever_seen=any(s.ever_seen for s in snaps),
                  last_confirm_recv=max(confirms, default=None),
                  on_first_path=bool(fresh) and fresh[0], fresh=fresh, elsewhere=elsewhere)


class PeerPoller(threading.Thread):
    def __init__(self, host: str, port: int, token: str, self_name: str,
                 interval: float, timeout: float, wake: threading.Event,
                 tls: ssl.SSLContext | None = None) -> None:
        super().__init__(name=f"peer-poller-{host}", daemon=True)
        self.host, self.port, self.token, self.self_name = host, port, token, self_name
        self.tls = tls  # esc.tls.peer_client_context; None only in tests
        self.interval, self.timeout, self.wake = interval, timeout, wake
        self.lock = threading.Lock()
        self.snap = PeerSnapshot()
        self.stopped = threading.Event()
        self.conn: http.client.HTTPConnection | None = None

    def use(self, tls: ssl.SSLContext | None, token: str) -> None:
        """New TLS context and token (the pair renewed its material): the next request
        sends the token; the next connection uses the context."""
        self.tls, self.token = tls, token

    def snapshot(self) -> PeerSnapshot:
        with self.lock:
            return PeerSnapshot(**self.snap.__dict__)

    def stop(self) -> None:
        self.stopped.set()

    def _connection(self) -> http.client.HTTPConnection:
        if self.tls is None:
            return http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        return http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout,
                                           context=self.tls)

    def ask_now(self) -> dict | None:
        """One fresh answer from the peer (own connection, for the API threads), or None."""
        return self.fetch("/v1/peer")

    def fetch(self, path: str, query: dict[str, str] | None = None) -> dict | None:
        """One GET of ``path`` on the peer's API (own connection, off the heartbeat), or None."""
        import urllib.parse

        conn = self._connection()
        try:
            conn.request("GET", f"{path}?{urllib.parse.urlencode(query)}" if query else path,
                         headers={TOKEN_HEADER: self.token, "X-ESC-From": self.self_name})
            resp = conn.getresponse()
            return json.loads(resp.read()) if resp.status == 200 else None
        except (OSError, http.client.HTTPException, ValueError):
            return None
        finally:
            conn.close()

    def _get(self) -> dict:
        if self.conn is None:
            self.conn = self._connection()
        self.conn.request("GET", "/v1/peer", headers={TOKEN_HEADER: self.token,
                                                       "X-ESC-From": self.self_name})
        resp = self.conn.getresponse()
        body = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"peer answered {resp.status}: {body[:200]!r}")
        return json.loads(body)

    def run(self) -> None:
        while not self.stopped.is_set():
            started = clock.now()
            try:
                data = self._get()
                view = view_from_json(data)
                now = clock.now()
                if now - started > self.timeout:
                    # The socket timeout bounds each operation, not the whole answer; the
                    # promote window counts from receipt, so a late answer must not count.
                    raise RuntimeError(f"late answer ({now - started:.3f}s)")
                with self.lock:
                    changed = self.snap.view is None or self.snap.view.role != view.role \
                        or self.snap.view.db.state != view.db.state or self.snap.view.vrrp != view.vrrp
                    self.snap.view, self.snap.received_at, self.snap.ever_seen = view, now, True
                    self.snap.raw, self.snap.last_error = data, ""
                    if data.get("complete_for_you"):
                        self.snap.last_confirm_recv = now
                if changed:
                    self.wake.set()
            except (OSError, http.client.HTTPException, RuntimeError, ValueError,
                    KeyError) as e:
                if self.conn is not None:
                    self.conn.close()
                    self.conn = None
                # The view is kept: the agent judges its age (one lost answer is
                # not a lost peer).
                with self.lock:
                    self.snap.last_error = describe(e)
            self.stopped.wait(max(0.0, self.interval - (clock.now() - started)))
