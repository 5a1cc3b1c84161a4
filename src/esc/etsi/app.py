"""The ETSI NFV SOL003 VNF lifecycle management API (v2.4.1, API version 1.1.1) of the VNFM.

Under ``/vnflcm/v1``: ``vnf_instances`` (create, list, read, modify, delete, and the
tasks instantiate, scale, scale_to_level, change_flavour, terminate, heal, operate,
change_ext_conn), ``vnf_lcm_op_occs`` (list, read, retry, rollback, fail, cancel),
``subscriptions``; ``/vnflcm/v1/api_versions`` and ``/vnflcm/api_versions``. The token
endpoint (OAuth 2.0 client credentials) is ``POST /oauth2/token``; VNF packages are
onboarded with ``POST /esc/v1/vnf_packages`` (a CSAR, ``application/zip``).

Errors are ``application/problem+json`` ProblemDetails. Every link and Location is an
absolute URL on the server address (the VIP, esc.config.NodeConfig.etsi_server_address),
with the scheme and port the request came on. Every write is one database transaction,
committed durably (synchronously replicated) before the answer; the LCM worker
(esc.etsi.worker) and the notification sender (esc.etsi.notify) do the rest.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import httpx
import psycopg
from fastapi import FastAPI
from psycopg_pool import ConnectionPool
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from esc.config import NodeConfig
from esc.etsi import auth as etsi_auth
from esc.etsi import lcm, models, query, store
from esc.etsi.notify import API_VERSION, NotificationSender, Tokens, send
from esc.etsi.package import PackageError, read_package
from esc.etsi.worker import LcmWorker
from esc.services.callbacks import CallbackPolicy, check_callback_url
from esc.services.db import CommitNotConfirmed, commit_durably, one_line
from esc.services.manager import BasicAuth, FailedLogins
from esc.services.metrics import RequestMetrics
from esc.services.transactions import DONE_CHANNEL, WorkListener

log = logging.getLogger("esc.etsi")

MAX_BODY = 256 * 1024
MAX_DEPTH = 32  # of a JSON body: SOL003's deepest request nests 13 (objects and arrays)
MAX_PACKAGE = 64 * 2**20
PAGE_SIZE = 100
PREFIX = "/vnflcm/v1"
PROBLEM = "application/problem+json"
# what a list leaves out unless asked for (SOL003 5.4.2.3.2, 5.4.9.3.2)
INSTANCE_DEFAULT_EXCLUDED = ("vnfConfigurableProperties", "vimConnectionInfo", "instantiatedVnfInfo",
                             "metadata", "extensions")
OP_DEFAULT_EXCLUDED = ("operationParams", "error", "resourceChanges", "changedInfo", "changedExtConnectivity")


class Problem(Exception):
    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.detail, self.headers = status, detail, headers or {}


def problem(status: int, detail: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"status": status, "detail": detail}, status_code=status, media_type=PROBLEM,
                        headers={"Version": API_VERSION, **(headers or {})})


def answer(body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers={"Version": API_VERSION, **(headers or {})})


def empty(status: int, headers: Mapping[str, str] | None = None) -> Response:
    return Response(status_code=status, headers={"Version": API_VERSION, **(headers or {})})


# --- request helpers ------------------------------------------------------------------------


def links(request: Request) -> store.Links:
    """Links on the server address, with the scheme and port this request came on."""
    cfg: NodeConfig = request.app.state.cfg
    https = request.url.scheme == "https"
    port = cfg.etsi.https_port if https else cfg.etsi.http_port
    return store.Links(store.links_base("https" if https else "http", cfg.etsi_server_address, port))


def notification_links(cfg: NodeConfig) -> store.Links:
    """The notifications' links: HTTPS when it is served."""
    if cfg.etsi.https_port:
        return store.Links(store.links_base("https", cfg.etsi_server_address, cfg.etsi.https_port))
    return store.Links(store.links_base("http", cfg.etsi_server_address, cfg.etsi.http_port))


