"""The monitor's pure core: probe results in, events and recovery actions out.

No I/O, no clock, no threads: the edge (``esc.monitor.monitor``) probes, feeds
results here and carries out what comes back.

Per VM, a rise/fall state machine in the style of ExaBGP's healthcheck:

    INIT  --rise successes in a row-->        ALIVE   (VM_ALIVE)
    INIT  --down_after failures in a row-->   DOWN    (VM_DOWN + recovery)
    ALIVE --down_after failures in a row-->   DOWN    (VM_DOWN + recovery)
    DOWN  --rise successes in a row-->        ALIVE   (VM_ALIVE; attempts reset)
    DOWN  --down_after failures after the last
            recovery action finished-->       DOWN    (next attempt, or
                                                       VM_RECOVERY_FAILED once
                                                       when max_attempts is spent)

A success resets the failure run and a failure the success run, so a flapping
VM changes state only after a whole run. While a recovery action is out
(issued, not yet reported finished) the VM's probe results are ignored: a VM
being rebooted is not counted as failing again. ``max_attempts = 0`` means no
recovery: VM_DOWN only.

Per deployment: SERVICE_ALIVE the first time all of its VMs are ALIVE together.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any


class Health(StrEnum):
    INIT = "INIT"  # never yet seen alive nor declared down
    ALIVE = "ALIVE"
    DOWN = "DOWN"


class EventKind(StrEnum):
    VM_ALIVE = "VM_ALIVE"
    VM_DOWN = "VM_DOWN"
    SERVICE_ALIVE = "SERVICE_ALIVE"
    VM_RECOVERY_FAILED = "VM_RECOVERY_FAILED"  # max_attempts spent, VM still down


class Recovery(StrEnum):
    REBOOT = "reboot"  # driver.reboot_vm(name)
    REDEPLOY = "redeploy"  # driver.delete_vm(name), then driver.create_vm(same spec)


@dataclass(frozen=True)
class Thresholds:
    rise: int = 2  # successes in a row: INIT/DOWN -> ALIVE
    down_after: int = 3  # failures in a row: INIT/ALIVE -> DOWN; and between recovery attempts

    def __post_init__(self) -> None:
        for k in ("rise", "down_after"):
            v = getattr(self, k)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{k} must be an integer >= 1, not {v!r}")


@dataclass(frozen=True)
class Target:
    """One VM to watch, with its deployment's recovery policy and, from its KPI
    section, how often to probe it and after how many failures it is down (None:
    the monitor's defaults)."""

    name: str
    deployment: str
    address: str  # what to probe: an IP address, no prefix
    recovery: Recovery = Recovery.REBOOT
    max_attempts: int = 3
    interval_s: float | None = None
    down_after: int | None = None

    def __post_init__(self) -> None:
        if not self.name or not self.deployment:
            raise ValueError("a monitored VM needs a name and a deployment")
        object.__setattr__(self, "address", str(ipaddress.ip_interface(self.address).ip))
        object.__setattr__(self, "recovery", Recovery(self.recovery))
        if not isinstance(self.max_attempts, int) or isinstance(self.max_attempts, bool) \
                or self.max_attempts < 0:
            raise ValueError(f"max_attempts must be an integer >= 0, not {self.max_attempts!r}")
        if self.interval_s is not None and not (isinstance(self.interval_s, int | float)
                                                and not isinstance(self.interval_s, bool)
                                                and 0 < self.interval_s < float("inf")):
            raise ValueError(f"interval_s must be a number > 0, not {self.interval_s!r}")
        if self.down_after is not None and (not isinstance(self.down_after, int)
                                            or isinstance(self.down_after, bool) or self.down_after < 1):
            raise ValueError(f"down_after must be an integer >= 1, not {self.down_after!r}")


@dataclass(frozen=True)
class VmHealth:
    health: Health = Health.INIT
    ok_run: int = 0  # successes in a row (capped at rise)
    fail_run: int = 0  # failures in a row, or since the last action finished (capped at down_after)
    attempts: int = 0  # recovery actions issued since the VM was last ALIVE
    recovering: bool = False  # an action is out: results ignored until it finishes
    gave_up: bool = False  # VM_RECOVERY_FAILED sent for this outage


@dataclass(frozen=True)
class Event:
    kind: EventKind
    deployment: str
    vm: str | None  # None for SERVICE_ALIVE
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"type": "event", "event": str(self.kind), "deployment": self.deployment, "vm": self.vm,
                "reason": self.reason}


