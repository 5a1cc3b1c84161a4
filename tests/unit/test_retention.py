"""Retention: old events and finished transactions go; nothing unfinished does."""

from __future__ import annotations

import psycopg
import pytest

from esc.config import Retention
from esc.services.retention import prune


def test_prune_keeps_what_is_recent_unfinished_or_still_to_be_called_back(esc_api) -> None:
    api = esc_api
    txs = []
    for name in ("old", "new", "old-pending-callback"):
        r = api.client.post("/v0/tenants", json={"name": name})
        txs.append(api.wait(r.json()["transaction_id"])["transaction_id"])
    old, new, pending = txs
    api.sql("UPDATE transactions SET finished_at = now() - interval '8 days' WHERE id IN (%s, %s)",
            (old, pending))
    api.sql("INSERT INTO callbacks (transaction_id, url, next_attempt_at)"
            " VALUES (%s, 'http://192.0.2.1/', now() + interval '1 day')", (pending,))
    # a transaction that never finished (a worker died) is never deleted, however old
    api.sql("INSERT INTO transactions (op, kind, name, resource_key, method, path, request_hash, xkeys,"
            " status, created_at) VALUES ('create', 'tenant', 'stuck', 'stuck', 'POST', '/v0/tenants',"
            " 'h', '{}', 'accepted', now() - interval '30 days')")
    api.sql("UPDATE events SET created_at = now() - interval '8 days' WHERE transaction_id = %s", (old,))
    events_before = api.sql("SELECT count(*) FROM events")[0][0]
    with psycopg.connect(api.conninfo) as conn:
        counts = prune(conn, Retention(days=7), batch=1)  # batches of one: the loop is exercised
    assert counts["finished transactions"] == 1 and counts["old events"] >= 1
    left = {row[0] for row in api.sql("SELECT name FROM transactions")}
    assert left == {"new", "old-pending-callback", "stuck"}
    # (not a global count: the worker and the app's own janitor may write events meanwhile)
    assert api.sql("SELECT count(*) FROM events WHERE created_at < now() - interval '7 days'")[0][0] == 0
    assert api.sql("SELECT count(*) FROM events WHERE transaction_id = %s", (old,))[0][0] == 0
    assert api.sql("SELECT count(*) FROM events WHERE transaction_id = %s", (new,))[0][0] >= 1
    assert events_before > counts["old events"]
    assert api.client.get(f"/v0/transactions/{old}").status_code == 404
    assert api.client.get(f"/v0/transactions/{new}").status_code == 200


def test_prune_caps_the_number_of_events(esc_api) -> None:
    api = esc_api
    api.sql("INSERT INTO events (type, message) SELECT 'TEST', 'e' || g FROM generate_series(1, 250) g")
    with psycopg.connect(api.conninfo) as conn:
        counts = prune(conn, Retention(days=7, max_events=100), batch=40)
    assert counts["events over the cap"] >= 150
    assert api.sql("SELECT count(*) FROM events")[0][0] <= 100
    kept = {row[0] for row in api.sql("SELECT message FROM events WHERE type = 'TEST'")}
    assert "e250" in kept and "e1" not in kept and "e150" not in kept  # the newest are kept


@pytest.mark.parametrize("kw", [{"days": 0}, {"days": -1}, {"max_events": 10}, {"days": float("nan")}])
def test_retention_bounds(kw: dict) -> None:
    with pytest.raises(ValueError):
        Retention(**kw)


def test_the_janitor_runs_with_the_app(esc_api) -> None:
    janitor = esc_api.app.state.janitor
    assert janitor.threads[0].is_alive()


def test_prune_forgets_ended_etsi_operations_and_sent_notifications(esc_api) -> None:
    api = esc_api
    api.sql("INSERT INTO etsi_subscriptions (id, callback_uri, filter_key) VALUES ('s', 'http://x/', 'k')")
    rows = [("COMPLETED", "delivered", 8), ("FAILED_TEMP", "pending", 30), ("ROLLED_BACK", "abandoned", 1)]
    for n, (state, status, age) in enumerate(rows):
        api.sql("INSERT INTO etsi_op_occs (id, vnf_instance_id, operation, state, state_entered)"
                " VALUES (%s, 'i', 'INSTANTIATE', %s, now() - make_interval(days => %s))",
                (f"op{n}", state, age))
        api.sql("INSERT INTO etsi_notifications (notification_id, subscription_id, body, status, created_at)"
                " VALUES (%s, 's', '{}', %s, now() - make_interval(days => %s))", (f"n{n}", status, age))
    with psycopg.connect(api.conninfo) as conn:
        prune(conn, Retention(days=7))  # (the app's own janitor may have been first: no counts)
    assert {r[0] for r in api.sql("SELECT id FROM etsi_op_occs")} == {"op1", "op2"}  # FAILED_TEMP stays
    assert {r[0] for r in api.sql("SELECT notification_id FROM etsi_notifications")} == {"n1", "n2"}
