"""The VIM driver without root: specs, the state files, the local driver's logic over a
fake machine (namespaces and processes in memory), the guest's ICMP replies, and one
contract that the local and the in-memory drivers both keep."""

from __future__ import annotations

import json
import socket
import struct
import threading
from collections.abc import Iterator
from datetime import UTC
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from esc.vim import guest
from esc.vim.driver import NAME_RE, Network, VimDriver, VimError, VmConflict, VmNotFound, VmSpec
from esc.vim.fake import FakeDriver
from esc.vim.local import (
    STATE_VERSION,
    Labelled,
    LocalDriver,
    StateStore,
    bridge_ifname,
    cleanup_all,
    vm_label,
)

SW = Network("sw", "br0")
PREFIX = "t-"


def spec(name: str = "a", image: str = "cirros", address: str = "10.0.0.5/24", network: Network = SW
         ) -> VmSpec:
    return VmSpec(name, image, address, network)


class FakePlumbing:
    """The machine as the local driver sees it, in memory: processes (with start
    times and network namespaces), bridges, links."""

    def __init__(self, *switches: str) -> None:
        self.switches: set[str] = set(switches or ("sw",))
        self.procs: dict[int, dict] = {}  # live pid -> {"start", "ns", "argv"}
        self.links: dict[tuple[int, int], tuple[Network, str, str]] = {}
        self.spawns: list[list[str]] = []
        self.start_fails = False
        self._n = 5000
        self._lock = threading.RLock()

    def _next(self) -> int:
        self._n += 1
        return self._n

    def started(self, pid: int) -> int | None:
        p = self.procs.get(pid)
        return p["start"] if p else None

    def netns(self, pid: int) -> tuple[int, int] | None:
        p = self.procs.get(pid)
        return p["ns"] if p else None

    def pids(self, ns: tuple[int, int]) -> list[int]:
        return sorted(pid for pid, p in self.procs.items() if p["ns"] == ns)

    def labelled(self) -> list[Labelled]:
        return [Labelled(pid, p["argv"][p["argv"].index("--label") + 1], "--hold" in p["argv"])
                for pid, p in self.procs.items() if "--label" in p["argv"]]

    def kill(self, pids: list[int], timeout: float = 5.0) -> list[int]:
        with self._lock:
            for pid in pids:
                self.procs.pop(pid, None)
            live = {p["ns"] for p in self.procs.values()}
            self.links = {ns: v for ns, v in self.links.items() if ns in live}  # a dead namespace
            return sorted(pids)

    def network_exists(self, network: Network) -> bool:
        return network.namespace in self.switches

    def ensure_link(self, holder: int, network: Network, ifname: str, address: str) -> None:
        if network.namespace not in self.switches:
            raise VimError(f"network namespace {network.namespace!r} does not exist")
        assert holder in self.procs and "--hold" in self.procs[holder]["argv"] and len(ifname) <= 15
        self.links[self.procs[holder]["ns"]] = (network, ifname, address)

    def remove_link(self, network: Network, ifname: str) -> None:
        self.links = {ns: v for ns, v in self.links.items() if v[1] != ifname}

    def spawn(self, argv: list[str], log_path: Path, *, new_netns: bool = False,
              netns_of: int | None = None) -> None:
        with self._lock:
            self.spawns.append(argv)
            if self.start_fails:
                return
            pid = self._next()
            ns = (0, self._next()) if new_netns else self.procs[netns_of]["ns"]  # type: ignore[index]
            self.procs[pid] = {"start": self._next(), "ns": ns, "argv": argv}
        Path(argv[argv.index("--ready") + 1]).write_text(json.dumps({"pid": pid}))

    # for the tests
    def guests(self) -> list[int]:
        return sorted(pid for pid, p in self.procs.items() if "--hold" not in p["argv"])

    def holders(self) -> list[int]:
        return sorted(pid for pid, p in self.procs.items() if "--hold" in p["argv"])


@pytest.fixture
def machine() -> FakePlumbing:
    return FakePlumbing()


@pytest.fixture
def driver(tmp_path: Path, machine: FakePlumbing) -> LocalDriver:
    return LocalDriver(tmp_path / "vim", PREFIX, plumbing=machine, start_timeout=0.2)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------