async def read_json(request: Request, model: type[BaseModel], optional: bool = False) -> BaseModel | None:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            raise Problem(413, f"the body exceeds {MAX_BODY // 1024} KiB")
    if not body.strip():
        if optional:
            return None
        raise Problem(400, "a JSON body is needed")
    # a body without Content-Type is of no known type (RFC 9110 8.3); SOL003 requires it
    if ctype not in ("application/json", "application/merge-patch+json"):
        raise Problem(415, f"Content-Type {ctype or '(none)'} is not application/json")
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise Problem(400, f"the body is not JSON: {e}") from None
    except RecursionError:
        raise Problem(400, f"the body is nested deeper than {MAX_DEPTH} levels") from None
    bad = _unstorable(data)
    if bad:
        raise Problem(400, f"the body {bad}")
    try:
        return model.model_validate(data)
    except ValidationError as e:
        details = "; ".join(f"{'.'.join(str(x) for x in err['loc']) or 'body'}: {err['msg']}"
                            for err in e.errors()[:10])
        raise Problem(400, f"invalid {model.__name__}: {details}") from None


def _unstorable(data: Any) -> str | None:
    """Why the body cannot be kept: a NUL (PostgreSQL's text and jsonb refuse it: a 503 at
    the write otherwise), or nesting deeper than MAX_DEPTH (everything after recurses)."""
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, str) and "\x00" in value:
            return "has a NUL character (U+0000), which no attribute can hold"
        if isinstance(value, dict | list):
            if depth > MAX_DEPTH:
                return f"is nested deeper than {MAX_DEPTH} levels"
            if isinstance(value, dict):
                stack += [(k, depth) for k in value]
            stack += [(v, depth + 1) for v in (value.values() if isinstance(value, dict) else value)]
    return None


def _dump(body: BaseModel | None) -> dict[str, Any]:
    return body.model_dump(mode="json", exclude_none=True) if body is not None else {}


async def db(request: Request, fn: Callable[..., Any], *args: Any) -> Any:
    pool: ConnectionPool = request.app.state.pool

    def run() -> Any:
        with pool.connection() as conn:
            return fn(conn, *args)
    return await run_in_threadpool(run)


def wake_worker(request: Request) -> None:
    worker = getattr(request.app.state, "worker", None)
    if worker is not None:
        worker.wake()


def wake_sender(request: Request) -> None:
    sender = getattr(request.app.state, "sender", None)
    if sender is not None:
        sender.wake()


def list_params(request: Request, defaults: tuple[str, ...]) -> tuple[Callable[[list[dict]], Response], ...]:
    params = dict(request.query_params)
    try:
        exprs = query.parse_filter(params["filter"]) if "filter" in params else []
        query.select({}, params, defaults)  # refuse bad combinations before any work
    except query.QueryError as e:
        raise Problem(400, str(e)) from None

    def respond(items: list[dict[str, Any]]) -> Response:
        try:
            chosen = [i for i in items if query.matches(i, exprs)]
            shown, marker = query.page(chosen, params.get("nextpage_opaque_marker"), PAGE_SIZE)
            body = [query.select(i, params, defaults) for i in shown]
        except query.QueryError as e:
            return problem(400, str(e))
        headers = {}
        if marker is not None:
            rest = {k: v for k, v in params.items() if k != "nextpage_opaque_marker"}
            url = links(request).url(request.url.path[len(PREFIX):])
            qs = httpx.QueryParams({**rest, "nextpage_opaque_marker": marker})
            headers["Link"] = f'<{url}?{qs}>; rel="next"'
        return answer(body, headers=headers)
    return (respond,)


# --- api versions ---------------------------------------------------------------------------


async def api_versions(request: Request) -> Response:
    return answer({"uriPrefix": PREFIX, "apiVersions": [{"version": API_VERSION, "isDeprecated": False}]})


# --- vnf_instances ----------------------------------------------------------------------------


def _instance_view(conn: psycopg.Connection, inst: dict[str, Any], lk: store.Links) -> dict[str, Any]:
    vnfd = store.package(conn, inst["pkg_id"])
    return store.instance_body(inst, vnfd, lk, store.vnfcs(conn, inst["id"]))


def etag(inst: Mapping[str, Any]) -> str:
    return f'"{inst["id"]}-{inst["version"]}"'


