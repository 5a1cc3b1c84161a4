"""The northbound API's resources, in JSON and XML, against a real PostgreSQL: every
write is accepted (202), done by the worker, then visible to GET."""

from __future__ import annotations

from typing import Any
from xml.etree import ElementTree as ET

import pytest

from esc.services import xmlio

XML = {"Content-Type": "application/xml", "Accept": "application/xml"}

# (collection, create body, update body: a PUT replaces the attributes)
SIMPLE = [
    ("/v0/tenants", {"name": "t1", "description": "first"}, {"description": "changed"}),
    ("/v0/networks", {"name": "n1", "shared": True}, {"description": "changed", "shared": False}),
    ("/v0/flavors", {"name": "f1", "vcpus": 2, "memory_mb": 2048}, {"vcpus": 4, "memory_mb": 4096}),
    (
        "/v0/images",
        {"name": "i1", "src": "http://images/cirros.qcow2"},
        {"src": "http://images/cirros-2.qcow2", "disk_format": "raw"},
    ),
    (
        "/v0/networks/n0/subnets",
        {"name": "s1", "cidr": "10.1.0.0/24", "gateway_ip": "10.1.0.1"},
        {"cidr": "10.1.0.0/24", "dhcp": False},
    ),
    ("/v0/tenants/t0/volumes", {"name": "v1", "size_gb": 10}, {"size_gb": 20, "bootable": True}),
]


def accepted(r: Any) -> int:
    assert r.status_code == 202, r.text
    body = r.json()
    assert (
        body["status"] == "accepted" and r.headers["Location"] == f"/v0/transactions/{body['transaction_id']}"
    )
    return body["transaction_id"]


def done(api, r: Any) -> dict[str, Any]:
    tx = api.wait(accepted(r))
    assert tx["status"] == "succeeded", tx
    return tx


def parents(api) -> None:
    done(api, api.client.post("/v0/networks", json={"name": "n0"}))
    done(api, api.client.post("/v0/tenants", json={"name": "t0"}))


@pytest.mark.parametrize("collection,create,update", SIMPLE, ids=[s[0].rpartition("/")[2] for s in SIMPLE])
def test_crud_json(esc_api, collection: str, create: dict, update: dict) -> None:
    api, c = esc_api, esc_api.client
    parents(api)
    name = create["name"]
    tx = done(api, c.post(collection, json=create))
    assert tx["operation"] == "create" and tx["resource"] == name and tx["status_code"] == 200
    one = c.get(f"{collection}/{name}")
    assert one.status_code == 200
    assert {k: one.json()[k] for k in create} == create
    assert name in [x["name"] for x in c.get(collection).json()]

    done(api, c.put(f"{collection}/{name}", json=update))
    after = c.get(f"{collection}/{name}").json()
    assert {k: after[k] for k in update} == update
    assert after["id"] == one.json()["id"] and after["updated_at"] > one.json()["updated_at"]

    tx = done(api, c.delete(f"{collection}/{name}"))
    assert tx["operation"] == "delete"
    assert c.get(f"{collection}/{name}").status_code == 404
    assert name not in [x["name"] for x in c.get(collection).json()]


def _xml(root: str, data: dict) -> bytes:
    return xmlio.render(root, data)


def _parse(body: bytes) -> ET.Element:
    return ET.fromstring(body)


@pytest.mark.parametrize("collection,create,update", SIMPLE, ids=[s[0].rpartition("/")[2] for s in SIMPLE])
def test_crud_xml(esc_api, collection: str, create: dict, update: dict) -> None:
    api, c = esc_api, esc_api.client
    parents(api)
    kind = collection.rpartition("/")[2][:-1]
    name = create["name"]
    r = c.post(collection, content=_xml(kind, create), headers=XML)
    assert r.status_code == 202 and r.headers["content-type"] == "application/xml", r.text
    doc = _parse(r.content)
    assert doc.tag == "transaction" and doc.findtext("status") == "accepted"
    tx = api.wait(int(doc.findtext("transaction_id") or 0))
    assert tx["status"] == "succeeded", tx

    got = c.get(f"{collection}/{name}", headers={"Accept": "application/xml"})
    assert got.status_code == 200 and got.headers["content-type"] == "application/xml"
    doc = _parse(got.content)
    assert doc.tag == kind
    for k, v in create.items():
        assert doc.findtext(k) == (str(v).lower() if isinstance(v, bool) else str(v))

    r = c.put(f"{collection}/{name}", content=_xml(kind, update), headers=XML)
    tx = api.wait(int(_parse(r.content).findtext("transaction_id") or 0))
    assert tx["status"] == "succeeded", tx
    # JSON and XML are the same resource
    after = c.get(f"{collection}/{name}").json()
    assert {k: after[k] for k in update} == update

    listed = _parse(c.get(collection, headers={"Accept": "application/xml"}).content)
    assert listed.tag == collection.rpartition("/")[2]
    assert name in [e.findtext("name") for e in listed]
    r = c.delete(f"{collection}/{name}", headers={"Accept": "application/xml"})
    assert api.wait(int(_parse(r.content).findtext("transaction_id") or 0))["status"] == "succeeded"


