"""Conformance checks against the published ETSI GS NFV-SOL 003 V2.4.1 OpenAPI files.

Responses, requests, notifications and grant requests of the VNF LCM service (/vnflcm/v1)
are validated against the files in ``<repo>/../shared/reference/etsi`` (read at run time,
never copied into the project; a test using them is skipped when they are absent), never
against hand-written expectations. ``jsonschema_rs`` (already here for schemathesis) does
the validation, formats included.

How the files are read:

- They are published fully dereferenced: no ``definitions``/``components`` section, every
  data type is inlined where it is used. :data:`NAMED` says where each type is used, so
  :meth:`Spec.schema` can find it by name.
- Swagger 2.0 cannot mark a response header required; ETSI writes the header's cardinality
  as ``minimum``/``maximum`` on its string schema (``minimum: 1`` = mandatory). ``Location``
  has none: it is mandatory where the response's description says 'shall include a
  "Location" HTTP header', and on 201 (SOL003 says it for POST /vnf_instances, whose
  description omits it); elsewhere (the 202 of retry/rollback/cancel lists it, SOL003 only
  wants an empty body) it is checked when sent.
- The formats are not JSON Schema's; :data:`FORMATS` gives what each one means.
- Places where the files cannot be followed as written are listed in :data:`ERRATA`; each
  workaround is applied in one place and counted (``Spec.errata_applied``).

Tests import it as ``from etsi_spec import Spec`` (tests/ is on sys.path: pytest puts the
directory of tests/conftest.py there).
"""

from __future__ import annotations

import copy
import ipaddress
import json
import re
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import jsonschema_rs
import pytest
import yaml

SPEC_DIR = Path(__file__).resolve().parents[1] / ".." / "shared" / "reference" / "etsi"
LCM_FILE = "SOL003-VNFLifecycleManagement-API.oas3.yaml"
LCM_SWAGGER_FILE = "SOL003-VNFLifecycleManagement-API.yaml"  # the published original of LCM_FILE
GRANT_FILE = "SOL003-VNFLifecycleOperationGranting-API.yaml"
# Not in shared/ today (see NOTIFICATION_GAP); picked up if it is ever added there.
NOTIFICATION_GLOB = "SOL003-VNFLifecycleManagementNotification-API.*"

NOTIFICATION_GAP = (
    "the SOL003 2.4.1 files in shared/reference/etsi define no notification schemas "
    "(VnfLcmOperationOccurrenceNotification etc. live in the VNFLifecycleManagementNotification "
    f"API file, which is not there: add it as {NOTIFICATION_GLOB})"
)

