"""A real trap receiver for the tests: Debian's snmptrapd, with a v2c community and a v3
user (SHA-256 / AES) for one sender's engine ID, logging each trap on one line."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

COMMUNITY = "esc-test-community"
USER, AUTH_KEY, PRIV_KEY = "esctrap", "auth-pass-1234", "priv-pass-5678"


class TrapReceiver:
    def __init__(
        self, workdir: Path, address: str, port: int, engine_ids: list[str], prefix: list[str] | None = None
    ) -> None:
        """``prefix``: how to run it elsewhere (``ip netns exec NS``)."""
        self.dir, self.address, self.port = workdir, address, port
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log = self.dir / "traps.log"
        conf = self.dir / "snmptrapd.conf"
        conf.write_text(
            f"authCommunity log {COMMUNITY}\n"
            + "".join(f"createUser -e 0x{e} {USER} SHA-256 {AUTH_KEY} AES {PRIV_KEY}\n" for e in engine_ids)
            + f"authUser log {USER} priv\n"
        )
        host = f"udp6:[{address}]" if ":" in address else f"udp:{address}"
        argv = [
            *(prefix or []),
            "snmptrapd",
            "-f",
            "-n",
            "-On",
            "-M",
            "/nonexistent",
            "-m",
            "",
            "-Lf",
            str(self.log),
            "-F",
            "TRAP %P|%v\n",
            "-C",
            "-c",
            str(conf),
            f"{host}:{port}",
        ]
        env = {**os.environ, "SNMP_PERSISTENT_DIR": str(self.dir / "persist"), "MIBS": ""}
        self.proc = subprocess.Popen(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 10
        while "NET-SNMP version" not in self._text():
            assert self.proc.poll() is None, f"snmptrapd exited {self.proc.returncode}"
            assert time.monotonic() < deadline, "snmptrapd did not start"
            time.sleep(0.05)

    def _text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def traps(self) -> list[dict[str, str]]:
        """Each trap: its varbinds by numeric OID (values as snmptrapd prints them, quotes
        removed), and ``security`` (the version, community or user)."""
        out = []
        for line in self._text().splitlines():
            if not line.startswith("TRAP "):
                continue
            security, _, binds = line[5:].partition("|")
            trap = {"security": security}
            for vb in binds.split("\t"):
                m = re.match(r"\s*\.?([\d.]+) = (?:[\w-]+: )?(.*)$", vb)
                if m:
                    trap[m[1]] = m[2].strip().strip('"')
            out.append(trap)
        return out

    def wait(self, trap_oid: str, timeout: float = 15.0, **varbinds: str) -> dict[str, str]:
        """The first trap of ``trap_oid`` whose varbinds (OID=value) match."""
        deadline = time.monotonic() + timeout
        while True:
            for t in self.traps():
                if t.get("1.3.6.1.6.3.1.1.4.1.0", "").lstrip(".") == trap_oid and all(
                    t.get(k) == v for k, v in varbinds.items()
                ):
                    return t
            if time.monotonic() > deadline:
                raise AssertionError(f"no trap {trap_oid} {varbinds}; got {self.traps()}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