async def create_instance(request: Request) -> Response:
    body = await read_json(request, models.CreateVnfRequest)
    assert isinstance(body, models.CreateVnfRequest)
    lk = links(request)
    source = request.app.state.packages
    if source is not None and await db(request, store.package_for_vnfd, body.vnfdId) is None:
        await fetch_package(request, source, body.vnfdId)

    def run(conn: psycopg.Connection) -> dict[str, Any]:
        found = store.package_for_vnfd(conn, body.vnfdId)
        if found is None:
            raise Problem(422, f"no VNF package with vnfdId {body.vnfdId} is onboarded")
        pkg_id, vnfd = found
        inst = store.create_instance(conn, body.vnfdId, pkg_id, body.vnfInstanceName,
                                     body.vnfInstanceDescription)
        store.notify(conn, notification_links(request.app.state.cfg), "VnfIdentifierCreationNotification",
                     store.instance_identity(inst, vnfd), {})
        commit_durably(conn)
        return {"body": store.instance_body(inst, vnfd, lk), "etag": etag(inst)}
    out = await db(request, run)
    log.info("VNF instance %s created (VNFD %s)", out["body"]["id"], body.vnfdId)
    wake_sender(request)
    return answer(out["body"], 201, {"Location": out["body"]["_links"]["self"]["href"], "ETag": out["etag"]})


async def fetch_package(request: Request, source: Any, vnfd_id: str) -> None:
    """Onboard the NFVO's package of ``vnfd_id`` (esc.etsi.nfvo_packages); 422 when it has
    none, or when it is not a package this VNFM can read."""
    from esc.etsi.nfvo_packages import FetchError

    try:
        data = await run_in_threadpool(source.fetch, vnfd_id)
        vnfd, files = await run_in_threadpool(read_package, data)
    except (FetchError, PackageError) as e:
        raise Problem(422, f"no VNF package with vnfdId {vnfd_id} is onboarded, and the NFVO's: "
                           f"{e}") from None
    if vnfd.id != vnfd_id:
        raise Problem(422, f"the NFVO's package for vnfdId {vnfd_id} holds VNFD {vnfd.id}")
    await _save_package(request, vnfd, files, data)


async def _save_package(request: Request, vnfd: Any, files: Mapping[str, bytes],
                        data: bytes) -> tuple[str, bool]:
    checksum = hashlib.sha256(data).hexdigest()
    artifacts = {path: hashlib.sha256(content).hexdigest() for path, content in files.items()}

    def run(conn: psycopg.Connection) -> tuple[str, bool]:
        try:
            out = store.save_package(conn, vnfd, artifacts, checksum)
        except ValueError as e:
            raise Problem(409, str(e)) from None
        commit_durably(conn)
        return out
    pkg_id, created = await db(request, run)
    if created:
        log.info("VNF package %s onboarded: VNFD %s (%s %s)", pkg_id, vnfd.id, vnfd.provider,
                 vnfd.product_name)
    return pkg_id, created


async def list_instances(request: Request) -> Response:
    (respond,) = list_params(request, INSTANCE_DEFAULT_EXCLUDED)
    lk = links(request)
    items = await db(request, lambda conn: [_instance_view(conn, i, lk) for i in store.list_instances(conn)])
    return respond(items)


async def get_instance(request: Request) -> Response:
    inst_id = request.path_params["inst_id"]
    lk = links(request)

    def run(conn: psycopg.Connection) -> tuple[dict[str, Any], str] | None:
        inst = store.get_instance(conn, inst_id)
        return (_instance_view(conn, inst, lk), etag(inst)) if inst else None
    found = await db(request, run)
    if found is None:
        raise Problem(404, f"VNF instance {inst_id} not found")
    return answer(found[0], headers={"ETag": found[1]})


async def delete_instance(request: Request) -> Response:
    inst_id = request.path_params["inst_id"]
    if_match = request.headers.get("if-match")

    def run(conn: psycopg.Connection) -> None:
        inst = store.get_instance(conn, inst_id, lock=True)
        if inst is None:
            raise Problem(404, f"VNF instance {inst_id} not found")
        if if_match is not None and if_match not in ("*", etag(inst)):
            raise Problem(412, f"the VNF instance changed (ETag {etag(inst)})")
        if inst["state"] != lcm.NOT_INSTANTIATED:
            raise Problem(409, "the VNF instance is INSTANTIATED: terminate it first")
        if inst["op_occ"] is not None:
            raise Problem(409, f"operation occurrence {inst['op_occ']} is in progress on this VNF instance")
        vnfd = store.package(conn, inst["pkg_id"])
        conn.execute("DELETE FROM etsi_vnf_instances WHERE id = %s", (inst_id,))
        store.notify(conn, notification_links(request.app.state.cfg), "VnfIdentifierDeletionNotification",
                     store.instance_identity(inst, vnfd), {})
        commit_durably(conn)
    await db(request, run)
    log.info("VNF instance %s deleted", inst_id)
    wake_sender(request)
    return empty(204)


