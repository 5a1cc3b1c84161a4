"""The controller's VIM side: deployments become VMs, and the monitor watches them.

Runs inside escmanager, i.e. on the active node only, from ``serve`` on. The VIM
state and the database are the truth; nothing needed after a failover is kept only
in memory: the new active's worker re-applies every unfinished transaction (the
driver is idempotent by VM name) and the monitor is rebuilt from the database.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
import re
import threading
from collections.abc import Mapping
from pathlib import Path

import psycopg

from esc.config import VimConfig
from esc.monitor import Monitor
from esc.monitor.core import Action, Event, Recovery, Thresholds
from esc.monitor.recovery import execute
from esc.services.events import record_event
from esc.services.executor import DeploymentWork
from esc.vim.driver import Network, VimDriver, VmSpec
from esc.vim.local import LocalDriver

log = logging.getLogger("esc.vim")

# each deployed VM with its group's recovery policy and KPI section
DEPLOYED_VMS_SQL = """
SELECT t.name, d.name, v.name, coalesce(g.spec->'recovery'->>'policy', 'reboot'),
       coalesce(g.spec->'kpi', '{}')
  FROM vms v JOIN deployments d ON d.id = v.deployment_id JOIN tenants t ON t.id = d.tenant_id
  LEFT JOIN LATERAL (SELECT x AS spec FROM jsonb_array_elements(coalesce(d.spec->'vm_groups', '[]')) x
                      WHERE x->>'name' = v.vm_group LIMIT 1) g ON true
 WHERE v.status = 'deployed'
