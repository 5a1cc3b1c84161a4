"""The witness lease kept in etcd (esc.agent.etcd_lease), against a real etcd process:
one member on 127.0.0.1, random ports, killed by PID when the module ends."""

from __future__ import annotations

import datetime
import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from esc import clock, etcd
from esc.agent.etcd_lease import EtcdLeaseClient, keys
from esc.config import HaConfig

ETCD = shutil.which("etcd") or "/usr/bin/etcd"
pytestmark = pytest.mark.skipif(not os.path.exists(ETCD), reason="needs etcd (apt-get install etcd-server)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Etcd:
    url: str  # etcd://127.0.0.1:PORT (or etcd+https://)
    proc: subprocess.Popen[bytes]
    dir: Path

    @property
    def cluster(self) -> etcd.Cluster:
        return etcd.parse_url(self.url)


def start_etcd(tmp: Path, tls: dict[str, Path] | None = None, election_ms: int = 600) -> Etcd:
    """One member. ``tls``: server cert/key and the CA clients must be signed by; the
    election timeout sets etcd's TTL floor (1.5 x, rounded up to seconds)."""
    client, peer = free_port(), free_port()
    scheme = "https" if tls else "http"
    argv = [ETCD, "--name", "t", "--data-dir", str(tmp / "data"),
            "--listen-client-urls", f"{scheme}://127.0.0.1:{client}",
            "--advertise-client-urls", f"{scheme}://127.0.0.1:{client}",
            "--listen-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-cluster", f"t=http://127.0.0.1:{peer}",
            "--heartbeat-interval", "100", "--election-timeout", str(election_ms),
            "--logger", "zap", "--log-outputs", "stderr"]
    if tls:
        argv += ["--cert-file", str(tls["cert"]), "--key-file", str(tls["key"]),
                 "--trusted-ca-file", str(tls["ca"]), "--client-cert-auth"]
    log = open(tmp / "etcd.log", "wb")  # noqa: SIM115 - the child keeps it
    proc = subprocess.Popen(argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    log.close()
    deadline = time.monotonic() + 20
    # it listens before it has a leader, and answers only then
    while b"serving client traffic" not in (tmp / "etcd.log").read_bytes():
        assert proc.poll() is None, (tmp / "etcd.log").read_text()[-2000:]
        assert time.monotonic() < deadline, "etcd did not start"
        time.sleep(0.05)
    return Etcd(f"etcd{'+https' if tls else ''}://127.0.0.1:{client}", proc, tmp)


def stop_etcd(e: Etcd) -> None:
    if e.proc.poll() is None:
        e.proc.send_signal(signal.SIGKILL)
    e.proc.wait(10)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Etcd]:
    e = start_etcd(tmp_path_factory.mktemp("etcd"))
    try:
        yield e
    finally:
        stop_etcd(e)


def client(server: Etcd, pair: str, node: str, url: str | None = None, **kw) -> EtcdLeaseClient:  # type: ignore[no-untyped-def]
    c = EtcdLeaseClient(etcd.parse_url(url or server.url), pair, node, duration=1.0, margin=0.25, **kw)
    return c


def ask(c: EtcdLeaseClient, want: bool = True) -> bool:
    """One request, as the client's thread makes it every 0.2 s."""
    c.book.set_want(want, clock.now())
    return c._ask(want)


def value(server: Etcd, key: str) -> str | None:
    return etcd.values(etcd.Gateway(server.cluster, 2).txn([], [etcd.get(key)])).get(key)


@pytest.fixture
def pair() -> str:
    return f"10.0.0.1-10.0.0.2-{uuid.uuid4().hex[:8]}"  # each test its own keys


def test_acquire_renew_and_a_second_node_is_refused_while_held(server: Etcd, pair: str) -> None:
    a, b = client(server, pair, "a"), client(server, pair, "b")
    t0 = clock.now()
    assert ask(a)
    view = a.view()
    assert view.valid(clock.now()) and view.holder == "a"
    # counted from when it was sent, minus the margin
    assert t0 + 0.75 - 0.01 <= view.valid_until <= clock.now() + 0.75
    assert value(server, keys(pair)[0]) == "a"
    lease = a.lease
    for _ in range(12):  # 2.4 s: longer than the 1 s etcd lease, held throughout by renewals
        time.sleep(0.2)
        assert ask(a) and a.lease == lease
        assert not ask(b) and b.view().holder == "a"
    assert value(server, keys(pair)[0]) == "a"


def test_the_lease_goes_to_the_other_node_once_it_ran_out(server: Etcd, pair: str) -> None:
    a, b = client(server, pair, "a"), client(server, pair, "b")
    assert ask(a)
    stopped = clock.now()  # a dies: no renewal, no release
    while not ask(b):
        assert b.view().holder in ("a", None)
        assert clock.now() - stopped < 2.0, "the etcd lease outlived TTL + 0.5 s + a renewal"
        time.sleep(0.1)
    got = clock.now() - stopped
    assert got >= 0.75, "granted before the holder's own count ran out"
    assert b.view().holder == "b" and not ask(a) and a.view().holder == "b"


def test_release_lets_the_other_node_in_at_once(server: Etcd, pair: str) -> None:
    a, b = client(server, pair, "a"), client(server, pair, "b")
    assert ask(a)
    assert not ask(b, want=False)  # a look: not b's to release
    assert not ask(b)
    assert not ask(a, want=False) and a.lease is None  # released, and the etcd lease revoked
    assert value(server, keys(pair)[0]) is None
    assert ask(b)


def test_an_outdated_node_never_gets_the_lease_and_only_the_holder_marks(server: Etcd, pair: str) -> None:
    a, b = client(server, pair, "a"), client(server, pair, "b")
    assert ask(a)
    b.book.set_outdated("a")  # b is not the holder: its word is never written
    assert not ask(b) and value(server, keys(pair)[1]) is None
    a.book.set_outdated("b")
    assert ask(a) and a.view().outdated == "b" and value(server, keys(pair)[1]) == "b"
    assert not ask(a, want=False)  # released: the lease is free, but b is held outdated
    assert not ask(b) and b.view().outdated == "b" and b.view().holder is None
    assert value(server, keys(pair)[0]) is None
    assert ask(a)  # a takes it again and clears the mark: b is a complete standby again
    a.book.set_outdated(None)
    assert ask(a) and a.view().outdated is None and value(server, keys(pair)[1]) is None
    assert not ask(a, want=False)
    assert ask(b)


def test_force_clears_the_mark_only_while_nobody_holds_the_lease(server: Etcd, pair: str) -> None:
    a, b = client(server, pair, "a"), client(server, pair, "b")
    assert ask(a)
    a.book.set_outdated("b")
    assert ask(a)
    b.book.force(clock.now())
    assert not ask(b) and value(server, keys(pair)[1]) == "b"  # a holds it: no
    assert not ask(a, want=False)
    b2 = client(server, pair, "b")
    assert not ask(b2)  # without force: no
    assert ask(b) and b.view().outdated is None and value(server, keys(pair)[1]) is None


def test_a_forced_node_may_mark_its_lost_peer_at_once(server: Etcd, pair: str) -> None:
    """Forced active with its peer lost, the node asks with force *and* its word on the
    peer in one request: our mark is replaced by the peer's."""
    a, b = client(server, pair, "a"), client(server, pair, "b")
    assert ask(a)
    a.book.set_outdated("b")
    assert ask(a) and not ask(a, want=False)
    b.book.force(clock.now())
    b.book.set_outdated("a")
    assert ask(b) and b.view().outdated == "a" and value(server, keys(pair)[1]) == "a"


def test_a_stale_key_of_ours_is_put_on_our_new_lease(server: Etcd, pair: str) -> None:
    """An agent restarted while it held the key finds it on its old etcd lease: it puts
    it on its new one, so the key cannot vanish with the old lease while it counts on
    the new."""
    a = client(server, pair, "a")
    assert ask(a)
    old = a.lease
    a2 = client(server, pair, "a")
    assert ask(a2) and a2.lease != old
    gw = etcd.Gateway(server.cluster, 2)
    kvs = gw.call("/v3/kv/range", {"key": etcd.b64(keys(pair)[0])})["kvs"]
    assert kvs[0]["lease"] == a2.lease
    gw.revoke(old)  # the old process's lease ends: the key stays ours
    assert value(server, keys(pair)[0]) == "a"


def test_fail_over_to_the_next_member_when_the_first_is_dead(server: Etcd, pair: str) -> None:
    dead = free_port()  # nothing listens there
    url = f"etcd://127.0.0.1:{dead}," + server.url.split("://", 1)[1]
    a = client(server, pair, "a", url=url)
    assert ask(a) and a.endpoint == server.cluster.endpoints[0]
    assert ask(a) and a.view().error == ""


def test_every_member_dead_is_an_error_and_what_was_held_runs_out(server: Etcd, pair: str) -> None:
    a = client(server, pair, "a")
    assert ask(a)
    a.gateway.cluster = etcd.parse_url(f"etcd://127.0.0.1:{free_port()}")
    assert ask(a)  # still held: the last grant counts until it runs out
    assert "no etcd member answered" in a.view().error
    time.sleep(0.8)
    assert not ask(a) and not a.view().valid(clock.now())


def test_the_thread_renews_marks_and_releases(server: Etcd, pair: str) -> None:
    a = client(server, pair, "a", renew=0.05)
    a.start()
    try:
        a.set_want(True)
        a.set_outdated("b")
        deadline = clock.now() + 5
        while a.view().outdated != "b":
            assert clock.now() < deadline
            time.sleep(0.01)
        time.sleep(1.5)
        assert a.view().valid(clock.now())
    finally:
        a.stop()
    assert value(server, keys(pair)[0]) is None  # handed back on stop


# --- TLS, and etcd's TTL floor ---------------------------------------------------------


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _signed(ca_key, ca_name, cn: str, usage, ca: bool = False):  # type: ignore[no-untyped-def]
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    b = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(ca_name or _name(cn))
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - datetime.timedelta(minutes=5))
         .not_valid_after(now + datetime.timedelta(days=1))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if usage:
        b = b.add_extension(x509.ExtendedKeyUsage(usage), critical=False)
        b = b.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                            critical=False)
    cert = b.sign(ca_key or key, hashes.SHA256())
    return key, cert