def catalog(api) -> None:
    c = api.client
    for path, body in [
        ("/v0/tenants", {"name": "acme"}),
        ("/v0/images", {"name": "cirros", "src": "http://images/cirros.qcow2"}),
        ("/v0/flavors", {"name": "small", "vcpus": 1, "memory_mb": 512}),
        ("/v0/networks", {"name": "mgmt"}),
        ("/v0/networks", {"name": "data"}),
        ("/v0/networks/mgmt/subnets", {"name": "mgmt-v4", "cidr": "192.0.2.0/24"}),
    ]:
        done(api, c.post(path, json=body))


DEPLOYMENT = {
    "name": "vnf1",
    "description": "two routers and a probe",
    "vm_groups": [
        {
            "name": "router",
            "image": "cirros",
            "flavor": "small",
            "count": 2,
            "interfaces": [{"network": "mgmt"}, {"network": "data"}],
            "kpi": {"type": "icmp_ping", "interval_s": 3, "down_after": 2},
            "recovery": {"policy": "redeploy"},
        },
        {
            "name": "probe",
            "image": "cirros",
            "flavor": "small",
            "interfaces": [{"network": "mgmt", "ip": "192.0.2.10"}],
        },
    ],
}


def test_deployment_lifecycle(esc_api) -> None:
    api, c = esc_api, esc_api.client
    catalog(api)
    tx = done(api, c.post("/v0/tenants/acme/deployments", json=DEPLOYMENT))
    d = c.get("/v0/tenants/acme/deployments/vnf1").json()
    assert d["status"] == "deployed" and d["tenant"] == "acme" and d["transaction_id"] == tx["transaction_id"]
    # absent: the VIM's defaults
    assert d["vm_groups"][1]["kpi"] == {"type": "icmp_ping", "interval_s": None, "down_after": None}
    assert d["vm_groups"][1]["recovery"] == {"policy": "reboot"}
    assert [(v["name"], v["status"]) for v in d["vms"]] == [
        ("vnf1_router_0", "deployed"),
        ("vnf1_router_1", "deployed"),
        ("vnf1_probe_0", "deployed"),
    ]
    assert d["vms"][2]["interfaces"] == [{"network": "mgmt", "ip": "192.0.2.10"}]
    assert [x["name"] for x in c.get("/v0/tenants/acme/deployments").json()] == ["vnf1"]
    assert [x["name"] for x in c.get("/v0/deployments").json()] == ["vnf1"]  # every tenant

    # in use: the image, flavor, networks and tenant cannot go
    for path, user in [
        ("/v0/images/cirros", "deployment acme/vnf1"),
        ("/v0/networks/mgmt", "subnet mgmt/mgmt-v4"),
        ("/v0/flavors/small", "deployment acme/vnf1"),
        ("/v0/tenants/acme", "deployment acme/vnf1"),
    ]:
        r = c.delete(path)
        assert r.status_code == 409 and user in r.json()["error"], (path, r.text)

    # scale out, then in: VMs added pending -> deployed, removed ones undeployed
    scaled = {k: v for k, v in DEPLOYMENT.items() if k != "name"}
    scaled["vm_groups"] = [dict(DEPLOYMENT["vm_groups"][0], count=3)]
    done(api, c.put("/v0/tenants/acme/deployments/vnf1", json=scaled))
    d = c.get("/v0/tenants/acme/deployments/vnf1").json()
    assert [v["name"] for v in d["vms"]] == ["vnf1_router_0", "vnf1_router_1", "vnf1_router_2"]
    assert {v["status"] for v in d["vms"]} == {"deployed"} and d["status"] == "deployed"

    done(api, c.delete("/v0/tenants/acme/deployments/vnf1"))
    assert c.get("/v0/tenants/acme/deployments/vnf1").status_code == 404
    assert api.sql("SELECT count(*) FROM vms") == [(0,)]
    done(api, c.delete("/v0/images/cirros"))  # no longer in use

    kinds = [
        (e["type"], e["vm"]) for e in c.get("/v0/notifications").json() if e["resource_type"] == "deployment"
    ]
    assert kinds == [
        ("VM_DEPLOYED", "vnf1_router_0"),
        ("VM_DEPLOYED", "vnf1_router_1"),
        ("VM_DEPLOYED", "vnf1_probe_0"),
        ("CREATE_DEPLOYMENT", None),
        ("VM_UNDEPLOYED", "vnf1_probe_0"),
        ("VM_DEPLOYED", "vnf1_router_2"),
        ("UPDATE_DEPLOYMENT", None),
        ("VM_UNDEPLOYED", "vnf1_router_0"),
        ("VM_UNDEPLOYED", "vnf1_router_1"),
        ("VM_UNDEPLOYED", "vnf1_router_2"),
        ("DELETE_DEPLOYMENT", None),
    ]


