"""The northbound REST API, under ``/v0`` (FastAPI; OpenAPI at ``/openapi.json``).

Resources (``{name}`` of a deployment may contain "/")::

    /v0/tenants[/{name}]
    /v0/networks[/{name}]
    /v0/networks/{network}/subnets[/{name}]
    /v0/flavors[/{name}]
    /v0/images[/{name}]
    /v0/tenants/{tenant}/volumes[/{name}]
    /v0/tenants/{tenant}/deployments[/{name}]
    GET the collection or one; POST the collection; PUT or DELETE one.

    POST /v0/deployments {"name"}     a deployment in tenant "default", with no VM groups;
                                      201 once it is committed (kept from the first version)
    GET  /v0/deployments[/{name}]     every deployment / one in tenant "default"
    GET  /v0/transactions[/{id}]      state of the asynchronous writes
    GET  /v0/notifications?since=N    events with id > N

Bodies are JSON or XML (``Content-Type``); ``Accept`` chooses the answer's format
(JSON unless XML is preferred). A GET answers from the database at once. A POST, PUT
or DELETE records a transaction and answers 202 ``{"transaction_id", "status"}``; the
worker does it (see transactions.py) and, if the request had a ``callback`` header,
POSTs the result there (see callbacks.py).

Errors, always ``{"error": "...", "details": [...]?}``: 400 malformed body or bad
field, 401, 404 unknown resource (or parent in the path), 409 exists with another
body / in use / built in, 413 body over 64 KiB, 415 not JSON or XML, 422 reference to
an unknown image, flavor or network (named), or an Idempotency-Key reused for another
request, 503 database unavailable (nothing was recorded; retry).
"""

from __future__ import annotations

import inspect
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal
from urllib.parse import quote

import psycopg
from fastapi import APIRouter, FastAPI, Header, Path, Query
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from psycopg_pool import ConnectionPool
from pydantic import BaseModel, ValidationError
from pydantic.json_schema import models_json_schema
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from esc.services import events, models, store, transactions, xmlio
from esc.services.callbacks import CallbackPolicy
from esc.services.db import commit_durably
from esc.services.schema import DEFAULT_TENANT
from esc.services.store import KINDS, Fail, Kind
from esc.services.transactions import WriteRequest

log = logging.getLogger("esc.escmanager.api")

MAX_BODY = 64 * 1024
JSON_TYPES = ("application/json",)
XML_TYPES = ("application/xml", "text/xml")


# --- formats -------------------------------------------------------------------------------


def wants_xml(request: Request) -> bool:
    """Whether the client prefers XML: an XML type in Accept ranked above JSON."""
    best = {"xml": -1.0, "json": -1.0, "any": -1.0}
    for part in request.headers.get("accept", "").split(","):
        mtype, _, params = part.partition(";")
        mtype, q = mtype.strip().lower(), 1.0
        for p in params.split(";"):
            k, _, v = p.strip().partition("=")
            if k == "q":
                try:
                    q = float(v)
                except ValueError:
                    q = 0.0
        kind = "xml" if mtype in XML_TYPES else "json" if mtype in JSON_TYPES else \
            "any" if mtype in ("*/*", "application/*") else None
        if kind:
            best[kind] = max(best[kind], q)
    return best["xml"] > 0 and best["xml"] > best["json"]


def respond(request: Request, data: Any, root: str, status: int = 200,
            headers: dict[str, str] | None = None) -> Response:
    if wants_xml(request):
        return Response(xmlio.render(root, data), status_code=status, headers=headers,
                        media_type="application/xml")
    return JSONResponse(data, status_code=status, headers=headers)


def error(request: Request | None, status: int, message: str, details: list[str] | None = None,
          headers: dict[str, str] | None = None) -> Response:
    if request is not None and wants_xml(request):
        data: dict[str, Any] = {"message": message}
        if details:
            data["details"] = details
        return Response(xmlio.render("error", data), status_code=status, headers=headers,
                        media_type="application/xml")
    body: dict[str, Any] = {"error": message}
    if details:
        body["details"] = details
    return JSONResponse(body, status_code=status, headers=headers)


