"""ExaBGP's API process: turns the agent's wish (``run/esc/bgp/desired``) into
``announce route``/``withdraw route`` lines on stdout, and records the session state
ExaBGP reports on stdin (``neighbor-changes``, JSON encoder) in ``run/esc/bgp/state.json``.

Started by ExaBGP (``process`` in exabgp.conf); exits when ExaBGP closes its stdin, so
it never outlives its ExaBGP. Polls the wish every 20 ms: a stat and a read of a tiny
file, cheaper and simpler than a FIFO that must be reopened whenever either side
restarts; the 20 ms are small next to a BGP UPDATE's trip and the router's FIB update.

Safe by default: with no file, an unreadable file or anything but ``announce`` in it,
the helper withdraws.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

from esc.config import NodePaths, load_config, write_atomic
from esc.ha.bgp import read_desired, route_line

POLL = 0.02
STATE_REFRESH = 1.0  # seconds between rewrites of the state file when nothing changes


class Helper:
    def __init__(self, paths: NodePaths) -> None:
        cfg = load_config(paths)
        if cfg.bgp is None:
            raise SystemExit("esc.ha.bgp_api: BGP is not configured on this node")
        self.paths, self.bgp = paths, cfg.bgp
        self.lock = threading.Lock()
        self.session = "down"  # as ExaBGP reports it: down / connected / up
        self.session_since = time.time()
        self.last_reason = "ExaBGP started; no session yet"
        self.sent: tuple[bool, int] | None = None  # what we last told ExaBGP (None: nothing yet)
        self.sent_at: float | None = None
        self.resend = threading.Event()
        self.eof = threading.Event()

    # ------------------------------------------------------------ stdin
    def read_events(self) -> None:
        for line in sys.stdin:
            self.on_event(line)
        self.eof.set()

    def on_event(self, line: str) -> None:
        try:
            msg = json.loads(line)
        except ValueError:
            return  # "done"/"error" acknowledgements, or noise
        if not isinstance(msg, dict) or msg.get("type") != "state":
            return
        nb = msg.get("neighbor", {})
        state = str(nb.get("state", ""))
        if not state:
            return
        with self.lock:
            if state != self.session:
                self.session, self.session_since = state, time.time()
            self.last_reason = str(nb.get("reason", "")) or self.last_reason
            if state == "up":
                # A new session starts with an empty Adj-RIB-In at the router: say it again.
                self.resend.set()
        self.write_state()

    # ----------------------------------------------------------- stdout
    def send(self, want: tuple[bool, int]) -> None:
        sys.stdout.write(route_line(self.bgp, *want) + "\n")
        sys.stdout.flush()  # ExaBGP reads line by line; an unflushed line is never seen
        with self.lock:
            self.sent, self.sent_at = want, time.time()
        self.write_state()

    def write_state(self) -> None:
        with self.lock:
            data = {"session": self.session, "session_since": self.session_since,
                    "last_reason": self.last_reason, "announced": bool(self.sent and self.sent[0]),
                    "med": self.sent[1] if self.sent and self.sent[0] else None,
                    "sent_at": self.sent_at, "updated": time.time(),
                    "prefix": self.bgp.anycast_prefix, "neighbor": self.bgp.remote_ip}
        try:
            write_atomic(self.paths.bgp_state, (json.dumps(data) + "\n").encode(), fsync=False)
        except OSError:
            pass  # status is best effort; routing is not

    def run(self) -> int:
        threading.Thread(target=self.read_events, name="exabgp-events", daemon=True).start()
        last_write = 0.0
        while not self.eof.is_set():
            want = read_desired(self.paths)
            if want != self.sent or self.resend.is_set():
                self.resend.clear()
                self.send(want)
            now = time.monotonic()
            if now - last_write > STATE_REFRESH:
                self.write_state()  # "updated" tells status that the helper is alive
                last_write = now
            self.eof.wait(POLL)
        return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="esc.ha.bgp_api")
    p.add_argument("--root", required=True)
    a = p.parse_args(argv)
    try:
        return Helper(NodePaths(Path(a.root))).run()
    except BrokenPipeError:
        return 0  # ExaBGP went away


if __name__ == "__main__":
    sys.exit(main())
