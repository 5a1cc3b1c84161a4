"""What this node's data is worth to VRRP: the amount added to its keepalived priority.

Both nodes are configured alike (``nopreempt``, equal priority but a tie-break for the
first listed node), so priority never moves the VIP in normal operation. It decides
one thing: when both keepalived are MASTER at once (a frozen active thaws, a partition
heals) the lower priority yields. A fixed order let the first listed node win with
older data, the rightful active fenced itself, and the pair was down for seconds.
Here the newest data wins: an active on a later timeline than the peer's (as last
seen) outbids anything the peer can have written before it fell behind. (The new
active took over from the stale node, so it had been that node's complete standby
on the stale node's timeline, and the stale node saw so: its own "newer" bonus can
never be on a timeline the new active has not passed.)

Pure: the agent writes the result to the ``esc_priority`` track file every tick.
"""

from __future__ import annotations

from esc.roles import Db, DbView, Role

SERVING = 20  # an active whose database is a primary
NEWER = 40  # ... on a later timeline than the peer's last known one


def priority_bonus(role: Role, db: DbView, peer_timeline: int) -> int:
    bonus = 0
    if role == Role.ACTIVE and db.state == Db.PRIMARY:
        bonus += SERVING
    if db.state in (Db.PRIMARY, Db.STANDBY) and db.timeline > peer_timeline > 0:
        bonus += NEWER
    return bonus
