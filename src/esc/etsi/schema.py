"""The ETSI service's tables, in the controller's database (so they replicate with
everything else and a new active resumes from them). Created by
esc.services.schema.ensure_schema.

- ``etsi_packages``: onboarded VNF packages, each with its parsed VNFD (esc.etsi.package).
- ``etsi_vnf_instances``: the VNF instances (``vnf_instances`` of SOL003); ``version`` is
  the ETag; ``op_occ`` the operation occurrence that holds the instance (one at a time,
  until COMPLETED, FAILED or ROLLED_BACK).
- ``etsi_op_occs``: the operation occurrences (``vnf_lcm_op_occs``), the work queue of the
  LCM worker (esc.etsi.worker); ``deployment_tx`` is the controller transaction doing
  its VIM work, ``step`` where the worker is.
- ``etsi_subscriptions``: ``subscriptions``; ``filter_key`` makes a duplicate a 303.
- ``etsi_notifications``: the outbox, one row per (subscription, notification), written
  in the database transaction of the state change it reports (esc.etsi.notify).
"""

from __future__ import annotations

TABLES = ("etsi_notifications", "etsi_subscriptions", "etsi_op_occs", "etsi_vnf_instances",
          "etsi_packages")

ETSI_SQL = [
    """CREATE TABLE IF NOT EXISTS etsi_packages (
        id            text        PRIMARY KEY,
        vnfd_id       text        NOT NULL UNIQUE,
        vnfd          jsonb       NOT NULL,
        artifacts     jsonb       NOT NULL DEFAULT '{}',
        checksum      text        NOT NULL,
        created_at    timestamptz NOT NULL DEFAULT now()
    )""",
    """CREATE TABLE IF NOT EXISTS etsi_vnf_instances (
        id            text        PRIMARY KEY,
        vnfd_id       text        NOT NULL,
        pkg_id        text        NOT NULL REFERENCES etsi_packages ON DELETE RESTRICT,
        name          text,
        description   text,
        state         text        NOT NULL DEFAULT 'NOT_INSTANTIATED'
                      CHECK (state IN ('NOT_INSTANTIATED', 'INSTANTIATED')),
        vnf_state     text        NOT NULL DEFAULT 'STARTED' CHECK (vnf_state IN ('STARTED', 'STOPPED')),
        flavour_id    text,
        level_id      text,
        scale_levels  jsonb       NOT NULL DEFAULT '{}',
        ext_vls       jsonb       NOT NULL DEFAULT '[]',
        vim_info      jsonb       NOT NULL DEFAULT '[]',
        properties    jsonb       NOT NULL DEFAULT '{}',
        metadata      jsonb       NOT NULL DEFAULT '{}',
        extensions    jsonb       NOT NULL DEFAULT '{}',
        version       integer     NOT NULL DEFAULT 1,
        op_occ        text,
        created_at    timestamptz NOT NULL DEFAULT now(),
        updated_at    timestamptz NOT NULL DEFAULT now()
    )""",
    """CREATE TABLE IF NOT EXISTS etsi_op_occs (
        id            text        PRIMARY KEY,
        seq           bigserial   UNIQUE,
        vnf_instance_id text      NOT NULL,
        operation     text        NOT NULL,
        state         text        NOT NULL CHECK (state IN ('STARTING', 'PROCESSING', 'COMPLETED',
                                  'FAILED_TEMP', 'FAILED', 'ROLLING_BACK', 'ROLLED_BACK')),
        state_entered timestamptz NOT NULL DEFAULT now(),
        start_time    timestamptz NOT NULL DEFAULT now(),
        automatic     boolean     NOT NULL DEFAULT false,
        params        jsonb       NOT NULL DEFAULT '{}',
        cancel_pending boolean    NOT NULL DEFAULT false,
        cancel_mode   text,
        error         jsonb,
        changes       jsonb,
        changed_info  jsonb,
        grant_id      text,
        before        jsonb       NOT NULL DEFAULT '{}',
        target        jsonb,
        deployment_tx bigint,
        attempts      integer     NOT NULL DEFAULT 0
    )""",
    "CREATE INDEX IF NOT EXISTS etsi_op_occs_unfinished ON etsi_op_occs (seq)"
    " WHERE state IN ('STARTING', 'PROCESSING', 'ROLLING_BACK')",
    "CREATE INDEX IF NOT EXISTS etsi_op_occs_instance ON etsi_op_occs (vnf_instance_id)",
    """CREATE TABLE IF NOT EXISTS etsi_subscriptions (
        id            text        PRIMARY KEY,
        seq           bigserial   UNIQUE,
        callback_uri  text        NOT NULL,
        filter        jsonb       NOT NULL DEFAULT '{}',
        filter_key    text        NOT NULL,
        auth          jsonb,
        created_at    timestamptz NOT NULL DEFAULT now(),
        UNIQUE (callback_uri, filter_key)
    )""",
    """CREATE TABLE IF NOT EXISTS etsi_notifications (
        id            bigserial   PRIMARY KEY,
        notification_id text      NOT NULL,
        subscription_id text      NOT NULL REFERENCES etsi_subscriptions ON DELETE CASCADE,
        body          jsonb       NOT NULL,
        status        text        NOT NULL DEFAULT 'pending'
                      CHECK (status IN ('pending', 'delivered', 'abandoned')),
        attempts      integer     NOT NULL DEFAULT 0,
        next_attempt_at timestamptz NOT NULL DEFAULT now(),
        last_error    text,
        last_status   integer,
        created_at    timestamptz NOT NULL DEFAULT now(),
        delivered_at  timestamptz,
        UNIQUE (notification_id, subscription_id)
    )""",
    "CREATE INDEX IF NOT EXISTS etsi_notifications_due ON etsi_notifications (next_attempt_at)"
    " WHERE status = 'pending'",
    "CREATE INDEX IF NOT EXISTS etsi_notifications_order ON etsi_notifications (subscription_id, id)"
    " WHERE status = 'pending'",
]
