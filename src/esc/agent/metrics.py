"""Prometheus metrics of a node, served as ``/metrics`` on the health port by both nodes.

What the agent knows is read at scrape time from its status (a collector, not gauges
kept up to date by the loop): the role, keepalived's state, the peer per network, the
replication, BGP, the witness, the services; the history's counts (failovers,
switchovers...) and the last failover's length come from the node's journal. The
controller's backlog (transactions and callbacks pending, VMs by state) is read from
the node's own database, the standby's replica included, at most once per
``COUNTS_MAX_AGE_S``. The controller's and the ETSI service's own metrics (request and
commit latencies, esc.services.metrics) are read from their multiprocess directories.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from esc.agent.history import KINDS, Journal
from esc.roles import Role, Vrrp

log = logging.getLogger("esc.agent.metrics")

COUNTS_MAX_AGE_S = 5.0

COUNTS_SQL = """
SELECT (SELECT count(*) FROM transactions WHERE status IN ('accepted', 'running')),
       (SELECT count(*) FROM callbacks WHERE status = 'pending'),
       (SELECT coalesce(json_object_agg(status, n), '{}') FROM
           (SELECT status, count(*) AS n FROM vms GROUP BY status) v),
       (SELECT extract(epoch FROM max(replay_lag)) FROM pg_stat_replication)
"""


def _gauge(name: str, doc: str, value: float | bool | None, labels: dict[str, str] | None = None
           ) -> Metric:
    """One sample (a bool is 1 or 0); none when ``value`` is None."""
    g = GaugeMetricFamily(name, doc, labels=list(labels or {}))
    if value is not None:
        g.add_metric(list((labels or {}).values()), float(value))
    return g


class Counts:
    """The controller's backlog from the local database, cached; None when unreadable."""

    def __init__(self, connect: Callable[[], Any]) -> None:
        self.connect = connect
        self.lock = threading.Lock()
        self.value: dict[str, Any] | None = None
        self.at = -1e18

    def get(self) -> dict[str, Any] | None:
        with self.lock:
            if time.monotonic() - self.at < COUNTS_MAX_AGE_S:
                return self.value
            self.at = time.monotonic()
            try:
                with self.connect() as conn:
                    tx, cb, vms, lag = conn.execute(COUNTS_SQL).fetchone()
                self.value = {"transactions": tx, "callbacks": cb, "vms": vms or {},
                              "replay_lag_s": float(lag) if lag is not None else None}
            except Exception as e:  # noqa: BLE001 - a node with no database yet, or a fresh one
                log.debug("metrics: counts not read: %s", e)
                self.value = None
            return self.value


