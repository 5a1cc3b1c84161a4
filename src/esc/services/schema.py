"""The controller's database schema (database ``esc``, owned by user ``esc``).

escmanager does not create it: doing so on the serve path would make listening
wait for the database. Whoever prepares the database (installer, or the agent
before the first ``serve``) calls :func:`ensure_schema` once, as user ``esc``.
"""

from __future__ import annotations

import psycopg

SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS deployments (
    id          bigserial   PRIMARY KEY,
    name        text        NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now()
)
"""


def ensure_schema(conn: psycopg.Connection) -> None:
    """Create the tables that do not exist yet, and commit. Safe to run again."""
    conn.execute(SCHEMA_SQL)
    conn.commit()
