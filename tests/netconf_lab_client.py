"""A NETCONF client for the lab test (tests/lab/test_netconf.py), run in the lab's client
namespace with ncclient, through the VIP: one step of the scenario per run, its findings
as JSON on stdout.

    python netconf_lab_client.py before|after|read '{"vip": ..., "user": ..., "password": ...}'
"""

from __future__ import annotations

import base64
import hashlib
import json
import sys
import time
from typing import Any

from lxml import etree
from ncclient import manager

ESC = "http://www.cisco.com/esc/esc"
NS = {"e": ESC}
REPLAY_DONE = "{urn:ietf:params:xml:ns:netmod:notification}replayComplete"

CREATE = f"""<config><esc_datamodel xmlns="{ESC}">
<images><image><name>nc-cirros</name><src>file:///cirros.img</src></image></images>
<flavors><flavor><name>nc-small</name><vcpus>1</vcpus><memory_mb>256</memory_mb></flavor></flavors>
<tenants><tenant><name>nct</name><deployments><deployment><name>ncdep</name>
  <vm_group><name>g</name><image>nc-cirros</image><flavor>nc-small</flavor>
    <scaling><min_active>1</min_active><max_active>1</max_active></scaling>
  </vm_group></deployment></deployments></tenant></tenants>
</esc_datamodel></config>"""

DELETE = f"""<config><esc_datamodel xmlns="{ESC}" xmlns:nc="urn:ietf:params:xml:ns:netconf:base:1.0">
<tenants><tenant><name>nct</name><deployments>
  <deployment nc:operation="delete"><name>ncdep</name></deployment>
</deployments></tenant></tenants></esc_datamodel></config>"""


def connect(a: dict[str, Any], retry_for: float) -> manager.Manager:
    deadline = time.monotonic() + retry_for
    while True:
        try:
            return manager.connect(host=a["vip"], port=a.get("port", 830), username=a["user"],
                                   password=a["password"], hostkey_verify=False, allow_agent=False,
                                   look_for_keys=False, timeout=10)
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def host_key(m: manager.Manager) -> str:
    key = m._session._transport.get_remote_server_key()
    return "SHA256:" + base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode().rstrip("=")


def deployments(m: manager.Manager) -> list[str]:
    data = etree.fromstring(m.get_config("running").data_xml.encode())
    return data.xpath("//e:tenant[e:name='nct']//e:deployment/e:name/text()", namespaces=NS)


def event(x: etree._Element) -> dict[str, Any]:
    """What a notification says, for the test to check."""
    if x.find(REPLAY_DONE) is not None:
        return {"kind": "replayComplete"}
    esc = x.find("e:escEvent", NS)
    if esc is not None:
        return {"kind": "escEvent", "type": esc.findtext("e:event/e:type", namespaces=NS),
                "depname": esc.findtext("e:depname", namespaces=NS),
                "status": esc.findtext("e:status", namespaces=NS)}
    ha = x.find("e:escHaEvent", NS)
    if ha is not None:
        return {"kind": "escHaEvent", "ha_kind": ha.findtext("e:kind", namespaces=NS),
                **{k: ha.findtext(f"e:{k}", namespaces=NS) for k in ("node", "role", "role_from", "reason")}}
    return {"kind": "other", "xml": etree.tostring(x).decode()[:300]}


def wait_for(m: manager.Manager, done: Any, timeout: float, context: Any = None) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        n = m.take_notification(timeout=0.5)
        if n is None:
            continue
        seen.append(event(etree.fromstring(n.notification_xml.encode())))
        if done(seen[-1], seen):
            return seen
    raise SystemExit(json.dumps({"error": "timed out", "seen": seen, "context": context}))


def before(a: dict[str, Any]) -> dict[str, Any]:
    m = connect(a, 30)
    out: dict[str, Any] = {"host_key": host_key(m), "before": deployments(m)}
    m.create_subscription()
    m.edit_config(target="running", config=CREATE)
    t0 = time.monotonic()
    out["events"] = wait_for(m, lambda e, _: e.get("type") == "CREATE_DEPLOYMENT", 60)
    out["notified_s"] = round(time.monotonic() - t0, 3)
    out["after"] = deployments(m)
    m.close_session()
    return out


def after(a: dict[str, Any]) -> dict[str, Any]:
    t0 = time.monotonic()
    m = connect(a, 60)
    out: dict[str, Any] = {"reconnect_s": round(time.monotonic() - t0, 3), "host_key": host_key(m),
                           "deployments": deployments(m)}
    m.create_subscription(start_time=a["since"])
    out["replayed"] = wait_for(m, lambda e, _: e["kind"] == "replayComplete", 30)

    def failover_seen(e: dict[str, Any], seen: list[dict[str, Any]]) -> bool:
        return any(x["kind"] == "escHaEvent" and x.get("role") == "ACTIVE"
                   and x.get("node") == a["new_active"] for x in [*out["replayed"], *seen])

    out["live"] = [] if failover_seen({}, []) else wait_for(m, failover_seen, 30, out)
    m.edit_config(target="running", config=DELETE)
    out["deleted"] = wait_for(m, lambda e, _: e.get("type") == "DELETE_DEPLOYMENT", 60)
    out["left"] = deployments(m)
    m.close_session()
    return out


def read(a: dict[str, Any]) -> dict[str, Any]:
    m = connect(a, 30)
    data = etree.fromstring(m.get_config("running").data_xml.encode())
    out = {"host_key": host_key(m),
           "tenants": data.xpath("//e:tenant/e:name/text()", namespaces=NS)}
    m.close_session()
    return out


if __name__ == "__main__":
    step, args = sys.argv[1], json.loads(sys.argv[2])
    print(json.dumps({"before": before, "after": after, "read": read}[step](args)))