class NodeCollector(Collector):
    def __init__(self, status: Callable[[], dict], journal: Journal,
                 counts: Callable[[], dict[str, Any] | None] | None = None) -> None:
        self.status, self.journal, self.counts = status, journal, counts

    def collect(self) -> Iterable[Metric]:
        st = self.status()
        node = str(st.get("node", ""))
        role = st.get("role", "STOPPED")
        info = GaugeMetricFamily("esc_node_info", "This node (1)", labels=["node"])
        info.add_metric([node], 1)
        yield info
        g = GaugeMetricFamily("esc_role", "1 for the node's role, 0 for the others", labels=["role"])
        for r in Role:
            g.add_metric([r.value], float(role == r.value))
        yield g
        yield _gauge("esc_role_seconds", "Seconds in the current role", st.get("role_for_s"))
        if st.get("ha"):
            g = GaugeMetricFamily("esc_vrrp_state", "1 for keepalived's VRRP state", labels=["state"])
            for v in Vrrp:
                g.add_metric([v.value], float(st.get("vrrp") == v.value))
            yield g
        op = (st.get("op_mode") or {}).get("mode")
        yield _gauge("esc_maintenance_mode", "1 in maintenance mode (no automatic failover)",
                     op == "maintenance")
        peer = st.get("peer")
        if isinstance(peer, dict):
            reach = GaugeMetricFamily("esc_peer_reachable", "1 if the peer answers on this network",
                                      labels=["address"])
            seen = GaugeMetricFamily("esc_peer_last_seen_seconds",
                                     "Seconds since the peer last answered on this network",
                                     labels=["address"])
            for p in peer.get("paths") or []:
                reach.add_metric([str(p.get("address"))], float(bool(p.get("reachable"))))
                if p.get("last_seen_s") is not None:
                    seen.add_metric([str(p.get("address"))], float(p["last_seen_s"]))
            yield reach
            yield seen
        db = st.get("db") or {}
        yield _gauge("esc_db_primary", "1 if the local database is the primary",
                     db.get("state") == "primary")
        if db.get("state") == "primary" and st.get("ha"):
            yield _gauge("esc_replication_synchronous",
                         "1 while every commit waits for a complete standby",
                         bool(db.get("sync") and db.get("peer_complete")))
        elif db.get("state") == "standby":
            yield _gauge("esc_replication_streaming", "1 while this standby streams from the active",
                         bool(db.get("streaming")))
        repl = st.get("replication")
        if isinstance(repl, dict):
            yield _gauge("esc_replication_lag_bytes", "WAL bytes between the active and the standby",
                         repl.get("lag_bytes"))
        wal = db.get("wal_kept_for_peer")
        if isinstance(wal, dict):
            yield _gauge("esc_wal_kept_for_peer_bytes", "WAL kept for the peer's rewind or catch-up",
                         wal.get("bytes"))
        witness = st.get("witness")
        if isinstance(witness, dict):
            yield _gauge("esc_witness_lease_held", "1 while this node holds the witness's lease",
                         bool(witness.get("held")))
            yield _gauge("esc_witness_outdated", "1 while the witness holds the peer outdated",
                         bool(witness.get("outdated")))
            # the built-in witness or etcd: a growing age is a witness (or every member) down
            yield _gauge("esc_witness_last_answer_seconds", "Seconds since the witness last answered",
                         witness.get("last_answer_s"))
        bgp = st.get("bgp")
        if isinstance(bgp, dict):
            yield _gauge("esc_bgp_established", "1 while the BGP session is established",
                         bool(bgp.get("established")))
            yield _gauge("esc_bgp_announced", "1 while the anycast route is announced",
                         bool(bgp.get("announced")))
        vip = st.get("vip")
        if isinstance(vip, dict):
            yield _gauge("esc_vip_present", "1 while the VIP is on this node", bool(vip.get("present")))
        up = GaugeMetricFamily("esc_service_up", "1 for a running service (0 stopped; disabled ones absent)",
                               labels=["service"])
        for name, svc in sorted((st.get("services") or {}).items()):
            if isinstance(svc, dict) and svc.get("state") != "disabled":
                running = svc.get("state") == "running" and svc.get("detail") != "parked"
                up.add_metric([name], float(running))
        yield up
        yield from self._history()
        yield from self._counts()

    def _history(self) -> Iterable[Metric]:
        counts = self.journal.counts()
        c = CounterMetricFamily("esc_ha_events", "Events this node recorded since its agent started",
                                labels=["kind"])
        for kind in KINDS:
            c.add_metric([kind], counts.get(kind, 0))
        yield c
        last = self.journal.last("failover")
        if last is not None:
            yield _gauge("esc_last_failover_seconds",
                         "The last failover to this node: from the active's last answer to the promotion",
                         last.detail.get("active_lost_s"))
            yield _gauge("esc_last_failover_timestamp_seconds", "When this node last took over", last.at)

    def _counts(self) -> Iterable[Metric]:
        if self.counts is None:
            return
        c = self.counts()
        if c is None:
            return
        yield _gauge("esc_transactions_pending", "Controller transactions accepted or running",
                     c["transactions"])
        yield _gauge("esc_callbacks_pending", "Callbacks not delivered yet", c["callbacks"])
        vms = GaugeMetricFamily("esc_vms", "VMs by state", labels=["state"])
        for state, n in sorted(c["vms"].items()):
            vms.add_metric([str(state)], n)
        yield vms
        if c.get("replay_lag_s") is not None:
            yield _gauge("esc_replication_lag_seconds", "The standby's replay lag, as the active sees it",
                         c["replay_lag_s"])


def registry(status: Callable[[], dict], journal: Journal, counts: Callable[[], dict | None] | None,
             multiprocess_dirs: Iterable[Path] = ()) -> CollectorRegistry:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(NodeCollector(status, journal, counts))
    for d in multiprocess_dirs:
        reg.register(_Multiprocess(d))
    return reg


class _Multiprocess(Collector):
    """A service's multiprocess directory; nothing while it does not exist."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def collect(self) -> Iterable[Metric]:
        if not self.path.is_dir():
            return []
        try:
            return list(MultiProcessCollector(None, path=str(self.path)).collect())
        except (OSError, ValueError) as e:
            log.warning("metrics of %s not read: %s", self.path, e)
            return []


def render(reg: CollectorRegistry) -> bytes:
    return generate_latest(reg)