def _object_no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise ValueError("duplicate key in object")
    return obj


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _details(e: ValidationError) -> list[str]:
    out = []
    for err in e.errors(include_url=False, include_input=False, include_context=False):
        loc = ".".join(str(x) for x in err["loc"]) or "body"
        msg = "unknown field" if err["type"] == "extra_forbidden" else err["msg"]
        out.append(f"{loc}: {msg}")
    return out


async def read_body(request: Request, model: type[BaseModel]) -> BaseModel:
    """The body as ``model``, or HTTPException 415/413/400. Reads at most MAX_BODY."""
    ctype = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if ctype not in JSON_TYPES + XML_TYPES:
        raise HTTPException(415, "Content-Type must be application/json or application/xml")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY:
        raise HTTPException(413, f"body larger than {MAX_BODY} bytes")
    body = bytearray()
    async for chunk in request.stream():  # chunked bodies have no length to check
        body += chunk
        if len(body) > MAX_BODY:
            raise HTTPException(413, f"body larger than {MAX_BODY} bytes")
    what = xmlio.xml_name(model)
    if ctype in XML_TYPES:
        try:
            data: Any = xmlio.parse(bytes(body), model)
        except xmlio.XmlError as e:
            raise HTTPException(400, str(e)) from None
        strict = False  # XML has only text: "3" and "true" are the model's to convert
    else:
        try:
            data = json.loads(body, object_pairs_hook=_object_no_duplicates, parse_constant=_no_constant)
        except (ValueError, RecursionError) as e:  # includes JSONDecodeError, UnicodeDecodeError
            raise HTTPException(400, f"invalid JSON: {e}") from None
        if not isinstance(data, dict):
            raise HTTPException(400, f"the body must be a JSON object (a {what})")
        strict = True
    try:
        return model.model_validate(data, strict=strict)
    except ValidationError as e:
        details = _details(e)
        raise InvalidBody(f"invalid {what}: {'; '.join(details[:3])}", details) from None


class InvalidBody(Exception):
    def __init__(self, message: str, details: list[str]) -> None:
        super().__init__(message)
        self.message, self.details = message, details


# --- database calls (run in the thread pool) ------------------------------------------------


def _pool(request: Request) -> ConnectionPool:
    return request.app.state.pool


async def _read(request: Request, fn: Callable[..., Any], *args: Any) -> Any:
    def run() -> Any:
        with _pool(request).connection() as conn:
            return fn(conn, *args)
    return await run_in_threadpool(run)


def _submit(pool: ConnectionPool, req: WriteRequest, then: Callable[..., Any] | None = None) -> Any:
    with pool.connection() as conn:
        tx, replayed = transactions.submit(conn, req)
        extra = then(conn, tx, replayed) if then else None
        commit_durably(conn)
    return tx, replayed, extra


def callback_policy(request: Request) -> CallbackPolicy:
    return getattr(request.app.state, "callback_policy", None) or CallbackPolicy()


def _wake(request: Request) -> None:
    worker = getattr(request.app.state, "worker", None)
    if worker is not None:
        worker.wake()


async def write(request: Request, op: str, kind: Kind, parent: str | None, name: str,
                spec: dict[str, Any] | None, idempotency_key: str | None, callback: str | None) -> Response:
    if callback is not None:
        problem = callback_policy(request).url_problem(callback)
        if problem:
            raise HTTPException(400, problem)
    req = WriteRequest(op=op, kind=kind.name, parent=parent, name=name, spec=spec,
                       method=request.method, path=request.url.path,
                       idempotency_key=idempotency_key, callback=callback)
    tx, replayed, _ = await run_in_threadpool(_submit, _pool(request), req)
    if not replayed:
        log.info("transaction %d accepted: %s %s %s", tx["id"], op, kind.name, kind.key(parent, name))
        _wake(request)
    headers = {"Location": f"/v0/transactions/{tx['id']}"}
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    return respond(request, {"transaction_id": tx["id"], "status": tx["status"]}, "transaction", 202, headers)


