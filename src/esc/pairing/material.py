"""The pair's material: what both nodes of a pair hold alike, made at random on one node
and handed to the other when they pair (esc.pairing.service), never derived from a
password:

- ``pair_key``: 256 random bits. Every secret the nodes share is derived from it by
  purpose (replication password, peer token, the REST auth cache key).
- ``witness_key``: the witness tokens' (one per node), apart so that renewing the pair
  key (``escadm ha secret rotate``) does not make the witness refuse the nodes.
- the peer API's certificate and key (mutual TLS between the agents);
- the HTTPS key; each node builds the same certificate from it and the pair's
  addresses (esc.tls.make_certificate), so a client sees one certificate on both.

Kept in ``etc/esc/pair.json`` (0600); :func:`install` writes from it the files the other
processes read (the peer certificate, pgpass, the HTTPS certificate). While the pair
renews its material, ``pair.next.json`` (staged, trusted, not yet used) or
``pair.prev.json`` (replaced, still trusted) sits beside it.
"""

from __future__ import annotations

import datetime
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path

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
    witness_key: str

    @classmethod
    def generate(cls) -> PairMaterial:
        peer_cert, peer_key = tls.make_peer_certificate()
        now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
        return cls(id=secrets.token_hex(8), created=now.timestamp() - 300,
                   pair_key=secrets.token_hex(32), peer_cert=peer_cert.decode(),
                   peer_key=peer_key.decode(), https_key=tls.new_key_pem().decode(),
                   witness_key=secrets.token_hex(32))

    def rotated(self, https: bool = False) -> PairMaterial:
        """New material for the same pair: a new pair key and peer certificate; the
        HTTPS key (and so the certificate clients pinned) only with ``https``; the
        witness key kept (the witness's token file stays right)."""
        new = PairMaterial.generate()
        keep = {} if https else {"https_key": self.https_key, "created": self.created}
        return PairMaterial(**{**new.to_dict(), **keep, "witness_key": self.witness_key})

    def witness_token(self, node: str) -> str:
        return derive(self.witness_key, f"witness-token {node}")

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
                  "peer_key": str, "https_key": str, "witness_key": str}
        for name, kind in fields.items():
            if not isinstance(data.get(name), kind):
                raise ValueError(f"pair material: {name} missing or of the wrong type")
        for key in ("pair_key", "witness_key"):
            if len(data[key]) != 64 or not _is_hex(data[key]):
                raise ValueError(f"pair material: {key} is not 256 bits of hex")
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


def load(paths: NodePaths, which: str = "") -> PairMaterial | None:
    """This node's material (``which`` "next" or "prev": the staged or the replaced one,
    during a renewal); None when there is none (or the file is unreadable: the node
    pairs again rather than run on half of it)."""
    import json

    try:
        return PairMaterial.from_dict(json.loads(_file(paths, which).read_text()))
    except FileNotFoundError:
        return None
    except ValueError:
        return None


def _file(paths: NodePaths, which: str) -> Path:
    return paths.pair_material.with_name(f"pair.{which}.json") if which else paths.pair_material


def save(paths: NodePaths, which: str, material: PairMaterial | None) -> None:
    """Write (or with None remove) the staged ("next") or replaced ("prev") material."""
    path = _file(paths, which)
    if material is None:
        path.unlink(missing_ok=True)
    else:
        write_json_atomic(path, material.to_dict(), mode=0o600)


def trusted(paths: NodePaths) -> list[PairMaterial]:
    """Every material whose peer certificate this node accepts: its own, and during a
    renewal the staged or the replaced one too."""
    return [m for m in (load(paths), load(paths, "next"), load(paths, "prev")) if m is not None]


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
    tls.write_peer_trust(paths, [m.peer_cert.encode() for m in trusted(paths)])
    write_atomic(paths.pgpass, f"*:*:*:{postgres.REPL_USER}:{material.derive('replication')}\n".encode(),
                 mode=0o600)
    postgres.chown_postgres(paths.pgpass)
    if not tls.is_supplied(paths):
        tls.write_material(paths, *https_material(cfg, material), supplied=False)


def pair_key(paths: NodePaths) -> str:
    """The pair key, or "" when this node has not paired."""
    material = load(paths)
    return material.pair_key if material else ""