def _write(path: Path, key, cert) -> tuple[Path, Path]:  # type: ignore[no-untyped-def]
    path.with_suffix(".crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    path.with_suffix(".key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return path.with_suffix(".crt"), path.with_suffix(".key")


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Etcd, dict[str, Path]]]:
    """etcd over TLS with a self-signed CA, asking clients for a certificate; with etcd's
    default election timeout (1 s), so its TTL floor is 2 s."""
    tmp = tmp_path_factory.mktemp("etcd-tls")
    ca_key, ca_cert = _signed(None, None, "test CA", None, ca=True)
    ca, _ = _write(tmp / "ca", ca_key, ca_cert)
    # etcd's JSON gateway dials the member's own gRPC port with the server certificate as
    # a client certificate: with --client-cert-auth it must allow client auth too
    both = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    cert, key = _write(tmp / "server", *_signed(ca_key, ca_cert.subject, "etcd", both))
    ccert, ckey = _write(tmp / "client", *_signed(ca_key, ca_cert.subject, "node",
                                                  [ExtendedKeyUsageOID.CLIENT_AUTH]))
    other_ca, _ = _write(tmp / "other-ca", *_signed(None, None, "another CA", None, ca=True))
    e = start_etcd(tmp, {"cert": cert, "key": key, "ca": ca}, election_ms=1000)
    try:
        yield e, {"ca": ca, "cert": ccert, "key": ckey, "other_ca": other_ca}
    finally:
        stop_etcd(e)