# --- OpenAPI helpers -----------------------------------------------------------------------


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _body_doc(model: type[BaseModel]) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {
        "application/json": {"schema": _ref(model)},
        "application/xml": {"schema": _ref(model)},
    }}}


_XML = {"content": {"application/xml": {}}}
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": models.Error, "description": text, **_XML}
    for code, text in [
        (400, "malformed body, invalid field or parameter"),
        (401, "authentication required"),
        (404, "no such resource (or parent in the path)"),
        (409, "exists with another body, in use, or built in"),
        (413, "body larger than 64 KiB"),
        (415, "Content-Type is not JSON or XML"),
        (422, "refers to an unknown resource, or Idempotency-Key reused for another request"),
        (503, "database unavailable: nothing was recorded, retry"),
    ]
}
INPUT_MODELS: list[type[BaseModel]] = [
    *(k.in_model for k in KINDS.values()), *(k.spec_model for k in KINDS.values()), models.LegacyDeploymentIn,
]

NamePath = Annotated[str, Path(min_length=1, max_length=models.MAX_NAME, pattern=r"^[^\x00]+$")]
IdempotencyKey = Annotated[
    str | None,
    Header(alias="Idempotency-Key", max_length=200, pattern=r"^[\x21-\x7e]+$",
           description="a retry with the same key returns the original transaction"),
]
CallbackUrl = Annotated[
    str | None,
    Header(alias="callback", max_length=2048, description="URL to POST the transaction's result to"),
]


def _endpoint(fn: Callable[..., Awaitable[Response]], params: list[tuple[Any, ...]]) -> Callable[..., Any]:
    """``fn(request, **params)`` with the signature FastAPI reads the parameters from:
    ``params`` are (name, annotation) or (name, annotation, default)."""

    async def endpoint(request: Request, **kw: Any) -> Response:
        return await fn(request, **kw)

    endpoint.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Request)]
        + [inspect.Parameter(p[0], inspect.Parameter.KEYWORD_ONLY, annotation=p[1],
                             default=p[2] if len(p) > 2 else inspect.Parameter.empty) for p in params]
    )
    return endpoint


def _add_kind(router: APIRouter, kind: Kind) -> None:
    parent_params: list[tuple[Any, ...]]
    if kind.parent is None:
        base, parent_params = f"/{kind.plural}", []
    elif kind.parent == "network":
        base, parent_params = f"/networks/{{network}}/{kind.plural}", [("network", NamePath)]
    else:
        base, parent_params = f"/tenants/{{tenant}}/{kind.plural}", [("tenant", NamePath)]
    one = f"{base}/{{name:path}}" if kind.name == "deployment" else f"{base}/{{name}}"
    name_params: list[tuple[Any, ...]] = [*parent_params, ("name", NamePath)]
    write_params = [("idempotency_key", IdempotencyKey, None), ("callback", CallbackUrl, None)]
    tags = [kind.plural]

    def parent_of(kw: dict[str, Any]) -> str | None:
        return kw.get(kind.parent) if kind.parent else None

    async def list_(request: Request, **kw: Any) -> Response:
        parent = parent_of(kw)

        def run(conn: psycopg.Connection) -> list[dict[str, Any]] | None:
            if parent is not None and not store.exists(conn, KINDS[kind.parent or ""], None, parent):
                return None
            return store.list_all(conn, kind, parent)
        found = await _read(request, run)
        if found is None:
            raise Fail(404, f"{kind.parent} {parent} not found")
        return respond(request, found, kind.plural)

    async def get_(request: Request, **kw: Any) -> Response:
        parent, name = parent_of(kw), kw["name"]
        found = await _read(request, store.get, kind, parent, name)
        if found is None:
            raise Fail(404, f"{kind.name} {kind.key(parent, name)} not found")
        return respond(request, found, kind.name)

    async def create(request: Request, **kw: Any) -> Response:
        body = await read_body(request, kind.in_model)
        spec = body.model_dump(mode="json")
        return await write(request, "create", kind, parent_of(kw), spec["name"], spec,
                           kw["idempotency_key"], kw["callback"])

    async def update(request: Request, **kw: Any) -> Response:
        body = await read_body(request, kind.spec_model)
        spec = {"name": kw["name"], **body.model_dump(mode="json")}
        return await write(request, "update", kind, parent_of(kw), kw["name"], spec,
                           kw["idempotency_key"], kw["callback"])

    async def delete(request: Request, **kw: Any) -> Response:
        return await write(request, "delete", kind, parent_of(kw), kw["name"], None,
                           kw["idempotency_key"], kw["callback"])

    out = kind.out_model
    router.add_api_route(base, _endpoint(list_, parent_params), methods=["GET"], tags=tags,
                         summary=f"List {kind.plural}", response_model=list[out],  # type: ignore[valid-type]
                         responses={200: _XML, **ERROR_RESPONSES})
    router.add_api_route(base, _endpoint(create, parent_params + write_params), methods=["POST"], tags=tags,
                         summary=f"Create a {kind.name}", status_code=202, response_model=models.Accepted,
                         responses={202: _XML, **ERROR_RESPONSES}, openapi_extra=_body_doc(kind.in_model))
    router.add_api_route(one, _endpoint(get_, name_params), methods=["GET"], tags=tags,
                         summary=f"Show a {kind.name}", response_model=out,
                         responses={200: _XML, **ERROR_RESPONSES})
    router.add_api_route(one, _endpoint(update, name_params + write_params), methods=["PUT"], tags=tags,
                         summary=f"Replace a {kind.name}'s attributes", status_code=202,
                         response_model=models.Accepted, responses={202: _XML, **ERROR_RESPONSES},
                         openapi_extra=_body_doc(kind.spec_model))
    router.add_api_route(one, _endpoint(delete, name_params + write_params), methods=["DELETE"], tags=tags,
                         summary=f"Delete a {kind.name}", status_code=202, response_model=models.Accepted,
                         responses={202: _XML, **ERROR_RESPONSES})


