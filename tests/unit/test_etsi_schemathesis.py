"""schemathesis, driven by the published SOL003 V2.4.1 file itself, against the ETSI VNF LCM
service running for real: its app with its lifespan (pool, LCM worker, notification sender)
under uvicorn on a socket of 127.0.0.1, escmanager's app doing the VIM work, a fake NFVO
(notification receiver, Granting API) on another socket. Every request goes over HTTP with
the ETSI user's Basic credentials.

Each operation of the file is exercised twice:

- the **coverage** phase of schemathesis: deterministic cases from the schemas (required
  properties missing, properties of the wrong type, enum values and outsiders, methods the
  file does not define, a malformed Content-Type), at most PER_SCENARIO of each kind;
- the **fuzzing** phase: hypothesis draws valid (positive) and invalid (negative) cases,
  derandomized, EXAMPLES of each, after one explicit valid request per real id.

The file defines no links, so schemathesis' stateful phase has nothing to follow: path
parameters are either random or real ids (the fixture ``known``: a fresh instance, an
instantiated one, one held by a FAILED_TEMP occurrence, those occurrences, a subscription).

Every answer must (1) not be a 5xx; (2) conform to the file (``Spec.check_response``:
status listed, headers, media type, body; errata in tests/etsi_spec.py),
or be one of UNLISTED, the right answer to a bad request the file has no status for;
(3) be a 4xx ``application/problem+json`` ProblemDetails when it is an error at all, and
whenever the input is invalid: schemathesis' ``negative_data_rejection`` judges what it made
invalid, except what :func:`valid_on_the_wire` finds valid as sent. Bodies schemathesis
cannot make (too big, too deep, NUL) are sent by :func:`test_bodies_no_generator_makes`.
"""

from __future__ import annotations

import base64
import json
import os
import time
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from requests.structures import CaseInsensitiveDict

from esc import web
from esc.config import CallbackConfig, EtsiConfig, GrantConfig, NodeConfig, User
from esc.etsi import auth as etsi_auth
from esc.etsi import lcm
from esc.etsi.app import MAX_BODY, MAX_DEPTH, create_app
from esc.etsi.grant import Granter
from esc.etsi.samples import sample_csar
from esc.secrets import hash_password
from etsi_fakes import PASSWORD, USER, FakeNfvo
from etsi_spec import Spec, schemathesis_schema

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from schemathesis.core.parameters import ParameterLocation
    from schemathesis.core.transport import Response
    from schemathesis.generation.modes import GenerationMode
    from schemathesis.specs.openapi.checks import negative_data_rejection

# per operation: examples per fuzzing mode, coverage cases per scenario (the file runs in
# about half a minute on 2 cores); raise them to explore more
EXAMPLES = int(os.environ.get("ESC_ETSI_FUZZ_EXAMPLES", "5"))
PER_SCENARIO = int(os.environ.get("ESC_ETSI_COVERAGE_PER_SCENARIO", "3"))
SETTLE_S = 30.0  # a safety net only: the worker finishes the sample's operations in well under 1 s

ETSI_PASSWORD = "etsi-test-password"
SERVER = "192.0.2.10"  # links and Location name the server address (never a node's), as in test_etsi_api
AUTH = etsi_auth.EtsiAuth(User(name="etsi", password_hash=hash_password(ETSI_PASSWORD)), "k" * 64)
BASIC = {"Authorization": "Basic " + base64.b64encode(f"etsi:{ETSI_PASSWORD}".encode()).decode()}
PROBLEM = "application/problem+json"
JSON_TYPES = ("application/json", "application/merge-patch+json")

# Statuses the file does not list, each the right answer to a bad body it has no status for;
# still a ProblemDetails, and checked to answer what it stands for (see check()).
UNLISTED: dict[int, str] = {
    415: "Unsupported Media Type (RFC 9110 15.5.16): a body without Content-Type, or not JSON; "
         "SOL013 lets the API use any 4xx of the HTTP RFCs, and 400 would hide the cause",
    413: "Content Too Large (RFC 9110 15.5.14): a body over the service's cap (esc.etsi.app.MAX_BODY)",
}

# Where the file contradicts SOL003's text, as tests/etsi_spec.ERRATA does (not listed there
# yet): key -> (why, method, path pattern, status, the violation it excuses).


# --- the service ----------------------------------------------------------------------------


