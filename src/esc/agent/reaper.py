"""The node's reaper: a tiny parent process that reaps orphans, so the agent never has to.

Orphans of the agent's subtree (a killed postmaster's backends, keepalived's VRRP
child, a double-forked tool) must be reaped quickly: PID 1 on some machines reaps
only every second or so, and a zombie postmaster blocks the next start. Reaping them
inside the agent would mean ``waitid(P_ALL)`` beside ``subprocess.run`` in other
threads: the reaper can take a tool's exit status first, and Python then reports
``returncode 0`` for a ``pg_rewind`` or ``pg_basebackup`` that failed.

So the reaper is a separate process with one thread and one child (the agent). It is
the child subreaper of the subtree, reaps every exited process with ``waitpid(-1)``,
forwards SIGTERM/SIGINT/SIGHUP to the agent, and exits with the agent's status once
the agent has gone and the orphans that were already dying with it are reaped. If the
reaper itself dies, the agent gets SIGTERM (parent-death signal) and hands over.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import time

PR_SET_CHILD_SUBREAPER = 36
PR_SET_PDEATHSIG = 1
LINGER_S = 2.0  # after the agent exits: reap what dies with it (pdeathsig), then go


def _prctl(option: int, value: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(option, value, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), f"prctl({option}) failed")


def become_subreaper() -> None:
    _prctl(PR_SET_CHILD_SUBREAPER, 1)


def exit_code(status: int) -> int:
    """A waitpid status as a shell would report it (128 + signal for a killed child)."""
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status) if os.WIFEXITED(status) else 1


def run(argv: list[str]) -> int:
    """Run ``argv`` (the agent) as our only child; reap the subtree; return its code."""
    become_subreaper()
    forwarded = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
    # Block the forwarded signals until the child exists, so none is lost in between.
    signal.pthread_sigmask(signal.SIG_BLOCK, forwarded)
    pid = os.fork()
    if pid == 0:  # the agent: its parent's death (this reaper) means hand over and stop
        try:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, forwarded)
            _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
            os.execvp(argv[0], argv)
        finally:
            os._exit(127)
    child = pid

    def forward(signum: int, _frame: object) -> None:
        try:
            os.kill(child, signum)
        except ProcessLookupError:
            pass

    for sig in forwarded:
        signal.signal(sig, forward)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, forwarded)
    code: int | None = None
    linger_until = 0.0
    while True:
        try:
            if code is None:
                reaped, status = os.waitpid(-1, 0)
            else:
                reaped, status = os.waitpid(-1, os.WNOHANG)
                if reaped == 0:
                    if time.monotonic() > linger_until:
                        return code
                    time.sleep(0.05)
                    continue
        except ChildProcessError:  # nothing left to reap
            return code if code is not None else 1
        except InterruptedError:
            continue
        if reaped == child and code is None:
            code = exit_code(status)
            linger_until = time.monotonic() + LINGER_S


def main() -> None:
    if len(sys.argv) < 2:
        print("usage: python -m esc.agent.reaper PROGRAM [ARG...]", file=sys.stderr)
        sys.exit(2)
    sys.exit(run(sys.argv[1:]))


if __name__ == "__main__":
    main()
