"""The SOL003 conformance checker (tests/etsi_spec.py) itself: hand-made bodies, minimal per
the published 2.4.1 files, pass; each kind of violation fails naming where it is."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from etsi_spec import ERRATA, LCM_SWAGGER_FILE, NAMED, Spec, schemathesis_schema, spec_dir

BASE = "http://127.0.0.1:8443/vnflcm/v1"
JSON = {"Content-Type": "application/json"}

# SOL003 2.4.1 clause 5.5.2.2: the package is "vnfPkgId" in this version
# (onboardedVnfPkgInfoId is not in the 2.4.1 files)
VNF_INSTANCE: dict[str, Any] = {
    "id": "abc",
    "vnfdId": "vnfd-1",
    "vnfProvider": "Cisco",
    "vnfProductName": "asav",
    "vnfSoftwareVersion": "9.8",
    "vnfdVersion": "1.0",
    "vnfPkgId": "pkg-1",
    "instantiationState": "NOT_INSTANTIATED",
    "_links": {"self": {"href": f"{BASE}/vnf_instances/abc"}},
}
VNF_LCM_OP_OCC: dict[str, Any] = {
    "id": "op-1",
    "operationState": "STARTING",
    "stateEnteredTime": "2024-05-01T10:00:00Z",
    "startTime": "2024-05-01T10:00:00.250+02:00",
    "vnfInstanceId": "abc",
    "operation": "INSTANTIATE",
    "isAutomaticInvocation": False,
    "operationParams": {"flavourId": "small"},
    "isCancelPending": False,
    "_links": {"self": {"href": f"{BASE}/vnf_lcm_op_occs/op-1"},
               "vnfInstance": {"href": f"{BASE}/vnf_instances/abc"}},
}
GRANT_REQUEST: dict[str, Any] = {
    "vnfInstanceId": "abc",
    "vnfLcmOpOccId": "op-1",
    "vnfdId": "vnfd-1",
    "operation": "INSTANTIATE",
    "isAutomaticInvocation": False,
    "_links": {"vnfLcmOpOcc": {"href": f"{BASE}/vnf_lcm_op_occs/op-1"},
               "vnfInstance": {"href": f"{BASE}/vnf_instances/abc"}},
}
_LINKS = {"vnfInstance": {"href": f"{BASE}/vnf_instances/abc"},
          "subscription": {"href": f"{BASE}/subscriptions/sub-1"}}
NOTIFICATIONS: dict[str, dict[str, Any]] = {
    "VnfLcmOperationOccurrenceNotification": {
        "id": "n-1", "notificationType": "VnfLcmOperationOccurrenceNotification",
        "subscriptionId": "sub-1", "timeStamp": "2024-05-01T10:00:00Z", "notificationStatus": "START",
        "operationState": "STARTING", "vnfInstanceId": "abc", "operation": "INSTANTIATE",
        "isAutomaticInvocation": False, "vnfLcmOpOccId": "op-1",
        "_links": {**_LINKS, "vnfLcmOpOcc": {"href": f"{BASE}/vnf_lcm_op_occs/op-1"}},
    },
    "VnfIdentifierCreationNotification": {
        "id": "n-2", "notificationType": "VnfIdentifierCreationNotification", "subscriptionId": "sub-1",
        "timeStamp": "2024-05-01T10:00:00Z", "vnfInstanceId": "abc", "_links": _LINKS,
    },
    "VnfIdentifierDeletionNotification": {
        "id": "n-3", "notificationType": "VnfIdentifierDeletionNotification", "subscriptionId": "sub-1",
        "timeStamp": "2024-05-01T10:00:00Z", "vnfInstanceId": "abc", "_links": _LINKS,
    },
}


@pytest.fixture(scope="module")
def spec() -> Spec:
    return Spec.load()


def _body(doc: Any) -> bytes:
    return json.dumps(doc).encode()


def _violations(call: Any) -> str:
    with pytest.raises(AssertionError) as e:
        call()
    return str(e.value)


def _get_instance(spec: Spec, doc: Any) -> None:
    spec.check_response("GET", "/vnflcm/v1/vnf_instances/abc", 200, JSON, _body(doc))


# --------------------------------------------------------------------- loading

def test_loaded_once_and_every_schema_compiles(spec: Spec) -> None:
    assert Spec.load() is spec
    assert Spec.load_seconds > 0
    schemas = [s for op in spec.operations
               for s in (op.request_schema, *(r.schema for r in op.responses.values())) if s is not None]
    assert len(schemas) > 200
    for s in schemas:
        spec.violations(s, {})  # compiles; an empty object is only checked, not expected to pass


def test_every_erratum_still_applies(spec: Spec) -> None:
    """An erratum fixed in the files shows up here: its workaround can then go."""
    assert set(spec.errata_applied) == {key for key, _ in ERRATA}
    assert all(n > 0 for n in spec.errata_applied.values()), spec.errata_applied


def test_oas3_file_is_the_published_swagger_converted(spec: Spec) -> None:
    """The checker reads the OpenAPI 3 conversion: it must say what the published Swagger 2.0
    file says (every operation, status, header and body schema); the named request types are
    where the Swagger file names its body parameters."""
    swagger = Spec(_read_swagger(), spec._docs["grant"])
    ours = {(op.api, op.method, op.template): op for op in spec.operations}
    theirs = {(op.api, op.method, op.template): op for op in swagger.operations}
    assert ours.keys() == theirs.keys()
    for key, op in ours.items():
        other = theirs[key]
        assert op.request_schema == other.request_schema, key
        assert op.responses.keys() == other.responses.keys(), key
        for status, r in op.responses.items():
            o = other.responses[status]
            assert (r.schema, r.headers, r.required_headers, r.media_types, r.body_optional) == \
                (o.schema, o.headers, o.required_headers, o.media_types, o.body_optional), (key, status)
    names = {p["name"].lower(): p for item in _read_swagger()["paths"].values() for raw in item.values()
             if isinstance(raw, dict) for p in raw.get("parameters", []) if p.get("in") == "body"}
    for name, (api, _, _, where) in NAMED.items():
        if api == "lcm" and where == "request":
            assert name.lower() in names, name


_SWAGGER: list[Any] = []


def _read_swagger() -> Any:
    import etsi_spec

    if not _SWAGGER:
        _SWAGGER.append(etsi_spec._read(spec_dir() / LCM_SWAGGER_FILE))
    return _SWAGGER[0]


def test_named_types_are_the_same_wherever_the_spec_uses_them(spec: Spec) -> None:
    ops = {(op.api, op.method, op.template): op for op in spec.operations}

    def at(api: str, method: str, template: str, status: str) -> Any:
        return ops[(api, method, template)].responses[status].schema

    vnf_instance = spec.schema("VnfInstance")
    assert at("lcm", "POST", "/vnf_instances", "201") == vnf_instance
    assert at("lcm", "GET", "/vnf_instances", "200")["items"] == vnf_instance
    assert at("lcm", "POST", "/vnf_instances/{vnfInstanceId}/terminate", "202") == vnf_instance  # erratum
    assert at("lcm", "GET", "/vnf_lcm_op_occs", "200")["items"] == spec.schema("VnfLcmOpOcc")
    assert at("lcm", "POST", "/vnf_lcm_op_occs/{vnfLcmOpOccId}/fail", "200") == spec.schema("VnfLcmOpOcc")
    assert at("lcm", "POST", "/subscriptions", "201") == spec.schema("LccnSubscription")
    assert at("lcm", "GET", "/subscriptions", "200")["items"] == spec.schema("LccnSubscription")
    assert at("grant", "POST", "/grants", "201") == spec.schema("Grant")
    problem = spec.schema("ProblemDetails")
    assert problem["required"] == ["status", "detail"]
    for op in spec.operations:
        for status, r in op.responses.items():
            if status[0] in "45":
                assert r.schema == problem, (op.label, status)
    assert spec.schema("VnfInstance") is not spec.schema("VnfInstance")  # copies
    with pytest.raises(KeyError, match="no data type"):
        spec.schema("VnfPackage")


def test_nullable_becomes_a_null_type() -> None:
    from etsi_spec import _to_jsonschema

    doc = {"definitions": {"S": {"type": "string", "enum": ["A"], "nullable": True}}}
    assert _to_jsonschema({"$ref": "#/definitions/S"}, doc) == {
        "type": ["string", "null"], "enum": ["A", None]}
    assert _to_jsonschema({"type": "integer", "x-nullable": True}, doc) == {"type": ["integer", "null"]}


# --------------------------------------------------------------------- responses

def test_a_minimal_vnf_instance_passes(spec: Spec) -> None:
    _get_instance(spec, VNF_INSTANCE)
    # extra attributes: the spec does not forbid them (no additionalProperties: false)
    _get_instance(spec, {**VNF_INSTANCE, "vendorExtra": {"x": 1}})
    spec.check_response("GET", "/vnflcm/v1/vnf_instances", 200,
                        {"content-type": "application/json; charset=utf-8"}, _body([VNF_INSTANCE] * 2))


def test_a_missing_required_field_is_named(spec: Spec) -> None:
    doc = copy.deepcopy(VNF_INSTANCE)
    del doc["vnfPkgId"]
    del doc["_links"]["self"]["href"]
    msg = _violations(lambda: _get_instance(spec, doc))
    assert "/vnfPkgId: required property is missing" in msg
    assert "/_links/self/href: required property is missing" in msg
    # the name of a later version of SOL003 is no substitute
    renamed = {**{k: v for k, v in VNF_INSTANCE.items() if k != "vnfPkgId"}, "onboardedVnfPkgInfoId": "pkg-1"}
    assert "/vnfPkgId: required" in _violations(lambda: _get_instance(spec, renamed))


def test_a_wrong_enum_is_named(spec: Spec) -> None:
    msg = _violations(lambda: _get_instance(spec, {**VNF_INSTANCE, "instantiationState": "RUNNING"}))
    assert "/instantiationState: " in msg and "RUNNING" in msg


def test_a_non_uri_href_is_named(spec: Spec) -> None:
    for href in ("not a uri", "/vnflcm/v1/vnf_instances/abc"):  # a relative reference is not a URI either
        doc = {**VNF_INSTANCE, "_links": {"self": {"href": href}}}
        msg = _violations(lambda doc=doc: _get_instance(spec, doc))
        assert "/_links/self/href: " in msg and "absolute URI" in msg


def test_every_violation_is_listed(spec: Spec) -> None:
    doc = {**VNF_INSTANCE, "instantiationState": "RUNNING", "vnfdId": 7, "_links": {"self": {"href": "x y"}}}
    del doc["id"]
    msg = _violations(lambda: _get_instance(spec, doc))
    assert "4 violation(s)" in msg
    for pointer in ("/id:", "/instantiationState:", "/vnfdId:", "/_links/self/href:"):
        assert pointer in msg


def test_formats_date_time_ip_mac(spec: Spec) -> None:
    ok = spec.check_response
    ok("GET", "/vnflcm/v1/vnf_lcm_op_occs/op-1", 200, JSON, _body(VNF_LCM_OP_OCC))
    bad = {**VNF_LCM_OP_OCC, "startTime": "2024-05-01 10:00"}
    assert "/startTime: " in _violations(
        lambda: ok("GET", "/vnflcm/v1/vnf_lcm_op_occs/op-1", 200, JSON, _body(bad)))
    # the list (erratum list-200-not-array)
    ok("GET", "/vnflcm/v1/vnf_lcm_op_occs", 200, JSON, _body([VNF_LCM_OP_OCC]))
    assert "/0/startTime: " in _violations(
        lambda: ok("GET", "/vnflcm/v1/vnf_lcm_op_occs", 200, JSON, _body([bad])))

    def instance(mac: str, address: str) -> dict[str, Any]:
        ip = {"type": "IPV4", "addresses": [address], "subnetId": "6a9c1e2e-subnet-in-the-vim"}  # erratum
        cp = {"layerProtocol": "IP_OVER_ETHERNET", "ipOverEthernet": {"macAddress": mac, "ipAddresses": [ip]}}
        return {**VNF_INSTANCE, "instantiationState": "INSTANTIATED", "instantiatedVnfInfo": {
            "flavourId": "small", "vnfState": "STARTED",
            "extCpInfo": [{"id": "cp-1", "cpdId": "cpd-1", "cpProtocolInfo": [cp]}]}}

    _get_instance(spec, instance("fa:16:3e:00:00:01", "10.0.0.5"))
    msg = _violations(lambda: _get_instance(spec, instance("fa:16:3e:0:0:1", "10.0.0.300")))
    base = "/instantiatedVnfInfo/extCpInfo/0/cpProtocolInfo/0/ipOverEthernet"
    assert f"{base}/macAddress: " in msg and f"{base}/ipAddresses/0/addresses/0: " in msg


def test_201_needs_a_location(spec: Spec) -> None:
    def post(headers: dict[str, str]) -> None:
        spec.check_response("POST", "/vnflcm/v1/vnf_instances", 201, headers, _body(VNF_INSTANCE))

    post({**JSON, "Location": f"{BASE}/vnf_instances/abc"})
    assert "header Location: missing" in _violations(lambda: post(JSON))
    assert "header Location: " in _violations(lambda: post({**JSON, "Location": "vnf_instances/abc"}))
    assert "header Content-Type: missing" in _violations(
        lambda: post({"Location": f"{BASE}/vnf_instances/abc"}))
    assert "'text/html' is not one of" in _violations(
        lambda: post({"Content-Type": "text/html", "Location": f"{BASE}/vnf_instances/abc"}))


def test_a_status_the_operation_does_not_list_fails(spec: Spec) -> None:
    for method, path, status in [("POST", "/vnflcm/v1/vnf_instances", 200),
                                 ("POST", "/vnflcm/v1/vnf_instances/abc/instantiate", 201),
                                 ("GET", "/vnflcm/v1/vnf_instances/abc", 418)]:
        msg = _violations(lambda m=method, p=path, s=status: spec.check_response(m, p, s, JSON, b"{}"))
        assert f"status {status} is not one the spec lists" in msg


def test_unknown_paths_and_methods(spec: Spec) -> None:
    assert "no path matching" in _violations(
        lambda: spec.check_response("GET", "/vnflcm/v1/nope", 404, JSON, None))
    assert "only 405 is acceptable" in _violations(
        lambda: spec.check_response("PUT", "/vnflcm/v1/vnf_instances/abc", 200, JSON, b"{}"))
    # 405 for a method the spec has not: its body may be omitted, and is checked if sent
    spec.check_response("PUT", "/vnflcm/v1/vnf_instances/abc", 405, {}, None)
    assert "/detail: required" in _violations(lambda: spec.check_response(
        "PUT", "/vnflcm/v1/vnf_instances/abc", 405, JSON, b'{"status": 405}'))


def test_problem_details(spec: Spec) -> None:
    problem = {"status": 404, "detail": "no VNF instance abc"}
    for ctype in ("application/problem+json", "application/json"):
        spec.check_response("GET", "/vnflcm/v1/vnf_instances/abc", 404, {"Content-Type": ctype},
                            _body(problem))
    # type and instance are URI references: relative is fine
    full = {**problem, "type": "about:blank", "title": "Not Found",
            "instance": "/vnflcm/v1/vnf_instances/abc"}
    spec.check_response("GET", "/vnflcm/v1/vnf_instances/abc", 404,
                        {"Content-Type": "application/problem+json"}, _body(full))
    msg = _violations(lambda: spec.check_response(
        "POST", "/vnflcm/v1/vnf_instances/abc/instantiate", 409, {"Content-Type": "application/problem+json"},
        _body({"status": "409"})))
    assert "/detail: required property is missing" in msg and "/status: " in msg
    # "The response body shall contain a ProblemDetails structure"
    assert "(body): missing" in _violations(lambda: spec.check_response(
        "POST", "/vnflcm/v1/vnf_instances/abc/instantiate", 409, {}, None))
    assert "is not one of" in _violations(lambda: spec.check_response(
        "GET", "/vnflcm/v1/vnf_instances/abc", 404, {"Content-Type": "text/plain"}, b"not found"))
    # problem+json is for errors only
    assert "is not one of" in _violations(lambda: spec.check_response(
        "GET", "/vnflcm/v1/vnf_instances/abc", 200, {"Content-Type": "application/problem+json"},
        _body(VNF_INSTANCE)))


def test_202_and_204(spec: Spec) -> None:
    loc = {"Location": f"{BASE}/vnf_lcm_op_occs/op-1"}
    spec.check_response("POST", "/vnflcm/v1/vnf_instances/abc/instantiate", 202, loc, b"")
    assert "shall be empty" in _violations(lambda: spec.check_response(
        "POST", "/vnflcm/v1/vnf_instances/abc/instantiate", 202, {**loc, **JSON}, _body(VNF_INSTANCE)))
    assert "header Location: missing" in _violations(lambda: spec.check_response(
        "POST", "/vnflcm/v1/vnf_instances/abc/instantiate", 202, {}, None))
    # erratum task-202-body: empty is accepted, a body sent is still checked
    spec.check_response("POST", "/vnflcm/v1/vnf_instances/abc/terminate", 202, loc, None)
    assert "/vnfPkgId: required" in _violations(lambda: spec.check_response(
        "POST", "/vnflcm/v1/vnf_instances/abc/terminate", 202, {**loc, **JSON}, b'{"id": "abc"}'))
    spec.check_response("DELETE", "/vnflcm/v1/vnf_instances/abc", 204, {}, None)
    assert "shall be empty" in _violations(lambda: spec.check_response(
        "DELETE", "/vnflcm/v1/vnf_instances/abc", 204, JSON, b"{}"))
    spec.check_response("POST", "/vnflcm/v1/subscriptions?x=1", 303,
                        {"Location": f"{BASE}/subscriptions/s"}, None)


# --------------------------------------------------------------------- requests

def test_requests(spec: Spec) -> None:
    spec.check_request("POST", "/vnflcm/v1/vnf_instances", {"vnfdId": "vnfd-1", "vnfInstanceName": "fw"})
    assert "/vnfdId: required" in _violations(
        lambda: spec.check_request("POST", "/vnflcm/v1/vnf_instances", {"vnfInstanceName": "fw"}))
    spec.check_request("POST", "/vnflcm/v1/vnf_instances/abc/instantiate", {"flavourId": "small"})
    assert "/flavourId: " in _violations(
        lambda: spec.check_request("POST", "/vnflcm/v1/vnf_instances/abc/instantiate", {"flavourId": 1}))
    spec.check_request("POST", "/vnflcm/v1/vnf_instances/abc/terminate", {"terminationType": "FORCEFUL"})
    assert "/terminationType: " in _violations(lambda: spec.check_request(
        "POST", "/vnflcm/v1/vnf_instances/abc/terminate", {"terminationType": "NOW"}))
    assert "(body): missing" in _violations(
        lambda: spec.check_request("POST", "/vnflcm/v1/vnf_instances/abc/terminate", None))
    spec.check_request("POST", "/vnflcm/v1/vnf_lcm_op_occs/op-1/retry", None)
    assert "no request body" in _violations(
        lambda: spec.check_request("POST", "/vnflcm/v1/vnf_lcm_op_occs/op-1/retry", {}))


def test_grant_request(spec: Spec) -> None:
    spec.check_grant_request(GRANT_REQUEST)
    bad = copy.deepcopy(GRANT_REQUEST)
    bad["operation"] = "START"
    del bad["_links"]["vnfInstance"]
    bad["_links"]["vnfLcmOpOcc"]["href"] = "op-1"
    msg = _violations(lambda: spec.check_grant_request(bad))
    assert "/operation: " in msg
    assert "/_links/vnfInstance: required property is missing" in msg
    assert "/_links/vnfLcmOpOcc/href: " in msg


# --------------------------------------------------------------------- notifications

def test_notification_types_come_from_the_spec(spec: Spec) -> None:
    assert set(spec.notification_types) == set(NOTIFICATIONS)
    for body in ({"notificationType": "VnfPackageOnboardingNotification"}, {}, []):
        assert "is not one the spec defines" in _violations(lambda b=body: spec.check_notification(b))


@pytest.mark.parametrize("kind", sorted(NOTIFICATIONS))
def test_notifications(spec: Spec, kind: str) -> None:
    """Against the notification file's schema, or (absent: NOTIFICATION_GAP) the one assembled
    from the spec's own types."""
    assert kind in spec.notification_schemas or kind in spec.assembled_notification_schemas
    spec.check_notification(NOTIFICATIONS[kind])
    broken = {**NOTIFICATIONS[kind], "timeStamp": "yesterday"}
    del broken["vnfInstanceId"]
    msg = _violations(lambda: spec.check_notification(broken))
    assert "/vnfInstanceId: required property is missing" in msg and "/timeStamp: " in msg
    bad_link = copy.deepcopy(NOTIFICATIONS[kind])
    bad_link["_links"]["vnfInstance"]["href"] = "vnf_instances/abc"  # not absolute
    del bad_link["_links"]["subscription"]
    msg = _violations(lambda: spec.check_notification(bad_link))
    assert "/_links/vnfInstance/href: " in msg and "/_links/subscription: required" in msg