@dataclass
class Service:
    base: str  # http://127.0.0.1:<port>
    session: requests.Session
    nfvo: FakeNfvo
    schema: Any  # schemathesis' view of the file, sending to base
    vnfd_id: str = ""
    known: dict[str, str] = field(default_factory=dict)  # role -> id (see the fixture known)

    def call(self, method: str, path: str, headers: dict[str, str] | None = None,
             **kw: Any) -> requests.Response:
        return self.session.request(method, f"{self.base}{path}", headers={**BASIC, **(headers or {})},
                                    timeout=30, allow_redirects=False, **kw)

    def ops(self, *states: str) -> list[dict[str, Any]]:
        """The occurrences in these states, every page."""
        out, url = [], f"/vnflcm/v1/vnf_lcm_op_occs?filter=(in,operationState,{','.join(states)})"
        while url:
            r = self.call("GET", url)
            assert r.status_code == 200, r.text
            out += r.json()
            link = r.headers.get("link")  # on the server address: only its path and query are ours
            url = "?".join(urlsplit(link.split(";")[0].strip("<> "))[2:4]) if link else ""
        return out

    def settle(self, op_id: str | None = None) -> dict[str, Any] | None:
        """Wait for the worker to leave this occurrence (or all) alone: its own pace."""
        deadline = time.monotonic() + SETTLE_S
        while True:
            if op_id is not None:
                body = self.call("GET", f"/vnflcm/v1/vnf_lcm_op_occs/{op_id}").json()
                if body["operationState"] not in lcm.ACTIVE_STATES:
                    return body
            elif not self.ops(*lcm.ACTIVE_STATES):
                return None
            assert time.monotonic() < deadline, f"operations still active after {SETTLE_S:g} s"
            time.sleep(0.02)

    def instance(self, instantiate: bool = False, refuse_grant: bool = False) -> tuple[str, str]:
        """A new instance, and the occurrence instantiating it (COMPLETED, or FAILED_TEMP when
        the NFVO refuses the grant) if asked."""
        r = self.call("POST", "/vnflcm/v1/vnf_instances", json={"vnfdId": self.vnfd_id})
        assert r.status_code == 201, r.text
        inst_id = r.json()["id"]
        if not instantiate:
            return inst_id, ""
        self.nfvo.refuse_grants = refuse_grant
        try:
            r = self.call("POST", f"/vnflcm/v1/vnf_instances/{inst_id}/instantiate",
                          json={"flavourId": "simple"})
            assert r.status_code == 202, r.text
            op = self.settle(urlsplit(r.headers["location"]).path.rsplit("/", 1)[1])
        finally:
            self.nfvo.refuse_grants = False
        assert op is not None and op["operationState"] == ("FAILED_TEMP" if refuse_grant else "COMPLETED"), op
        return inst_id, op["id"]


@pytest.fixture(scope="module")
def service(esc_db_reset: Any, esc_api_factory: Any) -> Iterator[Service]:
    """One service for the module (as make_esc_api, from the same session-wide factories)."""
    Spec.load()  # skips when the files are absent
    conninfo = esc_db_reset()
    nfvo = FakeNfvo().start()
    etsi_cfg = EtsiConfig(grant=GrantConfig(url=f"{nfvo.base}/grant/v1", user=USER, password=PASSWORD))
    # callbacks to the fake NFVO only: a generated callbackUri or tokenEndpoint connects nowhere else
    callbacks = CallbackConfig(allow=["127.0.0.1/32"], deny=[])
    cfg = NodeConfig(name="node-t", ipaddr=[SERVER], callbacks=callbacks, etsi=etsi_cfg)
    app = create_app(cfg, conninfo, AUTH, grant=Granter(etsi_cfg.grant, cfg), worker_options={"poll": 0.05},
                     sender_options={"poll": 0.05, "first_delay": 0.05, "timeout": 2.0})
    server = web.ServerThread("escetsi-test", [(web.config(app, lifespan="on"),
                                                web.tcp_socket("127.0.0.1", 0))])
    try:
        with esc_api_factory(), requests.Session() as session:
            server.start()
            try:
                host, port = server.server_address[:2]
                svc = Service(f"http://{host}:{port}", session, nfvo, schemathesis_schema(f"http://{host}:{port}"))
                r = svc.call("POST", "/esc/v1/vnf_packages", data=sample_csar(),
                             headers={"Content-Type": "application/zip"})
                assert r.status_code == 201, r.text
                svc.vnfd_id = r.json()["vnfdId"]
                yield svc
            finally:
                server.shutdown()  # the lifespan stops the worker and the sender
    finally:
        server.server_close()
        nfvo.stop()


