"""Transactions: every POST/PUT/DELETE of the API is recorded as one row in table
``transactions`` (with its validated request) and done later by the worker.

State machine (one row per request; only the worker moves it forward)::

    accepted ──> running ──> succeeded
        │           │
        └───────────┴──────> failed

- ``accepted``: committed by the API together with nothing else (answer 202). The
  bare ``POST /v0/deployments`` also writes its deployment row in the same commit.
- ``running``: only visible while work outside the database is in progress (the
  deployment executor, i.e. the VIM); work that is only database writes goes from
  accepted to succeeded/failed in one database transaction.
- ``succeeded`` / ``failed``: final, set exactly once (``UPDATE ... WHERE status IN
  ('accepted','running')`` in the same database transaction as the work, the event
  and the callback row). ``status_code`` and ``message`` say why.

Nothing lives only in memory: a new active's worker resumes every ``accepted`` and
``running`` row (the work is idempotent per transaction, see store.py and
executor.py). Two transactions touching the same resource run in id order: a row is
taken only when no older unfinished row shares a key with it (``xkeys``: the
resource itself, exclusively; ``skeys``: the parent and referenced resources, shared).

Retries never create twice: a request with an ``Idempotency-Key`` seen before
returns the original transaction (or 422 if the request differs); without a key, the
same request on the same resource (same natural key and same body) returns the
transaction that made the resource (or the unfinished one doing it); a different body
for an existing resource is a 409.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg

from esc.services import events, store
from esc.services.db import (
    LOCK_IDEMPOTENCY_KEY,
    LOCK_RESOURCE_KEY,
    CommitNotConfirmed,
    commit_durably,
    lock_key,
    one_line,
)
from esc.services.executor import DeploymentExecutor, NoopExecutor
from esc.services.store import KINDS, Fail, Tx
from esc.services.threads import PollingThreads

log = logging.getLogger("esc.escmanager.worker")

UNFINISHED = ("accepted", "running")


@dataclass(frozen=True)
class WriteRequest:
    op: str                        # create | update | delete
    kind: str
    parent: str | None
    name: str
    spec: dict[str, Any] | None    # the validated body (JSON-ready), None for delete
    method: str
    path: str
    idempotency_key: str | None = None
    callback: str | None = None

    def digest(self) -> str:
        canonical = json.dumps(
            [self.op, self.kind, self.parent, self.name, self.spec],
            sort_keys=True, separators=(",", ":"), ensure_ascii=False,
        )
        return hashlib.sha256(canonical.encode()).hexdigest()


TX_COLUMNS = (
    "id, status, op, kind, parent, name, resource_key, method, path, status_code, message,"
    " attempts, created_at, started_at, finished_at, request, callback_url, request_hash"
)


def _tx_dict(row: tuple[Any, ...]) -> dict[str, Any]:
    keys = [c.strip() for c in TX_COLUMNS.split(",")]
    return dict(zip(keys, row, strict=True))


def _tx(d: dict[str, Any]) -> Tx:
    return Tx(id=d["id"], op=d["op"], kind=d["kind"], parent=d["parent"], name=d["name"],
              request=d["request"], callback_url=d["callback_url"], status=d["status"])


def _fetch(conn: psycopg.Connection, where: str, params: tuple[Any, ...]) -> list[dict[str, Any]]:
    return [_tx_dict(r) for r in conn.execute(f"SELECT {TX_COLUMNS} FROM transactions WHERE {where}", params)]


def _visible(conn: psycopg.Connection, kind: str, parent: str | None, name: str) -> bool:
    """Whether the resource exists once every accepted transaction is done: the last
    unfinished transaction on it decides, else the table."""
    k = KINDS[kind]
    row = conn.execute(
        "SELECT op FROM transactions WHERE kind = %s AND resource_key = %s"
        " AND status IN ('accepted', 'running') ORDER BY id DESC LIMIT 1",
        (kind, k.key(parent, name)),
    ).fetchone()
    if row:
        return row[0] != "delete"
    return store.exists(conn, k, parent, name)


def _lock_keys(req: WriteRequest) -> tuple[list[str], list[str]]:
    kind = KINDS[req.kind]
    xkeys = [kind.lock_key(req.parent, req.name)]
    skeys = [KINDS[kind.parent].lock_key(None, req.parent or "")] if kind.parent else []
    if req.kind == "deployment" and req.spec:
        skeys += [KINDS[k].lock_key(None, n) for k, n in store.deployment_refs(req.spec)]
    return xkeys, skeys


def submit(conn: psycopg.Connection, req: WriteRequest) -> tuple[dict[str, Any], bool]:
    """Record the request as an accepted transaction, in the caller's database
    transaction (the caller commits). Returns (transaction, replayed): replayed is
    True when an earlier transaction for the same request was found instead.
    Raises Fail for requests that cannot be accepted (404, 409, 422)."""
    kind = KINDS[req.kind]
    digest = req.digest()
    if req.idempotency_key is not None:
        lock_key(conn, LOCK_IDEMPOTENCY_KEY, req.idempotency_key)
        found = _fetch(conn, "idempotency_key = %s", (req.idempotency_key,))
        if found:
            if found[0]["request_hash"] != digest:
                raise Fail(422, f"Idempotency-Key {req.idempotency_key!r} was used for another request"
                                f" (transaction {found[0]['id']})")
            return found[0], True
    key = kind.key(req.parent, req.name)
    lock_key(conn, LOCK_RESOURCE_KEY, kind.lock_key(req.parent, req.name))

    # the same request again, still unfinished
    same = _fetch(conn, "kind = %s AND resource_key = %s AND request_hash = %s"
                        " AND status IN ('accepted', 'running') ORDER BY id DESC LIMIT 1",
                  (req.kind, key, digest))
    if same:
        return same[0], True
    if kind.parent and not _visible(conn, kind.parent, None, req.parent or ""):
        raise Fail(404, f"{kind.parent} {req.parent} not found")
    visible = _visible(conn, req.kind, req.parent, req.name)
    if req.op == "create":
        if visible:
            # the request that made it, done: a retry whose answer was lost
            made = conn.execute(
                f"SELECT t.id FROM {kind.table} r JOIN transactions t ON t.id = r.created_tx"
                f" WHERE r.id = %s AND t.request_hash = %s",
                (store.row_id(conn, kind, req.parent, req.name), digest),
            ).fetchone()
            if made:
                return _fetch(conn, "id = %s", (made[0],))[0], True
            raise Fail(409, f"{req.kind} {key} exists")
    elif not visible:
        raise Fail(404, f"{req.kind} {key} not found")
    if req.op == "delete":
        # a user whose own delete is accepted already is no obstacle: the worker does
        # that delete first (the keys order them), and checks again when it gets here
        store.check_deletable(conn, kind, req.parent, req.name,
                              going=lambda k, p, n: not _visible(conn, k, p, n))
    if req.kind == "deployment" and req.op != "delete" and req.spec is not None:
        store.check_deployment_refs(conn, req.name, req.spec, lambda k, n: _visible(conn, k, None, n))

    xkeys, skeys = _lock_keys(req)
    row = conn.execute(
        "INSERT INTO transactions (op, kind, parent, name, resource_key, method, path, request,"
        " request_hash, idempotency_key, callback_url, xkeys, skeys)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
        f" RETURNING {TX_COLUMNS}",
        (req.op, req.kind, req.parent, req.name, key, req.method, req.path,
         psycopg.types.json.Jsonb(req.spec) if req.spec is not None else None,
         digest, req.idempotency_key, req.callback, xkeys, skeys),
    ).fetchone()
    assert row is not None
    return _tx_dict(row), False


def public(tx: dict[str, Any], callbacks: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The API representation of a transaction."""
    iso = lambda v: v.isoformat() if v is not None else None  # noqa: E731
    return {
        "transaction_id": tx["id"], "status": tx["status"], "operation": tx["op"],
        "resource_type": tx["kind"], "parent": tx["parent"], "resource": tx["name"],
        "method": tx["method"], "path": tx["path"], "status_code": tx["status_code"],
        "message": tx["message"], "attempts": tx["attempts"],
        "created_at": iso(tx["created_at"]), "started_at": iso(tx["started_at"]),
        "finished_at": iso(tx["finished_at"]), "callbacks": callbacks or [],
    }


