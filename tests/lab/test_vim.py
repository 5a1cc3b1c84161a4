"""The local VIM driver and the monitor on a real network of namespaces.

A bridge and one "controller" namespace (``h6-ctl``), no HA pair: VMs are
created from the controller namespace, answer ping from it, outlive the process
that created them (the controller's power cut), and a monitor run in the
controller namespace detects a killed VM, reboots it through the driver and sees
it alive again. Everything, VMs included, is removed even when a test fails.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from esc.lab import net
from esc.vim.driver import Network, VmSpec
from esc.vim.local import LocalDriver, Plumbing, cleanup_all

pytestmark = pytest.mark.lab

PREFIX = "h6-"
CTL = "ctl"
SUBNET = "10.66.0"


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "needs root"
    for tool in ("ip", "ping", "setsid"):
        if not shutil.which(tool):
            return f"needs {tool}"
    return None


def _ours() -> list[str]:
    return [n for n in net.namespaces() if n.startswith(PREFIX)]


def _teardown(state_dir: Path) -> None:
    cleanup_all(PREFIX, state_dir)
    net.destroy([CTL])


@dataclass
class VimLab:
    state_dir: Path
    tmp: Path
    network: Network
    driver: LocalDriver
    procs: list[subprocess.Popen[str]] = field(default_factory=list)

    def spec(self, name: str, image: str, host: int) -> VmSpec:
        return VmSpec(name, image, f"{SUBNET}.{host}/24", self.network)

    def ping(self, address: str, timeout: float = 1.0) -> bool:
        return net.netns_exec(CTL, "ping", "-c1", "-n", "-q", "-W", f"{timeout:g}", address,
                              check=False, timeout=10).returncode == 0

    def http_status(self, address: str) -> int:
        code = (f"import urllib.request;print(urllib.request.urlopen('http://{address}/',timeout=2).status)")
        res = net.netns_exec(CTL, sys.executable, "-c", code, check=False, timeout=20)
        return int(res.stdout.strip()) if res.returncode == 0 else 0

    def run_in_ctl(self, argv: list[str], stderr: Path) -> subprocess.Popen[str]:
        """A process in the controller namespace, its own session (so a test can kill
        it and all it made there at once)."""
        with open(stderr, "w") as err:
            proc = subprocess.Popen(["ip", "netns", "exec", net.ns(CTL), *argv], stdin=subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=err, text=True, start_new_session=True)
        self.procs.append(proc)
        return proc


class Lines:
    """JSON lines of a process's stdout, read by a thread; ``expect`` waits for one."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.q: queue.Queue[dict | None] = queue.Queue()
        self.seen: list[dict] = []
        threading.Thread(target=self._read, args=(proc,), daemon=True).start()

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            try:
                self.q.put(json.loads(line))
            except ValueError:
                self.q.put({"type": "raw", "line": line.rstrip()})
        self.q.put(None)

    def expect(self, pred: Callable[[dict], bool], timeout: float, what: str) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                item = self.q.get(timeout=max(0.0, left))
            except queue.Empty:
                item = None
                left = -1
            if item is None:
                raise AssertionError(f"no {what} within {timeout}s (process ended: {left > 0}); "
                                     f"seen: {self.seen}")
            self.seen.append(item)
            if pred(item):
                return item


def is_event(kind: str, vm: str | None = None) -> Callable[[dict], bool]:
    return lambda d: d.get("type") == "event" and d.get("event") == kind and d.get("vm") == vm


