"""The controller's database schema (database ``esc``, owned by user ``esc``).

escmanager does not create it: doing so on the serve path would make listening
wait for the database. Whoever prepares the database (installer, or the agent
before the first ``serve``) calls :func:`ensure_schema` once, as user ``esc``.
It is idempotent, and brings a database made by an older version (``deployments``
with only ``id, name, created_at``, names unique across the node) up to date.

Tables:

- resources, one table per kind: ``tenants``, ``networks``, ``subnets`` (under a
  network), ``flavors``, ``images``, ``volumes`` (under a tenant), ``deployments``
  (under a tenant). Each row has its identity and relations as columns (name, parent
  id, foreign keys) and the validated attributes in ``spec`` (jsonb).
  ``created_tx`` is the transaction that created the row, so a replayed request
  finds its original transaction.
- ``deployment_refs``: one row per image, flavor or network a deployment uses;
  the foreign keys make deleting a resource in use impossible.
- ``vms``: the VMs of a deployment (status ``pending`` until the executor ran).
- ``transactions``: every accepted write, with its request; the work queue.
- ``callbacks``: one row per transaction result to POST to a client's callback URL.
- ``events``: notifications, listed by ``GET /v0/notifications?since=``.
- ``etsi_*``: the ETSI service's (esc.etsi.schema).
- ``auth_verified``: keyed digests of REST authorization headers already verified,
  so a new active need not run scrypt again (auth_cache.py).
"""

from __future__ import annotations

import psycopg

from esc.etsi.schema import ETSI_SQL
from esc.etsi.schema import TABLES as ETSI_TABLES

DEFAULT_TENANT = "default"

# Every table, children first (for TRUNCATE and for readers of this file).
TABLES = ("events", "callbacks", "transactions", "vms", "deployment_refs", "deployments",
          "volumes", "subnets", "images", "flavors", "networks", "tenants", "auth_verified",
          "portal_sessions", "portal_users", *ETSI_TABLES)

_RESOURCE_COLUMNS = """
    id          bigserial   PRIMARY KEY,
    name        text        NOT NULL,
    spec        jsonb       NOT NULL DEFAULT '{}',
    created_tx  bigint,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
"""

RESOURCES_SQL = [
    f"CREATE TABLE IF NOT EXISTS tenants ({_RESOURCE_COLUMNS}, UNIQUE (name))",
    f"CREATE TABLE IF NOT EXISTS networks ({_RESOURCE_COLUMNS}, UNIQUE (name))",
    f"CREATE TABLE IF NOT EXISTS flavors ({_RESOURCE_COLUMNS}, UNIQUE (name))",
    f"CREATE TABLE IF NOT EXISTS images ({_RESOURCE_COLUMNS}, UNIQUE (name))",
    f"""CREATE TABLE IF NOT EXISTS subnets ({_RESOURCE_COLUMNS},
        network_id bigint NOT NULL REFERENCES networks ON DELETE RESTRICT,
        UNIQUE (network_id, name))""",
    f"""CREATE TABLE IF NOT EXISTS volumes ({_RESOURCE_COLUMNS},
        tenant_id bigint NOT NULL REFERENCES tenants ON DELETE RESTRICT,
        UNIQUE (tenant_id, name))""",
    # The default tenant: home of the deployments of the bare POST /v0/deployments.
    f"""INSERT INTO tenants (name, spec)
        VALUES ('{DEFAULT_TENANT}', '{{"description": "built-in tenant"}}')
        ON CONFLICT (name) DO NOTHING""",
]

