"""VRRP priority follows the data: when both keepalived are MASTER (a thaw, a healed
partition), the node with the newer history keeps the VIP, whatever the node order."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from esc.ha.keepalived import priority_base
from esc.priority import priority_bonus
from esc.roles import Db, DbView, Role

roles = st.sampled_from(list(Role))
states = st.sampled_from(list(Db))


def effective(index: int, role: Role, db: DbView, peer_timeline: int) -> int:
    """keepalived's own rule: base + track-file value, limited to 1..254."""
    return max(1, min(254, priority_base(index) + priority_bonus(role, db, peer_timeline)))


@given(index=st.sampled_from([0, 1]), timeline=st.integers(1, 10_000), ahead=st.integers(1, 50),
       stale_role=roles, stale_state=states, seen=st.one_of(st.just(0), st.integers(0, 50)))
def test_an_active_on_a_later_timeline_outbids_anything_the_peer_wrote_before(
        index: int, timeline: int, ahead: int, stale_role: Role, stale_state: Db,
        seen: int) -> None:
    """The stale node (frozen or cut off: its value was written before) was at most on
    ``timeline``. The new active took over from it, so it had been its complete standby
    on that timeline, and the stale node saw that: its view of the peer's timeline is
    ``timeline`` or later, or nothing at all (0, e.g. restarted since)."""
    new = effective(index, Role.ACTIVE, DbView(state=Db.PRIMARY, timeline=timeline + ahead), timeline)
    stale_seen = 0 if seen == 0 else timeline + min(seen - 1, ahead)
    old = effective(1 - index, stale_role, DbView(state=stale_state, timeline=timeline), stale_seen)
    assert new > old


def test_in_normal_operation_the_first_node_breaks_ties_only() -> None:
    standby = DbView(state=Db.STANDBY, timeline=3)
    assert effective(0, Role.STANDBY, standby, 3) == 101
    assert effective(1, Role.STANDBY, standby, 3) == 100
    active = DbView(state=Db.PRIMARY, timeline=3)
    assert effective(1, Role.ACTIVE, active, 3) > effective(0, Role.STANDBY, standby, 3)