# values


class TestSpec:
    @pytest.mark.parametrize("name", ["a", "web-1", "A.b_c", "x" * 63])
    def test_good_names(self, name: str) -> None:
        assert spec(name).name == name

    @pytest.mark.parametrize("name", ["", "-a", ".a", "../etc", "a/b", "a b", "x" * 64, "é", "web-1\n"])
    def test_bad_names(self, name: str) -> None:
        with pytest.raises(ValueError, match="VM name"):
            spec(name)

    @pytest.mark.parametrize("address", ["10.0.0.5", "10.0.0.300/24", "fd00::5/64", "nope/24"])
    def test_bad_addresses(self, address: str) -> None:
        with pytest.raises(ValueError):
            spec(address=address)

    def test_ip(self) -> None:
        assert spec().ip == "10.0.0.5"


@given(prefix=st.from_regex(r"[a-z0-9-]{0,8}", fullmatch=True),
       names=st.lists(st.from_regex(NAME_RE, fullmatch=True), min_size=2, max_size=2, unique=True))
def test_interface_names_fit_and_differ(prefix: str, names: list[str]) -> None:
    a, b = (bridge_ifname(prefix, n) for n in names)
    assert len(a) <= 15 and a.isalnum() and a != b
    assert vm_label(prefix, names[0]) == f"{prefix}vm-{names[0]}"


# ---------------------------------------------------------------------------
# state files


