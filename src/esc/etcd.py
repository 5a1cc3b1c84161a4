"""A small client of etcd v3's JSON gateway (``POST /v3/...``, keys and values in
base64), enough for the witness lease: grant, keep-alive and revoke a lease, and
transactions. Plain HTTP with httpx, so the node needs no gRPC.

``--ha_witness etcd://HOST:PORT,HOST:PORT,...`` names the cluster's members
(``etcd+https://`` for client TLS). Requests go to the member that answered last;
when it does not answer, to the next one, in the order given, so a dead member costs
one failed request, not one per renewal.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import logging
import re
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

SCHEMES = {"etcd": "http", "etcd+https": "https"}
HOST_RE = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                     r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")
DEFAULT_PORT = 2379

log = logging.getLogger("esc.etcd")


def is_etcd(witness: str | None) -> bool:
    return bool(witness) and any(witness.startswith(f"{s}://") for s in SCHEMES)  # type: ignore[union-attr]


@dataclass(frozen=True)
class Cluster:
    scheme: str  # http or https
    endpoints: tuple[str, ...]  # base URLs, e.g. http://10.0.0.9:2379

    @property
    def url(self) -> str:
        """As the operator writes it, normalised."""
        prefix = "etcd+https" if self.scheme == "https" else "etcd"
        return f"{prefix}://" + ",".join(e.split("://", 1)[1] for e in self.endpoints)


def parse_url(text: str, what: str = "--ha_witness") -> Cluster:
    """``etcd://HOST[:PORT],...`` or ``etcd+https://...``; ValueError with a one-line
    message on anything else."""
    scheme, sep, rest = text.strip().partition("://")
    if not sep or scheme not in SCHEMES:
        raise ValueError(f"{what} {text!r}: expected etcd://HOST:PORT,HOST:PORT,... "
                         "(or etcd+https:// for TLS)")
    if not rest or any(c in rest for c in "/?#@ "):
        raise ValueError(f"{what} {text!r}: expected etcd://HOST:PORT,HOST:PORT,... with no path, "
                         "user or spaces")
    endpoints = []
    for item in rest.split(","):
        if not item:
            raise ValueError(f"{what} {text!r}: an empty host in the list")
        try:
            parts = urlsplit(f"//{item}")
            host, port = parts.hostname, parts.port
        except ValueError as e:  # a port out of range or not a number
            raise ValueError(f"{what} {text!r}: {item!r}: {e}") from None
        if not host:
            raise ValueError(f"{what} {text!r}: {item!r} has no host")
        try:
            ip = ipaddress.ip_address(host)
            host = f"[{ip}]" if ip.version == 6 else str(ip)
        except ValueError:
            if item.startswith("[") or not HOST_RE.match(host):
                raise ValueError(f"{what} {text!r}: {host!r} is neither an address nor a host name") from None
        if port == 0:
            raise ValueError(f"{what} {text!r}: {item!r}: port 0")
        endpoints.append(f"{SCHEMES[scheme]}://{host}:{port or DEFAULT_PORT}")
    if len(set(endpoints)) != len(endpoints):
        raise ValueError(f"{what} {text!r}: a member is listed twice")
    return Cluster(SCHEMES[scheme], tuple(endpoints))


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def unb64(text: str | None) -> str:
    return base64.b64decode(text or "").decode(errors="replace")


class EtcdError(OSError):
    """No member answered, or the one that did refused the request."""


class Gateway:
    """Requests to the cluster's JSON gateway, with fail-over between members.

    ``ca``: the CA file that signed the members' certificates (https); ``cert`` /
    ``key``: this node's client certificate, when the members ask for one."""

    def __init__(self, cluster: Cluster, timeout: float = 0.3, ca: str | None = None,
                 cert: str | None = None, key: str | None = None) -> None:
        self.cluster = cluster
        verify: ssl.SSLContext | bool = True
        if cluster.scheme == "https":
            verify = ssl.create_default_context(cafile=ca)
            if cert:
                verify.load_cert_chain(cert, key)
        self.http = httpx.Client(timeout=timeout, verify=verify)
        self.current = 0  # the member that answered last

    @property
    def endpoint(self) -> str:
        return self.cluster.endpoints[self.current]

    def close(self) -> None:
        self.http.close()

    def call(self, path: str, body: dict) -> dict:
        """POST ``body`` to ``path`` on the current member, then the others in turn;
        the answer's JSON. EtcdError when none answers, or one refuses."""
        errors = []
        n = len(self.cluster.endpoints)
        for i in range(n):
            index = (self.current + i) % n
            base = self.cluster.endpoints[index]
            try:
                resp = self.http.post(f"{base}{path}", json=body)
            except httpx.HTTPError as e:
                errors.append(f"{base}: {e or type(e).__name__}")
                continue
            if index != self.current:
                log.warning("etcd: %s did not answer (%s); now asking %s", self.endpoint,
                            errors[0] if errors else "", base)
                self.current = index
            # keep-alive answers as a stream: one JSON object per line
            text = resp.text.strip().splitlines()[0] if resp.text.strip() else "{}"
            try:
                data = json.loads(text)
            except ValueError:
                raise EtcdError(f"{base}: not JSON ({resp.status_code}): {text[:100]}") from None
            if resp.status_code != 200 or "error" in data:
                err = data.get("error")
                message = err.get("message") if isinstance(err, dict) else data.get("message") or err
                if _unavailable(resp.status_code, str(message)):  # no leader, or not ready: ask another
                    errors.append(f"{base}: {message}")
                    continue
                raise EtcdError(f"{base}: {message or resp.status_code}")
            return data.get("result", data) if path == "/v3/lease/keepalive" else data
        raise EtcdError("no etcd member answered: " + "; ".join(errors))

    def grant(self, ttl: int) -> tuple[str, int]:
        """A new lease: (its id, the TTL etcd gave it, which may exceed ``ttl``: its floor)."""
        data = self.call("/v3/lease/grant", {"TTL": ttl})
        return str(data["ID"]), int(data.get("TTL", 0))

    def keepalive(self, lease: str) -> int:
        """The lease's TTL after the refresh; 0 when it no longer exists."""
        return int(self.call("/v3/lease/keepalive", {"ID": lease}).get("TTL", 0))

    def revoke(self, lease: str) -> None:
        self.call("/v3/lease/revoke", {"ID": lease})

    def txn(self, compare: list[dict], success: list[dict], failure: list[dict] | None = None) -> dict:
        return self.call("/v3/kv/txn", {"compare": compare, "success": success, "failure": failure or []})


