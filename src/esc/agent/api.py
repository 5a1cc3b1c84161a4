"""The agent's HTTP endpoints (JSON bodies), served by esc.web:

* a unix socket for ``escadm`` on this node (root only: the socket is 0600);
* a narrower unix socket for the portal (the unprivileged controller's user only):
  the status, and the two commands an admin of the portal may give (switchover,
  op_mode), recorded as asked by the portal's user;
* a TCP port on each of the node's HA addresses for the peer agent: mutual TLS with
  the pair's certificate (each side accepts only the holder of the pair's key), and a
  token derived from the pair's shared secret.

Handlers only read a snapshot or record an intent and wake the loop; the loop
acts (Patroni's API → ``ha.wakeup()`` pattern).
"""

from __future__ import annotations

import hmac
import os
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from esc import web
from esc.agent.peer import TOKEN_HEADER


class AgentApi(Protocol):
    def status(self) -> dict: ...
    def peer_state(self, caller: str) -> dict: ...
    def command(self, name: str, body: dict) -> tuple[int, dict]: ...
    def history(self, epoch: str | None, after: int) -> dict: ...


def app(api: AgentApi, token: str | Callable[[], list[str]] | None) -> Starlette:
    """``token`` None: the local socket (no token; commands under /v1/command/);
    else the peer's port (commands under /v1/peer/command/), with the token, or a
    callable giving every token accepted now (two while the pair renews its material)."""

    def refused(request: Request) -> Response | None:
        if token is None:
            return None
        given = request.headers.get(TOKEN_HEADER, "").encode("latin-1")
        ok = False
        for t in ([token] if isinstance(token, str) else token()):
            # as bytes: compare_digest raises on a str with non-ASCII characters (a
            # header is read as latin-1, so anyone can send one)
            ok |= hmac.compare_digest(given, t.encode())
        return None if ok else JSONResponse({"error": "bad peer token"}, 403)

    async def status(request: Request) -> Response:
        return refused(request) or JSONResponse(await run_in_threadpool(api.status))

    async def peer(request: Request) -> Response:
        return refused(request) or JSONResponse(
            await run_in_threadpool(api.peer_state, request.headers.get("x-esc-from", "")))

    async def history(request: Request) -> Response:
        if (no := refused(request)) is not None:
            return no
        try:
            after = int(request.query_params.get("after", "0"))
        except ValueError:
            return JSONResponse({"error": "after must be an integer"}, 400)
        return JSONResponse(await run_in_threadpool(
            api.history, request.query_params.get("epoch") or None, after))

    async def command(request: Request) -> Response:
        if (no := refused(request)) is not None:
            return no
        try:
            body = await web.read_json(request)
        except web.BodyError as e:
            return JSONResponse({"error": str(e)}, e.status)
        # who asks is known from the socket, never from the body
        body["_via_peer"] = token is not None
        code, out = await run_in_threadpool(api.command, request.path_params["name"], body)
        return JSONResponse(out, code)

    async def not_found(request: Request, exc: Exception) -> Response:
        return refused(request) or JSONResponse(
            {"error": f"no such resource {request.url.path}"}, 404)

    prefix = "/v1/command/" if token is None else "/v1/peer/command/"
    return Starlette(routes=[Route("/v1/status", status), Route("/v1/peer", peer),
                             Route("/v1/history" if token is None else "/v1/peer/history", history),
                             Route(prefix + "{name}", command, methods=["POST"])],
                     exception_handlers={404: not_found, 405: not_found})


# what an admin may ask from the portal; everything else is escadm's, as root
PORTAL_COMMANDS = ("switchover", "op_mode")


def portal_app(api: AgentApi, status: Callable[[], dict] | None = None) -> Starlette:
    """``status``: what the portal reads (the agent's shared snapshot: every open page
    asks each second, and a fresh status runs commands)."""
    read_status = status or api.status

    async def status_route(request: Request) -> Response:
        return JSONResponse(await run_in_threadpool(read_status))

    async def command(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in PORTAL_COMMANDS:
            return JSONResponse({"error": f"{name} cannot be asked from the portal"}, 403)
        try:
            body = await web.read_json(request)
        except web.BodyError as e:
            return JSONResponse({"error": str(e)}, e.status)
        user = body.get("user")
        if not isinstance(user, str) or not user.strip():
            return JSONResponse({"error": "the portal's user is needed"}, 400)
        args = {"by": f"portal user {user}", "_via_peer": False}
        if name == "op_mode":
            args["mode"] = body.get("mode")
        code, out = await run_in_threadpool(api.command, name, args)
        return JSONResponse(out, code)

    async def not_found(request: Request, exc: Exception) -> Response:
        return JSONResponse({"error": f"no such resource {request.url.path}"}, 404)

    return Starlette(routes=[Route("/v1/status", status_route),
                             Route("/v1/command/{name}", command, methods=["POST"])],
                     exception_handlers={404: not_found, 405: not_found})


def serve_portal(path: Path, api: AgentApi, owner: tuple[int, int] | None,
                 status: Callable[[], dict] | None = None) -> web.ServerThread:
    """``owner``: the uid and gid the socket is given (the controller's user), with
    mode 0600: nobody else on the host connects."""
    sock = web.unix_socket(path, 0o600)
    if owner is not None:
        os.chown(path, *owner)
    return web.ServerThread("api-portal", [(web.config(portal_app(api, status)), sock)]).start()


def serve_unix(path: Path, api: AgentApi) -> web.ServerThread:
    sock = web.unix_socket(path, 0o600)
    return web.ServerThread("api-local", [(web.config(app(api, None)), sock)]).start()


def serve_peer(host: str, port: int, api: AgentApi, token: str | Callable[[], list[str]],
               tls: dict | None = None,
               context: Callable[[], ssl.SSLContext] | None = None) -> web.ServerThread:
    """``tls``: uvicorn's TLS options (esc.tls.peer_server_options: mutual TLS with the
    pair's certificate); None only in tests. ``context``: the TLS context each new
    connection gets instead, asked at its handshake (the node swaps it when the pair
    renews its material, with no restart of the server)."""
    sock = web.tcp_socket(host, port)
    config = web.config(app(api, token), **(tls or {}))
    if context is not None and config.ssl is not None:
        def swap(conn, _name, _ctx):  # type: ignore[no-untyped-def]
            conn.context = context()
        config.ssl.sni_callback = swap
    return web.ServerThread(f"api-peer-{host}", [(config, sock)]).start()