def _start_op(conn: psycopg.Connection, cfg: NodeConfig, inst_id: str, task: str | None, operation: str,
              params: dict[str, Any], check: Callable[[dict[str, Any], Any], None] | None = None) -> str:
    inst = store.get_instance(conn, inst_id, lock=True)
    if inst is None:
        raise Problem(404, f"VNF instance {inst_id} not found")
    try:
        if task is not None:
            lcm.check_task(task, inst["state"], inst["op_occ"])
        elif inst["op_occ"] is not None:
            raise lcm.Conflict(f"operation occurrence {inst['op_occ']} is in progress on this VNF instance")
    except lcm.Conflict as e:
        raise Problem(409, str(e)) from None
    vnfd = store.package(conn, inst["pkg_id"])
    if check is not None:
        check(inst, vnfd)
    op = store.create_op(conn, inst, operation, params)
    store.notify_op(conn, notification_links(cfg), store.instance_identity(inst, vnfd), op)
    commit_durably(conn)
    log.info("operation %s (%s of %s) STARTING", op["id"], operation, inst_id)
    return op["id"]


TASK_MODELS: dict[str, type[BaseModel]] = {
    "instantiate": models.InstantiateVnfRequest, "scale": models.ScaleVnfRequest,
    "scale_to_level": models.ScaleVnfToLevelRequest, "change_flavour": models.ChangeVnfFlavourRequest,
    "terminate": models.TerminateVnfRequest, "heal": models.HealVnfRequest,
    "operate": models.OperateVnfRequest, "change_ext_conn": models.ChangeExtVnfConnectivityRequest,
}


def _check_params(task: str, params: dict[str, Any]) -> Callable[[dict[str, Any], Any], None]:
    """What can be refused at once against the VNFD (400), before anything starts."""
    def check(inst: dict[str, Any], vnfd: Any) -> None:
        if vnfd is None:
            raise Problem(409, f"the VNF package {inst['pkg_id']} is gone")
        flavour_id = params.get("flavourId") or params.get("newFlavourId") or inst["flavour_id"]
        if flavour_id not in vnfd.flavours:
            raise Problem(400, f"no deployment flavour {flavour_id!r} in VNFD {vnfd.id}")
        flavour = vnfd.flavours[flavour_id]
        level = params.get("instantiationLevelId")
        if level is not None and level not in flavour.levels:
            raise Problem(400, f"no instantiation level {level!r} in flavour {flavour_id}")
        aspects = [params["aspectId"]] if "aspectId" in params else \
            [s["aspectId"] for s in params.get("scaleInfo") or []]
        for a in aspects:
            if a not in flavour.aspects:
                raise Problem(400, f"no scaling aspect {a!r} in flavour {flavour_id}")
        if task == "scale_to_level" and not level and not params.get("scaleInfo"):
            raise Problem(400, "scale_to_level needs instantiationLevelId or scaleInfo")
        if task == "operate" and params.get("changeStateTo") == inst["vnf_state"]:
            raise Problem(409, f"the VNF instance is already {inst['vnf_state']}")
    return check


def task_endpoint(task: str) -> Callable[[Request], Any]:
    async def endpoint(request: Request) -> Response:
        inst_id = request.path_params["inst_id"]
        body = await read_json(request, TASK_MODELS[task], optional=task == "heal")
        params = _dump(body)
        op_id = await db(request, _start_op, request.app.state.cfg, inst_id, task, lcm.TASKS[task][0], params,
                         _check_params(task, params))
        wake_worker(request)
        wake_sender(request)
        return empty(202, {"Location": links(request).url(f"/vnf_lcm_op_occs/{op_id}")})
    return endpoint


