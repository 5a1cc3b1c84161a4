"""PostgreSQL adapter: init, argv, observation, promote, rewind, clone. No HA policy here.

Node-specific settings (socket dir, port, primary_conninfo) go on the command
line, never into PGDATA: pg_rewind copies postgresql.conf, postgresql.auto.conf
and pg_hba.conf from the other node, so the files in PGDATA are
identical on both nodes. ``synchronous_standby_names`` is set with ALTER SYSTEM
and re-applied by the agent every tick, so a copied value does no harm.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from esc.config import PG_BIN, NodeConfig, NodePaths
from esc.roles import Db, DbView

PG_USER = "postgres"
REPL_USER = "replicator"
PEER_SLOT = "esc_peer"  # on each node, the physical replication slot its peer streams from
MAX_SLOT_WAL_KEEP = "2GB"  # WAL a slot may hold (a standby away longer is cloned)

POSTGRESQL_CONF = f"""
# --- managed by esc: identical on both nodes (pg_rewind copies this file) ---
# listen_addresses, ssl and its files: node-specific, on the command line (server_argv)
max_connections = 60
shared_buffers = '32MB'
wal_level = replica
max_wal_senders = 10
max_replication_slots = 10
wal_log_hints = on
hot_standby = on
# off: with a replication slot, the standby's xmin would stay in the slot while the
# standby is away and hold back VACUUM on the active; the standby runs no queries
hot_standby_feedback = off
# WAL is kept by the slot named esc_peer on each node (keep_peer_slot), not by size:
# pg_rewind copies every WAL file its source has, so WAL kept "just in case" is
# copied on every rejoin; a standby away too long loses the slot and is cloned
wal_keep_size = 0
max_slot_wal_keep_size = '{MAX_SLOT_WAL_KEEP}'
wal_recycle = off  # no segments renamed ahead of the write position for pg_rewind to copy
synchronous_commit = remote_apply  # acknowledged = visible on the standby too
wal_sender_timeout = '3s'
wal_receiver_timeout = '3s'
wal_receiver_status_interval = '1s'
wal_retrieve_retry_interval = '200ms'
logging_collector = off
log_line_prefix = '%m [%p] '
log_min_messages = warning
"""


def lsn_to_int(lsn: str | None) -> int:
    if not lsn:
        return 0
    hi, lo = lsn.split("/")
    return (int(hi, 16) << 32) + int(lo, 16)


# The replication role: no SUPERUSER, only what streaming, pg_basebackup, pg_rewind and
# the agent's look at its peer need (pg_rewind's documented grants; CHECKPOINT before a
# rewind; the peer's checkpoint). Idempotent: the agent applies it whenever its database
# becomes a primary, so a pair installed with a SUPERUSER role is brought down to this.
REPLICATION_ROLE_SQL = [
    f"ALTER ROLE {REPL_USER} NOSUPERUSER NOCREATEDB NOCREATEROLE LOGIN REPLICATION",
    f"GRANT EXECUTE ON FUNCTION pg_catalog.pg_ls_dir(text, boolean, boolean) TO {REPL_USER}",
    f"GRANT EXECUTE ON FUNCTION pg_catalog.pg_stat_file(text, boolean) TO {REPL_USER}",
    f"GRANT EXECUTE ON FUNCTION pg_catalog.pg_read_binary_file(text) TO {REPL_USER}",
    f"GRANT EXECUTE ON FUNCTION pg_catalog.pg_read_binary_file(text, bigint, bigint, boolean) "
    f"TO {REPL_USER}",
    f"GRANT EXECUTE ON FUNCTION pg_catalog.pg_control_checkpoint() TO {REPL_USER}",
    f"GRANT pg_checkpoint TO {REPL_USER}",
]


def lsn_text(lsn: int) -> str:
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def run_as_postgres(argv: list[str], timeout: float = 120, env: dict | None = None,
                    ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, user=PG_USER, group=PG_USER, capture_output=True, text=True, timeout=timeout,
        env={**os.environ, **(env or {})}, cwd="/",
    )


def chown_postgres(path: Path) -> None:
    shutil.chown(path, PG_USER, PG_USER)


# Who may be whom over the unix socket (peer authentication: the kernel says who the
# client is): root (the agent, escadm) and postgres as anyone they need, the controller's
# user as the esc role only, never as a superuser.
IDENT_MAP = "esc"
IDENT_CONF = f"""# --- managed by esc ---
{IDENT_MAP} root postgres
{IDENT_MAP} root esc
{IDENT_MAP} postgres postgres
{IDENT_MAP} esc esc
"""


def hba_conf(cfg: NodeConfig) -> str:
    """Over the socket: peer authentication through IDENT_CONF. Over TCP only the
    replication role, only from the two nodes, only over TLS with the pair's
    certificate (verify-ca: it is its own CA; the password too)."""
    lines = ["# --- managed by esc: identical on both nodes ---",
             f"local all all peer map={IDENT_MAP}"]
    if cfg.ha:
        for addr in cfg.ha.replication or cfg.ha.node_list:  # the replication network's
            plen = 32 if ":" not in addr else 128
            for db in ("replication", "all"):
                lines.append(f"hostssl {db} {REPL_USER} {addr}/{plen} scram-sha-256 "
                             "clientcert=verify-ca")
    return "\n".join(lines) + "\n"


def tls_files(paths: NodePaths) -> dict[str, Path]:
    """The pair's certificate and key as PostgreSQL and libpq read them: copies owned by
    the postgres user (the server and pg_rewind run as it; libpq wants its key 0600 and
    its own), in the socket directory (0700, postgres)."""
    d = paths.pg_socket_dir
    return {"cert": d / "peer.crt", "key": d / "peer.key", "ca": d / "peer-ca.crt"}


def install_tls_files(paths: NodePaths) -> bool:
    """Copy the pair's certificate, key and the certificates it trusts (esc.tls) for
    PostgreSQL; True when a file changed (a running server then reloads to use it)."""
    files = tls_files(paths)
    trust = paths.peer_trust if paths.peer_trust.exists() else paths.peer_cert
    changed = False
    for src, dst in ((paths.peer_cert, files["cert"]), (paths.peer_key, files["key"]),
                     (trust, files["ca"])):
        data = src.read_bytes()
        try:
            if dst.read_bytes() == data:
                continue
        except OSError:
            pass
        tmp = dst.with_name(dst.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        chown_postgres(tmp)
        os.replace(tmp, dst)
        changed = True
    return changed


def prepare_dirs(paths: NodePaths, cfg: NodeConfig) -> None:
    """Socket dir 0750, postgres and the controller's group: root, postgres and the
    controller reach the socket (which authenticates each by peer: hba_conf); the
    certificate copies in it are postgres's, 0600."""
    from esc.privileges import SERVICE_USER, ensure_service_user

    ensure_service_user()
    sock = paths.pg_socket_dir
    sock.mkdir(parents=True, exist_ok=True)
    shutil.chown(sock, PG_USER, SERVICE_USER)
    os.chmod(sock, 0o750)
    pgdata = paths.pgdata(cfg)
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    chown_postgres(pgdata.parent)
    if run_as_postgres(["test", "-w", str(pgdata.parent)], timeout=10).returncode != 0:
        raise RuntimeError(f"PostgreSQL runs as user {PG_USER} and cannot reach {pgdata.parent}: "
                           f"make {paths.root} and its parent directories traversable (chmod o+x)")


