"""Asynchronous writes: 202, the worker, callbacks, idempotent retries, and a worker
resuming what a dead controller left (real PostgreSQL)."""

from __future__ import annotations

import ipaddress
import json
import threading
import time
from collections.abc import Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from esc.config import CallbackConfig
from esc.services import store, transactions
from esc.services.executor import DeploymentExecutor, DeploymentWork, NoopExecutor


class Receiver:
    """A callback receiver on 127.0.0.1: records each POST; answers the codes in
    ``answers`` first, then 200."""

    def __init__(self, answers: list[int] | None = None) -> None:
        self.received: list[tuple[dict[str, str], dict[str, Any]]] = []
        self.answers = list(answers or [])
        self.got = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                code = receiver.answers.pop(0) if receiver.answers else 200
                self.send_response(code)
                self.send_header("content-length", "0")
                self.end_headers()
                with receiver.got:
                    receiver.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                    receiver.got.notify_all()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/esc/callback"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def wait(self, n: int, timeout: float = 10.0) -> list[tuple[dict[str, str], dict[str, Any]]]:
        with self.got:
            assert self.got.wait_for(lambda: len(self.received) >= n, timeout), self.received
            return list(self.received)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def test_202_then_worker_then_callback(esc_api, receiver: Receiver) -> None:
    api, c = esc_api, esc_api.client
    r = c.post("/v0/tenants", json={"name": "t1"}, headers={"callback": receiver.url})
    assert r.status_code == 202 and r.json()["status"] == "accepted"
    tx_id = r.json()["transaction_id"]
    headers, body = receiver.wait(1)[0]
    assert headers["esc-status-code"] == "200"
    assert headers["esc-status-message"] == "tenant t1 created"
    assert headers["esc-transaction-id"] == str(tx_id)
    assert headers["esc-transaction-type"] == "CREATE_TENANT"
    assert headers["content-type"] == "application/json"
    assert body == {
        "transaction_id": tx_id,
        "status": "succeeded",
        "status_code": 200,
        "status_message": "tenant t1 created",
        "event_type": "CREATE_TENANT",
        "operation": "create",
        "resource_type": "tenant",
        "parent": None,
        "resource": "t1",
    }
    tx = api.wait(tx_id)
    deadline = time.monotonic() + 5
    while tx["callbacks"][0]["status"] != "delivered":  # marked after the receiver answered
        assert time.monotonic() < deadline
        time.sleep(0.01)
        tx = c.get(f"/v0/transactions/{tx_id}").json()
    assert tx["callbacks"][0]["attempts"] == 1 and tx["callbacks"][0]["last_status"] == 200
    assert tx["started_at"] and tx["finished_at"]

    # a failure is called back too, with its code
    r = c.delete("/v0/images/nothing", headers={"callback": receiver.url})
    assert r.status_code == 404  # refused at once: no transaction, no callback
    assert api.sql("SELECT count(*) FROM transactions") == [(1,)]


def test_callback_retried_until_the_receiver_answers_2xx(esc_api) -> None:
    flaky = Receiver(answers=[500, 503])
    try:
        r = esc_api.client.post(
            "/v0/flavors", json={"name": "f", "vcpus": 1, "memory_mb": 1}, headers={"callback": flaky.url}
        )
        tx_id = r.json()["transaction_id"]
        got = flaky.wait(3)
        assert [h["esc-transaction-id"] for h, _ in got] == [str(tx_id)] * 3  # at least once: same id
        deadline = time.monotonic() + 5
        while esc_api.sql("SELECT status, attempts FROM callbacks") != [("delivered", 3)]:
            assert time.monotonic() < deadline, esc_api.sql("SELECT * FROM callbacks")
            time.sleep(0.01)
    finally:
        flaky.close()


def test_unreachable_callback_is_abandoned_after_max_attempts(make_esc_api) -> None:
    dead = Receiver()
    dead.close()  # nobody listens on that port any more
    with make_esc_api(callback_options={"poll": 0.05, "first_delay": 0.01, "max_attempts": 3}) as api:
        r = api.client.post("/v0/tenants", json={"name": "x"}, headers={"callback": dead.url})
        tx_id = api.wait(r.json()["transaction_id"])["transaction_id"]
        deadline = time.monotonic() + 10
        while (cb := api.client.get(f"/v0/transactions/{tx_id}").json()["callbacks"])[0][
            "status"
        ] != "abandoned":
            assert time.monotonic() < deadline, cb
            time.sleep(0.02)
        # the class only: whether the port was closed or filtered is in the log, not here
        assert cb[0]["attempts"] == 3
        assert cb[0]["last_error"] == "could not deliver (no answer from the receiver)"