@pytest.fixture
def known(service: Service) -> dict[str, list[str]]:
    """Real ids for each path variable, as the test needs them (the test before may have
    deleted, terminated or failed them: made again then): a fresh instance, an instantiated
    one, one held by a FAILED_TEMP occurrence (the NFVO refused the grant), those two
    occurrences (COMPLETED, FAILED_TEMP), a subscription."""
    service.settle()
    k = service.known
    held_by = {o["id"]: o["vnfInstanceId"] for o in service.ops("FAILED_TEMP")}

    def state(inst_id: str | None) -> str | None:
        if inst_id is None or inst_id in held_by.values():
            return None
        r = service.call("GET", f"/vnflcm/v1/vnf_instances/{inst_id}")
        return r.json()["instantiationState"] if r.status_code == 200 else None

    if state(k.get("fresh")) != lcm.NOT_INSTANTIATED:
        k["fresh"], _ = service.instance()
    if state(k.get("live")) != lcm.INSTANTIATED:
        k["live"], k["done"] = service.instance(instantiate=True)
    if k.get("failed") not in held_by:
        k["held"], k["failed"] = service.instance(instantiate=True, refuse_grant=True)
    if "sub" not in k or service.call("GET", f"/vnflcm/v1/subscriptions/{k['sub']}").status_code != 200:
        r = service.call("POST", "/vnflcm/v1/subscriptions",
                         json={"callbackUri": f"{service.nfvo.base}/notify"})
        assert r.status_code in (201, 303), r.text
        k["sub"] = urlsplit(r.headers["location"]).path.rsplit("/", 1)[1]
    return {"vnfInstanceId": [k["fresh"], k["live"], k["held"]], "vnfLcmOpOccId": [k["done"], k["failed"]],
            "subscriptionId": [k["sub"]]}


# --- the checks -----------------------------------------------------------------------------


def check(case: Any, response: Any) -> None:
    """(1) no 5xx; (2) the file's answer, or one of UNLISTED; (3) every error, and the answer
    to invalid input, a 4xx problem+json ProblemDetails."""
    spec = Spec.load()
    req = response.request
    path, status = urlsplit(req.url).path, response.status_code
    headers = {k: ", ".join(v) for k, v in response.headers.items()}
    what = f"{req.method} {path} -> {status}"
    assert status < 500, f"{what}: {response.content[:1000]!r}"
    problem: Any = None
    if status >= 400:
        assert headers.get("content-type", "").split(";")[0] == PROBLEM, f"{what}: {headers}"
        problem = json.loads(response.content)
        assert problem.get("status") == status, f"{what}: {problem}"
    op, _ = spec.operation(req.method, path)
    if status in UNLISTED and (op is None or str(status) not in op.responses):
        assert not spec.violations(spec.schema("ProblemDetails"), problem), f"{what}: {problem}"
        sent = CaseInsensitiveDict(req.headers).get("content-type", "").split(";")[0].strip().lower()
        if status == 415:  # a body, not declared as JSON
            assert req.body and sent not in JSON_TYPES, f"{what}: Content-Type {sent!r}"
        if status == 413:
            assert len(req.body or b"") > MAX_BODY, what
    else:
        spec.check_response(req.method, path, status, headers, response.content or None)
    meta = case.meta if case is not None else None
    if meta is not None and meta.generation.mode.is_negative and not valid_on_the_wire(case, req):
        case.validate_response(response, checks=[negative_data_rejection])


