"""VNF packages fetched from the NFVO (SOL003 clause 10, the VNF package management API the
NFVO provides), when ``etsi.packages`` names it: a VNF instance created with a ``vnfdId``
this VNFM has not onboarded makes it ask ``GET {url}/vnf_packages?filter=(eq,vnfdId,ID)``
for the package, then ``GET {url}/vnf_packages/{vnfPkgId}/package_content`` for the CSAR,
which it onboards as if given by hand (esc.etsi.package). Only ONBOARDED, ENABLED
packages are taken.
"""

from __future__ import annotations

import logging
from typing import Any

import httpx

from esc.config import PackageSourceConfig

log = logging.getLogger("esc.etsi.packages")

MAX_PACKAGE = 64 * 2**20


class FetchError(Exception):
    """The NFVO has no usable package for that vnfdId, or did not answer: one line."""


class PackageSource:
    def __init__(self, cfg: PackageSourceConfig) -> None:
        self.cfg = cfg

    def _client(self) -> httpx.Client:
        auth: Any = (self.cfg.user, self.cfg.password) if self.cfg.user and self.cfg.password \
            else httpx.USE_CLIENT_DEFAULT
        return httpx.Client(base_url=self.cfg.url, auth=auth, timeout=self.cfg.timeout_s, trust_env=False,
                            follow_redirects=False, headers={"Version": "1.1.1"})

    def fetch(self, vnfd_id: str) -> bytes:
        """The CSAR of the NFVO's package with ``vnfd_id`` (FetchError if none)."""
        try:
            with self._client() as client:
                r = client.get("/vnf_packages", params={"filter": f"(eq,vnfdId,{vnfd_id})"},
                               headers={"Accept": "application/json"})
                if r.status_code != 200:
                    raise FetchError(f"the NFVO's package list answered HTTP {r.status_code}")
                found = [p for p in r.json() if isinstance(p, dict) and p.get("vnfdId") == vnfd_id
                         and p.get("onboardingState") == "ONBOARDED"
                         and p.get("operationalState", "ENABLED") == "ENABLED"]
                if not found:
                    raise FetchError(f"the NFVO has no onboarded, enabled package with vnfdId {vnfd_id}")
                pkg_id = str(found[0]["id"])
                data = b""
                with client.stream("GET", f"/vnf_packages/{pkg_id}/package_content",
                                   headers={"Accept": "application/zip"}) as content:
                    if content.status_code != 200:
                        raise FetchError(f"the NFVO's package {pkg_id} content answered HTTP "
                                         f"{content.status_code}")
                    for chunk in content.iter_bytes():
                        data += chunk
                        if len(data) > MAX_PACKAGE:
                            raise FetchError(f"the NFVO's package {pkg_id} exceeds "
                                             f"{MAX_PACKAGE // 2**20} MiB")
        except httpx.HTTPError as e:
            raise FetchError(f"the NFVO at {self.cfg.url} did not answer ({e})") from None
        except ValueError as e:
            raise FetchError(f"the NFVO's package list is not JSON ({e})") from None
        log.info("VNF package %s (VNFD %s) fetched from the NFVO: %d bytes", pkg_id, vnfd_id, len(data))
        return data
