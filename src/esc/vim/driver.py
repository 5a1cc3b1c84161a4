"""What a VIM driver offers the controller: create, delete, reboot, look up VMs.

A driver is the controller's only way to touch VMs. Every call is idempotent
(``create_vm`` by ``spec.name``, ``delete_vm`` of a missing VM is a no-op), so
a request retried after a failover does no harm, and any driver instance that
shares the driver's state (another process, the new active node) manages the
same VMs.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Literal, Protocol, runtime_checkable

VmState = Literal["running", "stopped"]

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


class VimError(RuntimeError):
    """A driver call failed; the message says what and why."""


class VmNotFound(VimError):
    pass


class VmConflict(VimError):
    """``create_vm`` with the name of an existing VM but a different spec."""


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):  # "$" matches before a "\n"
        raise ValueError(f"bad VM name {name!r}: 1 to 63 of [A-Za-z0-9_.-], starting with a letter "
                         "or digit")
    return name


@dataclass(frozen=True)
class Network:
    """The L2 segment a VM's interface is attached to: a bridge in a namespace."""

    namespace: str  # the namespace holding the bridge, e.g. the lab's switch "esc-sw"
    bridge: str = "br0"


@dataclass(frozen=True)
class VmSpec:
    name: str
    image: str  # local driver: "cirros" (answers ping) or "web" (ping + HTTP 200 on port 80)
    address: str  # IPv4 with prefix, chosen by the caller: "10.77.0.101/24"
    network: Network

    def __post_init__(self) -> None:
        check_name(self.name)
        if not isinstance(self.image, str) or not self.image:
            raise ValueError(f"bad image {self.image!r}")
        if "/" not in self.address:
            raise ValueError(f"address {self.address!r} needs a prefix length, e.g. 10.0.0.5/24")
        try:
            ipaddress.IPv4Interface(self.address)
        except ValueError as e:
            raise ValueError(f"bad IPv4 address {self.address!r}: {e}") from None

    @property
    def ip(self) -> str:
        """The address without its prefix length (what a probe pings)."""
        return str(ipaddress.IPv4Interface(self.address).ip)


@dataclass(frozen=True)
class VmInfo:
    name: str
    address: str  # with prefix, as in the spec
    state: VmState
    pid: int | None  # None when not running
    created_at: datetime  # timezone-aware, UTC
    image: str = ""

    @property
    def ip(self) -> str:
        return str(ipaddress.IPv4Interface(self.address).ip)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["created_at"] = self.created_at.isoformat()
        return d


@runtime_checkable
class VimDriver(Protocol):
    def create_vm(self, spec: VmSpec) -> VmInfo:
        """Create and start a VM; if a VM of that name exists, return it
        (``VmConflict`` if it exists with another image, address or network)."""
        ...

    def delete_vm(self, name: str) -> None:
        """Stop and remove a VM and everything it holds; no-op if absent."""
        ...

    def reboot_vm(self, name: str) -> VmInfo:
        """Kill the VM's process and start it again with the same address
        (``VmNotFound`` if there is no such VM)."""
        ...

    def stop_vm(self, name: str) -> VmInfo:
        """Stop the VM's guest; its namespace, address and record stay, and ``reboot_vm``
        starts it again (``VmNotFound`` if there is no such VM)."""
        ...

    def get(self, name: str) -> VmInfo | None: ...

    def list(self) -> list[VmInfo]: ...