@dataclass(frozen=True)
class Action:
    kind: Recovery
    vm: str
    deployment: str
    attempt: int  # 1-based
    max_attempts: int
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"type": "action", "action": str(self.kind), "vm": self.vm, "deployment": self.deployment,
                "attempt": self.attempt, "max_attempts": self.max_attempts, "reason": self.reason}


Output = Event | Action


def _recover(h: VmHealth, t: Target, why: str) -> tuple[VmHealth, list[Output]]:
    """The VM is down (and no action is out): the next attempt, or give up once."""
    if h.attempts < t.max_attempts:
        n = h.attempts + 1
        act = Action(t.recovery, t.name, t.deployment, n, t.max_attempts,
                     f"{why}: {t.recovery} attempt {n} of {t.max_attempts}")
        return replace(h, attempts=n, recovering=True, fail_run=0, ok_run=0), [act]
    if t.max_attempts > 0 and not h.gave_up:
        ev = Event(EventKind.VM_RECOVERY_FAILED, t.deployment, t.name,
                   f"{why}: still down after {t.max_attempts} {t.recovery} attempt(s), giving up")
        return replace(h, gave_up=True), [ev]
    return h, []


def observe(h: VmHealth, ok: bool, t: Target, th: Thresholds) -> tuple[VmHealth, list[Output]]:
    """One probe result for one VM: its new health and what to do about it."""
    if h.recovering:
        return h, []
    if ok:
        h = replace(h, ok_run=min(h.ok_run + 1, th.rise), fail_run=0)
        if h.health is not Health.ALIVE and h.ok_run >= th.rise:
            after = f" after {h.attempts} recovery attempt(s)" if h.attempts else ""
            ev = Event(EventKind.VM_ALIVE, t.deployment, t.name,
                       f"{t.address} answered {th.rise} probe(s) in a row{after}")
            return replace(h, health=Health.ALIVE, attempts=0, gave_up=False), [ev]
        return h, []
    down_after = t.down_after or th.down_after
    h = replace(h, fail_run=min(h.fail_run + 1, down_after), ok_run=0)
    if h.fail_run < down_after:
        return h, []
    if h.health is not Health.DOWN:
        why = f"{t.address} failed {down_after} probe(s) in a row"
        ev = Event(EventKind.VM_DOWN, t.deployment, t.name, why)
        h, out = _recover(replace(h, health=Health.DOWN), t, why)
        return h, [ev, *out]
    if h.gave_up:
        return h, []
    return _recover(h, t, f"{t.address} still down {down_after} probe(s) after the last recovery")


def action_finished(h: VmHealth) -> VmHealth:
    """The recovery action came back (done or failed: either way it counted as an
    attempt); probe results count again, from zero."""
    return replace(h, recovering=False, ok_run=0, fail_run=0)


def _health_from(rec: Mapping[str, Any]) -> VmHealth:
    health = Health(str(rec.get("health") or "INIT").upper())
    attempts = int(rec.get("attempts") or 0)
    if health is Health.ALIVE:
        attempts = 0
    return VmHealth(health=health, attempts=attempts, gave_up=bool(rec.get("gave_up", False)))


