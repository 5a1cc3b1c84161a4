"""The witness: a tiny lease server that decides, in a partition, which node may be
active. Runs on a third host (a management box, the router): ``escadm witness run``.

Only the lease holder may promote or commit without its standby. The active renews
its lease every 0.2 s; a standby that lost the active asks for it and gets it only
once the active's lease has expired at the witness. The node counts its lease from
the moment it *sent* the request, minus a margin, so it always stops before the
witness could give the lease to the other node (monotonic clocks on both sides;
only their rates must agree, within the margin).

Protocol (HTTP, JSON). Each node has its own token, derived from the pair key and its
name; the token never travels. A request carries ``X-ESC-Witness-MAC``, an HMAC of its
body under the token of the node it names, and in the body a fresh ``nonce`` and ``sent``
(the node's wall clock): the witness takes it only with a right MAC, ``sent`` within
``--max-skew`` of its own clock, and a nonce it has not seen in that time, so a request
recorded on the path can be neither altered nor played again. The answer carries
``X-ESC-Witness-Signature``, an HMAC of the nonce and the answer under the token, which
the node checks::

    POST /v1/lease {"pair": P, "node": N, "want": true, "duration": 1.0, "nonce": X, "sent": T}
      -> {"granted": true, "holder": N, "term": 7, "remaining": 1.0}
      -> {"granted": false, "holder": "other", "term": 6, "remaining": 0.4}
    POST /v1/lease {"pair": P, "node": N, "want": false}   (release, if N holds it)
    GET  /v1/leases?node=N&sent=T&nonce=X                  (what it holds, for operators;
                                                            the MAC is of "GET " + the path)

The holder may also mark its peer *outdated* (``"outdated": "peer"`` in a renewal;
``null`` clears it): the active does so before it commits without its standby, and
the witness then never grants the lease to that node, so it can never promote
without the writes it missed. Only the holder can set or clear the mark, and every
answer says what it is (``"outdated"``). That lets an active commit alone as soon
as it has lost its standby, instead of waiting out the standby's promote window.
The marks are kept in a state file (written atomically on each change): a restarted
witness must not forget that a node is behind.

A restarted witness knows no lease: it grants none for ``--max-lease`` seconds after
it starts, so a node that held a lease before the restart cannot be overlapped.
"""

from __future__ import annotations

import argparse
import hmac
import json
import logging
import os
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from esc import clock, web

log = logging.getLogger("esc.witness")

MAC_HEADER = "X-ESC-Witness-MAC"
SIGNATURE_HEADER = "X-ESC-Witness-Signature"
MAX_SKEW = 30.0  # seconds between a node's clock and the witness's that a request may show


def request_mac(token: str, message: bytes) -> str:
    """What a node puts on a request: the HMAC of its body (of "GET " + the path for a
    GET) under its token. Only a holder of the token can make it, and it fits that body."""
    return hmac.new(token.encode(), b"esc-witness-request\n" + message, "sha256").hexdigest()


def answer_signature(token: str, nonce: str, body: bytes) -> str:
    """What the witness puts on its answer to a request carrying ``nonce``: only a holder
    of the token can make it, and it fits that one request (a recorded answer replayed
    to a later request does not), so nobody on the path can grant a lease."""
    return hmac.new(token.encode(), nonce.encode() + b"\n" + body, "sha256").hexdigest()
MAX_DURATION = 5.0  # the longest lease asked for; also the quiet time after a start


@dataclass(frozen=True)
class Lease:
    holder: str
    expires: float  # witness monotonic time
    term: int  # grows each time the lease changes hands


UNSET = object()  # a request that says nothing of the outdated mark


def signed(token: str, body: dict) -> tuple[bytes, dict[str, str]]:
    """A lease request as a node sends it: the body with a fresh nonce and the send time,
    and its headers (the MAC). Returns (body bytes, headers); the nonce is in the body."""
    raw = json.dumps({**body, "nonce": body.get("nonce") or secrets.token_hex(16),
                      "sent": round(time.time(), 3)}).encode()
    return raw, {MAC_HEADER: request_mac(token, raw), "Content-Type": "application/json"}


def signed_leases_path(token: str, node: str) -> tuple[str, dict[str, str]]:
    """GET /v1/leases as node ``node`` signs it: (path with query, headers)."""
    query = urlencode({"node": node, "sent": f"{time.time():.3f}", "nonce": secrets.token_hex(16)})
    path = f"/v1/leases?{query}"
    return path, {MAC_HEADER: request_mac(token, b"GET " + path.encode())}