def valid_on_the_wire(case: Any, request: Any) -> bool:
    """Whether a case schemathesis made invalid is valid as sent, so that a 2xx is right.
    Judged here: the headers, and a merge patch's body; any other negation stays invalid.

    Headers the file requires that a request may leave out (and the HTTP client may even
    send, ``Accept: */*``, when schemathesis only drops them from its record of the case):

    - ``Accept``: absent, it means any media type (RFC 9110 12.5.1); the file's 406 is for
      an Accept the service cannot satisfy.
    - ``Content-Type`` of a request without a body: there is nothing to describe (the file
      requires it even on GET /vnf_instances/{id}). With a body it is needed (else 415).

    A merge patch (PATCH /vnf_instances/{id}, RFC 7396):

    - may come as ``application/json``: the file declares its body so (requestBody) while its
      Content-Type parameter allows only ``application/merge-patch+json``; both are taken;
    - sets an attribute to null to remove it: the file says so of vnfInstanceName and
      vnfInstanceDescription ('or "null" to remove the attribute') but its schema has
      nothing nullable; valid for every attribute a VnfInstance holds 0..1 or 0..N, not for
      vnfPkgId (1).
    """
    spec = Spec.load()
    components = case.meta.components
    judged = {ParameterLocation.HEADER, *([ParameterLocation.BODY] if case.method == "PATCH" else [])}
    if any(info.mode.is_negative for where, info in components.items() if where not in judged):
        return False
    declared = {p.name.lower(): p.definition for p in case.operation.headers}
    sent = {k.lower(): v for k, v in request.headers.items()}
    for name, d in declared.items():
        if name in sent and spec.violations(d["schema"], sent[name]) and not (
                name == "content-type" and sent[name].split(";")[0].strip().lower() in JSON_TYPES):
            return False
    absent = {name for name, d in declared.items() if d.get("required") and name not in sent}
    if not absent <= {"accept", *([] if request.body else ["content-type"])}:
        return False
    body_info = components.get(ParameterLocation.BODY)
    if body_info is None or body_info.mode.is_positive:
        return True
    try:
        body = json.loads(request.body)
    except ValueError:
        return False
    op, _ = spec.operation(request.method, urlsplit(request.url).path)
    if not isinstance(body, dict) or op is None or op.request_schema is None:
        return False
    kept = {k: v for k, v in body.items() if v is not None or k == "vnfPkgId"}
    return not spec.violations(op.request_schema, kept)


def _operations() -> list[tuple[str, str]]:
    """(method, path template) of every operation of the file, read at collection."""
    try:
        spec = Spec.load()
    except pytest.skip.Exception:
        return [("GET", "/vnf_instances")]  # the fixture skips, saying why
    return [(op.method, op.template) for op in spec.operations if op.api == "lcm"]


OPERATIONS = _operations()
IDS = [f"{m} {p}" for m, p in OPERATIONS]


def _variables(path: str) -> list[str]:
    return [part[1:-1] for part in path.split("/") if part.startswith("{")]


def _on_ids(path: str, known: dict[str, list[str]], i: int) -> dict[str, str]:
    """The i-th combination of real ids for the path's variables."""
    return {v: known[v][i % len(known[v])] for v in _variables(path)}


# --- the coverage phase -----------------------------------------------------------------------


@pytest.mark.parametrize("method,path", OPERATIONS, ids=IDS)
def test_coverage_phase(service: Service, known: dict[str, list[str]], method: str, path: str) -> None:
    operation = service.schema[path][method]
    config = service.schema.config.generation_for(operation=operation, phase="coverage")
    seen: Counter[str] = Counter()
    sent = 0
    for case in service.schema.iter_coverage_cases(
            operation, generation_modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
            generation_config=config):
        scenario = str(getattr(case.meta.phase.data, "scenario", ""))
        seen[scenario] += 1
        if seen[scenario] > PER_SCENARIO:
            continue
        # the credentials; every other case on real ids in turn, the others as generated
        case.headers = CaseInsensitiveDict({**(case.headers or {}), **BASIC})
        if _variables(path) and sent % 2 == 0:
            case.path_parameters = _on_ids(path, known, sent // 2)
        check(case, case.call(session=service.session, timeout=30))
        sent += 1


# --- the fuzzing phase ------------------------------------------------------------------------


def _valid_body(service: Service, method: str, path: str) -> Any:
    """A body the VNFM accepts (in the right state), for the explicit examples; None: none."""
    if path == "/vnf_instances":
        return {"vnfdId": service.vnfd_id, "vnfInstanceName": "schemathesis"}
    if path == "/subscriptions":
        return {"callbackUri": f"{service.nfvo.base}/notify",
                "filter": {"notificationTypes": ["VnfLcmOperationOccurrenceNotification"]}}
    if method == "PATCH":
        return {"vnfInstanceName": "renamed", "metadata": {"by": "schemathesis"}}
    return {
        "instantiate": {"flavourId": "simple"},
        "scale": {"type": "SCALE_OUT", "aspectId": "worker", "numberOfSteps": 1},
        "scale_to_level": {"instantiationLevelId": "big"},
        "change_flavour": {"newFlavourId": "simple"},
        "terminate": {"terminationType": "FORCEFUL"},
        "heal": {"cause": "schemathesis"},
        "operate": {"changeStateTo": "STOPPED", "stopType": "FORCEFUL"},
        "change_ext_conn": {"extVirtualLinks": [{"id": "ext-1", "resourceId": "net-1",
                                                 "extCps": [{"cpdId": "VDU1_CP1"}]}]},
    }.get(path.rsplit("/", 1)[1]) if method == "POST" else None


@pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning")  # inside schemathesis
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
                         ids=["positive", "negative"])
