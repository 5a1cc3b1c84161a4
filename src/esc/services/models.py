"""The northbound API's bodies, as pydantic models (``extra="forbid"``: an unknown
field is an error, not silently dropped).

Each resource kind has a *spec* (its mutable attributes: the body of a PUT), an
*In* model (spec + name: the body of a POST) and an output model (In + what the
controller adds). The XML element names are in ``json_schema_extra["xml"]`` so that
the OpenAPI description tells XML clients (and schemathesis) the element names.
"""

from __future__ import annotations

import ipaddress
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, model_validator

MAX_NAME = 200
MAX_TEXT = 1000


def _clean_text(value: str) -> str:
    # PostgreSQL text and jsonb cannot hold NUL; JSON can encode lone surrogates.
    if "\x00" in value:
        raise ValueError("must not contain NUL")
    try:
        value.encode()
    except UnicodeEncodeError:
        raise ValueError("is not valid Unicode") from None
    return value


# A name that can stand in a URL path segment: no "/", no control characters.
NAME_PATTERN = r"^[^/\x00-\x1f\x7f]+$"
Name = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_NAME, pattern=NAME_PATTERN),
    AfterValidator(_clean_text),
]
# Deployment names predate the pattern (``POST /v0/deployments`` took any string but
# NUL): they are fetched with a ``{name:path}`` route, so "/" is fine.
DeploymentName = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_NAME), AfterValidator(_clean_text)
]
Text = Annotated[str, StringConstraints(max_length=MAX_TEXT), AfterValidator(_clean_text)]


