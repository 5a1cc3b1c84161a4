"""The pair's material: what both nodes of a pair hold alike, made at random on one node
and handed to the other when they pair (esc.pairing.service), never derived from a
password:

- ``pair_key``: 256 random bits. Every secret the nodes share is derived from it by
  purpose (replication password, peer token, witness token, the REST auth cache key).
- the peer API's certificate and key (mutual TLS between the agents);
- the HTTPS key; each node builds the same certificate from it and the pair's
  addresses (esc.tls.make_certificate), so a client sees one certificate on both.

Kept in ``etc/esc/pair.json`` (0600); :func:`install` writes from it the files the other
processes read (the peer certificate, pgpass, the HTTPS certificate).
"""

from __future__ import annotations

import datetime
import secrets
from dataclasses import asdict, dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from esc import tls
from esc.config import NodeConfig, NodePaths, parse_ip, write_atomic, write_json_atomic
from esc.secrets import derive


@dataclass(frozen=True)
class PairMaterial:
    id: str  # public: tells two nodes whether they hold the same material
    created: float  # epoch seconds; the HTTPS certificate's validity starts there
    pair_key: str
    peer_cert: str
    peer_key: str
    https_key: str

    @classmethod
    def generate(cls) -> PairMaterial:
        peer_cert, peer_key = tls.make_peer_certificate()
        now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
        return cls(id=secrets.token_hex(8), created=now.timestamp() - 300,
                   pair_key=secrets.token_hex(32), peer_cert=peer_cert.decode(),
                   peer_key=peer_key.decode(), https_key=tls.new_key_pem().decode())

    def derive(self, purpose: str) -> str:
        """A secret for one purpose (both nodes compute the same)."""
        return derive(self.pair_key, purpose)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: object) -> PairMaterial:
        """Checked: a ValueError names what is wrong (material from a peer, or a file)."""
        if not isinstance(data, dict):
            raise ValueError("pair material: not an object")
        fields = {"id": str, "created": (int, float), "pair_key": str, "peer_cert": str,
                  "peer_key": str, "https_key": str}
        for name, kind in fields.items():
            if not isinstance(data.get(name), kind):
                raise ValueError(f"pair material: {name} missing or of the wrong type")
        if len(data["pair_key"]) != 64 or not _is_hex(data["pair_key"]):
            raise ValueError("pair material: pair_key is not 256 bits of hex")
        if not (1 <= len(data["id"]) <= 64 and _is_hex(data["id"])):
            raise ValueError("pair material: bad id")
        try:
            cert = x509.load_pem_x509_certificate(data["peer_cert"].encode())
            peer_key = serialization.load_pem_private_key(data["peer_key"].encode(), password=None)
            serialization.load_pem_private_key(data["https_key"].encode(), password=None)
        except (ValueError, TypeError) as e:
            raise ValueError(f"pair material: unreadable certificate or key ({e})") from None
        if cert.public_key() != peer_key.public_key():
            raise ValueError("pair material: the peer key does not match its certificate")
        return cls(**{k: data[k] for k in fields})


def _is_hex(text: str) -> bool:
    try:
        int(text, 16)
    except ValueError:
        return False
    return True


def load(paths: NodePaths) -> PairMaterial | None:
    """This node's material; None when it has not paired (or the file is unreadable:
    the node pairs again rather than run on half of it)."""
    import json

    try:
        return PairMaterial.from_dict(json.loads(paths.pair_material.read_text()))
    except FileNotFoundError:
        return None
    except ValueError:
        return None


def https_material(cfg: NodeConfig, material: PairMaterial | None) -> tuple[bytes, bytes]:
    """The HTTPS certificate and key generated for this node's addresses (a pair: the
    nodes' addresses and the VIP, built alike on both from the pair's key; the anycast
    address too with BGP)."""
    addresses = [*cfg.ha.node_list, cfg.ha.vip.address] if cfg.ha else list(cfg.ipaddr)
    if cfg.bgp:
        addresses.append(cfg.bgp.anycast_ip)
    addresses = [str(parse_ip(a, "address")) for a in addresses]
    if material is None:
        return tls.make_certificate(addresses)
    created = datetime.datetime.fromtimestamp(material.created, datetime.UTC)
    return tls.make_certificate(addresses, material.https_key.encode(), created)


def install(paths: NodePaths, cfg: NodeConfig, material: PairMaterial) -> None:
    """Make ``material`` this node's: pair.json first, then what is written from it."""
    from esc.ha import postgres

    paths.etc.mkdir(parents=True, exist_ok=True)
    write_json_atomic(paths.pair_material, material.to_dict(), mode=0o600)
    tls.write_peer_material(paths, material.peer_cert.encode(), material.peer_key.encode())
    write_atomic(paths.pgpass, f"*:*:*:{postgres.REPL_USER}:{material.derive('replication')}\n".encode(),
                 mode=0o600)
    postgres.chown_postgres(paths.pgpass)
    if not tls.is_supplied(paths):
        tls.write_material(paths, *https_material(cfg, material), supplied=False)


def pair_key(paths: NodePaths) -> str:
    """The pair key, or "" when this node has not paired."""
    material = load(paths)
    return material.pair_key if material else ""
