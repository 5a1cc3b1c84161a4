"""tests/browser.py: chromium driven by Playwright inside a network namespace reaches a
server that only the namespace has (on its own 127.0.0.1), clicks, and sees the page change;
the same browser in the root namespace cannot reach it; nothing is left behind."""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from browser import chromium_in

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("ip"), reason="network namespaces need root and iproute2"
)

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>brtest</title></head>
<body>
<p id="msg">not clicked</p>
<button id="go">Go</button>
<script>
document.getElementById("go").addEventListener("click", () => {
  document.getElementById("msg").textContent = "clicked in " + location.host;
});
</script>
</body></html>
"""


@dataclass(frozen=True)
class Site:
    netns: str
    url: str
    port: int


def _free_root_port() -> int:
    """A port nothing listens on in the root namespace's 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _chromium_pids() -> set[int]:
    pids = set()
    for exe in glob.glob("/proc/[0-9]*/exe"):
        try:
            if os.readlink(exe).startswith("/usr/lib/chromium/"):
                pids.add(int(exe.split("/")[2]))
        except OSError:
            pass
    return pids


def _temp_dirs() -> set[str]:
    return set(glob.glob(os.path.join(tempfile.gettempdir(), "esc-chromium-*")))


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    """A namespace ``brtest-<random>`` with only its loopback up, and an HTTP server inside
    it on 127.0.0.1:PORT, serving PAGE; both removed at the end."""
    ns = f"brtest-{secrets.token_hex(4)}"
    port = _free_root_port()
    (tmp_path / "index.html").write_text(PAGE)
    server = None
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        server = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, "-m", "http.server", str(port),
             "--bind", "127.0.0.1", "--directory", str(tmp_path)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 15
        while True:
            listening = subprocess.run(
                ["ip", "netns", "exec", ns, "ss", "-Hltn", f"sport = :{port}"],
                capture_output=True, text=True, check=True,
            ).stdout.strip()
            if listening:
                break
            assert server.poll() is None, "the HTTP server in the namespace exited"
            assert time.monotonic() < deadline, "the HTTP server in the namespace did not listen"
            time.sleep(0.1)
        # The root namespace has no such server: only a browser in the namespace can load it.
        with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), 2):
            pass
        yield Site(ns, f"http://127.0.0.1:{port}/", port)
    finally:
        if server is not None:
            server.kill()
            server.wait(10)
        subprocess.run(["ip", "netns", "del", ns], check=False)


def test_browser_in_namespace_clicks(site: Site) -> None:
    before_pids, before_dirs = _chromium_pids(), _temp_dirs()
    with chromium_in(site.netns) as browser:
        from playwright.sync_api import expect

        context = browser.new_context(ignore_https_errors=True)
        page = context.new_page()
        page.goto(site.url, timeout=15_000)
        assert page.title() == "brtest"
        expect(page.locator("#msg")).to_have_text("not clicked")
        page.click("#go")
        expect(page.locator("#msg")).to_have_text(f"clicked in 127.0.0.1:{site.port}")
        assert _chromium_pids() - before_pids, "no chromium process while the browser is open"
    assert not _chromium_pids() - before_pids, "a chromium process outlived chromium_in"
    assert _temp_dirs() == before_dirs, "chromium_in left its temp dir"


def test_browser_in_root_namespace_cannot_reach_it(site: Site) -> None:
    with chromium_in(None) as browser:
        from playwright.sync_api import Error

        page = browser.new_page()
        with pytest.raises(Error, match="ERR_CONNECTION_REFUSED"):
            page.goto(site.url, timeout=15_000)


def test_cleanup_when_the_body_fails(site: Site) -> None:
    before_pids, before_dirs = _chromium_pids(), _temp_dirs()
    with pytest.raises(RuntimeError, match="boom"), chromium_in(site.netns) as browser:
        browser.new_page().goto(site.url, timeout=15_000)
        raise RuntimeError("boom")
    assert not _chromium_pids() - before_pids, "a chromium process outlived chromium_in"
    assert _temp_dirs() == before_dirs, "chromium_in left its temp dir"
