"""The rule table (esc.roles.rules) as data: unique names, every row reachable, the
renderings (JSON round trip, text, Graphviz) and the committed picture in docs/."""

from __future__ import annotations

import functools
import html
import json
import random
import re
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner

from esc.cli.escadm import cli
from esc.roles import (
    OVERRIDES,
    RENAMES,
    RULES,
    TABLE,
    Command,
    Db,
    DbView,
    Job,
    Observation,
    PeerView,
    Role,
    Vrrp,
    decide,
    dot,
    match,
)
from esc.roles.rules import ANY, PROMOTED, SAME, Phase, Row, Rule, State

ROOT = Path(__file__).resolve().parents[2]
NOW = 1000.0
RECENT = NOW - 0.5
STA, STS = Role.SWITCHING_TO_ACTIVE, Role.SWITCHING_TO_STANDBY
MASTER = Vrrp.MASTER


def dbv(state: Db = Db.STANDBY, **kw: object) -> DbView:
    return DbView(state=state, **kw)  # type: ignore[arg-type]


def peer(role: Role = Role.ACTIVE, state: Db = Db.PRIMARY, vrrp: Vrrp = Vrrp.UNKNOWN,
         **kw: object) -> PeerView:
    return PeerView(role=role, db=dbv(state, **kw), index=1, vrrp=vrrp)


def ob(**kw: object) -> Observation:
    kw.setdefault("now", NOW)
    return Observation(**kw)  # type: ignore[arg-type]


ACTIVE_PEER = peer()
SERVING = {"vrrp": MASTER, "db": dbv(Db.PRIMARY)}
LOST_READY = {"peer_ever_seen": True, "last_confirm_recv": RECENT, "db": dbv(Db.STANDBY)}
ELECTED = {"db": dbv(Db.STANDBY, timeline=2), "peer": peer(STS, Db.STANDBY, timeline=1)}
LEASE_WITH_PEER = {"witness": True, "lease_peer": True, "lease_peer_for": 5.0}

