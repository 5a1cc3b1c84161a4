"""The host agent: the loop (esc.agent.loop) on real processes, PostgreSQL, keepalived
and HTTP.

:class:`Agent` supplies the loop's ``io_*`` methods: the supervised children (the one
owner of PostgreSQL, keepalived, the controller and ExaBGP), the database adapter, the
keepalived files and notify FIFO, the heartbeat pollers and the witness client (their
own threads, which only record and wake the loop), blocking work on short-lived
threads, and the APIs (unix socket, peer, health) whose handlers only read state or
record an intent. Every decision is the loop's.
"""

from __future__ import annotations

import logging
import os
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import psycopg

from esc import clock, etcd, health, network, privileges, tls
from esc.agent import api, health_api, history, opmode, traps
from esc.agent.etcd_lease import EtcdLeaseClient
from esc.agent.lease import LeaseClient, LeaseThread, LeaseView
from esc.agent.loop import AgentLoop, Pending
from esc.agent.peer import PeerPoller, PeerSnapshot
from esc.agent.supervisor import Child
from esc.config import BgpConfig, NodeConfig, NodePaths, load_config, volume_device
from esc.ha import bgp, keepalived, postgres, vip
from esc.pairing import material as pair_material
from esc.pairing import service as pairing
from esc.pairing.handshake import Decision
from esc.pairing.material import PairMaterial
from esc.render import render_all
from esc.roles import Command, Db, DbView, Role, Vrrp
from esc.services import components

log = logging.getLogger("esc.agent")