def get_transaction(conn: psycopg.Connection, tx_id: int) -> dict[str, Any] | None:
    found = _fetch(conn, "id = %s", (tx_id,))
    if not found:
        return None
    cbs = [
        {"url": r[0], "status": r[1], "attempts": r[2], "last_error": r[3], "last_status": r[4],
         "delivered_at": r[5].isoformat() if r[5] else None}
        for r in conn.execute(
            "SELECT url, status, attempts, last_error, last_status, delivered_at FROM callbacks"
            " WHERE transaction_id = %s ORDER BY id", (tx_id,))
    ]
    return public(found[0], cbs)


def list_transactions(
    conn: psycopg.Connection, since: int, limit: int, status: str | None
) -> list[dict[str, Any]]:
    where, params = "id > %s", [since]
    if status:
        where += " AND status = %s"
        params.append(status)
    return [public(t) for t in _fetch(conn, f"{where} ORDER BY id LIMIT %s", (*params, limit))]


def finish(conn: psycopg.Connection, tx: Tx, ok: bool, code: int, message: str) -> None:
    """Mark the transaction succeeded/failed, with its event and callback row, in the
    caller's database transaction. Exactly once: a second call raises."""
    cur = conn.execute(
        "UPDATE transactions SET status = %s, status_code = %s, message = %s, finished_at = now(),"
        " started_at = COALESCE(started_at, now()) WHERE id = %s AND status IN ('accepted', 'running')",
        ("succeeded" if ok else "failed", code, message, tx.id),
    )
    if cur.rowcount != 1:
        raise RuntimeError(f"transaction {tx.id} was already finished")
    kind = KINDS.get(tx.kind)
    tenant = tx.name if tx.kind == "tenant" else tx.parent if kind and kind.parent == "tenant" else None
    events.record_event(
        conn, events.transaction_event_type(tx.op, tx.kind),
        status=events.SUCCESS if ok else events.FAILURE, transaction_id=tx.id, tenant=tenant,
        resource_type=tx.kind, resource=kind.key(tx.parent, tx.name) if kind else tx.name, message=message,
    )
    if tx.callback_url:
        conn.execute("INSERT INTO callbacks (transaction_id, url) VALUES (%s, %s)", (tx.id, tx.callback_url))
    conn.execute(f"NOTIFY {DONE_CHANNEL}")  # the ETSI service may wait for it (esc.etsi.worker)


