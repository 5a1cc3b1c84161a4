"""The ETSI SOL003 service of a real pair, through the VIP from the client namespace: a VNF
package onboarded with escadm, a 2-VDU VNF instantiated into VMs of the VIM, a scale-out
in progress when the active dies, finished by the new active with exactly one RESULT
notification to the subscriber (a fake NFVO in the client namespace), every link on the
VIP; an OAuth 2.0 token taken before the failover still good after it."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from esc.config import NodePaths
from esc.etsi.samples import sample_csar
from esc.lab import lab as labmod
from esc.vim.local import LocalDriver

try:
    from etsi_spec import Spec
except ImportError:  # pragma: no cover
    Spec = None  # type: ignore[assignment,misc]

pytestmark = pytest.mark.lab

FAKE = Path(__file__).resolve().parents[1] / "etsi_fakes.py"
NFVO_PORT = 9090


class Etsi:
    """Calls to the ETSI service through the VIP, from the client namespace."""

    def __init__(self, lab: Any, user: str, password: str) -> None:
        self.lab, self.base = lab, f"http://{lab.vip}:8250"
        self.auth = (user, password)

    def call(self, method: str, path: str, body: Any = None, token: str | None = None,
             retry_for: float = 0.0) -> tuple[int, dict[str, str], Any]:
        auth = "None" if token else repr(self.auth)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        code = (
            "import httpx,json,time\n"
            f"t=time.monotonic()\n"
            "while True:\n"
            f" try: r=httpx.request({method!r},{self.base + path!r},json={body!r},auth={auth},"
            f"headers={headers!r},timeout=10);break\n"
            " except httpx.TransportError:\n"
            f"  assert time.monotonic()-t<{retry_for};time.sleep(0.1)\n"
            "print(json.dumps([r.status_code, dict(r.headers), r.json() if r.content else None]))")
        status, hdrs, out = json.loads(self.lab.client_python(code))
        return status, hdrs, out

    def token(self) -> str:
        code = (f"import httpx;r=httpx.post('{self.base}/oauth2/token',data={{'grant_type':"
                f"'client_credentials'}},auth={self.auth!r},timeout=10);r.raise_for_status();"
                "print(r.json()['access_token'])")
        return self.lab.client_python(code).strip()

    def result(self, location: str) -> str:
        return str(self.wait_op(location, ("COMPLETED", "FAILED_TEMP"))["operationState"])

    def wait_op(self, location: str, until: tuple[str, ...], timeout: float = 60) -> dict[str, Any]:
        path = location.split(":8250", 1)[1]
        deadline = time.monotonic() + timeout
        while True:
            status, _, body = self.call("GET", path, retry_for=10)
            if status == 200 and body["operationState"] in until:
                return body
            assert time.monotonic() < deadline, f"operation {path}: {status} {body}"
            time.sleep(0.2)


def notifications(record: Path) -> list[dict[str, Any]]:
    if not record.exists():
        return []
    return [json.loads(line) for line in record.read_text().splitlines() if line.strip()]


def test_vnf_lifecycle_through_the_vip_survives_a_failover(lab: Any, tmp_path: Path) -> None:
    shown = json.loads(lab.escadm("n1", "etsi", "show", "--json").stdout)
    other = json.loads(lab.escadm("n2", "etsi", "show", "--json").stdout)
    assert shown["server_address"] == lab.vip and shown["password"] == other["password"]
    etsi = Etsi(lab, shown["user"], shown["password"])

    active = lab.active()
    health = lab.escadm(active, "health").stdout
    assert "etsi (pgid" in health and "is running" in health.split("etsi (pgid")[1].splitlines()[0]
    standby_health = lab.escadm(lab.other(active), "health", check=False).stdout
    assert "etsi is disabled at startup" in standby_health

    record = tmp_path / "nfvo.jsonl"
    client_ip = lab.state["client"]["address"]
    fake = subprocess.Popen(labmod.exec_argv(labmod.CLIENT, [
        sys.executable, str(FAKE), "--listen", f"{client_ip}:{NFVO_PORT}", "--record", str(record)]),
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
    try:
        assert fake.stdout is not None and fake.stdout.readline().strip() == "listening"
        csar = tmp_path / "vnf.csar"
        csar.write_bytes(sample_csar())
        out = lab.escadm(active, "etsi", "package", "onboard", str(csar)).stdout
        assert "VNF package" in out

        status, _, sub = etsi.call("POST", "/vnflcm/v1/subscriptions",
                                   {"callbackUri": f"http://{client_ip}:{NFVO_PORT}/notify"})
        assert status == 201, sub
        token = etsi.token()

        status, headers, inst = etsi.call("POST", "/vnflcm/v1/vnf_instances",
                                          {"vnfdId": json.loads(csar_vnfd(lab, active))})
        assert status == 201, inst
        assert headers["location"] == f"http://{lab.vip}:8250/vnflcm/v1/vnf_instances/{inst['id']}"
        path = f"/vnflcm/v1/vnf_instances/{inst['id']}"
        status, headers, _ = etsi.call("POST", f"{path}/instantiate", {"flavourId": "simple"})
        assert status == 202
        op = etsi.wait_op(headers["location"], ("COMPLETED", "FAILED_TEMP"))
        assert op["operationState"] == "COMPLETED", op
        driver = LocalDriver(labmod.vim_state_dir(), labmod.net.ns(""))
        assert len([v for v in driver.list() if v.state == "running"]) == 2

        # a scale-out, and the active dies while it runs
        status, headers, _ = etsi.call("POST", f"{path}/scale",
                                       {"type": "SCALE_OUT", "aspectId": "worker", "numberOfSteps": 3})
        assert status == 202
        scale_location = headers["location"]
        labmod.kill(active)
        lab.wait_roles({lab.other(active): "ACTIVE"}, timeout=30)
        op = etsi.wait_op(scale_location, ("COMPLETED", "FAILED_TEMP"), timeout=90)
        assert op["operationState"] == "COMPLETED", op
        assert len([v for v in driver.list() if v.state == "running"]) == 5
        # it was in progress on the old active, and the new one finished it
        logs = {n: [x for x in (NodePaths(labmod.node_root(n)).log / "escetsi.log").read_text().splitlines()
                    if op["id"] in x] for n in (active, lab.other(active))}
        assert any("PROCESSING -> COMPLETED" in x for x in logs[lab.other(active)]), logs

        details = lab.escadm(lab.other(active), "status", "-v").stdout
        assert f"etsi:        server address {lab.vip}, http 8250, https 8251, 1 VNF instance(s)" in details

        # the token from before the failover is still good
        status, _, listed = etsi.call("GET", "/vnflcm/v1/vnf_instances", token=token)
        assert status == 200 and [i["id"] for i in listed] == [inst["id"]]

        deadline = time.monotonic() + 30
        while True:
            got = [n["body"] for n in notifications(record) if n["kind"] == "notification"]
            results = [b for b in got if b.get("vnfLcmOpOccId") == op["id"]
                       and b.get("notificationStatus") == "RESULT"]
            if results or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert len(results) == 1, results
        assert results[0]["operationState"] == "COMPLETED"
        time.sleep(2)  # nothing more comes for it
        got = [n["body"] for n in notifications(record) if n["kind"] == "notification"]
        assert len([b for b in got if b.get("vnfLcmOpOccId") == op["id"]
                    and b.get("notificationStatus") == "RESULT"]) == 1
        for b in got:  # a receiver never sees a node's own address
            for link in b["_links"].values():
                assert link["href"].startswith(f"https://{lab.vip}:8251/"), link
        if Spec is not None:  # and each one, across the failover, conforms
            for b in got:
                Spec.load().check_notification(b)

        # operate: the VMs stop (and the VNF monitor leaves them stopped), then start again
        def running() -> list[str]:
            return sorted(v.name for v in driver.list() if v.state == "running")

        status, headers, _ = etsi.call("POST", f"{path}/operate", {"changeStateTo": "STOPPED"})
        assert status == 202
        assert etsi.result(headers["location"]) == "COMPLETED"
        assert running() == []
        time.sleep(4)  # longer than the monitor takes to call a VM down and reboot it
        assert running() == []
        status, headers, _ = etsi.call("POST", f"{path}/operate", {"changeStateTo": "STARTED"})
        assert etsi.result(headers["location"]) == "COMPLETED"
        assert len(running()) == 5

        # heal: every VM made again by the VIM driver
        before = {v.name: v.created_at for v in driver.list()}
        status, headers, _ = etsi.call("POST", f"{path}/heal", {"cause": "lab"})
        assert etsi.result(headers["location"]) == "COMPLETED"
        after = {v.name: v.created_at for v in driver.list() if v.state == "running"}
        assert set(after) == set(before) and all(after[n] > before[n] for n in before)

        # granting: the killed node back as standby, told the NFVO's grant URL (the fake in
        # the client namespace), made active by a switchover; its operations ask first
        labmod.start(active)
        lab.wait_roles({active: "STANDBY"}, timeout=60)
        lab.escadm(active, "etsi", "set", "--grant_url", f"http://{client_ip}:{NFVO_PORT}/grant/v1")
        parked = lab.status(active)["services"]["etsi"]["pid"]
        assert "reloaded" in lab.escadm(active, "reload").stdout
        deadline = time.monotonic() + 15  # its parked ETSI service starts again, reading the setting
        while lab.status(active)["services"]["etsi"]["pid"] in (parked, 0, None):
            assert time.monotonic() < deadline, "the parked ETSI service was not restarted"
            time.sleep(0.1)
        assert "STANDBY" in lab.escadm(lab.other(active), "ha", "switchover").stdout
        lab.wait_roles({active: "ACTIVE"}, timeout=30)
        status, _, second = etsi.call("POST", "/vnflcm/v1/vnf_instances", {"vnfdId": inst["vnfdId"]},
                                      retry_for=10)
        assert status == 201, second
        status, headers, _ = etsi.call("POST", f"/vnflcm/v1/vnf_instances/{second['id']}/instantiate",
                                       {"flavourId": "simple"})
        op = etsi.wait_op(headers["location"], ("COMPLETED", "FAILED_TEMP"))
        assert op["operationState"] == "COMPLETED" and op.get("grantId"), op
        grants = [n["body"] for n in notifications(record) if n["kind"] == "grant"]
        assert [g["vnfLcmOpOccId"] for g in grants] == [op["id"]]
        assert all(v["href"].startswith(f"https://{lab.vip}:8251/") for v in grants[0]["_links"].values())
    finally:
        fake.kill()
        fake.wait(10)


def csar_vnfd(lab: Any, node: str) -> str:
    """The vnfdId the onboarded package has, as the API lists it (JSON string)."""
    etsi_show = json.loads(lab.escadm(node, "etsi", "show", "--json").stdout)
    code = (f"import httpx,json;r=httpx.get('http://{lab.vip}:8250/esc/v1/vnf_packages',"
            f"auth=({etsi_show['user']!r},{etsi_show['password']!r}),timeout=10);"
            "print(json.dumps(r.json()[0]['vnfdId']))")
    return lab.client_python(code).strip()
