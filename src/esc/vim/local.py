"""A VIM on this machine: each VM is a real process in its own network namespace.

A VM is two detached processes (``esc/vim/guest.py``), as a hypervisor process
and its guest would be:

- the **holder** (``--hold --label <prefix>vm-<name>``), started by
  ``unshare --net``: it owns the VM's network namespace and keeps it alive;
- the **guest**, started in the holder's namespace: it answers ping (and HTTP
  for the "web" image). ``kill_vm_process`` kills the guest only, so the
  namespace, ``eth0`` and the address stay and the VM stops answering: what a
  monitor must detect. ``reboot_vm`` starts a new guest in the same namespace.

``eth0`` in the namespace carries the VM's address; the other end of the veth
(``vm<hash>``, 14 characters) is a port of the lab's bridge. Both processes are
started with ``setsid -f`` (own session, re-parented at once), so they outlive
the controller that created them.

Why not ``ip netns add <prefix>vm-<name>``: a named namespace is a bind mount
under ``/run/netns``, and a controller run by ``ip netns exec`` (as the lab's
nodes are) lives in a private *slave* mount namespace: its bind mounts never
reach the host nor the other node, and die with it. So a namespace is named by
its holder (``/proc/<holder pid>/ns/net``, the same from every mount
namespace), and ``<prefix>vm-<name>`` is the holder's label.

State is one JSON file per VM under ``<state_dir>/vms/``, written to a temporary
file and renamed; every change to a VM holds ``flock`` on
``<state_dir>/locks/<name>.lock``. So another driver instance, in another
process (the new active after a failover), sees and manages the same VMs.
Whether a VM runs is read from reality (its recorded guest is alive, is the
same process, and is in the VM's namespace), never from the file.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import ipaddress
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from esc.config import write_json_atomic
from esc.vim.driver import Network, VimError, VmConflict, VmInfo, VmNotFound, VmSpec, check_name

log = logging.getLogger("esc.vim.local")

STATE_VERSION = 1
IMAGES = ("cirros", "web")
VM_IF = "eth0"
GUEST = Path(__file__).with_name("guest.py")  # run as a script: imports nothing of ours


def vm_label(ns_prefix: str, name: str) -> str:
    """What names a VM's namespace: its holder's ``--label``."""
    return f"{ns_prefix}vm-{name}"


def bridge_ifname(ns_prefix: str, name: str) -> str:
    """The bridge-side end of a VM's veth: ``vm`` + 12 hex digits (interface names
    are at most 15 characters, VM names up to 63)."""
    return "vm" + hashlib.sha1(f"{ns_prefix}\0{name}".encode()).hexdigest()[:12]


def _now_iso() -> str:
    return datetime.now(UTC).isoformat()


# ---------------------------------------------------------------------------
# state files


class StateStore:
    """One versioned JSON record per VM: ``<dir>/vms/<name>.json``."""

    def __init__(self, state_dir: Path) -> None:
        self.dir = Path(state_dir)
        self.vms = self.dir / "vms"
        self.locks = self.dir / "locks"
        self.run = self.dir / "run"

    def path(self, name: str) -> Path:
        return self.vms / f"{check_name(name)}.json"

    def read(self, name: str) -> dict | None:
        path = self.path(name)
        try:
            text = path.read_text()
        except FileNotFoundError:
            return None
        try:
            rec = json.loads(text)
        except ValueError as e:
            raise VimError(f"VM state file {path} is not JSON: {e}") from None
        if not isinstance(rec, dict) or rec.get("version") != STATE_VERSION:
            raise VimError(f"VM state file {path}: unsupported version "
                           f"{rec.get('version') if isinstance(rec, dict) else None!r} "
                           f"(this driver reads {STATE_VERSION})")
        if rec.get("name") != name:
            raise VimError(f"VM state file {path} holds VM {rec.get('name')!r}, not {name!r}")
        return rec

    def write(self, rec: dict) -> None:
        write_json_atomic(self.path(rec["name"]), {**rec, "version": STATE_VERSION})

    def delete(self, name: str) -> None:
        self.path(name).unlink(missing_ok=True)

    def names(self) -> list[str]:
        if not self.vms.is_dir():
            return []
        return sorted(p.stem for p in self.vms.glob("*.json") if not p.name.startswith("."))

    @contextlib.contextmanager
    def lock(self, name: str) -> Iterator[None]:
        """Exclusive per VM, between threads and processes alike (flock is held by the
        open file, and each call opens its own)."""
        self.locks.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.locks / f"{check_name(name)}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                     0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def ready_file(self, name: str) -> Path:
        return self.run / f"{name}.ready"

    def log_file(self, name: str) -> Path:
        return self.run / f"{name}.log"


# ---------------------------------------------------------------------------
# the machine: processes, namespaces, links (thin, no policy)

NsKey = tuple[int, int]  # (st_dev, st_ino) of a network namespace


@dataclass(frozen=True)
class Labelled:
    """A holder or guest process of ours, found by its command line."""

    pid: int
    label: str  # <prefix>vm-<name>
    holder: bool


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and res.returncode != 0:
        raise VimError(f"ip {' '.join(args)}: {res.stderr.strip()}")
    return res


def _ns_id(path: str) -> NsKey | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _stat_fields(pid: int) -> list[str] | None:
    """``/proc/<pid>/stat`` from field 3 (state) on; None if gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[-1].split()
    except OSError:
        return None


