"""Pairing over the network: the server every HA agent runs on its HA addresses (port
8022, plain HTTP: everything that matters is inside the SPAKE2 exchange), and the
client a node without the pair's material runs (at install, and at the agent's start
until it has paired).

Abuse: an exchange is one online guess of the credential, so starts are limited (a
burst of BURST, then one per REFILL_S, for the whole node) and a wrong one is logged
once a minute with a count; half-finished exchanges expire after SESSION_TTL_S.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from esc import web
from esc.config import NodePaths
from esc.pairing import credentials
from esc.pairing.handshake import Decision, Handshake, b64, decide, unb64
from esc.pairing.material import PairMaterial

log = logging.getLogger("esc.pairing")
refusals = logging.getLogger("esc.pairing.refused")
refusals.addFilter(web.OncePerInterval(60.0))


class PairingError(Exception):
    """Pairing did not happen; the message says why, for an operator."""


class PairingRefused(PairingError):
    """The peer answered, and refused: a wrong or unknown credential (trying again with
    the same one cannot help)."""


@dataclass(frozen=True)
class Outcome:
    decision: Decision
    material: PairMaterial | None  # the server's, with TAKE


class PairingServer:
    BURST = 10
    REFILL_S = 6.0
    SESSION_TTL_S = 10.0
    MAX_SESSIONS = 16

    def __init__(self, paths: NodePaths, nodes: list[str], material: Callable[[], PairMaterial | None],
                 serving: Callable[[], bool], clock: Callable[[], float] = time.monotonic) -> None:
        self.paths = paths
        self.nodes = nodes
        self.material = material
        self.serving = serving
        self.clock = clock
        self.lock = threading.Lock()
        self.budget = float(self.BURST)
        self.budget_at = clock()
        # session -> (exchange, expiry, kind, token id, source)
        self.sessions: dict[str, tuple[Handshake, float, str, str, str]] = {}

    def _spend(self) -> bool:
        with self.lock:
            now = self.clock()
            self.budget = min(self.BURST, self.budget + (now - self.budget_at) / self.REFILL_S)
            self.budget_at = now
            for _, expiry, kind, _, source in self.sessions.values():
                if expiry <= now:  # a client that got no proof it liked stops after start
                    refusals.warning("pairing exchange from %s left unfinished (a wrong %s?)", source,
                                     "join token" if kind == "token" else "password")
            self.sessions = {k: v for k, v in self.sessions.items() if v[1] > now}
            if self.budget < 1 or len(self.sessions) >= self.MAX_SESSIONS:
                return False
            self.budget -= 1
            return True

    def start(self, body: dict, source: str) -> tuple[int, dict]:
        kind, token_id = body.get("kind"), body.get("token_id", "")
        if kind not in ("password", "token") or not isinstance(token_id, str):
            return 400, {"error": "kind must be password or token"}
        try:
            message = unb64(body.get("msg"))
        except ValueError as e:
            return 400, {"error": f"msg: {e}"}
        if not self._spend():
            refusals.warning("pairing attempts from %s refused: too many", source)
            return 429, {"error": "too many pairing attempts; try again later"}
        password = credentials.server_password(self.paths, kind, token_id)
        if password is None:
            refusals.warning("pairing attempt from %s: no %s here", source,
                             "such join token" if kind == "token" else "pairing password")
            return 403, {"error": ("no such join token here (unknown, used or expired)" if kind == "token"
                                   else "this node has no pairing password (install it with "
                                   "--user_pass or --ha_secret, or pair with a join token)")}
        hs = Handshake(password, self.nodes)
        try:
            hs.finish(message)
        except ValueError as e:
            return 400, {"error": str(e)}
        session = secrets.token_hex(16)
        with self.lock:
            self.sessions[session] = (hs, self.clock() + self.SESSION_TTL_S, kind, token_id, source)
        return 200, {"session": session, "msg": b64(hs.message), "confirm": b64(hs.confirmation("server"))}

    def finish(self, body: dict, source: str) -> tuple[int, dict]:
        with self.lock:
            entry = self.sessions.pop(str(body.get("session")), None)
        if entry is None or entry[1] < self.clock():
            return 404, {"error": "no such pairing exchange (expired?): start again"}
        hs, _, kind, token_id, _ = entry
        try:
            confirmed = hs.confirms("client", unb64(body.get("confirm")))
        except ValueError:
            confirmed = False
        if not confirmed:
            refusals.warning("pairing attempt from %s with a wrong %s", source,
                             "join token" if kind == "token" else "password")
            return 403, {"error": "wrong credential"}
        try:
            state = hs.open("client", body.get("box"))
        except ValueError as e:
            return 400, {"error": str(e)}
        theirs = state.get("material_id")
        if theirs is not None and not isinstance(theirs, str):
            return 400, {"error": "material_id must be a string"}
        own = self.material()
        decision = decide(own.id if own else None, self.serving(), theirs, state.get("replace") is True)
        if kind == "token" and decision in (Decision.TAKE, Decision.SAME):
            credentials.use_join_token(self.paths, token_id)
        peer = str(state.get("name", "?"))[:64].encode("unicode_escape").decode()
        (log.warning if decision == Decision.CONFLICT else log.info)(
            "pairing with %s (%s) at %s: %s", peer, kind, source,
            {Decision.TAKE: "it takes this node's material", Decision.SAME: "same material already",
             Decision.WAIT: "this node has no material yet",
             Decision.CONFLICT: "it holds other material; neither node serves, so both keep theirs "
                                "(`escadm ha pair` on the node that should take the other's)"}[decision])
        payload = {"decision": str(decision),
                   "material": own.to_dict() if own and decision == Decision.TAKE else None}
        return 200, {"box": hs.seal("server", payload)}

    def app(self) -> Starlette:
        def endpoint(method: Callable[[dict, str], tuple[int, dict]]) -> Callable:
            async def handle(request: Request) -> Response:
                try:
                    body = await web.read_json(request, limit=8192)
                except web.BodyError as e:
                    return JSONResponse({"error": str(e)}, e.status)
                source = request.client.host if request.client else "?"
                status, answer = await run_in_threadpool(method, body, source)
                headers = {"Retry-After": str(int(self.REFILL_S))} if status == 429 else None
                return JSONResponse(answer, status, headers=headers)
            return handle

        return Starlette(routes=[Route("/v1/pair/start", endpoint(self.start), methods=["POST"]),
                                 Route("/v1/pair/finish", endpoint(self.finish), methods=["POST"])])


def serve(host: str, port: int, server: PairingServer) -> web.ServerThread:
    sock = web.tcp_socket(host, port)
    return web.ServerThread(f"pairing-{host}", [(web.config(server.app(), max_per_client=8), sock)]).start()


def pair_with(host: str, port: int, credential: credentials.ClientCredential, nodes: list[str],
              name: str, own: PairMaterial | None, replace: bool = False,
              timeout: float = 3.0) -> Outcome:
    """One exchange with the peer at ``host``; PairingError says why it did not happen."""
    hs = Handshake(credential.password, nodes)
    base = f"http://{_bracket(host)}:{port}/v1/pair"
    try:
        with httpx.Client(timeout=timeout) as http:
            r = http.post(f"{base}/start", json={"v": 1, "kind": credential.kind,
                                                 "token_id": credential.token_id, "msg": b64(hs.message)})
            _raise_for(r)
            answer = r.json()
            try:
                hs.finish(unb64(answer.get("msg")))
                confirmed = hs.confirms("server", unb64(answer.get("confirm")))
            except ValueError as e:
                raise PairingError(f"the peer's answer is malformed: {e}") from None
            if not confirmed:
                raise PairingRefused("wrong credential: the peer was installed with another "
                                   + ("join token" if credential.kind == "token"
                                      else "--user_pass/--ha_secret"))
            box = hs.seal("client", {"material_id": own.id if own else None, "replace": replace,
                                     "name": name})
            r = http.post(f"{base}/finish", json={"session": answer.get("session"),
                                                  "confirm": b64(hs.confirmation("client")), "box": box})
            _raise_for(r)
            try:
                payload = hs.open("server", r.json().get("box"))
                decision = Decision(payload.get("decision"))
                material = (PairMaterial.from_dict(payload["material"])
                            if decision == Decision.TAKE else None)
            except (ValueError, KeyError) as e:
                raise PairingError(f"the peer's answer is malformed: {e}") from None
    except httpx.HTTPError as e:
        raise PairingError(f"the peer's pairing port {host}:{port} does not answer "
                           f"({e.__class__.__name__})") from None
    return Outcome(decision, material)


def _raise_for(r: httpx.Response) -> None:
    if r.status_code == 200:
        return
    try:
        reason = str(r.json().get("error", ""))[:200]
    except ValueError:
        reason = ""
    cls = PairingRefused if r.status_code == 403 else PairingError
    raise cls(f"the peer refused pairing ({r.status_code}{': ' + reason if reason else ''})")


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def pair_node(paths: NodePaths, cfg, replace: bool = False, timeout: float = 3.0) -> Outcome:  # type: ignore[no-untyped-def]
    """This node (``cfg``, an HA NodeConfig) pairs with its peer with the credential it
    holds; material it takes is installed (esc.pairing.material.install) and a join
    token used is forgotten. PairingError (PairingRefused) says why not."""
    from esc.pairing import material as pair_material

    ha = cfg.ha
    credential = credentials.client_credential(paths)
    if credential is None:
        raise PairingError("no credential to pair with (`escadm ha set` with --user_pass, "
                           "--ha_secret or --ha_join_token)")
    outcome = pair_with(ha.peer_address, cfg.pair_port, credential, ha.node_list, cfg.name,
                        pair_material.load(paths), replace=replace, timeout=timeout)
    if outcome.decision == Decision.TAKE and outcome.material is not None:
        pair_material.install(paths, cfg, outcome.material)
        if credential.kind == "token":
            credentials.forget_join_token(paths)
    return outcome