class NonceCache:
    """The nonces of the requests taken in the last ``window`` seconds (witness monotonic
    clock): a request whose nonce is here is a replay. Bounded: a flood of fresh, valid
    requests (only a token holder can make one) pushes the oldest out first."""

    def __init__(self, window: float, limit: int = 100_000) -> None:
        self.window, self.limit = window, limit
        self.seen: OrderedDict[str, float] = OrderedDict()
        self.lock = threading.Lock()

    def fresh(self, nonce: str, now: float) -> bool:
        """True (and remembered) the first time ``nonce`` is seen within the window."""
        with self.lock:
            while self.seen and (next(iter(self.seen.values())) <= now or len(self.seen) >= self.limit):
                self.seen.popitem(last=False)
            if nonce in self.seen:
                return False
            self.seen[nonce] = now + self.window
            return True


class LeaseTable:
    """The leases, one per pair, and the outdated marks. Pure but for ``on_marks``
    (persistence): ``now`` is given."""

    def __init__(self, started: float, max_duration: float = MAX_DURATION,
                 marks: dict[str, str] | None = None,
                 on_marks: Callable[[dict[str, str]], None] | None = None) -> None:
        self.leases: dict[str, Lease] = {}
        self.max_duration = max_duration
        self.quiet_until = started + max_duration  # no grant until a lease from before a restart ran out
        self.outdated: dict[str, str] = dict(marks or {})
        self.on_marks = on_marks
        self.lock = threading.Lock()

    def request(self, pair: str, node: str, want: bool, duration: float, now: float,
                outdated: object = UNSET, force: bool = False) -> dict:
        with self.lock:
            if force and want and self.outdated.get(pair) == node and self._free(pair, now):
                # the operator forced this node active (escadm ha force-active): the writes
                # it lacks are given up on purpose; never while another node holds the lease
                del self.outdated[pair]
                log.warning("pair %s: %s forced by its operator: outdated mark cleared", pair, node)
                if self.on_marks is not None:
                    self.on_marks(dict(self.outdated))
            out = self._request(pair, node, want, duration, now)
            holds = out["granted"]
            if holds and outdated is not UNSET and outdated != self.outdated.get(pair):
                if outdated is None:
                    del self.outdated[pair]
                else:
                    assert isinstance(outdated, str)
                    self.outdated[pair] = outdated
                log.warning("pair %s: %s %s", pair, node,
                            f"marked {outdated} outdated" if outdated else "cleared the outdated mark")
                if self.on_marks is not None:
                    self.on_marks(dict(self.outdated))
            out["outdated"] = self.outdated.get(pair)
            return out

    def _free(self, pair: str, now: float) -> bool:
        lease = self.leases.get(pair)
        return (lease is None or now >= lease.expires) and now >= self.quiet_until

    def _request(self, pair: str, node: str, want: bool, duration: float, now: float) -> dict:
        lease = self.leases.get(pair)
        if not want:  # a release if the node holds it, else a look: who holds it
            if lease is not None and lease.holder == node and now < lease.expires:
                lease = self.leases[pair] = Lease(node, now, lease.term)
            valid = lease is not None and now < lease.expires
            return {"granted": False, "holder": lease.holder if valid and lease else None,
                    "term": lease.term if lease else 0,
                    "remaining": round(lease.expires - now, 3) if valid and lease else 0.0}
        free = lease is None or now >= lease.expires
        if lease is not None and lease.holder == node and not free:
            self.leases[pair] = Lease(node, now + duration, lease.term)  # renewal
        elif free and now >= self.quiet_until and self.outdated.get(pair) != node:
            self.leases[pair] = Lease(node, now + duration, (lease.term if lease else 0) + 1)
        else:
            holder = lease.holder if lease is not None and not free else None
            remaining = (lease.expires if lease is not None and not free else self.quiet_until) - now
            return {"granted": False, "holder": holder, "term": lease.term if lease else 0,
                    "remaining": round(max(remaining, 0.0), 3)}
        got = self.leases[pair]
        changed = lease is None or lease.term != got.term
        return {"granted": True, "holder": node, "term": got.term, "remaining": round(duration, 3),
                "new": changed}

    def snapshot(self, now: float) -> dict:
        with self.lock:
            return {p: {"holder": lease.holder if now < lease.expires else None, "term": lease.term,
                        "remaining": round(max(lease.expires - now, 0.0), 3),
                        "outdated": self.outdated.get(p)}
                    for p, lease in self.leases.items()}