# For every row, a (role, observation) for which it is the first match.
EXAMPLES: dict[str, tuple[Role, Observation]] = {
    # renames
    "fault-cleared": (Role.FAULT, ob(job_running=Job.REJOIN)),
    "promotion-finished": (STA, ob(job_done=Job.PROMOTE, **SERVING)),
    # rules
    "standalone-no-database": (Role.STOPPED, ob(ha=False, db=dbv(Db.ABSENT))),
    "standalone-promotes": (Role.STOPPED, ob(ha=False, db=dbv(Db.STANDBY))),
    "standalone": (Role.STOPPED, ob(ha=False, db=dbv(Db.PRIMARY))),
    "volume-absent": (Role.STANDBY, ob(volume_ok=False)),
    "active-frozen-too-long": (Role.ACTIVE, ob(paused_for=3.0, **SERVING)),
    "active-lease-went-to-peer": (Role.ACTIVE, ob(witness=True, lease_peer=True, **SERVING)),
    "active-peer-is-newer": (Role.ACTIVE, ob(vrrp=MASTER, db=dbv(Db.PRIMARY, timeline=1),
                                             peer=peer(timeline=2))),
    "active-switchover": (Role.ACTIVE, ob(command=Command.SWITCHOVER, vrrp=MASTER,
                                          db=dbv(Db.PRIMARY, peer_streaming=True, peer_complete=True),
                                          peer=peer(Role.STANDBY, Db.STANDBY))),
    "switchover-refused-fences": (Role.ACTIVE, ob(command=Command.SWITCHOVER, vrrp=Vrrp.BACKUP,
                                                          db=dbv(Db.PRIMARY))),
    "active-switchover-refused": (Role.ACTIVE, ob(command=Command.SWITCHOVER, vrrp=MASTER,
                                                  db=dbv(Db.PRIMARY, peer_streaming=True),
                                                  peer=peer(Role.STANDBY, Db.STANDBY),
                                                  last_confirm_sent=NOW - 0.1)),
    "active-not-master": (Role.ACTIVE, ob(vrrp=Vrrp.BACKUP, db=dbv(Db.PRIMARY))),
    "active-promotes-recovery": (Role.ACTIVE, ob(vrrp=MASTER, db=dbv(Db.STANDBY))),
    "promoted-now-active": (STA, ob(job_done=Job.PROMOTE, **SERVING)),
    "active-no-lease-waits": (Role.ACTIVE, ob(witness=True, **SERVING)),
    "active-alone-peer-outdated": (Role.ACTIVE, ob(witness=True, lease_valid=True, peer_outdated=True,
                                                   **SERVING)),
    "active-commits-alone": (Role.ACTIVE, ob(**SERVING)),
    "active-serving": (Role.ACTIVE, ob(vrrp=MASTER, db=dbv(Db.PRIMARY, peer_streaming=True),
                                       peer=peer(Role.STANDBY, Db.STANDBY))),
    "promoting": (STA, ob(vrrp=MASTER, job_running=Job.PROMOTE)),
    "standby-forced": (Role.STANDBY, ob(command=Command.FORCE_ACTIVE)),
    "standby-force-active-refused": (Role.STANDBY, ob(command=Command.FORCE_ACTIVE, peer=ACTIVE_PEER)),
    "standby-maintenance-lost": (Role.STANDBY, ob(maintenance=True)),
    "standby-maintenance": (Role.STANDBY, ob(maintenance=True, peer=ACTIVE_PEER,
                                             last_confirm_recv=RECENT)),
    "standby-master-unconfirmed": (Role.STANDBY, ob(vrrp=MASTER)),
    "standby-master-data-unusable": (Role.STANDBY, ob(vrrp=MASTER, last_confirm_recv=RECENT,
                                                      db=DbView(state=Db.ABSENT))),
    "standby-master-peer-db-up": (Role.STANDBY, ob(vrrp=MASTER, last_confirm_recv=RECENT,
                                                   peer=peer(STS, Db.STARTING))),
    "standby-master-peer-active": (Role.STANDBY, ob(vrrp=MASTER, last_confirm_recv=RECENT,
                                                    peer=peer(Role.ACTIVE, Db.STOPPED, MASTER))),
    "standby-lease-with-peer": (Role.STANDBY, ob(vrrp=MASTER, last_confirm_recv=RECENT,
                                                 **LEASE_WITH_PEER)),
    "standby-asks-for-lease": (Role.STANDBY, ob(vrrp=MASTER, last_confirm_recv=RECENT, witness=True)),
    "standby-promotes": (Role.STANDBY, ob(vrrp=MASTER, last_confirm_recv=RECENT)),
    "standby-peer-lost-ready": (Role.STANDBY, ob(last_confirm_recv=RECENT)),
    "standby-peer-lost": (Role.STANDBY, ob()),
    "standby-catching-up": (Role.STANDBY, ob(peer=ACTIVE_PEER)),
    "standby-following": (Role.STANDBY, ob(peer=ACTIVE_PEER, last_confirm_recv=RECENT)),
    "standby-waits-for-job": (Role.STANDBY, ob(peer=peer(STS, Db.STANDBY), job_running=Job.REJOIN)),
    "waiting-for-job": (STS, ob(job_running=Job.REJOIN)),
    "force-active-no-database": (STA, ob(command=Command.FORCE_ACTIVE, db=dbv(Db.ABSENT))),
    "forced-waiting-for-master": (STA, ob(command=Command.FORCE_ACTIVE)),
    "forced-waiting-for-database": (STA, ob(command=Command.FORCE_ACTIVE, vrrp=MASTER)),
    "forced-promotes": (STA, ob(command=Command.FORCE_ACTIVE, vrrp=MASTER,
                                db=DbView(state=Db.STANDBY))),
    "peer-never-seen": (Role.STOPPED, ob(db=dbv(Db.STANDBY))),
    "maintenance-peer-lost": (STS, ob(peer_ever_seen=True, maintenance=True)),
    "lost-lease-with-peer": (STA, ob(vrrp=MASTER, **LOST_READY, **LEASE_WITH_PEER)),
    "lost-asks-for-lease": (STA, ob(vrrp=MASTER, witness=True, **LOST_READY)),
    "lost-promotes": (STA, ob(vrrp=MASTER, **LOST_READY)),
    "lost-waiting-for-master": (STA, ob(**LOST_READY)),
    "lost-stops-primary": (STS, ob(peer_ever_seen=True, db=dbv(Db.PRIMARY))),
    "lost-waiting": (STS, ob(peer_ever_seen=True)),
    "force-active-refused": (STS, ob(command=Command.FORCE_ACTIVE, peer=ACTIVE_PEER)),
    "active-peer-is-older": (STS, ob(db=dbv(Db.PRIMARY, timeline=3), peer=peer(timeline=2))),
    "rejoin-the-active": (STS, ob(db=dbv(Db.ABSENT), peer=ACTIVE_PEER)),
    "rewind-behind-the-active": (STS, ob(db=dbv(Db.STANDBY, timeline=1), peer=peer(timeline=2),
                                         not_streaming_since=NOW - 1.5)),
    "rewind-not-streaming": (STS, ob(db=dbv(Db.STANDBY), peer=ACTIVE_PEER, not_streaming_since=NOW - 5)),
    "joined-as-standby": (STS, ob(db=dbv(Db.STANDBY, streaming=True), peer=ACTIVE_PEER,
                                  last_confirm_recv=RECENT)),
    "catching-up": (STS, ob(db=dbv(Db.STANDBY), peer=ACTIVE_PEER)),
    "peer-db-still-primary": (STS, ob(db=dbv(Db.STANDBY), peer=peer(STS, Db.PRIMARY))),
    "elected-waiting-for-master": (STS, ob(**ELECTED)),
    "elected-lease-with-peer": (STS, ob(vrrp=MASTER, **ELECTED, **LEASE_WITH_PEER)),
    "elected-asks-for-lease": (STS, ob(vrrp=MASTER, witness=True, **ELECTED)),
    "elected-promotes": (STS, ob(vrrp=MASTER, **ELECTED)),
    "positions-unknown": (STS, ob(db=dbv(Db.STOPPED), peer=peer(STS, Db.STANDBY))),
    "peer-has-better-claim": (STS, ob(db=dbv(Db.STANDBY, timeline=1),
                                      peer=peer(STS, Db.STANDBY, timeline=2))),
    "peer-role-waiting": (STS, ob(db=dbv(Db.STANDBY), peer=peer(Role.MAINTENANCE, Db.STANDBY))),
    # overrides
    "peer-serves-elsewhere": (Role.STANDBY, ob(vrrp=MASTER, last_confirm_recv=RECENT, peer_elsewhere=True,
                                               peer=peer(Role.ACTIVE, Db.STOPPED, MASTER))),
    "peer-serves-vrrp-cut": (Role.STANDBY, ob(last_confirm_recv=RECENT, peer_elsewhere=True,
                                              peer_on_vrrp_path=False, peer=peer(vrrp=MASTER))),
}