def test_deployment_in_xml(esc_api) -> None:
    api, c = esc_api, esc_api.client
    catalog(api)
    body = b"""<?xml version="1.0"?>
<deployment xmlns="urn:example:esc">
  <name>vnf-x</name>
  <vm_groups>
    <vm_group>
      <name>g</name><image>cirros</image><flavor>small</flavor><count>2</count>
      <interfaces><interface><network>mgmt</network></interface></interfaces>
      <kpi><interval_s>7</interval_s></kpi>
      <recovery><policy>none</policy></recovery>
    </vm_group>
  </vm_groups>
</deployment>"""
    r = c.post("/v0/tenants/acme/deployments", content=body, headers={"Content-Type": "application/xml"})
    assert r.status_code == 202, r.text  # Accept absent: JSON
    assert api.wait(r.json()["transaction_id"])["status"] == "succeeded"
    doc = ET.fromstring(
        c.get("/v0/tenants/acme/deployments/vnf-x", headers={"Accept": "application/xml"}).content
    )
    group = doc.find("vm_groups/vm_group")
    assert group is not None and group.findtext("count") == "2" and group.findtext("kpi/interval_s") == "7"
    assert group.findtext("recovery/policy") == "none"
    assert [v.findtext("status") for v in doc.findall("vms/vm")] == ["deployed", "deployed"]
    assert doc.findtext("vms/vm/interfaces/interface/network") == "mgmt"


def test_a_parent_accepted_but_not_yet_created_can_be_referred_to(esc_api) -> None:
    """POST a network and at once a subnet of it: both accepted, done in order."""
    api, c = esc_api, esc_api.client
    first = accepted(c.post("/v0/networks", json={"name": "fresh"}))
    second = accepted(c.post("/v0/networks/fresh/subnets", json={"name": "s", "cidr": "10.9.0.0/16"}))
    assert api.wait(first)["status"] == "succeeded" and api.wait(second)["status"] == "succeeded"
    assert c.get("/v0/networks/fresh/subnets/s").json()["cidr"] == "10.9.0.0/16"


def test_default_tenant_is_built_in(esc_api) -> None:
    c = esc_api.client
    assert [t["name"] for t in c.get("/v0/tenants").json()] == ["default"]
    r = c.delete("/v0/tenants/default")
    assert r.status_code == 409 and "built in" in r.json()["error"]


def test_notifications_since(esc_api) -> None:
    api, c = esc_api, esc_api.client
    for name in ("a", "b", "c"):
        done(api, c.post("/v0/tenants", json={"name": name}))
    allev = c.get("/v0/notifications").json()
    assert [(e["type"], e["status"], e["tenant"]) for e in allev] == [
        ("CREATE_TENANT", "SUCCESS", n) for n in ("a", "b", "c")
    ]
    later = c.get(f"/v0/notifications?since={allev[0]['id']}&limit=1").json()
    assert [e["id"] for e in later] == [allev[1]["id"]]
    xml = ET.fromstring(c.get("/v0/notifications", headers={"Accept": "application/xml"}).content)
    assert xml.tag == "notifications" and [e.findtext("type") for e in xml] == ["CREATE_TENANT"] * 3
    listed = c.get("/v0/transactions?status=succeeded").json()
    assert [t["resource"] for t in listed] == ["a", "b", "c"]


def test_openapi_describes_every_resource(esc_api) -> None:
    r = esc_api.client.get("/openapi.json", auth=None)
    assert r.status_code == 200
    spec = r.json()
    for path in [
        "/v0/tenants",
        "/v0/networks/{network}/subnets/{name}",
        "/v0/tenants/{tenant}/volumes",
        "/v0/tenants/{tenant}/deployments/{name}",
        "/v0/transactions/{transaction_id}",
        "/v0/notifications",
        "/v0/deployments",
    ]:
        assert path in spec["paths"], path
    post = spec["paths"]["/v0/tenants/{tenant}/deployments"]["post"]
    assert set(post["requestBody"]["content"]) == {"application/json", "application/xml"}
    assert spec["components"]["schemas"]["DeploymentIn"]["additionalProperties"] is False
    assert "202" in post["responses"]
