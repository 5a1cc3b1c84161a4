"""The lab's etcd cluster (``escadm lab up --witness etcd``): three members, each in a
namespace of its own on the client's network, as a site's etcd would run on three
hosts. Data under ``<lab dir>/etcd/<member>``, a pid file and a log beside it; killed
by PID, and by ``ip netns`` when the lab goes down.

Timers: heartbeat 100 ms, election 600 ms. etcd's shortest lease is 1.5 x the election
timeout, rounded up to whole seconds: 1 s here, the witness's lease (with etcd's
defaults, 100 ms / 1 s, it is 2 s, and a failover would wait that long).
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from esc.lab import net

MEMBERS = ("etcd1", "etcd2", "etcd3")
ADDR = {"etcd1": 31, "etcd2": 32, "etcd3": 33}
CLIENT_PORT, PEER_PORT = 2379, 2380
HEARTBEAT_MS, ELECTION_MS = 100, 600


def address(member: str, subnet4: str) -> str:
    return f"{subnet4}.{ADDR[member]}"


def cluster_url(subnet4: str) -> str:
    """What the nodes are given: --ha_witness etcd://..."""
    return "etcd://" + ",".join(f"{address(m, subnet4)}:{CLIENT_PORT}" for m in MEMBERS)


def hosts(subnet4: str, subnet6: str, bridge: str, gateway4: str | None = None,
          gateway6: str | None = None) -> list[net.Host]:
    return [net.Host(m, f"{address(m, subnet4)}/24", f"{subnet6}:{ADDR[m]}/64", bridge, gateway4, gateway6)
            for m in MEMBERS]


def _dir(lab_dir: Path, member: str) -> Path:
    return lab_dir / "etcd" / member


def _pid_file(lab_dir: Path, member: str) -> Path:
    return lab_dir / "etcd" / f"{member}.pid"


def argv(member: str, lab_dir: Path, subnet4: str) -> list[str]:
    ip = address(member, subnet4)
    cluster = ",".join(f"{m}=http://{address(m, subnet4)}:{PEER_PORT}" for m in MEMBERS)
    # a restarted member finds its data directory and ignores the --initial-* flags
    return ["etcd", "--name", member, "--data-dir", str(_dir(lab_dir, member)),
            "--listen-client-urls", f"http://{ip}:{CLIENT_PORT}",
            "--advertise-client-urls", f"http://{ip}:{CLIENT_PORT}",
            "--listen-peer-urls", f"http://{ip}:{PEER_PORT}",
            "--initial-advertise-peer-urls", f"http://{ip}:{PEER_PORT}",
            "--initial-cluster", cluster, "--initial-cluster-state", "new",
            "--initial-cluster-token", "esc-lab",
            "--heartbeat-interval", str(HEARTBEAT_MS), "--election-timeout", str(ELECTION_MS),
            "--logger", "zap", "--log-outputs", "stderr"]


def start(lab_dir: Path, member: str, subnet4: str) -> int:
    """Start one member in its namespace; its pid (the etcd process: ``ip netns exec``
    execs in place)."""
    (lab_dir / "etcd").mkdir(parents=True, exist_ok=True)
    log = open(lab_dir / "etcd" / f"{member}.log", "ab")  # noqa: SIM115 - the child keeps it
    proc = subprocess.Popen(["ip", "netns", "exec", net.ns(member), *argv(member, lab_dir, subnet4)],
                            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
    log.close()
    _pid_file(lab_dir, member).write_text(f"{proc.pid}\n")
    return proc.pid


def start_all(lab_dir: Path, subnet4: str, timeout: float = 30.0) -> None:
    """Every member, then wait until each serves clients (a member serves only once the
    cluster has a leader)."""
    restart(lab_dir, MEMBERS, subnet4, timeout)


def _log_size(lab_dir: Path, member: str) -> int:
    try:
        return (lab_dir / "etcd" / f"{member}.log").stat().st_size
    except OSError:
        return 0


def wait_serving(lab_dir: Path, since: dict[str, int], timeout: float = 30.0) -> None:
    """Until each member in ``since`` logged that it serves clients after that log offset."""
    deadline = time.monotonic() + timeout
    left = dict(since)
    while left:
        for m, offset in list(left.items()):
            with open(lab_dir / "etcd" / f"{m}.log", "rb") as f:
                f.seek(offset)
                if b"serving client traffic" in f.read():
                    del left[m]
        if time.monotonic() > deadline:
            raise RuntimeError(f"etcd members {', '.join(left)} not serving after {timeout:.0f}s "
                               f"(logs in {lab_dir / 'etcd'})")
        time.sleep(0.1)


def restart(lab_dir: Path, members: tuple[str, ...], subnet4: str, timeout: float = 30.0) -> None:
    marks = {m: _log_size(lab_dir, m) for m in members}
    for m in members:
        start(lab_dir, m, subnet4)
    wait_serving(lab_dir, marks, timeout)


def kill(lab_dir: Path, member: str) -> None:
    """SIGKILL one member by its pid (a crash: no goodbye to its peers)."""
    net.kill_by_pid_file(_pid_file(lab_dir, member))


def kill_all(lab_dir: Path) -> None:
    for m in MEMBERS:
        kill(lab_dir, m)