# Until that file is there, each notification is checked against a schema assembled from
# the spec's own data types: every attribute of the notification (SOL003 V2.4.1 clauses
# 5.5.2.17 to 5.5.2.19) that is the same data type as an attribute of a type the files do
# define takes that attribute's schema from them, with the clause's cardinality (required:
# 1 or 1..N). Only the clause's attribute list, cardinalities and the notificationStatus
# values (START, RESULT: clause 5.5.4.6, not in the files) are written here.
# notification type -> attribute -> (where in the files: (type, JSON path) or a literal
# schema, required)
_OP_OCC = "VnfLcmOpOcc"
_LINK = (_OP_OCC, ("properties", "_links", "properties", "vnfInstance"))  # the Link type
_NOTIFICATION_ATTRIBUTES: dict[str, dict[str, tuple[Any, bool]]] = {
    "VnfLcmOperationOccurrenceNotification": {
        "id": ((_OP_OCC, ("properties", "id")), True),
        "subscriptionId": (("LccnSubscription", ("properties", "id")), True),
        "timeStamp": ((_OP_OCC, ("properties", "stateEnteredTime")), True),
        "notificationStatus": ({"type": "string", "enum": ["START", "RESULT"]}, True),
        "operationState": ((_OP_OCC, ("properties", "operationState")), True),
        "vnfInstanceId": ((_OP_OCC, ("properties", "vnfInstanceId")), True),
        "operation": ((_OP_OCC, ("properties", "operation")), True),
        "isAutomaticInvocation": ((_OP_OCC, ("properties", "isAutomaticInvocation")), True),
        "vnfLcmOpOccId": ((_OP_OCC, ("properties", "id")), True),
        "affectedVnfcs": ((_OP_OCC, ("properties", "resourceChanges", "properties", "affectedVnfcs")), False),
        "affectedVirtualLinks":
            ((_OP_OCC, ("properties", "resourceChanges", "properties", "affectedVirtualLinks")), False),
        "affectedVirtualStorages":
            ((_OP_OCC, ("properties", "resourceChanges", "properties", "affectedVirtualStorages")), False),
        "changedInfo": ((_OP_OCC, ("properties", "changedInfo")), False),
        "changedExtConnectivity": ((_OP_OCC, ("properties", "changedExtConnectivity")), False),
        "error": ((_OP_OCC, ("properties", "error")), False),
        "_links": ({"vnfInstance": True, "subscription": True, "vnfLcmOpOcc": False}, True),
    },
    **{nt: {
        "id": ((_OP_OCC, ("properties", "id")), True),
        "subscriptionId": (("LccnSubscription", ("properties", "id")), True),
        "timeStamp": ((_OP_OCC, ("properties", "stateEnteredTime")), True),
        "vnfInstanceId": ((_OP_OCC, ("properties", "vnfInstanceId")), True),
        "_links": ({"vnfInstance": True, "subscription": True}, True),
    } for nt in ("VnfIdentifierCreationNotification", "VnfIdentifierDeletionNotification")},
}

# Each erratum of the published 2.4.1 files that the checks work around: (key, one-line reason).
ERRATA: tuple[tuple[str, str], ...] = (
    ("task-202-body",
     "202 of scale, scale_to_level, change_flavour, terminate, heal, operate, change_ext_conn declares "
     "a VnfInstance body, but a 202 body shall be empty (as the file says for instantiate): empty is "
     "accepted, a body sent is still checked"),
    ("list-200-not-array",
     "200 of GET /vnf_lcm_op_occs and GET /subscriptions declares one object while its description "
     "says zero or more: checked as an array of it (as GET /vnf_instances declares)"),
    ("subnetId-format-IP",
     "ipAddresses[].subnetId is typed IpAddress (format IP) but names a subnet in the VIM "
     "(IdentifierInVim): its IP format is not enforced"),
    ("problem+json",
     "error responses declare only application/json for their RFC 7807 ProblemDetails: "
     "application/problem+json is accepted too"),
    ("content-type-without-body",
     "Content-Type is 1..1 (minimum: 1) on responses whose body may be absent (ProblemDetails "
     "'may be omitted/provided', the task-202-body 202s): required only when a body is sent"),
)


# --- formats -------------------------------------------------------------------------------

_URI = jsonschema_rs.Draft7Validator({"format": "uri"}, validate_formats=True)
_URI_REF = jsonschema_rs.Draft7Validator({"format": "uri-reference"}, validate_formats=True)
_MAC = re.compile(r"[0-9A-Fa-f]{2}(?:[-:][0-9A-Fa-f]{2})+")


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


# The files' own format names (date-time is JSON Schema's and checked as such): name ->
# (check, what the spec means by it).
FORMATS: dict[str, tuple[Callable[[str], bool], str]] = {
    # _links hrefs and Location: "URI of the referenced resource", an RFC 3986 URI (absolute)
    "url": (_URI.is_valid, "an absolute URI, RFC 3986"),
    # only ProblemDetails type/instance: "A URI reference according to IETF RFC 3986"
    "URI": (_URI_REF.is_valid, "a URI reference, RFC 3986"),
    # "An IPV4 or IPV6 address" in dotted decimal / colon hex
    "IP": (_is_ip, "an IPv4 or IPv6 address"),
    # "groups of two hexadecimal digits, separated by hyphens or colons"
    "MAC": (lambda v: _MAC.fullmatch(v) is not None, "a MAC address, hex pairs separated by - or :"),
}
_FORMAT_CHECKS = {name: check for name, (check, _) in FORMATS.items()}


