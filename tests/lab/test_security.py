"""Attacks on the pair from its networks: each must fail. (Lab: one network carries
the northbound, VRRP and replication, so the client namespace stands for an attacker on
the HA network.)"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from esc.config import NodePaths
from esc.lab import lab as labmod
from esc.lab import net

pytestmark = [pytest.mark.lab, pytest.mark.security]


def _py(host: str, code: str) -> str:
    res = net.netns_exec(host, sys.executable, "-c", code, check=False, timeout=60)
    assert res.returncode == 0, res.stderr
    return res.stdout.strip()


def test_the_peer_api_answers_only_the_holder_of_the_pairs_certificate(lab):
    """Plain HTTP (as the token used to travel) and TLS without the pair's certificate
    both get nothing; the agents still hear each other (the pair is up)."""
    node = labmod.node_ip(lab.active())
    code = f"""
import http.client, socket, ssl
out = []
c = http.client.HTTPConnection({node!r}, 8021, timeout=5)
try:
    c.request("GET", "/v1/peer", headers={{"X-ESC-Peer-Token": "guess"}})
    out.append("http:%d" % c.getresponse().status)
except Exception as e:
    out.append("http:refused")
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
c = http.client.HTTPSConnection({node!r}, 8021, timeout=5, context=ctx)
try:
    c.request("GET", "/v1/peer", headers={{"X-ESC-Peer-Token": "guess"}})
    out.append("tls:%d" % c.getresponse().status)
except Exception as e:
    out.append("tls:refused")
print(" ".join(out))
"""
    assert _py(labmod.CLIENT, code) == "http:refused tls:refused"
    assert lab.status(lab.active())["peer"]["reachable"]


def test_the_database_is_not_reachable_through_the_vip_and_not_in_clear(lab):
    """PostgreSQL listens on the node's HA address only; from there it takes only the
    replication role, over TLS with the pair's certificate."""
    code = f"""
import socket
try:
    socket.create_connection(({lab.vip!r}, 5432), timeout=3).close()
    print("open")
except OSError:
    print("closed")
"""
    assert _py(labmod.CLIENT, code) == "closed"
    active = lab.active()
    standby = lab.other(active)
    # from the standby's own address, with the right password: in clear, or over TLS
    # without the pair's certificate, refused
    password = (labmod.node_root(standby) / "etc/esc/pgpass").read_text().strip().rsplit(":", 1)[1]
    host = labmod.node_ip(active)
    code = f"""
import psycopg
for mode in ("sslmode=disable", "sslmode=require"):
    try:
        psycopg.connect("host={host} port=5432 dbname=postgres user=replicator "
                        "password={password} connect_timeout=5 " + mode).close()
        print(mode, "accepted")
    except psycopg.OperationalError as e:
        print(mode, "refused")
"""
    assert _py(standby, code).splitlines() == ["sslmode=disable refused", "sslmode=require refused"]


def test_the_replication_role_is_not_a_superuser(lab):
    active = lab.active()
    assert lab.sql(active, "SELECT rolsuper, rolreplication FROM pg_roles "
                           "WHERE rolname = 'replicator'", dbname="postgres") == "f|t"


