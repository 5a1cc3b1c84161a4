"""The witness's lease kept in an etcd v3 cluster instead of the built-in witness
(``--ha_witness etcd://HOST:PORT,...``): the same LeaseBook decides, this module is
only its transport, so the role rules and the simulator do not change.

Per pair, two keys under ``/esc/<pair id>/``:

- ``leader``: the holder's node name, attached to an etcd lease of ``ceil(duration)``
  seconds that the holder keeps alive. Taking it is one transaction: the key is absent
  and ``outdated`` is not this node -> put it with our lease; or its value is this
  node -> keep it (re-attached to our lease if an earlier process of ours left it on
  another). The node counts its hold from when it *sent* the grant or keep-alive that
  started the etcd lease's current TTL, minus the margin: etcd counts from receipt.
- ``outdated``: the node the holder marks outdated. Written only inside a transaction
  that finds ``leader`` == this node, so only the holder sets or clears it; a node it
  names is never given ``leader``. etcd keeps it on disk, so a restarted cluster
  still knows it. An operator's force-active deletes it only while ``leader`` is free.

A release deletes ``leader`` in a transaction guarded by its value, and revokes the
lease. etcd revokes an expired lease within 0.5 s of its expiry (its lessor checks
twice a second), so a dead holder's key is gone at most ``ceil(duration) + 0.5`` s
after its last keep-alive (esc.config checks promote_window against it).
"""

from __future__ import annotations

import logging
import math
import threading

import httpx

from esc import clock, etcd
from esc.agent.lease import LeaseThread

log = logging.getLogger("esc.agent.lease")


def keys(pair: str) -> tuple[str, str]:
    """(the holder's key, the outdated mark's key) of a pair."""
    return f"/esc/{pair}/leader", f"/esc/{pair}/outdated"


