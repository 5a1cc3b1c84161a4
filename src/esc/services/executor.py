"""The hook between the transaction worker and the VIM: what actually creates VMs.

The worker calls :meth:`DeploymentExecutor.apply` once per deployment transaction
(create, update, delete), *outside* any database transaction, after the deployment
and its VM rows are committed (VMs ``pending``, or ``deleting`` for those to remove)
and the transaction is marked ``running``. What ``apply`` returns is written back in
one database transaction that also finishes the transaction.

Contract for an implementation (the VIM driver):

- **Idempotent.** After a failover (or a crash of escmanager) the new active's worker
  calls ``apply`` again for every transaction that was ``running``: the same
  ``DeploymentWork`` (same VM names, stable across calls). Creating a VM that exists
  must find it, removing one that is gone must succeed. VM names are unique per
  deployment and deployment names per tenant: use them (with the tenant) as the
  VIM-side key, not a counter kept in memory.
- **Returns** the status of every VM in ``work.vms``: ``"deployed"`` or ``"error"``
  (a VM left out counts as ``"error"``). Raising fails the whole transaction
  (deployment status ``failed``, message from the exception).
- May take long (minutes); it runs in a worker thread, one transaction at a time per
  thread, while later transactions on other resources proceed in other threads.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable


@dataclass(frozen=True)
class VmWork:
    name: str                    # "<deployment>_<vm_group>_<index>", stable
    vm_group: str
    index: int                   # 0 .. count-1 within the group
    status: str                  # as in the database now: pending, deployed, error, deleting...
    image: dict[str, Any]        # the image resource: {"name", "src", "disk_format", ...}
    flavor: dict[str, Any]       # the flavor resource: {"name", "vcpus", "memory_mb", ...}
    interfaces: list[dict[str, Any]]  # [{"network": name, "ip": str | None}], in order
    kpi: dict[str, Any]          # {"type": "icmp_ping", "interval_s", "down_after"}
    recovery: dict[str, Any]     # {"policy": "reboot" | "redeploy" | "none"}


@dataclass(frozen=True)
class DeploymentWork:
    transaction_id: int
    operation: Literal["create", "update", "delete"]
    tenant: str
    deployment: str
    spec: dict[str, Any]         # the deployment as requested (description, vm_groups)
    vms: list[VmWork] = field(default_factory=list)     # must exist when apply returns
    remove: list[VmWork] = field(default_factory=list)  # must be gone when apply returns


@runtime_checkable
class DeploymentExecutor(Protocol):
    def apply(self, work: DeploymentWork) -> Mapping[str, str]:
        """Make the VIM match ``work``; the status of each VM in ``work.vms`` by name."""
        ...


class NoopExecutor:
    """Default until a VIM driver exists: nothing to create, every VM is "deployed"."""

    def apply(self, work: DeploymentWork) -> Mapping[str, str]:
        return {vm.name: "deployed" for vm in work.vms}