def test_the_health_api_survives_300_half_open_connections(lab):
    """From the client network, 300 connections to the health port through the VIP that
    never finish their request: the agent holds no thread for them, a client at another
    address is answered, and they cost the log next to nothing."""
    active = lab.active()
    root = labmod.node_root(active)
    agent_pid = int(NodePaths(root).agent_pid.read_text())

    def threads() -> int:
        status = Path(f"/proc/{agent_pid}/status").read_text()
        return int(next(line for line in status.splitlines() if line.startswith("Threads:")).split()[1])

    agent_log = NodePaths(root).log / "agent.log"
    log_before = agent_log.stat().st_size
    before = threads()
    prefix = lab.vip.rsplit(".", 1)[0]
    other = f"{prefix}.201"
    net.host_ip(labmod.CLIENT, "addr", "add", f"{other}/24", "dev", "eth0", check=False)
    code = f"""
import json, socket, time, httpx
socks = []
for _ in range(300):
    s = socket.socket(); s.settimeout(3)
    try:
        s.connect(({lab.vip!r}, 8060)); s.sendall(b"GET /esc/health HTTP/1.1\\r\\nHost: x\\r\\n")
    except OSError:
        pass
    socks.append(s)
time.sleep(1.0)
c = httpx.Client(transport=httpx.HTTPTransport(local_address={other!r}), timeout=5)
r = c.get("http://{lab.vip}:8060/esc/health")
print(json.dumps([r.status_code, r.json()["status_code"]]))
import sys; sys.stdout.flush()
time.sleep(0.5)
"""
    try:
        res = net.netns_exec(labmod.CLIENT, sys.executable, "-c", code, check=False, timeout=60)
        assert res.returncode == 0, res.stderr
        assert res.stdout.strip() == "[200, 2000]"
        assert threads() - before < 10
    finally:
        net.host_ip(labmod.CLIENT, "addr", "del", f"{other}/24", "dev", "eth0", check=False)
    assert agent_log.stat().st_size - log_before < 20_000


def test_a_node_reinstalled_with_a_join_token_pairs_and_guesses_get_nothing(lab):
    """The standby is reinstalled with no password at all, only a one-time token from
    the active: it pairs (SPAKE2), takes the pair's random material and rejoins. The
    token then pairs no more, and a guessed password from the HA network is refused."""
    active = lab.active()
    standby = lab.other(active)
    token = lab.escadm(active, "ha", "join-token").stdout.strip()
    token_file = lab.tmp / "join-token"
    token_file.write_text(token + "\n")
    lab.escadm(standby, "stop")
    args = labmod.install_args(standby, "drbd", "unused", lab.state["rest_password"])
    i = args.index("--user_pass")
    del args[i:i + 2]
    lab.escadm(standby, *args, "--ha_join_token_file", str(token_file), "--force")
    labmod.start(standby)
    lab.wait_roles({standby: "STANDBY", active: "ACTIVE"}, timeout=90)
    roots = {n: NodePaths(labmod.node_root(n)) for n in (active, standby)}
    for file in ("pair_material", "peer_cert", "tls_cert", "pgpass"):
        a, b = (getattr(roots[n], file).read_bytes() for n in (active, standby))
        assert a == b, f"{file} differs between the nodes"
    assert "join_token" not in roots[standby].secrets.read_text()  # used, forgotten
    assert lab.post("after-pairing") == 201
    assert "after-pairing" in lab.names_in_db(standby)

    node = labmod.node_ip(active)
    nodes = [labmod.node_ip(n) for n in labmod.NODES]
    code = f"""
from esc.pairing import credentials, service
token_id, secret = credentials.parse_join_token({token!r})
for credential in (credentials.ClientCredential("token", token_id, credentials.stretch(secret)),
                   credentials.ClientCredential("password", "", credentials.stretch("admin:guess"))):
    try:
        service.pair_with({node!r}, 8022, credential, {nodes!r}, "attacker", None)
        print("paired")
    except service.PairingRefused as e:
        print("refused:", e)
"""
    out = _py(labmod.CLIENT, code).splitlines()
    assert out[0].startswith("refused:") and "no such join token" in out[0]
    assert out[1].startswith("refused:") and "wrong credential" in out[1]
    assert "pairing attempt from" in lab.agent_log(active)