def _unavailable(status: int, message: str) -> bool:
    return status in (502, 503) or "no leader" in message or "timed out" in message \
        or "not capable" in message or "leader changed" in message


# --- the parts of a transaction ----------------------------------------------------


def value_is(key: str, value: str) -> dict:
    return {"target": "VALUE", "key": b64(key), "result": "EQUAL", "value": b64(value)}


def absent(key: str) -> dict:
    return {"target": "CREATE", "key": b64(key), "result": "EQUAL", "create_revision": "0"}


def lease_is(key: str, lease: str) -> dict:
    return {"target": "LEASE", "key": b64(key), "result": "EQUAL", "lease": lease}


def put(key: str, value: str, lease: str | None = None) -> dict:
    op = {"key": b64(key), "value": b64(value)}
    if lease:
        op["lease"] = lease
    return {"request_put": op}


def delete(key: str) -> dict:
    return {"request_delete_range": {"key": b64(key)}}


def get(key: str) -> dict:
    return {"request_range": {"key": b64(key)}}


def txn_op(compare: list[dict], success: list[dict], failure: list[dict]) -> dict:
    return {"request_txn": {"compare": compare, "success": success, "failure": failure}}


def values(answer: dict) -> dict[str, str]:
    """Every key a transaction's ranges returned (nested transactions too) -> value."""
    out: dict[str, str] = {}
    for r in answer.get("responses", []):
        if "response_range" in r:
            for kv in r["response_range"].get("kvs", []):
                out[unb64(kv.get("key"))] = unb64(kv.get("value"))
        elif "response_txn" in r:
            out.update(values(r["response_txn"]))
    return out


def inner(answer: dict) -> dict:
    """The answer of the transaction nested first in ``answer``'s branch."""
    for r in answer.get("responses", []):
        if "response_txn" in r:
            return r["response_txn"]
    return {}
