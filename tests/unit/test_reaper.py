"""The node's reaper process (esc.agent.reaper) with real processes: orphans are reaped
at once, and the agent's tools keep their exit statuses (a reaper in the agent's own
process took them: a failed pg_rewind read as returncode 0)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

REAPER = [sys.executable, "-m", "esc.agent.reaper"]

# Runs as the reaper's child: tools in threads (as the agent's jobs and checks run them)
# while orphans keep exiting; every tool must report its own status.
TOOLS_AND_ORPHANS = textwrap.dedent("""
    import subprocess, sys, threading, time
    wrong = []
    def tools():
        for _ in range(150):
            rc = subprocess.run(["sh", "-c", "exit 3"]).returncode
            if rc != 3:
                wrong.append(rc)
    threads = [threading.Thread(target=tools) for _ in range(2)]
    for t in threads:
        t.start()
    orphans = []
    while any(t.is_alive() for t in threads):
        # the subshell is orphaned when sh exits, and exits a moment later itself
        out = subprocess.run(["sh", "-c", "(sleep 0.01; exit 0) & echo $!"],
                             capture_output=True, text=True).stdout
        orphans.append(int(out))
        time.sleep(0.005)
    for t in threads:
        t.join()
    time.sleep(0.3)
    zombies = []
    for pid in orphans:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().split(") ")[1].startswith("Z"):
                    zombies.append(pid)
        except FileNotFoundError:
            pass
    print(f"wrong={wrong} orphans={len(orphans)} zombies={zombies}")
    sys.exit(0 if not wrong and not zombies else 1)
""")


def test_tools_keep_their_exit_status_while_orphans_are_reaped() -> None:
    res = subprocess.run([*REAPER, sys.executable, "-c", TOOLS_AND_ORPHANS],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "wrong=[]" in res.stdout and "zombies=[]" in res.stdout


def test_exit_status_of_the_child_is_the_reapers() -> None:
    assert subprocess.run([*REAPER, "sh", "-c", "exit 7"], timeout=30).returncode == 7
    killed = subprocess.run([*REAPER, "sh", "-c", "kill -9 $$"], timeout=30)
    assert killed.returncode == 128 + signal.SIGKILL


def test_sigterm_is_forwarded_to_the_child() -> None:
    script = ("import signal, sys, time\n"
              "signal.signal(signal.SIGTERM, lambda *_: sys.exit(42))\n"
              "print('ready', flush=True)\n"
              "time.sleep(60)\n")
    proc = subprocess.Popen([*REAPER, sys.executable, "-c", script], stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 42
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_dead_reaper_stops_its_child() -> None:
    """If the reaper is killed, the agent is told (SIGTERM) and hands over, rather than
    running on with nobody to reap its orphans."""
    script = ("import os, signal, sys, time\n"
              "signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))\n"
              "print(os.getpid(), flush=True)\n"
              "time.sleep(60)\n")
    proc = subprocess.Popen([*REAPER, sys.executable, "-c", script], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout is not None
    child = int(proc.stdout.readline())
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and os.path.exists(f"/proc/{child}"):
        try:
            with open(f"/proc/{child}/stat") as f:
                if f.read().split(") ")[1].startswith("Z"):
                    break  # exited; waiting for init to reap it
        except FileNotFoundError:
            break
        time.sleep(0.05)
    else:
        if os.path.exists(f"/proc/{child}"):
            os.kill(child, signal.SIGKILL)
            raise AssertionError("the agent outlived its reaper")