def test_a_callback_connects_to_the_address_that_was_checked(make_esc_api, receiver: Receiver,
                                                              monkeypatch) -> None:
    """The name is resolved once, checked, and the POST goes to that address with the
    name in Host: no second resolution for a rebinding DNS to answer differently. (The
    name resolves only through the check here; a second look-up would fail.)"""
    import socket

    from esc.services import callbacks

    real = socket.getaddrinfo
    lookups: list[str] = []

    def resolve(host, *args, **kwargs):  # type: ignore[no-untyped-def]
        if host == "receiver.esc-test.invalid":
            lookups.append(host)
            return real("127.0.0.1", *args, **kwargs)
        return real(host, *args, **kwargs)

    monkeypatch.setattr(callbacks.socket, "getaddrinfo", resolve)
    port = receiver.url.split(":")[2].split("/")[0]
    url = f"http://receiver.esc-test.invalid:{port}/esc/callback"
    with make_esc_api(callback_options={"poll": 0.05}) as api:
        r = api.client.post("/v0/tenants", json={"name": "pinned"}, headers={"callback": url})
        assert r.status_code == 202
        (headers, body), = receiver.wait(1)
    assert headers["host"] == f"receiver.esc-test.invalid:{port}" and body["resource"] == "pinned"
    assert lookups == ["receiver.esc-test.invalid"]


def test_the_pairs_own_addresses_are_never_callback_targets() -> None:
    from esc.config import HaConfig, NodeConfig, Vip
    from esc.services.callbacks import CallbackPolicy, pair_addresses, pinned_request

    cfg = NodeConfig(name="n1", ipaddr=["192.0.2.11"], ha=HaConfig(
        node_list=["192.0.2.11", "192.0.2.12"], vip=Vip(address="192.0.2.50", prefixlen=24,
                                                        interface="eth0"),
        vif="eth0", self_index=0, heartbeat=[["198.51.100.11", "198.51.100.12"]]))
    policy = CallbackPolicy(CallbackConfig(allow=["0.0.0.0/0"], deny=[]), pair_addresses(cfg))
    for host in ("192.0.2.11", "192.0.2.12", "192.0.2.50", "198.51.100.12"):
        assert "an address of this pair" in (policy.url_problem(f"http://{host}:8060/x") or "")
    assert policy.url_problem("http://192.0.2.99/cb") is None
    # the pair's own networks: the heartbeat network (no VIP there) refused unless named
    # in the allow-list; the VIP's network is the northbound too, so not refused whole
    from esc.services.callbacks import ha_networks

    local = [("eth0", "192.0.2.11", 24), ("eth1", "198.51.100.11", 24), ("lo", "127.0.0.1", 8)]
    assert ha_networks(cfg, local) == ["198.51.100.0/24"]
    policy = CallbackPolicy(CallbackConfig(allow=["0.0.0.0/0"], deny=[]), pair_addresses(cfg),
                            ha_networks(cfg, local))
    assert "the pair's HA network 198.51.100.0/24" in (policy.url_problem("http://198.51.100.20/cb") or "")
    assert policy.url_problem("http://192.0.2.99/cb") is None
    named = CallbackPolicy(CallbackConfig(allow=["0.0.0.0/0", "198.51.100.0/24"], deny=[]),
                           pair_addresses(cfg), ha_networks(cfg, local))
    assert named.url_problem("http://198.51.100.20/cb") is None
    assert "an address of this pair" in (named.url_problem("http://198.51.100.12/cb") or "")
    assert pinned_request("https://example.test:8443/cb?x=1", ipaddress.ip_address("2001:db8::5")) \
        == ("https://[2001:db8::5]:8443/cb?x=1", {"host": "example.test:8443"},
            {"sni_hostname": "example.test"})
    assert pinned_request("http://example.test/cb", ipaddress.ip_address("192.0.2.7")) \
        == ("http://192.0.2.7/cb", {"host": "example.test"}, {})