def test_the_controller_runs_unprivileged_and_cannot_reach_the_pairs_secrets(lab):
    """escmanager (HTTP, XML, callbacks: what the northbound talks to) runs as the
    service user. Code running as it reads none of the pair's secrets, and reaches the
    database as the esc role only, never as a superuser; the VMs are made by the root
    helper on its behalf (the deploy tests)."""
    import pwd

    active = lab.active()
    pid = lab.status(active)["services"]["escmanager"]["pid"]
    uid = int(next(line.split()[1] for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                   if line.startswith("Uid:")))
    assert uid == pwd.getpwnam("esc").pw_uid
    paths = NodePaths(labmod.node_root(active))
    secret_files = [paths.pair_material, paths.secrets, paths.tls_key, paths.peer_key, paths.pgpass]
    code = f"""
import psycopg
out = []
for f in {[str(f) for f in secret_files]!r}:
    try:
        open(f).read()
        out.append("read " + f)
    except PermissionError:
        pass
for user in ("postgres", "replicator", "esc"):
    try:
        psycopg.connect(host={str(paths.pg_socket_dir)!r}, dbname="esc", user=user, connect_timeout=3).close()
        out.append("db " + user)
    except psycopg.OperationalError:
        pass
print(" ".join(out))
"""
    res = net.netns_exec(active, "setpriv", "--reuid=esc", "--regid=esc", "--init-groups", sys.executable,
                         "-c", code, check=False, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "db esc"


def test_the_pair_renews_its_material_with_no_outage(lab):
    """`escadm ha secret rotate` on the standby: a new pair key, peer certificate and
    replication password on both nodes while a client writes through the VIP; no write
    lost, no role change, replication stays synchronous, and the replaced peer
    certificate opens nothing any more. The standby then reconnects with the new
    password; `--https` renews the HTTPS certificate, which the active serves at once."""
    from esc.lab.measure import analyse

    active = lab.active()
    standby = lab.other(active)
    roots = {n: NodePaths(labmod.node_root(n)) for n in (active, standby)}
    before = {f: roots[active].__getattribute__(f).read_bytes()
              for f in ("pair_material", "peer_cert", "peer_key", "pgpass", "tls_cert")}
    old_cert, old_key = lab.tmp / "old-peer.crt", lab.tmp / "old-peer.key"
    old_cert.write_bytes(before["peer_cert"])
    old_key.write_bytes(before["peer_key"])
    writer = lab.start_writer("rotate")
    lab.wait_acks(writer)
    out = lab.escadm(standby, "ha", "secret", "rotate").stdout
    assert "pair material renewed" in out
    lab.wait_acks(writer, n=5)
    record = writer.stop()
    result = analyse(record, lab.names_via_vip())
    assert result.lost == [] and result.nodes == [active], result
    assert result.max_gap < 1.0, f"writes paused {result.max_gap:.2f}s"
    assert lab.roles() == {active: "ACTIVE", standby: "STANDBY"}
    for f in ("pair_material", "peer_cert", "pgpass"):
        now = [roots[n].__getattribute__(f).read_bytes() for n in (active, standby)]
        assert now[0] == now[1] and now[0] != before[f], f
    assert roots[active].tls_cert.read_bytes() == before["tls_cert"]  # kept without --https
    assert not any((roots[n].etc / name).exists() for n in (active, standby)
                   for name in ("pair.next.json", "pair.prev.json"))
    assert lab.status(active)["db"]["peer_complete"]
    code = f"""
import ssl, socket
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
ctx.load_cert_chain({str(old_cert)!r}, {str(old_key)!r})
try:
    with ctx.wrap_socket(socket.create_connection(({labmod.node_ip(active)!r}, 8021), timeout=5)) as s:
        s.sendall(b"GET /v1/peer HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n")
        print("answered" if s.recv(100) else "refused")
except (ssl.SSLError, OSError):
    print("refused")
"""
    assert _py(labmod.CLIENT, code) == "refused"
    # a new replication connection uses the new password
    labmod.kill(standby)
    labmod.start(standby)
    lab.wait_roles({active: "ACTIVE", standby: "STANDBY"}, timeout=60)
    assert lab.post("after-rotate") == 201
    assert "after-rotate" in lab.names_in_db(standby)
    # the HTTPS certificate too: the active serves the new one without a restart
    out = lab.escadm(active, "ha", "secret", "rotate", "--https").stdout
    assert "HTTPS certificate renewed" in out
    certs = [roots[n].tls_cert.read_bytes() for n in (active, standby)]
    assert certs[0] == certs[1] != before["tls_cert"]
    cafile = lab.tmp / "new-https.crt"
    cafile.write_bytes(certs[0])
    status, _ = lab.https_get("/v0/deployments", cafile)
    assert status == 200
