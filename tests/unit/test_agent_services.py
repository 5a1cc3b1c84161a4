"""The agent's hold on the controller process: a controller told to stop never gets
"serve" again (a node that stepped down and was elected back within the grace sent it to
one still shutting down, and served nothing until it was killed: 2.1 s in make chaos)."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

from esc import clock
from esc.agent.core import Agent
from esc.agent.opmode import OpMode
from esc.agent.supervisor import Child
from esc.config import EtsiConfig, NodeConfig

# a controller whose graceful shutdown takes long: it ignores SIGTERM
CONTROLLER = """
import signal, sys
signal.signal(signal.SIGTERM, signal.SIG_IGN)
out = open(sys.argv[1], "a", buffering=1)
for line in sys.stdin:
    out.write(line)
"""


def _agent(tmp: Path, runs: list[Path]) -> Agent:
    def argv() -> list[str]:
        runs.append(tmp / f"run{len(runs)}.txt")
        return [sys.executable, "-c", CONTROLLER, str(runs[-1])]

    agent = Agent.__new__(Agent)  # only what io_services touches
    agent.manager = Child("escmanager", argv, tmp / "escmanager.out", stdin_pipe=True, grace=5.0)
    agent.manager.min_restart_interval = 0.0
    agent.serving, agent.stop_requested, agent.freeze_seen = False, False, 0.0
    agent.op_mode, agent.mode_sent = OpMode(), {}
    # the ETSI service is driven by the same code (Agent._drive); off here
    agent.etsi, agent.etsi_serving = Child("escetsi", argv, tmp / "escetsi.out"), False
    agent.confd, agent.confd_serving = Child("escconfd", argv, tmp / "escconfd.out"), False
    agent.cfg = NodeConfig(name="n1", etsi=EtsiConfig(enabled=False))
    agent.users_settled = threading.Event()
    agent.users_settled.set()
    return agent


def _lines(path: Path) -> list[str]:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if path.exists() and "serve" in path.read_text().split():
            break
        time.sleep(0.02)
    return [x.split()[0] for x in path.read_text().splitlines()] if path.exists() else []


def test_a_stopping_controller_is_killed_not_asked_to_serve(tmp_path: Path) -> None:
    runs: list[Path] = []
    agent = _agent(tmp_path, runs)
    try:
        agent.io_services(True, clock.now())
        assert agent.serving and _lines(runs[0]).count("serve") == 1
        first = agent.manager.pid
        agent.io_services(False, clock.now())  # steps down: SIGTERM, which this one ignores
        assert agent.manager.stopping
        agent.io_services(True, clock.now())  # elected again at once
        assert not agent.serving
        deadline = time.monotonic() + 3  # killed now, not after the 5 s grace
        while agent.manager.running:
            assert time.monotonic() < deadline, "the stopping controller was not killed"
            time.sleep(0.02)
        agent.io_services(True, clock.now())  # a fresh controller, asked to serve
        assert agent.serving and agent.manager.pid != first
        assert _lines(runs[1]).count("serve") == 1
        assert _lines(runs[0]).count("serve") == 1  # never a second "serve" to the old one
    finally:
        agent.manager.kill()
        agent.manager.stop_wait(5)


def _leases(path: Path) -> list[float]:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not (path.exists() and "lease" in path.read_text()):
        time.sleep(0.02)
    return [float(x.split()[1]) for x in path.read_text().splitlines() if x.startswith("lease")]


def test_the_serving_lease_runs_from_the_observations_not_from_the_sending(tmp_path: Path) -> None:
    """A tick frozen between its observations and its actions sends a lease that has
    already run out: the controller answers nothing on what the tick saw before."""
    runs: list[Path] = []
    agent = _agent(tmp_path, runs)
    try:
        agent.io_services(True, clock.now() - 5.0)  # observed 5 s ago, longer than a takeover
        assert agent.serving and _leases(runs[0])[-1] < clock.now()
        agent.io_services(True, clock.now())
        deadline = time.monotonic() + 5
        while len(_leases(runs[0])) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert _leases(runs[0])[-1] > clock.now()
    finally:
        agent.manager.kill()
        agent.manager.stop_wait(5)


def test_the_controller_is_told_the_pairs_operation_mode_once_per_change(tmp_path: Path) -> None:
    runs: list[Path] = []
    agent = _agent(tmp_path, runs)
    try:
        agent.io_services(True, clock.now())
        agent.io_services(True, clock.now())
        agent.op_mode = OpMode(mode="maintenance", version=1, by="n1")
        agent.io_services(True, clock.now())
        agent.io_services(True, clock.now())
        deadline = time.monotonic() + 5
        modes: list[str] = []
        while time.monotonic() < deadline:
            text = runs[0].read_text() if runs[0].exists() else ""
            modes = [x for x in text.splitlines() if x.startswith("mode")]
            if len(modes) >= 2:
                break
            time.sleep(0.02)
        assert modes == ["mode operation", "mode maintenance"]
        lines = runs[0].read_text().splitlines()
        assert lines.index("mode operation") < lines.index("serve")  # told before it serves
    finally:
        agent.manager.kill()
        agent.manager.stop_wait(5)