async def modify_instance(request: Request) -> Response:
    inst_id = request.path_params["inst_id"]
    body = await read_json(request, models.VnfInfoModificationRequest)
    assert body is not None
    params = body.model_dump(mode="json", exclude_unset=True)  # a null removes (RFC 7396)
    if_match = request.headers.get("if-match")
    # refused now, not by the worker's write (a FAILED_TEMP "internal error")
    new_pkg = await db(request, store.package, params["vnfPkgId"]) if "vnfPkgId" in params else None
    if "vnfPkgId" in params and new_pkg is None:
        raise Problem(400, f"vnfPkgId: no VNF package {params['vnfPkgId']} is onboarded")

    def check(inst: dict[str, Any], vnfd: Any) -> None:
        if if_match is not None and if_match not in ("*", etag(inst)):
            raise Problem(412, f"the VNF instance changed (ETag {etag(inst)})")
        if new_pkg is not None and new_pkg.id != inst["vnfd_id"]:
            raise Problem(409, f"vnfPkgId: package {params['vnfPkgId']} holds VNFD {new_pkg.id}, not the "
                               f"instance's {inst['vnfd_id']} (change_flavour or a new instance)")

    op_id = await db(request, _start_op, request.app.state.cfg, inst_id, None, "MODIFY_INFO", params, check)
    wake_worker(request)
    wake_sender(request)
    return empty(202, {"Location": links(request).url(f"/vnf_lcm_op_occs/{op_id}")})


# --- vnf_lcm_op_occs --------------------------------------------------------------------------


async def list_ops(request: Request) -> Response:
    (respond,) = list_params(request, OP_DEFAULT_EXCLUDED)
    lk = links(request)
    items = await db(request, lambda conn: [store.op_body(o, lk) for o in store.list_ops(conn)])
    return respond(items)


async def get_op(request: Request) -> Response:
    op_id = request.path_params["op_id"]
    found = await db(request, store.get_op, op_id)
    if found is None:
        raise Problem(404, f"operation occurrence {op_id} not found")
    return answer(store.op_body(found, links(request)))


def op_task_endpoint(task: str) -> Callable[[Request], Any]:
    async def endpoint(request: Request) -> Response:
        op_id = request.path_params["op_id"]
        cancel = await read_json(request, models.CancelMode, optional=True) if task == "cancel" else None
        cfg: NodeConfig = request.app.state.cfg

        def run(conn: psycopg.Connection) -> dict[str, Any]:
            op = store.get_op(conn, op_id, lock=True)
            if op is None:
                raise Problem(404, f"operation occurrence {op_id} not found")
            try:
                if task == "cancel":
                    lcm.check_cancel(op["state"], op["cancel_pending"])
                    mode = cancel.cancelMode if isinstance(cancel, models.CancelMode) else "GRACEFUL"
                    conn.execute("UPDATE etsi_op_occs SET cancel_pending = true, cancel_mode = %s"
                                 " WHERE id = %s", (mode, op_id))
                    commit_durably(conn)
                    return op
                state = {"retry": lambda: lcm.next_on_retry(op["state"]),
                         "rollback": lambda: lcm.next_on_rollback(op["state"], op["operation"]),
                         "fail": lambda: lcm.next_on_fail(op["state"])}[task]()
            except lcm.Conflict as e:
                raise Problem(409, str(e)) from None
            extra: dict[str, Any] = {"deployment_tx": None, "cancel_pending": False}
            if task != "fail":
                extra["error"] = None
            new = store.set_op_state(conn, op, state, **extra)
            inst = store.get_instance(conn, op["vnf_instance_id"])
            vnfd = store.package(conn, inst["pkg_id"]) if inst else None
            ident = store.instance_identity(inst, vnfd) if inst else {"id": op["vnf_instance_id"]}
            store.notify_op(conn, notification_links(cfg), ident, new)
            commit_durably(conn)
            log.info("operation %s: %s, %s -> %s", op_id, task, op["state"], state)
            return new
        new = await db(request, run)
        wake_worker(request)
        wake_sender(request)
        if task == "fail":
            return answer(store.op_body(new, links(request)))
        return empty(202, {"Location": links(request).url(f"/vnf_lcm_op_occs/{op_id}")})
    return endpoint


# --- subscriptions ----------------------------------------------------------------------------