def initdb(paths: NodePaths, cfg: NodeConfig) -> None:
    pgdata = paths.pgdata(cfg)
    prepare_dirs(paths, cfg)
    res = run_as_postgres([str(PG_BIN / "initdb"), "-D", str(pgdata), "-U", PG_USER,
                           "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8"])
    if res.returncode != 0:
        raise RuntimeError(f"initdb failed: {res.stderr.strip()[-500:]}")
    write_managed_files(paths, cfg)


def write_managed_files(paths: NodePaths, cfg: NodeConfig) -> None:
    pgdata = paths.pgdata(cfg)
    conf = pgdata / "postgresql.conf"
    text = conf.read_text()
    marker = "# --- managed by esc"
    if marker in text:
        text = text[: text.index(marker)].rstrip("\n") + "\n"
    conf.write_text(text + POSTGRESQL_CONF)
    (pgdata / "pg_hba.conf").write_text(hba_conf(cfg))
    (pgdata / "pg_ident.conf").write_text(IDENT_CONF)
    for f in ("postgresql.conf", "pg_hba.conf", "pg_ident.conf"):
        chown_postgres(pgdata / f)


def conninfo_peer(paths: NodePaths, cfg: NodeConfig, dbname: str | None = None,
                  app: str | None = None) -> str:
    """libpq conninfo to the peer. Only the walreceiver uses this node's own
    application_name: that is the name synchronous_standby_names waits for."""
    assert cfg.ha
    tls = tls_files(paths)
    parts = [f"host={cfg.ha.replication_pair[1]}", f"port={cfg.pg_port}", f"user={REPL_USER}",
             f"passfile={paths.pgpass}", f"application_name={app or 'esc_' + cfg.name + '_admin'}",
             "connect_timeout=2", "keepalives_idle=2", "keepalives_interval=1",
             "keepalives_count=2", "tcp_user_timeout=3000",
             # the peer must present the pair's certificate (no host name in it to check)
             "sslmode=verify-ca", f"sslrootcert={tls['ca']}", f"sslcert={tls['cert']}",
             f"sslkey={tls['key']}"]
    if dbname:
        parts.append(f"dbname={dbname}")
    return " ".join(parts)