# --- the first version's /v0/deployments, transactions, notifications ----------------------


def _legacy_create(conn: psycopg.Connection, tx: dict[str, Any], replayed: bool) -> dict[str, Any] | None:
    """In the accepting database transaction: write the deployment row itself, so that
    the 201 means the deployment is committed (on both nodes). The worker then finds
    it (created by this transaction) and finishes the transaction."""
    if not replayed:
        store.deployment_phase_a(conn, transactions._tx(tx))
    if tx["kind"] != "deployment":
        return None
    return store.get(conn, store.DEPLOYMENT, DEFAULT_TENANT, tx["name"])


async def legacy_post(request: Request, idempotency_key: IdempotencyKey = None,
                      callback: CallbackUrl = None) -> Response:
    body = await read_body(request, models.LegacyDeploymentIn)
    if callback is not None and (problem := callback_policy(request).url_problem(callback)):
        raise HTTPException(400, problem)
    spec = models.DeploymentIn(name=body.name).model_dump(mode="json")  # type: ignore[attr-defined]
    req = WriteRequest(op="create", kind="deployment", parent=DEFAULT_TENANT, name=spec["name"], spec=spec,
                       method="POST", path=request.url.path, idempotency_key=idempotency_key,
                       callback=callback)
    tx, replayed, deployment = await run_in_threadpool(_submit, _pool(request), req, _legacy_create)
    if not replayed:
        log.info("created deployment id=%d name=%r (transaction %d)",
                 deployment["id"] if deployment else 0, body.name, tx["id"])
        _wake(request)
    headers = {"Location": f"/v0/tenants/{DEFAULT_TENANT}/deployments/{quote(tx['name'], safe='')}"}
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    if deployment is None or deployment.get("transaction_id") != tx["id"]:
        # an Idempotency-Key of another kind of request, or the deployment since deleted
        return respond(request, {"transaction_id": tx["id"], "status": tx["status"]}, "transaction", 202,
                       headers)
    return respond(request, deployment, "deployment", 201, headers)


async def legacy_list(request: Request) -> Response:
    return respond(request, await _read(request, store.list_all, store.DEPLOYMENT), "deployments")


