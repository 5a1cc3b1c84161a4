"""TLS material: the northbound HTTPS port (8443), and the peer API between the agents.

A client reaches the controller through the VIP, so after a failover it talks to
the other node: both nodes must present the *same* certificate, or every client
that pinned it breaks at the first failover. Three ways to get there:

- ``--tls_cert``/``--tls_key`` at install: the operator's own material (the same
  files given to both nodes), checked here (it parses, the key matches).
- HA without them: a random key, made by the node that makes the pair's material
  and handed to its peer when they pair (esc.pairing). Each node then builds the
  same certificate from that key and the pair's addresses, byte for byte: a serial
  hashed from the public key and the addresses, validity from the material's
  creation date, RFC 6979 deterministic ECDSA. Nothing in it derives from a secret.
- STANDALONE without them: a random key.

The generated certificate is a leaf (not a CA) valid for VALIDITY; a client pins it
as its own trust anchor (``cafile=`` the certificate). The private key never leaves
``etc/esc/tls`` (0600); ``escadm status -v`` shows the certificate's SHA-256
fingerprint so that an operator can check both nodes present the same one.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import json
import secrets
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from esc.config import ConfigError, NodePaths, write_atomic, write_json_atomic

# What browsers accept for a server certificate is shorter still (398 days) for public
# CAs; this one is pinned by the pair's own clients.
VALIDITY = datetime.timedelta(days=825)
PEER_VALIDITY = datetime.timedelta(days=3650)  # pinned by both agents, renewed with the pair's material


def new_key_pem() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def make_certificate(addresses: list[str], key_pem: bytes | None = None,
                     not_before: datetime.datetime | None = None) -> tuple[bytes, bytes]:
    """(certificate PEM, key PEM): a leaf for a node reached at ``addresses``. With
    ``key_pem`` and ``not_before`` given, the same inputs make the same certificate
    (both nodes of a pair build it); without, a random key valid from now."""
    key_pem = key_pem or new_key_pem()
    key = serialization.load_pem_private_key(key_pem, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    if not_before is None:
        not_before = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)
    not_before = not_before.replace(microsecond=0)
    ips = sorted({ipaddress.ip_address(a) for a in [*addresses, "127.0.0.1", "::1"]},
                 key=lambda ip: (ip.version, int(ip)))
    public = key.public_key()
    public_der = public.public_bytes(serialization.Encoding.DER,
                                     serialization.PublicFormat.SubjectPublicKeyInfo)
    # from public data only: what the certificate shows anyway
    serial = int.from_bytes(hashlib.sha256(
        public_der + " ".join(str(ip) for ip in ips).encode()).digest()[:19]) >> 1 or 1
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ESC HA pair"),
                      x509.NameAttribute(NameOID.COMMON_NAME, "escmanager")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_before + VALIDITY)
        .add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), *(x509.IPAddress(ip) for ip in ips)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=False, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False, key_agreement=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False),
                       critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256(), ecdsa_deterministic=True)
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def check_supplied(cert_file: str, key_file: str) -> tuple[bytes, bytes]:
    """The operator's certificate (chain) and key, read and checked: a clear
    ConfigError if either is unreadable, not PEM, or the key does not match."""
    try:
        cert_pem, key_pem = Path(cert_file).read_bytes(), Path(key_file).read_bytes()
    except OSError as e:
        raise ConfigError(f"--tls_cert/--tls_key: cannot read {e.filename}: {e.strerror}") from None
    try:
        certs = x509.load_pem_x509_certificates(cert_pem)
    except ValueError:
        raise ConfigError(f"--tls_cert {cert_file}: not a PEM certificate") from None
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise ConfigError(f"--tls_key {key_file}: not an unencrypted PEM private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise ConfigError(f"--tls_key {key_file}: an RSA or EC key is needed")
    if certs[0].public_key() != key.public_key():
        raise ConfigError(f"--tls_key {key_file} does not match the certificate in {cert_file}")
    return cert_pem, key_pem


def write_material(paths: NodePaths, cert_pem: bytes, key_pem: bytes, supplied: bool) -> None:
    """``tls.json`` says where the material came
    from (``ha set`` regenerates generated material for a new VIP, never the
    operator's). Key first, 0600 from the start."""
    paths.tls_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_atomic(paths.tls_key, key_pem, mode=0o600)
    write_atomic(paths.tls_cert, cert_pem)
    write_json_atomic(paths.tls_dir / "tls.json", {"supplied": supplied})


def is_supplied(paths: NodePaths) -> bool:
    try:
        return bool(json.loads((paths.tls_dir / "tls.json").read_text()).get("supplied"))
    except (OSError, ValueError):
        return False


def fingerprint(paths: NodePaths) -> str | None:
    """SHA-256 of the (first) certificate's DER, as ``AB:CD:...``; None without one."""
    try:
        cert = x509.load_pem_x509_certificates(paths.tls_cert.read_bytes())[0]
    except (OSError, ValueError):
        return None
    digest = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest().upper()
    return ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))


