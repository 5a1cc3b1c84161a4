"""What the NETCONF service checks logins with and presents to clients: the
``--user_confd_pass`` user (its scrypt hash, from esc.json) and the SSH host key.

The host key is the pair's: an Ed25519 key derived from the pair's kept key (the one the
ETSI password and the witness tokens come from, esc.etsi.auth.kept_key), so both nodes
present the same key and a client sees no change after a failover, nor after
``escadm ha secret rotate``; a standalone node derives it from its own kept key, made
once at install. The service runs unprivileged and never reads the pair's material:
the agent hands it ``confd-auth.json`` in its own directory (esc.privileges), as it
does the ETSI service's."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from esc.config import NodeConfig, NodePaths
from esc.secrets import derive

FILE = "confd-auth.json"


@dataclass(frozen=True)
class ConfdAuth:
    user: str
    password_hash: str
    host_key: bytes  # OpenSSH PEM

    def to_json(self) -> bytes:
        return json.dumps({"user": self.user, "password_hash": self.password_hash,
                           "host_key": self.host_key.decode()}).encode()


def host_key(kept_key: str) -> bytes:
    """The pair's SSH host key (OpenSSH private key format), the same on both nodes."""
    seed = bytes.fromhex(derive(kept_key, "netconf ssh host key"))
    key = Ed25519PrivateKey.from_private_bytes(seed)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                             serialization.NoEncryption())


def fingerprint(pem: bytes) -> str:
    """``SHA256:...``, as ssh-keygen -l and a client's known_hosts prompt show it."""
    import asyncssh

    return asyncssh.import_private_key(pem).get_fingerprint("sha256")


def auth_file(paths: NodePaths) -> Path:
    return paths.manager_dir / FILE


def make(paths: NodePaths, cfg: NodeConfig) -> ConfdAuth | None:
    """From the node's configuration and kept key (as root); None without a confd user."""
    from esc.etsi.auth import kept_key

    if cfg.confd_user is None:
        return None
    return ConfdAuth(cfg.confd_user.name, cfg.confd_user.password_hash, host_key(kept_key(paths)))


def load(paths: NodePaths, cfg: NodeConfig) -> ConfdAuth | None:
    """The agent's copy when there is one (the service runs unprivileged), else made here."""
    try:
        data = json.loads(auth_file(paths).read_text())
        return ConfdAuth(str(data["user"]), str(data["password_hash"]), str(data["host_key"]).encode())
    except (OSError, ValueError, KeyError, TypeError):
        return make(paths, cfg)