@pytest.mark.parametrize("method,path", OPERATIONS, ids=IDS)
def test_fuzzing_phase(service: Service, known: dict[str, list[str]], method: str, path: str,
                       mode: GenerationMode) -> None:
    operation = service.schema[path][method]
    variables = _variables(path)
    combos = [_on_ids(path, known, i) for i in range(max((len(known[v]) for v in variables), default=0))]
    # random ids, and each combination of real ones
    strategy = st.one_of([operation.as_strategy(mode, headers=BASIC, path_parameters=p)
                          for p in [None, *combos]])

    def run(case: Any) -> None:
        check(case, case.call(session=service.session, timeout=30))

    body = _valid_body(service, method, path)
    if mode == GenerationMode.POSITIVE:  # first, a valid request on each combination of real ids
        kw: dict[str, Any] = {"body": body, "media_type": "application/json"} if body is not None else {}
        for p in reversed(combos or [{}]):
            run = example(case=operation.Case(path_parameters=p, headers=dict(BASIC), **kw))(run)
    run = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                   phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))(
        given(case=strategy)(run))
    try:
        run()
    except Unsatisfiable:
        assert mode == GenerationMode.NEGATIVE
        pytest.skip("nothing in the file to make invalid")


# --- what no generator makes -----------------------------------------------------------------


def test_bodies_no_generator_makes(service: Service, known: dict[str, list[str]]) -> None:
    """Bad bodies schemathesis does not make, each refused with a ProblemDetails: too big,
    nested too deep for the parser, a NUL PostgreSQL cannot store, none or a wrong
    Content-Type; and a NUL in the path."""
    fresh, vnfd_id = known["vnfInstanceId"][0], service.vnfd_id
    json_ = {"Content-Type": "application/json"}
    cases: list[tuple[str, str, bytes, dict[str, str], int]] = [
        ("POST", "/vnflcm/v1/vnf_instances", b" " * (MAX_BODY + 1), json_, 413),
        ("POST", "/vnflcm/v1/vnf_instances", b"[" * 10_000 + b"]" * 10_000, json_, 400),
        ("POST", "/vnflcm/v1/vnf_instances", _json(vnfdId=vnfd_id, x=_nested(MAX_DEPTH)), json_, 400),
        ("POST", "/vnflcm/v1/vnf_instances", _json(vnfdId=vnfd_id, vnfInstanceName="a\0"), json_, 400),
        ("PATCH", f"/vnflcm/v1/vnf_instances/{fresh}", b'{"metadata": {"k\\u0000": 1}}',
         {"Content-Type": "application/merge-patch+json"}, 400),
        ("POST", "/vnflcm/v1/vnf_instances", _json(vnfdId=vnfd_id), {}, 415),
        ("POST", "/vnflcm/v1/subscriptions", b"callbackUri=x",
         {"Content-Type": "application/x-www-form-urlencoded"}, 415),
        ("GET", "/vnflcm/v1/vnf_instances/%00", b"", {}, 404),
        ("DELETE", "/vnflcm/v1/subscriptions/a%00b", b"", {}, 404),
    ]
    for method, path, body, headers, want in cases:
        # requests adds no Content-Type of its own to raw data
        response = service.call(method, path, data=body, headers=headers)
        assert response.status_code == want, f"{method} {path[:60]}: {response.status_code} {response.text}"
        check(None, Response.from_requests(response, verify=True))


def _json(**body: Any) -> bytes:
    return json.dumps(body).encode()


def _nested(depth: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for _ in range(depth):
        out = {"k": out}
    return out
