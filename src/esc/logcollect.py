"""``escadm log collect``: one archive of logs, configs without secrets, and status."""

from __future__ import annotations

import io
import json
import os
import re
import tarfile
import time
from pathlib import Path

from esc.client import AgentClient, AgentDown
from esc.config import NodePaths

# Only these files of etc/esc go in (an allow-list: a file added later, maybe with a
# secret in it, stays out until it is named here); JSON ones with every key naming a
# password or secret removed, exabgp.conf without its MD5 key. The names of the files
# left out are listed in the archive (left-out.txt).
ETC_FILES = {"esc.json", "keepalived.conf", "exabgp.conf"}


def _redact(obj: object) -> object:
    if isinstance(obj, dict):
        return {k: ("<removed>" if "password" in k or "secret" in k else _redact(v))
                for k, v in obj.items()}
    if isinstance(obj, list):
        return [_redact(v) for v in obj]
    return obj


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime = len(data), int(time.time())
    tar.addfile(info, io.BytesIO(data))


def collect(paths: NodePaths, output: Path | None = None) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    if output is None:
        (paths.root / "var/tmp").mkdir(parents=True, exist_ok=True)
        output = paths.root / f"var/tmp/esc-logs-{stamp}.tar.gz"
    base = f"esc-logs-{stamp}"
    left_out: list[str] = []
    fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # 0600 from the start
    os.fchmod(fd, 0o600)  # an existing file keeps its mode through O_CREAT
    with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as tar:
        if paths.log.exists():
            for f in sorted(paths.log.iterdir()):
                if f.is_file():
                    tar.add(f, f"{base}/log/{f.name}")
        if paths.etc.exists():
            for f in sorted(paths.etc.rglob("*")):
                if not f.is_file():
                    continue
                if f.name not in ETC_FILES or f.parent != paths.etc:
                    left_out.append(str(f.relative_to(paths.etc)))
                    continue
                if f.name == "exabgp.conf":  # the BGP MD5 key
                    text = re.sub(r'(md5-password\s+)"[^"]*"', r'\1"<removed>"', f.read_text())
                    _add_bytes(tar, f"{base}/etc/{f.name}", text.encode())
                elif f.suffix == ".json":
                    data = json.dumps(_redact(json.loads(f.read_text())), indent=2).encode()
                    _add_bytes(tar, f"{base}/etc/{f.name}", data)
                else:
                    tar.add(f, f"{base}/etc/{f.name}")
        try:
            st: dict = AgentClient(paths).status()
        except AgentDown as e:
            st = {"role": "STOPPED", "error": str(e)}
        _add_bytes(tar, f"{base}/status.json", json.dumps(st, indent=2, default=str).encode())
        _add_bytes(tar, f"{base}/left-out.txt",
                   ("files of etc/esc not collected (secrets, keys, unknown):\n"
                    + "".join(f"{n}\n" for n in left_out)).encode())
    return output