async def create_subscription(request: Request) -> Response:
    body = await read_json(request, models.LccnSubscriptionRequest)
    assert isinstance(body, models.LccnSubscriptionRequest)
    policy: CallbackPolicy = request.app.state.callback_policy
    url = body.callbackUri
    bad = check_callback_url(url) or policy.url_problem(url)
    if bad:
        raise Problem(400, f"callbackUri: {bad}")
    auth = body.authentication.model_dump(mode="json", exclude_none=True) if body.authentication else None
    if auth:
        kinds = auth["authType"]
        if "TLS_CERT" in kinds and len(kinds) == 1:
            raise Problem(400, "authentication: TLS_CERT is not supported; use BASIC or "
                               "OAUTH2_CLIENT_CREDENTIALS")
        if "BASIC" in kinds and "paramsBasic" not in auth and "OAUTH2_CLIENT_CREDENTIALS" not in kinds:
            raise Problem(400, "authentication: BASIC needs paramsBasic")
        if "OAUTH2_CLIENT_CREDENTIALS" in kinds and "paramsOauth2ClientCredentials" not in auth:
            raise Problem(400, "authentication: OAUTH2_CLIENT_CREDENTIALS needs "
                               "paramsOauth2ClientCredentials")
        if "paramsOauth2ClientCredentials" in auth:
            bad = policy.url_problem(auth["paramsOauth2ClientCredentials"]["tokenEndpoint"])
            if bad:
                raise Problem(400, f"tokenEndpoint: {bad}")
    filter_ = body.filter.model_dump(mode="json", exclude_none=True) if body.filter else {}
    key = lcm.filter_key(filter_)
    lk = links(request)
    existing = await db(request, store.find_subscription, url, key)
    if existing:
        return empty(303, {"Location": lk.url(f"/subscriptions/{existing}")})
    # SOL003 5.4.18.3.1: the callback URI answers a GET with 204 before anything is stored
    status, error = await run_in_threadpool(_test_callback, request, url, auth)
    if status != 204:
        raise Problem(400, f"callbackUri: the test GET got {error or f'HTTP {status}'}, not 204")

    def run(conn: psycopg.Connection) -> dict[str, Any] | str:
        try:
            sub = store.create_subscription(conn, url, filter_, key, auth)
        except ValueError:
            conn.rollback()
            return store.find_subscription(conn, url, key) or ""
        commit_durably(conn)
        return sub
    sub = await db(request, run)
    if isinstance(sub, str):
        return empty(303, {"Location": lk.url(f"/subscriptions/{sub}")})
    log.info("subscription %s to %s", sub["id"], url)
    out = store.subscription_body(sub, lk)
    return answer(out, 201, {"Location": out["_links"]["self"]["href"]})


def _test_callback(request: Request, url: str, auth: Mapping[str, Any] | None
                   ) -> tuple[int | None, str | None]:
    tokens: Tokens = request.app.state.tokens
    with httpx.Client(timeout=5.0, follow_redirects=False, trust_env=False) as client:
        return send(client, request.app.state.callback_policy, tokens, url, auth, "GET")


async def list_subscriptions(request: Request) -> Response:
    (respond,) = list_params(request, ())
    lk = links(request)
    items = await db(request, lambda conn: [store.subscription_body(s, lk)
                                            for s in store.list_subscriptions(conn)])
    return respond(items)


async def get_subscription(request: Request) -> Response:
    sub_id = request.path_params["sub_id"]
    sub = await db(request, store.get_subscription, sub_id)
    if sub is None:
        raise Problem(404, f"subscription {sub_id} not found")
    return answer(store.subscription_body(sub, links(request)))


async def delete_subscription(request: Request) -> Response:
    sub_id = request.path_params["sub_id"]

    def run(conn: psycopg.Connection) -> bool:
        gone = store.delete_subscription(conn, sub_id)
        commit_durably(conn)
        return gone
    if not await db(request, run):
        raise Problem(404, f"subscription {sub_id} not found")
    log.info("subscription %s deleted", sub_id)
    return empty(204)


# --- packages (the VNFM's own, not SOL003) --------------------------------------------------


async def onboard_package(request: Request) -> Response:
    data = b""
    async for chunk in request.stream():
        data += chunk
        if len(data) > MAX_PACKAGE:
            raise Problem(413, f"the package exceeds {MAX_PACKAGE // 2**20} MiB")
    try:
        vnfd, files = await run_in_threadpool(read_package, data)
    except PackageError as e:
        raise Problem(400, f"VNF package: {e}") from None
    pkg_id, created = await _save_package(request, vnfd, files, data)
    return answer({"id": pkg_id, "vnfdId": vnfd.id, "onboardingState": "ONBOARDED",
                   "flavours": sorted(vnfd.flavours)}, 201 if created else 200)