class EtcdLeaseClient(LeaseThread):
    def __init__(self, cluster: etcd.Cluster, pair: str, node: str, duration: float = 1.0,
                 renew: float = 0.2, margin: float = 0.25, timeout: float = 0.3,
                 wake: threading.Event | None = None, ca: str | None = None,
                 cert: str | None = None, key: str | None = None) -> None:
        super().__init__(pair, node, duration, renew, margin, wake)
        self.gateway = etcd.Gateway(cluster, timeout, ca, cert, key)
        self.leader_key, self.outdated_key = keys(pair)
        self.ttl_asked = max(1, math.ceil(duration))
        self.lease: str | None = None  # the etcd lease we keep alive while we want the key
        self.ttl = 0  # its TTL, as etcd granted it
        self.warning = ""  # for operators, in status (a TTL above what was asked); not an error
        self.io = threading.Lock()  # the agent's stop() and this thread never ask at once

    @property
    def endpoint(self) -> str:
        return self.gateway.endpoint

    def _ask(self, want: bool) -> bool:
        with self.lock:
            body = self.book.request(want, clock.now())
            known_mark = self.book.state.outdated
            holding = self.book.state.valid(clock.now())
        with self.io:
            try:
                if want:
                    sent, data = self._acquire(body, known_mark)
                elif holding:
                    sent, data = self._release()
                else:
                    sent, data = self._look()
            except (etcd.EtcdError, httpx.HTTPError, KeyError, ValueError) as e:
                if "lease not found" in str(e):
                    self.lease = None  # it expired between our keep-alive and the transaction
                return self._failed(f"witness {self.gateway.cluster.url}: {e}")
        return self._answered(sent, data)

    # --- the three requests ------------------------------------------------------------

    def _live_lease(self) -> tuple[float, str]:
        """Our etcd lease, refreshed or new, and when the request that started its current
        TTL was sent."""
        sent = clock.now()
        if self.lease is not None:
            ttl = self.gateway.keepalive(self.lease)
            if ttl > 0:
                return sent - max(0.0, self.book.duration - ttl), self.lease
            log.warning("etcd lease %s of %s expired: asking for a new one", self.lease, self.book.node)
            self.lease, sent = None, clock.now()
        self.lease, self.ttl = self.gateway.grant(self.ttl_asked)
        if self.ttl > self.ttl_asked and not self.warning:
            self.warning = (f"etcd gave a {self.ttl}s lease for {self.ttl_asked}s (its floor is 1.5 x "
                            "its election timeout): a failover waits that long")
            log.error("witness %s: %s", self.gateway.cluster.url, self.warning)
        return sent - max(0.0, self.book.duration - self.ttl), self.lease

    def _acquire(self, body: dict, known_mark: str | None) -> tuple[float, dict]:
        sent, lease = self._live_lease()
        me, lk, ok = self.book.node, self.leader_key, self.outdated_key
        marks = []
        if "outdated" in body:  # the holder's word on the mark: None clears it
            wish = body["outdated"]
            marks = [etcd.delete(ok)] if wish is None else [etcd.put(ok, wish)]
        # renewing: write the mark only when it changes (a renewal is 5 times a second)
        renew_marks = marks if "outdated" in body and body["outdated"] != known_mark else []
        take = [etcd.put(lk, me, lease), *marks, etcd.get(ok)]
        # forced: our mark goes, replaced by the holder's word if it has one (etcd refuses a
        # put and a delete of one key in the same branch)
        forced = [etcd.put(lk, me, lease), *(marks or [etcd.delete(ok)]), etcd.get(ok)]
        free = etcd.txn_op(
            [etcd.value_is(ok, me)],  # held outdated: no lease (unless forced while free)
            forced if body.get("force") else [etcd.get(lk), etcd.get(ok)],
            take)
        ours = etcd.txn_op(
            [etcd.value_is(lk, me)],
            [etcd.txn_op([etcd.lease_is(lk, lease)],
                         [*renew_marks, etcd.get(ok)],
                         # ours on another lease (an earlier process of this node's): ours now
                         [etcd.put(lk, me, lease), *renew_marks, etcd.get(ok)])],
            [etcd.get(lk), etcd.get(ok)])
        answer = self.gateway.txn([etcd.absent(lk)], [free], [ours])
        branch = etcd.inner(answer)
        if answer.get("succeeded"):
            granted = bool(body.get("force")) or not branch.get("succeeded")
        else:
            granted = bool(branch.get("succeeded"))
        found = etcd.values(answer)
        if granted and body.get("force") and answer.get("succeeded") and branch.get("succeeded"):
            log.warning("pair %s: %s forced by its operator: outdated mark cleared", self.book.pair, me)
        return sent, {"granted": granted, "holder": me if granted else found.get(lk),
                      "outdated": found.get(ok)}

    def _release(self) -> tuple[float, dict]:
        sent = clock.now()
        lk, ok = self.leader_key, self.outdated_key
        answer = self.gateway.txn([etcd.value_is(lk, self.book.node)], [etcd.delete(lk), etcd.get(ok)],
                                  [etcd.get(lk), etcd.get(ok)])
        self._drop_lease()
        found = etcd.values(answer)
        return sent, {"granted": False, "holder": None if answer.get("succeeded") else found.get(lk),
                      "outdated": found.get(ok)}

    def _look(self) -> tuple[float, dict]:
        sent = clock.now()
        self._drop_lease()  # asked for, refused, no longer wanted: let nothing linger
        found = etcd.values(self.gateway.txn([], [etcd.get(self.leader_key), etcd.get(self.outdated_key)]))
        return sent, {"granted": False, "holder": found.get(self.leader_key),
                      "outdated": found.get(self.outdated_key)}

    def _drop_lease(self) -> None:
        if self.lease is None:
            return
        lease, self.lease = self.lease, None
        try:
            self.gateway.revoke(lease)
        except (etcd.EtcdError, httpx.HTTPError) as e:
            log.info("etcd lease %s not revoked (%s): it runs out by itself", lease, e)