def test_tls_with_the_ca_and_a_client_certificate(tls_server, pair: str) -> None:  # type: ignore[no-untyped-def]
    server, files = tls_server
    a = client(server, pair, "a", ca=str(files["ca"]), cert=str(files["cert"]), key=str(files["key"]))
    assert ask(a) and a.view().holder == "a", a.view().error


def test_tls_refuses_an_unknown_server_and_a_client_without_certificate(tls_server, pair) -> None:  # type: ignore[no-untyped-def]
    server, files = tls_server
    wrong = client(server, pair, "a", ca=str(files["other_ca"]), cert=str(files["cert"]),
                   key=str(files["key"]))
    assert not ask(wrong) and "CERTIFICATE_VERIFY_FAILED" in wrong.view().error
    anonymous = client(server, pair, "a", ca=str(files["ca"]))
    assert not ask(anonymous) and anonymous.view().error


def test_a_ttl_above_the_lease_is_reported(tls_server, pair: str) -> None:  # type: ignore[no-untyped-def]
    """etcd's election timeout of 1 s puts its floor at 2 s: the lease still counts 1 s
    (never longer than asked), and the operator is told a failover waits 2 s."""
    server, files = tls_server
    a = client(server, pair, "a", ca=str(files["ca"]), cert=str(files["cert"]), key=str(files["key"]))
    sent = clock.now()
    assert ask(a) and a.ttl == 2
    assert a.view().valid_until <= sent + 1.0 and "2s lease for 1s" in a.warning
    assert a.view().error == ""  # a slower failover, not a lost witness (no escWitnessLost)


# --- configuration ----------------------------------------------------------------------