"""


_PLAIN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


def vim_name(tenant: str, deployment: str, vm: str) -> str:
    """A VIM-side name, stable across calls and nodes, within the driver's name rules,
    and different for every (tenant, deployment, VM): deleting one deployment must never
    touch another's VM. ``tenant.deployment.vm`` when each part is plain (no dot, nothing
    the VIM refuses) and it fits; else a hash of the exact three parts, with a readable
    tail and no dot (before, "a b" and "a-b", or tenant "a.b" + deployment "c" and
    tenant "a" + deployment "b.c", made the same name)."""
    raw = f"{tenant}.{deployment}.{vm}"
    if all(_PLAIN.fullmatch(part) for part in (tenant, deployment, vm)) and len(raw) <= 60:
        return raw
    # no dot in these (a plain name has exactly two), so no plain name can equal one
    digest = hashlib.sha256(json.dumps([tenant, deployment, vm]).encode()).hexdigest()[:20]
    tail = re.sub(r"[^A-Za-z0-9_-]", "-", raw)[-40:].lstrip("-")
    return f"v{digest}-{tail}"


def image_kind(image: Mapping) -> str:
    return "web" if "web" in str(image.get("name", "")).lower() else "cirros"


class VimController:
    """The DeploymentExecutor of the worker, and the monitor's owner."""

    def __init__(self, vim: VimConfig, conninfo: str, driver: VimDriver | None = None) -> None:
        """``driver``: the VIM helper's client in the controller (esc.vim.service); the
        local driver itself only where this runs as root."""
        self.vim, self.conninfo = vim, conninfo
        self.driver = driver or LocalDriver(Path(vim.state_dir), vim.ns_prefix)
        self.network = Network(vim.network_ns, vim.bridge)
        self.pool = ipaddress.ip_network(vim.pool, strict=False)
        self.alloc = threading.Lock()
        self.monitor = Monitor(self._on_event, self._on_action, interval_s=vim.probe_interval,
                               timeout_s=min(1.0, vim.probe_interval),
                               thresholds=Thresholds(rise=2, down_after=vim.down_after))
        self._mode_lock = threading.Lock()
        self.paused = False  # the pair's maintenance mode (set_maintenance)
        self.serving = False  # between start() and stop()

    # -- executor --------------------------------------------------------------
    def apply(self, work: DeploymentWork) -> Mapping[str, str]:
        for vm in work.remove:
            name = vim_name(work.tenant, work.deployment, vm.name)
            self.monitor.remove([name])
            self.driver.delete_vm(name)
        statuses: dict[str, str] = {}
        records = []
        stopped = work.spec.get("vm_state") == "stopped"
        for vm in work.vms:
            name = vim_name(work.tenant, work.deployment, vm.name)
            with self.alloc:
                # create_vm every time, not only for new VMs: it is idempotent and it
                # finishes a creation cut short (the old active died while making it).
                info = self.driver.get(name)
                if info is None:
                    plen = self.vim.prefixlen or self.pool.prefixlen
                    address = f"{self._free_address()}/{plen}"
                else:
                    address = info.address
                info = self.driver.create_vm(VmSpec(name=name, image=image_kind(vm.image),
                                                    address=address, network=self.network))
            if stopped:  # kept, not watched: a stopped VM is not a failed one
                self.monitor.remove([name])
                if info.state == "running":
                    info = self.driver.stop_vm(name)
                statuses[vm.name] = "stopped" if info.state == "stopped" else "error"
                continue
            if info.state != "running":  # stopped, or its process died meanwhile: start it
                info = self.driver.reboot_vm(name)
            statuses[vm.name] = "deployed" if info.state == "running" else "error"
            records.append(_record(name, f"{work.tenant}/{work.deployment}", info.ip,
                                   vm.recovery.get("policy", "reboot"), vm.kpi))
        if records:
            self.monitor.add(records)
        return statuses

    def _free_address(self) -> str:
        used = {v.ip for v in self.driver.list()}
        for host in self.pool.hosts():
            if str(host) not in used:
                return str(host)
        raise RuntimeError(f"the VIM pool {self.pool} is full")

    # -- monitor ---------------------------------------------------------------
    def set_maintenance(self, on: bool) -> None:
        """The pair's maintenance mode pauses the monitor (no probes, no recoveries; one
        already running finishes); back in operation it starts again from the database."""
        with self._mode_lock:
            if on == self.paused:
                return
            self.paused = on
            serving = self.serving
        if not serving:
            return  # start() reads it
        if on:
            log.info("maintenance mode: the monitor pauses")
            threading.Thread(target=self.monitor.stop, name="esc-monitor-pause", daemon=True).start()
        else:
            log.info("operation mode: the monitor starts again")
            threading.Thread(target=self.start, name="esc-monitor-resume", daemon=True).start()

    def start(self) -> None:
        """Rebuild the monitor from the database (after a failover too) and start it."""
        with self._mode_lock:
            self.serving = True
            if self.paused:
                log.info("monitor not started: maintenance mode")
                return
        records = []
        try:
            with psycopg.connect(self.conninfo) as c:
                rows = c.execute(DEPLOYED_VMS_SQL).fetchall()
        except psycopg.Error as e:
            log.error("monitor: cannot read the deployed VMs: %s", e)
            rows = []
        for tenant, deployment, vm, policy, kpi in rows:
            name = vim_name(tenant, deployment, vm)
            info = self.driver.get(name)
            if info is not None:
                records.append(_record(name, f"{tenant}/{deployment}", info.ip, policy, kpi))
        if records:
            self.monitor.add(records)
        self.monitor.start()
        log.info("monitor started with %d VMs", len(records))

    def stop(self) -> None:
        with self._mode_lock:
            self.serving = False
        self.monitor.stop(timeout=5)

    def _on_event(self, ev: Event) -> None:
        tenant, _, deployment = ev.deployment.partition("/")
        log.info("%s %s %s", ev.kind, ev.vm or ev.deployment, ev.reason)
        try:
            with psycopg.connect(self.conninfo) as c:
                record_event(c, str(ev.kind.value if hasattr(ev.kind, "value") else ev.kind),
                             tenant=tenant, resource_type="deployment", resource=deployment,
                             vm=ev.vm, message=ev.reason)
                c.commit()
        except psycopg.Error as e:
            log.error("could not record %s: %s", ev.kind, e)

    def _on_action(self, action: Action) -> None:
        log.warning("recovery %s of %s (attempt %d/%d): %s", action.kind, action.vm,
                    action.attempt, action.max_attempts, action.reason)
        execute(self.driver, action, self.driver.spec(action.vm))


def _record(name: str, deployment: str, address: str, policy: str, kpi: Mapping) -> dict:
    """A monitor record: the group's KPI section sets the probe interval and how many
    failed probes make the VM down; policy ``none`` means watch and report, never
    recover."""
    rec: dict = {"name": name, "deployment": deployment, "address": address,
                 "interval_s": kpi.get("interval_s"), "down_after": kpi.get("down_after")}
    if policy in (Recovery.REBOOT, Recovery.REDEPLOY):
        return {**rec, "recovery": policy}
    return {**rec, "max_attempts": 0}
