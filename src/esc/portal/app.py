"""The portal: server-rendered pages on https://VIP:9001/, served by the active's
controller process (esc.services.manager), behind the same serving lease.

Pages: the pair (live, by server-sent events), deployments and their VMs, events,
transactions and their callbacks, ETSI VNF instances and operations, the pair's
history. An admin may switch over and set maintenance; the agent records the portal's
user as the one who asked. htmx (vendored in static/, nothing fetched) boosts links
and forms and asks for confirmations; every page also works without JavaScript but
for the live part.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from jinja2 import Environment, FileSystemLoader, select_autoescape
from psycopg_pool import ConnectionPool
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from esc.config import NodeConfig
from esc.portal import auth, data
from esc.services.manager import FailedLogins

log = logging.getLogger("esc.portal")
logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per call to the agent otherwise

HERE = Path(__file__).parent
LIVE_EVERY_S = 1.0
HEADERS = {
    "content-security-policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; "
                               "frame-ancestors 'none'; form-action 'self'",
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}


class Agent:
    """The agent's socket for the portal (esc.agent.api.portal_app)."""

    def __init__(self, sock: Path) -> None:
        self.client = httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(uds=str(sock)),
                                        base_url="http://agent", timeout=3.0)

    async def status(self) -> dict[str, Any] | None:
        try:
            r = await self.client.get("/v1/status")
            return r.json() if r.status_code == 200 else None
        except (httpx.HTTPError, ValueError):
            return None

    async def command(self, name: str, body: dict) -> tuple[int, dict]:
        try:
            r = await self.client.post(f"/v1/command/{name}", json=body, timeout=15.0)
            return r.status_code, r.json()
        except (httpx.HTTPError, ValueError) as e:
            return 503, {"error": f"the agent did not answer: {type(e).__name__}"}