def names(rows: Iterable[Row]) -> list[str]:
    return [r.name for r in rows]


# ------------------------------------------------------------------ the table as data


def test_row_names_are_unique_kebab_case() -> None:
    all_names = names(TABLE)
    assert len(all_names) == len(set(all_names))
    for name in all_names:
        assert re.fullmatch(r"[a-z]+(-[a-z]+)*", name), name


def test_every_row_has_an_example() -> None:
    assert sorted(EXAMPLES) == sorted(names(TABLE))


@pytest.mark.parametrize("name", names(RULES))
def test_every_rule_is_the_first_match_of_some_observation(name: str) -> None:
    role, obs = EXAMPLES[name]
    m = match(role, obs)
    assert m.rule.name == name
    assert m.decision == decide(role, obs)
    assert m.state in m.rule.from_roles
    assert not m.overrides  # the example shows the rule itself


@pytest.mark.parametrize("name", names(RENAMES))
def test_every_rename_applies_to_some_observation(name: str) -> None:
    role, obs = EXAMPLES[name]
    assert name in names(match(role, obs).renames)


@pytest.mark.parametrize("name", names(OVERRIDES))
def test_every_override_amends_some_decision(name: str) -> None:
    role, obs = EXAMPLES[name]
    m = match(role, obs)
    assert names(m.overrides) == [name]
    assert m.decision.role != Role.ACTIVE and not m.decision.desired.vrrp_gate
    assert m.decision.reason == next(o.reason for o in OVERRIDES if o.name == name)