def test_the_assembled_operation_notification_takes_the_specs_types(spec: Spec) -> None:
    """Each attribute typed as the spec types the same attribute of VnfLcmOpOcc: a wrong
    operation state, an unknown operation, an affected VNFC without its change type and a
    ProblemDetails without a status are all refused, by the spec's own schemas."""
    if "VnfLcmOperationOccurrenceNotification" in spec.notification_schemas:
        pytest.skip("the notification file is there: its own schema applies")
    body = copy.deepcopy(NOTIFICATIONS["VnfLcmOperationOccurrenceNotification"])
    body.update(notificationStatus="RESULT", operationState="COMPLETED",
                affectedVnfcs=[{"id": "c1", "vduId": "vdu1", "changeType": "ADDED",
                                "computeResource": {"vimConnectionId": "vim-1", "resourceId": "vm-1"}}])
    spec.check_notification(body)
    body.update(operationState="DONE", operation="REBOOT", notificationStatus="END",
                error={"detail": "no status"})
    del body["affectedVnfcs"][0]["changeType"]
    msg = _violations(lambda: spec.check_notification(body))
    for where in ("/operationState: ", "/operation: ", "/notificationStatus: ",
                  "/affectedVnfcs/0/changeType: required", "/error/status: required"):
        assert where in msg, (where, msg)


