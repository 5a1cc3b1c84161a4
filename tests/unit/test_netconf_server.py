"""The NETCONF service (esc.netconf) driven by ncclient over SSH on 127.0.0.1, on a real
PostgreSQL, beside the REST API on the same database: the same state both ways."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

import pytest
from lxml import etree

pytest.importorskip("ncclient")
from ncclient import manager  # noqa: E402
from ncclient.operations import RPCError  # noqa: E402

from esc.netconf import credentials  # noqa: E402
from esc.netconf.names import ESC_NS, esc_yang  # noqa: E402
from esc.netconf.service import Running  # noqa: E402
from esc.secrets import hash_password  # noqa: E402

USER, PASSWORD = "admin", "Confd-pass-1"
KEPT_KEY = "ab" * 32
NS = {"e": ESC_NS}


@pytest.fixture(scope="module")
def password_hash() -> str:
    return hash_password(PASSWORD)


@pytest.fixture
def rest(make_esc_api: Callable[..., AbstractContextManager[Any]]) -> Iterator[Any]:
    """The REST API and its worker on the emptied test database."""
    with make_esc_api() as api:
        yield api


@pytest.fixture
def netconf(rest: Any, password_hash: str) -> Iterator[Running]:
    auth = credentials.ConfdAuth(USER, password_hash, credentials.host_key(KEPT_KEY))
    running = Running(rest.conninfo, auth, feed_interval=0.05)
    running.port = running.start("127.0.0.1", 0)  # type: ignore[attr-defined]
    try:
        yield running
    finally:
        running.stop()


def connect(running: Running, password: str = PASSWORD) -> manager.Manager:
    return manager.connect(host="127.0.0.1", port=running.port, username=USER,  # type: ignore[attr-defined]
                           password=password, hostkey_verify=False, allow_agent=False,
                           look_for_keys=False, timeout=10)


def config(body: str) -> str:
    return f'<config><esc_datamodel xmlns="{ESC_NS}">{body}</esc_datamodel></config>'


def wait_done(rest: Any, timeout: float = 10.0) -> None:
    """Every transaction finished (succeeded or failed)."""
    deadline = time.monotonic() + timeout
    while rest.sql("SELECT count(*) FROM transactions WHERE status IN ('accepted', 'running')") != [(0,)]:
        assert time.monotonic() < deadline, "transactions still unfinished"
        time.sleep(0.02)


BASICS = """
<tenants><tenant><name>acme</name><description>the tenant</description></tenant></tenants>
<networks><network><name>mgmt</name>
  <subnet><name>v4</name><address>192.0.2.0</address><netmask>255.255.255.0</netmask>
          <gateway>192.0.2.1</gateway></subnet></network></networks>
<flavors><flavor><name>small</name><vcpus>1</vcpus><memory_mb>512</memory_mb>
  <root_disk_mb>1024</root_disk_mb></flavor></flavors>
<images><image><name>cirros</name><src>file:///cirros.img</src></image></images>
"""

DEPLOYMENT = """
<tenants><tenant><name>acme</name><deployments><deployment><name>vnf1</name>
  <vm_group><name>g</name><image>cirros</image><flavor>small</flavor>
    <scaling><min_active>2</min_active><max_active>2</max_active></scaling>
    <interfaces><interface><nicid>0</nicid><network>mgmt</network></interface></interfaces>
    <kpi_data><kpi><event_name>VM_ALIVE</event_name><metric_occurrences_false>3</metric_occurrences_false>
      <metric_collector><type>ICMPPing</type><poll_frequency>2.5</poll_frequency></metric_collector></kpi>
    </kpi_data>
    <recovery_policy><recovery_type>AUTO</recovery_type><action_on_recovery>REDEPLOY_ONLY</action_on_recovery>
    </recovery_policy>
  </vm_group></deployment></deployments></tenant></tenants>