def _input(state: State, obs: Observation) -> tuple[Role, Observation]:
    """A role and observation the rules see as ``state``."""
    if state == PROMOTED:
        return STS, replace(obs, job_done=Job.PROMOTE)
    assert isinstance(state, Role)
    return state, obs if obs.job_done != Job.PROMOTE else replace(obs, job_done=None)


def _random_obs(rng: random.Random) -> tuple[Role, Observation]:
    c = rng.choice
    now = c([NOW, rng.uniform(0, 1e6)])

    def ago() -> float | None:
        return c([None, now - c([0.0, 0.5, 1.5, 2.5, 3.5, 5.0]), now - rng.uniform(-2, 12)])

    def db() -> DbView:
        return DbView(c(list(Db) + [Db.STANDBY, Db.PRIMARY]), rng.randint(0, 3), rng.randint(0, 3),
                      c(["", "sysA", "sysB"]), *(rng.random() < 0.5 for _ in range(5)))

    the_peer = None if rng.random() < 0.3 else PeerView(c(list(Role) + [Role.ACTIVE] * 2), db(),
                                                        c([0, 1]), c(list(Vrrp)))
    obs = Observation(
        now=now, ha=rng.random() < 0.95, self_index=c([0, 1]), vrrp=c([*Vrrp, MASTER]), db=db(),
        peer=the_peer, peer_on_vrrp_path=rng.random() < 0.7, peer_elsewhere=rng.random() < 0.3,
        peer_ever_seen=the_peer is not None or rng.random() < 0.8, last_confirm_recv=ago(),
        last_confirm_sent=ago(), not_streaming_since=ago(), volume_ok=rng.random() < 0.95,
        job_running=c([None] * 4 + list(Job)), job_failed=c([None] * 3 + list(Job)),
        job_done=c([None] * 5 + list(Job)), command=c([None] * 4 + list(Command)),
        maintenance=rng.random() < 0.15, witness=rng.random() < 0.5, lease_valid=rng.random() < 0.5,
        lease_peer=rng.random() < 0.5, lease_peer_for=c([0.0, 0.5, 5.0]),
        paused_for=c([0.0] * 8 + [0.3, 3.0]))
    return c(list(Role) + [Role.STANDBY, Role.ACTIVE, STA, STS]), obs


@functools.cache
def _random_states_seen() -> frozenset[tuple[str, State]]:
    rng = random.Random(20240601)
    seen = set()
    for _ in range(20000):
        m = match(*_random_obs(rng))
        seen.add((m.rule.name, m.state))
    return frozenset(seen)


@pytest.mark.parametrize("rule", RULES, ids=names(RULES))
def test_every_rule_is_reachable_from_every_role_it_lists(rule: Rule) -> None:
    """No row lists a role it can never be the first match for: the picture draws only
    transitions that happen."""
    for state in sorted(rule.from_roles):
        role, obs = _input(state, EXAMPLES[rule.name][1])
        m = match(role, obs)
        if (m.rule.name, m.state) == (rule.name, state):
            continue
        assert (rule.name, state) in _random_states_seen(), f"{rule.name} never decides for {state}"


def test_every_role_set_ends_with_an_unguarded_row() -> None:
    """Every state the rules can see has a last resort, so decide() is total."""
    for state in ANY:
        last = [r for r in RULES if state in r.from_roles][-1]
        assert last.when == (), f"{state}: {last.name} is guarded"


# ------------------------------------------------------------------ renderings


def test_the_table_round_trips_through_json() -> None:
    data = json.loads(dot.to_json())
    assert data == dot.table_json()
    assert dot.table_from_json(data) == TABLE
    assert [r["order"] for r in data["rows"]] == list(range(1, len(TABLE) + 1))
    assert {g for r in data["rows"] for g in r["when"]} <= (
        set(data["predicates"]) | {f"not {p}" for p in data["predicates"]} | {"decided_gate_open"})
    assert all(why for why in data["predicates"].values())


