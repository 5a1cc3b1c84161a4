"""XML bodies: parsed with defusedxml into the same dicts a JSON body gives, guided by
the pydantic model (which elements are lists, which are objects); rendered from the
JSON-ready dicts the API answers with.

The mapping, in both directions::

    {"name": "d", "vm_groups": [{"name": "g", "count": 2}]}
    <deployment><name>d</name><vm_groups><vm_group><name>g</name><count>2</count>
    </vm_group></vm_groups></deployment>

A list is wrapped in an element named after the field, each item in an element named
after the item (``vm_groups/vm_group``, ``interfaces/interface``, a top-level list of
tenants is ``tenants/tenant``). Namespaces are accepted and ignored; a missing
element takes its default; an empty element of an optional field is null; values are
text, converted by the model (``true``/``false``, numbers). Attributes, DTDs and
entities are refused.
"""

from __future__ import annotations

import re
import types
import typing
from typing import Any
from xml.etree import ElementTree as ET

import defusedxml.ElementTree as DET
from defusedxml import DefusedXmlException
from pydantic import BaseModel

XML_DECLARATION = b'<?xml version="1.0" encoding="UTF-8"?>\n'


class XmlError(ValueError):
    """The body is not XML, or not XML of the expected shape."""


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def _unwrap(annotation: Any) -> tuple[Any, bool]:
    """(the type without ``Annotated`` and ``| None``, whether None is allowed)."""
    optional = False
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            optional = optional or len(args) < len(typing.get_args(annotation))
            if len(args) != 1:
                return annotation, optional
            annotation = args[0]
        else:
            return annotation, optional


def _is_model(t: Any) -> bool:
    return isinstance(t, type) and issubclass(t, BaseModel)


def xml_name(model: type[BaseModel]) -> str:
    extra = model.model_config.get("json_schema_extra")
    if isinstance(extra, dict):
        xml = extra.get("xml")
        if isinstance(xml, dict) and isinstance(xml.get("name"), str):
            return xml["name"]
    return model.__name__.lower()


def _check_no_attributes(elem: ET.Element, where: str) -> None:
    for attr in elem.attrib:
        if not attr.startswith("{"):  # namespaced attributes (xsi:...) are ignored
            raise XmlError(f"{where}: attributes are not supported ({_local(attr)})")


def _text(elem: ET.Element, where: str) -> str:
    if len(elem):
        raise XmlError(f"{where}: expected text, found element <{_local(elem[0].tag)}>")
    _check_no_attributes(elem, where)
    return elem.text or ""


def _object(elem: ET.Element, model: type[BaseModel], where: str) -> dict[str, Any]:
    _check_no_attributes(elem, where)
    if (elem.text or "").strip():
        raise XmlError(f"{where}: unexpected text")
    data: dict[str, Any] = {}
    for child in elem:
        if not isinstance(child.tag, str):  # comments, processing instructions
            continue
        if (child.tail or "").strip():
            raise XmlError(f"{where}: unexpected text")
        name = _local(child.tag)
        here = f"{where}/{name}"
        if name in data:
            raise XmlError(f"{here}: appears twice")
        field = model.model_fields.get(name)
        if field is None:  # unknown: let the model report it like a JSON body's
            data[name] = child.text or ""
            continue
        data[name] = _value(child, field.annotation, here)
    return data


def _value(elem: ET.Element, annotation: Any, where: str) -> Any:
    t, optional = _unwrap(annotation)
    if typing.get_origin(t) is list:
        item_type, _ = _unwrap(typing.get_args(t)[0])
        _check_no_attributes(elem, where)
        if (elem.text or "").strip():
            raise XmlError(f"{where}: unexpected text")
        items = []
        for child in elem:
            if not isinstance(child.tag, str):
                continue
            if (child.tail or "").strip():
                raise XmlError(f"{where}: unexpected text")
            expected = xml_name(item_type) if _is_model(item_type) else "item"
            if _local(child.tag) != expected:
                raise XmlError(f"{where}: expected <{expected}>, found <{_local(child.tag)}>")
            here = f"{where}/{expected}[{len(items)}]"
            items.append(_object(child, item_type, here) if _is_model(item_type) else _text(child, here))
        return items
    if _is_model(t):
        return _object(elem, t, where)
    text = _text(elem, where)
    if optional and text == "":
        return None
    return text


def parse(body: bytes, model: type[BaseModel]) -> dict[str, Any]:
    """The body as a dict for ``model``, or XmlError."""
    try:
        root = DET.fromstring(body, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except (ET.ParseError, DefusedXmlException, ValueError) as e:
        raise XmlError(f"invalid XML: {e}") from None
    expected = xml_name(model)
    if _local(root.tag) != expected:
        raise XmlError(f"the root element must be <{expected}>, not <{_local(root.tag)}>")
    return _object(root, model, expected)


# --- rendering -----------------------------------------------------------------------------

# Characters XML 1.0 cannot carry at all, even escaped.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def singular(plural: str) -> str:
    return plural[:-1] if plural.endswith("s") else "item"


def _xml_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return _NOT_XML.sub("\ufffd", str(value))


def _build(parent: ET.Element, tag: str, value: Any) -> None:
    if value is None:
        return
    elem = ET.SubElement(parent, tag)
    _fill(elem, tag, value)


def _fill(elem: ET.Element, tag: str, value: Any) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _build(elem, k, v)
    elif isinstance(value, list):
        for item in value:
            child = ET.SubElement(elem, singular(tag))
            _fill(child, singular(tag), item)
    else:
        elem.text = _xml_text(value)


def render(root: str, value: Any) -> bytes:
    """``value`` (JSON-ready: dicts, lists, str, int, bool, None) as an XML document
    whose root element is ``root`` (a list's items are named ``singular(root)``)."""
    elem = ET.Element(root)
    _fill(elem, root, value)
    return XML_DECLARATION + ET.tostring(elem, encoding="unicode").encode()