def test_callback_to_a_denied_address_is_refused_at_once(make_esc_api, receiver: Receiver) -> None:
    """The default deny-list: an address literal is refused with the request (400,
    nothing recorded); a name that resolves into it is accepted, then the callback is
    abandoned before any attempt; an allow-list leaves everything else out."""
    with make_esc_api(callbacks=CallbackConfig()) as api:
        for url in ("http://127.0.0.1:9/cb", "http://[::1]:9/cb", "http://[::ffff:127.0.0.1]:9/cb",
                    "http://169.254.169.254/latest"):
            r = api.client.post("/v0/tenants", json={"name": "x"}, headers={"callback": url})
            assert r.status_code == 400 and "deny-list" in r.json()["error"], (url, r.text)
        assert api.sql("SELECT count(*) FROM transactions") == [(0,)]
        r = api.client.post("/v0/tenants", json={"name": "y"},
                            headers={"callback": receiver.url.replace("127.0.0.1", "localhost")})
        assert r.status_code == 202
        tx_id = api.wait(r.json()["transaction_id"])["transaction_id"]
        deadline = time.monotonic() + 10
        while (cb := api.client.get(f"/v0/transactions/{tx_id}").json()["callbacks"])[0]["status"] \
                != "abandoned":
            assert time.monotonic() < deadline, cb
            time.sleep(0.02)
        assert cb[0]["attempts"] == 1 and "localhost: callback address" in cb[0]["last_error"]
        assert receiver.received == []
    with make_esc_api(callbacks=CallbackConfig(allow=["192.0.2.0/24"])) as api:
        r = api.client.post("/v0/tenants", json={"name": "z"}, headers={"callback": "http://198.51.100.1/"})
        assert r.status_code == 400 and "not in the callback allow-list" in r.json()["error"]


# --- idempotent retries --------------------------------------------------------------------


def test_idempotency_key_returns_the_original_transaction(esc_api) -> None:
    api, c = esc_api, esc_api.client
    key = {"Idempotency-Key": "req-0001"}
    first = c.post("/v0/tenants", json={"name": "t1"}, headers=key)
    assert first.status_code == 202 and "Idempotent-Replayed" not in first.headers
    api.wait(first.json()["transaction_id"])
    again = c.post("/v0/tenants", json={"name": "t1"}, headers=key)
    assert again.status_code == 202 and again.headers["Idempotent-Replayed"] == "true"
    # the same id, and the current outcome
    assert again.json() == {"transaction_id": first.json()["transaction_id"], "status": "succeeded"}
    assert api.sql("SELECT count(*) FROM transactions") == [(1,)]
    assert api.sql("SELECT count(*) FROM tenants WHERE name = 't1'") == [(1,)]

    other = c.post("/v0/tenants", json={"name": "t1", "description": "x"}, headers=key)
    assert other.status_code == 422 and "Idempotency-Key" in other.json()["error"]
    elsewhere = c.delete("/v0/tenants/t1", headers=key)
    assert elsewhere.status_code == 422
    assert api.sql("SELECT count(*) FROM transactions") == [(1,)]