# --- the worker ----------------------------------------------------------------------------

# The oldest unfinished transaction that no older unfinished transaction conflicts with.
CLAIM_SQL = f"""
SELECT {TX_COLUMNS} FROM transactions t
WHERE t.status IN ('accepted', 'running') AND NOT (t.id = ANY(%s))
  AND NOT EXISTS (
    SELECT 1 FROM transactions e
    WHERE e.status IN ('accepted', 'running') AND e.id < t.id
      AND (e.xkeys && t.xkeys OR e.xkeys && t.skeys OR e.skeys && t.xkeys))
ORDER BY t.id
LIMIT 1
FOR UPDATE OF t SKIP LOCKED
"""

TRANSIENT = (psycopg.OperationalError, psycopg.errors.SerializationFailure,
             psycopg.errors.DeadlockDetected, psycopg.errors.LockNotAvailable,
             psycopg.errors.ReadOnlySqlTransaction, psycopg.errors.QueryCanceled,
             psycopg.errors.AdminShutdown, CommitNotConfirmed)


class Worker(PollingThreads):
    """Threads that do the accepted transactions. Runs only while escmanager serves
    (i.e. on the active); every thread has its own database connection.

    ``on_finished`` is called (outside any database transaction) after a transaction
    was finished with a callback to deliver."""

    def __init__(
        self,
        conninfo: str,
        executor: DeploymentExecutor | None = None,
        *,
        threads: int = 2,
        poll: float = 1.0,
        on_finished: Callable[[], None] | None = None,
    ) -> None:
        self.conninfo = conninfo
        self.executor: DeploymentExecutor = executor or NoopExecutor()
        self.poll = poll
        self.on_finished = on_finished or (lambda: None)
        self.local = threading.local()  # per thread: whether this run committed "running"
        super().__init__("escmanager-worker", threads)

    # ------------------------------------------------------------------ loop
    def drain(self, conn: psycopg.Connection) -> float:
        while not self.stopping.is_set() and self.run_one(conn):
            pass
        return self.poll

    # ------------------------------------------------------------ one item
    def claim(self, conn: psycopg.Connection) -> dict[str, Any] | None:
        """Lock the next transaction to do: its row (FOR UPDATE, in the database
        transaction left open) and a session advisory lock on its id that holds while
        the executor runs outside any database transaction. A row whose advisory
        lock is held belongs to another live worker; one left ``running`` by a dead
        process has none (its session ended) and is taken again."""
        skip: list[int] = []
        while True:
            row = conn.execute(CLAIM_SQL, (skip,)).fetchone()
            if row is None:
                conn.rollback()
                return None
            tx = _tx_dict(row)
            got = conn.execute("SELECT pg_try_advisory_lock(%s)", (tx["id"],)).fetchone()
            if got and got[0]:
                conn.execute("UPDATE transactions SET attempts = attempts + 1 WHERE id = %s", (tx["id"],))
                return tx
            conn.rollback()  # do not keep its row locked while we look further
            skip.append(tx["id"])

    def run_one(self, conn: psycopg.Connection) -> bool:
        """Do the next transaction, if any; False when there was none."""
        found = self.claim(conn)
        if found is None:
            return False
        tx = _tx(found)
        self.local.running_committed = False
        try:
            self._do(conn, tx)
        except TRANSIENT:
            self._rollback(conn)
            raise  # left accepted/running: taken again after the back-off
        except Fail as f:
            self._rollback(conn)
            self._finish_alone(conn, tx, False, f.code, f.message)
        except Exception as e:
            log.exception("transaction %d: internal error", tx.id)
            self._rollback(conn)
            self._finish_alone(conn, tx, False, 500, f"internal error: {one_line(e)}")
        finally:
            if not conn.closed:
                try:
                    conn.execute("SELECT pg_advisory_unlock(%s)", (tx.id,))
                    conn.commit()
                except psycopg.Error:
                    conn.close()
        return True

    @staticmethod
    def _rollback(conn: psycopg.Connection) -> None:
        try:
            conn.rollback()
        except psycopg.Error:
            conn.close()

    def _finish_alone(self, conn: psycopg.Connection, tx: Tx, ok: bool, code: int, message: str) -> None:
        """Finish after the work's database transaction was rolled back."""
        row = conn.execute(
            "SELECT status FROM transactions WHERE id = %s FOR UPDATE", (tx.id,)
        ).fetchone()
        if row and row[0] in UNFINISHED:
            if not self.local.running_committed:  # the claim's count was rolled back with the work
                conn.execute("UPDATE transactions SET attempts = attempts + 1 WHERE id = %s", (tx.id,))
            finish(conn, tx, ok, code, message)
        commit_durably(conn)
        self._finished(tx, ok, message)

    def _finished(self, tx: Tx, ok: bool, message: str) -> None:
        log.info("transaction %d %s: %s", tx.id, "succeeded" if ok else "failed", message)
        if tx.callback_url:
            self.on_finished()

    def _do(self, conn: psycopg.Connection, tx: Tx) -> None:
        if tx.kind not in KINDS or tx.op not in ("create", "update", "delete"):
            raise Fail(500, f"unknown operation {tx.op} {tx.kind}")
        if tx.kind != "deployment":
            message = store.apply_simple(conn, tx)
            finish(conn, tx, True, 200, message)
            commit_durably(conn)
            self._finished(tx, True, message)
            return
        work = store.deployment_phase_a(conn, tx)
        if not work.vms and not work.remove:  # nothing for the VIM: one database transaction
            ok, code, message = store.deployment_phase_b(conn, tx, work, {})
        else:
            conn.execute(
                "UPDATE transactions SET status = 'running', started_at = COALESCE(started_at, now())"
                " WHERE id = %s", (tx.id,))
            commit_durably(conn)
            self.local.running_committed = True
            try:
                result: Any = dict(self.executor.apply(work))
            except Exception as e:
                log.warning("transaction %d: executor: %s", tx.id, one_line(e))
                result = e
            row = conn.execute(
                "SELECT status FROM transactions WHERE id = %s FOR UPDATE", (tx.id,)
            ).fetchone()
            if not row or row[0] not in UNFINISHED:
                conn.rollback()
                return
            ok, code, message = store.deployment_phase_b(conn, tx, work, result)
        finish(conn, tx, ok, code, message)
        commit_durably(conn)
        self._finished(tx, ok, message)


# Another process that records transactions (the ETSI service) says so on WORK_CHANNEL, and
# the worker says on DONE_CHANNEL that one finished; a notification is delivered when the
# database transaction that sent it commits.
WORK_CHANNEL = "esc_transactions"
DONE_CHANNEL = "esc_transactions_done"


class WorkListener(PollingThreads):
    """One thread that LISTENs on ``channel`` and wakes ``wake`` (a worker) at each
    notification, so that work recorded (or finished) by another process is taken at once
    rather than at the worker's next poll."""

    def __init__(self, conninfo: str, wake: Callable[[], None], channel: str = WORK_CHANNEL,
                 name: str = "escmanager-listen") -> None:
        self.conninfo, self.wake_worker, self.channel = conninfo, wake, channel
        super().__init__(name, 1)

    def drain(self, conn: psycopg.Connection) -> float:
        if not getattr(conn, "esc_listening", False):
            conn.execute(f"LISTEN {self.channel}")
            conn.commit()
            conn.esc_listening = True  # type: ignore[attr-defined]
        for _ in conn.notifies(timeout=0.5, stop_after=1):
            self.wake_worker()
        return 0.0