# --- where the named data types are (the files inline them) ----------------------------------

# name -> (api, method, path template, "request" or a status): one place the spec uses it.
NAMED: dict[str, tuple[str, str, str, str]] = {
    "CreateVnfRequest": ("lcm", "POST", "/vnf_instances", "request"),
    "VnfInstance": ("lcm", "GET", "/vnf_instances/{vnfInstanceId}", "200"),
    "VnfInfoModificationRequest": ("lcm", "PATCH", "/vnf_instances/{vnfInstanceId}", "request"),
    "InstantiateVnfRequest": ("lcm", "POST", "/vnf_instances/{vnfInstanceId}/instantiate", "request"),
    "ScaleVnfRequest": ("lcm", "POST", "/vnf_instances/{vnfInstanceId}/scale", "request"),
    "ScaleVnfToLevelRequest": ("lcm", "POST", "/vnf_instances/{vnfInstanceId}/scale_to_level", "request"),
    "ChangeVnfFlavourRequest": ("lcm", "POST", "/vnf_instances/{vnfInstanceId}/change_flavour", "request"),
    "TerminateVnfRequest": ("lcm", "POST", "/vnf_instances/{vnfInstanceId}/terminate", "request"),
    "HealVnfRequest": ("lcm", "POST", "/vnf_instances/{vnfInstanceId}/heal", "request"),
    "OperateVnfRequest": ("lcm", "POST", "/vnf_instances/{vnfInstanceId}/operate", "request"),
    "ChangeExtVnfConnectivityRequest":
        ("lcm", "POST", "/vnf_instances/{vnfInstanceId}/change_ext_conn", "request"),
    "VnfLcmOpOcc": ("lcm", "GET", "/vnf_lcm_op_occs/{vnfLcmOpOccId}", "200"),
    "LccnSubscriptionRequest": ("lcm", "POST", "/subscriptions", "request"),
    "LccnSubscription": ("lcm", "GET", "/subscriptions/{subscriptionId}", "200"),
    "ProblemDetails": ("lcm", "GET", "/vnf_instances", "400"),
    "GrantRequest": ("grant", "POST", "/grants", "request"),
    "Grant": ("grant", "GET", "/grants/{grantId}", "200"),
}

# An error response's body is optional where its description says so.
_BODY_OPTIONAL = re.compile(
    r"ProblemDetails\"?\s+structure\s+may\s+be\s+(?:omitted|provided)|response\s+body\s+should\s+contain",
    re.IGNORECASE)
_SHALL_LOCATION = re.compile(r'shall\s+include\s+a\s+"?Location"?\s+HTTP\s+header', re.IGNORECASE)
_ZERO_OR_MORE = re.compile(r"zero or more|list of", re.IGNORECASE)
_TASK = re.compile(r"/vnf_instances/\{vnfInstanceId\}/[a-z_]+")
_PROBLEM_JSON = "application/problem+json"


# --- schema conversion -----------------------------------------------------------------------