"""


def test_hello_capabilities_and_the_empty_configuration(netconf: Running) -> None:
    with connect(netconf) as m:
        caps = set(m.server_capabilities)
        assert "urn:ietf:params:netconf:base:1.1" in caps
        assert "urn:ietf:params:netconf:capability:writable-running:1.0" in caps
        assert "urn:ietf:params:netconf:capability:notification:1.0" in caps
        assert any(c.startswith(f"{ESC_NS}?module=esc&revision=") for c in caps)
        assert m.session_id
        data = etree.fromstring(m.get_config("running").data_xml.encode())
        # the built-in tenant, nothing else
        assert data.xpath("//e:tenant/e:name/text()", namespaces=NS) == ["default"]


def test_a_wrong_password_is_refused(netconf: Running) -> None:
    from ncclient.transport.errors import AuthenticationError

    with pytest.raises(AuthenticationError):
        connect(netconf, "wrong")


def test_edit_config_creates_what_rest_then_shows_and_the_reverse(netconf: Running, rest: Any) -> None:
    c = rest.client
    with connect(netconf) as m:
        m.edit_config(target="running", config=config(BASICS))
        m.edit_config(target="running", config=config(DEPLOYMENT))
        wait_done(rest)
        d = c.get("/v0/tenants/acme/deployments/vnf1").json()
        assert d["status"] == "deployed" and [v["name"] for v in d["vms"]] == ["vnf1_g_0", "vnf1_g_1"]
        assert d["vm_groups"] == [{"name": "g", "image": "cirros", "flavor": "small", "count": 2,
                                   "interfaces": [{"network": "mgmt", "ip": None}],
                                   "kpi": {"type": "icmp_ping", "interval_s": 2.5, "down_after": 3},
                                   "recovery": {"policy": "redeploy"}}]
        assert c.get("/v0/networks/mgmt/subnets/v4").json()["cidr"] == "192.0.2.0/24"
        assert c.get("/v0/flavors/small").json()["root_disk_gb"] == 1
        txs = c.get("/v0/transactions").json()
        assert {t["method"] for t in txs} == {"NETCONF"} and {t["status"] for t in txs} == {"succeeded"}

        # the same edit again changes nothing: no new transaction
        m.edit_config(target="running", config=config(DEPLOYMENT))
        assert len(c.get("/v0/transactions").json()) == len(txs)

        # REST writes, NETCONF reads
        r = c.post("/v0/tenants/acme/deployments", json={"name": "vnf2", "description": "by REST"})
        rest.wait(r.json()["transaction_id"])
        data = etree.fromstring(m.get_config("running").data_xml.encode())
        names = data.xpath("//e:tenant[e:name='acme']//e:deployment/e:name/text()", namespaces=NS)
        assert names == ["vnf1", "vnf2"]
        # the round trip: what get-config shows is what was written
        g = data.xpath("//e:deployment[e:name='vnf1']/e:vm_group", namespaces=NS)[0]
        assert g.findtext("e:scaling/e:min_active", namespaces=NS) == "2"
        assert g.findtext("e:kpi_data/e:kpi/e:metric_collector/e:poll_frequency", namespaces=NS) == "2.5"
        assert g.findtext("e:recovery_policy/e:action_on_recovery", namespaces=NS) == "REDEPLOY_ONLY"

        # get: the state too
        state = etree.fromstring(m.get().data_xml.encode())
        vms = state.xpath("//e:opdata//e:deployments[e:deployment_name='vnf1']//e:vm_instance/e:name/text()",
                          namespaces=NS)
        assert vms == ["vnf1_g_0", "vnf1_g_1"]

        # merge: one leaf changed is an update of the deployment (scale to 1)
        m.edit_config(target="running", config=config(
            "<tenants><tenant><name>acme</name><deployments><deployment><name>vnf1</name>"
            "<vm_group><name>g</name><scaling><min_active>1</min_active><max_active>1</max_active></scaling>"
            "</vm_group></deployment></deployments></tenant></tenants>"))
        wait_done(rest)
        d = c.get("/v0/tenants/acme/deployments/vnf1").json()
        assert [v["name"] for v in d["vms"]] == ["vnf1_g_0"] and d["vm_groups"][0]["kpi"]["down_after"] == 3

        # delete a tenant with its deployments in one edit: deployments first, then the tenant
        m.edit_config(target="running", config=config(
            '<tenants><tenant xmlns:nc="urn:ietf:params:xml:ns:netconf:base:1.0" nc:operation="delete">'
            "<name>acme</name></tenant></tenants>"))
        wait_done(rest)
        assert c.get("/v0/tenants/acme").status_code == 404
        assert rest.sql("SELECT count(*) FROM deployments") == [(0,)]


def test_a_subtree_filter_selects(netconf: Running, rest: Any) -> None:
    with connect(netconf) as m:
        m.edit_config(target="running", config=config(BASICS))
        wait_done(rest)
        got = m.get_config("running", filter=("subtree", f'<esc_datamodel xmlns="{ESC_NS}"><images/>'
                                                          "</esc_datamodel>")).data_xml
        data = etree.fromstring(got.encode())
        assert data.xpath("//e:image/e:name/text()", namespaces=NS) == ["cirros"]
        assert not data.xpath("//e:tenant", namespaces=NS)
        got = m.get_config("running", filter=("subtree", f'<esc_datamodel xmlns="{ESC_NS}"><tenants><tenant>'
                                                          "<name>acme</name></tenant></tenants></esc_datamodel>"))
        data = etree.fromstring(got.data_xml.encode())
        assert data.xpath("//e:tenant/e:name/text()", namespaces=NS) == ["acme"]
        assert data.xpath("//e:tenant/e:description/text()", namespaces=NS) == ["the tenant"]
        # XPath (:xpath), with a prefix or without one as netconf-console sends it
        for select in ("/esc_datamodel/tenants/tenant[name='acme']/description",
                       "/e:esc_datamodel/e:tenants/e:tenant[e:name='acme']/e:description"):
            got = m.get_config("running", filter=("xpath", (NS, select)) if "e:" in select
                               else ("xpath", select))
            data = etree.fromstring(got.data_xml.encode())
            tenants = data.xpath("//e:tenant", namespaces=NS)
            assert len(tenants) == 1 and [local_names(t) for t in tenants] == [["name", "description"]]
        got = m.get(filter=("xpath", "//vm_instance"))
        assert etree.fromstring(got.data_xml.encode()).xpath("//e:vm_instance", namespaces=NS) == []


def local_names(el: etree._Element) -> list[str]:
    return [etree.QName(c).localname for c in el]


def error_of(call: Callable[[], Any]) -> RPCError:
    with pytest.raises(RPCError) as e:
        call()
    return e.value


def test_errors_have_the_right_tags_and_write_nothing(netconf: Running, rest: Any) -> None:
    with connect(netconf) as m:
        m.edit_config(target="running", config=config(BASICS))
        wait_done(rest)
        before = rest.sql("SELECT count(*) FROM transactions")

        nc = 'xmlns:nc="urn:ietf:params:xml:ns:netconf:base:1.0"'
        e = error_of(lambda: m.edit_config(target="running", config=config(
            f'<images><image nc:operation="create" {nc}><name>cirros</name><src>x</src></image></images>')))
        assert e.tag == "data-exists" and "images/image[name='cirros']" in e.path
        e = error_of(lambda: m.edit_config(target="running", config=config(
            f'<images><image nc:operation="delete" {nc}><name>nope</name></image></images>')))
        assert e.tag == "data-missing"
        m.edit_config(target="running", config=config(  # remove: no error for what is not there
            f'<images><image nc:operation="remove" {nc}><name>nope</name></image></images>'))
        e = error_of(lambda: m.edit_config(target="running", config=config("<wings/>")))
        assert e.tag == "unknown-element" and e.info and "wings" in e.info
        e = error_of(lambda: m.edit_config(target="running", config=config(
            "<flavors><flavor><name>f</name><vcpus>lots</vcpus><memory_mb>1</memory_mb></flavor></flavors>")))
        assert e.tag == "invalid-value" and "vcpus" in e.message
        e = error_of(lambda: m.edit_config(target="running", config=config(
            "<flavors><flavor><name>f</name><vcpus>0</vcpus><memory_mb>1</memory_mb></flavor></flavors>")))
        assert e.tag == "invalid-value"  # the REST API's own rule (1..1024)
        e = error_of(lambda: m.edit_config(target="running", config=config(
            "<flavors><flavor><name>f</name><vcpus>1</vcpus></flavor></flavors>")))
        assert e.tag == "missing-element" and "memory_mb" in e.message
        # a deployment naming an image that does not exist, beside a valid new tenant: neither is written
        e = error_of(lambda: m.edit_config(target="running", config=config(
            "<tenants><tenant><name>t2</name><deployments><deployment><name>d</name><vm_group><name>g</name>"
            "<image>nope</image><flavor>small</flavor></vm_group></deployment></deployments></tenant></tenants>")))
        assert e.tag == "invalid-value" and "image nope" in e.message
        e = error_of(lambda: m.edit_config(target="candidate", config=config("")))
        assert e.tag == "invalid-value"
        e = error_of(lambda: m.edit_config(target="running", config=config(
            f'<tenants><tenant nc:operation="delete" {nc}><name>default</name></tenant></tenants>')))
        assert e.tag == "operation-failed" and "built in" in e.message
        e = error_of(lambda: m.edit_config(target="running", config=config(
            f'<images><image nc:operation="delete" {nc}><name>cirros</name></image></images>'
            "<tenants><tenant><name>acme</name><deployments><deployment><name>d</name><vm_group><name>g</name>"
            "<image>cirros</image><flavor>small</flavor></vm_group></deployment></deployments></tenant>"
            "</tenants>")))
        assert e.tag == "invalid-value"  # the deployment would name an image being deleted
        e = error_of(lambda: m.dispatch(etree.fromstring("<frobnicate/>")))
        assert e.tag == "operation-not-supported"
        e = error_of(lambda: m.get_config("running", filter=("xpath", "/esc_datamodel[")))
        assert e.tag == "invalid-value"
        assert rest.sql("SELECT count(*) FROM transactions") == before
        assert rest.sql("SELECT count(*) FROM tenants WHERE name = 't2'") == [(0,)]


def test_validate_and_test_only(netconf: Running, rest: Any) -> None:
    with connect(netconf) as m:
        m.validate(source="running")
        m.validate(source=etree.fromstring(config(BASICS)))
        e = error_of(lambda: m.validate(source=etree.fromstring(config(
            "<tenants><tenant><name>t</name><deployments><deployment><name>d</name><vm_group><name>g</name>"
            "<image>cirros</image><flavor>small</flavor></vm_group></deployment></deployments></tenant>"
            "</tenants>"))))
        assert e.tag == "invalid-value" and "image cirros" in e.message
        m.edit_config(target="running", config=config(BASICS), test_option="test-only")
        assert rest.sql("SELECT count(*) FROM transactions") == [(0,)]


def test_replace_makes_the_configuration_the_one_given(netconf: Running, rest: Any) -> None:
    with connect(netconf) as m:
        m.edit_config(target="running", config=config(BASICS))
        wait_done(rest)
        # replace the images container: cirros goes, debian comes
        nc = 'xmlns:nc="urn:ietf:params:xml:ns:netconf:base:1.0"'
        m.edit_config(target="running", config=config(
            f'<images nc:operation="replace" {nc}><image><name>debian</name><src>file:///d.img</src>'
            "</image></images>"))
        wait_done(rest)
        assert [i["name"] for i in rest.client.get("/v0/images").json()] == ["debian"]
        assert [n["name"] for n in rest.client.get("/v0/networks").json()] == ["mgmt"]


def test_lock_unlock_and_kill_session(netconf: Running, rest: Any) -> None:
    a = connect(netconf)  # killed below: no close-session of its own
    with connect(netconf) as b:
        a.lock("running")
        e = error_of(lambda: b.lock("running"))
        assert e.tag == "lock-denied" and e.info and a.session_id in e.info
        e = error_of(lambda: b.edit_config(target="running", config=config(BASICS)))
        assert e.tag == "in-use"
        a.edit_config(target="running", config=config(BASICS))  # the holder may write
        e = error_of(lambda: b.unlock("running"))
        assert e.tag == "operation-failed"
        e = error_of(lambda: b.kill_session(b.session_id))
        assert e.tag == "invalid-value"
        b.kill_session(a.session_id)  # its lock goes with it
        b.lock("running")
        b.unlock("running")
        deadline = time.monotonic() + 5
        while a.connected and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not a.connected


def test_close_session(netconf: Running) -> None:
    m = connect(netconf)
    m.close_session()
    assert not m.connected


def test_get_schema_serves_the_module(netconf: Running) -> None:
    with connect(netconf) as m:
        reply = m.get_schema("esc")
        text = etree.fromstring(reply.xml.encode()).xpath(
            "//*[local-name()='data']/text()")[0]
        assert text == esc_yang()
        e = error_of(lambda: m.get_schema("ietf-interfaces"))
        assert e.tag == "invalid-value"
        state = etree.fromstring(m.get().data_xml.encode())
        assert state.xpath("//*[local-name()='schema']/*[local-name()='identifier']/text()") == ["esc"]


def test_notifications_live_and_replayed(netconf: Running, rest: Any) -> None:
    start = dt.datetime.now(dt.UTC)
    with connect(netconf) as m:
        m.create_subscription()
        m.edit_config(target="running", config=config(BASICS + DEPLOYMENT))
        wait_done(rest)
        seen = []
        deadline = time.monotonic() + 10
        while "CREATE_DEPLOYMENT" not in [t for t, _ in seen]:
            assert time.monotonic() < deadline, seen
            n = m.take_notification(timeout=1)
            if n is None:
                continue
            x = etree.fromstring(n.notification_xml.encode())
            seen.append((x.findtext(".//e:event/e:type", namespaces=NS),
                         x.findtext(".//e:depname", namespaces=NS)))
        assert ("VM_DEPLOYED", "vnf1") in seen and ("CREATE_DEPLOYMENT", "vnf1") in seen
        assert ("CREATE_TENANT", None) in seen

    with connect(netconf) as m:  # a new session replays them from the history
        m.create_subscription(start_time=start.isoformat())
        types = []
        while True:
            n = m.take_notification(timeout=5)
            assert n is not None
            x = etree.fromstring(n.notification_xml.encode())
            if x.find("{urn:ietf:params:xml:ns:netmod:notification}replayComplete") is not None:
                break
            types.append(x.findtext(".//e:event/e:type", namespaces=NS))
        assert types.count("VM_DEPLOYED") == 2 and "CREATE_DEPLOYMENT" in types
        e = error_of(lambda: m.create_subscription())
        assert e.tag == "operation-failed"
