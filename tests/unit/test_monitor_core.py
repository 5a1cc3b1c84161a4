"""The monitor's pure core (esc.monitor.core): one test per rule, then properties
over random probe sequences, with no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from esc.monitor.core import (
    Action,
    Event,
    EventKind,
    Fleet,
    Health,
    Recovery,
    Target,
    Thresholds,
    VmHealth,
    action_finished,
    observe,
    target_from,
)

TH = Thresholds(rise=2, down_after=3)
T = Target("vm1", "dep", "10.0.0.5/24")


def feed(h: VmHealth, results: list[bool], t: Target = T, th: Thresholds = TH
         ) -> tuple[VmHealth, list[Event | Action]]:
    out: list[Event | Action] = []
    for ok in results:
        h, o = observe(h, ok, t, th)
        out += o
    return h, out


def kinds(out: list[Event | Action]) -> list[str]:
    return [str(o.kind) for o in out]


class TestValues:
    def test_target_strips_prefix(self) -> None:
        assert T.address == "10.0.0.5"
        assert Target("a", "d", "10.0.0.6").address == "10.0.0.6"

    @pytest.mark.parametrize("kw", [{"name": ""}, {"deployment": ""}, {"address": "nope"},
                                    {"max_attempts": -1}, {"recovery": "reinstall"},
                                    {"interval_s": 0}, {"interval_s": float("nan")},
                                    {"interval_s": float("inf")}, {"interval_s": True},
                                    {"down_after": 0}, {"down_after": 1.5}, {"down_after": True}])
    def test_target_refuses(self, kw: dict) -> None:
        args = {"name": "a", "deployment": "d", "address": "10.0.0.1", **kw}
        with pytest.raises(ValueError):
            Target(**args)

    def test_a_vm_kpi_down_after_overrides_the_default(self) -> None:
        th = Thresholds(rise=1, down_after=3)
        quick = Target("a", "d", "10.0.0.1", down_after=1)
        h, out = observe(VmHealth(), False, quick, th)
        assert kinds(out) == ["VM_DOWN", "reboot"] and "failed 1 probe(s)" in out[0].reason
        h, out = observe(VmHealth(), False, T, th)
        assert out == [] and h.fail_run == 1

    def test_kpi_survives_snapshot_and_load(self) -> None:
        f = Fleet()
        f.add([{"name": "a", "deployment": "d", "address": "10.0.0.1", "interval_s": 0.5, "down_after": 2}])
        g = Fleet()
        g.add(f.snapshot())
        assert (g.targets["a"].interval_s, g.targets["a"].down_after) == (0.5, 2)

    @pytest.mark.parametrize("kw", [{"rise": 0}, {"down_after": 0}, {"rise": 1.5}, {"down_after": True}])
    def test_thresholds_refuse(self, kw: dict) -> None:
        with pytest.raises(ValueError):
            Thresholds(**kw)

    def test_record_defaults(self) -> None:
        t = target_from({"name": "a", "deployment": "d", "address": "10.0.0.1/24"})
        assert (t.recovery, t.max_attempts) == (Recovery.REBOOT, 3)
        t = target_from({"name": "a", "deployment": "d", "address": "10.0.0.1", "recovery": "redeploy",
                         "max_attempts": 0})
        assert (t.recovery, t.max_attempts) == (Recovery.REDEPLOY, 0)

    def test_record_missing_key(self) -> None:
        with pytest.raises(ValueError, match="deployment"):
            target_from({"name": "a", "address": "10.0.0.1"})


class TestRiseFall:
    def test_init_to_alive_after_rise(self) -> None:
        h, out = feed(VmHealth(), [True])
        assert (h.health, out) == (Health.INIT, [])
        h, out = feed(h, [True])
        assert h.health is Health.ALIVE and kinds(out) == ["VM_ALIVE"]
        assert out[0].vm == "vm1" and out[0].deployment == "dep" and "10.0.0.5" in out[0].reason

    def test_alive_stays_on_success(self) -> None:
        h, _ = feed(VmHealth(), [True, True])
        h, out = feed(h, [True] * 10)
        assert (h.health, out) == (Health.ALIVE, [])

    def test_flapping_never_goes_down(self) -> None:
        h, _ = feed(VmHealth(), [True, True])
        h, out = feed(h, [False, False, True] * 10)
        assert (h.health, out) == (Health.ALIVE, [])

    def test_down_after_consecutive_failures_with_reboot(self) -> None:
        h, _ = feed(VmHealth(), [True, True])
        h, out = feed(h, [False, False, False])
        assert h.health is Health.DOWN and h.recovering and h.attempts == 1
        assert kinds(out) == ["VM_DOWN", "reboot"]
        act = out[1]
        assert isinstance(act, Action)
        assert (act.vm, act.deployment, act.attempt, act.max_attempts) == ("vm1", "dep", 1, 3)

    def test_init_goes_down_too(self) -> None:
        h, out = feed(VmHealth(), [False] * 3)
        assert h.health is Health.DOWN and kinds(out) == ["VM_DOWN", "reboot"]

    def test_redeploy_policy(self) -> None:
        t = Target("vm1", "dep", "10.0.0.5", Recovery.REDEPLOY, 2)
        _, out = feed(VmHealth(), [False] * 3, t)
        assert kinds(out) == ["VM_DOWN", "redeploy"]

    def test_results_ignored_while_recovering(self) -> None:
        h, _ = feed(VmHealth(), [False] * 3)
        before = h
        h, out = feed(h, [False, True, True, False] * 5)
        assert (h, out) == (before, [])

    def test_alive_after_recovery_resets_attempts(self) -> None:
        h, _ = feed(VmHealth(), [False] * 3)
        h = action_finished(h)
        h, out = feed(h, [True, True])
        assert h.health is Health.ALIVE and h.attempts == 0 and kinds(out) == ["VM_ALIVE"]
        assert "after 1 recovery attempt" in out[0].reason

    def test_next_attempt_after_down_after_more_failures(self) -> None:
        h, _ = feed(VmHealth(), [False] * 3)
        h = action_finished(h)
        h, out = feed(h, [False, False])
        assert out == [] and not h.recovering
        h, out = feed(h, [False])
        assert kinds(out) == ["reboot"] and out[0].attempt == 2  # type: ignore[union-attr]

    def test_gives_up_once_after_max_attempts(self) -> None:
        t = Target("vm1", "dep", "10.0.0.5", Recovery.REBOOT, 2)
        h, out = feed(VmHealth(), [False] * 3, t)
        h = action_finished(h)
        h, o = feed(h, [False] * 3, t)
        out += o
        h = action_finished(h)
        h, o = feed(h, [False] * 3, t)
        out += o
        assert kinds(out) == ["VM_DOWN", "reboot", "reboot", "VM_RECOVERY_FAILED"]
        h, o = feed(h, [False] * 20, t)
        assert o == [] and h.gave_up
        # and it may still come back by itself
        h, o = feed(h, [True, True], t)
        assert kinds(o) == ["VM_ALIVE"] and not h.gave_up and h.attempts == 0

    def test_no_recovery_policy(self) -> None:
        t = Target("vm1", "dep", "10.0.0.5", Recovery.REBOOT, 0)
        h, out = feed(VmHealth(), [False] * 30, t)
        assert kinds(out) == ["VM_DOWN"] and not h.recovering

    def test_success_breaks_failure_run(self) -> None:
        h, _ = feed(VmHealth(), [True, True])
        h, out = feed(h, [False, False, True, False, False])
        assert (h.health, out) == (Health.ALIVE, [])

    def test_one_success_in_down_is_not_alive(self) -> None:
        t = Target("vm1", "dep", "10.0.0.5", Recovery.REBOOT, 0)
        h, _ = feed(VmHealth(), [False] * 3, t)
        h, out = feed(h, [True, False, True, False], t)
        assert (h.health, out) == (Health.DOWN, [])


class TestFleet:
    def fleet(self, *names: str, dep: str = "d1") -> Fleet:
        f = Fleet(TH)
        f.add([{"name": n, "deployment": dep, "address": f"10.0.0.{i + 1}"} for i, n in enumerate(names)])
        return f

    def test_service_alive_once_all_alive(self) -> None:
        f = self.fleet("a", "b")
        out = f.observe("a", True) + f.observe("a", True) + f.observe("b", True)
        assert kinds(out) == ["VM_ALIVE"]
        out = f.observe("b", True)
        assert kinds(out) == ["VM_ALIVE", "SERVICE_ALIVE"]
        assert out[1].vm is None and out[1].deployment == "d1"  # type: ignore[union-attr]
        # a later outage and return: VM events only
        out = []
        for _ in range(3):
            out += f.observe("a", False)
        f.action_finished("a")
        out += f.observe("a", True) + f.observe("a", True)
        assert kinds(out) == ["VM_DOWN", "reboot", "VM_ALIVE"]

    def test_deployments_are_separate(self) -> None:
        f = self.fleet("a")
        f.add([{"name": "x", "deployment": "d2", "address": "10.0.1.1"}])
        out = f.observe("x", True) + f.observe("x", True)
        assert kinds(out) == ["VM_ALIVE", "SERVICE_ALIVE"] and out[1].deployment == "d2"  # type: ignore[union-attr]

    def test_unknown_vm_is_ignored(self) -> None:
        f = self.fleet("a")
        assert f.observe("zz", False) == []
        f.action_finished("zz")

    def test_load_keeps_health_and_service(self) -> None:
        f = self.fleet("a", "b")
        for n in ("a", "b"):
            f.observe(n, True)
            f.observe(n, True)
        for _ in range(3):
            f.observe("a", False)
        snap = f.snapshot()
        g = Fleet(TH)
        g.add(snap)
        assert g.health["b"].health is Health.ALIVE and g.health["a"].health is Health.DOWN
        assert g.health["a"].attempts == 1 and not g.health["a"].recovering  # the action died
        assert g.service_alive == {"d1"}
        out = g.observe("b", True) + g.observe("a", True) + g.observe("a", True)
        assert kinds(out) == ["VM_ALIVE"] and out[0].vm == "a"  # no second SERVICE_ALIVE

    def test_loaded_down_vm_continues_attempts(self) -> None:
        g = Fleet(TH)
        g.add([{"name": "a", "deployment": "d", "address": "10.0.0.1", "health": "DOWN", "attempts": 2,
                "max_attempts": 3}])
        out = []
        for _ in range(3):
            out += g.observe("a", False)
        assert kinds(out) == ["reboot"] and out[0].attempt == 3  # type: ignore[union-attr]

    def test_loaded_all_alive_without_flag_emits_service_alive(self) -> None:
        g = Fleet(TH)
        g.add([{"name": "a", "deployment": "d", "address": "10.0.0.1", "health": "alive"}])
        assert kinds(g.observe("a", True)) == ["SERVICE_ALIVE"]

    def test_remove_deployment_forgets_service(self) -> None:
        f = self.fleet("a")
        f.observe("a", True)
        f.observe("a", True)
        f.remove_deployment("d1")
        assert f.targets == {} and f.service_alive == set()
        f = Fleet(TH)
        f.add([{"name": "a", "deployment": "d1", "address": "10.0.0.1"}])
        assert kinds(f.observe("a", True) + f.observe("a", True)) == ["VM_ALIVE", "SERVICE_ALIVE"]

    def test_readd_keeps_health(self) -> None:
        f = self.fleet("a")
        f.observe("a", True)
        f.observe("a", True)
        f.add([{"name": "a", "deployment": "d1", "address": "10.0.0.9", "recovery": "redeploy"}])
        assert f.health["a"].health is Health.ALIVE and f.targets["a"].recovery is Recovery.REDEPLOY


# ---------------------------------------------------------------------------
# properties


thresholds = st.builds(Thresholds, rise=st.integers(1, 4), down_after=st.integers(1, 4))
targets = st.builds(Target, name=st.just("vm"), deployment=st.just("dep"), address=st.just("10.0.0.1"),
                    recovery=st.sampled_from(list(Recovery)), max_attempts=st.integers(0, 3),
                    down_after=st.none() | st.integers(1, 4))  # the VM's KPI, or the default
# a step: True/False is a probe result, None is "the outstanding action finished"
steps = st.lists(st.one_of(st.booleans(), st.none()), max_size=120)


@dataclass
class Trace:
    """What one VM went through, as seen from outside the core."""

    counted: list[bool] = field(default_factory=list)  # results not ignored
    outputs: list[Event | Action] = field(default_factory=list)


def run(h: VmHealth, seq: list[bool | None], t: Target, th: Thresholds, trace: Trace | None = None
        ) -> tuple[VmHealth, Trace]:
    trace = Trace(list(trace.counted), list(trace.outputs)) if trace else Trace()
    down_after = t.down_after or th.down_after
    for step in seq:
        if step is None:
            if h.recovering:
                h = action_finished(h)
            continue
        was = h
        h, out = observe(h, step, t, th)
        if was.recovering:
            assert (h, out) == (was, []), "a result counted while an action was out"
            continue
        trace.counted.append(step)
        # every output follows from the last counted results
        for o in out:
            if isinstance(o, Event) and o.kind is EventKind.VM_ALIVE:
                assert trace.counted[-th.rise:] == [True] * th.rise and was.health is not Health.ALIVE
            if isinstance(o, Event) and o.kind is EventKind.VM_DOWN:
                assert trace.counted[-down_after:] == [False] * down_after
                assert was.health is not Health.DOWN
            if isinstance(o, Action):
                assert not step and h.recovering and o.kind is t.recovery and o.vm == t.name
        trace.outputs += out
        assert 0 <= h.ok_run <= th.rise and 0 <= h.fail_run <= down_after
        assert 0 <= h.attempts <= t.max_attempts
    return h, trace


@settings(max_examples=400, deadline=None)
@given(th=thresholds, t=targets, seq=steps)
def test_vm_events_alternate_and_match_health(th: Thresholds, t: Target, seq: list[bool | None]) -> None:
    h, trace = run(VmHealth(), seq, t, th)
    vm_events = [o.kind for o in trace.outputs if isinstance(o, Event)
                 and o.kind in (EventKind.VM_ALIVE, EventKind.VM_DOWN)]
    assert all(a != b for a, b in zip(vm_events, vm_events[1:], strict=False)), vm_events
    last = vm_events[-1] if vm_events else None
    assert {None: Health.INIT, EventKind.VM_ALIVE: Health.ALIVE, EventKind.VM_DOWN: Health.DOWN}[last] \
        is h.health


@settings(max_examples=400, deadline=None)
@given(th=thresholds, t=targets, seq=steps)
def test_recovery_is_bounded_and_numbered(th: Thresholds, t: Target, seq: list[bool | None]) -> None:
    _, trace = run(VmHealth(), seq, t, th)
    # split the outputs into outages: each starts at VM_DOWN and ends at VM_ALIVE
    outages: list[list[Event | Action]] = []
    for o in trace.outputs:
        if isinstance(o, Event) and o.kind is EventKind.VM_DOWN:
            outages.append([])
        elif outages and not (isinstance(o, Event) and o.kind is EventKind.VM_ALIVE):
            outages[-1].append(o)
        if isinstance(o, Action):
            assert outages, "an action outside an outage"
    for outage in outages:
        attempts = [o.attempt for o in outage if isinstance(o, Action)]
        assert attempts == list(range(1, len(attempts) + 1)) and len(attempts) <= t.max_attempts
        failed = [i for i, o in enumerate(outage) if isinstance(o, Event)
                  and o.kind is EventKind.VM_RECOVERY_FAILED]
        assert len(failed) <= 1
        if failed:  # only once every attempt was spent, and nothing after it
            assert t.max_attempts > 0 and len(attempts) == t.max_attempts
            assert failed[0] == len(outage) - 1


@settings(max_examples=300, deadline=None)
@given(th=thresholds, t=targets, seq=steps)
def test_one_action_at_a_time(th: Thresholds, t: Target, seq: list[bool | None]) -> None:
    """Between two actions there is always an action_finished."""
    h = VmHealth()
    out_since_finish = 0
    for step in seq:
        if step is None:
            if h.recovering:
                h = action_finished(h)
                out_since_finish = 0
            continue
        h, out = observe(h, step, t, th)
        out_since_finish += sum(isinstance(o, Action) for o in out)
        assert out_since_finish <= 1


@settings(max_examples=300, deadline=None)
@given(th=thresholds, t=targets, seq=steps, tail=st.integers(0, 6))
def test_liveness(th: Thresholds, t: Target, seq: list[bool | None], tail: int) -> None:
    """After any history, enough successes make it ALIVE and enough failures DOWN
    (actions finishing as they come)."""
    h, trace = run(VmHealth(), seq, t, th)
    h = action_finished(h) if h.recovering else h
    up, _ = run(h, [True] * (th.rise + tail), t, th, trace)
    assert up.health is Health.ALIVE
    down, _ = run(h, [False, None] * ((t.down_after or th.down_after) + tail), t, th, trace)
    assert down.health is Health.DOWN


vm_names = ["a", "b", "c", "d"]
fleet_steps = st.lists(st.tuples(st.sampled_from(vm_names), st.one_of(st.booleans(), st.none())),
                       max_size=150)


@settings(max_examples=300, deadline=None)
@given(th=thresholds, split=st.integers(1, 3), seq=fleet_steps)
def test_service_alive_once_when_first_all_alive(th: Thresholds, split: int,
                                                 seq: list[tuple[str, bool | None]]) -> None:
    f = Fleet(th)
    deps = {n: ("d1" if i < split else "d2") for i, n in enumerate(vm_names)}
    f.add([{"name": n, "deployment": d, "address": f"10.0.0.{i + 1}"}
           for i, (n, d) in enumerate(deps.items())])
    seen: dict[str, int] = {}
    for name, step in seq:
        if step is None:
            f.action_finished(name)
            continue
        before = {d: all(f.health[n].health is Health.ALIVE for n in deps if deps[n] == d)
                  for d in ("d1", "d2")}
        out = f.observe(name, step)
        for o in out:
            if isinstance(o, Event) and o.kind is EventKind.SERVICE_ALIVE:
                seen[o.deployment] = seen.get(o.deployment, 0) + 1
                assert all(f.health[n].health is Health.ALIVE for n in deps if deps[n] == o.deployment)
                assert not before[o.deployment]
        for d in ("d1", "d2"):
            if all(f.health[n].health is Health.ALIVE for n in deps if deps[n] == d):
                assert seen.get(d) == 1, f"{d} all alive without one SERVICE_ALIVE"
    assert all(v == 1 for v in seen.values())


@settings(max_examples=200, deadline=None)
@given(th=thresholds, seq=fleet_steps, more=fleet_steps)
def test_reload_from_snapshot_repeats_nothing(th: Thresholds, seq: list[tuple[str, bool | None]],
                                              more: list[tuple[str, bool | None]]) -> None:
    """A monitor rebuilt from the snapshot (a failover) never repeats SERVICE_ALIVE, nor
    VM_ALIVE for a VM that was ALIVE, nor VM_DOWN for one that was DOWN, unless the VM
    changed state on the new monitor first; attempt numbers continue."""
    f = Fleet(th)
    f.add([{"name": n, "deployment": "d", "address": f"10.0.0.{i + 1}"} for i, n in enumerate(vm_names)])
    for name, step in seq:
        if step is None:
            f.action_finished(name)
        else:
            f.observe(name, step)
    snap = f.snapshot()
    g = Fleet(th)
    g.add(snap)
    last = {r["name"]: r["health"] for r in snap}
    attempts = {r["name"]: r["attempts"] for r in snap}
    for name, step in more:
        if step is None:
            g.action_finished(name)
            continue
        for o in g.observe(name, step):
            if isinstance(o, Event) and o.kind is EventKind.SERVICE_ALIVE:
                assert not snap[0]["service_alive"]
            if isinstance(o, Event) and o.kind is EventKind.VM_ALIVE:
                assert last[name] != "ALIVE"
                last[name] = "ALIVE"
                attempts[name] = 0
            if isinstance(o, Event) and o.kind is EventKind.VM_DOWN:
                assert last[name] != "DOWN"
                last[name] = "DOWN"
            if isinstance(o, Action):
                assert o.attempt == attempts[name] + 1
                attempts[name] = o.attempt