def target_from(rec: Mapping[str, Any] | Target) -> Target:
    """A plain record (a database row as a dict) to a Target. Keys: ``name``,
    ``deployment``, ``address`` (with or without prefix); optional ``recovery``
    (reboot|redeploy, default reboot), ``max_attempts`` (default 3), ``interval_s``
    and ``down_after`` (default: the monitor's)."""
    if isinstance(rec, Target):
        return rec
    missing = [k for k in ("name", "deployment", "address") if not rec.get(k)]
    if missing:
        raise ValueError(f"VM record {dict(rec)!r} lacks {', '.join(missing)}")
    max_attempts = rec.get("max_attempts")
    interval_s, down_after = rec.get("interval_s"), rec.get("down_after")
    return Target(name=str(rec["name"]), deployment=str(rec["deployment"]), address=str(rec["address"]),
                  recovery=Recovery(rec.get("recovery") or Recovery.REBOOT),
                  max_attempts=3 if max_attempts is None else int(max_attempts),
                  interval_s=None if interval_s is None else float(interval_s),
                  down_after=None if down_after is None else int(down_after))


@dataclass
class Fleet:
    """Every watched VM and deployment. Mutable, but no I/O and no clock: a test
    drives it with plain calls."""

    thresholds: Thresholds = field(default_factory=Thresholds)
    targets: dict[str, Target] = field(default_factory=dict)
    health: dict[str, VmHealth] = field(default_factory=dict)
    service_alive: set[str] = field(default_factory=set)  # deployments that had SERVICE_ALIVE

    def add(self, records: Iterable[Mapping[str, Any] | Target]) -> list[Target]:
        """Watch these VMs (add all VMs of a deployment in one call, or SERVICE_ALIVE
        may come before the last one is added). A record may carry the state the
        previous monitor left in the database: ``health`` (INIT|ALIVE|DOWN),
        ``attempts``, ``gave_up``, ``service_alive`` (its deployment already had
        SERVICE_ALIVE). Re-adding a watched VM replaces its target, keeps its health."""
        added = []
        for rec in records:
            t = target_from(rec)
            if t.name not in self.health:
                self.health[t.name] = VmHealth() if isinstance(rec, Target) else _health_from(rec)
            self.targets[t.name] = t
            if not isinstance(rec, Target) and rec.get("service_alive"):
                self.service_alive.add(t.deployment)
            added.append(t)
        return added

    def remove(self, names: Iterable[str]) -> None:
        for name in names:
            self.targets.pop(name, None)
            self.health.pop(name, None)
        live = {t.deployment for t in self.targets.values()}
        self.service_alive &= live

    def remove_deployment(self, deployment: str) -> None:
        self.remove([n for n, t in self.targets.items() if t.deployment == deployment])

    def observe(self, name: str, ok: bool) -> list[Output]:
        t = self.targets.get(name)
        if t is None:
            return []  # removed while its probe was out
        self.health[name], out = observe(self.health[name], ok, t, self.thresholds)
        return out + self._service(t.deployment)

    def action_finished(self, name: str) -> None:
        if name in self.health:
            self.health[name] = action_finished(self.health[name])

    def _service(self, deployment: str) -> list[Output]:
        if deployment in self.service_alive:
            return []
        vms = [n for n, t in self.targets.items() if t.deployment == deployment]
        if vms and all(self.health[n].health is Health.ALIVE for n in vms):
            self.service_alive.add(deployment)
            return [Event(EventKind.SERVICE_ALIVE, deployment, None,
                          f"all {len(vms)} VM(s) of {deployment} are alive")]
        return []

    def snapshot(self) -> list[dict[str, Any]]:
        """Plain records, the shape ``add``/``Monitor.load`` take back."""
        return [{"name": n, "deployment": t.deployment, "address": t.address, "recovery": str(t.recovery),
                 "max_attempts": t.max_attempts, "interval_s": t.interval_s, "down_after": t.down_after,
                 "health": str(self.health[n].health),
                 "attempts": self.health[n].attempts, "gave_up": self.health[n].gave_up,
                 "recovering": self.health[n].recovering,
                 "service_alive": t.deployment in self.service_alive}
                for n, t in sorted(self.targets.items())]