def _to_jsonschema(node: Any, doc: Mapping[str, Any], stack: tuple[str, ...] = ()) -> Any:
    """An OpenAPI 3.0 / Swagger 2.0 schema object as draft-4 JSON Schema: local $refs
    inlined, ``nullable``/``x-nullable`` as a "null" type."""
    if isinstance(node, list):
        return [_to_jsonschema(x, doc, stack) for x in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        ref = node["$ref"]
        if not ref.startswith("#/"):
            raise ValueError(f"external $ref {ref!r}: only references inside the file are supported")
        if ref in stack:
            raise ValueError(f"recursive $ref {ref!r}")
        target: Any = doc
        for part in ref[2:].split("/"):
            target = target[part.replace("~1", "/").replace("~0", "~")]
        return _to_jsonschema(target, doc, (*stack, ref))
    out = {k: _to_jsonschema(v, doc, stack) for k, v in node.items()}
    if (out.pop("nullable", False) or out.pop("x-nullable", False)) and "type" in out:
        out["type"] = [*([out["type"]] if isinstance(out["type"], str) else out["type"]), "null"]
        if "enum" in out and None not in out["enum"]:
            out["enum"] = [*out["enum"], None]
    return out


def _drop_subnet_id_format(schema: Any) -> int:
    """Erratum subnetId-format-IP; returns how many places it changed."""
    if isinstance(schema, list):
        return sum(_drop_subnet_id_format(x) for x in schema)
    if not isinstance(schema, dict):
        return 0
    n = 0
    props = schema.get("properties")
    subnet = props.get("subnetId") if isinstance(props, dict) else None
    if isinstance(subnet, dict) and subnet.get("format") == "IP":
        del subnet["format"]
        n += 1
    return n + sum(_drop_subnet_id_format(v) for v in schema.values())


# --- the model of the files ------------------------------------------------------------------

@dataclass
class _Response:
    status: str
    description: str
    schema: dict[str, Any] | None
    media_types: tuple[str, ...]
    headers: dict[str, dict[str, Any]]  # name -> JSON Schema of its value
    required_headers: frozenset[str]  # lower-case names
    body_optional: str | None = None  # why an empty body is accepted though a schema is declared


@dataclass
class _Operation:
    api: str
    method: str
    template: str  # as in the file, without the base path
    base_path: str
    request_schema: dict[str, Any] | None
    request_required: bool
    responses: dict[str, _Response] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.method} {self.base_path}{self.template}"


def _header_required(name: str, schema: Mapping[str, Any], declared: bool, status: str,
                     description: str) -> bool:
    minimum = schema.get("minimum")
    if name.lower() == "location":
        return declared or status == "201" or _SHALL_LOCATION.search(description) is not None
    return declared or (isinstance(minimum, int) and minimum >= 1)


def _operations(api: str, doc: Mapping[str, Any], errata: dict[str, int]) -> list[_Operation]:
    swagger = "swagger" in doc
    base = doc.get("basePath", "") if swagger else (doc.get("servers") or [{}])[0].get("url", "")
    base = base.rstrip("/")
    ops = []
    for template, item in doc.get("paths", {}).items():
        for method, raw in item.items():
            if method not in ("get", "put", "post", "patch", "delete", "head", "options"):
                continue
            if swagger:
                body = next((p for p in raw.get("parameters", []) if p.get("in") == "body"), None)
                req = _to_jsonschema(body["schema"], doc) if body else None
                req_required = bool(body and body.get("required"))
                produces = tuple(raw.get("produces") or doc.get("produces") or ("application/json",))
            else:
                rb = raw.get("requestBody") or {}
                content = rb.get("content") or {}
                media = next((m for m in content if "json" in m), None)
                req = _to_jsonschema(content[media]["schema"], doc) if media else None
                req_required = bool(rb.get("required"))
            op = _Operation(api, method.upper(), template, base, req, req_required)
            for status, r in raw.get("responses", {}).items():
                status = str(status)
                if swagger:
                    schema = r.get("schema")
                    media_types = produces if schema is not None else ()
                    # a Swagger header object is its schema plus the header's description
                    hdrs = {n: ({k: v for k, v in h.items() if k != "description"}, False)
                            for n, h in (r.get("headers") or {}).items()}
                else:
                    content = r.get("content") or {}
                    media_types = tuple(content)
                    schema = next((c["schema"] for c in content.values() if "schema" in c), None)
                    hdrs = {n: (h.get("schema", {}), bool(h.get("required")))
                            for n, h in (r.get("headers") or {}).items()}
                headers = {n: _to_jsonschema(h, doc) for n, (h, _) in hdrs.items()}
                resp = _Response(
                    status=status,
                    description=r.get("description", ""),
                    schema=_to_jsonschema(schema, doc) if schema is not None else None,
                    media_types=media_types,
                    headers=headers,
                    required_headers=frozenset(
                        n.lower() for n, (h, declared) in hdrs.items()
                        if _header_required(n, h, declared, status, r.get("description", ""))),
                )
                if (op.method == "GET" and status == "200" and resp.schema is not None
                        and not template.endswith("}") and resp.schema.get("type") == "object"
                        and _ZERO_OR_MORE.search(resp.description)):
                    resp.schema = {"type": "array", "items": resp.schema}
                    errata["list-200-not-array"] += 1
                if resp.schema is not None and status[0] in "45" and _BODY_OPTIONAL.search(resp.description):
                    resp.body_optional = "its description lets the ProblemDetails be omitted"
                if (api == "lcm" and status == "202" and resp.schema is not None
                        and _TASK.fullmatch(template)):
                    resp.body_optional = "erratum task-202-body"
                    errata["task-202-body"] += 1
                op.responses[status] = resp
            ops.append(op)
    return ops


