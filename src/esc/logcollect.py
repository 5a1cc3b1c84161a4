"""``escadm log collect``: one archive of logs, configs without secrets, and status."""

from __future__ import annotations

import io
import json
import re
import tarfile
import time
from pathlib import Path

from esc.client import AgentClient, AgentDown
from esc.config import NodePaths

SECRET_FILES = {"secrets.json", "pgpass", "rest_credentials"}


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
    with tarfile.open(output, "w:gz") as tar:
        if paths.log.exists():
            for f in sorted(paths.log.iterdir()):
                if f.is_file():
                    tar.add(f, f"{base}/log/{f.name}")
        if paths.etc.exists():
            for f in sorted(paths.etc.iterdir()):
                if not f.is_file() or f.name in SECRET_FILES:
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
    output.chmod(0o600)
    return output
