"""The OIDs of ESC-HA-MIB (docs/ESC-HA-MIB.txt).

The module sits under 1.3.6.1.4.1.32473, the enterprise number IANA keeps for
documentation (RFC 5612): an operator who needs a registered arc maps the MIB under
their own with ``escadm snmp set --enterprise_oid``.
"""

from __future__ import annotations

from esc.agent.alarms import NOTIFICATIONS

DEFAULT_ROOT = "1.3.6.1.4.1.32473.1"

# the varbinds every notification carries, then those only some do (all DisplayString)
OBJECTS = {"node": 1, "role": 2, "reason": 3, "previous_role": 4, "peer": 5, "peer_role": 6, "by": 7,
           "kind": 8, "seconds": 9, "vm": 10, "deployment": 11}


def notification_oid(root: str, name: str) -> str:
    return f"{root}.0.{NOTIFICATIONS[name]}"


def object_oid(root: str, name: str) -> str:
    return f"{root}.1.{OBJECTS[name]}"
