"""The node's side of the witness (esc.witness): asks for, renews and releases the
lease, and says until when this node may rely on it.

While the agent wants the lease (it is active, or about to promote), a thread asks
every ``renew`` seconds. A grant counts from the moment the request was *sent*,
minus ``margin``: the witness counts from when it received it, so the node's lease
always ends first, and the margin covers the time the agent needs to stop
committing alone and a small difference in clock rates.
"""

from __future__ import annotations

import hmac
import http.client
import json
import secrets
import threading
from dataclasses import dataclass, replace

from esc import clock
from esc.witness import SIGNATURE_HEADER, answer_signature, signed


@dataclass(frozen=True)
class LeaseView:
    valid_until: float = 0.0  # esc.clock: we hold the lease until then
    holder: str | None = None  # who holds it, by the witness's last answer (None: nobody, or unknown)
    answered_at: float | None = None  # esc.clock, the witness's last answer
    error: str = ""
    holder_since: float | None = None  # esc.clock: the witness has named this holder since then
    outdated: str | None = None  # the node the witness holds outdated, by its last answer

    def valid(self, now: float) -> bool:
        return now < self.valid_until


class LeaseBook:
    """The node's side of the lease without the transport: what to ask, and what an answer
    means. Shared by the HTTP client below and by the simulator (esc.sim), so both run
    the same rules. Not thread-safe by itself: the client holds its lock around it."""

    def __init__(self, pair: str, node: str, duration: float = 1.0, margin: float = 0.25) -> None:
        self.pair, self.node, self.duration, self.margin = pair, node, duration, margin
        self.state = LeaseView()
        self.want = False
        self.outdated_wish: str | None = None  # the mark we ask for while holding the lease
        self.outdated_said = False  # ... once the agent has said anything about it
        self.force_until = -1e9  # an operator's force-active: ask the witness to clear our mark
        self.want_since = 0.0  # esc.clock: when we last started wanting the lease

    def set_want(self, want: bool, now: float) -> bool:
        """The agent's wish; True if it changed (ask at once)."""
        changed, self.want = want != self.want, want
        if changed and want:
            self.want_since = now
            if not self.state.valid(now):
                self.state = replace(self.state, holder_since=None)
        return changed

    def set_outdated(self, node: str | None) -> bool:
        """The agent's wish for the witness's outdated mark (sent with each renewal while
        we hold the lease; the witness takes it only from the holder). True if changed."""
        changed = not self.outdated_said or node != self.outdated_wish
        self.outdated_wish, self.outdated_said = node, True
        return changed

    def force(self, now: float, seconds: float = 30.0) -> None:
        """The operator forced this node active: for a while, ask the witness to drop its
        outdated mark on us (it does only while nobody holds the lease)."""
        self.force_until = now + seconds

    def request(self, want: bool, now: float | None = None) -> dict:
        body: dict = {"pair": self.pair, "node": self.node, "want": want, "duration": self.duration}
        if want and self.outdated_said:
            body["outdated"] = self.outdated_wish
        if want and now is not None and now < self.force_until:
            body["force"] = True
        return body

    def on_answer(self, sent: float, now: float, data: dict) -> tuple[bool, bool]:
        """An answer to a request sent at ``sent``: (granted, whether holding changed). A
        grant counts from the send time minus the margin: the witness counts from receipt."""
        granted = bool(data.get("granted"))
        until = sent + self.duration - self.margin if granted else 0.0
        holder = data.get("holder")
        before = self.state.valid(now)
        # "named holder for longer than a lease" counts only answers to requests sent
        # while we want it: a peer that held the lease for hours before it froze (or
        # stepped down) is named by our last look for a moment more, then its lease runs
        # out; only one still renewing after we asked is alive. (A standby decides on its
        # first tick as MASTER, before any answer to its first request.)
        asking = self.want and sent >= self.want_since
        same = bool(holder) and holder == self.state.holder and self.state.holder_since is not None
        since = (self.state.holder_since if same else (now if holder else None)) if asking else None
        marked = data.get("outdated")
        self.state = LeaseView(until, holder, now, "", since, marked if isinstance(marked, str) else None)
        return granted, granted != before

    def on_error(self, error: str) -> None:
        self.state = replace(self.state, error=error)  # what we held still counts until it runs out


