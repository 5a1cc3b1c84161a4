"""The VNF lifecycle rules of SOL003, as pure functions (no I/O): which task an instance
accepts in which state, how an operation occurrence moves, which subscription hears
which notification. The API (esc.etsi.app) and the worker (esc.etsi.worker) call these
and do the database writes.

Operation occurrence states (SOL003 5.6.2.2)::

    STARTING ──> PROCESSING ──> COMPLETED
        │            │   ^
        │            v   │ retry
        │        FAILED_TEMP ──> FAILED          (fail)
        │            │
        │            v rollback
        └─────> ROLLING_BACK ──> ROLLED_BACK
                     └──> FAILED_TEMP

A cancel marks the occurrence ``isCancelPending``; the worker ends it at its next step
(ROLLED_BACK while STARTING, FAILED_TEMP while PROCESSING or ROLLING_BACK).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

STARTING, PROCESSING, COMPLETED = "STARTING", "PROCESSING", "COMPLETED"
FAILED_TEMP, FAILED, ROLLING_BACK, ROLLED_BACK = "FAILED_TEMP", "FAILED", "ROLLING_BACK", "ROLLED_BACK"
# the worker moves these forward
ACTIVE_STATES = (STARTING, PROCESSING, ROLLING_BACK)
# the instance is free again
FINAL_STATES = (COMPLETED, FAILED, ROLLED_BACK)

NOT_INSTANTIATED, INSTANTIATED = "NOT_INSTANTIATED", "INSTANTIATED"

# task path -> (operation, the instance state it needs)
TASKS: dict[str, tuple[str, str]] = {
    "instantiate": ("INSTANTIATE", NOT_INSTANTIATED),
    "scale": ("SCALE", INSTANTIATED),
    "scale_to_level": ("SCALE_TO_LEVEL", INSTANTIATED),
    "change_flavour": ("CHANGE_FLAVOUR", INSTANTIATED),
    "terminate": ("TERMINATE", INSTANTIATED),
    "heal": ("HEAL", INSTANTIATED),
    "operate": ("OPERATE", INSTANTIATED),
    "change_ext_conn": ("CHANGE_EXT_CONN", INSTANTIATED),
}

# operations whose rollback the VNFM supports (SOL003 leaves it to the VNFM; these have a
# clear state to return to)
ROLLBACK_OPS = ("INSTANTIATE", "SCALE", "SCALE_TO_LEVEL", "CHANGE_FLAVOUR", "CHANGE_EXT_CONN",
                "OPERATE", "MODIFY_INFO")


class Conflict(Exception):
    """A request the state does not allow: 409 with this detail."""


def check_task(task: str, instance_state: str, busy_with: str | None) -> str:
    """The operation of ``task``, or Conflict: the instance must be in the state the task
    needs and not held by another operation occurrence."""
    op, needs = TASKS[task]
    if busy_with is not None:
        raise Conflict(f"operation occurrence {busy_with} is in progress on this VNF instance")
    if instance_state != needs:
        raise Conflict(f"{op} needs the VNF instance {needs}; it is {instance_state}")
    return op


def next_on_retry(state: str) -> str:
    if state != FAILED_TEMP:
        raise Conflict(f"retry needs the operation FAILED_TEMP; it is {state}")
    return PROCESSING


def next_on_rollback(state: str, operation: str) -> str:
    if state != FAILED_TEMP:
        raise Conflict(f"rollback needs the operation FAILED_TEMP; it is {state}")
    if operation not in ROLLBACK_OPS:
        raise Conflict(f"{operation} cannot be rolled back (fail it, then heal or terminate)")
    return ROLLING_BACK


def next_on_fail(state: str) -> str:
    if state != FAILED_TEMP:
        raise Conflict(f"fail needs the operation FAILED_TEMP; it is {state}")
    return FAILED


def check_cancel(state: str, cancel_pending: bool) -> None:
    if state not in ACTIVE_STATES:
        raise Conflict(f"cancel needs the operation STARTING, PROCESSING or ROLLING_BACK; it is {state}")
    if cancel_pending:
        raise Conflict("a cancel is already pending on this operation")


def on_cancel(state: str) -> str:
    """Where a cancelled occurrence ends when the worker sees the cancel."""
    return ROLLED_BACK if state == STARTING else FAILED_TEMP


def notification_status(state: str) -> str:
    """START for the states an operation passes through, RESULT for where it stops."""
    return "START" if state in (STARTING, PROCESSING, ROLLING_BACK) else "RESULT"


def links_for(state: str, operation: str) -> list[str]:
    """The task links an occurrence offers in ``state`` (besides self and vnfInstance)."""
    if state == FAILED_TEMP:
        return ["retry", "fail", *(["rollback"] if operation in ROLLBACK_OPS else [])]
    if state in ACTIVE_STATES:
        return ["cancel"]
    return []


# --- subscriptions --------------------------------------------------------------------------

def filter_key(filter_: Mapping[str, Any]) -> str:
    """Equal for filters that select the same notifications (lists compared as sets), so
    that a second subscription with the same callback and filter is found (303)."""

    def norm(v: Any) -> Any:
        if isinstance(v, Mapping):
            return {k: norm(x) for k, x in sorted(v.items()) if x not in (None, [], {})}
        if isinstance(v, list):
            return sorted((norm(x) for x in v), key=lambda x: json.dumps(x, sort_keys=True))
        return v

    return hashlib.sha256(json.dumps(norm(dict(filter_)), sort_keys=True).encode()).hexdigest()


def matches(filter_: Mapping[str, Any], notification_type: str, instance: Mapping[str, Any],
            operation: str | None = None, state: str | None = None) -> bool:
    """Whether a subscription with ``filter_`` hears this notification about ``instance``
    (keys vnfdId, vnfProvider, vnfProductName, vnfSoftwareVersion, vnfdVersion, id,
    vnfInstanceName). Every attribute given must match (SOL003 5.5.3.12)."""
    types = filter_.get("notificationTypes")
    if types and notification_type not in types:
        return False
    if notification_type == "VnfLcmOperationOccurrenceNotification":
        ops, states = filter_.get("operationTypes"), filter_.get("operationStates")
        if ops and operation not in ops:
            return False
        if states and state not in states:
            return False
    f = filter_.get("vnfInstanceSubscriptionFilter") or {}
    if f.get("vnfdIds") and instance.get("vnfdId") not in f["vnfdIds"]:
        return False
    if f.get("vnfInstanceIds") and instance.get("id") not in f["vnfInstanceIds"]:
        return False
    if f.get("vnfInstanceNames") and instance.get("vnfInstanceName") not in f["vnfInstanceNames"]:
        return False
    providers = f.get("vnfProductsFromProviders")
    if providers:
        return any(_product_matches(p, instance) for p in providers)
    return True


def _product_matches(p: Mapping[str, Any], instance: Mapping[str, Any]) -> bool:
    if p.get("vnfProvider") != instance.get("vnfProvider"):
        return False
    products = p.get("vnfProducts")
    if not products:
        return True
    for prod in products:
        if prod.get("vnfProductName") != instance.get("vnfProductName"):
            continue
        versions = prod.get("versions")
        if not versions:
            return True
        for v in versions:
            if v.get("vnfSoftwareVersion") != instance.get("vnfSoftwareVersion"):
                continue
            if not v.get("vnfdVersions") or instance.get("vnfdVersion") in v["vnfdVersions"]:
                return True
    return False