def _named_in(doc: Mapping[str, Any], name: str) -> Any | None:
    """A data type by name in a file that keeps names: definitions/components, or the body of
    the operation whose body parameter or path is named after it (the notification API's style)."""
    named = {**((doc.get("components") or {}).get("schemas") or {}), **(doc.get("definitions") or {})}
    found = named.get(name)
    if found is not None:
        return found
    for template, item in (doc.get("paths") or {}).items():
        for raw in item.values():
            if not isinstance(raw, dict):
                continue
            for p in raw.get("parameters", []):
                if p.get("in") == "body" and p.get("name") == name:
                    return p["schema"]
            content = (raw.get("requestBody") or {}).get("content") or {}
            if template.rstrip("/").endswith(name) and content:
                return next(iter(content.values())).get("schema")
    return None


def _read(path: Path) -> Any:
    with path.open(encoding="utf-8") as f:
        return yaml.load(f, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # libyaml: 5x faster


def spec_dir() -> Path:
    """The directory of the ETSI files, or skip the calling test."""
    missing = [f for f in (LCM_FILE, GRANT_FILE) if not (SPEC_DIR / f).is_file()]
    if missing:
        pytest.skip(f"ETSI SOL003 files {missing} not in {SPEC_DIR.resolve()} "
                    "(CI lays shared/ beside the clone)")
    return SPEC_DIR.resolve()


# --- the checker -----------------------------------------------------------------------------

def _escape(token: Any) -> str:
    return str(token).replace("~", "~0").replace("/", "~1")


def _pointer(path: Any) -> str:
    return "".join(f"/{_escape(p)}" for p in path)


def _instance_at(instance: Any, path: Any) -> Any:
    for p in path:
        instance = instance[p]
    return instance


def _short(text: str, limit: int = 240) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _fail(what: str, violations: list[str]) -> None:
    if violations:
        lines = "\n".join(f"  {v}" for v in violations)
        raise AssertionError(f"{what}: {len(violations)} violation(s) of SOL003 V2.4.1:\n{lines}")


class Spec:
    """The SOL003 VNF LCM (OpenAPI 3 conversion) and Granting (Swagger 2.0) files, loaded once
    per session by :meth:`load`."""

    _cached: ClassVar[Spec | None] = None
    load_seconds: ClassVar[float] = 0.0

    def __init__(self, lcm: Mapping[str, Any], grant: Mapping[str, Any],
                 notifications: Mapping[str, Any] | None = None) -> None:
        self.errata_applied: dict[str, int] = {key: 0 for key, _ in ERRATA}
        self._docs = {"lcm": lcm, "grant": grant}
        self.operations = _operations("lcm", lcm, self.errata_applied) + _operations(
            "grant", grant, self.errata_applied)
        self._routes = [(re.compile(re.escape(op.base_path) + re.sub(
            r"\\\{[^}]+\\\}", "[^/]+", re.escape(op.template)) + "$"), op) for op in self.operations]
        for op in self.operations:
            for schema in [op.request_schema, *(r.schema for r in op.responses.values())]:
                self.errata_applied["subnetId-format-IP"] += _drop_subnet_id_format(schema)
        self.errata_applied["problem+json"] = sum(
            1 for op in self.operations for r in op.responses.values()
            if r.schema is not None and r.status[0] in "45" and _PROBLEM_JSON not in r.media_types)
        self.errata_applied["content-type-without-body"] = sum(
            1 for op in self.operations for r in op.responses.values()
            if r.body_optional and "content-type" in r.required_headers)
        self._validators: dict[int, tuple[dict[str, Any], Any]] = {}
        self.notification_schemas: dict[str, dict[str, Any]] = {}
        # the notification types the spec knows: the subscription filter's enum
        filt = self.schema("LccnSubscriptionRequest")["properties"]["filter"]["properties"]
        self.notification_types: tuple[str, ...] = tuple(filt["notificationTypes"]["items"]["enum"])
        if notifications is not None:
            for nt in self.notification_types:
                found = _named_in(notifications, nt)
                if found is not None:
                    s = _to_jsonschema(found, notifications)
                    _drop_subnet_id_format(s)
                    self.notification_schemas[nt] = s
        # the types the notification file would give, assembled from the spec's own types
        self.assembled_notification_schemas = {
            nt: self._assemble_notification(nt) for nt in self.notification_types
            if nt not in self.notification_schemas and nt in _NOTIFICATION_ATTRIBUTES}

    def _assemble_notification(self, nt: str) -> dict[str, Any]:
        """See _NOTIFICATION_ATTRIBUTES."""
        def taken(where: tuple[str, tuple[str, ...]]) -> dict[str, Any]:
            node: Any = self.schema(where[0])
            for key in where[1]:
                node = node[key]
            return copy.deepcopy(node)

        props: dict[str, Any] = {}
        required: list[str] = []
        link = taken(_LINK)
        for attr, (where, needed) in _NOTIFICATION_ATTRIBUTES[nt].items():
            if attr == "_links":
                props[attr] = {"type": "object", "properties": {k: link for k in where},
                               "required": [k for k, v in where.items() if v]}
            else:
                props[attr] = where if isinstance(where, dict) else taken(where)
            if needed:
                required.append(attr)
        props["notificationType"] = {"type": "string", "enum": [nt]}
        return {"type": "object", "required": ["notificationType", *required], "properties": props}

    @classmethod
    def load(cls) -> Spec:
        """The files from ``<repo>/../shared/reference/etsi``, read once per session; skips the
        calling test when they are absent."""
        if cls._cached is None:
            d = spec_dir()
            started = time.perf_counter()
            notif = sorted(d.glob(NOTIFICATION_GLOB))
            cls._cached = cls(_read(d / LCM_FILE), _read(d / GRANT_FILE), _read(notif[0]) if notif else None)
            cls.load_seconds = time.perf_counter() - started
        return cls._cached

    # --- lookups

    def schema(self, name: str) -> dict[str, Any]:
        """A data type of the spec by name (e.g. "VnfInstance", "GrantRequest"), as draft-4 JSON
        Schema with refs resolved and the errata applied; the spec's own format names stay
        (see FORMATS). A copy: the caller may change it."""
        for doc in self._docs.values():
            found = _named_in({k: v for k, v in doc.items() if k != "paths"}, name)
            if found is not None:  # files that keep their definitions
                converted = _to_jsonschema(found, doc)
                _drop_subnet_id_format(converted)
                return converted
        if name in self.notification_schemas:
            return copy.deepcopy(self.notification_schemas[name])
        if name not in NAMED:
            known = sorted({*NAMED, *self.notification_schemas})
            raise KeyError(f"no data type {name!r} in the spec files; known: {known}")
        api, method, template, where = NAMED[name]
        op = next(o for o in self.operations if (o.api, o.method, o.template) == (api, method, template))
        found = op.request_schema if where == "request" else op.responses[where].schema
        assert found is not None, f"{name}: {op.label} {where} has no schema"
        return copy.deepcopy(found)

    def operation(self, method: str, path: str) -> tuple[_Operation | None, list[_Operation]]:
        """The operation for a concrete path (query string ignored), and every operation on the
        same path template (empty when the spec has no such path)."""
        path = path.split("?", 1)[0].split("#", 1)[0]
        on_path = [op for rx, op in self._routes if rx.match(path)]
        # a literal segment beats a template variable
        on_path.sort(key=lambda op: op.template.count("{"))
        if on_path:
            on_path = [op for op in on_path if op.template == on_path[0].template]
        return next((op for op in on_path if op.method == method.upper()), None), on_path

    # --- validation

    def _validator(self, schema: dict[str, Any]) -> Any:
        # keyed by identity (the spec's schemas live as long as the Spec); the schema is kept
        # with its validator so that a caller's schema freed and its id reused is not mistaken
        cached = self._validators.get(id(schema))
        if cached is None or cached[0] is not schema:
            cached = self._validators[id(schema)] = (schema, jsonschema_rs.Draft4Validator(
                schema, validate_formats=True, formats=_FORMAT_CHECKS))
        return cached[1]

    def violations(self, schema: dict[str, Any], instance: Any) -> list[str]:
        """Every violation of ``schema`` by ``instance``, as "JSON pointer: reason"."""
        out = []
        for e in self._validator(schema).iter_errors(instance):
            ptr, kind = _pointer(e.instance_path), type(e.kind).__name__
            if kind == "Required":
                ptr, reason = f"{ptr}/{_escape(e.kind.property)}", "required property is missing"
            elif kind == "Format" and e.kind.format in FORMATS:
                value = _short(json.dumps(_instance_at(instance, e.instance_path)))
                reason = f"{value} is not {FORMATS[e.kind.format][1]} (format {e.kind.format!r})"
            else:
                reason = _short(e.message)
            out.append(f"{ptr or '(root)'}: {reason}")
        return out

    def check_response(self, method: str, path: str, status: int, headers: Mapping[str, str],
                       body: bytes | None) -> None:
        """An answer of our API against the spec: status listed for the operation, required
        headers, media type, body schema. Raises AssertionError listing every violation."""
        what = f"{method.upper()} {path} -> {status}"
        op, on_path = self.operation(method, path)
        if not on_path:
            raise AssertionError(f"{what}: the spec has no path matching {path!r}")
        if op is None:
            # an unsupported method: only 405 makes sense, as the spec's 405 for this path says
            sibling = next((o.responses["405"] for o in on_path if "405" in o.responses), None)
            if status != 405 or sibling is None:
                raise AssertionError(f"{what}: the spec has no {method.upper()} on "
                                     f"{on_path[0].base_path}{on_path[0].template} (only 405 is acceptable)")
            resp, label = sibling, f"405 of {on_path[0].base_path}{on_path[0].template}"
        else:
            resp = op.responses.get(str(status)) or op.responses.get(f"{str(status)[0]}XX") \
                or op.responses.get("default")
            if resp is None:
                raise AssertionError(f"{what}: status {status} is not one the spec lists for {op.label} "
                                     f"({', '.join(sorted(op.responses))})")
            label = f"{op.label} {resp.status}"
        hdrs = {k.lower(): v for k, v in headers.items()}
        has_body = bool(body and body.strip())
        v: list[str] = []
        for name, hschema in resp.headers.items():
            value = hdrs.get(name.lower())
            if value is None:
                if name.lower() in resp.required_headers and (name.lower() != "content-type" or has_body):
                    v.append(f"header {name}: missing (required by the spec for {label})")
                continue
            v += [f"header {name}: {x.split(': ', 1)[1]}" for x in self.violations(hschema, value)]
        if resp.schema is None:
            if has_body:
                v.append(f"(body): the spec defines no body for {label} (it shall be empty)")
        elif not has_body:
            if not resp.body_optional:
                v.append(f"(body): missing; the spec requires one for {label}")
        else:
            allowed = resp.media_types + ((_PROBLEM_JSON,) if resp.status[0] in "45" else ())  # problem+json
            media = hdrs.get("content-type", "").split(";", 1)[0].strip().lower()
            if media and media not in allowed:
                v.append(f"header Content-Type: {media!r} is not one of {list(allowed)}")
            try:
                doc = json.loads(body)  # type: ignore[arg-type]
            except ValueError as e:
                v.append(f"(body): not JSON ({e})")
            else:
                v += self.violations(resp.schema, doc)
        _fail(f"{what} (spec: {label})", v)

    def check_request(self, method: str, path: str, body: Any) -> None:
        """A request body (parsed JSON, or None for none) against the operation's request schema."""
        what = f"request body of {method.upper()} {path}"
        op, _ = self.operation(method, path)
        if op is None:
            raise AssertionError(f"{what}: the spec has no such operation")
        if op.request_schema is None:
            _fail(what, [] if body is None else [f"(body): the spec defines no request body for {op.label}"])
        elif body is None:
            _fail(what, [f"(body): missing; {op.label} requires one"] if op.request_required else [])
        else:
            _fail(f"{what} (spec: {op.label})", self.violations(op.request_schema, body))

    def check_notification(self, body: Any) -> None:
        """A notification the VNFM sends, by its notificationType: against the notification
        file's schema when it is there, else against the one assembled from the spec's own
        types (see _NOTIFICATION_ATTRIBUTES; NOTIFICATION_GAP says why)."""
        nt = body.get("notificationType") if isinstance(body, dict) else None
        if nt not in self.notification_types:
            raise AssertionError(f"notification: notificationType {nt!r} is not one the spec defines "
                                 f"({', '.join(self.notification_types)})")
        schema = self.notification_schemas.get(nt)
        what = f"notification {nt}"
        if schema is None:  # no notification file: its attributes typed by the spec's own types
            schema, what = self.assembled_notification_schemas[nt], f"{what} (assembled schema)"
        _fail(what, self.violations(schema, body))

    def check_grant_request(self, body: Any) -> None:
        """A GrantRequest, as the VNFM POSTs it to the NFVO's /grant/v1/grants."""
        op = next(o for o in self.operations if (o.api, o.method, o.template) == ("grant", "POST", "/grants"))
        self.check_request("POST", f"{op.base_path}/grants", body)


def schemathesis_schema(base_url: str) -> Any:
    """schemathesis' view of the VNF LCM file (OpenAPI 3), its requests sent to ``base_url``:
    the service root (``https://host:port``), or a URL already ending in the spec's base path
    (/vnflcm/v1). schemathesis' own conformance checks read the file as written: see ERRATA
    (e.g. pass each response to Spec.check_response instead of its response_schema_conformance)."""
    path = spec_dir() / LCM_FILE
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import schemathesis

    schema = schemathesis.openapi.from_path(path)
    base_path = ((schema.raw_schema.get("servers") or [{}])[0].get("url") or "").rstrip("/")
    url = base_url.rstrip("/")
    if base_path.startswith("/") and not url.endswith(base_path):
        url += base_path
    schema.config.update(base_url=url)
    return schema