# --- the peer API: mutual TLS between the two agents ----------------------------------------


def make_peer_certificate() -> tuple[bytes, bytes]:
    """(certificate PEM, key PEM) both agents of a pair present and trust on the peer API:
    one certificate, its own trust anchor, so that each side accepts exactly the holder
    of the pair's key. Random: made with the pair's material and handed to the peer when
    the nodes pair (esc.pairing)."""
    key = ec.generate_private_key(ec.SECP256R1())
    public = key.public_key()
    # a name of its own: while the pair renews its material both certificates are
    # trusted, and a verifier looks a certificate's issuer up by name
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ESC HA pair"),
                      x509.NameAttribute(NameOID.COMMON_NAME, f"esc peer {secrets.token_hex(6)}")])
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + PEER_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False, key_agreement=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False),
                       critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                              ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def write_peer_material(paths: NodePaths, cert_pem: bytes, key_pem: bytes) -> bool:
    """Write the peer API's certificate and key unless they are there already; True when
    written."""
    try:
        if paths.peer_cert.read_bytes() == cert_pem and paths.peer_key.read_bytes() == key_pem:
            return False
    except OSError:
        pass
    paths.tls_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_atomic(paths.peer_key, key_pem, mode=0o600)
    write_atomic(paths.peer_cert, cert_pem)
    return True


def write_peer_trust(paths: NodePaths, certs: list[bytes]) -> None:
    """The bundle of peer certificates accepted (each side checks the other against it)."""
    write_atomic(paths.peer_trust, b"".join(certs))


def _trust_file(paths: NodePaths) -> Path:
    return paths.peer_trust if paths.peer_trust.exists() else paths.peer_cert


def peer_server_options(paths: NodePaths) -> dict:
    """uvicorn's TLS options for the peer API: the pair's certificate, and a client must
    present one the node trusts."""
    return {"ssl_certfile": str(paths.peer_cert), "ssl_keyfile": str(paths.peer_key),
            "ssl_ca_certs": str(_trust_file(paths)), "ssl_cert_reqs": ssl.CERT_REQUIRED}


def peer_server_context(paths: NodePaths) -> ssl.SSLContext:
    """The server side as a context of its own, for swapping in a running server (its
    handshake callback hands each new connection the current one)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cafile=str(_trust_file(paths)))
    ctx.load_cert_chain(str(paths.peer_cert), str(paths.peer_key))
    return ctx


def peer_client_context(paths: NodePaths) -> ssl.SSLContext:
    """The client side: present the pair's certificate, accept only a server presenting
    one the node trusts. No host name check: the peer is reached at whatever address;
    the pinned certificate, whose key only the pair holds, is what authenticates it."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cafile=str(_trust_file(paths)))
    ctx.load_cert_chain(str(paths.peer_cert), str(paths.peer_key))
    return ctx
