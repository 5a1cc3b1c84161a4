"""The XML namespaces and capability URIs of the NETCONF service."""

from __future__ import annotations

from importlib import resources

NC_NS = "urn:ietf:params:xml:ns:netconf:base:1.0"
NOTIF_NS = "urn:ietf:params:xml:ns:netconf:notification:1.0"
NC_NOTIF_NS = "urn:ietf:params:xml:ns:netmod:notification"  # nc-notifications (streams)
MON_NS = "urn:ietf:params:xml:ns:yang:ietf-netconf-monitoring"
ESC_NS = "http://www.cisco.com/esc/esc"

ESC_MODULE = "esc"
ESC_REVISION = "2026-12-04"

BASE_10 = "urn:ietf:params:netconf:base:1.0"
BASE_11 = "urn:ietf:params:netconf:base:1.1"
CAPABILITIES = (
    BASE_10,
    BASE_11,
    "urn:ietf:params:netconf:capability:writable-running:1.0",
    "urn:ietf:params:netconf:capability:validate:1.0",
    "urn:ietf:params:netconf:capability:xpath:1.0",
    "urn:ietf:params:netconf:capability:validate:1.1",
    "urn:ietf:params:netconf:capability:notification:1.0",
    "urn:ietf:params:netconf:capability:interleave:1.0",
    f"{ESC_NS}?module={ESC_MODULE}&revision={ESC_REVISION}",
    f"{MON_NS}?module=ietf-netconf-monitoring&revision=2010-10-04",
)


def qn(local: str, ns: str = NC_NS) -> str:
    """Clark notation: ``{ns}local``."""
    return f"{{{ns}}}{local}"


def esc_yang() -> str:
    """The text of the esc YANG module (served by get-schema)."""
    return resources.files("esc.netconf").joinpath("yang/esc.yang").read_text(encoding="utf-8")
