"""Lab fixtures: a fresh two-node pair per test, removed even when the test fails."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from esc.config import NodePaths
from esc.lab import lab as labmod
from esc.lab import net

REQUIRED = ("keepalived", "ip", "setpriv")


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "lab tests need root"
    for tool in REQUIRED:
        if not shutil.which(tool):
            return f"lab tests need {tool}"
    if not Path("/usr/lib/postgresql/15/bin/postgres").exists():
        return "lab tests need PostgreSQL 15"
    return None


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):  # type: ignore[no-untyped-def]
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


@dataclass
class Writer:
    proc: subprocess.Popen[bytes]
    out: Path

    def stop(self, timeout: float = 20) -> dict:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout)
        return json.loads(self.out.read_text())


class Lab:
    def __init__(self, state: dict, tmp: Path) -> None:
        self.state, self.tmp = state, tmp
        self.vip = state["vip"]
        self.url = labmod.vip_url(state)
        self.vip_host = labmod.vip_host(state)  # in a URL: an IPv6 VIP in brackets
        self.auth = (state["rest_user"], state["rest_password"])

    # roles
    def roles(self) -> dict[str, str]:
        return labmod.roles()

    def wait_roles(self, want: dict[str, str] | set[str], timeout: float = 60) -> dict[str, str]:
        if isinstance(want, set):
            return labmod.wait_roles(want, timeout)
        deadline = time.monotonic() + timeout
        seen: dict[str, str] = {}
        while time.monotonic() < deadline:
            seen = {n: labmod.node_status(n).get("role", "STOPPED") for n in want}
            if seen == want:
                return seen
            time.sleep(0.1)
        raise AssertionError(f"roles {seen} did not become {want} within {timeout}s")

    def active(self) -> str:
        node = labmod.active_node()
        assert node, f"no active node: {self.roles()}"
        return node

    @staticmethod
    def other(node: str) -> str:
        return "n2" if node == "n1" else "n1"

    def status(self, node: str) -> dict:
        return labmod.node_status(node)

    # commands
    def escadm(self, node: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        root = str(labmod.node_root(node))
        res = net.netns_exec(node, sys.executable, "-m", "esc.cli.escadm", "--root", root, *args,
                             check=False, timeout=120)
        if check and res.returncode != 0:
            raise AssertionError(f"escadm {' '.join(args)} on {node}: rc {res.returncode}\n"
                                 f"{res.stdout}\n{res.stderr}")
        return res

    def has_vip(self, node: str) -> bool:
        res = net.host_ip(node, "-j", "addr", "show", "dev", self.state.get("vip_dev", "eth0"), check=False)
        return any(a.get("local") == self.vip
                   for link in json.loads(res.stdout or "[]") for a in link.get("addr_info", []))

    def client_python(self, code: str, timeout: float = 60) -> str:
        res = labmod.client_run([sys.executable, "-c", code], timeout=timeout)
        assert res.returncode == 0, res.stderr
        return res.stdout

    def netconf_client(self, step: str, args: dict, timeout: float = 150) -> dict:
        """One step of tests/netconf_lab_client.py (ncclient) in the client namespace."""
        script = Path(__file__).resolve().parents[1] / "netconf_lab_client.py"
        res = labmod.client_run([sys.executable, str(script), step, json.dumps(args)], timeout=timeout)
        assert res.returncode == 0, f"{step}: {res.stdout}\n{res.stderr}"
        return json.loads(res.stdout.strip().splitlines()[-1])

    def port_open(self, address: str, port: int) -> bool:
        """Whether the client reaches ``address:port``."""
        code = (f"import socket\ntry:\n socket.create_connection(({address!r}, {port}), timeout=2).close()"
                "; print(1)\nexcept OSError:\n print(0)")
        return self.client_python(code).strip() == "1"

    def post(self, name: str) -> int:
        code = (f"import httpx;r=httpx.post({self.url + '/v0/deployments'!r},json={{'name':{name!r}}},"
                f"auth={self.auth!r},timeout=10);print(r.status_code)")
        return int(self.client_python(code).strip())

    def api(self, method: str, path: str, body: dict | None = None,
            headers: dict | None = None) -> tuple[int, dict]:
        """One REST call through the VIP from the client namespace."""
        code = (f"import httpx,json;r=httpx.request({method!r},{self.url + path!r},json={body!r},"
                f"headers={headers or {}!r},auth={self.auth!r},timeout=10);"
                "print(json.dumps([r.status_code, r.json() if r.content else None]))")
        status, out = json.loads(self.client_python(code))
        return status, out

    def https_get(self, path: str, cafile: Path) -> tuple[int, str]:
        """GET over HTTPS through the VIP, trusting only ``cafile``: (status, peer
        certificate SHA-256). A refused connection is retried for 10 s (a new active
        listens on HTTPS just after HTTP); a certificate error is not."""
        code = (f"import httpx,ssl,hashlib,time;ctx=ssl.create_default_context(cafile={str(cafile)!r});"
                f"c=httpx.Client(verify=ctx,auth={self.auth!r},timeout=10);"
                f"t=time.monotonic()\nwhile True:\n try: r=c.get('https://{self.vip_host}:8443{path}');break\n"
                " except httpx.ConnectError:\n  assert time.monotonic()-t<10;time.sleep(0.1)\n"
                "der=r.extensions['network_stream'].get_extra_info('ssl_object').getpeercert(True);"
                "print(r.status_code, hashlib.sha256(der).hexdigest())")
        status, digest = self.client_python(code).split()
        return int(status), digest

    def names_via_vip(self) -> set[str]:
        code = (f"import httpx,json;r=httpx.get({self.url + '/v0/deployments'!r},auth={self.auth!r},"
                "timeout=10);r.raise_for_status();print(json.dumps([d['name'] for d in r.json()]))")
        return set(json.loads(self.client_python(code)))

    def sql(self, node: str, query: str, dbname: str = "esc") -> str:
        """Run SQL on the node's own database over its unix socket (standby included);
        psql's unaligned output."""
        sock = NodePaths(labmod.node_root(node)).pg_socket_dir
        res = subprocess.run(["runuser", "-u", "postgres", "--", "psql", "-h", str(sock), "-U",
                              "postgres", "-d", dbname, "-v", "ON_ERROR_STOP=1", "-Atc", query],
                             capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stderr
        return res.stdout.strip()

    def names_in_db(self, node: str) -> set[str]:
        return set(self.sql(node, "SELECT name FROM deployments").split())

    def agent_log(self, node: str) -> str:
        return (NodePaths(labmod.node_root(node)).log / "agent.log").read_text(errors="replace")

    def start_writer(self, prefix: str, duration: float = 120, timeout: float = 0.5) -> Writer:
        out = self.tmp / f"writer-{prefix}.json"
        argv = labmod.exec_argv(labmod.CLIENT, [
            sys.executable, "-m", "esc.lab.writer", "--url", self.url, "--user", self.auth[0],
            f"--password={self.auth[1]}", "--duration", str(duration), "--prefix", prefix,
            "--out", str(out), "--timeout", str(timeout)])
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
        return Writer(proc, out)

    def power_cut_under_writes(self, prefix: str) -> tuple[str, str, Any, dict]:
        """A writer through the VIP, a power cut of the active, the standby ACTIVE and
        writing again: (old active, new active, the writer's outcome, its record), nothing
        lost."""
        from esc.lab.measure import analyse

        old = self.active()
        new = self.other(old)
        writer = self.start_writer(prefix)
        self.wait_acks(writer)
        killed_at = labmod.kill(old).at
        self.wait_roles({new: "ACTIVE"}, timeout=30)
        self.wait_acks(writer, n=1)
        time.sleep(1)
        record = writer.stop()
        out = analyse(record, self.names_via_vip(), killed_at, new_node=new)
        assert out.lost == [], f"acknowledged writes lost: {out.lost[:10]}"
        return old, new, out, record

    def wait_acks(self, writer: Writer, n: int = 20, timeout: float = 30) -> None:
        """Let the writer get some acknowledgements in (it reports on a signal)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if writer.proc.poll() is not None:
                raise AssertionError("writer exited early")
            names = self.names_via_vip()
            if sum(1 for x in names if x.startswith(writer.out.stem.removeprefix("writer-"))) >= n:
                return
            time.sleep(0.2)
        raise AssertionError("the writer got no acknowledgements")


def _lab_env(tmp: Path) -> None:
    os.environ["ESC_LAB_DIR"] = str(tmp / "lab")
    # never touches an operator's lab; ESC_TEST_NS_PREFIX lets two test runs coexist
    os.environ["ESC_LAB_NS_PREFIX"] = os.environ.get("ESC_TEST_NS_PREFIX", "esct-")


def _left_behind() -> list[str]:
    return [h for h in (*labmod.HOSTS, "esc-sw") if net.exists(h)]


def _lab_key(node: pytest.Item) -> tuple:
    """What a test asks of the lab (its markers): two tests asking the same may share it."""
    marker = node.get_closest_marker("lab_mode")
    mode = marker.args[0] if marker else "drbd"
    paths_marker = node.get_closest_marker("lab_paths")
    paths = paths_marker.args[0] if paths_marker else 1
    bgp = node.get_closest_marker("lab_bgp")
    if bgp:
        return (mode, "bgp", bgp.kwargs.get("md5", labmod.BGP_MD5))
    replication = node.get_closest_marker("lab_replication_path")
    witness = node.get_closest_marker("lab_witness")
    return (mode, paths, (witness.args[0] if witness.args else "builtin") if witness else None,
            replication.args[0] if replication else 0,
            node.get_closest_marker("lab_northbound_ipv6") is not None)


def _repaired(timeout: float = 60) -> bool:
    """The pair a passed test left behind, made whole again: cables in, stopped nodes
    started, one ACTIVE and one complete synchronous STANDBY. False when it will not be."""
    from esc.lab.chaos import wait_healthy

    try:
        for node in labmod.NODES:
            labmod.heal(node)
            if labmod.node_status(node).get("role", "STOPPED") == "STOPPED":
                labmod.start(node)
    except labmod.LabError:
        return False
    pair = wait_healthy(timeout)
    if pair is None:
        return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = labmod.node_status(pair.active)
        if st.get("db", {}).get("peer_complete") and (st.get("op_mode") or {}).get("mode") == "operation":
            return True
        time.sleep(0.1)
    return False


class _ModuleLab:
    """The lab a module's tests share: a test that passed leaves the pair to the next
    one asking the same of it (repaired: a bring-up is 10 to 16 s, a repair is
    nothing or a rejoin). A failed test, or one marked ``lab_fresh``, gets a new one."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.key: tuple | None = None

    def ready(self, key: tuple, fresh: bool) -> dict:
        if self.key == key and not fresh and _repaired():
            return labmod.load_state()
        labmod.down()
        self.key = None
        mode = key[0]
        if key[1] == "bgp":
            state = labmod.up(log=lambda *_: None, mode=mode, bgp=True, md5=key[2])
        else:
            state = labmod.up(log=lambda *_: None, mode=mode, paths=key[1], witness=key[2],
                              replication_path=key[3], northbound_ipv6=key[4])
        self.key = key
        return state


@pytest.fixture(scope="module")
def _module_lab() -> Iterator[_ModuleLab]:
    why = _missing()
    if why:
        pytest.skip(why)
    tmp = Path(tempfile.mkdtemp(prefix="esc-labtest-"))
    tmp.chmod(0o755)  # PostgreSQL runs as postgres and must reach its data dir
    _lab_env(tmp)
    labmod.down()
    try:
        yield _ModuleLab(tmp)
    finally:
        labmod.down()
        shutil.rmtree(tmp, ignore_errors=True)
        left = _left_behind()
        assert not left, f"namespaces left behind: {left}"


@pytest.fixture
def lab(request: pytest.FixtureRequest, _module_lab: _ModuleLab) -> Iterator[Lab]:
    key = _lab_key(request.node)
    if key[1] == "bgp" and not shutil.which("bird"):
        pytest.skip("BGP lab tests need BIRD 2 (bird2)")
    fresh = request.node.get_closest_marker("lab_fresh") is not None
    try:
        state = _module_lab.ready(key, fresh)
    except BaseException:
        labmod.down()
        _module_lab.key = None
        raise
    tmp = Path(tempfile.mkdtemp(prefix="test-", dir=_module_lab.tmp))
    tmp.chmod(0o755)
    try:
        yield Lab(state, tmp)
    finally:
        rep = getattr(request.node, "rep_call", None)
        if rep is None or not rep.passed:
            if rep is not None and rep.failed:
                labmod.dump_logs(lines=60)
            labmod.down()
            _module_lab.key = None
        shutil.rmtree(tmp, ignore_errors=True)


class SharedLab:
    """One lab for a whole module, reused from test to test while the pair is healthy
    and rebuilt when it is not or when a test needs another mode (the chaos tests)."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.mode: tuple[str, bool | str | None, int] | None = None

    def ready(self, mode: str, witness: bool | str | None = False, paths: int = 1) -> None:
        from esc.lab.chaos import wait_healthy

        if self.mode == (mode, witness, paths) and wait_healthy(30) is not None:
            return
        labmod.down()
        self.mode = None
        labmod.up(log=lambda *_: None, mode=mode, witness=witness, paths=paths)
        self.mode = (mode, witness, paths)

    def failed(self) -> None:
        """Logs to the test's output, and a fresh lab for the next test."""
        labmod.dump_logs(lines=60)
        labmod.down()
        self.mode = None


@pytest.fixture(scope="module")
def shared_lab() -> Iterator[SharedLab]:
    why = _missing()
    if why:
        pytest.skip(why)
    tmp = Path(tempfile.mkdtemp(prefix="esc-labtest-"))
    tmp.chmod(0o755)
    _lab_env(tmp)
    labmod.down()
    try:
        yield SharedLab(tmp)
    finally:
        labmod.down()
        shutil.rmtree(tmp, ignore_errors=True)
        left = _left_behind()
        assert not left, f"namespaces left behind: {left}"