def server_argv(paths: NodePaths, cfg: NodeConfig) -> list[str]:
    argv = [str(PG_BIN / "postgres"), "-D", str(paths.pgdata(cfg)),
            "-c", f"port={cfg.pg_port}",
            "-c", f"unix_socket_directories={paths.pg_socket_dir}",
            "-c", f"cluster_name={cfg.name}"]
    if cfg.ha:
        tls = tls_files(paths)
        # the node's own address on the replication network only: never the VIP (a client
        # reaching the database through it), never the northbound; TLS with the pair's
        # certificate
        argv += ["-c", f"listen_addresses={cfg.ha.replication_pair[0]}",
                 "-c", "ssl=on", "-c", f"ssl_cert_file={tls['cert']}",
                 "-c", f"ssl_key_file={tls['key']}", "-c", f"ssl_ca_file={tls['ca']}",
                 "-c", "ssl_min_protocol_version=TLSv1.3",
                 "-c", f"primary_conninfo={conninfo_peer(paths, cfg, app=cfg.ha.self_name)}",
                 "-c", f"primary_slot_name={PEER_SLOT}"]
    else:
        argv += ["-c", "listen_addresses="]  # the unix socket only
    return argv


def has_data(pgdata: Path) -> bool:
    return (pgdata / "PG_VERSION").exists()


def set_standby_signal(pgdata: Path, on: bool) -> None:
    sig = pgdata / "standby.signal"
    if on and not sig.exists():
        sig.touch()
        chown_postgres(sig)
    elif not on:
        sig.unlink(missing_ok=True)


def local_conninfo(paths: NodePaths, cfg: NodeConfig, dbname: str = "postgres") -> str:
    return (f"host={paths.pg_socket_dir} port={cfg.pg_port} user={PG_USER} dbname={dbname} "
            "connect_timeout=2 application_name=esc-agent")


