"""The ETSI SOL003 VNF LCM service end to end on a real PostgreSQL: its app with its LCM
worker and notification sender, escmanager's app with its transaction worker (the VIM
work), and a fake NFVO (receiver, token endpoint, Granting API) on a real socket. Every
response and notification is checked against the published specification
(tests/etsi_spec.py), not against expectations written here."""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest

from esc.config import CallbackConfig, EtsiConfig, GrantConfig, NodeConfig, PackageSourceConfig, User
from esc.etsi import auth as etsi_auth
from esc.etsi.app import create_app
from esc.etsi.grant import Granter
from esc.etsi.nfvo_packages import PackageSource
from esc.etsi.samples import SAMPLE_VNFD_ID, sample_csar
from esc.secrets import hash_password
from etsi_fakes import CLIENT_ID, CLIENT_SECRET, PASSWORD, USER, FakeNfvo

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

ETSI_PASSWORD = "etsi-test-password"
SERVER = "192.0.2.10"
BASE = f"http://{SERVER}:8250/vnflcm/v1"
AUTH = etsi_auth.EtsiAuth(User(name="etsi", password_hash=hash_password(ETSI_PASSWORD)), "k" * 64)


try:
    from etsi_spec import Spec
except ImportError:  # pragma: no cover
    Spec = None  # type: ignore[assignment,misc]


