"""The NETCONF server over SSH (RFC 6242, asyncssh): password login as the confd user,
the ``netconf`` subsystem only (no shell, exec, forwarding or SFTP), framing, and one
rpc.Session per channel."""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import hmac
import logging
from collections.abc import Callable
from typing import Any

import asyncssh

from esc.netconf import rpc
from esc.netconf.errors import RpcError
from esc.netconf.framing import Deframer, FramingError, frame
from esc.netconf.names import BASE_10, BASE_11
from esc.secrets import verify_password
from esc.services.auth_cache import VerifiedHeaders
from esc.services.manager import FailedLogins

log = logging.getLogger("esc.netconf.server")
auth_log = logging.getLogger("esc.auth")

READ_SIZE = 65536
HELLO_TIMEOUT_S = 60.0


class PasswordCheck:
    """The confd user's password, checked with scrypt (~0.1 s, on two threads of its own)
    once per password: a login that verified is remembered by its keyed digest (no
    password kept), in memory and, with ``shared`` (HA), in the replicated table the REST
    API's logins use (esc.services.auth_cache), so that a client logging in again after a
    failover does not pay scrypt on the new active. Each client address has a budget of
    failures (FailedLogins)."""

    def __init__(self, user: str, password_hash: str, shared: VerifiedHeaders | None = None,
                 pool: Callable[[], Any] | None = None) -> None:
        self.user, self.password_hash = user, password_hash
        self.shared, self.pool = shared, pool
        self.threads = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="confd-auth")
        self.verified: set[bytes] = set()
        self.failed = FailedLogins()

    def _digest(self, user: str, password: str) -> bytes:
        return hmac.new(self.password_hash.encode(), f"{user}\0{password}".encode(), hashlib.sha256).digest()

    def _verify(self, user: str, password: str) -> bool:
        """On a thread of its own: the shared cache, else scrypt (then remembered there)."""
        if not hmac.compare_digest(user.encode(), self.user.encode()):
            return False
        pool = self.pool() if self.pool is not None else None
        # "netconf" apart: a NETCONF login's digest is never a REST header's
        shared = self.shared.digest(f"netconf {user}:{password}") if self.shared and pool else None
        if shared is not None and self.shared and self.shared.known(pool, shared):
            return True
        if not verify_password(password, self.password_hash):
            return False
        if shared is not None and self.shared:
            self.shared.remember(pool, shared)
        return True

    async def __call__(self, user: str, password: str, peer: str) -> bool:
        if self.failed.retry_after(peer):
            auth_log.warning("too many failed NETCONF logins from %s: refused unchecked", peer)
            return False
        digest = self._digest(user, password)
        if digest in self.verified:
            return True
        ok = await asyncio.get_running_loop().run_in_executor(self.threads, self._verify, user, password)
        if ok:
            if len(self.verified) > 64:
                self.verified.clear()
            self.verified.add(digest)
        else:
            self.failed.failed(peer)
            auth_log.warning("failed NETCONF login from %s", peer)
        return ok


class _SshServer(asyncssh.SSHServer):
    def __init__(self, check: PasswordCheck) -> None:
        self.check = check
        self.peer = "?"

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        peer = conn.get_extra_info("peername")
        self.peer = str(peer[0]) if peer else "?"

    def begin_auth(self, username: str) -> bool:
        return True  # every login needs a password

    def password_auth_supported(self) -> bool:
        return True

    async def validate_password(self, username: str, password: str) -> bool:
        return await self.check(username, password, self.peer)


class NetconfSsh:
    """The listener; ``start`` binds it, ``close`` ends it and every session."""

    def __init__(self, server: rpc.Server, host_key: bytes, check: PasswordCheck) -> None:
        self.server = server
        self.host_key = asyncssh.import_private_key(host_key)
        self.check = check
        self.acceptor: asyncssh.SSHAcceptor | None = None
        self.processes: set[asyncssh.SSHServerProcess] = set()

    async def start(self, host: str, port: int) -> None:
        self.acceptor = await asyncssh.listen(
            host, port, server_factory=lambda: _SshServer(self.check),
            server_host_keys=[self.host_key], process_factory=self._process, encoding=None,
            allow_pty=False, agent_forwarding=False, x11_forwarding=False, allow_scp=False,
            sftp_factory=None, login_timeout=30, keepalive_interval=15, keepalive_count_max=4,
            reuse_address=True)

    @property
    def port(self) -> int:
        assert self.acceptor is not None
        return self.acceptor.get_port()

    async def close(self) -> None:
        if self.acceptor is not None:
            self.acceptor.close()
            await self.acceptor.wait_closed()
        for p in list(self.processes):
            p.exit(0)

    async def _process(self, process: asyncssh.SSHServerProcess) -> None:
        if process.subsystem != "netconf":
            process.stderr.write(b"this server serves the netconf subsystem only\n")
            process.exit(1)
            return
        self.processes.add(process)
        peer = process.get_extra_info("peername")
        user = str(process.get_extra_info("username") or "")
        try:
            await self._session(process, user, str(peer[0]) if peer else "?")
        finally:
            self.processes.discard(process)

    async def _session(self, process: asyncssh.SSHServerProcess, user: str, peer: str) -> None:
        deframer = Deframer()
        write_lock = asyncio.Lock()

        async def send(message: bytes) -> None:
            async with write_lock:  # a reply and a notification never interleave
                process.stdout.write(frame(message, deframer.chunked))
                await process.stdout.drain()

        async def close() -> None:
            process.exit(0)

        session = self.server.open(user, peer, send, close)
        log.info("session %d: %s from %s", session.id, user, peer)
        try:
            await send(rpc.hello(session.id))
            hello = await asyncio.wait_for(self._next(process, deframer), HELLO_TIMEOUT_S)
            if hello is None:
                return
            caps = rpc.client_capabilities(hello)
            if BASE_11 in caps:
                deframer.chunked = True
            elif BASE_10 not in caps:
                log.warning("session %d: the client has neither base:1.0 nor base:1.1", session.id)
                return
            while not session.closing:
                message = await self._next(process, deframer)
                if message is None:
                    break
                await send(await session.handle(message))
        except (RpcError, FramingError, TimeoutError) as e:
            log.warning("session %d: ended: %s", session.id, e)
        except (asyncssh.Error, ConnectionError, BrokenPipeError, asyncio.IncompleteReadError):
            pass
        finally:
            self.server.ended(session)
            log.info("session %d: closed", session.id)
            process.exit(0)

    @staticmethod
    async def _next(process: asyncssh.SSHServerProcess, deframer: Deframer) -> bytes | None:
        while True:
            message = deframer.pop()
            if message is not None:
                return message
            data = await process.stdin.read(READ_SIZE)
            if not data:
                return None
            deframer.push(data)


async def serve(server: rpc.Server, host_key: bytes, check: PasswordCheck, host: str, port: int,
                on_listening: Callable[[int], None] | None = None) -> NetconfSsh:
    ssh = NetconfSsh(server, host_key, check)
    await ssh.start(host, port)
    if on_listening is not None:
        on_listening(ssh.port)
    return ssh
