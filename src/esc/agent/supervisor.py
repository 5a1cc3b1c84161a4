"""The one process supervisor: start, stop and reap the agent's children.

Children are spawned through ``setpriv --pdeathsig KILL`` so that if the agent
dies, its database, keepalived and services die with it (the node then fails
over as a whole instead of running unsupervised), and so that the user switch
for PostgreSQL happens in the child without ``preexec_fn`` (unsafe with
threads). Each child is reaped here, by its own ``Popen``; orphans of the
subtree are reaped by the node's reaper process (esc.agent.reaper), never in
this process, where a ``waitpid(-1)`` would steal the exit status of tools
that other threads run with ``subprocess.run``.

Daemons must be started from the agent's main thread: the parent-death signal
fires when the *thread* that forked the child exits.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path


class Child:
    """One supervised process. ``stop`` is asynchronous: it signals and returns;
    ``poll`` escalates to SIGKILL when the grace period is over."""

    def __init__(self, name: str, argv: Callable[[], list[str]], log: Path,
                 user: str | None = None, stdin_pipe: bool = False,
                 stop_signal: int = signal.SIGTERM, grace: float = 10.0,
                 env: dict[str, str] | None = None, prepare: Callable[[], None] | None = None,
                 caps: tuple[str, ...] = ()) -> None:
        """``prepare``: run before each start (e.g. hand an unprivileged child its files).
        ``caps``: the capabilities an unprivileged child keeps (e.g. net_bind_service),
        as ambient ones: no more than those."""
        self.name, self.argv, self.log, self.user = name, argv, log, user
        self.caps = caps
        self.prepare = prepare
        self.stdin_pipe, self.stop_signal, self.grace, self.env = stdin_pipe, stop_signal, grace, env
        self.proc: subprocess.Popen[bytes] | None = None
        self.kill_at: float | None = None
        self.started_at = -1e9
        self.min_restart_interval = 0.5
        self.exits = 0  # unexpected exits, for status
        self.last_exit: int | None = None
        self.crashed = False  # exited without being asked to; the owner resets it

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def running(self) -> bool:
        return self.poll()

    @property
    def stopping(self) -> bool:
        return self.kill_at is not None and self.poll()

    def start(self) -> bool:
        """Start unless running; False when not started (running, or restarted too recently)."""
        if self.poll():
            return False
        if time.monotonic() - self.started_at < self.min_restart_interval:
            return False  # a child that dies at once is not restarted in a tight loop
        if self.prepare is not None:
            self.prepare()
        wrap = ["setpriv", "--pdeathsig=KILL"]
        if self.user:
            wrap += [f"--reuid={self.user}", f"--regid={self.user}", "--init-groups"]
            if self.caps:
                caps = ",".join(f"+{c}" for c in self.caps)
                wrap += [f"--inh-caps={caps}", f"--ambient-caps={caps}"]
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [*wrap, "--", *self.argv()], stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.PIPE if self.stdin_pipe else subprocess.DEVNULL,
                start_new_session=True, cwd="/", env={**os.environ, **(self.env or {})},
            )
        self.kill_at = None
        self.started_at = time.monotonic()
        return True

    def send_line(self, line: str) -> bool:
        if not self.poll() or self.proc is None or self.proc.stdin is None:
            return False
        try:
            self.proc.stdin.write(line.encode() + b"\n")
            self.proc.stdin.flush()
            return True
        except (BrokenPipeError, OSError):
            return False

    def stop(self, sig: int | None = None, grace: float | None = None) -> None:
        if not self.poll() or self.proc is None:
            return
        if self.kill_at is None:
            self._signal(sig or self.stop_signal)
            self.kill_at = time.monotonic() + (self.grace if grace is None else grace)

    def kill(self) -> None:
        if self.poll():
            self._signal(signal.SIGKILL, group=True)

    def stop_wait(self, timeout: float = 15.0) -> bool:
        self.stop()
        deadline = time.monotonic() + timeout
        while self.poll() and time.monotonic() < deadline:
            time.sleep(0.02)
        if self.poll():
            self.kill()
            if self.proc is not None:
                try:
                    self.proc.wait(5)
                except subprocess.TimeoutExpired:
                    pass
        return not self.poll()

    def poll(self) -> bool:
        """Reap if exited; escalate a stop past its grace. True while running."""
        if self.proc is None:
            return False
        rc = self.proc.poll()
        if rc is None:
            if self.kill_at is not None and time.monotonic() > self.kill_at:
                self._signal(signal.SIGKILL, group=True)
            return True
        if self.kill_at is None:
            self.exits += 1
            self.crashed = True
        # Whatever the leader left behind (keepalived's VRRP child, postgres backends)
        # goes with it, or it blocks the restart ("daemon is already running").
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.last_exit = rc
        if self.proc.stdin:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
        self.proc = None
        self.kill_at = None
        return False

    def _signal(self, sig: int, group: bool = False) -> None:
        assert self.proc is not None
        try:
            if group:
                os.killpg(self.proc.pid, sig)
            else:
                self.proc.send_signal(sig)
        except ProcessLookupError:
            pass