async def list_packages(request: Request) -> Response:
    return answer(await db(request, store.list_packages))


# --- OAuth 2.0 token endpoint ---------------------------------------------------------------


async def token(request: Request) -> Response:
    """RFC 6749 4.4: client credentials in the Authorization header (Basic) or the form."""
    form = await request.form()
    if form.get("grant_type") != "client_credentials":
        return JSONResponse({"error": "unsupported_grant_type"}, 400)
    header = request.headers.get("authorization", "")
    if not header and form.get("client_id") and form.get("client_secret"):
        header = httpx.BasicAuth(str(form["client_id"]), str(form["client_secret"]))._auth_header
    basic: EtsiBasicAuth = request.app.state.basic
    refused = await basic._check(request.scope, header)
    if refused is not None:
        if refused.status_code == 401:
            return JSONResponse({"error": "invalid_client"}, 401,
                                headers={"WWW-Authenticate": 'Basic realm="etsi"'})
        return refused
    cfg: NodeConfig = request.app.state.cfg
    key = request.app.state.auth.token_key
    issued = etsi_auth.issue_token(key, request.app.state.auth.user.name, cfg.etsi.token_ttl_s)
    return JSONResponse({"access_token": issued, "token_type": "bearer", "expires_in": cfg.etsi.token_ttl_s},
                        headers={"Cache-Control": "no-store", "Pragma": "no-cache"})


# --- authentication and the Version header --------------------------------------------------


class EtsiBasicAuth(BasicAuth):
    realm = "etsi"
    what = "ETSI"

    def refuse(self, status: int, message: str, headers: dict[str, str]) -> Response:
        return problem(status, message, headers)