@pytest.fixture
def vimlab(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
           ) -> Iterator[VimLab]:
    why = _missing()
    if why:
        pytest.skip(why)
    monkeypatch.setenv("ESC_LAB_NS_PREFIX", PREFIX)
    state_dir = tmp_path / "vim"
    lab = None
    _teardown(state_dir)  # what an interrupted run may have left
    try:
        net.create([net.Host(CTL, f"{SUBNET}.10/24", "fd66::10/64")])
        lab = VimLab(state_dir, tmp_path, Network(net.switch(), net.BRIDGE), LocalDriver(state_dir, PREFIX))
        yield lab
    finally:
        for proc in lab.procs if lab else []:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        rep = getattr(request.node, "rep_call", None)  # set by tests/lab/conftest.py
        if rep is None or rep.failed:
            for f in sorted(tmp_path.glob("*.err")) + sorted((state_dir / "run").glob("*.log")):
                text = f.read_text(errors="replace").strip()
                if text:
                    print(f"===== {f.name} =====\n{text[-3000:]}", file=sys.stderr)
        _teardown(state_dir)
        left = _ours()
        assert not left, f"namespaces left behind: {left}"
        vms = [p for p in Plumbing().labelled() if p.label.startswith(PREFIX)]
        assert not vms, f"VM processes left behind: {vms}"


def test_vms_outlive_their_creator_and_the_monitor_reboots_a_dead_one(vimlab: VimLab) -> None:
    t0 = time.monotonic()
    # 1. the controller creates two VMs, from its namespace
    code = ("import json,sys,time;from pathlib import Path;from esc.vim.local import LocalDriver;"
            "from esc.vim.driver import VmSpec,Network;"
            f"d=LocalDriver(Path({str(vimlab.state_dir)!r}),{PREFIX!r});"
            f"n=Network({vimlab.network.namespace!r},{vimlab.network.bridge!r});"
            f"a=d.create_vm(VmSpec('a','cirros','{SUBNET}.21/24',n));"
            f"b=d.create_vm(VmSpec('b','web','{SUBNET}.22/24',n));"
            "print(json.dumps([a.to_dict(),b.to_dict()]),flush=True);time.sleep(300)")
    creator = vimlab.run_in_ctl([sys.executable, "-c", code], vimlab.tmp / "creator.err")
    made = Lines(creator).expect(lambda d: isinstance(d, list), 30, "created VMs")
    pids = {vm["name"]: vm["pid"] for vm in made}
    assert all(vm["state"] == "running" for vm in made), made
    for addr in (f"{SUBNET}.21", f"{SUBNET}.22"):
        assert vimlab.ping(addr), f"{addr} does not answer"
    assert vimlab.http_status(f"{SUBNET}.22") == 200
    assert vimlab.http_status(f"{SUBNET}.21") == 0  # cirros: ping only

    # 2. power cut of the controller: every process of its namespace dies at once
    killed = net.kill_all(CTL)
    assert creator.pid in killed or creator.wait(5) is not None
    creator.wait(10)
    assert {v.name: (v.state, v.pid) for v in vimlab.driver.list()} == \
        {"a": ("running", pids["a"]), "b": ("running", pids["b"])}
    for addr in (f"{SUBNET}.21", f"{SUBNET}.22"):
        assert vimlab.ping(addr), f"{addr} died with its creator"

    # 3. a monitor in the controller namespace (the new active, rebuilt from the records)
    mon = vimlab.run_in_ctl([sys.executable, "-m", "esc.monitor", "--state-dir", str(vimlab.state_dir),
                             "--ns-prefix", PREFIX, "--deployment", "dep1", "--interval", "0.2",
                             "--timeout", "0.3", "--rise", "2", "--down-after", "2"],
                            vimlab.tmp / "monitor.err")
    lines = Lines(mon)
    lines.expect(lambda d: d.get("type") == "ready", 30, "monitor ready")
    lines.expect(is_event("SERVICE_ALIVE"), 10, "SERVICE_ALIVE")
    assert {d.get("vm") for d in lines.seen if d.get("event") == "VM_ALIVE"} == {"a", "b"}

    # 4. VM a's process dies: down, rebooted through the driver, alive again
    t_kill = time.monotonic()
    assert vimlab.driver.kill_vm_process("a") == [pids["a"]]
    assert vimlab.driver.get("a").state == "stopped"  # type: ignore[union-attr]
    assert not vimlab.ping(f"{SUBNET}.21", 0.3)
    lines.expect(is_event("VM_DOWN", "a"), 10, "VM_DOWN a")
    t_down = time.monotonic()
    act = lines.expect(lambda d: d.get("type") == "action", 5, "reboot action")
    assert (act["action"], act["vm"], act["attempt"]) == ("reboot", "a", 1)
    done = lines.expect(lambda d: d.get("type") == "action_done", 15, "reboot done")
    assert done["ok"] and done["pid"] not in (None, pids["a"]), done
    lines.expect(is_event("VM_ALIVE", "a"), 10, "VM_ALIVE a")
    t_alive = time.monotonic()
    info = vimlab.driver.get("a")
    assert info is not None and (info.state, info.pid, info.address) == ("running", done["pid"],
                                                                        f"{SUBNET}.21/24")
    assert vimlab.ping(f"{SUBNET}.21")
    after_kill = lines.seen[lines.seen.index(next(d for d in lines.seen if is_event("VM_DOWN", "a")(d))):]
    assert not any(d.get("vm") == "b" or d.get("event") == "SERVICE_ALIVE" for d in after_kill), after_kill
    print(f"\nkill -> VM_DOWN {t_down - t_kill:.2f}s, -> VM_ALIVE {t_alive - t_kill:.2f}s", file=sys.stderr)

    mon.send_signal(signal.SIGTERM)
    lines.expect(lambda d: d.get("type") == "stopped", 10, "monitor stopped")
    assert mon.wait(10) == 0

    # 5. delete, and nothing of the VMs is left
    for name in ("a", "b"):
        vimlab.driver.delete_vm(name)
        vimlab.driver.delete_vm(name)
    assert vimlab.driver.list() == []
    assert not [n for n in net.namespaces() if n.startswith(f"{PREFIX}vm-")]
    assert not vimlab.ping(f"{SUBNET}.22", 0.3)
    assert cleanup_all(PREFIX, vimlab.state_dir) == []
    print(f"scenario took {time.monotonic() - t0:.1f}s", file=sys.stderr)