class Plumbing:
    """Processes, namespaces and veths, through ``/proc``, ``ip``, ``unshare``,
    ``nsenter`` and ``setsid``. Needs root."""

    def started(self, pid: int) -> int | None:
        """The process's start time (clock ticks since boot): with the PID, its
        identity. None if it is gone or a zombie (PID 1 here may reap late)."""
        fields = _stat_fields(pid)
        if not fields or fields[0] in ("Z", "X"):
            return None
        return int(fields[19])

    def netns(self, pid: int) -> NsKey | None:
        return _ns_id(f"/proc/{pid}/ns/net")

    def pids(self, ns: NsKey) -> list[int]:
        """Live processes in network namespace ``ns``."""
        found = []
        for entry in os.listdir("/proc"):
            if entry.isdigit() and _ns_id(f"/proc/{entry}/ns/net") == ns and self.started(int(entry)):
                found.append(int(entry))
        return sorted(found)

    def labelled(self) -> list[Labelled]:
        """Every holder and guest (``guest.py ... --label L``) on this machine."""
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    args = f.read().decode(errors="replace").split("\0")
            except OSError:
                continue
            if any(a.endswith("esc/vim/guest.py") for a in args[:4]) and "--label" in args[:-1]:
                found.append(Labelled(int(entry), args[args.index("--label") + 1], "--hold" in args))
        return found

    def kill(self, pids: list[int], timeout: float = 5.0) -> list[int]:
        """SIGKILL these processes; return once none of them runs."""
        deadline = time.monotonic() + timeout
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        while left := [p for p in pids if self.started(p) is not None]:
            if time.monotonic() > deadline:
                raise VimError(f"processes {left} survive SIGKILL")
            time.sleep(0.005)
        return sorted(pids)

    def network_exists(self, network: Network) -> bool:
        return os.path.exists(f"/run/netns/{network.namespace}")

    def ensure_link(self, holder: int, network: Network, ifname: str, address: str) -> None:
        """``eth0`` in the holder's namespace with ``address``, up, and its peer
        ``ifname`` an up port of the bridge."""
        if not self.network_exists(network):
            raise VimError(f"network namespace {network.namespace!r} does not exist")
        inside = ["nsenter", f"--net=/proc/{holder}/ns/net", "--", "ip"]
        res = subprocess.run([*inside, "link", "show", "dev", VM_IF], capture_output=True, timeout=30)
        if res.returncode != 0:
            _ip("-n", network.namespace, "link", "del", ifname, check=False)  # a stale half of an old pair
            _ip("link", "add", VM_IF, "netns", str(holder), "type", "veth",
                "peer", "name", ifname, "netns", network.namespace)
        _ip("-n", network.namespace, "link", "set", ifname, "master", network.bridge, "up")
        res = subprocess.run([*inside, "-batch", "-"], capture_output=True, text=True, timeout=30,
                             input=f"link set lo up\naddr replace {address} dev {VM_IF}\n"
                                   f"link set {VM_IF} up\n")
        if res.returncode != 0:
            raise VimError(f"addressing {VM_IF} of holder {holder}: {res.stderr.strip()}")

    def remove_link(self, network: Network, ifname: str) -> None:
        if self.network_exists(network):
            _ip("-n", network.namespace, "link", "del", ifname, check=False)

    def spawn(self, argv: list[str], log_path: Path, *, new_netns: bool = False,
              netns_of: int | None = None) -> None:
        """Start ``argv`` detached: ``setsid -f`` forks, the child leads its own
        session and is re-parented (to init or the nearest subreaper) at once, so
        neither our death nor a kill of our process group touches it. In a new
        network namespace, or in the one of process ``netns_of``."""
        cmd = ["setsid", "-f"]
        if new_netns:
            cmd += ["unshare", "--net", "--"]
        if netns_of is not None:
            cmd += ["nsenter", f"--net=/proc/{netns_of}/ns/net", "--"]
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as out:
            res = subprocess.run([*cmd, *argv], stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                 close_fds=True, timeout=30)
        if res.returncode != 0:
            raise VimError(f"could not start {' '.join(cmd)} {argv[0]} (rc {res.returncode})")


