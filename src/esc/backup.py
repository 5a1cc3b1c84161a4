"""``escadm backup`` and ``escadm restore``: the controller's data and the node's
configuration in one file.

A backup is a tar holding ``manifest.json`` (what, from where, and every table's row
count), ``esc.json`` (the node's configuration, for reference: password hashes, no
secrets) and ``esc.dump`` (``pg_dump -Fc`` of the ``esc`` database: one consistent
snapshot, taken on either node; a standby dumps its replica). Left out: the pair's own
event history (``ha_events``: it is the nodes', not the data's) and the REST
credential cache (``auth_verified``: keyed by the pair that wrote it).

A restore replaces the data of the active's database with the backup's, in one
transaction, and checks every table's row count against the manifest; the standby gets
it by replication. It is refused unless this node is the active and the pair is in
maintenance mode (the northbound refuses new requests meanwhile), and a file that is
not a whole backup is refused before anything is touched.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path

import psycopg
from psycopg import sql

from esc.config import PG_BIN, NodeConfig, NodePaths
from esc.ha.postgres import PG_USER, local_conninfo

FORMAT = 1
EXCLUDED = ("ha_events", "auth_verified")
MEMBERS = ("manifest.json", "esc.json", "esc.dump")


class BackupError(Exception):
    pass


def _table_counts(conn: psycopg.Connection) -> dict[str, int]:
    names = [r[0] for r in conn.execute(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1").fetchall()]
    out = {}
    for name in names:
        if name in EXCLUDED:
            continue
        row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(name)))
        out[name] = int(row.fetchone()[0])  # type: ignore[index]
    return out


def _pg(tool: str, paths: NodePaths, cfg: NodeConfig, *args: str) -> subprocess.CompletedProcess[bytes]:
    argv = [str(PG_BIN / tool), "-h", str(paths.pg_socket_dir), "-p", str(cfg.pg_port), "-U", PG_USER, *args]
    return subprocess.run(argv, capture_output=True, timeout=3600)


def backup(paths: NodePaths, cfg: NodeConfig, out: Path) -> dict:
    """Write the backup to ``out`` (0600, whole or not at all); its manifest."""
    try:
        with psycopg.connect(local_conninfo(paths, cfg, "esc"), connect_timeout=2) as conn:
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            in_recovery = conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]  # type: ignore[index]
            snapshot = None if in_recovery else \
                conn.execute("SELECT pg_export_snapshot()").fetchone()[0]  # type: ignore[index]
            counts = _table_counts(conn)
            # the dump reads the very snapshot the counts were taken in; a standby cannot
            # export one, so there the counts are taken again after the dump
            with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
                dump = Path(tmp) / "esc.dump"
                excluded = [x for t in EXCLUDED for x in ("-T", t)]
                snap = [f"--snapshot={snapshot}"] if snapshot else []
                res = _pg("pg_dump", paths, cfg, "-Fc", "-d", "esc", *snap, *excluded, "-f", str(dump))
                if res.returncode != 0:
                    raise BackupError(f"pg_dump failed: {res.stderr.decode(errors='replace').strip()}")
                if in_recovery:  # counts again after: equal, or the dump may differ from them
                    conn.rollback()
                    if _table_counts(conn) != counts:
                        raise BackupError("the data changed while the standby dumped it: run it again "
                                          "(or on the active)")
                manifest = {"format": FORMAT, "node": cfg.name, "made_at": time.time(),
                            "from": "standby" if in_recovery else "primary", "tables": counts,
                            "excluded": list(EXCLUDED)}
                part = Path(tmp) / "backup.tar"
                with tarfile.open(part, "w") as tar:
                    for name, data in (("manifest.json", json.dumps(manifest, indent=2).encode()),
                                       ("esc.json", paths.config.read_bytes())):
                        info = tarfile.TarInfo(name)
                        info.size, info.mtime, info.mode = len(data), int(time.time()), 0o600
                        tar.addfile(info, io.BytesIO(data))
                    tar.add(dump, arcname="esc.dump")
                os.chmod(part, 0o600)
                os.replace(part, out)
    except psycopg.Error as e:
        raise BackupError(f"the local database is not readable: {str(e).strip()}") from None
    return manifest


def read(src: Path, into: Path) -> dict:
    """Check ``src`` is a whole backup and extract it into ``into``; its manifest."""
    try:
        with tarfile.open(src, "r") as tar:
            names = tar.getnames()
            if sorted(names) != sorted(MEMBERS):
                held = ", ".join(names[:5]) or "nothing"
                raise BackupError(f"{src}: not a backup of this controller (it holds {held})")
            for name in MEMBERS:
                member = tar.getmember(name)
                if not member.isfile():
                    raise BackupError(f"{src}: {name} is not a file")
                f = tar.extractfile(member)
                assert f is not None
                (into / name).write_bytes(f.read())
    except (OSError, tarfile.TarError) as e:
        raise BackupError(f"{src}: not readable as a backup ({e})") from None
    try:
        manifest = json.loads((into / "manifest.json").read_text())
    except ValueError:
        raise BackupError(f"{src}: its manifest is not JSON") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or \
            not isinstance(manifest.get("tables"), dict):
        got = manifest.get("format") if isinstance(manifest, dict) else "?"
        raise BackupError(f"{src}: a backup of format {got}, this escadm reads format {FORMAT}")
    return manifest


def restore(paths: NodePaths, cfg: NodeConfig, src: Path, status: dict) -> dict:
    """Replace this active's data with the backup's (in maintenance mode only)."""
    role = status.get("role")
    mode = (status.get("op_mode") or {}).get("mode")
    if role not in ("ACTIVE", "STANDALONE"):
        raise BackupError(f"this node is {role}: restore on the active (the standby gets it by replication)")
    if mode != "maintenance":
        raise BackupError("the pair is in operation: set `escadm op_mode set --mode=maintenance` first "
                          "(the northbound then refuses new requests while the data is replaced)")
    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o755)  # pg_restore reads the dump
        manifest = read(src, Path(tmp))
        res = _pg("pg_restore", paths, cfg, "-d", "esc", "--clean", "--if-exists", "--single-transaction",
                  "--exit-on-error", str(Path(tmp) / "esc.dump"))
        if res.returncode != 0:
            why = res.stderr.decode(errors="replace").strip()
            raise BackupError(f"pg_restore failed, nothing changed: {why}")
    try:
        with psycopg.connect(local_conninfo(paths, cfg, "esc"), connect_timeout=2) as conn:
            counts = _table_counts(conn)
    except psycopg.Error as e:
        raise BackupError(f"restored, but the counts could not be checked: {e}") from None
    wrong = {t: (n, counts.get(t)) for t, n in manifest["tables"].items() if counts.get(t) != n}
    if wrong:
        raise BackupError(f"restored, but tables differ from the backup's counts: {wrong}")
    return manifest
