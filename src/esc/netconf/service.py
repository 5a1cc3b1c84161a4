"""escconfd: the NETCONF northbound (the original's ``confd``), on the active node only.

Run by the agent like escmanager and escetsi: *parked* (imports done, credentials and
host key loaded, listening on nothing) until "serve" on stdin, then serving on
``confd_port`` (830) until "exit", EOF or a signal; "lease T" and "mode M" on stdin as
for them (esc.services.manager)::

    python -m esc.netconf.service --root ROOT [--serve]

Runs as the unprivileged service user with CAP_NET_BIND_SERVICE for port 830. Its log
is ``var/log/esc/escconfd.log``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import threading
import time

from psycopg_pool import ConnectionPool

from esc.config import NodePaths
from esc.netconf import credentials, rpc
from esc.netconf.notifications import EventFeed
from esc.netconf.server import NetconfSsh, PasswordCheck
from esc.services.auth_cache import VerifiedHeaders
from esc.services.serving import OperationMode, ServingLease

log = logging.getLogger("esc.netconf")


class Running:
    """The server with its database pool and event feed, on an event loop of its own
    thread: ``start`` returns once it listens (its port), ``stop`` ends it."""

    def __init__(self, conninfo: str, auth: credentials.ConfdAuth, lease: ServingLease | None = None,
                 mode: OperationMode | None = None, feed_interval: float = 0.2,
                 shared_secret: str | None = None) -> None:
        """``shared_secret``: the pair's, keys the logins both nodes remember (HA)."""
        self.conninfo, self.auth, self.shared_secret = conninfo, auth, shared_secret
        self.lease, self.mode = lease or ServingLease(), mode or OperationMode()
        self.feed_interval = feed_interval
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="netconf", daemon=True)
        self.pool: ConnectionPool | None = None
        self.feed: EventFeed | None = None
        self.ssh: NetconfSsh | None = None
        self.server: rpc.Server | None = None

    def start(self, host: str, port: int) -> int:
        # open(wait=False): listening never waits for the database (a failover's path)
        self.pool = ConnectionPool(self.conninfo, min_size=1, max_size=4, timeout=5.0, open=False,
                                   name="escconfd", check=ConnectionPool.check_connection,
                                   kwargs={"application_name": "escconfd", "connect_timeout": 2})
        self.pool.open(wait=False)
        self.feed = EventFeed(self.conninfo, self.feed_interval)
        self.feed.start()
        self.server = rpc.Server(self.pool, self.lease, self.mode, self.feed)
        shared = VerifiedHeaders(self.shared_secret, self.auth.password_hash) if self.shared_secret else None
        check = PasswordCheck(self.auth.user, self.auth.password_hash, shared, lambda: self.pool)
        self.ssh = NetconfSsh(self.server, self.auth.host_key, check)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.ssh.start(host, port), self.loop).result(10)
        return self.ssh.port

    def stop(self) -> None:
        if self.ssh is not None and self.thread.is_alive():
            try:
                asyncio.run_coroutine_threadsafe(self.ssh.close(), self.loop).result(5)
            except Exception as e:  # stopping anyway
                log.warning("closing the server: %s", e)
        if self.thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)
        if self.feed is not None:
            self.feed.stop()
        if self.pool is not None:
            self.pool.close(2.0)


def _shared_secret(paths: NodePaths) -> str | None:
    """The key of the logins both nodes remember: the one the agent hands the controller
    (esc.privileges); None when it cannot be read (each node then checks on its own)."""
    from esc.services.manager import auth_secret

    try:
        return auth_secret(paths)
    except OSError:
        return None


def main(argv: list[str] | None = None) -> int:
    from esc.services.manager import (
        db_conninfo,
        notify,
        service_start,
        wait_for_serve,
        watch_stdin,
    )

    started = service_start("escconfd", (__doc__ or "").splitlines()[0], argv)
    if isinstance(started, int):
        return started
    args, paths, cfg = started
    auth = credentials.load(paths, cfg)
    if auth is None:
        log.error("no NETCONF user (--user_confd_pass): not served")
        return 2
    logging.getLogger("asyncssh").setLevel(logging.WARNING)  # a line per packet type otherwise
    lease = ServingLease() if args.serve else ServingLease(until=0.0)
    mode = OperationMode()
    running = Running(db_conninfo(cfg, paths), auth, lease, mode,
                      shared_secret=_shared_secret(paths) if cfg.is_ha else None)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    signal.signal(signal.SIGINT, lambda *_: sys.exit(0))
    if not args.serve:
        log.info("escconfd parked, pid %d (host key %s)", os.getpid(), credentials.fingerprint(auth.host_key))
        notify("parked")
        if not wait_for_serve(lease, mode):
            return 0
    t_serve = time.monotonic()
    exit_requested = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: exit_requested.set())
    signal.signal(signal.SIGINT, lambda *_: exit_requested.set())
    if not args.serve:
        threading.Thread(target=watch_stdin, args=(exit_requested, lease, None, mode), daemon=True).start()
    try:
        port = running.start("", cfg.confd_port)
    except OSError as e:
        log.error("cannot listen on port %d: %s", cfg.confd_port, e)
        running.stop()
        return 1
    log.info("listening on port %d, %.1f ms after serve", port, (time.monotonic() - t_serve) * 1000)
    notify("serving")
    exit_requested.wait()
    running.stop()
    log.info("stopped")
    return 0


if __name__ == "__main__":
    code = main()
    logging.shutdown()
    os._exit(code)