class LeaseThread(threading.Thread):
    """The thread that asks a witness for the lease while the agent wants it, around a
    LeaseBook; ``_ask`` is the transport (the built-in witness's HTTP below, or etcd's:
    esc.agent.etcd_lease)."""

    def __init__(self, pair: str, node: str, duration: float = 1.0, renew: float = 0.2,
                 margin: float = 0.25, wake: threading.Event | None = None) -> None:
        super().__init__(name="witness-lease", daemon=True)
        self.renew = renew
        self.agent_wake = wake
        self.lock = threading.Lock()
        self.book = LeaseBook(pair, node, duration, margin)
        self.kick = threading.Event()
        self.stopped = threading.Event()

    def view(self) -> LeaseView:
        with self.lock:
            return self.book.state

    def set_want(self, want: bool) -> None:
        """The agent's wish, every tick; a new wish is acted on at once."""
        with self.lock:
            changed = self.book.set_want(want, clock.now())
        if changed:
            self.kick.set()

    def set_outdated(self, node: str | None) -> None:
        with self.lock:
            changed = self.book.set_outdated(node)
        if changed:
            self.kick.set()

    def force(self) -> None:
        with self.lock:
            self.book.force(clock.now())
        self.kick.set()

    def stop(self, release: bool = True) -> None:
        """Stop asking; hand the lease back first, so the peer need not wait it out."""
        self.stopped.set()
        self.kick.set()
        if release and self.view().valid(clock.now()):
            self._ask(False)

    LOOK_EVERY = 1.0  # not wanting the lease: still look at the witness this often

    def run(self) -> None:
        held, looked = False, -1e9
        while not self.stopped.is_set():
            with self.lock:
                want = self.book.want
            if want or held:
                held = self._ask(want)
            elif clock.now() - looked >= self.LOOK_EVERY:
                # who holds it, and whom it holds outdated: a node that just started
                # must know before an election (esc.roles: wins_election)
                looked = clock.now()
                held = self._ask(False)
            self.kick.wait(self.renew)
            self.kick.clear()

    def _ask(self, want: bool) -> bool:
        """One request; returns whether we hold the lease after it."""
        raise NotImplementedError

    def _answered(self, sent: float, data: dict) -> bool:
        """The witness's answer (LeaseBook's form) to a request sent at ``sent``."""
        with self.lock:
            granted, changed = self.book.on_answer(sent, clock.now(), data)
        if self.agent_wake is not None and changed:
            self.agent_wake.set()
        return granted

    def _failed(self, error: str) -> bool:
        with self.lock:
            self.book.on_error(error)
            return self.book.state.valid(clock.now())


class LeaseClient(LeaseThread):
    """The built-in witness's client (esc.witness), over HTTP."""

    def __init__(self, address: str, token: str, pair: str, node: str, duration: float = 1.0,
                 renew: float = 0.2, margin: float = 0.25, timeout: float = 0.3,
                 wake: threading.Event | None = None) -> None:
        super().__init__(pair, node, duration, renew, margin, wake)
        host, _, port = address.rpartition(":")
        self.host, self.port = host.strip("[]"), int(port)
        self.token, self.timeout = token, timeout

    def _ask(self, want: bool) -> bool:
        sent = clock.now()
        nonce = secrets.token_hex(16)
        with self.lock:
            body, headers = signed(self.token, {**self.book.request(want, sent), "nonce": nonce})
        try:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            try:
                conn.request("POST", "/v1/lease", body, headers)
                resp = conn.getresponse()
                raw = resp.read()
                signature = resp.getheader(SIGNATURE_HEADER, "")
            finally:
                conn.close()
            data = json.loads(raw or b"{}")
            if resp.status != 200:
                raise OSError(f"witness answered {resp.status}: {data.get('error', '')}")
            # an answer anyone on the path could have made is no answer: never a lease
            if not hmac.compare_digest(signature.encode("latin-1"), answer_signature(
                    self.token, nonce, raw).encode()):
                raise OSError("answer not signed by the witness (wrong token, or forged)")
        except (OSError, ValueError) as e:
            return self._failed(f"witness {self.host}:{self.port}: {e}")
        return self._answered(sent, data)