@pytest.mark.parametrize(("text", "message"), [
    ("etcd://", "HOST:PORT"),
    ("etcd://10.0.0.1:2379,,10.0.0.2:2379", "empty host"),
    ("etcd://10.0.0.1:99999", "out of range"),
    ("etcd://10.0.0.1:0", "port 0"),
    ("etcd://10.0.0.1:abc", "10.0.0.1:abc"),
    ("etcd://bad_host:2379", "neither an address"),
    ("etcd://10.0.0.1:2379/v3", "no path"),
    ("http://10.0.0.1:2379", "expected etcd://"),
    ("etcd://10.0.0.1:2379,10.0.0.1:2379", "twice"),
])
def test_bad_etcd_urls_get_one_line(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as e:
        etcd.parse_url(text)
    assert "\n" not in str(e.value)


def test_good_etcd_urls() -> None:
    c = etcd.parse_url("etcd://10.0.0.1:2379,etcd-2.example:2390,[fd00::3]")
    assert c.endpoints == ("http://10.0.0.1:2379", "http://etcd-2.example:2390", "http://[fd00::3]:2379")
    assert c.url == "etcd://10.0.0.1:2379,etcd-2.example:2390,[fd00::3]:2379"
    assert etcd.parse_url("etcd+https://10.0.0.1").endpoints == ("https://10.0.0.1:2379",)


def _ha(**kw) -> HaConfig:  # type: ignore[no-untyped-def]
    return HaConfig(node_list=["10.0.0.1", "10.0.0.2"], vip={"address": "10.0.0.50", "prefixlen": 24,
                                                            "interface": "eth0"},
                    vif="eth0", self_index=0, **kw)


def test_the_config_takes_an_etcd_witness_and_its_tls_files() -> None:
    ha = _ha(witness="etcd+https://10.0.0.9:2379", witness_ca="/etc/esc/ca.pem")
    assert ha.witness_is_etcd and ha.witness == "etcd+https://10.0.0.9:2379"
    assert not _ha(witness="10.0.0.9:8025").witness_is_etcd
    with pytest.raises(ValueError, match="--ha_witness_ca: for a witness on etcd over TLS"):
        _ha(witness="etcd://10.0.0.9:2379", witness_ca="/etc/esc/ca.pem")
    with pytest.raises(ValueError, match="go together"):
        _ha(witness="etcd+https://10.0.0.9:2379", witness_cert="/c.pem")


def test_a_restarted_etcd_still_holds_the_mark_and_the_holders_key(tmp_path: Path) -> None:
    """etcd keeps keys and leases on disk: after a restart of the (only) member the peer
    is still held outdated, and the holder renews the lease it had."""
    e = start_etcd(tmp_path)
    try:
        a, b = client(e, "p", "a"), client(e, "p", "b")
        assert ask(a)
        a.book.set_outdated("b")
        assert ask(a)
        stop_etcd(e)
        ask(a)
        assert "no etcd member answered" in a.view().error  # what was held runs out
        argv = e.proc.args
        log = open(tmp_path / "etcd.log", "ab")  # noqa: SIM115 - the child keeps it
        e.proc = subprocess.Popen(argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        log.close()
        deadline = clock.now() + 20
        while ask(b, want=False) or b.view().error:  # a look, until etcd answers again
            assert clock.now() < deadline, (tmp_path / "etcd.log").read_text()[-1000:]
            time.sleep(0.1)
        assert b.view().outdated == "b" and b.view().holder == "a"
        assert not ask(b)
        assert ask(a) and a.view().outdated == "b"
    finally:
        stop_etcd(e)


def test_status_lines_and_metrics_show_the_etcd_witness() -> None:
    from esc import health
    from esc.agent import metrics
    from esc.agent.history import Journal

    st = {"role": "ACTIVE", "witness": {
        "address": "etcd://10.0.0.31:2379,10.0.0.32:2379", "held": True, "holder": "esc_10_0_0_1",
        "last_answer_s": 0.1, "error": "", "outdated": "esc_10_0_0_2",
        "endpoint": "http://10.0.0.32:2379", "warning": "etcd gave a 2s lease for 1s"}}
    text = health.status_details(st)
    assert ("witness:     etcd://10.0.0.31:2379,10.0.0.32:2379: lease held here "
            "via http://10.0.0.32:2379") in text
    assert "etcd gave a 2s lease for 1s" in text and "holds esc_10_0_0_2 outdated" in text
    out = metrics.render(metrics.registry(lambda: st, Journal(None, "n1"), None)).decode()
    assert "esc_witness_lease_held 1.0" in out and "esc_witness_last_answer_seconds 0.1" in out
