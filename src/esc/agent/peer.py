"""Heartbeat with the peer agent: a poller thread and the view it keeps.

Every ``heartbeat_interval`` the poller asks the peer's agent for its state.
The answer carries ``complete_for_you``: the active's word that this node is
its synchronous standby and has every acknowledged write. The time such an
answer *arrived* (monotonic) is what the standby's promote window counts from.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from dataclasses import dataclass

from esc.roles import Db, DbView, PeerView, Role

TOKEN_HEADER = "X-ESC-Peer-Token"


@dataclass
class PeerSnapshot:
    view: PeerView | None = None
    received_at: float | None = None  # monotonic, last successful answer
    ever_seen: bool = False
    last_confirm_recv: float | None = None
    last_error: str = ""
    raw: dict | None = None


def view_from_json(data: dict) -> PeerView:
    db = data.get("db", {})
    return PeerView(
        role=Role(data["role"]),
        index=int(data["index"]),
        db=DbView(state=Db(db.get("state", "stopped")), timeline=int(db.get("timeline", 0)),
                  lsn=int(db.get("lsn", 0)), system_id=str(db.get("system_id", ""))),
    )


class PeerPoller(threading.Thread):
    def __init__(self, host: str, port: int, token: str, self_name: str,
                 interval: float, timeout: float, wake: threading.Event) -> None:
        super().__init__(name="peer-poller", daemon=True)
        self.host, self.port, self.token, self.self_name = host, port, token, self_name
        self.interval, self.timeout, self.wake = interval, timeout, wake
        self.lock = threading.Lock()
        self.snap = PeerSnapshot()
        self.stopped = threading.Event()
        self.conn: http.client.HTTPConnection | None = None

    def snapshot(self) -> PeerSnapshot:
        with self.lock:
            return PeerSnapshot(**self.snap.__dict__)

    def stop(self) -> None:
        self.stopped.set()

    def ask_now(self) -> dict | None:
        """One fresh answer from the peer (own connection, for the API threads), or None."""
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            conn.request("GET", "/v1/peer", headers={TOKEN_HEADER: self.token,
                                                      "X-ESC-From": self.self_name})
            resp = conn.getresponse()
            return json.loads(resp.read()) if resp.status == 200 else None
        except (OSError, http.client.HTTPException, ValueError):
            return None
        finally:
            conn.close()

    def _get(self) -> dict:
        if self.conn is None:
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        self.conn.request("GET", "/v1/peer", headers={TOKEN_HEADER: self.token,
                                                       "X-ESC-From": self.self_name})
        resp = self.conn.getresponse()
        body = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"peer answered {resp.status}: {body[:200]!r}")
        return json.loads(body)

    def run(self) -> None:
        while not self.stopped.is_set():
            started = time.monotonic()
            try:
                data = self._get()
                view = view_from_json(data)
                now = time.monotonic()
                if now - started > self.timeout:
                    # The socket timeout bounds each operation, not the whole answer; the
                    # promote window counts from receipt, so a late answer must not count.
                    raise RuntimeError(f"late answer ({now - started:.3f}s)")
                with self.lock:
                    changed = self.snap.view is None or self.snap.view.role != view.role \
                        or self.snap.view.db.state != view.db.state
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
                    self.snap.last_error = str(e) or type(e).__name__
            self.stopped.wait(max(0.0, self.interval - (time.monotonic() - started)))