OBSERVE_SQL = """
SELECT pg_is_in_recovery(),
       CASE WHEN pg_is_in_recovery()
            THEN coalesce(pg_last_wal_replay_lsn(), pg_last_wal_receive_lsn())::text
            ELSE pg_current_wal_lsn()::text END,
       CASE WHEN pg_is_in_recovery() THEN (SELECT timeline_id FROM pg_control_checkpoint())
            -- a primary's current timeline (its checkpoint's lags after a promotion)
            ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END,
       (SELECT received_tli FROM pg_stat_wal_receiver),
       (SELECT system_identifier FROM pg_control_system())::text,
       current_setting('synchronous_standby_names'),
       (SELECT status FROM pg_stat_wal_receiver),
       (SELECT row(state, sync_state, flush_lsn::text)::text FROM pg_stat_replication
         WHERE application_name = %(peer)s ORDER BY backend_start DESC LIMIT 1),
       (SELECT checkpoint_lsn::text || ' ' || redo_lsn::text FROM pg_control_checkpoint())
"""


class LocalDb:
    """A cached connection to the local server over its unix socket."""

    def __init__(self, paths: NodePaths, cfg: NodeConfig) -> None:
        self.paths, self.cfg = paths, cfg
        self.conn: psycopg.Connection | None = None
        self.peer_name = cfg.ha.peer_name if cfg.ha else ""
        self.peer_slot_from: int | None = None  # the slot's restart_lsn, as last read

    def close(self) -> None:
        if self.conn is not None:
            try:
                self.conn.close()
            except Exception:
                pass
            self.conn = None

    def _connect(self) -> psycopg.Connection:
        if self.conn is None or self.conn.closed:
            self.conn = psycopg.connect(local_conninfo(self.paths, self.cfg), autocommit=True)
        return self.conn

    def execute(self, sql: str, params: dict | tuple | None = None) -> list[tuple]:
        try:
            cur = self._connect().execute(sql, params)
            return cur.fetchall() if cur.description else []
        except psycopg.Error:
            self.close()
            raise

    def observe(self, running: bool, from_lsn: int | None) -> DbView:
        """``from_lsn``: every commit past it waited for the peer (None while synchronous
        replication is not proven in force, see prove_sync_in_force: never complete)."""
        pgdata = self.paths.pgdata(self.cfg)
        if not running:
            return DbView(state=Db.STOPPED if has_data(pgdata) else Db.ABSENT)
        try:
            row = self.execute(OBSERVE_SQL, {"peer": self.peer_name})[0]
        except psycopg.Error:
            return DbView(state=Db.STARTING)
        in_recovery, lsn, ckpt_tli, recv_tli, sysid, ssn, wr_status, repl, ckpt = row
        checkpoint, _, redo = (ckpt or "").partition(" ")
        view = DbView(
            state=Db.STANDBY if in_recovery else Db.PRIMARY,
            timeline=max(ckpt_tli or 0, recv_tli or 0, wal_timeline(pgdata)),
            lsn=lsn_to_int(lsn),
            system_id=sysid or "",
            streaming=wr_status == "streaming",
            alone=not ssn.strip(),
            checkpoint_lsn=lsn_to_int(checkpoint),
            redo_lsn=lsn_to_int(redo),
        )
        if not in_recovery and repl:
            state, sync_state, flush = repl.strip("()").split(",")
            streaming = state == "streaming"
            complete = (streaming and sync_state == "sync" and not view.alone
                        and from_lsn is not None and lsn_to_int(flush) >= from_lsn)
            view = DbView(**{**view.__dict__, "peer_streaming": streaming,
                             "peer_complete": complete})
        return view

    def set_sync(self, peer_name: str | None) -> None:
        """Set synchronous_standby_names and ask every process to reload it. Commits
        start waiting only once the checkpointer has read it: see prove_sync_in_force."""
        value = f'"{peer_name}"' if peer_name else ""
        self.execute(f"ALTER SYSTEM SET synchronous_standby_names = '{value}'")
        self.execute("SELECT pg_reload_conf()")

    def keep_peer_slot(self, keep_from: int | None) -> str | None:
        """Keep the replication slot the peer streams from, and what it must keep.

        On a primary the peer's walreceiver moves it; it must exist before the peer
        connects and is made again if PostgreSQL gave it up (past
        max_slot_wal_keep_size). On a standby it is the WAL the *peer* will need
        after a failover: a rewind of the old active starts its replay at its last
        checkpoint before the divergence, and the new active must still have the WAL
        from there, while it copies as little else as possible. ``keep_from`` is the
        redo position of the active's latest checkpoint that this standby has
        replayed past; the slot moves up to it (never back). Returns what changed,
        for the log, or None."""
        rows = self.execute("SELECT restart_lsn::text, wal_status, active, pg_is_in_recovery() "
                            "FROM pg_replication_slots WHERE slot_name = %s", (PEER_SLOT,))
        self.peer_slot_from = None
        if rows:
            restart, wal_status, active, in_recovery = rows[0]
            if restart is not None and wal_status != "lost":
                self.peer_slot_from = lsn_to_int(restart)
                if in_recovery and keep_from and keep_from > self.peer_slot_from:
                    self.execute("SELECT pg_replication_slot_advance(%s, %s::pg_lsn)",
                                 (PEER_SLOT, lsn_text(keep_from)))
                    self.peer_slot_from = keep_from
                return None
            if active:
                return None  # its walsender is being terminated; dropped next time
            self.execute("SELECT pg_drop_replication_slot(%s)", (PEER_SLOT,))
            why = "made again: PostgreSQL gave it up (max_slot_wal_keep_size)"
        else:
            why = "made"
        self.execute("SELECT pg_create_physical_replication_slot(%s, true)", (PEER_SLOT,))
        return f"replication slot {PEER_SLOT} {why}"

    def least_privilege_replication(self) -> bool:
        """On a primary: make the replication role what REPLICATION_ROLE_SQL says; True if
        it was a superuser until now."""
        rows = self.execute("SELECT rolsuper FROM pg_roles WHERE rolname = %s", (REPL_USER,))
        if not rows:
            return False
        # The agent's loop runs this: its commit must never wait for a standby that is
        # not there (synchronous_standby_names may name the peer already). The role is
        # not acknowledged data; it reaches the standby with the next WAL it streams.
        try:
            conn = self._connect()
            with conn.transaction():
                conn.execute("SET LOCAL synchronous_commit = local")
                for stmt in REPLICATION_ROLE_SQL:
                    conn.execute(stmt)
        except psycopg.Error:
            self.close()
            raise
        return bool(rows[0][0])

    def set_replication_password(self, password: str) -> None:
        """On a primary: the replication role's new password (the pair renewed its
        material). Committed locally: it reaches the standby with the next WAL."""
        try:
            conn = self._connect()
            with conn.transaction():
                conn.execute("SET LOCAL synchronous_commit = local")
                conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                    sql.Identifier(REPL_USER), sql.Literal(password)))
        except psycopg.Error:
            self.close()
            raise

    def promote(self, timeout: float = 10.0) -> None:
        # A promoted node must not inherit a sync standby name and block every
        # commit; the loop sets it again once the peer streams.
        self.execute("ALTER SYSTEM SET synchronous_standby_names = ''")
        self.execute("SELECT pg_reload_conf()")
        if not self.execute("SELECT pg_is_in_recovery()")[0][0]:
            return
        # pg_promote(wait => true) looks every 100 ms whether the promotion is done, and
        # a failover waited for that look: ~50 ms on average after the database could
        # already commit. Ask, then look every 5 ms.
        if not self.execute("SELECT pg_promote(false)")[0][0]:
            raise RuntimeError("pg_promote refused to signal the promotion")
        deadline = time.monotonic() + timeout
        while self.execute("SELECT pg_is_in_recovery()")[0][0]:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the promotion did not finish within {timeout}s")
            time.sleep(0.005)