def create_app(cfg: NodeConfig, conninfo: str, agent_sock: Path,
               serving: Callable[[], bool] = lambda: True,
               stopping: threading.Event | None = None) -> Starlette:
    """``serving``: whether this node may still answer (its serving lease); ``stopping``:
    set when the server shuts down (the live streams end at once)."""
    stopping = stopping or threading.Event()
    pool = ConnectionPool(conninfo, min_size=1, max_size=4, open=False, name="portal",
                          kwargs={"application_name": "escportal"})
    agent = Agent(agent_sock)
    failed = FailedLogins()
    env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(),
                      trim_blocks=True, lstrip_blocks=True)
    env.filters["ago"] = _ago
    env.filters["when"] = lambda t: t.strftime("%Y-%m-%d %H:%M:%S") if t else ""

    def db(fn: Callable[..., Any], *args: Any) -> Any:
        def run() -> Any:
            with pool.connection() as conn:
                return fn(conn, *args)
        return run_in_threadpool(run)

    def page(name: str, request: Request, session: auth.Session | None, code: int = 200,
             **values: Any) -> HTMLResponse:
        html = env.get_template(name).render(session=session, node=cfg.name, path=request.url.path,
                                             **values)
        return HTMLResponse(html, code, headers=HEADERS)

    async def session_of(request: Request) -> auth.Session | None:
        return await db(auth.find_session, request.cookies.get(auth.COOKIE))

    def to_login() -> Response:
        return RedirectResponse("/login", 303, headers=HEADERS)

    # ---------------------------------------------------------------- login
    async def login_form(request: Request) -> Response:
        return page("login.html", request, None, error=None)

    async def login(request: Request) -> Response:
        client = request.client.host if request.client else "?"
        wait = failed.retry_after(client)
        if wait:
            return page("login.html", request, None, 429,
                        error=f"too many failed logins: try again in {wait} s")
        form = await request.form()
        name, password = str(form.get("user", ""))[:200], str(form.get("password", ""))[:1000]
        role = await db(auth.check_user, cfg.portal_user, name, password)
        if role is None:
            failed.failed(client)
            log.warning("portal: failed login for %r from %s", name, client)
            return page("login.html", request, None, 401, error="wrong user or password")
        cookie, _ = await db(auth.open_session, name, role)
        log.info("portal: %s (%s) logged in from %s", name, role, client)
        r = RedirectResponse("/", 303, headers=HEADERS)
        r.set_cookie(auth.COOKIE, cookie, max_age=auth.ABSOLUTE_S, secure=True, httponly=True,
                     samesite="strict")
        return r

    async def logout(request: Request) -> Response:
        session = await session_of(request)
        form = await request.form()
        if session is not None and auth.csrf_ok(session, form.get("csrf")):  # type: ignore[arg-type]
            await db(auth.close_session, request.cookies.get(auth.COOKIE))
            log.info("portal: %s logged out", session.user)
        r = to_login()
        r.delete_cookie(auth.COOKIE, secure=True, httponly=True, samesite="strict")
        return r

    # ---------------------------------------------------------------- pages
    async def pair(request: Request) -> Response:
        session = await session_of(request)
        if session is None:
            return to_login()
        status = await agent.status()
        history = await db(data.history)
        return page("pair.html", request, session, status=status, history=history[:10])

    def listing(template: str, fetch: Callable[[Any, dict], dict]) -> Callable:
        async def handler(request: Request) -> Response:
            session = await session_of(request)
            if session is None:
                return to_login()
            q = request.query_params
            args = {k: q.get(k, "").strip()[:200] for k in ("type", "resource", "status", "kind")}
            try:
                args["before"] = int(q["before"]) if q.get("before") else None
            except ValueError:
                args["before"] = None
            values = await db(lambda conn: fetch(conn, args))
            return page(template, request, session, q=args, page_size=data.PAGE, **values)
        return handler

    deployments = listing("deployments.html", lambda c, a: {"rows": data.deployments(c)})
    events = listing("events.html", lambda c, a: {
        "rows": data.events(c, a["type"], a["resource"], a["before"]), "types": data.event_types(c)})
    transactions = listing("transactions.html", lambda c, a: {
        "rows": data.transactions(c, a["status"], a["before"])})
    etsi = listing("etsi.html", lambda c, a: {
        "instances": data.vnf_instances(c), "ops": data.op_occs(c, a["before"]),
        "enabled": cfg.etsi.enabled})
    history = listing("history.html", lambda c, a: {"rows": data.history(c, a["kind"], 500)})

    # ---------------------------------------------------------------- live
    async def live(request: Request) -> Response:
        session = await session_of(request)
        if session is None:
            return Response("log in first", 401, headers=HEADERS)
        fragment = env.get_template("_pair.html")

        async def stream() -> AsyncIterator[bytes]:
            yield b"retry: 1000\n\n"
            checked = asyncio.get_running_loop().time()
            while serving() and not stopping.is_set():
                status = await agent.status()
                html = fragment.render(status=status, session=session, node=cfg.name)
                yield ("event: pair\n" + "".join(f"data: {line}\n" for line in html.splitlines())
                       + "\n").encode()
                # the session may have ended meanwhile (logged out elsewhere, expired)
                if asyncio.get_running_loop().time() - checked > 10:
                    checked = asyncio.get_running_loop().time()
                    if await session_of(request) is None:
                        return
                for _ in range(int(LIVE_EVERY_S / 0.1)):
                    if stopping.is_set() or await request.is_disconnected():
                        return
                    await asyncio.sleep(0.1)

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={**HEADERS, "x-accel-buffering": "no"})

    # ---------------------------------------------------------------- actions
    async def action(request: Request) -> Response:
        session = await session_of(request)
        if session is None:
            return to_login()
        form = await request.form()
        if not auth.csrf_ok(session, form.get("csrf")):  # type: ignore[arg-type]
            return page("result.html", request, session, 403, ok=False,
                        message="the form is stale: reload the page")
        if not session.admin:
            return page("result.html", request, session, 403, ok=False,
                        message=f"{session.user} is a viewer: only an admin may do this")
        what = request.path_params["what"]
        if what == "switchover":
            # This node steps down the moment the agent acts, its controller (and this
            # answer) with it: so the answer goes first, and the agent is asked after it
            # is sent. What the agent would refuse is checked here first, from its status.
            refusal = switchover_refusal(await agent.status())
            if refusal:
                return page("result.html", request, session, 409, ok=False, message=f"switchover: {refusal}")

            async def ask() -> None:
                code, out = await agent.command("switchover", {"user": session.user})
                log.info("portal: %s asked for a switchover: %s %s", session.user, code, out)
            response = page("result.html", request, session, 202, ok=True,
                            message="switchover: asked; this page follows the new active")
            response.background = BackgroundTask(ask)
            return response
        if what == "maintenance":
            mode = "maintenance" if form.get("on") == "1" else "operation"
            code, out = await agent.command("op_mode", {"user": session.user, "mode": mode})
        else:
            return page("result.html", request, session, 404, ok=False, message=f"no action {what}")
        log.info("portal: %s asked for %s: %s %s", session.user, what, code, out)
        message = out.get("result") or out.get("error") or str(out)
        return page("result.html", request, session, 200 if code < 300 else code, ok=code < 300,
                    message=f"{what}: {message}")

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await run_in_threadpool(pool.open, False)
        try:
            yield
        finally:
            stopping.set()
            await agent.client.aclose()
            await run_in_threadpool(pool.close, 2.0)

    return Starlette(routes=[
        Route("/", pair), Route("/login", login_form), Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/deployments", deployments), Route("/events", events),
        Route("/transactions", transactions), Route("/etsi", etsi), Route("/history", history),
        Route("/live", live), Route("/action/{what}", action, methods=["POST"]),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ], lifespan=lifespan)


def switchover_refusal(status: dict[str, Any] | None) -> str:
    """Why the agent would refuse a switchover now ("" if it would not)."""
    if status is None:
        return "the agent does not answer"
    peer, db = status.get("peer") or {}, status.get("db") or {}
    if status.get("role") != "ACTIVE":
        return f"this node is {status.get('role')}, not ACTIVE"
    if peer.get("role") != "STANDBY" or not db.get("peer_complete"):
        return "the peer is not a complete standby: it would lack acknowledged writes"
    return ""


def _ago(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.0f} min"