class EtsiGuard:
    """In front of ``/vnflcm`` and ``/esc``: a valid bearer token passes; else HTTP Basic
    (EtsiBasicAuth: scrypt, the verified-header cache, the failed-login budget). A
    request naming another major API version in ``Version`` gets 406."""

    def __init__(self, app: ASGIApp, auth: etsi_auth.EtsiAuth, failed_logins: FailedLogins) -> None:
        self.app, self.token_key = app, auth.token_key
        self.basic = EtsiBasicAuth(app, user=auth.user, prefix="", failed_logins=failed_logins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not (path.startswith("/vnflcm") or path.startswith("/esc/")):
            await self.app(scope, receive, send)
            return
        if "\x00" in path:  # names nothing (PostgreSQL could not even look it up: a 503)
            await problem(404, "no resource has a NUL character in its path")(scope, receive, send)
            return
        headers = Headers(scope=scope)
        version = headers.get("version")
        if version and version.split(".")[0] != API_VERSION.split(".")[0]:
            await problem(406, f"API version {version} is not supported; this VNFM has {API_VERSION}")(
                scope, receive, send)
            return
        authorization = headers.get("authorization", "")
        if authorization[:7].lower() == "bearer ":
            if etsi_auth.check_token(self.token_key, authorization[7:].strip()) is None:
                await problem(401, "the access token is invalid or expired",
                              {"WWW-Authenticate": 'Bearer realm="etsi", error="invalid_token"'})(
                    scope, receive, send)
                return
            await self.app(scope, receive, send)
            return
        await self.basic(scope, receive, send)


async def on_problem(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Problem)
    return problem(exc.status, exc.detail, exc.headers)


async def on_db_error(request: Request, exc: Exception) -> Response:
    log.warning("%s %s: %s", request.method, request.url.path, one_line(exc))
    return problem(503, f"database unavailable: {one_line(exc)}", {"Retry-After": "1"})


async def on_http_error(request: Request, exc: Exception) -> Response:
    status = getattr(exc, "status_code", 500)
    detail = getattr(exc, "detail", "error")
    return problem(status, str(detail), getattr(exc, "headers", None))


async def health(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


def create_app(cfg: NodeConfig, conninfo: str, auth: etsi_auth.EtsiAuth, *, pool_timeout: float = 5.0,
               worker_options: Mapping[str, Any] | None = None,
               sender_options: Mapping[str, Any] | None = None,
               grant: Callable[..., str | None] | None = None, background_after: float = 0.0,
               vim: Any = None,
               packages: Any = None) -> FastAPI:
    """The ASGI app; the pool, the LCM worker and the notification sender run with its
    lifespan (on the active only)."""
    from esc.services.callbacks import ha_networks, pair_addresses

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = ConnectionPool(conninfo, min_size=1, max_size=6, timeout=pool_timeout, open=False,
                              name="escetsi", check=ConnectionPool.check_connection,
                              kwargs={"application_name": "escetsi", "connect_timeout": 2})
        pool.open(wait=False)
        sender = NotificationSender(conninfo, app.state.callback_policy, **(sender_options or {}))
        worker = LcmWorker(conninfo, notification_links(cfg), grant=grant, on_notified=sender.wake,
                           vim=vim, **(worker_options or {}))
        app.state.pool, app.state.worker, app.state.sender = pool, worker, sender
        # woken when a controller transaction finishes (an operation may wait for it)
        listener = WorkListener(conninfo, worker.wake, DONE_CHANNEL, "escetsi-listen")
        worker.start(after=background_after)
        sender.start(after=background_after)
        listener.start(after=background_after)
        try:
            yield
        finally:
            worker.request_stop()
            sender.request_stop()
            listener.request_stop()
            await run_in_threadpool(worker.stop, 2.0)
            await run_in_threadpool(listener.stop, 1.0)
            await run_in_threadpool(sender.stop, 1.0)
            await run_in_threadpool(pool.close, 2.0)

    app = FastAPI(title="escetsi", version=API_VERSION, lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None,
                  exception_handlers={Problem: on_problem, psycopg.Error: on_db_error,
                                      CommitNotConfirmed: on_db_error, 404: on_http_error,
                                      405: on_http_error})
    from esc.ha.vip import addresses

    app.state.cfg = cfg
    app.state.auth = auth
    app.state.packages = packages  # the NFVO's package source (esc.etsi.nfvo_packages), or None
    app.state.callback_policy = CallbackPolicy(cfg.callbacks, pair_addresses(cfg),
                                               ha_networks(cfg, addresses() if cfg.ha else []))
    app.state.tokens = Tokens(app.state.callback_policy)
    route = app.add_route
    route("/health", health, ["GET"])
    route("/vnflcm/api_versions", api_versions, ["GET"])
    route(f"{PREFIX}/api_versions", api_versions, ["GET"])
    route(f"{PREFIX}/vnf_instances", create_instance, ["POST"])
    route(f"{PREFIX}/vnf_instances", list_instances, ["GET"])
    route(f"{PREFIX}/vnf_instances/{{inst_id}}", get_instance, ["GET"])
    route(f"{PREFIX}/vnf_instances/{{inst_id}}", modify_instance, ["PATCH"])
    route(f"{PREFIX}/vnf_instances/{{inst_id}}", delete_instance, ["DELETE"])
    for task in lcm.TASKS:
        route(f"{PREFIX}/vnf_instances/{{inst_id}}/{task}", task_endpoint(task), ["POST"])
    route(f"{PREFIX}/vnf_lcm_op_occs", list_ops, ["GET"])
    route(f"{PREFIX}/vnf_lcm_op_occs/{{op_id}}", get_op, ["GET"])
    for task in ("retry", "rollback", "fail", "cancel"):
        route(f"{PREFIX}/vnf_lcm_op_occs/{{op_id}}/{task}", op_task_endpoint(task), ["POST"])
    route(f"{PREFIX}/subscriptions", create_subscription, ["POST"])
    route(f"{PREFIX}/subscriptions", list_subscriptions, ["GET"])
    route(f"{PREFIX}/subscriptions/{{sub_id}}", get_subscription, ["GET"])
    route(f"{PREFIX}/subscriptions/{{sub_id}}", delete_subscription, ["DELETE"])
    route("/esc/v1/vnf_packages", onboard_package, ["POST"])
    route("/esc/v1/vnf_packages", list_packages, ["GET"])
    route(etsi_auth.TOKEN_PATH, token, ["POST"])
    failed_logins = FailedLogins()  # one budget for the API and the token endpoint
    app.state.basic = EtsiBasicAuth(app, user=auth.user, prefix="", failed_logins=failed_logins)
    app.add_middleware(EtsiGuard, auth=auth, failed_logins=failed_logins)
    app.add_middleware(RequestMetrics, service="etsi")  # outermost: what a client waits
    return app