DEPLOYMENTS_SQL = [
    """CREATE TABLE IF NOT EXISTS deployments (
        id          bigserial   PRIMARY KEY,
        name        text        NOT NULL,
        created_at  timestamptz NOT NULL DEFAULT now(),
        tenant_id   bigint      NOT NULL REFERENCES tenants ON DELETE RESTRICT,
        spec        jsonb       NOT NULL DEFAULT '{}',
        status      text        NOT NULL DEFAULT 'deployed',
        created_tx  bigint,
        updated_at  timestamptz NOT NULL DEFAULT now()
    )""",
    "CREATE UNIQUE INDEX IF NOT EXISTS deployments_tenant_name ON deployments (tenant_id, name)",
    """CREATE TABLE IF NOT EXISTS deployment_refs (
        deployment_id bigint NOT NULL REFERENCES deployments ON DELETE CASCADE,
        image_id      bigint REFERENCES images ON DELETE RESTRICT,
        flavor_id     bigint REFERENCES flavors ON DELETE RESTRICT,
        network_id    bigint REFERENCES networks ON DELETE RESTRICT,
        CHECK (num_nonnulls(image_id, flavor_id, network_id) = 1)
    )""",
    "CREATE INDEX IF NOT EXISTS deployment_refs_deployment ON deployment_refs (deployment_id)",
    "CREATE INDEX IF NOT EXISTS deployment_refs_image ON deployment_refs (image_id)",
    "CREATE INDEX IF NOT EXISTS deployment_refs_flavor ON deployment_refs (flavor_id)",
    "CREATE INDEX IF NOT EXISTS deployment_refs_network ON deployment_refs (network_id)",
    """CREATE TABLE IF NOT EXISTS vms (
        id            bigserial   PRIMARY KEY,
        deployment_id bigint      NOT NULL REFERENCES deployments ON DELETE CASCADE,
        vm_group      text        NOT NULL,
        idx           integer     NOT NULL,
        name          text        NOT NULL,
        status        text        NOT NULL,
        interfaces    jsonb       NOT NULL DEFAULT '[]',
        created_at    timestamptz NOT NULL DEFAULT now(),
        updated_at    timestamptz NOT NULL DEFAULT now(),
        UNIQUE (deployment_id, name)
    )""",
    """CREATE TABLE IF NOT EXISTS transactions (
        id              bigserial   PRIMARY KEY,
        op              text        NOT NULL CHECK (op IN ('create', 'update', 'delete')),
        kind            text        NOT NULL,
        parent          text,
        name            text        NOT NULL,
        resource_key    text        NOT NULL,
        method          text        NOT NULL,
        path            text        NOT NULL,
        request         jsonb,
        request_hash    text        NOT NULL,
        idempotency_key text        UNIQUE,
        callback_url    text,
        xkeys           text[]      NOT NULL,
        skeys           text[]      NOT NULL DEFAULT '{}',
        status          text        NOT NULL DEFAULT 'accepted'
                        CHECK (status IN ('accepted', 'running', 'succeeded', 'failed')),
        status_code     integer,
        message         text,
        attempts        integer     NOT NULL DEFAULT 0,
        created_at      timestamptz NOT NULL DEFAULT now(),
        started_at      timestamptz,
        finished_at     timestamptz
    )""",
    "CREATE INDEX IF NOT EXISTS transactions_unfinished ON transactions (id)"
    " WHERE status IN ('accepted', 'running')",
    "CREATE INDEX IF NOT EXISTS transactions_resource ON transactions (kind, resource_key)",
    """CREATE TABLE IF NOT EXISTS callbacks (
        id              bigserial   PRIMARY KEY,
        transaction_id  bigint      NOT NULL REFERENCES transactions ON DELETE CASCADE,
        url             text        NOT NULL,
        status          text        NOT NULL DEFAULT 'pending'
                        CHECK (status IN ('pending', 'delivered', 'abandoned')),
        attempts        integer     NOT NULL DEFAULT 0,
        next_attempt_at timestamptz NOT NULL DEFAULT now(),
        last_error      text,
        last_status     integer,
        created_at      timestamptz NOT NULL DEFAULT now(),
        delivered_at    timestamptz
    )""",
    "CREATE INDEX IF NOT EXISTS callbacks_due ON callbacks (next_attempt_at) WHERE status = 'pending'",
    "CREATE INDEX IF NOT EXISTS callbacks_transaction ON callbacks (transaction_id)",
    """CREATE TABLE IF NOT EXISTS events (
        id              bigserial   PRIMARY KEY,
        type            text        NOT NULL,
        status          text,
        created_at      timestamptz NOT NULL DEFAULT now(),
        transaction_id  bigint,
        tenant          text,
        resource_type   text,
        resource        text,
        vm              text,
        message         text        NOT NULL DEFAULT ''
    )""",
    # REST authorization headers verified by either node (auth_cache.py)
    """CREATE TABLE IF NOT EXISTS auth_verified (
        digest       bytea       PRIMARY KEY,
        verified_at  timestamptz NOT NULL DEFAULT now()
    )""",
    # retention (retention.py) deletes by age
    "CREATE INDEX IF NOT EXISTS events_created ON events (created_at)",
    "CREATE INDEX IF NOT EXISTS transactions_finished ON transactions (finished_at)"
    " WHERE status IN ('succeeded', 'failed')",
]


