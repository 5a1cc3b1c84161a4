"""The HTTPS material: one certificate for the pair (built alike from the pair's random
key), the operator's own checked."""

from __future__ import annotations

import ipaddress
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from esc import tls
from esc.config import ConfigError, HaConfig, NodeConfig, NodePaths, Vip
from esc.install import operator_tls
from esc.pairing.material import PairMaterial, https_material

N1, N2, VIP = "10.0.0.1", "10.0.0.2", "10.0.0.100"


def node(index: int) -> NodeConfig:
    ha = HaConfig(node_list=[N1, N2], vip=Vip(address=VIP, prefixlen=24, interface="eth0"), vif="eth0",
                  vri=50, self_index=index)
    return NodeConfig(name=f"n{index + 1}", ipaddr=[[N1, N2][index], "192.0.2.9"], ha=ha)


def sans(cert_pem: bytes) -> set[str]:
    cert = x509.load_pem_x509_certificate(cert_pem)
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {str(ip) for ip in ext.get_values_for_type(x509.IPAddress)}


def test_both_nodes_of_a_pair_make_the_same_certificate_and_key() -> None:
    """Byte for byte, whatever else each node has (its own extra addresses, install time):
    a client that trusts it keeps working after a failover. From the pair's random key:
    another pair's material makes another certificate."""
    material = PairMaterial.generate()
    one = https_material(node(0), material)
    two = https_material(node(1), PairMaterial.from_dict(material.to_dict()))
    assert one == two
    assert sans(one[0]) == {N1, N2, VIP, "127.0.0.1", "::1"}
    assert https_material(node(0), PairMaterial.generate())[1] != one[1]


def test_nothing_in_the_certificate_derives_from_a_secret() -> None:
    """The serial is a hash of what the certificate shows (its public key and
    addresses): the same public inputs give the same serial, whatever the pair key."""
    material = PairMaterial.generate()
    other = PairMaterial(**{**material.to_dict(), "pair_key": "ab" * 32, "id": "01"})
    assert https_material(node(0), material)[0] == https_material(node(0), other)[0]


def test_a_standalone_certificate_is_random() -> None:
    cfg = NodeConfig(name="s", ipaddr=["192.0.2.7"])
    a, b = https_material(cfg, None), https_material(cfg, None)
    assert a[1] != b[1] and "192.0.2.7" in sans(a[0])


def test_the_certificate_is_a_leaf_that_verifies_as_its_own_trust_anchor(tmp_path: Path) -> None:
    material = PairMaterial.generate()
    cert_pem, key_pem = https_material(node(0), material)
    (tmp_path / "c.pem").write_bytes(cert_pem)
    ctx = ssl.create_default_context(cafile=str(tmp_path / "c.pem"))
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    cert = x509.load_pem_x509_certificate(cert_pem)
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert cert.not_valid_before_utc.timestamp() == material.created
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == tls.VALIDITY
    key = serialization.load_pem_private_key(key_pem, None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and cert.public_key() == key.public_key()
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    (tmp_path / "k.pem").write_bytes(key_pem)
    server.load_cert_chain(tmp_path / "c.pem", tmp_path / "k.pem")
    import socket
    import threading

    a, b = socket.socketpair()
    t = threading.Thread(target=lambda: server.wrap_socket(a, server_side=True).close())
    t.start()
    with ctx.wrap_socket(b, server_hostname=VIP) as conn:  # the VIP is in the certificate
        assert conn.version() == "TLSv1.3"
    t.join()


def test_material_is_written_private_and_fingerprinted(tmp_path: Path) -> None:
    paths = NodePaths(tmp_path)
    assert tls.fingerprint(paths) is None
    tls.write_material(paths, *tls.make_certificate([N1]), supplied=False)
    assert paths.tls_key.stat().st_mode & 0o777 == 0o600
    assert paths.tls_dir.stat().st_mode & 0o777 == 0o700
    fp = tls.fingerprint(paths)
    assert fp is not None and len(fp.split(":")) == 32
    assert not tls.is_supplied(paths)


@pytest.fixture
def operator_files(tmp_path: Path) -> tuple[str, str]:
    cert_pem, key_pem = tls.make_certificate(["192.0.2.1"])
    (tmp_path / "op.crt").write_bytes(cert_pem)
    (tmp_path / "op.key").write_bytes(key_pem)
    return str(tmp_path / "op.crt"), str(tmp_path / "op.key")


def test_supplied_material_is_used_as_it_is(operator_files: tuple[str, str]) -> None:
    supplied = operator_tls(*operator_files)
    assert supplied is not None
    cert_pem, key_pem = supplied
    assert cert_pem == Path(operator_files[0]).read_bytes()
    assert key_pem == Path(operator_files[1]).read_bytes()


def test_supplied_material_errors(operator_files: tuple[str, str], tmp_path: Path) -> None:
    cert, key = operator_files
    other_key = tmp_path / "other.key"
    other_key.write_bytes(tls.make_certificate(["192.0.2.1"])[1])
    garbage = tmp_path / "garbage"
    garbage.write_text("not PEM at all\n")
    encrypted = tmp_path / "enc.key"
    k = serialization.load_pem_private_key(Path(key).read_bytes(), None)
    encrypted.write_bytes(k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.BestAvailableEncryption(b"pw")))
    cases = [
        ((cert, None), "give both --tls_cert and --tls_key"),
        ((None, key), "give both --tls_cert and --tls_key"),
        ((str(tmp_path / "missing.crt"), key), "cannot read .*missing.crt"),
        ((str(garbage), key), "not a PEM certificate"),
        ((cert, str(garbage)), "not an unencrypted PEM private key"),
        ((cert, str(encrypted)), "not an unencrypted PEM private key"),
        ((cert, str(other_key)), "does not match the certificate"),
    ]
    for (c, k_file), message in cases:
        with pytest.raises(ConfigError, match=message):
            operator_tls(c, k_file)


def test_ipv6_pair() -> None:
    ha = HaConfig(node_list=["2001:db8::1", "[2001:db8::2]"],
                  vip=Vip(address="2001:db8::100", prefixlen=64, interface="eth0"), vif="eth0", vri=5,
                  self_index=0)
    cert_pem, _ = https_material(NodeConfig(name="n", ha=ha), PairMaterial.generate())
    want = {str(ipaddress.ip_address(a)) for a in ["2001:db8::1", "2001:db8::2", "2001:db8::100"]}
    assert want <= sans(cert_pem)