def test_concurrent_retries_with_one_key_create_once(make_esc_api) -> None:
    """Eight clients send the same request with the same key at the same moment."""
    with make_esc_api(executor=SlowExecutor(0.2)) as api:
        for path, body in [
            ("/v0/images", {"name": "i", "src": "x"}),
            ("/v0/flavors", {"name": "f", "vcpus": 1, "memory_mb": 1}),
        ]:
            api.wait(api.client.post(path, json=body).json()["transaction_id"])
        body = {"name": "d", "vm_groups": [{"name": "g", "image": "i", "flavor": "f", "count": 3}]}
        results: list[Any] = []
        barrier = threading.Barrier(8)

        def post() -> None:
            barrier.wait()
            results.append(
                api.client.post(
                    "/v0/tenants/default/deployments", json=body, headers={"Idempotency-Key": "k-42"}
                )
            )

        threads = [threading.Thread(target=post) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert sorted(r.status_code for r in results) == [202] * 8
        assert len({r.json()["transaction_id"] for r in results}) == 1
        assert sum("Idempotent-Replayed" in r.headers for r in results) == 7
        tx = api.wait(results[0].json()["transaction_id"])
        assert tx["status"] == "succeeded"
        assert api.sql("SELECT count(*) FROM deployments") == [(1,)]
        assert api.sql("SELECT count(*) FROM vms") == [(3,)]
        assert api.sql("SELECT count(*) FROM transactions WHERE kind = 'deployment'") == [(1,)]


def test_same_natural_key_and_body_returns_the_original_transaction(esc_api) -> None:
    api, c = esc_api, esc_api.client
    body = {"name": "net", "description": "d"}
    first = c.post("/v0/networks", json=body)
    # still accepted or already done: either way the same transaction
    again = c.post("/v0/networks", json=body)
    assert again.status_code == 202
    assert again.json()["transaction_id"] == first.json()["transaction_id"]
    api.wait(first.json()["transaction_id"])
    later = c.post("/v0/networks", json={"description": "d", "name": "net"})  # same body, other order
    assert later.json() == {"transaction_id": first.json()["transaction_id"], "status": "succeeded"}
    # explicit defaults are the same request too
    assert (
        c.post("/v0/networks", json={**body, "shared": False}).json()["transaction_id"]
        == first.json()["transaction_id"]
    )
    conflict = c.post("/v0/networks", json={"name": "net", "description": "other"})
    assert conflict.status_code == 409 and conflict.json()["error"] == "network net exists"
    assert api.sql("SELECT count(*) FROM transactions") == [(1,)]
    assert api.sql("SELECT count(*) FROM networks") == [(1,)]


def test_legacy_post_retry_creates_once(esc_api) -> None:
    """The first version's POST /v0/deployments: 201 after commit, retried the same."""
    api, c = esc_api, esc_api.client
    first = c.post("/v0/deployments", json={"name": "w-1"})
    assert first.status_code == 201
    # committed before the answer: the row is there, in the same commit as its transaction
    assert api.sql("SELECT d.name, t.kind FROM deployments d JOIN transactions t ON t.id = d.created_tx") == [
        ("w-1", "deployment")
    ]
    again = c.post("/v0/deployments", json={"name": "w-1"}, headers={"Idempotency-Key": "fresh"})
    assert again.status_code == 201 and again.json()["id"] == first.json()["id"]
    tx = api.wait(first.json()["transaction_id"])
    assert tx["status"] == "succeeded" and tx["message"] == "deployment default/w-1 created"
    assert c.get("/v0/deployments/w-1").json()["status"] == "deployed"
    assert api.sql("SELECT count(*) FROM transactions") == [(1,)]


# --- the worker ----------------------------------------------------------------------------


class SlowExecutor:
    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.calls: list[DeploymentWork] = []

    def apply(self, work: DeploymentWork) -> Mapping[str, str]:
        self.calls.append(work)
        time.sleep(self.delay)
        return {vm.name: "deployed" for vm in work.vms}


class FailingExecutor:
    def apply(self, work: DeploymentWork) -> Mapping[str, str]:
        raise RuntimeError("VIM unreachable")


def test_executors_satisfy_the_protocol() -> None:
    for e in (NoopExecutor(), SlowExecutor(0), FailingExecutor()):
        assert isinstance(e, DeploymentExecutor)


def _catalog(api) -> None:
    for path, body in [
        ("/v0/images", {"name": "i", "src": "x"}),
        ("/v0/flavors", {"name": "f", "vcpus": 1, "memory_mb": 1}),
        ("/v0/networks", {"name": "n"}),
    ]:
        assert api.wait(api.client.post(path, json=body).json()["transaction_id"])["status"] == "succeeded"


DEP = {
    "name": "d",
    "vm_groups": [{"name": "g", "image": "i", "flavor": "f", "count": 2, "interfaces": [{"network": "n"}]}],
}


def test_running_is_visible_while_the_executor_works_and_order_is_kept(make_esc_api) -> None:
    slow = SlowExecutor(0.5)
    with make_esc_api(executor=slow) as api:
        _catalog(api)
        c = api.client
        create = c.post("/v0/tenants/default/deployments", json=DEP).json()["transaction_id"]
        delete = c.delete("/v0/tenants/default/deployments/d").json()["transaction_id"]
        other = c.post("/v0/tenants", json={"name": "unrelated"}).json()["transaction_id"]
        deadline = time.monotonic() + 5
        while c.get(f"/v0/transactions/{create}").json()["status"] != "running":
            assert time.monotonic() < deadline
            time.sleep(0.01)
        d = c.get("/v0/tenants/default/deployments/d").json()
        assert d["status"] == "pending" and {v["status"] for v in d["vms"]} == {"pending"}
        # an unrelated transaction is not held up by the slow one; the delete waits for it
        assert api.wait(other, timeout=0.4)["status"] == "succeeded"
        assert c.get(f"/v0/transactions/{delete}").json()["status"] == "accepted"
        assert api.wait(create)["status"] == "succeeded"
        assert api.wait(delete)["status"] == "succeeded"
        assert [w.operation for w in slow.calls] == ["create", "delete"]
        assert [v.name for v in slow.calls[0].vms] == ["d_g_0", "d_g_1"]
        assert slow.calls[0].vms[0].image == {
            "name": "i",
            "src": "x",
            "disk_format": "qcow2",
            "container_format": "bare",
        }
        assert [v.name for v in slow.calls[1].remove] == ["d_g_0", "d_g_1"] and slow.calls[1].vms == []


def test_executor_failure_fails_the_transaction(make_esc_api, receiver: Receiver) -> None:
    with make_esc_api(executor=FailingExecutor()) as api:
        _catalog(api)
        r = api.client.post("/v0/tenants/default/deployments", json=DEP, headers={"callback": receiver.url})
        tx = api.wait(r.json()["transaction_id"])
        assert tx["status"] == "failed" and tx["status_code"] == 500 and "VIM unreachable" in tx["message"]
        d = api.client.get("/v0/tenants/default/deployments/d").json()
        assert d["status"] == "failed" and {v["status"] for v in d["vms"]} == {"error"}
        headers, body = receiver.wait(1)[0]
        assert headers["esc-status-code"] == "500" and body["status"] == "failed"
        events = [(e["type"], e["status"]) for e in api.client.get("/v0/notifications").json()]
        assert events[-1] == ("CREATE_DEPLOYMENT", "FAILURE")


def test_worker_resumes_transactions_a_dead_controller_left(esc_db: str, make_esc_api) -> None:
    """Rows as a controller that died mid-way leaves them (the node failed over): an
    accepted tenant, and a deployment whose database half was committed and marked
    running when the process died during the executor call. The next worker does
    both, exactly once."""
    with psycopg.connect(esc_db) as conn:
        for kind, name, spec in [
            ("image", "i", {"src": "x", "disk_format": "qcow2", "container_format": "bare"}),
            ("flavor", "f", {"vcpus": 1, "memory_mb": 1, "root_disk_gb": 0, "ephemeral_disk_gb": 0}),
            ("network", "n", {"description": "", "shared": False}),
        ]:
            conn.execute(f"INSERT INTO {kind}s (name, spec) VALUES (%s, %s)", (name, Jsonb(spec)))
        accepted = transactions.submit(
            conn,
            transactions.WriteRequest(
                op="create",
                kind="tenant",
                parent=None,
                name="t-left",
                spec={"name": "t-left", "description": ""},
                method="POST",
                path="/v0/tenants",
                callback=None,
            ),
        )[0]
        spec = {
            "description": "",
            "vm_groups": [
                dict(
                    DEP["vm_groups"][0],
                    count=2,
                    kpi={"type": "icmp_ping", "interval_s": 5, "down_after": 3},
                    recovery={"policy": "reboot"},
                )
            ],
        }
        running = transactions.submit(
            conn,
            transactions.WriteRequest(
                op="create",
                kind="deployment",
                parent="default",
                name="d",
                spec={"name": "d", **spec},
                method="POST",
                path="/v0/tenants/default/deployments",
            ),
        )[0]
        store.deployment_phase_a(conn, transactions._tx(running))
        conn.execute(
            "UPDATE transactions SET status = 'running', started_at = now(), attempts = 1 WHERE id = %s",
            (running["id"],),
        )
        conn.commit()

    slow = SlowExecutor(0)
    with make_esc_api(executor=slow) as api:
        assert api.wait(accepted["id"])["status"] == "succeeded"
        tx = api.wait(running["id"])
        assert tx["status"] == "succeeded" and tx["attempts"] == 2
        assert api.client.get("/v0/tenants/t-left").status_code == 200
        d = api.client.get("/v0/tenants/default/deployments/d").json()
        assert d["status"] == "deployed" and [v["status"] for v in d["vms"]] == ["deployed", "deployed"]
        assert [w.transaction_id for w in slow.calls] == [running["id"]]  # the executor ran again
        assert api.sql("SELECT count(*) FROM vms") == [(2,)]
        finished = api.sql(
            "SELECT type FROM events WHERE transaction_id = %s AND vm IS NULL", (running["id"],)
        )
        assert finished == [("CREATE_DEPLOYMENT",)]


def test_a_running_transaction_of_a_live_worker_is_left_alone(esc_db: str, make_esc_api) -> None:
    """Its session holds the transaction's advisory lock: another worker skips it
    (and the ones behind it on the same resource) until that session ends."""
    with psycopg.connect(esc_db) as conn:
        tx = transactions.submit(
            conn,
            transactions.WriteRequest(
                op="create",
                kind="tenant",
                parent=None,
                name="busy",
                spec={"name": "busy", "description": ""},
                method="POST",
                path="/v0/tenants",
            ),
        )[0]
        conn.execute("UPDATE transactions SET status = 'running' WHERE id = %s", (tx["id"],))
        conn.commit()
    holder = psycopg.connect(esc_db, autocommit=True)
    holder.execute("SELECT pg_advisory_lock(%s)", (tx["id"],))
    try:
        with make_esc_api() as api:
            other = api.client.post("/v0/tenants", json={"name": "free"}).json()["transaction_id"]
            assert api.wait(other)["status"] == "succeeded"
            time.sleep(0.2)
            assert api.client.get(f"/v0/transactions/{tx['id']}").json()["status"] == "running"
            holder.close()  # the other worker's process died
            assert api.wait(tx["id"])["status"] == "succeeded"
    finally:
        holder.close()


def test_finish_happens_exactly_once(esc_db: str) -> None:
    with psycopg.connect(esc_db) as conn:
        row = transactions.submit(
            conn,
            transactions.WriteRequest(
                op="create",
                kind="tenant",
                parent=None,
                name="once",
                spec={"name": "once", "description": ""},
                method="POST",
                path="/v0/tenants",
            ),
        )[0]
        tx = transactions._tx(row)
        transactions.finish(conn, tx, True, 200, "done")
        with pytest.raises(RuntimeError, match="already finished"):
            transactions.finish(conn, tx, False, 500, "again")
        conn.rollback()


def test_a_conflict_found_by_the_worker_fails_the_transaction(esc_api, receiver: Receiver) -> None:
    """Accepted in order, then found impossible when done: a network deleted right
    after a subnet of it was accepted (the subnet was not there yet to refuse it)."""
    api, c = esc_api, esc_api.client
    api.wait(c.post("/v0/networks", json={"name": "n"}).json()["transaction_id"])
    api.app.state.worker.stop()  # both accepted before either is done
    subnet = c.post("/v0/networks/n/subnets", json={"name": "s", "cidr": "10.0.0.0/8"}).json()
    delete = c.delete("/v0/networks/n", headers={"callback": receiver.url})
    assert delete.status_code == 202
    worker = transactions.Worker(api.conninfo, poll=0.05, on_finished=api.app.state.callbacks.wake)
    worker.start()
    try:
        assert api.wait(subnet["transaction_id"])["status"] == "succeeded"
        tx = api.wait(delete.json()["transaction_id"])
    finally:
        worker.stop()
    assert tx["status"] == "failed" and tx["status_code"] == 409 and tx["attempts"] == 1
    assert tx["message"] == "network n is in use by subnet n/s"
    headers, body = receiver.wait(1)[0]
    assert headers["esc-status-code"] == "409" and body["status"] == "failed"
    assert c.get("/v0/networks/n").status_code == 200


def test_a_parent_whose_users_are_being_deleted_may_be_deleted(esc_api) -> None:
    """DELETE of a deployment, then at once of its tenant: accepted (202), done in that
    order; the accept-time check does not count a user whose own delete is accepted
    (NETCONF deletes a tenant with its deployments in one edit the same way)."""
    api, c = esc_api, esc_api.client
    api.wait(c.post("/v0/tenants", json={"name": "t"}).json()["transaction_id"])
    api.wait(c.post("/v0/tenants/t/deployments", json={"name": "d"}).json()["transaction_id"])
    assert c.delete("/v0/tenants/t").status_code == 409  # still in use
    api.app.state.worker.stop()  # both accepted before either is done
    first = c.delete("/v0/tenants/t/deployments/d")
    second = c.delete("/v0/tenants/t")
    assert first.status_code == 202 and second.status_code == 202, second.text
    worker = transactions.Worker(api.conninfo, poll=0.05)
    worker.start()
    try:
        assert api.wait(first.json()["transaction_id"])["status"] == "succeeded"
        assert api.wait(second.json()["transaction_id"])["status"] == "succeeded"
    finally:
        worker.stop()
    assert c.get("/v0/tenants/t").status_code == 404