# The portal (esc.portal): its users beside the installer's (who is in esc.json), and
# its sessions, replicated so that a browser on the VIP stays logged in after a failover.
# A session is kept by the sha256 of its cookie: a copy of the table logs nobody in.
PORTAL_SQL = [
    """CREATE TABLE IF NOT EXISTS portal_users (
        name          text        PRIMARY KEY,
        role          text        NOT NULL CHECK (role IN ('admin', 'viewer')),
        password_hash text        NOT NULL,
        created_at    timestamptz NOT NULL DEFAULT now()
    )""",
    """CREATE TABLE IF NOT EXISTS portal_sessions (
        digest      bytea       PRIMARY KEY,
        user_name   text        NOT NULL,
        role        text        NOT NULL CHECK (role IN ('admin', 'viewer')),
        csrf        text        NOT NULL,
        created_at  timestamptz NOT NULL DEFAULT now(),
        seen_at     timestamptz NOT NULL DEFAULT now(),
        expires_at  timestamptz NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS portal_sessions_expires ON portal_sessions (expires_at)",
]


# The first version's deployments: (id, name UNIQUE, created_at), one namespace per node.
# Its rows move to the default tenant.
MIGRATE_DEPLOYMENTS_SQL = [
    "ALTER TABLE deployments ADD COLUMN tenant_id bigint REFERENCES tenants ON DELETE RESTRICT",
    f"""UPDATE deployments SET tenant_id = (SELECT id FROM tenants WHERE name = '{DEFAULT_TENANT}')""",
    "ALTER TABLE deployments ALTER COLUMN tenant_id SET NOT NULL",
    "ALTER TABLE deployments ADD COLUMN spec jsonb NOT NULL DEFAULT '{}'",
    "ALTER TABLE deployments ADD COLUMN status text NOT NULL DEFAULT 'deployed'",
    "ALTER TABLE deployments ADD COLUMN created_tx bigint",
    "ALTER TABLE deployments ADD COLUMN updated_at timestamptz NOT NULL DEFAULT now()",
    "ALTER TABLE deployments DROP CONSTRAINT IF EXISTS deployments_name_key",
]


def ensure_schema(conn: psycopg.Connection) -> None:
    """Create what does not exist yet, migrate an older schema, and commit. Safe to
    run again, and concurrently (a lock serializes two callers)."""
    conn.execute("SELECT pg_advisory_xact_lock(4530, 1)")
    old = conn.execute(
        "SELECT count(*) = 3 FROM information_schema.columns"
        " WHERE table_schema = current_schema() AND table_name = 'deployments'"
    ).fetchone()
    for statement in RESOURCES_SQL:
        conn.execute(statement)
    if old and old[0]:
        for statement in MIGRATE_DEPLOYMENTS_SQL:
            conn.execute(statement)
    for statement in DEPLOYMENTS_SQL:
        conn.execute(statement)
    for statement in ETSI_SQL:
        conn.execute(statement)
    for statement in PORTAL_SQL:
        conn.execute(statement)
    conn.commit()
