"""The replication role made least-privileged by the agent, on a real PostgreSQL."""

from __future__ import annotations

import threading

import psycopg

from esc.ha import postgres


def test_the_role_loses_superuser_without_waiting_for_a_missing_standby(pg_server) -> None:
    """The agent's loop runs this on a new primary, whose commits may already wait for a
    standby that is not there: it must not hang the loop (it once did)."""
    admin = psycopg.connect(pg_server.conninfo("postgres", "postgres"), autocommit=True)
    db = postgres.LocalDb.__new__(postgres.LocalDb)  # its connection: the test server's
    db.conn = psycopg.connect(pg_server.conninfo("postgres", "postgres"), autocommit=True)
    try:
        admin.execute(f"DROP ROLE IF EXISTS {postgres.REPL_USER}")
        admin.execute(f"CREATE ROLE {postgres.REPL_USER} LOGIN SUPERUSER REPLICATION")
        admin.execute("ALTER SYSTEM SET synchronous_standby_names = 'nobody_streams'")
        admin.execute("SELECT pg_reload_conf()")
        result: list[bool] = []
        t = threading.Thread(target=lambda: result.append(db.least_privilege_replication()),
                             daemon=True)
        t.start()
        t.join(20)
        assert not t.is_alive(), "waited for a synchronous standby"
        assert result == [True]
        row = admin.execute("SELECT rolsuper, rolreplication, pg_has_role(%s, 'pg_checkpoint', "
                            "'member') FROM pg_roles WHERE rolname = %s",
                            (postgres.REPL_USER, postgres.REPL_USER)).fetchone()
        assert row == (False, True, True)
        assert db.least_privilege_replication() is False  # already so: nothing to report
    finally:
        admin.execute("ALTER SYSTEM RESET synchronous_standby_names")
        admin.execute("SELECT pg_reload_conf()")
        db.close()
        admin.execute(f"DROP OWNED BY {postgres.REPL_USER}")
        admin.execute(f"DROP ROLE IF EXISTS {postgres.REPL_USER}")
        admin.close()