def test_notification_schemas_are_found_in_a_notification_file(spec: Spec) -> None:
    """The plumbing for when the notification API file is added beside the others: its types
    found by body parameter name and $ref. The schemas here are stand-ins, not the spec's."""
    doc = {
        "swagger": "2.0",
        "paths": {f"/URI-is-provided-by-the-client-when-creating-the-subscription-{nt}": {"post": {
            "parameters": [{"in": "body", "name": nt, "schema": {"$ref": f"#/definitions/{nt}"}}],
            "responses": {"204": {"description": "No Content"}}}} for nt in spec.notification_types},
        "definitions": {nt: {"type": "object", "required": ["timeStamp"],
                             "properties": {"timeStamp": {"type": "string", "format": "date-time"}}}
                        for nt in spec.notification_types},
    }
    with_file = Spec(spec._docs["lcm"], spec._docs["grant"], doc)
    assert set(with_file.notification_schemas) == set(spec.notification_types)
    with_file.check_notification(NOTIFICATIONS["VnfIdentifierCreationNotification"])
    broken = {**NOTIFICATIONS["VnfIdentifierCreationNotification"], "timeStamp": "yesterday"}
    assert "/timeStamp: " in _violations(lambda: with_file.check_notification(broken))


# --------------------------------------------------------------------- schemathesis