class Agent(AgentLoop):
    def __init__(self, root: Path) -> None:
        self.paths = NodePaths(root)
        cfg: NodeConfig = load_config(self.paths)
        self.wake = threading.Event()
        super().__init__(cfg, opmode.load(self.paths))
        self.notify_reader: keepalived.NotifyReader | None = None
        self.lease: LeaseThread | None = None
        self.stopped_db: DbView | None = None  # cached: read from pg_control once per stop
        self.beat_at = clock.now()  # the freeze sentinel's last beat
        self.freeze_seen = 0.0  # the longest freeze the sentinel saw since the last tick
        self.localdb = postgres.LocalDb(self.paths, self.cfg)
        logs = self.paths.log
        self.pg = Child("pgsql", lambda: postgres.server_argv(self.paths, self.cfg),
                        logs / "postgres.log", user=postgres.PG_USER,
                        stop_signal=signal.SIGINT, grace=15.0)
        self.keepalived = Child("keepalived", lambda: keepalived.argv(self.paths),
                                logs / "keepalived.log", grace=5.0)
        # the user it runs as is settled at run(): privileges.SERVICE_USER when it can
        self.manager = Child("escmanager", lambda: [sys.executable, "-m", "esc.services.manager",
                                                    "--root", str(self.paths.root)],
                             logs / "escmanager.out", stdin_pipe=True, grace=5.0,
                             env=self._metrics_env("escmanager"),
                             prepare=lambda: self._prepare_manager("escmanager"))
        # the ETSI SOL003 service (esc.etsi.service): parked and served with the controller
        self.etsi = Child("escetsi", lambda: [sys.executable, "-m", "esc.etsi.service",
                                              "--root", str(self.paths.root)],
                          logs / "escetsi.out", stdin_pipe=True, grace=5.0,
                          env=self._metrics_env("escetsi"),
                          prepare=lambda: self._prepare_manager("escetsi"))
        self.etsi_serving = False
        # the NETCONF service (esc.netconf.service, the original's confd): the same, on port 830
        self.confd = Child("escconfd", lambda: [sys.executable, "-m", "esc.netconf.service",
                                                "--root", str(self.paths.root)],
                           logs / "escconfd.out", stdin_pipe=True, grace=5.0,
                           prepare=self._prepare_confd, caps=("net_bind_service",))
        self.confd_serving = False
        self.confd_host_key = ""  # its fingerprint, for status (the pair's: see esc.netconf.credentials)
        self.manager_serving_at = 0.0
        self.mode_sent: dict[str, tuple[int | None, str]] = {}  # service -> (pid, op_mode sent)
        # root's part of the VIM driver, for the unprivileged controller (esc.vim.service)
        self.vim_helper = Child("escvim", lambda: [sys.executable, "-m", "esc.vim.service",
                                                   "--root", str(self.paths.root)],
                                logs / "escvim.out", grace=3.0)
        # as its own unprivileged user, with its own copy of exabgp.conf (esc.privileges)
        self.exabgp = Child("exabgp", lambda: bgp.argv(self.paths), logs / "exabgp.log",
                            user=privileges.BGP_USER, grace=3.0, env=bgp.env(self.paths),
                            prepare=lambda: privileges.prepare_bgp_files(self.paths))
        # SNMP traps (esc.snmp.sender), unprivileged, fed by the trap watcher (esc.agent.traps)
        self.snmp = Child("escsnmp", lambda: [sys.executable, "-m", "esc.snmp.sender",
                                              "--root", str(self.paths.root)],
                          logs / "escsnmp.out", stdin_pipe=True, grace=2.0,
                          prepare=lambda: privileges.give_log(self.paths, "escsnmp.log"),
                          caps=("net_bind_service",))  # GETs on UDP 161 (--agent_port)
        self.traps: traps.TrapWatcher | None = None
        self.announce: tuple[bool, int] | None = None  # what bgp_desired says (None: not yet)
        self.exabgp_conf_seen = b""  # exabgp.conf as the running ExaBGP read it
        self.pollers: list[PeerPoller] = []  # one per network, VRRP's first (HaConfig.paths)
        self.servers: list = []
        self.token = ""  # what this node sends the peer
        self.tokens: list[str] = []  # what it accepts (two while the pair renews its material)
        self.peer_tls: ssl.SSLContext | None = None  # the peer API's client side
        self.peer_server_tls: ssl.SSLContext | None = None  # its server side, for new connections
        self.rotating = threading.Lock()
        self.users_settled = threading.Event()  # see run() and _settle_users
        self.users_settled.set()
        self.journal = history.Journal(self.paths.lib / "history.jsonl", cfg.name)
        self.shipper: history.Shipper | None = None
        # status() runs `ip`: the health API, /metrics and the trap watcher share one a
        # half-second old at most
        self.status_snapshot: health_api.Snapshot[dict] = health_api.Snapshot(self.status, 0.5)

    # ----------------------------------------------------------------- run
    def run(self) -> int:
        self.paths.run.mkdir(parents=True, exist_ok=True)
        self.paths.agent_pid.write_text(f"{os.getpid()}\n")
        signal.signal(signal.SIGTERM, lambda *_: self.request_stop())
        signal.signal(signal.SIGINT, lambda *_: self.request_stop())
        postgres.prepare_dirs(self.paths, self.cfg)  # the service user too
        # the users the controller and ExaBGP run as: checked off the start-up path (two
        # Python starts), they start once it is settled
        self.users_settled.clear()
        threading.Thread(target=self._settle_users, name="service-users", daemon=True).start()
        ha = self.cfg.ha
        log.info("agent starting (pid %d, %s)", os.getpid(),
                 f"HA with {ha.peer_address}, VIP {ha.vip.cidr}" if ha else "standalone")
        self.journal.record("start", Role.STOPPED, "agent started" + (
            f" (HA with {ha.peer_address}, VIP {ha.vip.cidr})" if ha else " (standalone)"))
        # the installer's network arguments (addresses, gateway, routes, host names):
        # before the peer is looked for over them
        for line in network.apply(self.cfg, self.paths):
            log.info("network: %s", line)
        self.servers.append(api.serve_unix(self.paths.agent_sock, self))
        if ha:
            pairing_server = pairing.PairingServer(self.paths, ha.node_list,
                                                   lambda: pair_material.load(self.paths),
                                                   lambda: self.role == Role.ACTIVE)
            for own, _ in ha.paths:
                self.servers.append(pairing.serve(own, self.cfg.pair_port, pairing_server))
            material = pair_material.load(self.paths) or self._pair_at_start()
            if material is None:  # asked to stop before it paired
                self.shutdown()
                return 0
            self._use_material()
            keepalived.write_gate(self.paths, False)
            keepalived.write_priority(self.paths, 0)
            self._start_notify_reader()
            # one poller per network: the peer is alive while it answers on any of them
            self.pollers = [PeerPoller(peer_addr, self.cfg.peer_port, self.token, ha.self_name,
                                       self.cfg.timing.heartbeat_interval,
                                       self.cfg.timing.heartbeat_timeout, self.wake,
                                       self.peer_tls)
                            for _, peer_addr in ha.paths]
            for poller in self.pollers:
                poller.start()
            if ha.witness_is_etcd:
                self.lease = EtcdLeaseClient(etcd.parse_url(ha.witness or ""), ha.pair_id, ha.self_name,
                                             duration=self.cfg.timing.lease, wake=self.wake,
                                             ca=ha.witness_ca, cert=ha.witness_cert, key=ha.witness_key)
                self.lease.start()
            elif ha.witness:
                self.lease = LeaseClient(ha.witness, material.witness_token(ha.self_name),
                                         ha.pair_id, ha.self_name, duration=self.cfg.timing.lease,
                                         wake=self.wake)
                self.lease.start()
            for own, _ in ha.paths:
                self.servers.append(api.serve_peer(own, self.cfg.peer_port, self, lambda: self.tokens,
                                                   tls.peer_server_options(self.paths),
                                                   context=lambda: self.peer_server_tls))
        if self.cfg.bgp:
            self._set_announce(False)  # before ExaBGP starts: a fresh node announces nothing
            if bgp.ensure_anycast(self.cfg.bgp):
                log.info("anycast %s added to %s", self.cfg.bgp.anycast_ip, bgp.LOOPBACK)
        self.shipper = history.Shipper(
            self.journal, self._local_db, self._serving_primary, self._peer_history if ha else None,
            peer_latest=self._peer_history_latest if ha else None)
        self.shipper.start()
        self.traps = traps.TrapWatcher(
            self.snmp, self._snmp_config, self.status_snapshot.get, lambda st: health.report(st)[1],
            self.journal, ha.peer_address if ha else None, self._local_db, self._serving_primary,
            ready=self.users_settled)
        self.traps.start()
        self.beat_at = clock.now()
        threading.Thread(target=self._freeze_sentinel, name="freeze-sentinel", daemon=True).start()
        try:
            self.servers.append(health_api.serve(self.status_snapshot.get, self.cfg.health_port,
                                                 max_age=0, metrics=self._metrics(),
                                                 metrics_user=self._metrics_user))
        except (OSError, RuntimeError) as e:  # the pair works without it; say so
            log.error("health API not served on port %d: %s", self.cfg.health_port, e)
        try:
            while not self.stop_requested:
                try:
                    self.tick()
                except Exception:  # the loop must go on; the next tick re-applies everything
                    log.exception("tick failed")
                self.wake.wait(self.cfg.timing.tick)
                self.wake.clear()
        finally:
            self.shutdown()
        return 0

    def _manager_user(self) -> str | None:
        """The controller runs unprivileged, unless the service user cannot run this
        installation's Python (a virtualenv under a directory it cannot enter): then as
        root, said loudly, rather than not at all."""
        problem = privileges.can_run_python(privileges.SERVICE_USER)
        if problem is None:
            return privileges.SERVICE_USER
        log.error("escmanager runs as root: the user %s cannot run %s (%s); make the installation "
                  "readable by it (a virtualenv made with /usr/bin/python3)",
                  privileges.SERVICE_USER, sys.executable, problem)
        return None

    def _settle_users(self) -> None:
        try:
            self.manager.user = self.etsi.user = self.snmp.user = self.confd.user = self._manager_user()
            if self.cfg.bgp:
                self.exabgp.user = self._bgp_user()
                self.exabgp.env = bgp.env(self.paths, self.exabgp.user)
        except Exception:
            log.exception("could not check the services' users: they run as root")
        finally:
            self.users_settled.set()
            self.wake.set()
        if self.cfg.portal_user is not None:
            self._serve_portal_socket()

    def _serve_portal_socket(self) -> None:
        """The portal's narrow way to this agent (esc.agent.api.portal_app), in the
        controller's own directory and only its user's."""
        try:
            d = self.paths.manager_dir
            d.mkdir(parents=True, exist_ok=True)
            owner = None
            if self.manager.user is not None:
                privileges.give(d, 0o700, self.manager.user)
                owner = privileges.service_ids(self.manager.user)
            self.servers.append(api.serve_portal(self.paths.portal_sock, self, owner,
                                                 self.status_snapshot.get))
        except (OSError, RuntimeError, KeyError) as e:  # the portal says the agent is unreachable
            log.error("the portal's socket %s not served: %s", self.paths.portal_sock, e)

    def _bgp_user(self) -> str | None:
        """ExaBGP runs as its own user, unless that user cannot run this Python (as for
        the controller): then as root, said loudly."""
        privileges.ensure_service_user(privileges.BGP_USER)
        problem = privileges.can_run_python(privileges.BGP_USER)
        if problem is None:
            return privileges.BGP_USER
        log.error("exabgp runs as root: the user %s cannot run %s (%s)", privileges.BGP_USER,
                  sys.executable, problem)
        return None

    def _metrics_env(self, service: str) -> dict[str, str]:
        return {"PROMETHEUS_MULTIPROC_DIR": str(privileges.metrics_dir(self.paths, service))}

    def _prepare_manager(self, service: str) -> None:
        # as root too: the controller reads these copies when they are there
        try:
            privileges.prepare_manager_files(self.paths)
            privileges.prepare_metrics_dir(self.paths, service)
        except OSError as e:  # it starts anyway: HTTP still serves, HTTPS says what is missing
            log.error("could not hand %s its files in %s: %s", service, self.paths.manager_dir, e)

    def _prepare_confd(self) -> None:
        try:
            privileges.prepare_confd_files(self.paths, self.cfg)
        except (OSError, KeyError) as e:  # it starts as root's copy cannot be read: says so in its log
            log.error("could not hand escconfd its files in %s: %s", self.paths.manager_dir, e)

    # ------------------------------------------------------ the pair's material
    def _use_material(self) -> None:
        """Present this node's material and accept every one it holds (its own, and
        during a renewal the staged or the replaced one): the peer API's files and
        contexts (the server hands each new connection the current one), the tokens,
        PostgreSQL's copies (reloaded when they changed)."""
        current = pair_material.load(self.paths)
        assert current is not None
        held = pair_material.trusted(self.paths)
        tls.write_peer_material(self.paths, current.peer_cert.encode(), current.peer_key.encode())
        tls.write_peer_trust(self.paths, [m.peer_cert.encode() for m in held])
        client, server = tls.peer_client_context(self.paths), tls.peer_server_context(self.paths)
        with self.lock:
            self.token = current.derive("peer-token")
            self.tokens = [m.derive("peer-token") for m in held]
            self.peer_tls, self.peer_server_tls = client, server
        for poller in self.pollers:
            poller.use(client, self.token)
        if postgres.install_tls_files(self.paths) and self.pg.running and self.pg.pid:
            os.kill(self.pg.pid, signal.SIGHUP)  # re-reads its TLS files; connections stay

    def _material_command(self, name: str, body: dict) -> tuple[int, dict]:
        """The peer's steps of a renewal (esc.agent.core.Agent._rotate on the other node):
        stage (hold and trust the new material), switch (use it), finish (forget the old)."""
        current = pair_material.load(self.paths)
        if current is None:
            return 409, {"error": "this node holds no pair material"}
        with self.rotating:
            if name == "pair_stage":
                try:
                    new = PairMaterial.from_dict(body.get("material"))
                except ValueError as e:
                    return 400, {"error": str(e)}
                if body.get("from") != current.id:
                    return 409, {"error": f"this node holds other pair material ({current.id}, not "
                                 f"{body.get('from')})"}
                if new.witness_key != current.witness_key:
                    return 400, {"error": "the new material must keep the witness key"}
                return self._stage(new)
            if name == "pair_switch":
                return self._switch(str(body.get("id")))
            return self._finish(str(body.get("id")))

    def _stage(self, new: PairMaterial) -> tuple[int, dict]:
        pair_material.save(self.paths, "next", new)
        self._use_material()
        log.info("pair material %s staged: trusted beside the current one", new.id)
        return 200, {"result": "staged"}

    def _switch(self, new_id: str) -> tuple[int, dict]:
        current, staged = pair_material.load(self.paths), pair_material.load(self.paths, "next")
        assert current is not None
        if current.id == new_id:
            return 200, {"result": "switched already"}
        if staged is None or staged.id != new_id:
            return 409, {"error": f"no staged pair material {new_id}"}
        with self.lock:
            primary = self.db_view.state == Db.PRIMARY
        if primary:  # before anyone uses the new password
            db = postgres.LocalDb(self.paths, self.cfg)
            try:
                db.set_replication_password(staged.derive("replication"))
            except Exception as e:
                return 500, {"error": f"could not set the replication password: {e}"}
            finally:
                db.close()
        pair_material.save(self.paths, "prev", current)
        pair_material.install(self.paths, self.cfg, staged)
        pair_material.save(self.paths, "next", None)
        self._use_material()
        if staged.https_key != current.https_key:
            self._renew_manager_tls()
        log.info("pair material %s in use (the replaced one still trusted)", staged.id)
        return 200, {"result": "switched"}

    def _finish(self, new_id: str) -> tuple[int, dict]:
        current = pair_material.load(self.paths)
        assert current is not None
        if current.id != new_id:
            return 409, {"error": f"pair material {new_id} is not in use here ({current.id} is)"}
        pair_material.save(self.paths, "prev", None)
        self._use_material()
        log.info("pair material %s alone trusted: the replaced one is forgotten", new_id)
        return 200, {"result": "finished"}

    def _renew_manager_tls(self) -> None:
        """A new HTTPS certificate: the serving controller loads it (new connections get
        it, no restart); a parked one is started again with it."""
        privileges.prepare_manager_files(self.paths)
        for m, serving in ((self.manager, self.serving), (self.etsi, self.etsi_serving)):
            if serving:
                m.send_line("tls")
            elif m.running:
                m.stop(grace=1.0)  # parked: the next tick starts a fresh one

    def _rotate(self, body: dict) -> tuple[int, dict]:
        """``escadm ha secret rotate``: new pair key and peer certificate (and HTTPS key with
        ``https``), with no outage: both nodes trust old and new, both switch (the primary
        first: it sets the replication password the standby's next connection uses),
        both forget the old."""
        if not self.cfg.is_ha:
            return 409, {"error": "this node is STANDALONE (no HA configured)"}
        with self.lock:
            role, peer = self.role, self.peer_view
            primary = self.db_view.state == Db.PRIMARY
        if role not in (Role.ACTIVE, Role.STANDBY) or peer is None or \
                {role, peer.role} != {Role.ACTIVE, Role.STANDBY}:
            return 409, {"error": f"renewing needs an ACTIVE and a STANDBY that hear each other; this "
                                  f"node is {role}, the peer {peer.role if peer else 'unreachable'}"}
        current = pair_material.load(self.paths)
        assert current is not None
        new = pair_material.load(self.paths, "next") or current.rotated(https=bool(body.get("https")))
        steps: list[tuple[str, Callable[[], tuple[int, dict]]]] = [
            ("stage here", lambda: self._stage(new)),
            ("stage on the peer", lambda: self._peer_command(
                "pair_stage", {"material": new.to_dict(), "from": current.id})),
        ]
        here = ("switch here", lambda: self._switch(new.id))
        there = ("switch on the peer", lambda: self._peer_command("pair_switch", {"id": new.id}))
        steps += [here, there] if primary else [there, here]
        steps += [("finish on the peer", lambda: self._peer_command("pair_finish", {"id": new.id})),
                  ("finish here", lambda: self._finish(new.id))]
        with self.rotating:
            for what, step in steps:
                code, out = step()
                if code >= 300:
                    return code, {"error": f"renewal stopped at '{what}': {out.get('error', code)}; "
                                           "run it again to go on"}
        return 200, {"result": f"pair material renewed: {current.id} -> {new.id}"
                               + ("; HTTPS certificate renewed: clients pin the new one" if body.get("https")
                                  else "")}

    PAIR_RETRY_S = 1.0

    def _pair_at_start(self) -> PairMaterial | None:
        """A node without the pair's material (the second node after its install, when
        the first was not running yet) pairs with the peer before anything else: until
        then it has no certificate to talk to it with, nor a replication password."""
        ha = self.cfg.ha
        assert ha is not None
        said = ""
        while not self.stop_requested:
            try:
                outcome = pairing.pair_node(self.paths, self.cfg)
                if outcome.decision == Decision.TAKE and outcome.material is not None:
                    log.info("paired with %s: the pair's material taken", ha.peer_address)
                    with self.lock:
                        self.reason = "paired"
                    return outcome.material
                reason = "the peer has no pair material yet"
            except pairing.PairingError as e:
                reason = str(e)
            if reason != said:
                log.warning("waiting to pair with %s: %s", ha.peer_address, reason)
                said = reason
            with self.lock:
                self.reason = f"waiting to pair with {ha.peer_address}: {reason}"
            self.wake.wait(self.PAIR_RETRY_S)
            self.wake.clear()
        return None

    def _start_notify_reader(self) -> None:
        self.notify_reader = keepalived.NotifyReader(self.paths.vrrp_fifo, self.on_vrrp)
        self.notify_reader.start()

    # ---------------------------------------------------------------- tick
    def children(self) -> tuple[Child, ...]:
        return (self.pg, self.keepalived, self.manager, self.etsi, self.confd, self.exabgp, self.vim_helper)

    def io_before_tick(self) -> None:
        for child in self.children():
            was = child.pid
            if not child.poll() and was is not None:
                if child is self.manager:
                    self.serving = False
                if child is self.etsi:
                    self.etsi_serving = False
                if child is self.confd:
                    self.confd_serving = False
                if child is self.keepalived:
                    self.on_vrrp(Vrrp.UNKNOWN)
                if child.crashed:
                    log.warning("%s (pid %d) died (exit %s)", child.name, was, child.last_exit)
                child.crashed = False

    # ------------------------------------------------------------ loop io
    def now(self) -> float:
        return clock.now()

    def wall_time(self) -> float:
        return time.time()

    def wakeup(self) -> None:
        self.wake.set()

    def submit(self, name: str, fn: Callable[[], Any]) -> Pending:
        """Blocking work on a thread of its own; the loop is woken when it ends."""
        fut: Future[Any] = Future()

        def run() -> None:
            try:
                fut.set_result(fn())
            except BaseException as e:  # handed to the job that waits for it
                fut.set_exception(e)
            self.wake.set()
        threading.Thread(target=run, name=f"io-{name}", daemon=True).start()
        return fut

    def io_paused_for(self, now: float) -> float:
        with self.lock:
            paused_for = max(now - self.beat_at, self.freeze_seen)
            self.freeze_seen = 0.0
        return paused_for

    def io_db_running(self) -> bool:
        return self.pg.running

    def io_db_observe(self, running: bool) -> DbView:
        if running:
            self.stopped_db = None
        db = self.localdb.observe(running, self.sync_from_lsn)
        return self._stopped_db() if db.state == Db.STOPPED else db

    def io_db_start(self, as_standby: bool) -> bool:
        if as_standby:
            postgres.set_standby_signal(self.paths.pgdata(self.cfg), True)
        self.localdb.close()
        return self.pg.start()

    def io_db_stop(self) -> None:
        if self.pg.running and not self.pg.stopping:
            log.info("stopping the database (fast)")
            self.pg.stop()

    def io_set_sync(self, peer_name: str | None) -> None:
        self.localdb.set_sync(peer_name)

    def io_keep_peer_slot(self, keep_from: int | None) -> str | None:
        return self.localdb.keep_peer_slot(keep_from)

    def io_least_privilege_replication(self) -> bool:
        return self.localdb.least_privilege_replication()

    def io_prove_sync(self) -> int:
        return postgres.prove_sync_in_force(postgres.local_conninfo(self.paths, self.cfg))

    def io_promote(self) -> None:
        db = postgres.LocalDb(self.paths, self.cfg)
        try:
            db.promote()
        finally:
            db.close()

    def io_peer_position(self) -> tuple[bool, int] | None:
        return postgres.peer_position(self.paths, self.cfg)

    def io_checkpoint_peer(self) -> None:
        postgres.checkpoint_peer(self.paths, self.cfg)

    def io_db_has_data(self) -> bool:
        return postgres.has_data(self.paths.pgdata(self.cfg))

    def io_local_timeline(self) -> int:
        pgdata = self.paths.pgdata(self.cfg)
        return postgres.stopped_timeline(pgdata, postgres.controldata(pgdata))

    def io_rewind(self) -> tuple[bool, str]:
        res = postgres.rewind(self.paths, self.cfg)
        if res.returncode == 0:
            return True, (res.stderr.strip().splitlines() or ["done"])[-1]
        return False, f"exit {res.returncode}: {res.stderr.strip()[-300:]}"

    def io_clone(self) -> str:
        aside = postgres.clone(self.paths, self.cfg)
        if aside is None:
            return "cloned the peer's database"
        return (f"cloned the peer's database; the old data directory is kept at {aside.path} "
                f"({aside.bytes / 2**20:.1f} MiB; only the newest such copy is kept, remove it "
                "when not needed)")

    def io_prepare_standby(self) -> None:
        postgres.write_managed_files(self.paths, self.cfg)
        postgres.set_standby_signal(self.paths.pgdata(self.cfg), True)
        self.stopped_db = None

    def io_vrrp_reader_ok(self) -> str | None:
        reader = self.notify_reader
        if reader is None or reader.is_alive():
            return None
        return reader.error or "no reason"

    def io_restart_vrrp_reader(self) -> None:
        self._start_notify_reader()

    def io_vip_present(self) -> bool:
        ha = self.cfg.ha
        return ha is not None and vip.has_address(ha.vip.address, ha.vip.interface)

    def io_keepalived(self, gate: bool) -> None:
        keepalived.write_gate(self.paths, gate)
        if not self.keepalived.running and not self.stop_requested:
            ha = self.cfg.ha
            assert ha
            if vip.remove(ha.vip.address, ha.vip.prefixlen, ha.vip.interface):
                log.warning("removed a stale VIP %s left by a dead keepalived", ha.vip.cidr)
            self.on_vrrp(Vrrp.UNKNOWN)
            if self.keepalived.start():
                log.info("keepalived started (pid %s)", self.keepalived.pid)

    def io_priority(self, bonus: int) -> None:
        keepalived.write_priority(self.paths, bonus)

    def io_peer_snapshots(self) -> list[PeerSnapshot]:
        return [p.snapshot() for p in self.pollers]

    def io_lease_view(self) -> LeaseView | None:
        return self.lease.view() if self.lease is not None else None

    def io_lease_want(self, want: bool) -> None:
        if self.lease is not None:
            self.lease.set_want(want)

    def io_lease_force(self) -> None:
        if self.lease is not None:
            self.lease.force()

    def io_lease_outdate_peer(self, outdated: bool) -> None:
        if self.lease is not None and self.cfg.ha is not None:
            self.lease.set_outdated(self.cfg.ha.peer_name if outdated else None)

    def io_volume_ok(self) -> bool:
        return self._volume_ok()

    def io_save_op_mode(self, op: opmode.OpMode) -> None:
        opmode.save(self.paths, op)

    def io_bgp(self, announce: bool) -> None:
        self._actuate_bgp(announce)

    DISK_FULL_BYTES = 64 * 1024 * 1024  # below this the database cannot be trusted to write WAL

    def _disk(self) -> dict:
        """Free space where the database lives (a full disk stops PostgreSQL)."""
        target = self.paths.pgdata(self.cfg)
        while not target.exists() and target != target.parent:
            target = target.parent
        try:
            st = os.statvfs(target)
        except OSError as e:
            return {"path": str(target), "error": str(e)}
        free = st.f_bavail * st.f_frsize
        aside = [{"path": str(a.path), "bytes": a.bytes, "made_at": a.made_at}
                 for a in postgres.aside_copies(self.paths.pgdata(self.cfg))]
        return {"path": str(target), "free_bytes": free, "total_bytes": st.f_blocks * st.f_frsize,
                "full": free < self.DISK_FULL_BYTES, "aside": aside}

    def _refresh_db_view(self) -> None:
        """A fresh look at the local database outside the loop (while shutting down)."""
        db = self.localdb.observe(self.pg.running, self.sync_from_lsn)
        with self.lock:
            self.db_view, self.observed_at = db, clock.now()

    def _freeze_sentinel(self) -> None:
        """Beats every 50 ms. A slow tick (a slow query) does not stop it; a frozen
        process stops it too, and the first of it and the loop to run after the
        freeze sees the gap, so the loop fences before it acts on what it saw before."""
        while not self.stop_requested:
            time.sleep(0.05)
            now = clock.now()
            with self.lock:
                self.freeze_seen = max(self.freeze_seen, now - self.beat_at)
                self.beat_at = now

    def _stopped_db(self) -> DbView:
        """A stopped database's position: whether it was last a primary (it needs a
        rewind to follow) and its timeline (never rewound onto an older one)."""
        if self.stopped_db is None:
            pgdata = self.paths.pgdata(self.cfg)
            if not postgres.has_data(pgdata):
                return DbView(state=Db.STOPPED)
            control = postgres.controldata(pgdata)
            state = control.get("Database cluster state", "")
            self.stopped_db = DbView(
                state=Db.STOPPED, timeline=postgres.stopped_timeline(pgdata, control),
                was_primary=state in ("shut down", "in production")
                and not (pgdata / "standby.signal").exists())
        return self.stopped_db

    def _volume_ok(self, mount: bool = True) -> bool:
        ha = self.cfg.ha
        if ha is None or ha.mode != "drbd_on_cinder":
            return True
        assert ha.db_volume_id
        dev = volume_device(ha.db_volume_id)
        target = self.paths.db_volume_mount(self.cfg)
        if mount and dev.is_block_device() and not os.path.ismount(target):
            target.mkdir(parents=True, exist_ok=True)
            subprocess.run(["mount", str(dev), str(target)], capture_output=True)
        return os.path.ismount(target)

    def _set_announce(self, announce: bool, timeline: int = 0) -> None:
        want = (announce, bgp.med_for(timeline) if announce else bgp.MED_BASE)
        if want != self.announce:
            bgp.write_desired(self.paths, *want)
            if self.announce is not None or announce:
                log.warning("BGP: %s %s%s", "announcing" if announce else "withdrawing",
                            self.cfg.bgp.anycast_prefix if self.cfg.bgp else "?",
                            f" (med {want[1]}, timeline {timeline})" if announce else "")
            self.announce = want

    def _actuate_bgp(self, announce: bool) -> None:
        if self.cfg.bgp is None:
            return
        self._set_announce(announce and not self.stop_requested, self.db_view.timeline)
        if not self.exabgp.running and not self.stop_requested and self.users_settled.is_set() \
                and self.paths.exabgp_conf.exists() and self._read_exabgp_conf() and self.exabgp.start():
            log.info("exabgp started (pid %s), neighbor %s", self.exabgp.pid, self.cfg.bgp.remote_ip)

    def _read_exabgp_conf(self) -> bool:
        try:
            self.exabgp_conf_seen = self.paths.exabgp_conf.read_bytes()
            return True
        except OSError:
            return False

    # A controller told to stop when its node steps down gets this long to finish what it
    # answers, then SIGKILL (a commit it could not finish was never acknowledged, and its
    # client retries). Short, because the next parked controller starts only after it
    # exits: with 5 s, a node that stepped down and was elected again within 5 s sent
    # "serve" to the one still shutting down, and served nothing until it was killed.
    STOP_GRACE_S = 1.0
    ETSI_AFTER_S = 0.3

    def io_services(self, on: bool, observed_at: float) -> None:
        if self.cfg.vim is not None and not self.vim_helper.running and not self.stop_requested \
                and self.vim_helper.start():
            log.info("VIM helper started (pid %s)", self.vim_helper.pid)
        if not self.users_settled.is_set():
            return  # who the controller runs as is not known yet (run())
        was = self.serving
        self.serving = self._drive(self.manager, on, self.serving, observed_at)
        if self.serving and not was:
            self.manager_serving_at = clock.now()
        if self.cfg.etsi.enabled:
            # the ETSI service a moment after the controller: on a new active, the first
            # requests of the REST clients retrying through the VIP then have the CPU
            etsi_on = on and self.serving and clock.now() - self.manager_serving_at >= self.ETSI_AFTER_S
            self.etsi_serving = self._drive(self.etsi, etsi_on or (on and self.etsi_serving),
                                            self.etsi_serving, observed_at)
        elif self.etsi.running:
            self.etsi.stop(grace=self.STOP_GRACE_S)
            self.etsi_serving = False
        if self.cfg.confd_user is not None:
            # NETCONF with the ETSI service: after the REST clients' first requests
            confd_on = on and self.serving and clock.now() - self.manager_serving_at >= self.ETSI_AFTER_S
            self.confd_serving = self._drive(self.confd, confd_on or (on and self.confd_serving),
                                             self.confd_serving, observed_at)
        elif self.confd.running:
            self.confd.stop(grace=self.STOP_GRACE_S)
            self.confd_serving = False

    def _drive(self, m: Child, on: bool, serving: bool, observed_at: float) -> bool:
        """Serve (on) or park one of the parked services (the controller, the ETSI
        service); whether it serves now. The serving lease runs from ``observed_at``."""
        if on:
            if m.stopping:
                m.kill()  # it will never serve again; the next tick starts a fresh one
                return False
            if not m.running:
                serving = False
                if not m.start():
                    return False
            # the serving lease (esc.services.serving), renewed every tick from the time of
            # its observations: a node frozen longer than pause_fence, even in the middle
            # of this tick, answers nothing when it wakes
            if not m.send_line(f"lease {observed_at + self.pause_fence:.3f}"):
                return serving
            # the pair's operation mode: in maintenance the northbound refuses new requests
            # and the monitor pauses (sent when it changes, and to each new process)
            mode = self.op_mode.mode
            if self.mode_sent.get(m.name) != (m.pid, mode) and m.send_line(f"mode {mode}"):
                self.mode_sent[m.name] = (m.pid, mode)
            if not serving and m.send_line("serve"):
                serving = True
                log.info("%s serving (pid %s)", m.name, m.pid)
            return serving
        if serving:
            log.info("%s stopped", m.name)
            m.stop(grace=self.STOP_GRACE_S)
        elif not m.running and not self.stop_requested:
            m.start()  # parked: imported and ready, serving nothing
        return False

    # ------------------------------------------------------------ shutdown
    def shutdown(self) -> None:
        log.warning("agent stopping (role %s)", self.role)
        if self.cfg.bgp:
            self._set_announce(False)
            self.exabgp.stop()  # a NOTIFICATION: the router drops the route at once
        if self.cfg.is_ha:
            keepalived.write_gate(self.paths, False)  # hand the VIP over first
        # Services and database stop together: the peer promotes only once our
        # database is down, so every second spent here is a second without service.
        self.manager.stop(grace=2)
        self.etsi.stop(grace=2)
        self.confd.stop(grace=2)
        self.pg.stop()
        # The peer promotes when it sees our database down, and only within its promote
        # window: keep what we tell it true (and fresh) while the database stops.
        deadline = clock.now() + 20
        while self.pg.running and clock.now() < deadline:
            self._refresh_db_view()
            time.sleep(0.05)
        self.pg.stop_wait(1)
        with self.lock:
            self.db_view, self.observed_at = DbView(state=Db.STOPPED), clock.now()
            self.role = Role.STOPPED
        self.manager.stop_wait(5)
        self.etsi.stop_wait(5)
        self.confd.stop_wait(5)
        self.vim_helper.stop_wait(5)
        self.keepalived.stop_wait(5)
        self.exabgp.stop_wait(5)
        for poller in self.pollers:
            poller.stop()
        if self.lease:
            self.lease.stop()
        for srv in self.servers:
            srv.shutdown()
        self.paths.agent_sock.unlink(missing_ok=True)
        self.paths.portal_sock.unlink(missing_ok=True)
        self.paths.agent_pid.unlink(missing_ok=True)
        with self.lock:
            self.role = Role.STOPPED
        if self.shipper is not None:
            self.shipper.stop()
        if self.traps is not None:
            self.traps.stop()
        self.journal.record("stop", Role.STOPPED, "agent stopped")
        self.journal.close()
        log.warning("agent stopped")

    # ---------------------------------------------------------------- traps
    def _snmp_config(self) -> dict[str, Any] | None:
        """The sender's configuration line, secrets included (it travels by pipe)."""
        snmp = self.cfg.snmp
        if snmp is None:
            return None
        from esc.config import load_secrets

        secrets = load_secrets(self.paths)
        return {**snmp.model_dump(mode="json"), "community": secrets.get("snmp_community", ""),
                "auth_key": secrets.get("snmp_auth_key", ""), "priv_key": secrets.get("snmp_priv_key", "")}

    def _snmp_test(self, by: str) -> tuple[int, dict]:
        if self.cfg.snmp is None or self.traps is None:
            return 409, {"error": "SNMP traps are off (escadm snmp set, then escadm reload)"}
        from esc.agent.alarms import Notification

        if not self.traps.send(Notification("escTest", self.cfg.name, self.role, f"a test asked by {by}")):
            return 503, {"error": "the trap sender is not running yet; see var/log/esc/escsnmp.log"}
        to = ", ".join(f"{t.host}:{t.port}" for t in self.cfg.snmp.targets)
        return 200, {"result": f"escTest sent to {to}"}

    # ------------------------------------------------------------- metrics
    def _metrics(self) -> Callable[[], bytes]:
        from esc.agent import metrics

        counts = metrics.Counts(lambda: self._local_db(options="-c statement_timeout=2000"))
        reg = metrics.registry(self.status_snapshot.get, self.journal, counts.get,
                               [privileges.metrics_dir(self.paths, s) for s in ("escmanager", "escetsi")])
        # made by one caller at a time, at most once a second: a flood of scrapes costs
        # what one scrape a second does
        return health_api.Snapshot(lambda: metrics.render(reg), 1.0).get

    def _metrics_user(self) -> tuple[str, str] | None:
        user = self.cfg.metrics_user
        return (user.name, user.password_hash) if user else None

    # ------------------------------------------------------------- history
    def _local_db(self, **kw: Any) -> psycopg.Connection:
        """A connection to the node's own ``esc`` database, as the superuser, over its socket."""
        return psycopg.connect(postgres.local_conninfo(self.paths, self.cfg, "esc"), **kw)

    def _serving_primary(self) -> bool:
        with self.lock:
            return self.role in (Role.ACTIVE, Role.STANDALONE) and self.db_view.state == Db.PRIMARY

    def _peer_history_latest(self) -> tuple[str, str, int] | None:
        """The peer's name and latest event, as its last heartbeat said (None: not heard)."""
        for poller in self.pollers:
            snap = poller.snapshot()
            if snap.received_at and clock.now() - snap.received_at < 2 * self.cfg.timing.heartbeat_timeout:
                latest = (snap.raw or {}).get("history")
                try:
                    name, epoch, seq = latest  # type: ignore[misc]
                    return str(name), str(epoch), int(seq)
                except (TypeError, ValueError):
                    return None
        return None

    def _peer_history(self, epoch: str | None, after: int) -> tuple[str, list[history.Event]] | None:
        for poller in self.pollers:
            got = poller.fetch("/v1/peer/history", {"epoch": epoch or "", "after": str(after)})
            if got is not None:
                try:
                    return str(got["epoch"]), [history.Event.from_dict(e) for e in got["events"]]
                except (KeyError, TypeError, ValueError) as e:
                    log.warning("the peer's history is malformed: %s", e)
                    return None
        return None

    def history(self, epoch: str | None, after: int) -> dict:
        """This node's events past ``after`` of ``epoch`` (every one kept for another epoch)."""
        return {"epoch": self.journal.latest()[0],
                "events": [e.to_dict() for e in self.journal.after(epoch or None, after)]}

    # ----------------------------------------------------------------- API
    def command(self, name: str, body: dict) -> tuple[int, dict]:
        via_peer = bool(body.get("_via_peer"))
        # who asked, for the history: what the caller says (escadm, the portal's user), and
        # on which node
        asker = body.get("by")
        by = (" ".join(asker.split())[:80] if isinstance(asker, str) and asker.strip() else "escadm") + \
            ("" if via_peer else f" on {self.cfg.name}")
        steps = ("pair_stage", "pair_switch", "pair_finish")
        if via_peer and name not in ("switchover", "op_mode", *steps):
            return 403, {"error": f"{name} cannot be asked by the peer"}
        if name in steps:
            if not via_peer:
                return 403, {"error": f"{name} is the peer's step of a renewal (escadm ha secret rotate)"}
            return self._material_command(name, body)
        if name == "rotate":
            return self._rotate(body)
        if name == "op_mode":
            return self._set_op_mode(body, via_peer, by)
        if name == "stop":
            self.request_stop()
            return 202, {"result": "stopping"}
        if name == "reload":
            return self._reload(by)
        if name == "snmp_test":
            return self._snmp_test(by)
        if name not in ("force_active", "switchover"):
            return 404, {"error": f"unknown command {name!r}"}
        if not self.cfg.is_ha:
            return 409, {"error": "this node is STANDALONE (no HA configured)"}
        with self.lock:
            role, peer, db, alone = self.role, self.peer_view, self.db_view, self.alone
        if name == "force_active":
            if role != Role.SWITCHING_TO_ACTIVE:
                return 409, {"error": f"force-active is for a lone node waiting in "
                             f"SWITCHING_TO_ACTIVE; this node is {role}"}
            self.queue(Command.FORCE_ACTIVE, by)
            return 202, {"result": "forcing active"}
        # switchover
        if self.op_mode.maintenance:
            return 409, {"error": "maintenance mode: roles do not change; "
                         "`escadm op_mode set --mode=operation` first"}
        if role == Role.STANDBY and not via_peer:
            return self._forward_switchover(by)
        if role != Role.ACTIVE:
            return 409, {"error": f"switchover needs an ACTIVE and a STANDBY; this node is {role}"}
        def refuse(why: str) -> tuple[int, dict]:
            return 409, {"error": f"the peer is not a complete synchronous standby ({why}); "
                         "a switchover now could lose writes or leave no active"}

        if peer is None or peer.role != Role.STANDBY or not db.peer_complete or alone:
            return refuse(f"peer {peer.role if peer else 'unreachable'}")
        # The loop's view may be a few hundred ms old: ask the peer and the database now,
        # so a standby that died a moment ago does not get the role handed to it.
        fresh = next((a for a in (p.ask_now() for p in self.pollers) if a), None)
        if not fresh or fresh.get("role") != Role.STANDBY:
            return refuse("the peer does not answer as STANDBY now")
        if not self._standby_replying():
            return refuse("its database has not confirmed replication in the last 1.5 s")
        self.queue(Command.SWITCHOVER, by)
        return 202, {"result": "switching over"}

    def _standby_replying(self, within_s: float = 1.5) -> bool:
        """The peer's walreceiver replied within ``within_s`` (status every 1 s) and is sync."""
        assert self.cfg.ha
        db = postgres.LocalDb(self.paths, self.cfg)
        try:
            rows = db.execute(
                "SELECT 1 FROM pg_stat_replication WHERE application_name = %s AND "
                "state = 'streaming' AND sync_state = 'sync' AND "
                "now() - reply_time < make_interval(secs => %s)",
                (self.cfg.ha.peer_name, within_s))
            return bool(rows)
        except Exception:
            return False
        finally:
            db.close()

    def _peer_command(self, name: str, body: dict) -> tuple[int, dict]:
        import httpx

        ha = self.cfg.ha
        assert ha
        errors = []
        for _, peer_addr in ha.paths:  # VRRP's network first, then each heartbeat network
            host = f"[{peer_addr}]" if ":" in peer_addr else peer_addr
            try:
                r = httpx.post(f"https://{host}:{self.cfg.peer_port}/v1/peer/command/{name}",
                               json=body, headers={"X-ESC-Peer-Token": self.token}, timeout=5,
                               verify=self.peer_tls)
                return r.status_code, r.json()
            except httpx.ConnectError as e:  # not sent: another network may carry it
                errors.append(f"{peer_addr}: {e}")
            except (httpx.HTTPError, ValueError) as e:  # may have been received: never twice
                return 502, {"error": f"could not reach the peer: {peer_addr}: {e}"}
        return 502, {"error": f"could not reach the peer: {'; '.join(errors)}"}

    def _forward_switchover(self, by: str) -> tuple[int, dict]:
        code, body = self._peer_command("switchover", {"by": by})
        if code == 502:
            body = {"error": body["error"].replace("the peer", "the active peer")}
        return code, body

    def _set_op_mode(self, body: dict, via_peer: bool, by: str) -> tuple[int, dict]:
        """Set here, then tell the peer (from the peer: adopt it if newer)."""
        if via_peer:
            theirs = opmode.OpMode.parse(body.get("op_mode"))
            if theirs is None:
                return 400, {"error": "malformed op_mode"}
            self.adopt_op_mode(theirs, "the peer's op_mode command")
            return 200, {"result": self.op_mode.mode}
        mode = body.get("mode")
        if mode not in opmode.MODES:
            return 400, {"error": f"mode must be one of {', '.join(opmode.MODES)}, not {mode!r}"}
        with self.lock:
            new = self.op_mode.next(mode, self.cfg.name)
            self.op_mode = new
        opmode.save(self.paths, new)
        log.warning("operation mode set to %s by the operator%s", mode,
                    ": no automatic failover" if new.maintenance else "")
        self.journal.record("op_mode", self.role, f"operation mode set to {mode}" +
                            (": no automatic failover" if new.maintenance else ""), by=by,
                            detail={"mode": mode})
        self.wake.set()
        result = {"result": mode, "op_mode": new.to_dict()}
        if self.cfg.is_ha:
            code, answer = self._peer_command("op_mode", {"op_mode": new.to_dict()})
            result["peer"] = "told" if code == 200 else \
                f"not told ({answer.get('error', code)}); it takes the setting when it is back"
        return 200, result

    def _reload(self, by: str) -> tuple[int, dict]:
        try:
            cfg = load_config(self.paths)
        except ValueError as e:
            return 400, {"error": str(e)}
        self.journal.record("reload", self.role, "configuration reloaded", by=by)
        render_all(self.paths, cfg)
        # the pollers and peer servers of every network are made at start
        if cfg.is_ha != self.cfg.is_ha or (cfg.ha and self.cfg.ha and
                                           cfg.ha.paths != self.cfg.ha.paths):
            log.warning("configuration changed the HA membership: applied at the next restart")
            return 200, {"result": "files rendered; HA membership changed: "
                         "`escadm restart` applies it"}
        old_bgp, self.cfg = self.cfg.bgp, cfg
        self._reload_bgp(old_bgp)
        if self.keepalived.running and self.keepalived.proc:
            self.keepalived.proc.send_signal(signal.SIGHUP)
        if self.pg.running:
            try:
                self.localdb.execute("SELECT pg_reload_conf()")
            except Exception:
                pass
        for child, serving in ((self.manager, self.serving), (self.etsi, self.etsi_serving),
                               (self.confd, self.confd_serving)):
            if not serving and child.running:
                child.stop()  # parked: the loop starts it again, reading the new esc.json
        log.info("configuration reloaded")
        if self.serving:
            return 200, {"result": "reloaded; the serving controller applies controller settings "
                         "(callbacks, retention, TLS) at its next start: `escadm restart` or a switchover"}
        return 200, {"result": "reloaded"}

    def _reload_bgp(self, old: BgpConfig | None) -> None:
        new = self.cfg.bgp
        try:
            conf = self.paths.exabgp_conf.read_bytes()
        except OSError:
            conf = b""
        # The file, not only esc.json: a new MD5 key changes only secrets.json and the file.
        if old == new and (new is None or (self.exabgp.running and conf == self.exabgp_conf_seen)):
            return
        if old is not None and (new is None or old.anycast_ip != new.anycast_ip):
            bgp.remove_anycast(old)
        if new is not None and bgp.ensure_anycast(new):
            log.info("anycast %s added to %s", new.anycast_ip, bgp.LOOPBACK)
        if self.exabgp.running:
            # ExaBGP re-reads its file only on a restart we control; the loop starts it again.
            log.info("BGP settings changed: restarting exabgp")
            self.exabgp.stop()
        if new is None:
            self.announce = None
            self.paths.bgp_desired.unlink(missing_ok=True)

    def status(self) -> dict:
        now = clock.now()
        with self.lock:
            db, peer, role = self.db_view, self.peer_view, self.role
            out: dict = {
                "node": self.cfg.name, "role": role, "reason": self.reason,
                "role_for_s": round(now - self.role_since, 3), "ha": self.cfg.is_ha,
                "vrrp": self.vrrp, "job": self.job.kind if self.job else None,
                "alone": self.alone if db.state == Db.PRIMARY else None,
                # the last role changes, from the history (of earlier runs too)
                "transitions": [{"at": e.at, "from": e.role_from, "to": e.role, "reason": e.reason}
                                for e in self.journal.recent(history.KEEP)
                                if e.role_from is not None][-30:],
                "op_mode": self.op_mode.to_dict(),
            }
        out["db"] = {"state": db.state, "timeline": db.timeline, "lsn": db.lsn,
                     "streaming": db.streaming, "peer_streaming": db.peer_streaming,
                     "peer_complete": db.peer_complete, "sync": not db.alone}
        slot_from = self.localdb.peer_slot_from
        if slot_from is not None and db.state in (Db.PRIMARY, Db.STANDBY):
            # WAL this node keeps for its peer (see LocalDb.keep_peer_slot)
            out["db"]["wal_kept_for_peer"] = {"bytes": max(db.lsn - slot_from, 0),
                                              "slot": postgres.PEER_SLOT,
                                              "limit": postgres.MAX_SLOT_WAL_KEEP}
        out["services"] = {
            "keepalived": self._svc(self.keepalived, self.cfg.is_ha),
            "pgsql": self._svc(self.pg, True, db.state.value),
            "escmanager": self._svc(self.manager, True,
                                    "serving" if self.serving else "parked"),
            "etsi": self._svc(self.etsi, self.cfg.etsi.enabled,
                              "serving" if self.etsi_serving else "parked"),
            "confd": self._svc(self.confd, self.cfg.confd_user is not None,
                               "serving" if self.confd_serving else "parked"),
            "filesystem": {"state": "running" if self._volume_ok(mount=False) else "stopped",
                           "pid": 0},
        }
        out["services"].update(self._controller_parts())
        out["services"]["snmp"] = self._svc(self.snmp, self.cfg.snmp is not None)
        if self.cfg.bgp:
            out["services"]["bgp"] = self._svc(self.exabgp, True)
            out["bgp"] = self._bgp_status()
        out["disk"] = self._disk()
        out["etsi"] = {"enabled": self.cfg.etsi.enabled, "server_address": self.cfg.etsi_server_address,
                       "http_port": self.cfg.etsi.http_port, "https_port": self.cfg.etsi.https_port}
        out["confd"] = {"enabled": self.cfg.confd_user is not None, "port": self.cfg.confd_port,
                        "user": self.cfg.confd_user.name if self.cfg.confd_user else None,
                        "host_key": self._confd_host_key()}
        ha = self.cfg.ha
        if ha and self.lease is not None:
            lv = self.lease.view()
            out["witness"] = {"address": ha.witness, "held": lv.valid(now), "holder": lv.holder,
                              "last_answer_s": round(now - lv.answered_at, 3) if lv.answered_at else None,
                              "error": lv.error, "outdated": lv.outdated}
            if isinstance(self.lease, EtcdLeaseClient):  # which member answers, and etcd's TTL floor
                out["witness"].update(endpoint=self.lease.endpoint, warning=self.lease.warning)
        if ha:
            out["vip"] = {"address": ha.vip.cidr, "interface": ha.vip.interface,
                          "present": vip.has_address(ha.vip.address, ha.vip.interface)}
            snaps = [p.snapshot() for p in self.pollers]
            seen = [s.received_at for s in snaps if s.received_at]
            out["peer"] = {
                "address": ha.peer_address,
                "reachable": peer is not None,
                "role": peer.role if peer else None,
                "last_seen_s": round(now - max(seen), 3) if seen else None,
                "error": snaps[0].last_error if snaps else "",
                # per network, VRRP's first: a cut one shows here before anything fails over
                "paths": [{"address": p.host, "reachable": bool(fresh),
                           "last_seen_s": round(now - s.received_at, 3) if s.received_at else None,
                           "error": s.last_error}
                          for p, s, fresh in zip(self.pollers, snaps,
                                                 self.peer_paths or [False] * len(snaps), strict=True)],
            }
            if peer is not None and {role, peer.role} == {Role.ACTIVE, Role.STANDBY}:
                lag = peer.db.lsn - db.lsn if role != Role.ACTIVE else db.lsn - peer.db.lsn
                out["replication"] = {"lag_bytes": max(lag, 0),
                                      "peer_timeline": peer.db.timeline}
        return out

    def _confd_host_key(self) -> str:
        """The NETCONF host key's fingerprint (worked out once: it changes only with the pair)."""
        if not self.confd_host_key and self.cfg.confd_user is not None:
            if self.cfg.is_ha and pair_material.load(self.paths) is None:
                return "not yet (the node has not paired)"
            try:
                from esc.etsi.auth import kept_key
                from esc.netconf import credentials

                self.confd_host_key = credentials.fingerprint(credentials.host_key(kept_key(self.paths)))
            except (OSError, ValueError) as e:
                return f"unknown ({e})"
        return self.confd_host_key

    def _bgp_status(self) -> dict:
        """The session and the route as the API helper last saw them (bgp_state.json)."""
        b = self.cfg.bgp
        assert b
        seen = bgp.read_state(self.paths)
        wall = time.time()
        alive = self.exabgp.running and wall - float(seen.get("updated") or 0) < 5
        session = str(seen.get("session", "down")) if alive else "down"
        since = seen.get("session_since") if alive else None
        return {
            "neighbor": b.remote_ip, "local_ip": b.local_ip, "local_as": b.local_as,
            "remote_as": b.remote_as, "router_id": b.local_router_id, "prefix": b.anycast_prefix,
            "md5": b.md5, "hold_time": b.hold_time, "exabgp": self.exabgp.running,
            "session": session, "established": session == "up",
            "session_for_s": round(wall - float(since), 1) if since else None,
            "last_reason": seen.get("last_reason", "") if alive else "ExaBGP not running",
            "desired": "announce" if self.announce and self.announce[0] else "withdraw",
            "med": seen.get("med"),
            "announced": bool(alive and session == "up" and seen.get("announced")),
            "loopback": bgp.anycast_present(b),
        }

    def _controller_parts(self) -> dict[str, dict]:
        """The health lines of the original's VIM manager, monitor and MONA: here the VIM
        driver (its root helper, in service while the controller serves), the VNF monitor
        and the transaction worker with the callback sender (threads of the serving
        controller, as it last reported them: esc.services.components)."""
        parts = (components.read(self.paths.manager_dir / components.FILE, self.manager.pid)
                 if self.serving else None) or {}

        def state(on: bool | None) -> str:
            return "running" if on else "stopped"

        vim_on = self.cfg.vim is not None
        manager_pid = self.manager.pid if parts else None
        return {
            "vimmanager": {"state": state(self.serving and self.vim_helper.running) if vim_on else "disabled",
                           "pid": self.vim_helper.pid, "detail": "VIM driver"},
            "monitor": {"state": state(parts.get("monitor")) if vim_on else "disabled",
                        "pid": manager_pid, "detail": "VNF monitor"},
            "mona": {"state": state(parts.get("worker") and parts.get("callbacks")),
                     "pid": manager_pid, "detail": "transaction worker and callbacks"},
            # the portal is served by the controller's process (esc.portal)
            "portal": {"state": state(bool(parts)) if self.cfg.portal_user is not None else "disabled",
                       "pid": manager_pid, "detail": f"HTTPS port {self.cfg.portal_port}"},
        }

    @staticmethod
    def _svc(child: Child, enabled: bool, detail: str = "") -> dict:
        if not enabled:
            return {"state": "disabled", "pid": None}
        running = child.pid is not None
        return {"state": "running" if running else "stopped", "pid": child.pid,
                "detail": detail, "restarts": child.exits}


def main(argv: list[str] | None = None) -> int:
    import argparse

    from esc import logrotate, logs

    parser = argparse.ArgumentParser(prog="esc-agent")
    parser.add_argument("--root", required=True)
    args = parser.parse_args(argv)
    agent = Agent(Path(args.root))
    listener = logs.setup(agent.paths.log, "agent.log", agent.cfg.name, lambda: agent.role)
    logs.capture_output()  # agent.out keeps only what happens before this line
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request is noise
    rotator = logrotate.Rotator(agent.paths.log)
    rotator.start()
    try:
        return agent.run()
    finally:
        rotator.stop()
        listener.stop()


if __name__ == "__main__":
    sys.exit(main())
