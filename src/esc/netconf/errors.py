"""rpc-error (RFC 6241 section 4.3 and appendix A): what every failed operation answers."""

from __future__ import annotations

from lxml import etree

from esc.netconf.names import NC_NS, qn


class RpcError(Exception):
    """An operation failed: ``tag`` is one of RFC 6241 appendix A's error-tags, ``type``
    the layer (transport, rpc, protocol, application), ``info`` the error-info children
    (bad-element, session-id...)."""

    def __init__(self, tag: str, message: str, *, type: str = "application", path: str | None = None,
                 info: dict[str, str] | None = None, app_tag: str | None = None) -> None:
        super().__init__(message)
        self.tag, self.message, self.type = tag, message, type
        self.path, self.info, self.app_tag = path, info or {}, app_tag

    def element(self) -> etree._Element:
        err = etree.Element(qn("rpc-error"), nsmap={None: NC_NS})
        etree.SubElement(err, qn("error-type")).text = self.type
        etree.SubElement(err, qn("error-tag")).text = self.tag
        etree.SubElement(err, qn("error-severity")).text = "error"
        if self.app_tag:
            etree.SubElement(err, qn("error-app-tag")).text = self.app_tag
        if self.path:
            etree.SubElement(err, qn("error-path")).text = self.path
        msg = etree.SubElement(err, qn("error-message"))
        msg.set("{http://www.w3.org/XML/1998/namespace}lang", "en")
        msg.text = self.message
        if self.info:
            info = etree.SubElement(err, qn("error-info"))
            for k, v in self.info.items():
                etree.SubElement(info, qn(k)).text = v
        return err


def bad_element(tag: str, element: str, message: str, type: str = "protocol") -> RpcError:
    return RpcError(tag, message, type=type, info={"bad-element": element})