def prove_sync_in_force(conninfo: str, timeout: float = 60.0) -> int:
    """After ``set_sync(peer)``: return an LSN past which every commit waits for the peer.

    Commits wait only once ``WalSndCtl->sync_standbys_defined`` is set, and only the
    checkpointer sets it, when it processes the reload (syncrep.c). A busy checkpointer
    (a long fsync on a slow disk) does that late, and commits in between are
    acknowledged without the standby. So: signal the checkpointer ourselves (once
    ``kill`` returns the signal is pending there), then request a CHECKPOINT: the
    checkpointer handles a pending reload before it starts the checkpoint we wait for.
    When CHECKPOINT returns, the flag is set; every commit that did not wait was
    inserted before, so the WAL insert position now bounds them all. Blocking: the
    agent runs it off its loop, on its own connection."""
    with psycopg.connect(conninfo, autocommit=True) as c:
        c.execute(f"SET statement_timeout = {int(timeout * 1000)}")
        row = c.execute("SELECT pid FROM pg_stat_activity WHERE backend_type = 'checkpointer'"
                        ).fetchone()
        if row is None:
            raise RuntimeError("no checkpointer process to prove synchronous replication with")
        os.kill(int(row[0]), signal.SIGHUP)
        c.execute("CHECKPOINT")
        return lsn_to_int(c.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()[0])


