"""Granting (SOL003 clause 9): before an LCM operation changes resources, the VNFM asks
the NFVO ``POST {grant url}/grants`` with a GrantRequest; 201 (or 202 then the grant
at its Location) lets it go on, anything else ends the operation FAILED_TEMP with the
NFVO's answer (a rollback then returns the instance to where it was).

MODIFY_INFO changes no resource and asks for no grant.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

import httpx

from esc.config import GrantConfig, NodeConfig
from esc.etsi import store
from esc.etsi.package import Vnfd
from esc.etsi.worker import StepFailed, counts, target_after

log = logging.getLogger("esc.etsi.grant")


def grant_request(op: Mapping[str, Any], inst: Mapping[str, Any], vnfd: Vnfd,
                  links: store.Links) -> dict[str, Any]:
    """The GrantRequest of ``op`` (SOL003 9.5.2.2): the VNFCs it adds and removes."""
    body: dict[str, Any] = {
        "vnfInstanceId": inst["id"], "vnfLcmOpOccId": op["id"], "vnfdId": inst["vnfd_id"],
        "operation": op["operation"], "isAutomaticInvocation": bool(op["automatic"]),
        "_links": {"vnfLcmOpOcc": links.href(f"/vnf_lcm_op_occs/{op['id']}"),
                   "vnfInstance": links.href(f"/vnf_instances/{inst['id']}")},
    }
    if op["params"].get("flavourId"):
        body["flavourId"] = op["params"]["flavourId"]
    if op["params"].get("instantiationLevelId"):
        body["instantiationLevelId"] = op["params"]["instantiationLevelId"]
    target = target_after(op, inst, vnfd)
    now = counts(vnfd, inst) if inst["state"] == "INSTANTIATED" else {}
    then = counts(vnfd, target) if target["state"] == "INSTANTIATED" else {}
    add, remove = [], []
    for vdu in sorted(set(now) | set(then)):
        for i in range(now.get(vdu, 0), then.get(vdu, 0)):
            add.append({"id": f"{vdu}-{i}", "type": "COMPUTE", "resourceTemplateId": vdu})
        for i in range(then.get(vdu, 0), now.get(vdu, 0)):
            remove.append({"id": f"{vdu}-{i}", "type": "COMPUTE", "resourceTemplateId": vdu})
    if add:
        body["addResources"] = add
    if remove:
        body["removeResources"] = remove
    return body


class Granter:
    """Asks the NFVO of ``cfg`` (a GrantConfig) for each operation's grant; the grant's id."""

    def __init__(self, cfg: GrantConfig, node: NodeConfig) -> None:
        self.cfg = cfg
        from esc.etsi.app import notification_links

        self.links = notification_links(node)

    def __call__(self, op: Mapping[str, Any], inst: Mapping[str, Any], vnfd: Vnfd) -> str | None:
        if op["operation"] == "MODIFY_INFO":
            return None
        body = grant_request(op, inst, vnfd, self.links)
        auth: Any = (self.cfg.user, self.cfg.password) if self.cfg.user and self.cfg.password \
            else httpx.USE_CLIENT_DEFAULT
        headers = {"Accept": "application/json", "Version": "1.1.1"}
        try:
            with httpx.Client(timeout=self.cfg.timeout_s, trust_env=False, follow_redirects=False) as client:
                r = client.post(f"{self.cfg.url}/grants", json=body, auth=auth, headers=headers)
                deadline = time.monotonic() + self.cfg.timeout_s
                while r.status_code == 202 and r.headers.get("location") and time.monotonic() < deadline:
                    time.sleep(0.5)  # an asynchronous grant: its resource answers 200 once decided
                    r = client.get(r.headers["location"], auth=auth, headers=headers)
                    if r.status_code == 202:
                        continue
                    break
        except httpx.HTTPError as e:
            raise StepFailed(503, f"grant: the NFVO at {self.cfg.url} did not answer ({e})") from None
        if r.status_code not in (200, 201):
            detail = _detail(r)
            why = f": {detail}" if detail else ""
            raise StepFailed(403 if r.status_code == 403 else 502,
                             f"grant refused by the NFVO (HTTP {r.status_code}){why}")
        try:
            grant_id = str(r.json()["id"])
        except (ValueError, KeyError, TypeError):
            raise StepFailed(502, "grant: the NFVO's answer has no grant id") from None
        log.info("operation %s granted by the NFVO: grant %s", op["id"], grant_id)
        return grant_id


def _detail(r: httpx.Response) -> str:
    try:
        data = r.json()
        return str(data.get("detail") or "")[:500] if isinstance(data, dict) else ""
    except ValueError:
        return ""