# ---------------------------------------------------------------------------
# the driver


class LocalDriver:
    """``VimDriver`` for VMs that are processes in namespaces on this machine."""

    def __init__(self, state_dir: Path, ns_prefix: str = "", *, plumbing: Plumbing | None = None,
                 python: str = sys.executable, start_timeout: float = 10.0, http_port: int = 80) -> None:
        self.store = StateStore(Path(state_dir))
        self.ns_prefix = ns_prefix
        self.plumbing = plumbing if plumbing is not None else Plumbing()
        self.python, self.start_timeout, self.http_port = python, start_timeout, http_port

    # --- VimDriver

    def create_vm(self, spec: VmSpec) -> VmInfo:
        if spec.image not in IMAGES:
            raise VimError(f"unknown image {spec.image!r} (the local driver runs {', '.join(IMAGES)})")
        with self.store.lock(spec.name):
            rec = self.store.read(spec.name)
            if rec is not None:
                mine = {"image": spec.image, "address": spec.address,
                        "network": {"namespace": spec.network.namespace, "bridge": spec.network.bridge}}
                theirs = {k: rec.get(k) for k in mine}
                if theirs != mine:
                    raise VmConflict(f"VM {spec.name!r} exists with {theirs}, not {mine}")
                if rec.get("phase") == "created":
                    return self._info(rec)
                log.info("vm %s: completing an interrupted creation", spec.name)
            else:
                rec = {"name": spec.name, "image": spec.image, "address": spec.address,
                       "network": {"namespace": spec.network.namespace, "bridge": spec.network.bridge},
                       "label": vm_label(self.ns_prefix, spec.name),
                       "ifname": bridge_ifname(self.ns_prefix, spec.name),
                       "created_at": _now_iso(), "phase": "creating", "holder": None, "pid": None,
                       "boots": 0}
                self.store.write(rec)  # first, so an interrupted creation is found and finished
            try:
                if not self.plumbing.network_exists(spec.network):
                    raise VimError(f"network namespace {spec.network.namespace!r} does not exist")
                self._plumb(rec)
                self._start(rec)
            except BaseException:
                log.warning("vm %s: creation failed, removing what was made", spec.name)
                self._remove(rec)
                raise
            rec["phase"] = "created"
            self.store.write(rec)
            log.info("vm %s created: %s, holder %s, guest %s", spec.name, spec.address,
                     rec["holder"]["pid"], rec["pid"])
            return self._info(rec)

    def delete_vm(self, name: str) -> None:
        with self.store.lock(name):
            rec = self.store.read(name)
            self._remove(rec if rec is not None else self._default_record(name))
            if rec is not None:
                log.info("vm %s deleted", name)

    def reboot_vm(self, name: str) -> VmInfo:
        with self.store.lock(name):
            rec = self._existing(name)
            self._kill_guests(rec)
            self._plumb(rec)  # the holder may be gone (host reboot, cleanup): a new namespace
            self._start(rec)
            rec["phase"] = "created"
            self.store.write(rec)
            log.info("vm %s rebooted: guest %s", name, rec["pid"])
            return self._info(rec)

    def stop_vm(self, name: str) -> VmInfo:
        with self.store.lock(name):
            rec = self._existing(name)
            self._kill_guests(rec)
            rec["pid"] = rec["pid_start"] = None
            self.store.write(rec)
            log.info("vm %s stopped", name)
            return self._info(rec)

    def get(self, name: str) -> VmInfo | None:
        rec = self.store.read(name)
        return self._info(rec) if rec is not None else None

    def list(self) -> list[VmInfo]:
        out = []
        for name in self.store.names():
            try:
                rec = self.store.read(name)
            except (VimError, ValueError) as e:
                log.warning("skipping VM record %s: %s", name, e)
                continue
            if rec is not None:
                out.append(self._info(rec))
        return out

    # --- beyond the protocol

    def spec(self, name: str) -> VmSpec | None:
        """The spec a VM was created with (what a redeploy re-creates)."""
        rec = self.store.read(name)
        if rec is None:
            return None
        return VmSpec(rec["name"], rec["image"], rec["address"], Network(**rec["network"]))

    def kill_vm_process(self, name: str) -> list[int]:
        """For tests and fault drills: the VM's guest process dies; its namespace,
        interface and address stay, and it stops answering ping (what a monitor
        must detect). Returns the PIDs killed."""
        with self.store.lock(name):
            return self._kill_guests(self._existing(name))

    def nsenter_argv(self, name: str) -> list[str]:
        """A prefix that runs a command inside a VM's network namespace."""
        rec = self._existing(name)
        if self._holder_ns(rec) is None:
            raise VimError(f"VM {name!r} has no namespace (its holder is gone): reboot it")
        return ["nsenter", f"--net=/proc/{rec['holder']['pid']}/ns/net", "--"]

    # --- inside

    def _existing(self, name: str) -> dict:
        rec = self.store.read(name)
        if rec is None:
            raise VmNotFound(f"no VM named {name!r}")
        return rec

    def _default_record(self, name: str) -> dict:
        return {"name": name, "label": vm_label(self.ns_prefix, name),
                "ifname": bridge_ifname(self.ns_prefix, name), "network": None, "holder": None, "pid": None}

    def _same(self, pid: int | None, start: int | None) -> bool:
        return pid is not None and start is not None and self.plumbing.started(pid) == start

    def _holder_ns(self, rec: dict) -> NsKey | None:
        """The VM's namespace, if its holder is the process we started."""
        h = rec.get("holder")
        if not h or not self._same(h["pid"], h["start"]):
            return None
        ns = self.plumbing.netns(h["pid"])
        return ns if ns is not None and list(ns) == list(h["netns"]) else None

    def _guest_running(self, rec: dict) -> bool:
        ns = self._holder_ns(rec)
        return ns is not None and self._same(rec.get("pid"), rec.get("pid_start")) \
            and self.plumbing.netns(rec["pid"]) == ns

    def _kill_guests(self, rec: dict) -> list[int]:
        """The recorded guest, and anything else in the namespace but its holder."""
        victims = set()
        if self._same(rec.get("pid"), rec.get("pid_start")):
            victims.add(rec["pid"])
        ns = self._holder_ns(rec)
        if ns is not None:
            victims |= set(self.plumbing.pids(ns)) - {rec["holder"]["pid"]}
        return self.plumbing.kill(sorted(victims)) if victims else []

    def _spawn_and_wait(self, rec: dict, argv: list[str], what: str, **where: object) -> tuple[int, int]:
        ready = self.store.ready_file(rec["name"])
        ready.parent.mkdir(parents=True, exist_ok=True)
        ready.unlink(missing_ok=True)
        self.plumbing.spawn([self.python, "-I", str(GUEST), "--vm", rec["name"], "--label", rec["label"],
                             *argv, "--ready", str(ready)], self.store.log_file(rec["name"]),
                            **where)  # type: ignore[arg-type]
        deadline = time.monotonic() + self.start_timeout
        while True:
            try:
                pid = int(json.loads(ready.read_text())["pid"])
                start = self.plumbing.started(pid)
                if start is not None:
                    break
            except (FileNotFoundError, ValueError, KeyError):
                pass
            if time.monotonic() > deadline:
                raise VimError(f"the {what} of VM {rec['name']} did not start within "
                               f"{self.start_timeout:g}s: {self._log_tail(rec['name'])}")
            time.sleep(0.005)
        ready.unlink(missing_ok=True)
        return pid, start

    def _plumb(self, rec: dict) -> None:
        if self._holder_ns(rec) is None:
            pid, start = self._spawn_and_wait(rec, ["--hold"], "holder", new_netns=True)
            ns = self.plumbing.netns(pid)
            if ns is None:
                raise VimError(f"the holder of VM {rec['name']} died at once: {self._log_tail(rec['name'])}")
            rec["holder"] = {"pid": pid, "start": start, "netns": list(ns)}
            rec["pid"] = rec["pid_start"] = None
            self.store.write(rec)
        self.plumbing.ensure_link(rec["holder"]["pid"], Network(**rec["network"]), rec["ifname"],
                                  rec["address"])

    def _start(self, rec: dict) -> None:
        ip = str(ipaddress.IPv4Interface(rec["address"]).ip)
        pid, start = self._spawn_and_wait(
            rec, ["--image", rec["image"], "--address", ip, "--http-port", str(self.http_port)], "guest",
            netns_of=rec["holder"]["pid"])
        if self.plumbing.netns(pid) != self._holder_ns(rec):
            self.plumbing.kill([pid])
            raise VimError(f"the guest of VM {rec['name']} is not in its namespace")
        rec["pid"], rec["pid_start"] = pid, start
        rec["started_at"] = _now_iso()
        rec["boots"] = int(rec.get("boots", 0)) + 1

    def _remove(self, rec: dict) -> None:
        """Kill holder and guests (the namespace and its veth go with them), and
        whatever still carries the VM's label (a creation cut short)."""
        victims = set()
        ns = self._holder_ns(rec)
        if ns is not None:
            victims |= set(self.plumbing.pids(ns))
        if self._same(rec.get("pid"), rec.get("pid_start")):
            victims.add(rec["pid"])
        for p in self.plumbing.labelled():
            if p.label == rec["label"]:
                victims.add(p.pid)
                pns = self.plumbing.netns(p.pid) if p.holder else None
                victims |= set(self.plumbing.pids(pns)) if pns else set()
        if victims:
            self.plumbing.kill(sorted(victims))
        if rec.get("network"):
            self.plumbing.remove_link(Network(**rec["network"]), rec["ifname"])
        self.store.delete(rec["name"])
        self.store.ready_file(rec["name"]).unlink(missing_ok=True)
        self.store.log_file(rec["name"]).unlink(missing_ok=True)

    def _log_tail(self, name: str, lines: int = 5) -> str:
        try:
            text = self.store.log_file(name).read_text(errors="replace").strip().splitlines()
        except FileNotFoundError:
            return "no log"
        return " | ".join(text[-lines:]) or "empty log"

    def _info(self, rec: dict) -> VmInfo:
        running = self._guest_running(rec)
        return VmInfo(name=rec["name"], address=rec["address"], state="running" if running else "stopped",
                      pid=int(rec["pid"]) if running else None,
                      created_at=datetime.fromisoformat(rec["created_at"]), image=rec.get("image", ""))


def cleanup_all(ns_prefix: str, state_dir: Path | None = None, *, plumbing: Plumbing | None = None
                ) -> list[str]:
    """Kill every VM of a lab (holders and guests labelled ``<ns_prefix>vm-*``: their
    namespaces and veths go with them) and, with ``state_dir``, forget every VM
    record. Safe when nothing exists. Returns the labels of the VMs removed."""
    plumbing = plumbing if plumbing is not None else Plumbing()
    mine = f"{ns_prefix}vm-"
    removed: set[str] = set()
    for _ in range(5):  # a creation racing with us may add one more
        found = [p for p in plumbing.labelled() if p.label.startswith(mine)]
        if not found:
            break
        victims = set()
        for p in found:
            victims.add(p.pid)
            ns = plumbing.netns(p.pid) if p.holder else None
            victims |= set(plumbing.pids(ns)) if ns else set()
            removed.add(p.label)
        plumbing.kill(sorted(victims))
    if state_dir is not None:
        store = StateStore(Path(state_dir))
        for name in store.names():
            store.delete(name)
        if store.run.is_dir():
            for f in store.run.iterdir():
                f.unlink(missing_ok=True)
    return sorted(removed)