def checkpoint_peer(paths: NodePaths, cfg: NodeConfig) -> None:
    """pg_rewind right after a promotion needs a CHECKPOINT on the source."""
    with psycopg.connect(conninfo_peer(paths, cfg, "postgres"), autocommit=True) as c:
        c.execute("CHECKPOINT")


PEER_POSITION_SQL = """
SELECT pg_is_in_recovery(),
       CASE WHEN pg_is_in_recovery() THEN (SELECT timeline_id FROM pg_control_checkpoint())
            ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END
"""


def peer_position(paths: NodePaths, cfg: NodeConfig) -> tuple[bool, int] | None:
    """(the peer's database is a primary, its current timeline); None if unreachable."""
    try:
        with psycopg.connect(conninfo_peer(paths, cfg, "postgres"), autocommit=True) as c:
            in_recovery, tli = c.execute(PEER_POSITION_SQL).fetchone()
            return not in_recovery, int(tli or 0)
    except psycopg.Error:
        return None


def peer_is_primary(paths: NodePaths, cfg: NodeConfig) -> bool:
    pos = peer_position(paths, cfg)
    return pos is not None and pos[0]


def rewind(paths: NodePaths, cfg: NodeConfig) -> subprocess.CompletedProcess[str]:
    return run_as_postgres([str(PG_BIN / "pg_rewind"), "-D", str(paths.pgdata(cfg)),
                            "--source-server", conninfo_peer(paths, cfg, "postgres")],
                           timeout=600)


ASIDE = ".aside-"  # pgdata.aside-<UTC time>: a data directory a clone replaced


@dataclass(frozen=True)
class AsideCopy:
    path: Path
    bytes: int
    made_at: str  # UTC, from the name


def dir_bytes(path: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(dirpath, f)).st_size
            except OSError:
                pass
    return total


def aside_copies(pgdata: Path) -> list[AsideCopy]:
    """Data directories moved aside by earlier clones, newest first (the size is read
    from the note written when it was moved; walking a large one every status is slow)."""
    out = []
    for p in pgdata.parent.glob(pgdata.name + ASIDE + "*"):
        if not p.is_dir():
            continue  # the size notes
        try:
            size = int((p.parent / (p.name + ".bytes")).read_text())
        except (OSError, ValueError):
            size = -1
        out.append(AsideCopy(p, size, p.name.rsplit(ASIDE, 1)[1]))
    return sorted(out, key=lambda a: a.made_at, reverse=True)


def aside_stamp() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())


