"""TLS material: the northbound HTTPS port (8443), and the peer API between the agents.

A client reaches the controller through the VIP, so after a failover it talks to
the other node: both nodes must present the *same* certificate, or every client
that pinned it breaks at the first failover. Three ways to get there:

- ``--tls_cert``/``--tls_key`` at install: the operator's own material (the same
  files given to both nodes), checked here (it parses, the key matches).
- HA without them: both nodes derive the same key and the same certificate, byte
  for byte, from the pair's shared secret (the one that already guards
  replication, so it adds no new trust): the key from the secret, the serial
  from the secret, fixed validity dates, RFC 6979 deterministic ECDSA. The
  certificate names the VIP and both nodes' addresses.
- STANDALONE without them: a random key.

The private key never leaves ``etc/esc/tls`` (0600); ``escadm status -v`` shows
the certificate's SHA-256 fingerprint so that an operator can check both nodes
present the same one.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import json
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from esc.config import ConfigError, NodePaths, write_atomic, write_json_atomic
from esc.secrets import derive

# Fixed, so that two installs at different times make the same certificate.
NOT_BEFORE = datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC)
NOT_AFTER = datetime.datetime(2036, 1, 1, tzinfo=datetime.UTC)
_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def _derived_key(secret: str) -> ec.EllipticCurvePrivateKey:
    # 512 bits reduced modulo the order: no measurable bias, never 0
    wide = derive(secret, "tls-key-1") + derive(secret, "tls-key-2")
    scalar = int(wide, 16) % (_P256_ORDER - 1) + 1
    return ec.derive_private_key(scalar, ec.SECP256R1())


def make_certificate(addresses: list[str], secret: str | None) -> tuple[bytes, bytes]:
    """(certificate PEM, key PEM) for a node reached at ``addresses``. Deterministic
    when ``secret`` is given (the pair's shared secret), random otherwise."""
    key = _derived_key(secret) if secret else ec.generate_private_key(ec.SECP256R1())
    serial = int(derive(secret, "tls-serial")[:38], 16) if secret else x509.random_serial_number()
    ips = sorted({ipaddress.ip_address(a) for a in [*addresses, "127.0.0.1", "::1"]},
                 key=lambda ip: (ip.version, int(ip)))
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ESC HA pair"),
                      x509.NameAttribute(NameOID.COMMON_NAME, "escmanager")])
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(serial)
        .not_valid_before(NOT_BEFORE)
        .not_valid_after(NOT_AFTER)
        .add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), *(x509.IPAddress(ip) for ip in ips)]), critical=False)
        # its own trust anchor: clients verify it with cafile=<this certificate>
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False, key_agreement=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False),
                       critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
        .sign(key, hashes.SHA256(), ecdsa_deterministic=True)
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
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


def make_peer_certificate(secret: str) -> tuple[bytes, bytes]:
    """(certificate PEM, key PEM) both agents of a pair present and trust on the peer API:
    one certificate, its own trust anchor, so that each side accepts exactly the holder
    of the pair's key. Derived from the pair's shared secret, like the HTTPS one, so that
    both nodes make the same without talking to each other."""
    key = _derived_key(derive(secret, "peer-tls"))
    public = key.public_key()
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ESC HA pair"),
                      x509.NameAttribute(NameOID.COMMON_NAME, "esc peer")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(int(derive(secret, "peer-tls-serial")[:38], 16))
        .not_valid_before(NOT_BEFORE)
        .not_valid_after(NOT_AFTER)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False, key_agreement=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False),
                       critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                              ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256(), ecdsa_deterministic=True)
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def ensure_peer_material(paths: NodePaths, secret: str) -> bool:
    """Write the peer API's certificate and key for ``secret`` unless they are there
    already; True when written (a new secret, or an install from before they existed)."""
    cert_pem, key_pem = make_peer_certificate(secret)
    try:
        if paths.peer_cert.read_bytes() == cert_pem and paths.peer_key.read_bytes() == key_pem:
            return False
    except OSError:
        pass
    paths.tls_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_atomic(paths.peer_key, key_pem, mode=0o600)
    write_atomic(paths.peer_cert, cert_pem)
    return True


def peer_server_options(paths: NodePaths) -> dict:
    """uvicorn's TLS options for the peer API: the pair's certificate, and a client must
    present it too."""
    return {"ssl_certfile": str(paths.peer_cert), "ssl_keyfile": str(paths.peer_key),
            "ssl_ca_certs": str(paths.peer_cert), "ssl_cert_reqs": ssl.CERT_REQUIRED}


def peer_client_context(paths: NodePaths) -> ssl.SSLContext:
    """The client side: present the pair's certificate, accept only a server presenting it.
    No host name check: the peer is reached at whatever address; the pinned certificate,
    whose key only the pair holds, is what authenticates it."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cafile=str(paths.peer_cert))
    ctx.load_cert_chain(str(paths.peer_cert), str(paths.peer_key))
    return ctx
