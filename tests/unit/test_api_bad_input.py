"""Bad requests get a clear 4xx and leave nothing behind: no transaction, no resource."""

from __future__ import annotations

import json
from typing import Any

import pytest

from esc.services import xmlio

J = "application/json"
X = "application/xml"

GOOD_DEP: dict[str, Any] = {
    "name": "d",
    "vm_groups": [{"name": "g", "image": "img", "flavor": "fl", "interfaces": [{"network": "net"}]}],
}


def dep(**group: Any) -> dict[str, Any]:
    return {"name": "d", "vm_groups": [{**GOOD_DEP["vm_groups"][0], **group}]}


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>
<tenant><name>&lol2;</name></tenant>"""
EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE t [<!ENTITY xxe SYSTEM "file:///etc/passwd">]><tenant><name>&xxe;</name></tenant>"""

# (id, method, path, content type, body, status, text in the error)
CASES: list[tuple[str, str, str, str | None, Any, int, str]] = [
    # malformed
    ("json-truncated", "POST", "/v0/tenants", J, b'{"name": "a"', 400, "invalid JSON"),
    ("json-not-object", "POST", "/v0/tenants", J, b'["a"]', 400, "JSON object"),
    ("json-duplicate-key", "POST", "/v0/tenants", J, b'{"name": "a", "name": "b"}', 400, "duplicate key"),
    ("json-nan", "POST", "/v0/flavors", J, b'{"name": "f", "vcpus": NaN, "memory_mb": 1}', 400, "NaN"),
    ("json-empty", "POST", "/v0/tenants", J, b"", 400, "invalid JSON"),
    ("json-not-utf8", "POST", "/v0/tenants", J, b"\xff\xfe", 400, "invalid JSON"),
    ("xml-malformed", "POST", "/v0/tenants", X, b"<tenant><name>a</tenant>", 400, "invalid XML"),
    ("xml-entities", "POST", "/v0/tenants", X, BILLION_LAUGHS, 400, "invalid XML"),
    ("xml-external-entity", "POST", "/v0/tenants", X, EXTERNAL_ENTITY, 400, "invalid XML"),
    ("xml-wrong-root", "POST", "/v0/tenants", X, b"<network><name>a</name></network>", 400, "<tenant>"),
    ("xml-attribute", "POST", "/v0/tenants", X, b'<tenant id="1"><name>a</name></tenant>', 400, "attributes"),
    ("xml-twice", "POST", "/v0/tenants", X, b"<tenant><name>a</name><name>b</name></tenant>", 400, "twice"),
    (
        "xml-text-for-list",
        "POST",
        "/v0/tenants/default/deployments",
        X,
        b"<deployment><name>d</name><vm_groups>x</vm_groups></deployment>",
        400,
        "unexpected text",
    ),
    # unknown fields
    (
        "json-unknown-field",
        "POST",
        "/v0/tenants",
        J,
        {"name": "a", "colour": "red"},
        400,
        "colour: unknown field",
    ),
    (
        "json-unknown-nested",
        "POST",
        "/v0/tenants/default/deployments",
        J,
        dep(kpi={"type": "icmp_ping", "x": 1}),
        400,
        "vm_groups.0.kpi.x: unknown field",
    ),
    (
        "xml-unknown-field",
        "POST",
        "/v0/tenants",
        X,
        b"<tenant><name>a</name><colour>red</colour></tenant>",
        400,
        "colour: unknown field",
    ),
    ("put-with-name", "PUT", "/v0/tenants/default", J, {"name": "other"}, 400, "name: unknown field"),
    # invalid values
    ("missing-field", "POST", "/v0/flavors", J, {"name": "f", "vcpus": 1}, 400, "memory_mb: Field required"),
    ("string-for-int", "POST", "/v0/flavors", J, {"name": "f", "vcpus": "1", "memory_mb": 1}, 400, "vcpus"),
    (
        "xml-not-an-int",
        "POST",
        "/v0/flavors",
        X,
        b"<flavor><name>f</name><vcpus>one</vcpus><memory_mb>1</memory_mb></flavor>",
        400,
        "vcpus",
    ),
    ("zero-count", "POST", "/v0/tenants/default/deployments", J, dep(count=0), 400, "count"),
    (
        "bad-kpi-type",
        "POST",
        "/v0/tenants/default/deployments",
        J,
        dep(kpi={"type": "http"}),
        400,
        "kpi.type",
    ),
    (
        "bad-recovery",
        "POST",
        "/v0/tenants/default/deployments",
        J,
        dep(recovery={"policy": "pray"}),
        400,
        "recovery.policy",
    ),
    (
        "static-ip-count-2",
        "POST",
        "/v0/tenants/default/deployments",
        J,
        dep(count=2, interfaces=[{"network": "net", "ip": "10.0.0.5"}]),
        400,
        "static ip needs count 1",
    ),
    ("bad-cidr", "POST", "/v0/networks/net/subnets", J, {"name": "s", "cidr": "10.0.0.1/24"}, 400, "cidr"),
    (
        "gateway-outside",
        "POST",
        "/v0/networks/net/subnets",
        J,
        {"name": "s", "cidr": "10.0.0.0/24", "gateway_ip": "10.0.1.1"},
        400,
        "not in 10.0.0.0/24",
    ),
    ("name-with-slash", "POST", "/v0/tenants", J, {"name": "a/b"}, 400, "name"),
    ("name-with-nul", "POST", "/v0/tenants", J, {"name": "a\x00b"}, 400, "name"),
    ("name-too-long", "POST", "/v0/tenants", J, {"name": "x" * 201}, 400, "name"),
    ("lone-surrogate", "POST", "/v0/tenants", J, b'{"name": "\\ud800"}', 400, "name"),
    (
        "duplicate-group",
        "POST",
        "/v0/tenants/default/deployments",
        J,
        {"name": "d", "vm_groups": [GOOD_DEP["vm_groups"][0]] * 2},
        400,
        "unique",
    ),
    # missing references: named
    (
        "unknown-refs",
        "POST",
        "/v0/tenants/default/deployments",
        J,
        dep(image="nope", flavor="nada", interfaces=[{"network": "void"}]),
        422,
        "refers to unknown image nope, flavor nada, network void",
    ),
    (
        "ip-outside-subnets",
        "POST",
        "/v0/tenants/default/deployments",
        J,
        dep(interfaces=[{"network": "net", "ip": "172.16.0.1"}]),
        422,
        "in no subnet of network net",
    ),
    ("unknown-parent", "POST", "/v0/tenants/nobody/deployments", J, GOOD_DEP, 404, "tenant nobody not found"),
    (
        "unknown-network",
        "POST",
        "/v0/networks/void/subnets",
        J,
        {"name": "s", "cidr": "10.0.0.0/8"},
        404,
        "network void not found",
    ),
    ("update-missing", "PUT", "/v0/images/nope", J, {"src": "x"}, 404, "image nope not found"),
    ("delete-missing", "DELETE", "/v0/flavors/nope", None, None, 404, "flavor nope not found"),
    # duplicates and in use
    ("duplicate", "POST", "/v0/images", J, {"name": "img", "src": "elsewhere"}, 409, "image img exists"),
    ("in-use", "DELETE", "/v0/images/img", None, None, 409, "in use by deployment default/existing"),
    ("network-in-use", "DELETE", "/v0/networks/net", None, None, 409, "subnet net/sub"),
    ("built-in", "DELETE", "/v0/tenants/default", None, None, 409, "built in"),
    # size and type
    ("oversized", "POST", "/v0/tenants", J, b'{"name": "' + b"x" * (64 * 1024) + b'"}', 413, "larger"),
    (
        "oversized-xml",
        "POST",
        "/v0/tenants",
        X,
        b"<tenant>" + b" " * (64 * 1024) + b"</tenant>",
        413,
        "larger",
    ),
    ("text-plain", "POST", "/v0/tenants", "text/plain", b'{"name": "a"}', 415, "Content-Type"),
    ("no-content-type", "POST", "/v0/tenants", None, b'{"name": "a"}', 415, "Content-Type"),
    ("form", "POST", "/v0/tenants", "application/x-www-form-urlencoded", b"name=a", 415, "Content-Type"),
    # headers and parameters
    ("callback-not-http", "POST", "/v0/tenants", J, {"name": "a"}, 400, "callback URL"),
    ("bad-idempotency-key", "POST", "/v0/tenants", J, {"name": "a"}, 400, "Idempotency-Key"),
    ("bad-transaction-id", "GET", "/v0/transactions/abc", None, None, 400, "transaction_id"),
    ("negative-since", "GET", "/v0/notifications?since=-1", None, None, 400, "since"),
    ("unknown-transaction", "GET", "/v0/transactions/999999", None, None, 404, "not found"),
]

