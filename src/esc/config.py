"""The node configuration: one model, stored as versioned JSON, written atomically.

Everything a node needs to know lives in ``<root>/etc/esc/esc.json``. Secrets
that must stay usable in clear (the replication password, which libpq has to
send) live in ``<root>/etc/esc/secrets.json`` with mode 0600; user passwords are
stored only as salted hashes.
"""

from __future__ import annotations

import ipaddress
import json
import math
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Final, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

CONFIG_VERSION = 1
PG_BIN = Path(os.environ.get("ESC_PG_BIN", "/usr/lib/postgresql/15/bin"))


class ConfigError(ValueError):
    """A configuration or argument that cannot be used; the message says why."""


def parse_ip(text: str, what: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        raise ConfigError(f"{what}: {text!r} is not an IPv4 or IPv6 address") from None


class Timing(BaseModel):
    """Failure-detection timing. The safety rule between them is checked on load.

    A standby may promote only within ``promote_window`` of the last moment the
    active confirmed it a complete synchronous standby. The active may stop
    waiting for a missing standby (commit alone) only ``alone_after`` after its
    last contact with it. ``alone_after > promote_window + heartbeat_timeout``
    makes the two exclusive: by the time the active commits alone, a standby
    that lost it can no longer promote (see docs/ha.md).
    """

    advert_int: float = 0.2  # VRRPv3 advertisement interval, seconds
    heartbeat_interval: float = 0.1
    heartbeat_timeout: float = 0.4
    promote_window: float = 1.7
    alone_after: float = 2.2
    tick: float = 0.05
    lease: float = 1.0  # the witness's lease (when one is configured), renewed every 0.2 s

    @model_validator(mode="after")
    def _safety_rule(self) -> Timing:
        for name in ("advert_int", "heartbeat_interval", "heartbeat_timeout", "promote_window",
                     "alone_after", "tick", "lease"):
            value = getattr(self, name)
            if not math.isfinite(value) or value <= 0:
                raise ValueError(f"timing: {name} must be positive (a finite number of seconds)")
        if not 0.01 <= self.advert_int <= 40:
            raise ValueError("timing: advert_int must be between 0.01 and 40 seconds")
        if self.heartbeat_interval >= self.heartbeat_timeout:
            raise ValueError("timing: heartbeat_interval must be shorter than heartbeat_timeout")
        if self.alone_after <= self.promote_window + self.heartbeat_timeout:
            raise ValueError(
                f"timing: alone_after ({self.alone_after}s) must exceed promote_window "
                f"({self.promote_window}s) + heartbeat_timeout ({self.heartbeat_timeout}s), "
                "or an active could commit alone while its standby may still promote"
            )
        if not 0.5 <= self.lease <= 5.0:
            raise ValueError("timing: lease must be between 0.5 and 5 seconds")
        master_down = 3 * self.advert_int + self.advert_int
        if self.promote_window <= master_down + self.heartbeat_timeout:
            raise ValueError(
                f"timing: promote_window ({self.promote_window}s) must exceed VRRP master-down "
                f"time (~{master_down:.2f}s) + heartbeat_timeout, or no failover could ever promote"
            )
        return self


# promote_window and alone_after when a witness is configured (see NodeConfig)
WITNESS_TIMING_DEFAULTS: Final = {"promote_window": 2.0, "alone_after": 4.0}
# etcd's lessor looks for expired leases twice a second: a dead holder's key may outlive
# its lease by that much (esc.agent.etcd_lease)
ETCD_REVOKE_DELAY: Final = 0.5


class Vip(BaseModel):
    address: str
    prefixlen: int
    interface: str

    @property
    def family(self) -> int:
        return ipaddress.ip_address(self.address).version

    @property
    def cidr(self) -> str:
        return f"{self.address}/{self.prefixlen}"

    @classmethod
    def parse(cls, text: str, default_iface: str) -> Vip:
        """Parse the original's ``--kad_vip`` forms: ``IP``, ``IP/len``, ``IP:iface``,
        ``[IPv6/len]:iface``."""
        text = text.strip()
        iface = default_iface
        if text.startswith("["):
            inner, _, rest = text[1:].partition("]")
            if rest.startswith(":"):
                iface = rest[1:]
            elif rest:
                raise ConfigError(f"--kad_vip: cannot parse {text!r}")
            text = inner
        elif text.count(":") == 1:  # IPv4 with interface
            text, iface = text.split(":")
        iface = iface.strip()
        addr, slash, plen = text.partition("/")
        ip = parse_ip(addr, "--kad_vip")
        maxlen = 32 if ip.version == 4 else 128
        if slash:
            if not re.fullmatch(r"[0-9]{1,3}", plen) or not 0 < int(plen) <= maxlen:
                raise ConfigError(f"--kad_vip: bad prefix length {plen!r} for {ip}")
            prefixlen = int(plen)
        else:
            prefixlen = maxlen
        if not iface:
            raise ConfigError("--kad_vip: no interface (give --kad_vif or VIP:iface)")
        return cls(address=str(ip), prefixlen=prefixlen, interface=iface)


def check_heartbeat_pair(pair: list[str], taken: set[str]) -> None:
    """One --ha_heartbeat_list entry: two different addresses of one family, none of
    them already used by node_list or another heartbeat network."""
    where = f"--ha_heartbeat_list {' '.join(pair)}"
    if len(pair) != 2:
        raise ValueError(f"{where}: needs exactly two addresses (both nodes, in --ha_node_list order), "
                         f"got {len(pair)}")
    a, b = (parse_ip(x, "--ha_heartbeat_list") for x in pair)
    if a == b:
        raise ValueError(f"{where}: the two addresses must differ")
    if a.version != b.version:
        raise ValueError(f"{where}: both addresses must be of the same family")
    for x in (a, b):
        if str(x) in taken:
            raise ValueError(f"{where}: {x} is already used (--ha_node_list or another "
                             "--ha_heartbeat_list); each network needs addresses of its own")


CINDER_ID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
DISK_BY_ID = Path("/dev/disk/by-id")


def is_cinder_id(db_volume_id: str) -> bool:
    return bool(CINDER_ID_RE.fullmatch(db_volume_id))


def volume_device(db_volume_id: str) -> Path:
    """What ``--db_volume_id`` names: a Cinder volume id is found where OpenStack's
    libvirt attaches it, ``/dev/disk/by-id/virtio-`` and the id's first 20 characters
    (the disk serial holds no more); anything else is a block device or a mount point."""
    if is_cinder_id(db_volume_id):
        return DISK_BY_ID / f"virtio-{db_volume_id.lower()[:20]}"
    return Path(db_volume_id)


class HaConfig(BaseModel):
    node_list: list[str]  # addresses of both nodes, in the operator's order
    vip: Vip
    vif: str  # the VRRP interface
    vri: int = 50
    mode: Literal["drbd", "drbd_on_cinder"] = "drbd"
    db_volume_id: str | None = None
    self_index: int  # which entry of node_list is this node
    # ADDR:PORT of the lease server (esc.witness), or an etcd cluster
    # (etcd://HOST:PORT,... or etcd+https://...: esc.agent.etcd_lease), or none
    witness: str | None = None
    # etcd+https: the CA that signed the members' certificates (else the system's), and
    # this node's client certificate and key when the members ask for one
    witness_ca: str | None = None
    witness_cert: str | None = None
    witness_key: str | None = None
    # More networks the agents hear each other on (--ha_heartbeat_list, repeatable): each
    # entry is both nodes' addresses on one network, in node_list order. VRRP and the
    # northbound stay on node_list's network (replication too, unless `replication` names
    # one of these); they carry peer liveness, so a node does not take over while its peer
    # answers on any of them.
    heartbeat: list[list[str]] = []
    # The network PostgreSQL replicates over (--ha_replication_list): node_list's when
    # None, else one of the heartbeat networks, as both nodes' addresses in node_list order.
    replication: list[str] | None = None

    @field_validator("witness")
    @classmethod
    def _witness(cls, v: str | None) -> str | None:
        if v is None:
            return None
        from esc import etcd

        if "://" in v or v.strip().startswith("etcd"):  # a URL, maybe mistyped: say what one is
            return etcd.parse_url(v).url
        host, sep, port = v.strip().rpartition(":")
        if not sep or not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ValueError(f"--ha_witness {v!r}: expected ADDR:PORT, e.g. 10.0.0.9:8025 or [fd00::9]:8025, "
                             "or etcd://HOST:PORT,HOST:PORT,...")
        ip = parse_ip(host, "--ha_witness")
        return f"[{ip}]:{int(port)}" if ip.version == 6 else f"{ip}:{int(port)}"

    @property
    def witness_is_etcd(self) -> bool:
        from esc import etcd

        return etcd.is_etcd(self.witness)

    @model_validator(mode="after")
    def _witness_tls(self) -> HaConfig:
        given = [f"--ha_witness_{k}" for k in ("ca", "cert", "key") if getattr(self, f"witness_{k}")]
        if given and not (self.witness or "").startswith("etcd+https://"):
            raise ValueError(f"{', '.join(given)}: for a witness on etcd over TLS "
                             "(--ha_witness etcd+https://HOST:PORT,...)")
        if bool(self.witness_cert) != bool(self.witness_key):
            raise ValueError("--ha_witness_cert and --ha_witness_key go together")
        return self

    @property
    def pair_id(self) -> str:
        """The pair's name at the witness (one witness may serve several pairs)."""
        return "-".join(self.node_list)

    @field_validator("vri")
    @classmethod
    def _vri(cls, v: int) -> int:
        if not 1 <= v <= 255:
            raise ValueError(f"--kad_vri must be between 1 and 255, not {v}")
        return v

    @model_validator(mode="after")
    def _check(self) -> HaConfig:
        if len(self.node_list) != 2:
            raise ValueError("--ha_node_list needs exactly two node addresses")
        if len({str(parse_ip(a, "--ha_node_list")) for a in self.node_list}) != 2:
            raise ValueError("--ha_node_list: the two node addresses must differ")
        if self.mode == "drbd_on_cinder" and not self.db_volume_id:
            raise ValueError("--ha_mode drbd_on_cinder needs --db_volume_id")
        seen = {str(parse_ip(a, "--ha_node_list")) for a in self.node_list}
        for pair in self.heartbeat:
            check_heartbeat_pair(pair, seen)
            seen.update(str(parse_ip(a, "--ha_heartbeat_list")) for a in pair)
        if self.vip.family == 4 and ipaddress.ip_address(self.node_list[0]).version == 6:
            raise ValueError(f"--kad_vip {self.vip.address}: keepalived does not support a single IPv4 VIP "
                             "on an IPv6 VRRP instance (--ha_node_list is IPv6); use an IPv6 VIP")
        if self.replication is not None and self.replication != self.node_list and \
                self.replication not in self.heartbeat:
            raise ValueError(f"--ha_replication_list {' '.join(self.replication)}: give the two addresses "
                             "of --ha_node_list or of one --ha_heartbeat_list, in the same order")
        return self

    @property
    def replication_pair(self) -> tuple[str, str]:
        """(this node's address, the peer's) on the network PostgreSQL replicates over."""
        pair = self.replication or self.node_list
        return pair[self.self_index], pair[1 - self.self_index]

    @property
    def paths(self) -> list[tuple[str, str]]:
        """(this node's address, the peer's) on every network the agents talk on; the
        first is node_list's (VRRP's)."""
        return [(p[self.self_index], p[1 - self.self_index]) for p in [self.node_list, *self.heartbeat]]

    @property
    def vrrp_native_ipv6(self) -> bool:
        """An IPv6 VIP for nodes on IPv4 (the original's northbound IPv6 network beside an
        IPv4 VRRP network): keepalived carries only VIPs of its instance's family, so the
        instance speaks VRRP over IPv6 on --kad_vif, from its link-local address, by
        multicast (the nodes have no IPv6 address there to send unicast to)."""
        return self.vip.family == 6 and ipaddress.ip_address(self.node_list[0]).version == 4

    @property
    def self_address(self) -> str:
        return self.node_list[self.self_index]

    @property
    def peer_address(self) -> str:
        return self.node_list[1 - self.self_index]

    @property
    def peer_name(self) -> str:
        return peer_app_name(self.peer_address)

    @property
    def self_name(self) -> str:
        return peer_app_name(self.self_address)


AS_MAX = 4294967295  # 4-byte AS numbers (RFC 6793)
MD5_MAX = 80  # TCP_MD5SIG_MAXKEYLEN on Linux
# Rendered inside a quoted string of exabgp.conf and typed on routers' command lines:
# printable ASCII without quotes, backslash, whitespace or config punctuation.
MD5_RE = re.compile(r"[!#-&(-:<-~]+")
_MD5_FORBIDDEN = "space, quotes, backslash, ';', '{', '}'"


def check_md5(secret: str) -> str:
    """The TCP MD5 (RFC 2385) key, as ``--md5``/``--bgp_md5`` give it."""
    if not 1 <= len(secret) <= MD5_MAX:
        raise ConfigError(f"--md5: the key must be 1 to {MD5_MAX} characters, not {len(secret)}")
    if not MD5_RE.fullmatch(secret) or any(c in secret for c in "{};\\"):
        raise ConfigError(f"--md5: use printable ASCII without {_MD5_FORBIDDEN}")
    return secret


class BgpConfig(BaseModel):
    """Northbound over BGP anycast (docs/bgp.md): ``anycast_ip`` sits on the loopback of
    both nodes; the active announces it to ``remote_ip`` from ``local_ip``. The MD5 key,
    if any, is a secret: it lives in secrets.json, ``md5`` only says there is one."""

    local_ip: str
    anycast_ip: str
    remote_ip: str
    local_as: int
    remote_as: int
    local_router_id: str
    md5: bool = False
    hold_time: int = 3  # seconds; RFC 4271: 0 or >= 3
    connect_retry: int = 1  # ExaBGP's pause between connection attempts, seconds

    @field_validator("local_ip", "anycast_ip", "remote_ip")
    @classmethod
    def _address(cls, v: str, info) -> str:  # type: ignore[no-untyped-def]
        what = f"--{info.field_name}"
        ip = parse_ip(v, what)
        if ip.is_unspecified or ip.is_multicast or (ip.version == 4 and ip == ipaddress.ip_address(
                "255.255.255.255")):
            raise ValueError(f"{what}: {ip} cannot be used as a BGP address")
        if info.field_name != "anycast_ip" and ip.is_loopback:
            raise ValueError(f"{what}: {ip} is a loopback address; give an address the router reaches")
        return str(ip)

    @field_validator("local_as", "remote_as")
    @classmethod
    def _asn(cls, v: int, info) -> int:  # type: ignore[no-untyped-def]
        if not 1 <= v <= AS_MAX:
            raise ValueError(f"--{info.field_name}: an AS number is 1 to {AS_MAX}, not {v}")
        if v == 23456:
            raise ValueError(f"--{info.field_name}: 23456 is AS_TRANS (RFC 6793), not a real AS")
        return v

    @field_validator("local_router_id")
    @classmethod
    def _router_id(cls, v: str) -> str:
        try:
            rid = ipaddress.IPv4Address(v.strip())
        except ValueError:
            raise ValueError(f"--local_router_id: {v!r} must be an IPv4 dotted quad "
                             "(a 32-bit BGP identifier), also for IPv6 sessions") from None
        if int(rid) == 0:
            raise ValueError("--local_router_id: 0.0.0.0 is not a valid BGP identifier")
        return str(rid)

    @field_validator("hold_time")
    @classmethod
    def _hold(cls, v: int) -> int:
        if v != 0 and not 3 <= v <= 65535:
            raise ValueError(f"bgp hold_time must be 0 or 3..65535 seconds (RFC 4271), not {v}")
        return v

    @model_validator(mode="after")
    def _check(self) -> BgpConfig:
        fam = {n: ipaddress.ip_address(getattr(self, n)).version
               for n in ("local_ip", "anycast_ip", "remote_ip")}
        if len(set(fam.values())) != 1:
            raise ValueError("--local_ip, --anycast_ip and --remote_ip must be of one address family "
                             f"(got {', '.join(f'{k} IPv{v}' for k, v in fam.items())})")
        if self.anycast_ip in (self.local_ip, self.remote_ip):
            raise ValueError(f"--anycast_ip {self.anycast_ip} must differ from --local_ip and "
                             "--remote_ip (it is the address both nodes share)")
        if self.local_ip == self.remote_ip:
            raise ValueError("--local_ip and --remote_ip must differ")
        if not 1 <= self.connect_retry <= 60:
            raise ValueError("bgp connect_retry must be 1..60 seconds")
        return self

    @property
    def family(self) -> int:
        return ipaddress.ip_address(self.anycast_ip).version

    @property
    def anycast_prefix(self) -> str:
        return f"{self.anycast_ip}/{32 if self.family == 4 else 128}"

    @property
    def ebgp(self) -> bool:
        return self.local_as != self.remote_as


def peer_app_name(address: str) -> str:
    """The replication application_name of a node: derived from its HA address,
    so each node can name its peer without asking it."""
    return "esc_" + str(ipaddress.ip_address(address)).replace(".", "_").replace(":", "_")


class VimConfig(BaseModel):
    """Where VMs are made. ``local``: VMs are processes in network namespaces on this
    machine (docs/vim.md), attached to ``bridge`` in namespace ``network_ns``, with
    addresses from ``pool``; ``state_dir`` must be shared by both nodes, as a real VIM is."""

    driver: Literal["local"] = "local"
    state_dir: str
    ns_prefix: str = ""
    network_ns: str
    bridge: str = "br0"
    pool: str
    prefixlen: int | None = None  # of the VMs' network (the pool may be a part of it)
    probe_interval: float = Field(default=1.0, ge=0.1, le=3600)  # for VMs whose KPI gives none
    down_after: int = Field(default=3, ge=1, le=100)

    @field_validator("pool")
    @classmethod
    def _pool(cls, v: str) -> str:
        try:
            net = ipaddress.ip_network(v, strict=False)
        except ValueError:
            raise ValueError(f"vim pool {v!r} is not a network (e.g. 10.77.0.128/25)") from None
        if net.version != 4 or net.num_addresses < 4:
            raise ValueError(f"vim pool {v!r}: an IPv4 network with room for VMs is needed")
        return v


# Never a callback target unless the operator says so: this host and its neighbours'
# link-local services (cloud metadata), multicast, "any".
DEFAULT_CALLBACK_DENY = ["127.0.0.0/8", "::1/128", "169.254.0.0/16", "fe80::/10", "0.0.0.0/8", "::/128",
                         "224.0.0.0/4", "ff00::/8"]


def _networks(values: list[str], what: str) -> list[str]:
    out = []
    for v in values:
        try:
            out.append(str(ipaddress.ip_network(str(v).strip(), strict=False)))
        except ValueError:
            raise ValueError(f"{what}: {v!r} is not an address or network (e.g. 10.0.0.0/8)") from None
    return out


class CallbackConfig(BaseModel):
    """Where the controller may POST callbacks: every address the URL's host is
    (or resolves to) must be in ``allow`` and in no network of ``deny``."""

    allow: list[str] = Field(default_factory=lambda: ["0.0.0.0/0", "::/0"])
    deny: list[str] = Field(default_factory=lambda: list(DEFAULT_CALLBACK_DENY))

    @field_validator("allow")
    @classmethod
    def _allow(cls, v: list[str]) -> list[str]:
        return _networks(v, "callback allow-list")

    @field_validator("deny")
    @classmethod
    def _deny(cls, v: list[str]) -> list[str]:
        return _networks(v, "callback deny-list")


class Retention(BaseModel):
    """How long the controller keeps events and finished transactions (with their
    callbacks). A retry with the same Idempotency-Key is recognised only while its
    transaction is kept."""

    days: float = Field(default=7.0, gt=0, le=3650)
    max_events: int = Field(default=100_000, ge=100, le=100_000_000)


class User(BaseModel):
    name: str
    password_hash: str


def http_url(v: str, what: str, example: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(v)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{what} {v!r}: an http(s) URL is needed, e.g. {example}")
    return v.rstrip("/")


class NfvoEndpoint(BaseModel):
    """An API of the NFVO the VNFM calls: its URL, HTTP Basic towards it."""

    url: str
    user: str | None = None
    password: str | None = None
    timeout_s: float = Field(default=10.0, gt=0, le=600)
    what: ClassVar[tuple[str, str]] = ("url", "http://nfvo:8080/")  # how errors name it

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        return http_url(v, *cls.what)


class GrantConfig(NfvoEndpoint):
    """The NFVO's Granting API (SOL003 ``/grant/v1``): when set, every VNF lifecycle
    operation asks ``POST {url}/grants`` first and a refusal fails it (esc.etsi.grant)."""

    what: ClassVar[tuple[str, str]] = ("grant url", "http://nfvo:8080/grant/v1")


class PackageSourceConfig(NfvoEndpoint):
    """The NFVO's VNF package management API (SOL003 ``/vnfpkgm/v1``): packages this VNFM
    has not onboarded are fetched from there (esc.etsi.nfvo_packages)."""

    timeout_s: float = Field(default=30.0, gt=0, le=600)
    what: ClassVar[tuple[str, str]] = ("package url", "http://nfvo:8080/vnfpkgm/v1")


class EtsiConfig(BaseModel):
    """The ETSI NFV SOL003 VNF lifecycle service (esc.etsi), on the active only.

    ``server_address``: the host every link and Location names; in HA mode the VIP (or the
    anycast address) by default, never a node's own address (a client would follow it to a
    node that may be the standby tomorrow)."""

    enabled: bool = True
    server_address: str | None = None
    http_port: int = Field(default=8250, ge=1, le=65535)
    https_port: int = Field(default=8251, ge=0, le=65535)  # 0: no HTTPS
    token_ttl_s: int = Field(default=3600, ge=60, le=86400)  # OAuth 2.0 access tokens
    grant: GrantConfig | None = None
    packages: PackageSourceConfig | None = None

    @field_validator("server_address")
    @classmethod
    def _server_address(cls, v: str | None) -> str | None:
        if v is None:
            return None
        v = v.strip().strip("[]")
        if not v or re.search(r"[^A-Za-z0-9.:-]", v):
            raise ValueError(f"ETSI server address {v!r}: an address or a host name is needed")
        return v


SNMP_AUTH = ("SHA", "SHA224", "SHA256", "SHA384", "SHA512", "MD5")
SNMP_PRIV = ("AES", "AES192", "AES256", "DES")


class SnmpTarget(BaseModel):
    """A trap receiver: an address (IPv4, IPv6 or a host name) and a UDP port."""

    host: str
    port: int = Field(default=162, ge=1, le=65535)

    @field_validator("host")
    @classmethod
    def _host(cls, v: str) -> str:
        v = v.strip().strip("[]")
        if not v or re.search(r"[^A-Za-z0-9.:_-]", v):
            raise ValueError(f"SNMP target {v!r}: an address or a host name is needed")
        return v

    @classmethod
    def parse(cls, text: str) -> SnmpTarget:
        """HOST, HOST:PORT, [V6] or [V6]:PORT."""
        text = text.strip()
        m = re.fullmatch(r"\[([^\]]+)\](?::(\d+))?", text)
        if m:
            host, port = m[1], m[2]
        elif text.count(":") == 1:
            host, port = text.split(":")
        else:
            host, port = text, None
        try:
            return cls(host=host, port=int(port) if port else 162)
        except ValueError as e:
            raise ConfigError(f"--target {text!r}: {validation_message(e)}") from None


class SnmpConfig(BaseModel):
    """SNMP traps (esc.snmp), sent by both nodes, each with its own view. v2c: the
    community; v3: a USM user with authentication and privacy. Secrets (the community,
    the keys) live in secrets.json."""

    targets: list[SnmpTarget] = Field(min_length=1, max_length=8)
    version: Literal["2c", "3"] = "2c"
    user: str | None = None
    auth_protocol: str = "SHA256"
    priv_protocol: str = "AES"
    engine_id: str  # hex; the receiver needs it for v3 traps (escadm snmp show)
    enterprise_oid: str = "1.3.6.1.4.1.32473.1"  # where ESC-HA-MIB sits (docs/ESC-HA-MIB.txt)
    # answer GETs of escHaStatus on this UDP port (every address), with the same credentials
    agent_port: int | None = Field(default=None, ge=1, le=65535)

    @field_validator("enterprise_oid")
    @classmethod
    def _oid(cls, v: str) -> str:
        v = v.strip().lstrip(".")
        if not re.fullmatch(r"1\.3\.6\.1\.4\.1(?:\.\d{1,9})+", v):
            raise ValueError(f"enterprise OID {v!r}: an OID under 1.3.6.1.4.1 (enterprises)")
        return v

    @field_validator("auth_protocol", "priv_protocol")
    @classmethod
    def _protocol(cls, v: str, info) -> str:  # type: ignore[no-untyped-def]
        known = SNMP_AUTH if info.field_name == "auth_protocol" else SNMP_PRIV
        if v.upper() not in known:
            raise ValueError(f"{info.field_name.replace('_', ' ')} {v!r}: one of {', '.join(known)}")
        return v.upper()

    @field_validator("engine_id")
    @classmethod
    def _engine(cls, v: str) -> str:
        if not re.fullmatch(r"(?:[0-9a-fA-F]{2}){5,32}", v):
            raise ValueError(f"engine ID {v!r}: 5 to 32 bytes in hex")
        return v.lower()


IFNAME_RE = re.compile(r"^[A-Za-z0-9_.:@-]{1,15}$")  # what the kernel takes (IFNAMSIZ - 1)


def split_outside_brackets(text: str, sep: str = ":") -> list[str]:
    """``[2001:db8::/64]:[2001:db8::1]:eth0`` -> the three parts, brackets dropped."""
    parts, cur, depth = [], "", 0
    for ch in text:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        if ch == sep and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    if depth != 0:
        raise ConfigError(f"{text!r}: unbalanced brackets")
    parts.append(cur)
    return [x.strip().strip("[]") for x in parts]


def check_ifname(name: str, what: str) -> str:
    if not IFNAME_RE.fullmatch(name):
        raise ConfigError(f"{what}: {name!r} is not an interface name")
    return name


class Route(BaseModel):
    """A static route the node keeps (the installer's ``--route NET[/LEN][:GW]:IF``)."""

    network: str
    gateway: str | None = None
    interface: str

    @classmethod
    def parse(cls, text: str) -> Route:
        parts = split_outside_brackets(text)
        if len(parts) not in (2, 3) or not all(parts):
            raise ConfigError(f"--route {text!r}: NET[/LEN][:GATEWAY]:INTERFACE, e.g. "
                              "192.0.2.0/24:192.168.0.1:eth1 (IPv6 in brackets)")
        try:
            net = ipaddress.ip_network(parts[0], strict=False)
        except ValueError:
            raise ConfigError(f"--route {text!r}: {parts[0]!r} is not a network") from None
        gw = None
        if len(parts) == 3:
            gw = parse_ip(parts[1], f"--route {text!r}: the gateway")
            if gw.version != net.version:
                raise ConfigError(f"--route {text!r}: the gateway is not of the network's family")
        return cls(network=str(net), gateway=str(gw) if gw else None,
                   interface=check_ifname(parts[-1], f"--route {text!r}"))


class InterfaceParams(BaseModel):
    """One interface's section of ``--network_params_file`` (INI: ``[eth1]``)."""

    prefixlen: int | None = Field(default=None, ge=1, le=128)
    mtu: int | None = Field(default=None, ge=576, le=65535)
    gateway: str | None = None


class HostEntry(BaseModel):
    address: str
    names: list[str]


class NetworkConfig(BaseModel):
    """What the installer's network arguments ask of the node, applied by the agent at
    each start (esc.network): addresses, default route, static routes, host names."""

    gateway: str | None = None  # --gateway_ip
    routes: list[Route] = Field(default_factory=list)  # --route
    interfaces: dict[str, InterfaceParams] = Field(default_factory=dict)  # --network_params_file
    hosts: list[HostEntry] = Field(default_factory=list)  # --host_mapping_file


class VmRequest(BaseModel):
    """The installer's arguments that describe the VM to create (the original's bootvm
    creates it in OpenStack): recorded, not used on the node."""

    image: str | None = None
    flavor: str | None = None
    avail_zone: str | None = None
    net: list[str] = Field(default_factory=list)


class NodeConfig(BaseModel):
    version: int = CONFIG_VERSION
    name: str
    ipaddr: list[str] = Field(default_factory=list)
    ha: HaConfig | None = None
    rest_user: User | None = None
    portal_user: User | None = None
    os_user: User | None = None
    # /metrics on the health port: HTTP Basic as this user, or open when None
    metrics_user: User | None = None
    api_port: int = 8080
    https_port: int = 8443
    # False: HTTPS only; the HTTP port answers every request with a redirect to HTTPS
    # (it still listens: clients find the new active there first after a failover)
    http: bool = True
    peer_port: int = 8021
    pair_port: int = 8022  # pairing (esc.pairing): SPAKE2, plain HTTP
    health_port: int = 8060
    portal_port: int = 9001  # the portal (esc.portal), HTTPS, with the controller
    pg_port: int = 5432
    timing: Timing = Field(default_factory=Timing)
    vim: VimConfig | None = None
    callbacks: CallbackConfig = Field(default_factory=CallbackConfig)
    retention: Retention = Field(default_factory=Retention)
    bgp: BgpConfig | None = None
    etsi: EtsiConfig = Field(default_factory=EtsiConfig)
    snmp: SnmpConfig | None = None
    network: NetworkConfig = Field(default_factory=NetworkConfig)
    vm_request: VmRequest | None = None
    confd_user: User | None = None  # --user_confd_pass, for the NETCONF service
    confd_port: int = Field(default=830, ge=1, le=65535)  # the NETCONF service (esc.netconf)

    @property
    def is_ha(self) -> bool:
        return self.ha is not None

    @property
    def etsi_server_address(self) -> str:
        """The host of every ETSI link: configured, else the VIP / anycast address, else
        this node's first address (standalone)."""
        return self.etsi.server_address or self.etsi_server_address_default()

    @model_validator(mode="after")
    def _etsi_address_not_a_node(self) -> NodeConfig:
        """In HA mode a node's own address as the ETSI server address would send clients
        and notification receivers to one node, which may be the standby tomorrow."""
        addr = self.etsi.server_address
        if self.ha is None or addr is None:
            return self
        nodes = {self.ha.self_address, self.ha.peer_address, *self.ipaddr,
                 *(a for pair in self.ha.heartbeat for a in pair)}
        if addr in nodes:
            raise ValueError(f"ETSI server address {addr} is a node's own address: in HA mode it must "
                             f"be the VIP ({self.etsi_server_address_default()}) or a name for it")
        return self

    def etsi_server_address_default(self) -> str:
        if self.bgp is not None:
            return self.bgp.anycast_ip
        return self.ha.vip.address if self.ha else (self.ipaddr[0] if self.ipaddr else "127.0.0.1")

    @model_validator(mode="before")
    @classmethod
    def _witness_timing_defaults(cls, data: Any) -> Any:
        """With a witness, a standby promotes only once the dead active's lease ran out, so
        its window must be longer; losing the standby then costs no alone_after wait (the
        witness holds it outdated at once), so the longer pair costs nothing there."""
        if not isinstance(data, dict):
            return data
        ha = data.get("ha")
        witness = ha.witness if isinstance(ha, HaConfig) else (ha or {}).get("witness")
        timing = data.get("timing", {})
        if witness and isinstance(timing, dict):
            data = {**data, "timing": {**WITNESS_TIMING_DEFAULTS, **timing}}
        return data

    @model_validator(mode="after")
    def _witness_timing(self) -> NodeConfig:
        t = self.timing
        if self.ha and self.ha.witness and not t.promote_window > t.lease + t.heartbeat_timeout:
            raise ValueError(
                f"with a witness, promote_window ({t.promote_window:g}s) must exceed lease "
                f"({t.lease:g}s) + heartbeat_timeout ({t.heartbeat_timeout:g}s): a standby waits for "
                "the dead active's lease to run out, and must still be within its window")
        if self.ha and self.ha.witness_is_etcd and not \
                t.promote_window > math.ceil(t.lease) + ETCD_REVOKE_DELAY + t.heartbeat_timeout:
            raise ValueError(
                f"with an etcd witness, promote_window ({t.promote_window:g}s) must exceed the etcd "
                f"lease ({math.ceil(t.lease)}s, whole seconds) + {ETCD_REVOKE_DELAY:g}s (etcd revokes "
                f"an expired lease up to that late) + heartbeat_timeout ({t.heartbeat_timeout:g}s)")
        return self


@dataclass(frozen=True)
class NodePaths:
    """Where each file of a node lives, under one root."""

    root: Path

    @property
    def etc(self) -> Path:
        return self.root / "etc/esc"

    @property
    def config(self) -> Path:
        return self.etc / "esc.json"

    @property
    def secrets(self) -> Path:
        return self.etc / "secrets.json"

    @property
    def pair_material(self) -> Path:
        """The pair's material (esc.pairing.material), 0600."""
        return self.etc / "pair.json"

    @property
    def pgpass(self) -> Path:
        return self.etc / "pgpass"

    @property
    def keepalived_conf(self) -> Path:
        return self.etc / "keepalived.conf"

    @property
    def exabgp_conf(self) -> Path:
        return self.etc / "exabgp.conf"

    @property
    def bgp_dir(self) -> Path:
        """ExaBGP's own (it runs as an unprivileged user: esc.privileges)."""
        return self.run / "bgp"

    @property
    def bgp_desired(self) -> Path:
        """What the agent wants ExaBGP to do (announce or withdraw), read by the API helper."""
        return self.bgp_dir / "desired"

    @property
    def bgp_state(self) -> Path:
        """What the API helper last told ExaBGP, and the session state ExaBGP reported."""
        return self.bgp_dir / "state.json"

    @property
    def lib(self) -> Path:
        return self.root / "var/lib/esc"

    @property
    def log(self) -> Path:
        return self.root / "var/log/esc"

    @property
    def run(self) -> Path:
        return self.root / "run/esc"

    @property
    def agent_sock(self) -> Path:
        return self.run / "agent.sock"

    @property
    def agent_pid(self) -> Path:
        return self.run / "agent.pid"

    @property
    def portal_sock(self) -> Path:
        """The agent's socket for the portal (esc.agent.api.portal_app), the controller's own."""
        return self.manager_dir / "portal.sock"

    @property
    def vim_sock(self) -> Path:
        """The VIM helper's socket (esc.vim.service)."""
        return self.run / "vim.sock"

    @property
    def manager_dir(self) -> Path:
        """What the unprivileged controller is handed (esc.privileges): 0700, its own."""
        return self.run / "manager"

    @property
    def manager_tls_cert(self) -> Path:
        return self.manager_dir / "escmanager.crt"

    @property
    def manager_tls_key(self) -> Path:
        return self.manager_dir / "escmanager.key"

    @property
    def manager_auth_key(self) -> Path:
        return self.manager_dir / "auth-cache.key"

    @property
    def vrrp_fifo(self) -> Path:
        return self.run / "vrrp.fifo"

    @property
    def vrrp_gate(self) -> Path:
        return self.run / "vrrp_gate"

    @property
    def vrrp_priority(self) -> Path:
        return self.run / "vrrp_priority"

    @property
    def pg_socket_dir(self) -> Path:
        return self.run / "pg"

    @property
    def tls_dir(self) -> Path:
        return self.etc / "tls"

    @property
    def tls_cert(self) -> Path:
        return self.tls_dir / "escmanager.crt"

    @property
    def tls_key(self) -> Path:
        return self.tls_dir / "escmanager.key"

    @property
    def peer_cert(self) -> Path:
        """The pair's own certificate for the peer API (mutual TLS between the agents)."""
        return self.tls_dir / "peer.crt"

    @property
    def peer_key(self) -> Path:
        return self.tls_dir / "peer.key"

    @property
    def peer_trust(self) -> Path:
        """The peer certificates this node accepts: the pair's, and during a renewal of
        the pair's material the other one too."""
        return self.tls_dir / "peer-trust.pem"

    @property
    def state(self) -> Path:
        return self.lib / "state.json"

    def pgdata(self, cfg: NodeConfig) -> Path:
        if cfg.ha and cfg.ha.mode == "drbd_on_cinder":
            return self.db_volume_mount(cfg) / "esc/pgdata"
        return self.lib / "pgdata"

    def db_volume_mount(self, cfg: NodeConfig) -> Path:
        assert cfg.ha and cfg.ha.db_volume_id
        vol = volume_device(cfg.ha.db_volume_id)
        # a device (a Cinder id names one, attached or not yet) is mounted here
        return self.lib / "db_volume" if vol.is_block_device() or is_cinder_id(cfg.ha.db_volume_id) else vol


def default_root() -> Path:
    return Path(os.environ.get("ESC_ROOT", "/"))


def write_atomic(path: Path, data: bytes, mode: int = 0o644, fsync: bool = True) -> None:
    """Write to a temp file in the same directory (created with ``mode``, so a key is
    never readable by others, even briefly), fsync, then rename. ``fsync=False`` for
    run-time state that need not survive a power cut (under run/)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.chmod(tmp, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, data: object, mode: int = 0o644) -> None:
    write_atomic(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode(), mode)


def validation_message(e: ValueError) -> str:
    """A pydantic ValidationError as one line for an operator: our validators'
    messages as they are, pydantic's own prefixed with the field."""
    errors = getattr(e, "errors", None)
    if not callable(errors):
        return str(e)
    out = []
    for err in errors():
        msg = str(err.get("msg", ""))
        if msg.startswith("Value error, "):
            out.append(msg.removeprefix("Value error, "))
        else:
            loc = ".".join(str(p) for p in err.get("loc", ()))
            out.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(out)


def load_config(paths: NodePaths) -> NodeConfig:
    try:
        raw = json.loads(paths.config.read_text())
    except FileNotFoundError:
        raise ConfigError(f"no node installed under {paths.root} ({paths.config} missing)") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"{paths.config}: not valid JSON ({e})") from None
    if raw.get("version") != CONFIG_VERSION:
        raise ConfigError(f"{paths.config}: unsupported config version {raw.get('version')!r}")
    try:
        return NodeConfig.model_validate(raw)
    except ValueError as e:
        raise ConfigError(f"{paths.config}: {validation_message(e)}") from None


def save_config(paths: NodePaths, cfg: NodeConfig) -> None:
    write_json_atomic(paths.config, cfg.model_dump(mode="json"))


def load_secrets(paths: NodePaths) -> dict[str, str]:
    try:
        return json.loads(paths.secrets.read_text())
    except FileNotFoundError:
        return {}