def test_every_guard_says_why_in_one_line() -> None:
    for name, fn in dot.guards_used().items():
        assert fn.__doc__, name
        first, *rest = fn.__doc__.strip().splitlines()
        assert 20 < len(first) <= 100, name
        assert not rest or rest[0].strip() == "", f"{name}: the first line is not a sentence of its own"


def test_the_text_table_fits_100_columns_and_lists_every_row() -> None:
    text = dot.text_table(100)
    assert max(len(line) for line in text.splitlines()) <= 100
    for name in names(TABLE):
        assert re.search(rf"^\s*\d+  {re.escape(name)}\b", text, re.M), name


def test_the_rich_table_loses_no_word() -> None:
    rich = pytest.importorskip("rich.console")
    with open("/dev/null", "w") as null:
        console = rich.Console(width=100, record=True, file=null, color_system=None)
        console.print(dot.rich_table(100))
    text = console.export_text(styles=False)
    assert max(len(line.rstrip()) for line in text.splitlines()) <= 100
    words = set(text.split())
    for d in dot.table_json()["rows"]:
        assert d["name"] in words
        for word in d["reason"].replace("{obs.", "{").split():
            assert word in words or word in text, (d["name"], word)


def test_docs_rules_dot_is_generated_from_the_table() -> None:
    """Regenerate with `make rules-docs` when the table changes."""
    assert (ROOT / "docs/rules.dot").read_text() == dot.digraph()


def test_docs_rules_svg_shows_every_rule() -> None:
    svg = html.unescape((ROOT / "docs/rules.svg").read_text())
    for name in names(RENAMES) + names(RULES):
        assert f">{name}</text>" in svg, name


def test_docs_ha_md_shows_the_current_table() -> None:
    """docs/ha.md quotes `escadm ha rules --width 100` between markers."""
    text = (ROOT / "docs/ha.md").read_text()
    block = text.split("<!-- rules-table:begin -->\n```text\n", 1)[1]
    block = block.split("```\n<!-- rules-table:end -->")[0]
    assert block == dot.text_table(100)


def test_the_digraph_has_an_edge_label_for_every_rule() -> None:
    text = dot.digraph()
    assert text.startswith("//") and "digraph roles {" in text and text.endswith("}\n")
    labels = " ".join(re.findall(r'label="([^"]*)"', text)).replace("\\n", " ").split()
    for name in names(RENAMES) + names(RULES):
        assert name in labels, name
    assert all(o.name in text for o in OVERRIDES)
    for state in (*Role, *Phase):
        assert f'"{state}"' in text


# ------------------------------------------------------------------ escadm ha rules


@pytest.mark.parametrize(("args", "want"), [
    (["ha", "rules", "--width", "100"], dot.text_table(100)),
    (["ha", "rules", "--dot"], dot.digraph()),
    (["ha", "rules", "--json"], dot.to_json()),
])
def test_escadm_ha_rules_needs_no_node(args: list[str], want: str, tmp_path: Path) -> None:
    res = CliRunner().invoke(cli, ["--root", str(tmp_path / "nothing-here"), *args])
    assert res.exit_code == 0, res.output
    assert res.output == want
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0 and res.output == want


def test_escadm_ha_rules_json_names_every_rule_and_its_outcome() -> None:
    data = json.loads(CliRunner().invoke(cli, ["ha", "rules", "--json"]).output)
    by_name = {r["name"]: r for r in data["rows"]}
    assert len(by_name) == len(TABLE)
    assert by_name["standby-promotes"] == {
        "order": by_name["standby-promotes"]["order"], "kind": "rule", "name": "standby-promotes",
        "from": ["STANDBY"], "when": ["keepalived_master"], "to": "SWITCHING_TO_ACTIVE",
        "desired": "while_promoting", "job": "promote", "consumed": False,
        "reason": "keepalived MASTER, {peer lost | peer is <role>}, data complete: promoting",
        "reason_fn": "master_promotes_reason"}
    assert by_name["waiting-for-job"]["to"] == SAME