def test_redeploy_and_cleanup_all(vimlab: VimLab) -> None:
    d = vimlab.driver
    first = d.create_vm(vimlab.spec("c", "web", 31))
    assert vimlab.ping(f"{SUBNET}.31")
    mon = vimlab.run_in_ctl([sys.executable, "-m", "esc.monitor", "--state-dir", str(vimlab.state_dir),
                             "--ns-prefix", PREFIX, "--recovery", "redeploy", "--interval", "0.2",
                             "--timeout", "0.3", "--rise", "1", "--down-after", "2"],
                            vimlab.tmp / "monitor.err")
    lines = Lines(mon)
    lines.expect(is_event("SERVICE_ALIVE"), 30, "SERVICE_ALIVE")
    d.kill_vm_process("c")
    act = lines.expect(lambda x: x.get("type") == "action", 10, "redeploy action")
    assert act["action"] == "redeploy"
    lines.expect(is_event("VM_ALIVE", "c"), 10, "VM_ALIVE c")
    again = d.get("c")
    assert again is not None and again.state == "running" and again.created_at > first.created_at
    assert vimlab.http_status(f"{SUBNET}.31") == 200
    mon.send_signal(signal.SIGTERM)
    assert mon.wait(10) == 0

    # cleanup_all takes running VMs down with their namespaces, and may run again
    d.create_vm(vimlab.spec("d", "cirros", 32))
    pid = d.get("d").pid  # type: ignore[union-attr]
    assert sorted(cleanup_all(PREFIX, vimlab.state_dir)) == [f"{PREFIX}vm-c", f"{PREFIX}vm-d"]
    assert Plumbing().started(pid) is None and d.list() == []  # dead (a zombie at most)
    assert cleanup_all(PREFIX, vimlab.state_dir) == []
    assert not vimlab.ping(f"{SUBNET}.32", 0.3)