def load_marks(path: Path) -> dict[str, str]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    marks = data.get("outdated") if isinstance(data, dict) else None
    if not isinstance(marks, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                              for k, v in marks.items()):
        raise ValueError(f"{path}: not a witness state file")
    return marks


def save_marks(path: Path, marks: dict[str, str]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump({"version": 1, "outdated": marks}, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def parse_force(body: dict) -> bool:
    force = body.get("force", False)
    if not isinstance(force, bool):
        raise ValueError("'force' must be true or false")
    return force


def parse_outdated(body: dict) -> object:
    """The request's word on the outdated mark: UNSET, None (clear) or a node name."""
    if "outdated" not in body:
        return UNSET
    value = body["outdated"]
    if value is not None and (not isinstance(value, str) or not value or len(value) > 100):
        raise ValueError("'outdated' must be a node name or null")
    return value


def parse_freshness(nonce: object, sent: object, now_wall: float, max_skew: float) -> str | None:
    """Why a request's nonce and send time are not acceptable, or None."""
    if not isinstance(nonce, str) or not 16 <= len(nonce) <= 128:
        return "'nonce' must be a string of 16 to 128 characters"
    if isinstance(sent, bool) or not isinstance(sent, int | float):
        return "'sent' must be the sender's clock, in seconds since the epoch"
    if abs(now_wall - sent) > max_skew:
        return (f"'sent' is {now_wall - sent:+.1f} s from the witness's clock (more than {max_skew:g} s: "
                "a replay, or clocks not kept in time)")
    return None


def parse_request(body: object, max_duration: float = MAX_DURATION) -> tuple[str, str, bool, float]:
    """(pair, node, want, duration) from a request body; ValueError with a message."""
    if not isinstance(body, dict):
        raise ValueError("the body must be a JSON object")
    pair, node, want = body.get("pair"), body.get("node"), body.get("want", True)
    if not isinstance(pair, str) or not pair or len(pair) > 200:
        raise ValueError("'pair' must be a non-empty string")
    if not isinstance(node, str) or not node or len(node) > 100:
        raise ValueError("'node' must be a non-empty string")
    if not isinstance(want, bool):
        raise ValueError("'want' must be true or false")
    duration = body.get("duration", 1.0)
    if isinstance(duration, bool) or not isinstance(duration, int | float) \
            or not 0.1 <= duration <= max_duration:
        raise ValueError(f"'duration' must be a number of seconds from 0.1 to {max_duration:g}")
    return pair, node, want, float(duration)


# node name -> its token; the key None: one token for every node (a token file of one
# line, as written before tokens were per node)
Tokens = dict[str | None, str]


def parse_tokens(text: str) -> Tokens:
    """A token file: ``NODE TOKEN`` per line (what ``escadm witness token`` prints), or
    a single ``TOKEN`` line."""
    lines = [line.split() for line in text.splitlines() if line.strip()]
    if len(lines) == 1 and len(lines[0]) == 1:
        return {None: lines[0][0]}
    tokens: Tokens = {}
    for fields in lines:
        if len(fields) != 2 or fields[0] in tokens:
            raise ValueError("token file: one 'NODE TOKEN' per line, each node once "
                             "(as `escadm witness token` prints)")
        tokens[fields[0]] = fields[1]
    if not tokens:
        raise ValueError("an empty witness token file")
    return tokens


def app(tokens: Tokens | str, table: LeaseTable, max_skew: float = MAX_SKEW,
        wall: Callable[[], float] = time.time) -> Starlette:
    known = {None: tokens} if isinstance(tokens, str) else dict(tokens)
    nonces = NonceCache(2 * max_skew)

    def token_of(node: str) -> str | None:
        return known.get(node, known.get(None))

    def authentic(request: Request, node: object, message: bytes) -> str | None:
        """The token the request is signed with (that of the node it names), or None."""
        # as bytes: compare_digest raises on a str with non-ASCII characters
        given = request.headers.get(MAC_HEADER, "").encode("latin-1")
        token = token_of(node) if isinstance(node, str) else None
        if token is None or not hmac.compare_digest(given, request_mac(token, message).encode()):
            return None
        return token

    def stale(nonce: object, sent: object) -> Response | None:
        why = parse_freshness(nonce, sent, wall(), max_skew)
        if why is None and not nonces.fresh(str(nonce), clock.now()):
            why = "this request was already taken (a replay)"
        return None if why is None else JSONResponse({"error": why}, 401)

    async def leases(request: Request) -> Response:
        q = request.query_params
        message = b"GET " + request.url.path.encode() + b"?" + request.url.query.encode()
        if authentic(request, q.get("node"), message) is None:
            return JSONResponse({"error": "missing or wrong witness MAC"}, 401)
        try:
            sent: object = float(q.get("sent", ""))
        except ValueError:
            sent = None
        return stale(q.get("nonce"), sent) or JSONResponse(table.snapshot(clock.now()))

    async def lease(request: Request) -> Response:
        try:
            raw = await web.read_body(request, limit=4096)
            body = web.parse_json_object(raw)
        except web.BodyError as e:
            return JSONResponse({"error": str(e)}, e.status)
        token = authentic(request, body.get("node"), raw)
        if token is None:
            return JSONResponse({"error": "missing or wrong witness MAC (the node's token)"}, 401)
        try:
            pair, node, want, duration = parse_request(body, table.max_duration)
            outdated, force = parse_outdated(body), parse_force(body)
        except ValueError as e:
            return JSONResponse({"error": str(e)}, 400)
        nonce = body.get("nonce")
        if (refused := stale(nonce, body.get("sent"))) is not None:
            return refused
        out = table.request(pair, node, want, duration, clock.now(), outdated, force)
        if out.pop("new", False):
            log.info("lease of %s granted to %s (term %d)", pair, node, out["term"])
        data = json.dumps(out).encode()
        return Response(data, 200, headers={SIGNATURE_HEADER: answer_signature(token, nonce, data)},
                        media_type="application/json")

    async def not_found(request: Request, exc: Exception) -> Response:
        return JSONResponse({"error": f"no such resource {request.url.path}"}, 404)

    return Starlette(routes=[Route("/v1/leases", leases), Route("/v1/lease", lease, methods=["POST"])],
                     exception_handlers={404: not_found, 405: not_found})


def serve(host: str, port: int, token: Tokens | str, table: LeaseTable | None = None,
          max_skew: float = MAX_SKEW) -> web.ServerThread:
    """Start the witness's HTTP server in a thread; returns it (``shutdown()`` stops it).
    ``token``: one for every node, or each node's (parse_tokens)."""
    table = table or LeaseTable(clock.now())
    if not token or (isinstance(token, dict) and not all(token.values())):
        raise ValueError("an empty witness token")
    sock = web.tcp_socket(host, port)
    return web.ServerThread("witness", [(web.config(app(token, table, max_skew)), sock)]).start()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="esc-witness", description=__doc__.splitlines()[0] if __doc__ else "")
    p.add_argument("--listen", required=True, help="ADDR:PORT, e.g. 10.0.0.9:8025 or [::]:8025")
    p.add_argument("--token-file", required=True, help="file holding the token (escadm witness token)")
    p.add_argument("--max-lease", type=float, default=MAX_DURATION,
                   help="longest lease granted, and the time it grants none after it starts")
    p.add_argument("--max-skew", type=float, default=MAX_SKEW,
                   help="seconds a request's send time may differ from this host's clock "
                        "(older requests are refused as replays: keep the clocks in time, e.g. NTP)")
    p.add_argument("--state-file", help="where the outdated marks are kept "
                   "(default: witness-state.json beside the token file)")
    a = p.parse_args(argv)
    host, _, port = a.listen.rpartition(":")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s witness %(levelname)s %(message)s")
    try:
        with open(a.token_file) as f:
            token = parse_tokens(f.read())
        state = Path(a.state_file) if a.state_file else Path(a.token_file).with_name("witness-state.json")
        table = LeaseTable(clock.now(), a.max_lease, marks=load_marks(state),
                           on_marks=lambda marks: save_marks(state, marks))
        if table.outdated:
            log.warning("outdated marks from %s: %s", state, table.outdated)
        srv = serve(host.strip("[]"), int(port), token, table, a.max_skew)
    except (OSError, ValueError) as e:
        print(f"esc-witness: {e}")
        return 2
    log.info("witness listening on %s", a.listen)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    srv.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