def clone(paths: NodePaths, cfg: NodeConfig) -> AsideCopy | None:
    """Fresh copy of the peer's database (pg_basebackup) in place of the local one.

    The local data directory is never deleted: it is moved aside (``pgdata.aside-TIME``),
    and only the newest aside copy is kept, so repeated rejoins do not fill the disk. A
    failed clone leaves the local data where it was. Returns the copy moved aside."""
    pgdata = paths.pgdata(cfg)
    tmp = pgdata.with_name(pgdata.name + ".clone")
    shutil.rmtree(tmp, ignore_errors=True)  # a half-made copy of the peer's data
    prepare_dirs(paths, cfg)
    res = run_as_postgres([str(PG_BIN / "pg_basebackup"), "-D", str(tmp), "-X", "stream",
                           "-c", "fast", "-d", conninfo_peer(paths, cfg)], timeout=1800)
    if res.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        raise RuntimeError(f"pg_basebackup failed: {res.stderr.strip()[-500:]}")
    aside = None
    if pgdata.exists():
        older = aside_copies(pgdata)
        stamp = aside_stamp()
        target = pgdata.with_name(pgdata.name + ASIDE + stamp)
        size = dir_bytes(pgdata)
        pgdata.rename(target)
        target.with_name(target.name + ".bytes").write_text(f"{size}\n")
        aside = AsideCopy(target, size, stamp)
        for old in older:  # keep the newest only
            if old.path != target:
                shutil.rmtree(old.path, ignore_errors=True)
                old.path.with_name(old.path.name + ".bytes").unlink(missing_ok=True)
    tmp.rename(pgdata)
    os.chmod(pgdata, 0o700)
    return aside


WAL_SEGMENT = re.compile(r"^([0-9A-F]{8})[0-9A-F]{16}$")
_wal_tli_cache: dict[str, tuple[int, int]] = {}  # pg_wal path -> (mtime_ns, timeline)


def wal_timeline(pgdata: Path) -> int:
    """The latest timeline this cluster has WAL of: the highest timeline among the WAL
    segment files in pg_wal. Not the history files: a diverged old primary fetches the
    new timeline's history file while it tries to stream, without being on it; a node
    that wrote or replayed on a timeline has a segment of it. (pg_control's checkpoint
    timeline lags after a promotion until the next checkpoint.) Cached by the
    directory's mtime, since the loop asks every tick."""
    wal = pgdata / "pg_wal"
    try:
        mtime = wal.stat().st_mtime_ns
    except OSError:
        return 0
    cached = _wal_tli_cache.get(str(wal))
    if cached and cached[0] == mtime:
        return cached[1]
    tli = 0
    try:
        for name in os.listdir(wal):
            m = WAL_SEGMENT.match(name)
            if m:
                tli = max(tli, int(m.group(1), 16))
    except OSError:
        return 0
    _wal_tli_cache[str(wal)] = (mtime, tli)
    return tli


def stopped_timeline(pgdata: Path, control: dict[str, str]) -> int:
    """The timeline of a stopped cluster: its last checkpoint's, or later if it has WAL
    of a later one (a promotion whose checkpoint had not happened yet)."""
    try:
        tli = int(control.get("Latest checkpoint's TimeLineID", "0"))
    except ValueError:
        tli = 0
    return max(tli, wal_timeline(pgdata))


def controldata(pgdata: Path) -> dict[str, str]:
    res = run_as_postgres([str(PG_BIN / "pg_controldata"), "-D", str(pgdata)], timeout=30)
    out = {}
    for line in res.stdout.splitlines():
        k, _, v = line.partition(":")
        out[k.strip()] = v.strip()
    return out


def wait_gone(pid: int, timeout: float = 10.0) -> bool:
    """A killed process lingers as a zombie until reaped."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().split(") ")[1].startswith("Z"):
                    time.sleep(0.05)
                    continue
        except FileNotFoundError:
            return True
        time.sleep(0.05)
    return False