class TestStateStore:
    def rec(self, name: str = "a", **kw: object) -> dict:
        return {"name": name, "address": "10.0.0.5/24", **kw}

    def test_roundtrip_versioned(self, tmp_path: Path) -> None:
        s = StateStore(tmp_path)
        s.write(self.rec(pid=7))
        raw = json.loads((tmp_path / "vms" / "a.json").read_text())
        assert raw["version"] == STATE_VERSION and raw["pid"] == 7
        assert s.read("a") == raw
        assert s.names() == ["a"]
        assert [p.name for p in (tmp_path / "vms").iterdir()] == ["a.json"]  # no temp file left

    def test_missing_is_none(self, tmp_path: Path) -> None:
        assert StateStore(tmp_path).read("a") is None
        assert StateStore(tmp_path).names() == []

    def test_corrupt_file(self, tmp_path: Path) -> None:
        s = StateStore(tmp_path)
        s.write(self.rec())
        s.path("a").write_text('{"name": "a", ')
        with pytest.raises(VimError, match="not JSON"):
            s.read("a")

    def test_other_version_refused(self, tmp_path: Path) -> None:
        s = StateStore(tmp_path)
        s.vms.mkdir(parents=True)
        s.path("a").write_text(json.dumps({**self.rec(), "version": STATE_VERSION + 1}))
        with pytest.raises(VimError, match="unsupported version"):
            s.read("a")

    def test_file_of_another_vm_refused(self, tmp_path: Path) -> None:
        s = StateStore(tmp_path)
        s.write(self.rec("b"))
        s.path("b").rename(s.path("a"))
        with pytest.raises(VimError, match="holds VM 'b'"):
            s.read("a")

    def test_names_skip_temp_and_other_files(self, tmp_path: Path) -> None:
        s = StateStore(tmp_path)
        s.write(self.rec("b"))
        s.write(self.rec("a"))
        (s.vms / ".a.json.xyz").write_text("{")
        (s.vms / "notes.txt").write_text("")
        assert s.names() == ["a", "b"]

    def test_no_path_escape(self, tmp_path: Path) -> None:
        with pytest.raises(ValueError):
            StateStore(tmp_path).path("../x")

    def test_failed_write_keeps_the_old_file(self, tmp_path: Path) -> None:
        s = StateStore(tmp_path)
        s.write(self.rec(pid=1))
        with pytest.raises(TypeError):
            s.write(self.rec(pid=object()))
        assert s.read("a")["pid"] == 1  # type: ignore[index]
        assert [p.name for p in s.vms.iterdir()] == ["a.json"]

    def test_readers_never_see_half_a_file(self, tmp_path: Path) -> None:
        s = StateStore(tmp_path)
        s.write(self.rec(pad=""))
        stop = threading.Event()

        def writer() -> None:
            i = 0
            while not stop.is_set():
                i += 1
                s.write(self.rec(pad="x" * (i % 5000)))

        t = threading.Thread(target=writer)
        t.start()
        try:
            for _ in range(500):
                assert s.read("a")["name"] == "a"  # type: ignore[index]
        finally:
            stop.set()
            t.join()

    def test_lock_excludes_other_holders(self, tmp_path: Path) -> None:
        s = StateStore(tmp_path)
        inside: list[int] = []
        overlap = []

        def hold(i: int) -> None:
            with s.lock("a"):
                inside.append(i)
                if len(inside) > 1:
                    overlap.append(list(inside))
                threading.Event().wait(0.01)
                inside.remove(i)

        threads = [threading.Thread(target=hold, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert overlap == []


# ---------------------------------------------------------------------------
# the local driver's logic on the fake machine


class TestLocalDriver:
    def test_create(self, driver: LocalDriver, machine: FakePlumbing) -> None:
        info = driver.create_vm(spec("a", "web"))
        assert (info.name, info.address, info.state, info.image) == ("a", "10.0.0.5/24", "running", "web")
        assert machine.guests() == [info.pid] and len(machine.holders()) == 1
        holder = machine.holders()[0]
        assert machine.netns(info.pid) == machine.netns(holder)  # the guest runs in the holder's namespace
        assert info.created_at.tzinfo is UTC
        assert machine.links[machine.netns(holder)] == (SW, bridge_ifname(PREFIX, "a"), "10.0.0.5/24")  # type: ignore[index]
        hold, run = machine.spawns
        assert hold[1:3] == ["-I", str(Path(guest.__file__))] and "--hold" in hold
        assert hold[hold.index("--label") + 1] == "t-vm-a"
        assert run[run.index("--image") + 1] == "web" and run[run.index("--address") + 1] == "10.0.0.5"
        rec = driver.store.read("a")
        assert rec is not None and rec["phase"] == "created" and rec["pid"] == info.pid
        assert rec["holder"]["pid"] == holder
        assert not driver.store.ready_file("a").exists()

    def test_create_is_idempotent(self, driver: LocalDriver, machine: FakePlumbing) -> None:
        first = driver.create_vm(spec())
        again = driver.create_vm(spec())
        assert again == first and len(machine.spawns) == 2  # one holder, one guest

    def test_create_of_a_stopped_vm_returns_it_as_is(self, driver: LocalDriver,
                                                     machine: FakePlumbing) -> None:
        driver.create_vm(spec())
        driver.kill_vm_process("a")
        assert driver.create_vm(spec()).state == "stopped" and len(machine.spawns) == 2

    @pytest.mark.parametrize("other", [spec(image="web"), spec(address="10.0.0.6/24"),
                                       spec(network=Network("sw", "br1"))])
    def test_create_conflict(self, driver: LocalDriver, other: VmSpec) -> None:
        driver.create_vm(spec())
        with pytest.raises(VmConflict):
            driver.create_vm(other)

    def test_unknown_image(self, driver: LocalDriver) -> None:
        with pytest.raises(VimError, match="unknown image"):
            driver.create_vm(spec(image="ubuntu"))
        assert driver.list() == []

    def test_concurrent_creates_start_one_vm(self, driver: LocalDriver, machine: FakePlumbing) -> None:
        results = []
        threads = [threading.Thread(target=lambda: results.append(driver.create_vm(spec())))
                   for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(machine.spawns) == 2 and len({r.pid for r in results}) == 1

    def test_interrupted_creation_is_completed(self, driver: LocalDriver, machine: FakePlumbing) -> None:
        driver.store.write({"name": "a", "image": "cirros", "address": "10.0.0.5/24",
                            "network": {"namespace": "sw", "bridge": "br0"}, "label": "t-vm-a",
                            "ifname": bridge_ifname(PREFIX, "a"), "created_at": "2024-01-01T00:00:00+00:00",
                            "phase": "creating", "holder": None, "pid": None, "boots": 0})
        assert driver.get("a").state == "stopped"  # type: ignore[union-attr]
        info = driver.create_vm(spec())
        assert info.state == "running" and info.created_at.year == 2024
        assert driver.store.read("a")["phase"] == "created"  # type: ignore[index]

    def test_failed_start_leaves_nothing(self, driver: LocalDriver, machine: FakePlumbing) -> None:
        driver.create_vm(spec("b", address="10.0.0.6/24"))
        machine.start_fails = True
        with pytest.raises(VimError, match="did not start"):
            driver.create_vm(spec())
        assert [v.name for v in driver.list()] == ["b"] and len(machine.procs) == 2

    def test_guest_that_fails_is_cleaned_with_its_holder(self, driver: LocalDriver,
                                                         machine: FakePlumbing) -> None:
        real_spawn = machine.spawn

        def holder_only(argv: list[str], log_path: Path, **kw: object) -> None:
            if "--hold" in argv:
                real_spawn(argv, log_path, **kw)  # type: ignore[arg-type]

        machine.spawn = holder_only  # type: ignore[method-assign]
        with pytest.raises(VimError, match="guest of VM a did not start"):
            driver.create_vm(spec())
        assert machine.procs == {} and machine.links == {} and driver.list() == []

    def test_missing_network_leaves_nothing(self, driver: LocalDriver, machine: FakePlumbing) -> None:
        with pytest.raises(VimError, match="does not exist"):
            driver.create_vm(spec(network=Network("nope")))
        assert driver.list() == [] and machine.procs == {}

    def test_kill_then_reboot(self, driver: LocalDriver, machine: FakePlumbing) -> None:
        pid = driver.create_vm(spec()).pid
        holder = machine.holders()
        assert driver.kill_vm_process("a") == [pid]
        stopped = driver.get("a")
        assert stopped is not None and (stopped.state, stopped.pid) == ("stopped", None)
        assert machine.holders() == holder  # the namespace stays
        info = driver.reboot_vm("a")
        assert info.state == "running" and info.pid not in (None, pid) and info.address == "10.0.0.5/24"
        assert machine.holders() == holder and machine.netns(info.pid) == machine.netns(holder[0])  # type: ignore[arg-type]
        assert driver.store.read("a")["boots"] == 2  # type: ignore[index]

    def test_reboot_kills_the_running_guest(self, driver: LocalDriver, machine: FakePlumbing) -> None:
        pid = driver.create_vm(spec()).pid
        driver.reboot_vm("a")
        assert pid not in machine.procs and len(machine.guests()) == 1

    def test_reboot_rebuilds_a_lost_namespace(self, driver: LocalDriver, machine: FakePlumbing) -> None:
        driver.create_vm(spec())
        machine.kill(machine.holders())  # the guest is left in a namespace nobody holds
        orphan = machine.guests()
        assert driver.get("a").state == "stopped"  # type: ignore[union-attr]
        info = driver.reboot_vm("a")
        assert info.state == "running" and orphan[0] not in machine.procs
        assert len(machine.holders()) == 1 and machine.netns(machine.holders()[0]) in machine.links

    def test_a_recycled_pid_is_not_the_vm(self, driver: LocalDriver, machine: FakePlumbing) -> None:
        pid = driver.create_vm(spec()).pid
        machine.procs[pid].update(start=machine.procs[pid]["start"] + 1, ns=(9, 9))  # another process
        assert driver.get("a").state == "stopped"  # type: ignore[union-attr]
        assert driver.kill_vm_process("a") == []
        assert pid in machine.procs

    def test_missing_vm(self, driver: LocalDriver) -> None:
        assert driver.get("a") is None
        with pytest.raises(VmNotFound):
            driver.reboot_vm("a")
        with pytest.raises(VmNotFound):
            driver.kill_vm_process("a")

    def test_delete(self, driver: LocalDriver, machine: FakePlumbing) -> None:
        driver.create_vm(spec())
        driver.delete_vm("a")
        assert driver.get("a") is None and machine.procs == {} and machine.links == {}
        driver.delete_vm("a")  # again: nothing to do

    def test_delete_finds_a_stray_by_its_label(self, tmp_path: Path, driver: LocalDriver,
                                               machine: FakePlumbing) -> None:
        machine.spawn(["python", "-I", "guest.py", "--vm", "ghost", "--label", "t-vm-ghost", "--hold",
                       "--ready", str(tmp_path / "x")], Path("/dev/null"), new_netns=True)
        machine.spawn(["python", "-I", "guest.py", "--vm", "other", "--label", "u-vm-ghost", "--hold",
                       "--ready", str(tmp_path / "y")], Path("/dev/null"), new_netns=True)
        driver.delete_vm("ghost")
        assert [p.label for p in machine.labelled()] == ["u-vm-ghost"]

    def test_another_instance_manages_the_same_vms(self, tmp_path: Path, driver: LocalDriver,
                                                   machine: FakePlumbing) -> None:
        a = driver.create_vm(spec("a"))
        driver.create_vm(spec("b", address="10.0.0.6/24"))
        other = LocalDriver(tmp_path / "vim", PREFIX, plumbing=machine)  # type: ignore[arg-type]
        assert [v.name for v in other.list()] == ["a", "b"] and other.get("a") == a
        rebooted = other.reboot_vm("a")
        assert driver.get("a") == rebooted and rebooted.pid != a.pid
        other.delete_vm("b")
        assert [v.name for v in driver.list()] == ["a"]

    def test_list_skips_a_bad_record(self, driver: LocalDriver) -> None:
        driver.create_vm(spec("a"))
        driver.create_vm(spec("b", address="10.0.0.6/24"))
        driver.store.path("a").write_text("garbage")
        assert [v.name for v in driver.list()] == ["b"]

    def test_spec_is_kept(self, driver: LocalDriver) -> None:
        driver.create_vm(spec("a", "web"))
        assert driver.spec("a") == spec("a", "web") and driver.spec("zz") is None

    def test_nsenter_argv(self, driver: LocalDriver, machine: FakePlumbing) -> None:
        driver.create_vm(spec())
        assert driver.nsenter_argv("a") == ["nsenter", f"--net=/proc/{machine.holders()[0]}/ns/net", "--"]


class TestCleanupAll:
    def start(self, machine: FakePlumbing, label: str, tmp_path: Path) -> None:
        ready = str(tmp_path / f"{label}.ready")
        machine.spawn(["py", "guest.py", "--label", label, "--hold", "--ready", ready], Path("/dev/null"),
                      new_netns=True)
        holder = machine.holders()[-1]
        machine.spawn(["py", "guest.py", "--label", label, "--ready", ready], Path("/dev/null"),
                      netns_of=holder)

    def test_removes_only_this_labs_vms(self, tmp_path: Path) -> None:
        machine = FakePlumbing()
        for label in ("t-vm-a", "t-vm-b", "vm-c", "u-vm-d", "t-x"):
            self.start(machine, label, tmp_path)
        assert cleanup_all("t-", plumbing=machine) == ["t-vm-a", "t-vm-b"]  # type: ignore[arg-type]
        assert sorted({p.label for p in machine.labelled()}) == ["t-x", "u-vm-d", "vm-c"]
        assert len(machine.procs) == 6

    def test_safe_when_nothing_exists(self, tmp_path: Path) -> None:
        machine = FakePlumbing()
        assert cleanup_all("t-", tmp_path / "none", plumbing=machine) == []  # type: ignore[arg-type]
        assert cleanup_all("t-", tmp_path / "none", plumbing=machine) == []  # type: ignore[arg-type]

    def test_forgets_records(self, tmp_path: Path, driver: LocalDriver, machine: FakePlumbing) -> None:
        driver.create_vm(spec())
        assert cleanup_all(PREFIX, tmp_path / "vim", plumbing=machine) == ["t-vm-a"]  # type: ignore[arg-type]
        assert driver.list() == [] and machine.procs == {}


# ---------------------------------------------------------------------------
# one contract, two drivers


@pytest.fixture(params=["local", "fake"])
def any_driver(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[VimDriver]:
    if request.param == "fake":
        yield FakeDriver()
    else:
        yield LocalDriver(tmp_path / "vim", PREFIX, plumbing=FakePlumbing())  # type: ignore[arg-type]


class TestContract:
    def test_is_a_vim_driver(self, any_driver: VimDriver) -> None:
        assert isinstance(any_driver, VimDriver)

    def test_lifecycle(self, any_driver: VimDriver) -> None:
        d = any_driver
        a = d.create_vm(spec("a"))
        assert d.create_vm(spec("a")) == a
        d.create_vm(spec("b", address="10.0.0.6/24"))
        assert [v.name for v in d.list()] == ["a", "b"]
        r = d.reboot_vm("a")
        assert (r.address, r.state, r.created_at) == (a.address, "running", a.created_at) and r.pid != a.pid
        d.delete_vm("a")
        d.delete_vm("a")
        assert d.get("a") is None and [v.name for v in d.list()] == ["b"]
        with pytest.raises(VmNotFound):
            d.reboot_vm("a")
        with pytest.raises(VmConflict):
            d.create_vm(spec("b", address="10.0.0.7/24"))
        assert d.get("b").to_dict()["created_at"].endswith("+00:00")  # type: ignore[union-attr]

    def test_stop_then_start(self, any_driver: VimDriver) -> None:
        d = any_driver
        a = d.create_vm(spec("a"))
        s = d.stop_vm("a")
        assert (s.state, s.pid, s.address) == ("stopped", None, a.address)
        assert d.create_vm(spec("a")).state == "stopped"  # found as it is, not started
        r = d.reboot_vm("a")
        assert r.state == "running" and r.pid not in (None, a.pid)
        with pytest.raises(VmNotFound):
            d.stop_vm("nope")


# ---------------------------------------------------------------------------
# the guest's replies


def echo_request(src: str, dst: str, ident: int = 7, seq: int = 3, payload: bytes = b"hello!") -> bytes:
    icmp = struct.pack("!BBHHH", 8, 0, 0, ident, seq) + payload
    icmp = icmp[:2] + struct.pack("!H", guest.checksum(icmp)) + icmp[4:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(icmp), 1, 0, 64, 1, 0, socket.inet_aton(src),
                     socket.inet_aton(dst))
    return ip + icmp


class TestGuest:
    def test_reply_mirrors_the_request(self) -> None:
        out = guest.echo_reply(echo_request("10.0.0.1", "10.0.0.5"), {"10.0.0.5"})
        assert out is not None
        reply, to = out
        assert to == "10.0.0.1"
        kind, code, _, ident, seq = struct.unpack("!BBHHH", reply[:8])
        assert (kind, code, ident, seq, reply[8:]) == (0, 0, 7, 3, b"hello!")
        assert guest.checksum(reply) == 0  # a valid checksum sums to zero

    @given(payload=st.binary(max_size=100), ident=st.integers(0, 0xFFFF), seq=st.integers(0, 0xFFFF))
    def test_checksum_always_valid(self, payload: bytes, ident: int, seq: int) -> None:
        out = guest.echo_reply(echo_request("10.0.0.1", "10.0.0.5", ident, seq, payload), {"10.0.0.5"})
        assert out is not None and guest.checksum(out[0]) == 0 and out[0][8:] == payload

    def test_ignores_what_is_not_an_echo_request_to_us(self) -> None:
        req = echo_request("10.0.0.1", "10.0.0.5")
        assert guest.echo_reply(req, {"10.0.0.9"}) is None  # not ours (a broadcast, say)
        reply = req[:20] + bytes([0]) + req[21:]
        assert guest.echo_reply(reply, {"10.0.0.5"}) is None  # a reply, not a request
        assert guest.echo_reply(req[:24], {"10.0.0.5"}) is None  # truncated
        assert guest.echo_reply(b"\x60" + req[1:], {"10.0.0.5"}) is None  # not IPv4

    def test_gratuitous_arp_frame(self) -> None:
        mac = bytes.fromhex("0a0b0c0d0e0f")
        frame = guest.garp_frame(mac, "10.0.0.5")
        assert frame[:6] == b"\xff" * 6 and frame[6:12] == mac and frame[12:14] == b"\x08\x06"
        htype, ptype, hlen, plen, op, sha, spa, tha, tpa = struct.unpack("!HHBBH6s4s6s4s", frame[14:])
        assert (htype, ptype, hlen, plen, op) == (1, 0x0800, 6, 4, 1)
        assert sha == mac and spa == tpa == socket.inet_aton("10.0.0.5") and tha == b"\0" * 6