async def legacy_get(request: Request, name: NamePath) -> Response:
    found = await _read(request, store.get, store.DEPLOYMENT, DEFAULT_TENANT, name)
    if found is None:
        raise Fail(404, f"deployment {name} not found")
    return respond(request, found, "deployment")


BigId = Annotated[int, Query(ge=0, le=2**63 - 1)]


async def get_transaction(request: Request,
                          transaction_id: Annotated[int, Path(ge=1, le=2**63 - 1)]) -> Response:
    found = await _read(request, transactions.get_transaction, transaction_id)
    if found is None:
        raise Fail(404, f"transaction {transaction_id} not found")
    return respond(request, found, "transaction")


async def list_transactions(
    request: Request, since: BigId = 0, limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    status: Literal["accepted", "running", "succeeded", "failed"] | None = None,
) -> Response:
    found = await _read(request, transactions.list_transactions, since, limit, status)
    return respond(request, found, "transactions")


async def notifications(request: Request, since: BigId = 0,
                        limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> Response:
    return respond(request, await _read(request, events.list_events, since, limit), "notifications")


def router() -> APIRouter:
    r = APIRouter(prefix="/v0")
    r.add_api_route("/deployments", legacy_post, methods=["POST"], tags=["deployments"], status_code=201,
                    summary="Create a deployment with no VM groups in tenant default (synchronous)",
                    response_model=models.Deployment,
                    responses={201: _XML, 202: {"model": models.Accepted, **_XML}, **ERROR_RESPONSES},
                    openapi_extra=_body_doc(models.LegacyDeploymentIn))
    r.add_api_route("/deployments", legacy_list, methods=["GET"], tags=["deployments"],
                    summary="List the deployments of every tenant", response_model=list[models.Deployment],
                    responses={200: _XML, **ERROR_RESPONSES})
    r.add_api_route("/deployments/{name:path}", legacy_get, methods=["GET"], tags=["deployments"],
                    summary="Show a deployment of tenant default", response_model=models.Deployment,
                    responses={200: _XML, **ERROR_RESPONSES})
    for kind in KINDS.values():
        _add_kind(r, kind)
    r.add_api_route("/transactions", list_transactions, methods=["GET"], tags=["transactions"],
                    summary="List transactions", response_model=list[models.Transaction],
                    responses={200: _XML, **ERROR_RESPONSES})
    r.add_api_route("/transactions/{transaction_id}", get_transaction, methods=["GET"], tags=["transactions"],
                    summary="Show a transaction", response_model=models.Transaction,
                    responses={200: _XML, **ERROR_RESPONSES})
    r.add_api_route("/notifications", notifications, methods=["GET"], tags=["notifications"],
                    summary="Events with id > since, oldest first", response_model=list[models.Event],
                    responses={200: _XML, **ERROR_RESPONSES})
    return r


# --- the app's error handlers and OpenAPI --------------------------------------------------


async def on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return error(request, exc.status_code, str(exc.detail), headers=exc.headers)


async def on_fail(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Fail)
    return error(request, exc.code, exc.message)


async def on_invalid_body(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, InvalidBody)
    return error(request, 400, exc.message, exc.details)


async def on_invalid_params(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    details = []
    for err in exc.errors():
        loc = ".".join(str(x) for x in err.get("loc", ()))
        details.append(f"{loc}: {err.get('msg', 'invalid')}")
    return error(request, 400, f"invalid request: {'; '.join(details[:3])}", details)


EXCEPTION_HANDLERS: dict[Any, Callable[[Request, Exception], Awaitable[Response]]] = {
    HTTPException: on_http_error,
    Fail: on_fail,
    InvalidBody: on_invalid_body,
    RequestValidationError: on_invalid_params,
}


def install_openapi(app: FastAPI) -> None:
    """``app.openapi()`` with the request body models (read by hand, so unknown to
    FastAPI) added to the components. Built on first request, not at start-up."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description,
                                 routes=app.routes, separate_input_output_schemas=False)
            _, defs = models_json_schema([(m, "validation") for m in INPUT_MODELS],
                                         ref_template="#/components/schemas/{model}")
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for name, definition in defs.get("$defs", {}).items():
                components.setdefault(name, definition)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