def _ip(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise ValueError("must be an IPv4 or IPv6 address") from None


def _cidr(value: str) -> str:
    try:
        return str(ipaddress.ip_network(value, strict=True))
    except ValueError as e:
        raise ValueError(f"must be a network address with its prefix length ({e})") from None


IpAddress = Annotated[str, StringConstraints(min_length=2, max_length=45), AfterValidator(_ip)]
Cidr = Annotated[str, StringConstraints(min_length=4, max_length=49), AfterValidator(_cidr)]


def _xml(name: str) -> ConfigDict:
    return ConfigDict(extra="forbid", json_schema_extra={"xml": {"name": name}})


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _wrapped(**kw: Any) -> Any:
    """A list field, written in XML as ``<field><item/>...</field>``."""
    return Field(json_schema_extra={"xml": {"wrapped": True}}, **kw)


# --- tenants, networks, subnets, flavors, images, volumes ------------------------------------


class TenantSpec(Body):
    model_config = _xml("tenant")
    description: Text = ""


class TenantIn(TenantSpec):
    name: Name


class NetworkSpec(Body):
    model_config = _xml("network")
    description: Text = ""
    shared: bool = False


class NetworkIn(NetworkSpec):
    name: Name


class SubnetSpec(Body):
    model_config = _xml("subnet")
    cidr: Cidr
    gateway_ip: IpAddress | None = None
    dhcp: bool = True

    @model_validator(mode="after")
    def _gateway_in_cidr(self) -> SubnetSpec:
        if self.gateway_ip is not None:
            net, gw = ipaddress.ip_network(self.cidr), ipaddress.ip_address(self.gateway_ip)
            if gw.version != net.version or gw not in net:
                raise ValueError(f"gateway_ip {gw} is not in {net}")
        return self


class SubnetIn(SubnetSpec):
    name: Name


class FlavorSpec(Body):
    model_config = _xml("flavor")
    vcpus: int = Field(ge=1, le=1024)
    memory_mb: int = Field(ge=1, le=16 * 1024 * 1024)
    root_disk_gb: int = Field(default=0, ge=0, le=65536)
    ephemeral_disk_gb: int = Field(default=0, ge=0, le=65536)


class FlavorIn(FlavorSpec):
    name: Name


class ImageSpec(Body):
    model_config = _xml("image")
    src: Annotated[str, StringConstraints(min_length=1, max_length=2048), AfterValidator(_clean_text)]
    disk_format: Literal["qcow2", "raw", "vmdk", "vdi", "vhd", "iso"] = "qcow2"
    container_format: Literal["bare", "ovf", "ova"] = "bare"


class ImageIn(ImageSpec):
    name: Name


class VolumeSpec(Body):
    model_config = _xml("volume")
    size_gb: int = Field(ge=1, le=65536)
    volume_type: Text = ""
    bootable: bool = False


class VolumeIn(VolumeSpec):
    name: Name


# --- deployments ---------------------------------------------------------------------------


class Interface(Body):
    model_config = _xml("interface")
    network: Name
    ip: IpAddress | None = None


class Kpi(Body):
    """How the VNF monitor watches each VM of the group: a ping every ``interval_s``
    seconds; ``down_after`` failed ones in a row make the VM down (and start its
    recovery). Absent: the VIM's defaults (``escadm vim set --probe-interval
    --down-after``)."""

    model_config = _xml("kpi")
    type: Literal["icmp_ping"] = "icmp_ping"
    interval_s: int | float | None = Field(default=None, ge=0.1, le=3600)  # int stays 7, not 7.0
    down_after: int | None = Field(default=None, ge=1, le=100)


class Recovery(Body):
    model_config = _xml("recovery")
    policy: Literal["reboot", "redeploy", "none"] = "reboot"


class VmGroup(Body):
    model_config = _xml("vm_group")
    name: Name
    image: Name
    flavor: Name
    count: int = Field(default=1, ge=1, le=100)
    interfaces: list[Interface] = _wrapped(default_factory=list, max_length=16)
    kpi: Kpi = Field(default_factory=Kpi)
    recovery: Recovery = Field(default_factory=Recovery)

    @model_validator(mode="after")
    def _static_ip_needs_one_vm(self) -> VmGroup:
        if self.count > 1 and any(i.ip for i in self.interfaces):
            raise ValueError(f"vm_group {self.name}: a static ip needs count 1")
        return self


class DeploymentSpec(Body):
    model_config = _xml("deployment")
    description: Text = ""
    vm_groups: list[VmGroup] = _wrapped(default_factory=list, max_length=64)
    # "stopped": every VM of the deployment is stopped (kept, not monitored); "running"
    # starts them again (the ETSI service's operate)
    vm_state: Literal["running", "stopped"] = "running"

    @model_validator(mode="after")
    def _unique(self) -> DeploymentSpec:
        names = [g.name for g in self.vm_groups]
        dups = sorted({n for n in names if names.count(n) > 1})
        if dups:
            raise ValueError(f"vm_group names must be unique: {', '.join(dups)}")
        ips = [i.ip for g in self.vm_groups for i in g.interfaces if i.ip]
        dup_ips = sorted({ip for ip in ips if ips.count(ip) > 1})
        if dup_ips:
            raise ValueError(f"ip used twice: {', '.join(dup_ips)}")
        return self


class DeploymentIn(DeploymentSpec):
    name: DeploymentName


class LegacyDeploymentIn(Body):
    """``POST /v0/deployments``: a deployment with no VM groups in the default tenant."""

    model_config = _xml("deployment")
    name: DeploymentName


# --- outputs -------------------------------------------------------------------------------


class Stamped(Body):
    id: int
    created_at: datetime
    updated_at: datetime


class Tenant(TenantIn, Stamped):
    pass


class Network(NetworkIn, Stamped):
    pass


class Subnet(SubnetIn, Stamped):
    network: Name


class Flavor(FlavorIn, Stamped):
    pass


class Image(ImageIn, Stamped):
    pass


class Volume(VolumeIn, Stamped):
    tenant: Name


VmStatus = Literal["pending", "deployed", "error", "deleting", "alive", "down"]


class Vm(Body):
    model_config = _xml("vm")
    name: str
    vm_group: str
    status: VmStatus
    interfaces: list[Interface] = _wrapped()


DeploymentStatus = Literal["pending", "deployed", "updating", "deleting", "failed"]


class Deployment(DeploymentIn, Stamped):
    tenant: Name
    status: DeploymentStatus
    vms: list[Vm] = _wrapped()
    transaction_id: int | None


TxStatus = Literal["accepted", "running", "succeeded", "failed"]


class Accepted(Body):
    model_config = _xml("transaction")
    transaction_id: int
    status: TxStatus


class CallbackState(Body):
    model_config = _xml("callback")
    url: str
    status: Literal["pending", "delivered", "abandoned"]
    attempts: int
    last_error: str | None
    last_status: int | None
    delivered_at: datetime | None


class Transaction(Body):
    model_config = _xml("transaction")
    transaction_id: int
    status: TxStatus
    operation: Literal["create", "update", "delete"]
    resource_type: str
    parent: str | None
    resource: str
    method: str
    path: str
    status_code: int | None
    message: str | None
    attempts: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    callbacks: list[CallbackState] = _wrapped()


class Event(Body):
    model_config = _xml("notification")
    id: int
    type: str
    status: str | None
    created_at: datetime
    transaction_id: int | None
    tenant: str | None
    resource_type: str | None
    resource: str | None
    vm: str | None
    message: str


class Health(Body):
    status: str


class Error(Body):
    model_config = _xml("error")
    error: str
    details: list[str] | None = None
