"""ensure_schema: idempotent, and brings the first version's database up to date."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from esc.services import schema


@pytest.fixture
def scratch_db(pg_server) -> Iterator[str]:
    """A new empty database owned by ``esc``."""
    admin = psycopg.connect(pg_server.conninfo("postgres", "postgres"), autocommit=True)
    admin.execute("DROP DATABASE IF EXISTS esc_scratch")
    admin.execute("CREATE DATABASE esc_scratch OWNER esc")
    try:
        yield pg_server.conninfo("esc", "esc_scratch")
    finally:
        admin.execute("DROP DATABASE esc_scratch WITH (FORCE)")
        admin.close()


def test_fresh_and_again(scratch_db: str) -> None:
    with psycopg.connect(scratch_db) as conn:
        schema.ensure_schema(conn)
        schema.ensure_schema(conn)
        tables = {r[0] for r in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")}
        assert tables == set(schema.TABLES)
        assert conn.execute("SELECT name FROM tenants").fetchall() == [("default",)]


def test_first_version_is_migrated(scratch_db: str) -> None:
    with psycopg.connect(scratch_db) as conn:
        conn.execute("CREATE TABLE deployments (id bigserial PRIMARY KEY, name text NOT NULL UNIQUE,"
                     " created_at timestamptz NOT NULL DEFAULT now())")
        conn.execute("INSERT INTO deployments (name) VALUES ('old-1'), ('old/2')")
        conn.commit()
        schema.ensure_schema(conn)
        schema.ensure_schema(conn)
        rows = conn.execute(
            "SELECT d.id, d.name, t.name, d.status, d.spec FROM deployments d"
            " JOIN tenants t ON t.id = d.tenant_id ORDER BY d.id").fetchall()
        assert rows == [(1, "old-1", "default", "deployed", {}), (2, "old/2", "default", "deployed", {})]
        # names are unique per tenant now, not per node
        conn.execute("INSERT INTO tenants (name) VALUES ('other')")
        conn.execute("INSERT INTO deployments (name, tenant_id) SELECT 'old-1', id FROM tenants"
                     " WHERE name = 'other'")
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute("INSERT INTO deployments (name, tenant_id) SELECT 'old-1', id FROM tenants"
                         " WHERE name = 'default'")
