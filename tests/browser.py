"""A real browser for the tests: Debian's chromium driven by Playwright (sync API),
optionally inside a network namespace so that it reaches what only that namespace can reach
(a lab node's address, a VIP).

Tests import it as ``from browser import chromium_in`` (tests/ is on sys.path: pytest puts the
directory of tests/conftest.py there)::

    with chromium_in("esc-n1") as browser:
        context = browser.new_context(ignore_https_errors=True)  # the pair's self-signed cert
        page = context.new_page()
        page.goto("https://10.0.0.10:8443/")

``ignore_https_errors`` is an option of the context, not of the browser: the caller makes its
contexts with ``browser.new_context(ignore_https_errors=True)`` when the site uses the pair's
self-signed certificate (``browser.new_page()`` makes a context with the defaults).

How: Playwright starts ``executable_path`` with the DevTools protocol on inherited fds
(``--remote-debugging-pipe``, fds 3 and 4). With a namespace, that path is a generated
wrapper, ``exec ip netns exec NS /usr/bin/chromium "$@"``: ``ip netns exec`` and Debian's
launcher both exec, so the fds and the PID stay those Playwright knows. ``playwright install``
is never needed (nor possible here): bootstrap installs Debian's ``chromium``.

Cleanup, even when the body fails: browser closed, Playwright stopped, any chromium process
of this launch left over killed by PID, the temp dir (wrapper, Playwright's fresh profile and
artifacts) removed.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Browser

CHROMIUM = "/usr/bin/chromium"
# As root, on a closed network: no sandbox, no GPU, and none of chromium's own connections
# (without the background-networking flags it opens many, all refused here).
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LAUNCH_TIMEOUT_MS = 30_000


def _missing() -> str | None:
    if not os.access(CHROMIUM, os.X_OK):
        return f"browser tests need Debian's chromium ({CHROMIUM}; scripts/bootstrap.sh installs it)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "browser tests need the playwright module (pip install -e '.[dev]')"
    return None


def _stat(pid: int) -> tuple[int, int] | None:
    """(process group, session) of ``pid``, None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    fields = raw[raw.rindex(b")") + 2 :].split()
    if fields[0] == b"Z":
        return None
    return int(fields[2]), int(fields[3])


def _leftovers(leader: int | None, tmp: Path) -> list[int]:
    """This launch's chromium processes still alive: those in the group and session that
    Playwright made for it (it spawns detached: the first chromium leads both), and any whose
    command line names our temp dir (the profile is in it)."""
    found = []
    mark = str(tmp).encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        pid = int(entry.name)
        ids = _stat(pid)
        if ids is None:
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if b"chromium" in cmdline and (mark in cmdline or (leader is not None and leader in ids)):
            found.append(pid)
    return found


def _kill_leftovers(leader: int | None, tmp: Path) -> None:
    deadline = time.monotonic() + 10
    while pids := _leftovers(leader, tmp):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if time.monotonic() > deadline:
            raise RuntimeError(f"chromium processes {pids} survived SIGKILL")
        time.sleep(0.05)


@contextlib.contextmanager
def chromium_in(netns: str | None) -> Iterator[Browser]:
    """A headless chromium, in network namespace ``netns`` (None: this one), as a Playwright
    ``Browser``. Skips the test if chromium or playwright is missing."""
    why = _missing()
    if why:
        pytest.skip(why)
    if netns is not None and os.geteuid() != 0:
        pytest.skip("a browser in a network namespace needs root (ip netns exec)")
    from playwright.sync_api import sync_playwright

    tmp = Path(tempfile.mkdtemp(prefix="esc-chromium-"))
    pidfile = tmp / "chromium.pid"
    wrapper = tmp / "chromium"
    prefix = f"ip netns exec {shlex.quote(netns)} " if netns is not None else ""
    wrapper.write_text(
        "#!/bin/sh\n"
        f"echo $$ > {shlex.quote(str(pidfile))}\n"
        f'exec {prefix}{CHROMIUM} "$@"\n'
    )
    wrapper.chmod(0o755)

    pw = browser = None
    # The driver makes the fresh profile (--user-data-dir) and artifacts under its TMPDIR:
    # put them in our temp dir, removed at the end whatever happens.
    old_tmpdir = os.environ.get("TMPDIR")
    os.environ["TMPDIR"] = str(tmp)
    try:
        try:
            pw = sync_playwright().start()
        finally:
            if old_tmpdir is None:
                os.environ.pop("TMPDIR", None)
            else:
                os.environ["TMPDIR"] = old_tmpdir
        browser = pw.chromium.launch(
            executable_path=str(wrapper), headless=True, args=FLAGS, timeout=LAUNCH_TIMEOUT_MS
        )
        yield browser
    finally:
        try:
            if browser is not None:
                with contextlib.suppress(Exception):
                    browser.close()
            if pw is not None:
                with contextlib.suppress(Exception):
                    pw.stop()
            leader = None
            with contextlib.suppress(OSError, ValueError):
                leader = int(pidfile.read_text())
            _kill_leftovers(leader, tmp)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