class Checked:
    """A TestClient whose every answer is checked against the specification."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.esc: Any = None  # escmanager's app (its REST API: networks...)
        self.spec = Spec.load() if Spec is not None else None

    def request(self, method: str, path: str, check: bool = True, **kw: Any) -> Any:
        r = self.client.request(method, path, **kw)
        if check and self.spec is not None and path.startswith("/vnflcm/v1/") and "api_versions" not in path:
            self.spec.check_response(method, path.split("?")[0], r.status_code, r.headers,
                                     r.content or None)
        return r

    def get(self, path: str, **kw: Any) -> Any:
        return self.request("GET", path, **kw)

    def post(self, path: str, **kw: Any) -> Any:
        return self.request("POST", path, **kw)

    def patch(self, path: str, **kw: Any) -> Any:
        return self.request("PATCH", path, **kw)

    def delete(self, path: str, **kw: Any) -> Any:
        return self.request("DELETE", path, **kw)

    def op(self, location: str, timeout: float = 15.0,
           until: tuple[str, ...] = ("COMPLETED", "FAILED_TEMP", "FAILED", "ROLLED_BACK")) -> dict[str, Any]:
        path = location.replace(f"http://{SERVER}:8250", "")
        deadline = time.monotonic() + timeout
        while True:
            body = self.get(path).json()
            if body["operationState"] in until:
                return body
            assert time.monotonic() < deadline, f"operation still {body['operationState']}"
            time.sleep(0.02)


@pytest.fixture
def nfvo() -> Iterator[FakeNfvo]:
    fake = FakeNfvo().start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def etsi(make_esc_api: Callable[..., Any], esc_db: str, nfvo: FakeNfvo) -> Iterator[Callable[..., Any]]:
    @contextmanager
    def make(grant: bool = False, packages: bool = False, executor: Any = None) -> Iterator[Checked]:
        etsi_cfg = EtsiConfig(grant=GrantConfig(url=f"{nfvo.base}/grant/v1", user=USER, password=PASSWORD)
                              if grant else None,
                              packages=PackageSourceConfig(url=f"{nfvo.base}/vnfpkgm/v1", user=USER,
                                                           password=PASSWORD) if packages else None)
        cfg = NodeConfig(name="node-t", ipaddr=[SERVER], callbacks=CallbackConfig(deny=[]), etsi=etsi_cfg)
        granter = Granter(etsi_cfg.grant, cfg) if etsi_cfg.grant else None
        source = PackageSource(etsi_cfg.packages) if etsi_cfg.packages else None
        app = create_app(cfg, esc_db, AUTH, grant=granter, packages=source,
                         worker_options={"poll": 0.05},
                         sender_options={"poll": 0.05, "first_delay": 0.05, "timeout": 2.0})
        with make_esc_api(**({"executor": executor} if executor else {})) as esc, \
                TestClient(app, base_url=f"http://{SERVER}:8250") as client:
            client.auth = ("etsi", ETSI_PASSWORD)
            checked = Checked(client)
            checked.esc = esc
            yield checked
    yield make


def onboard(c: Checked, **kw: Any) -> str:
    r = c.client.post("/esc/v1/vnf_packages", content=sample_csar(**kw),
                      headers={"Content-Type": "application/zip"})
    assert r.status_code in (200, 201), r.text
    return r.json()["vnfdId"]


def subscribe(c: Checked, nfvo: FakeNfvo, **extra: Any) -> dict[str, Any]:
    body = {"callbackUri": f"{nfvo.base}/notify", **extra}
    if Spec is not None:
        Spec.load().check_request("POST", "/vnflcm/v1/subscriptions", body)
    r = c.post("/vnflcm/v1/subscriptions", json=body)
    assert r.status_code == 201, r.text
    return r.json()


def op_notifications(nfvo: FakeNfvo, op_id: str) -> list[dict[str, Any]]:
    return [b for _, b in nfvo.notifications if b.get("vnfLcmOpOccId") == op_id]


def check_notifications(nfvo: FakeNfvo) -> None:
    if Spec is None:
        return
    spec = Spec.load()
    for headers, body in nfvo.notifications:
        assert body["notificationType"] in spec.notification_types
        spec.check_notification(body)
        assert headers.get("version") == "1.1.1"


def vms_of(conninfo: str, inst_id: str) -> list[tuple[str, str]]:
    with psycopg.connect(conninfo) as conn:
        return conn.execute(
            "SELECT v.vm_group, v.status FROM vms v JOIN deployments d ON d.id = v.deployment_id"
            " JOIN tenants t ON t.id = d.tenant_id WHERE t.name = 'etsi' AND d.name = %s ORDER BY v.name",
            (inst_id,)).fetchall()


def test_lifecycle_through_the_api(etsi: Any, nfvo: FakeNfvo, esc_db: str) -> None:
    with etsi() as c:
        vnfd_id = onboard(c)
        sub = subscribe(c, nfvo)
        assert sub["_links"]["self"]["href"].startswith(BASE)
        assert len(nfvo.tests) == 1  # the callback was tested with a GET before it was stored

        r = c.post("/vnflcm/v1/vnf_instances", json={"vnfdId": vnfd_id, "vnfInstanceName": "vnf-1"})
        assert r.status_code == 201, r.text
        inst = r.json()
        assert r.headers["location"] == f"{BASE}/vnf_instances/{inst['id']}"
        assert inst["instantiationState"] == "NOT_INSTANTIATED"
        assert inst["_links"]["instantiate"]["href"].startswith(BASE)

        r = c.post(f"/vnflcm/v1/vnf_instances/{inst['id']}/instantiate", json={"flavourId": "simple"})
        assert r.status_code == 202, r.text
        assert r.content == b""
        op = c.op(r.headers["location"])
        assert op["operationState"] == "COMPLETED", op
        assert sorted(g for g, _ in vms_of(esc_db, inst["id"])) == ["VDU1", "VDU2"]
        got = c.get(f"/vnflcm/v1/vnf_instances/{inst['id']}").json()
        assert got["instantiationState"] == "INSTANTIATED"
        assert len(got["instantiatedVnfInfo"]["vnfcResourceInfo"]) == 2

        # each state once, exactly one RESULT
        nfvo.wait_for(lambda ns: any(b.get("operationState") == "COMPLETED" for _, b in ns))
        states = [b["operationState"] for b in op_notifications(nfvo, op["id"])]
        assert states == ["STARTING", "PROCESSING", "COMPLETED"]

        r = c.post(f"/vnflcm/v1/vnf_instances/{inst['id']}/scale",
                   json={"type": "SCALE_OUT", "aspectId": "worker", "numberOfSteps": 2})
        assert r.status_code == 202, r.text
        assert c.op(r.headers["location"])["operationState"] == "COMPLETED"
        assert sorted(g for g, _ in vms_of(esc_db, inst["id"])) == ["VDU1", "VDU2", "VDU2", "VDU2"]
        r = c.post(f"/vnflcm/v1/vnf_instances/{inst['id']}/scale",
                   json={"type": "SCALE_IN", "aspectId": "worker", "numberOfSteps": 1})
        scaled = c.op(r.headers["location"])
        assert scaled["operationState"] == "COMPLETED"
        assert [a["changeType"] for a in scaled["resourceChanges"]["affectedVnfcs"]] == ["REMOVED"]

        r = c.post(f"/vnflcm/v1/vnf_instances/{inst['id']}/terminate", json={"terminationType": "FORCEFUL"})
        assert c.op(r.headers["location"])["operationState"] == "COMPLETED"
        assert vms_of(esc_db, inst["id"]) == []
        assert c.delete(f"/vnflcm/v1/vnf_instances/{inst['id']}").status_code == 204
        assert c.get(f"/vnflcm/v1/vnf_instances/{inst['id']}").status_code == 404

        ns = nfvo.wait_for(lambda ns: any(b["notificationType"] == "VnfIdentifierDeletionNotification"
                                          for _, b in ns))
        types = [b["notificationType"] for _, b in ns]
        assert types[0] == "VnfIdentifierCreationNotification"
        for _, b in ns:  # links name the server address (over HTTPS when it is served), never a node
            hrefs = [v["href"] for v in b["_links"].values()]
            assert all(h.startswith(f"https://{SERVER}:8251/vnflcm/v1/") for h in hrefs)
        check_notifications(nfvo)


def test_wrong_state_and_unknown_ids(etsi: Any, nfvo: FakeNfvo) -> None:
    with etsi() as c:
        vnfd_id = onboard(c)
        inst = c.post("/vnflcm/v1/vnf_instances", json={"vnfdId": vnfd_id}).json()
        path = f"/vnflcm/v1/vnf_instances/{inst['id']}"
        r = c.post(f"{path}/terminate", json={"terminationType": "FORCEFUL"})
        assert r.status_code == 409
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["status"] == 409
        unknown = c.post("/vnflcm/v1/vnf_instances/nope/instantiate", json={"flavourId": "simple"})
        assert unknown.status_code == 404
        assert c.get("/vnflcm/v1/vnf_lcm_op_occs/nope").status_code == 404
        assert c.post("/vnflcm/v1/vnf_instances", json={"vnfdId": "unknown"}).status_code == 422
        assert c.post(f"{path}/instantiate", json={"flavourId": "no-such"}).status_code == 400
        r = c.post(f"{path}/instantiate", json={"flavour": "simple"})  # a required field missing
        assert r.status_code == 400 and "flavourId" in r.json()["detail"]
        r = c.post(f"{path}/instantiate", content=b"{not json", headers={"Content-Type": "application/json"})
        assert r.status_code == 400
        first = c.post(f"{path}/instantiate", json={"flavourId": "simple"})
        assert first.status_code == 202
        second = c.post(f"{path}/instantiate", json={"flavourId": "simple"})
        assert second.status_code == 409  # another operation holds the instance, or it is instantiated
        c.op(first.headers["location"])
        assert c.delete(path).status_code == 409  # instantiated


def test_modify_with_etag(etsi: Any, nfvo: FakeNfvo) -> None:
    with etsi() as c:
        vnfd_id = onboard(c)
        r = c.post("/vnflcm/v1/vnf_instances", json={"vnfdId": vnfd_id, "vnfInstanceName": "a"})
        path = f"/vnflcm/v1/vnf_instances/{r.json()['id']}"
        tag = c.get(path).headers["etag"]
        r = c.patch(path, json={"vnfInstanceName": "b", "metadata": {"k": "v"}},
                    headers={"If-Match": tag, "Content-Type": "application/merge-patch+json"})
        assert r.status_code == 202, r.text
        op = c.op(r.headers["location"])
        assert op["operation"] == "MODIFY_INFO" and op["operationState"] == "COMPLETED"
        assert op["changedInfo"]["vnfInstanceName"] == "b"
        got = c.get(path)
        assert got.json()["vnfInstanceName"] == "b" and got.headers["etag"] != tag
        stale = c.patch(path, json={"vnfInstanceName": "c"}, headers={"If-Match": tag})
        assert stale.status_code == 412


def test_grant_refused_then_rollback(etsi: Any, nfvo: FakeNfvo, esc_db: str) -> None:
    with etsi(grant=True) as c:
        vnfd_id = onboard(c)
        inst = c.post("/vnflcm/v1/vnf_instances", json={"vnfdId": vnfd_id}).json()
        path = f"/vnflcm/v1/vnf_instances/{inst['id']}"
        nfvo.refuse_grants = True
        r = c.post(f"{path}/instantiate", json={"flavourId": "simple", "instantiationLevelId": "big"})
        op = c.op(r.headers["location"])
        assert op["operationState"] == "FAILED_TEMP"
        assert "grant refused" in op["error"]["detail"]
        assert set(op["_links"]) >= {"retry", "rollback", "fail"}
        assert vms_of(esc_db, inst["id"]) == []
        if Spec is not None:
            for g in nfvo.grants:
                Spec.load().check_grant_request(g)
        assert nfvo.grants[0]["operation"] == "INSTANTIATE" and len(nfvo.grants[0]["addResources"]) == 4
        # rollback: back to NOT_INSTANTIATED, the instance free again
        assert c.post(f"/vnflcm/v1/vnf_lcm_op_occs/{op['id']}/rollback").status_code == 202
        op = c.op(r.headers["location"])
        assert op["operationState"] == "ROLLED_BACK"
        assert c.get(path).json()["instantiationState"] == "NOT_INSTANTIATED"
        # granted this time
        nfvo.refuse_grants = False
        r = c.post(f"{path}/instantiate", json={"flavourId": "simple"})
        op = c.op(r.headers["location"])
        assert op["operationState"] == "COMPLETED" and op["grantId"]


def test_retry_and_fail(etsi: Any, nfvo: FakeNfvo) -> None:
    with etsi(grant=True) as c:
        vnfd_id = onboard(c)
        inst = c.post("/vnflcm/v1/vnf_instances", json={"vnfdId": vnfd_id}).json()
        nfvo.refuse_grants = True
        r = c.post(f"/vnflcm/v1/vnf_instances/{inst['id']}/instantiate", json={"flavourId": "simple"})
        op = c.op(r.headers["location"])
        assert c.post(f"/vnflcm/v1/vnf_lcm_op_occs/{op['id']}/retry").status_code == 202
        op = c.op(r.headers["location"])
        assert op["operationState"] == "FAILED_TEMP"  # refused again
        assert len(nfvo.grants) == 2  # a retry asks for the grant again
        r2 = c.post(f"/vnflcm/v1/vnf_lcm_op_occs/{op['id']}/fail")
        assert r2.status_code == 200 and r2.json()["operationState"] == "FAILED"
        assert c.post(f"/vnflcm/v1/vnf_lcm_op_occs/{op['id']}/retry").status_code == 409


def test_subscriptions(etsi: Any, nfvo: FakeNfvo) -> None:
    with etsi() as c:
        sub = subscribe(c, nfvo, filter={"notificationTypes": ["VnfLcmOperationOccurrenceNotification"],
                                         "operationStates": ["COMPLETED"]})
        again = c.post("/vnflcm/v1/subscriptions", json={
            "callbackUri": f"{nfvo.base}/notify",
            "filter": {"operationStates": ["COMPLETED"],
                       "notificationTypes": ["VnfLcmOperationOccurrenceNotification"]}},
            follow_redirects=False)
        assert again.status_code == 303
        assert again.headers["location"] == f"{BASE}/subscriptions/{sub['id']}"
        listed = c.get("/vnflcm/v1/subscriptions").json()
        assert [s["id"] for s in listed] == [sub["id"]]
        assert "authentication" not in c.get(f"/vnflcm/v1/subscriptions/{sub['id']}").json()
        bad = c.post("/vnflcm/v1/subscriptions", json={"callbackUri": f"{nfvo.base}/nothing-here"})
        assert bad.status_code == 400  # the test GET did not answer 204
        # only COMPLETED operation notifications reach this one
        vnfd_id = onboard(c)
        inst = c.post("/vnflcm/v1/vnf_instances", json={"vnfdId": vnfd_id}).json()
        r = c.post(f"/vnflcm/v1/vnf_instances/{inst['id']}/instantiate", json={"flavourId": "simple"})
        c.op(r.headers["location"])
        ns = nfvo.wait_for(lambda ns: len(ns) >= 1)
        time.sleep(0.3)
        assert [b["operationState"] for _, b in nfvo.notifications] == ["COMPLETED"]
        assert ns[0][1]["subscriptionId"] == sub["id"]
        assert c.delete(f"/vnflcm/v1/subscriptions/{sub['id']}").status_code == 204
        assert c.get(f"/vnflcm/v1/subscriptions/{sub['id']}").status_code == 404


def test_notification_auth_basic_and_oauth2(etsi: Any, nfvo: FakeNfvo) -> None:
    with etsi() as c:
        subscribe(c, nfvo, callbackUri=f"{nfvo.base}/notify?auth=basic",
                  filter={"notificationTypes": ["VnfIdentifierCreationNotification"]},
                  authentication={"authType": ["BASIC"],
                                  "paramsBasic": {"userName": USER, "password": PASSWORD}})
        subscribe(c, nfvo, callbackUri=f"{nfvo.base}/notify?auth=oauth",
                  filter={"notificationTypes": ["VnfIdentifierCreationNotification"]},
                  authentication={"authType": ["OAUTH2_CLIENT_CREDENTIALS"],
                                  "paramsOauth2ClientCredentials": {
                                      "clientId": CLIENT_ID, "clientPassword": CLIENT_SECRET,
                                      "tokenEndpoint": f"{nfvo.base}/token"}})
        wrong = c.post("/vnflcm/v1/subscriptions", json={
            "callbackUri": f"{nfvo.base}/notify?auth=basic",
            "authentication": {"authType": ["BASIC"],
                               "paramsBasic": {"userName": USER, "password": "wrong"}}})
        assert wrong.status_code == 400  # the receiver refused the test GET
        vnfd_id = onboard(c)
        c.post("/vnflcm/v1/vnf_instances", json={"vnfdId": vnfd_id})
        ns = nfvo.wait_for(lambda ns: len(ns) >= 2)
        auths = sorted(h["authorization"].split()[0] for h, _ in ns)
        assert auths == ["Basic", "Bearer"]


def test_authentication(etsi: Any, nfvo: FakeNfvo) -> None:
    with etsi() as c:
        anon = c.client.get("/vnflcm/v1/vnf_instances", auth=None)
        assert anon.status_code == 401 and anon.headers["content-type"] == "application/problem+json"
        assert c.client.get("/vnflcm/v1/vnf_instances", auth=("etsi", "wrong")).status_code == 401
        # OAuth 2.0 client credentials: the ETSI user is the client
        r = c.client.post("/oauth2/token", data={"grant_type": "client_credentials"},
                          auth=("etsi", ETSI_PASSWORD))
        assert r.status_code == 200, r.text
        token = r.json()["access_token"]
        assert r.json()["token_type"] == "bearer" and r.json()["expires_in"] == 3600
        ok = c.client.get("/vnflcm/v1/vnf_instances", auth=None, headers={"Authorization": f"Bearer {token}"})
        assert ok.status_code == 200
        forged = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
        assert c.client.get("/vnflcm/v1/vnf_instances", auth=None,
                            headers={"Authorization": f"Bearer {forged}"}).status_code == 401
        expired = etsi_auth.issue_token(AUTH.token_key, "etsi", 60, now=time.time() - 120)
        assert c.client.get("/vnflcm/v1/vnf_instances", auth=None,
                            headers={"Authorization": f"Bearer {expired}"}).status_code == 401
        bad = c.client.post("/oauth2/token", data={"grant_type": "client_credentials"}, auth=("etsi", "x"))
        assert bad.status_code == 401 and bad.json()["error"] == "invalid_client"
        assert c.client.post("/oauth2/token", data={"grant_type": "password"},
                             auth=("etsi", ETSI_PASSWORD)).status_code == 400


def test_versions_paging_and_filters(etsi: Any, nfvo: FakeNfvo, monkeypatch: pytest.MonkeyPatch) -> None:
    from esc.etsi import app as etsi_app

    monkeypatch.setattr(etsi_app, "PAGE_SIZE", 2)
    with etsi() as c:
        for prefix in ("/vnflcm/v1", "/vnflcm"):
            v = c.get(f"{prefix}/api_versions")
            assert v.status_code == 200 and v.json()["apiVersions"][0]["version"] == "1.1.1"
            assert v.headers["version"] == "1.1.1"
        assert c.client.get("/vnflcm/v1/vnf_instances", headers={"Version": "2.0.0"}).status_code == 406
        vnfd_id = onboard(c)
        ids = [c.post("/vnflcm/v1/vnf_instances",
                      json={"vnfdId": vnfd_id, "vnfInstanceName": f"n{i}"}).json()["id"] for i in range(5)]
        seen, url = [], "/vnflcm/v1/vnf_instances"
        while url:
            r = c.get(url)
            seen += [i["id"] for i in r.json()]
            link = r.headers.get("link")
            url = link.split(";")[0].strip("<>").replace(f"http://{SERVER}:8250", "") if link else ""
            if link:
                assert link.startswith(f"<{BASE}/vnf_instances?")
        assert seen == ids
        r = c.get("/vnflcm/v1/vnf_instances?filter=(eq,vnfInstanceName,n3)")
        assert [i["vnfInstanceName"] for i in r.json()] == ["n3"]
        r = c.get("/vnflcm/v1/vnf_instances?filter=(in,vnfInstanceName,n1,n4)")
        assert [i["vnfInstanceName"] for i in r.json()] == ["n1", "n4"]
        assert c.get("/vnflcm/v1/vnf_instances?filter=(bogus,x,1)").status_code == 400
        assert c.get("/vnflcm/v1/vnf_instances?all_fields&fields=id").status_code == 400


def test_server_address_in_ha_mode_is_never_a_node() -> None:
    from esc.config import HaConfig, Vip

    ha = HaConfig(node_list=["10.0.0.1", "10.0.0.2"], vip=Vip.parse("10.0.0.50", "eth0"), vif="eth0",
                  self_index=0)
    cfg = NodeConfig(name="a", ipaddr=["10.0.0.1"], ha=ha)
    assert cfg.etsi_server_address == "10.0.0.50"
    with pytest.raises(ValueError, match="node's own address"):
        NodeConfig(name="a", ipaddr=["10.0.0.1"], ha=ha, etsi=EtsiConfig(server_address="10.0.0.2"))
    assert NodeConfig(name="a", ha=ha, etsi=EtsiConfig(server_address="vnfm.example")).etsi_server_address \
        == "vnfm.example"


def test_operate_and_heal(etsi: Any, nfvo: FakeNfvo, esc_db: str) -> None:
    with etsi() as c:
        vnfd_id = onboard(c)
        inst = c.post("/vnflcm/v1/vnf_instances", json={"vnfdId": vnfd_id}).json()
        path = f"/vnflcm/v1/vnf_instances/{inst['id']}"
        c.op(c.post(f"{path}/instantiate", json={"flavourId": "simple"}).headers["location"])
        assert c.post(f"{path}/operate", json={"changeStateTo": "STARTED"}).status_code == 409  # already
        r = c.post(f"{path}/operate", json={"changeStateTo": "STOPPED", "stopType": "FORCEFUL"})
        assert c.op(r.headers["location"])["operationState"] == "COMPLETED"
        assert c.get(path).json()["instantiatedVnfInfo"]["vnfState"] == "STOPPED"
        with psycopg.connect(esc_db) as conn:  # the controller's deployment stops its VMs
            spec = conn.execute("SELECT spec FROM deployments WHERE name = %s", (inst["id"],)).fetchone()
        assert spec is not None and spec[0]["vm_state"] == "stopped"
        r = c.post(f"{path}/operate", json={"changeStateTo": "STARTED"})
        assert c.op(r.headers["location"])["operationState"] == "COMPLETED"
        r = c.post(f"{path}/heal", json={"cause": "test"})
        healed = c.op(r.headers["location"])
        assert healed["operationState"] == "COMPLETED"
        assert sorted(a["changeType"] for a in healed["resourceChanges"]["affectedVnfcs"]) == ["MODIFIED"] * 2


def test_packages_fetched_from_the_nfvo(etsi: Any, nfvo: FakeNfvo) -> None:
    with etsi(packages=True) as c:
        r = c.post("/vnflcm/v1/vnf_instances", json={"vnfdId": SAMPLE_VNFD_ID})
        assert r.status_code == 422 and "NFVO" in r.json()["detail"]  # the NFVO has none either
        nfvo.packages["p1"] = (SAMPLE_VNFD_ID, sample_csar())
        r = c.post("/vnflcm/v1/vnf_instances", json={"vnfdId": SAMPLE_VNFD_ID})
        assert r.status_code == 201, r.text
        assert [p["vnfdId"] for p in c.client.get("/esc/v1/vnf_packages").json()] == [SAMPLE_VNFD_ID]
        nfvo.packages["p2"] = ("other", sample_csar(descriptor_id="not-other"))
        r = c.post("/vnflcm/v1/vnf_instances", json={"vnfdId": "other"})
        assert r.status_code == 422 and "holds VNFD not-other" in r.json()["detail"]


def test_modify_removes_with_null_and_keeps_the_vnfd(etsi: Any, nfvo: FakeNfvo) -> None:
    with etsi() as c:
        vnfd_id = onboard(c)
        other = c.client.post("/esc/v1/vnf_packages", content=sample_csar(descriptor_id="another-vnfd"),
                              headers={"Content-Type": "application/zip"}).json()["id"]
        r = c.post("/vnflcm/v1/vnf_instances", json={"vnfdId": vnfd_id, "vnfInstanceName": "a",
                                                      "vnfInstanceDescription": "d"})
        path = f"/vnflcm/v1/vnf_instances/{r.json()['id']}"
        merge = {"Content-Type": "application/merge-patch+json"}
        r = c.patch(path, json={"vnfInstanceDescription": None}, headers=merge)
        assert c.op(r.headers["location"])["operationState"] == "COMPLETED"
        got = c.get(path).json()
        assert "vnfInstanceDescription" not in got and got["vnfInstanceName"] == "a"
        r = c.patch(path, json={"vnfPkgId": other}, headers=merge)
        assert r.status_code == 409 and "holds VNFD another-vnfd" in r.json()["detail"]


class HeldExecutor:
    """The VIM work of escmanager's worker, held until ``release``: an operation stays
    PROCESSING meanwhile."""

    def __init__(self) -> None:
        import threading

        self.go = threading.Event()

    def apply(self, work: Any) -> dict[str, str]:
        self.go.wait(20)
        return {vm.name: "deployed" for vm in work.vms}


def test_cancel_while_processing_then_rollback(etsi: Any, nfvo: FakeNfvo, esc_db: str) -> None:
    held = HeldExecutor()
    with etsi(executor=held) as c:
        vnfd_id = onboard(c)
        inst = c.post("/vnflcm/v1/vnf_instances", json={"vnfdId": vnfd_id}).json()
        r = c.post(f"/vnflcm/v1/vnf_instances/{inst['id']}/instantiate", json={"flavourId": "simple"})
        op = c.op(r.headers["location"], until=("PROCESSING",))
        cancel = c.post(f"/vnflcm/v1/vnf_lcm_op_occs/{op['id']}/cancel", json={"cancelMode": "FORCEFUL"})
        assert cancel.status_code == 202, cancel.text
        again = c.post(f"/vnflcm/v1/vnf_lcm_op_occs/{op['id']}/cancel", json={"cancelMode": "FORCEFUL"})
        assert again.status_code == 409  # already pending (or already ended)
        op = c.op(r.headers["location"])
        assert op["operationState"] == "FAILED_TEMP" and op["error"]["detail"] == "cancelled"
        held.go.set()
        assert c.post(f"/vnflcm/v1/vnf_lcm_op_occs/{op['id']}/rollback").status_code == 202
        assert c.op(r.headers["location"])["operationState"] == "ROLLED_BACK"
        assert vms_of(esc_db, inst["id"]) == []  # what the instantiation made is gone
        state = c.get(f"/vnflcm/v1/vnf_instances/{inst['id']}").json()["instantiationState"]
        assert state == "NOT_INSTANTIATED"


def test_scale_to_level_change_flavour_and_ext_conn(etsi: Any, nfvo: FakeNfvo, esc_db: str) -> None:
    with etsi() as c:
        r = c.client.post("/esc/v1/vnf_packages", content=sample_csar(flavours=("simple", "large")),
                          headers={"Content-Type": "application/zip"})
        vnfd_id = r.json()["vnfdId"]
        for net in ("mgmt", "data"):
            tx = c.esc.client.post("/v0/networks", json={"name": net}).json()["transaction_id"]
            assert c.esc.wait(tx)["status"] == "succeeded"
        inst = c.post("/vnflcm/v1/vnf_instances", json={"vnfdId": vnfd_id}).json()
        path = f"/vnflcm/v1/vnf_instances/{inst['id']}"
        ext = [{"id": "ext1", "resourceId": "mgmt", "extCps": [{"cpdId": "VDU1_CP1"}]}]
        r = c.post(f"{path}/instantiate", json={"flavourId": "simple", "extVirtualLinks": ext})
        assert c.op(r.headers["location"])["operationState"] == "COMPLETED"
        r = c.post(f"{path}/scale_to_level", json={"instantiationLevelId": "big"})
        assert c.op(r.headers["location"])["operationState"] == "COMPLETED"
        assert sorted(g for g, _ in vms_of(esc_db, inst["id"])) == ["VDU1", "VDU1", "VDU2", "VDU2"]
        r = c.post(f"{path}/change_ext_conn", json={"extVirtualLinks": [
            {"id": "ext1", "resourceId": "data", "extCps": [{"cpdId": "VDU1_CP1"}]}]})
        assert c.op(r.headers["location"])["operationState"] == "COMPLETED"
        with psycopg.connect(esc_db) as conn:
            nets = conn.execute(
                "SELECT DISTINCT i->>'network' FROM vms v JOIN deployments d ON d.id = v.deployment_id,"
                " jsonb_array_elements(v.interfaces) i WHERE d.name = %s", (inst["id"],)).fetchall()
        assert nets == [("data",)]
        got = c.get(path).json()["instantiatedVnfInfo"]
        assert got["extVirtualLinkInfo"][0]["resourceHandle"]["resourceId"] == "data"
        r = c.post(f"{path}/change_flavour", json={"newFlavourId": "large"})
        assert c.op(r.headers["location"])["operationState"] == "COMPLETED"
        assert c.get(path).json()["instantiatedVnfInfo"]["flavourId"] == "large"
        # a network the controller does not have: FAILED_TEMP with the reason, then rollback
        r = c.post(f"{path}/change_ext_conn", json={"extVirtualLinks": [
            {"id": "ext1", "resourceId": "nowhere", "extCps": [{"cpdId": "VDU1_CP1"}]}]})
        op = c.op(r.headers["location"])
        assert op["operationState"] == "FAILED_TEMP" and "nowhere" in op["error"]["detail"], op
        assert c.post(f"/vnflcm/v1/vnf_lcm_op_occs/{op['id']}/rollback").status_code == 202
        assert c.op(r.headers["location"])["operationState"] == "ROLLED_BACK"
        assert c.get(path).json()["instantiatedVnfInfo"]["extVirtualLinkInfo"][0]["resourceHandle"][
            "resourceId"] == "data"
