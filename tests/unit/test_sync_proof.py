"""Synchronous replication proven in force before the active vouches for its standby,
on a real PostgreSQL 15: commits wait only once the checkpointer has read the new
synchronous_standby_names, so an LSN taken right after pg_reload_conf() let commits
that never waited count as covered."""

from __future__ import annotations

import os
import signal
import threading
import time

import psycopg
import pytest

from esc.ha.postgres import lsn_to_int, prove_sync_in_force


@pytest.fixture
def private_pg(make_pg_cluster):  # type: ignore[no-untyped-def]
    # remote_apply: commits wait for a sync standby once one is named and in force
    with make_pg_cluster("synchronous_commit = remote_apply\n") as server:
        yield server


def _checkpointer(c: psycopg.Connection) -> int:
    row = c.execute("SELECT pid FROM pg_stat_activity WHERE backend_type = 'checkpointer'"
                    ).fetchone()
    assert row is not None
    return int(row[0])


def _commit_lsn(conninfo: str, timeout: float) -> int | None:
    """Commit one row; its commit LSN, or None if it was still waiting for a standby
    after ``timeout`` (then cancelled from another session: statement_timeout is off
    during a commit, and the standby waited for does not exist)."""
    with psycopg.connect(conninfo, autocommit=True) as c:
        c.execute("CREATE TABLE IF NOT EXISTS probe (n int)")
        pid = c.info.backend_pid
        out: dict[str, int] = {}

        def commit() -> None:
            with c.transaction():
                c.execute("INSERT INTO probe VALUES (1)")
                out["lsn"] = lsn_to_int(
                    c.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()[0])
            out["done"] = 1
        t = threading.Thread(target=commit)
        t.start()
        t.join(timeout)
        if t.is_alive():
            with psycopg.connect(conninfo, autocommit=True) as other:
                other.execute("SELECT pg_cancel_backend(%s)", (pid,))
            t.join(10)
            return None
        return out["lsn"] if "done" in out else None


def test_no_commit_past_the_proven_lsn_escapes_the_wait(private_pg) -> None:  # type: ignore[no-untyped-def]
    conninfo = private_pg.conninfo("postgres", "postgres")
    with psycopg.connect(conninfo, autocommit=True) as admin:
        # no sync standby configured yet: commits are immediate
        assert _commit_lsn(conninfo, 5) is not None
        ckpt = _checkpointer(admin)
        os.kill(ckpt, signal.SIGSTOP)  # a checkpointer busy in a long fsync
        result: dict[str, object] = {}
        try:
            admin.execute("ALTER SYSTEM SET synchronous_standby_names = '\"ghost\"'")
            admin.execute("SELECT pg_reload_conf()")
            time.sleep(0.3)
            # the hazard: acknowledged without waiting, although the setting is on
            escaped = _commit_lsn(conninfo, 5)
            assert escaped is not None

            def prove() -> None:
                try:
                    result["lsn"] = prove_sync_in_force(conninfo, timeout=30)
                except Exception as e:  # reported below
                    result["error"] = e
            t = threading.Thread(target=prove)
            t.start()
            time.sleep(1.0)
            assert "lsn" not in result, "proved while the checkpointer had not read the setting"
        finally:
            os.kill(ckpt, signal.SIGCONT)
        t.join(30)
        assert "error" not in result, result
        proven = result["lsn"]
        assert isinstance(proven, int) and proven > escaped
        # past the proven LSN, commits wait for the (absent) standby
        assert _commit_lsn(conninfo, 1.0) is None
        admin.execute("ALTER SYSTEM RESET synchronous_standby_names")
        admin.execute("SELECT pg_reload_conf()")