def test_schemathesis_loads_the_lcm_file() -> None:
    schema = schemathesis_schema("http://127.0.0.1:8443/")
    assert schema.get_base_url() == BASE
    assert schemathesis_schema(BASE).get_base_url() == BASE  # not doubled
    assert schema.get_base_url() == BASE  # each load has its own configuration
    ops = {(r.ok().method.upper(), r.ok().path) for r in schema.get_all_operations()}
    assert {("POST", "/vnf_instances"), ("GET", "/vnf_instances"), ("GET", "/vnf_instances/{vnfInstanceId}"),
            ("DELETE", "/vnf_instances/{vnfInstanceId}"),
            ("POST", "/vnf_instances/{vnfInstanceId}/instantiate")} <= ops
    assert ops == {(op.method, op.template) for op in Spec.load().operations if op.api == "lcm"}


def test_absent_files_skip_with_a_reason(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    import etsi_spec

    monkeypatch.setattr(etsi_spec, "SPEC_DIR", tmp_path)
    monkeypatch.setattr(Spec, "_cached", None)
    with pytest.raises(pytest.skip.Exception, match="not in .* beside the clone"):
        Spec.load()
    with pytest.raises(pytest.skip.Exception):
        schemathesis_schema(BASE)


def test_location_is_required_where_the_spec_says_so(spec: Spec) -> None:
    required = {(op.label, st) for op in spec.operations for st, r in op.responses.items()
                if "location" in r.required_headers}
    assert ("POST /vnflcm/v1/vnf_instances", "201") in required  # 201: SOL003, not the description
    assert ("PATCH /vnflcm/v1/vnf_instances/{vnfInstanceId}", "202") in required
    assert ("POST /vnflcm/v1/subscriptions", "303") in required
    assert ("POST /grant/v1/grants", "202") in required
    # listed but not mandated: the 202 of the error-handling tasks has an empty body, no new resource
    for task in ("retry", "rollback", "cancel"):
        assert (f"POST /vnflcm/v1/vnf_lcm_op_occs/{{vnfLcmOpOccId}}/{task}", "202") not in required
        spec.check_response("POST", f"/vnflcm/v1/vnf_lcm_op_occs/op-1/{task}", 202, {}, None)
    assert "header Location: " in _violations(lambda: spec.check_response(
        "POST", "/vnflcm/v1/vnf_lcm_op_occs/op-1/retry", 202, {"Location": "op-1"}, None))