COUNTS = "SELECT " + ", ".join(
    f"(SELECT count(*) FROM {t})"
    for t in ("tenants", "images", "flavors", "networks", "subnets", "deployments", "vms")
)

HEADERS = {
    "callback-not-http": {"callback": "ftp://example/x"},
    "bad-idempotency-key": {"Idempotency-Key": "has space"},
}


@pytest.fixture(scope="module")
def seeded(esc_db_reset, esc_api_factory):
    """One app for the whole table: no bad request changes anything, which each case
    checks, so the cases can share the same seeded database."""
    esc_db_reset()
    with esc_api_factory() as api:
        for p, b in [
            ("/v0/images", {"name": "img", "src": "http://x"}),
            ("/v0/flavors", {"name": "fl", "vcpus": 1, "memory_mb": 64}),
            ("/v0/networks", {"name": "net"}),
            ("/v0/networks/net/subnets", {"name": "sub", "cidr": "10.0.0.0/24"}),
            ("/v0/tenants/default/deployments", {**GOOD_DEP, "name": "existing"}),
        ]:
            assert api.wait(api.client.post(p, json=b).json()["transaction_id"])["status"] == "succeeded"
        yield api


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_request(seeded, case: tuple[str, str, str, str | None, Any, int, str]) -> None:
    cid, method, path, ctype, body, status, text = case
    api, c = seeded, seeded.client
    before = api.sql("SELECT count(*) FROM transactions")
    resources = api.sql(COUNTS)

    headers = dict(HEADERS.get(cid, {}))
    if ctype:
        headers["Content-Type"] = ctype
    kwargs: dict[str, Any] = {"headers": headers}
    if isinstance(body, bytes):
        kwargs["content"] = body
    elif isinstance(body, dict) and ctype == X:
        kwargs["content"] = xmlio.render(path.rpartition("/")[2][:-1], body)
    elif isinstance(body, dict):
        kwargs["content"] = json.dumps(body).encode()
    r = c.request(method, path, **kwargs)
    assert r.status_code == status, r.text
    assert text in r.json()["error"] or any(text in d for d in r.json().get("details", [])), r.text

    # and in XML when asked
    if ctype != X:
        xr = c.request(method, path, **{**kwargs, "headers": {**headers, "Accept": "application/xml"}})
        assert xr.status_code == status and xr.headers["content-type"] == "application/xml"
        assert xr.content.startswith(b"<?xml") and b"<error><message>" in xr.content

    # nothing half-created
    assert api.sql("SELECT count(*) FROM transactions") == before
    assert api.sql(COUNTS) == resources


def test_unauthenticated_is_401_everywhere_under_v0(esc_api) -> None:
    c = esc_api.client
    for method, path in [
        ("GET", "/v0/tenants"),
        ("POST", "/v0/tenants"),
        ("DELETE", "/v0/images/x"),
        ("GET", "/v0/transactions/1"),
        ("GET", "/v0/notifications"),
    ]:
        r = c.request(method, path, auth=None, json={"name": "a"})
        assert r.status_code == 401 and r.headers["WWW-Authenticate"] == 'Basic realm="esc"'
    assert c.get("/openapi.json", auth=None).status_code == 200
    assert esc_api.sql("SELECT count(*) FROM transactions") == [(0,)]
