"""The esc YANG module: valid for pyang (strict), the shape the server walks
(esc.netconf.yangtree) is the module's, and the mapping to the REST API's bodies goes
there and back unchanged."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pyang = pytest.importorskip("pyang")

from esc.netconf import mapping, yangtree  # noqa: E402
from esc.netconf.errors import RpcError  # noqa: E402
from esc.netconf.framing import Deframer, FramingError, frame  # noqa: E402
from esc.netconf.names import ESC_REVISION, esc_yang  # noqa: E402

MODULE = Path(yangtree.__file__).parent / "yang" / "esc.yang"


def test_pyang_validates_the_module_strictly() -> None:
    exe = shutil.which("pyang", path=str(Path(sys.executable).parent)) or "pyang"
    res = subprocess.run([exe, "--strict", "-Werror", str(MODULE)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert f"revision {ESC_REVISION}" in esc_yang()


def _pyang_tree() -> yangtree.Node:
    from pyang import context, repository

    ctx = context.Context(repository.FileRepository(str(MODULE.parent)))
    module = ctx.add_module(str(MODULE), MODULE.read_text())
    ctx.validate()
    assert module is not None and not [e for e in ctx.errors if e[1] not in ()], ctx.errors

    def node(s: object, config: bool = True) -> yangtree.Node:
        kw = s.keyword  # type: ignore[attr-defined]
        is_config = getattr(s, "i_config", True) is not False
        children = tuple(node(c) for c in getattr(s, "i_children", []) if c.keyword in
                         ("container", "list", "leaf"))
        keys = tuple(k.arg for k in getattr(s, "i_key", []) or [])
        kind = {"container": "container", "list": "list", "leaf": "leaf"}[kw]
        return yangtree.Node(s.arg, kind, children if kind != "leaf" else (), keys,  # type: ignore[attr-defined]
                             config=is_config)

    top = [c for c in module.i_children if c.keyword == "container"]
    assert [c.arg for c in top] == ["esc_datamodel"]
    return node(top[0])


def _strip_config(n: yangtree.Node, parent_config: bool = True) -> yangtree.Node:
    """config as pyang says it for every node (inherited), for comparing."""
    config = parent_config and n.config
    return yangtree.Node(n.name, n.kind, tuple(_strip_config(c, config) for c in n.children), n.keys, config)


def test_the_servers_schema_is_the_modules() -> None:
    assert _strip_config(yangtree.SCHEMA) == _pyang_tree()


def test_the_notifications_are_in_the_module() -> None:
    text = esc_yang()
    assert "notification escEvent" in text and "notification escHaEvent" in text


DEPLOYMENT = {"name": "d/1", "description": "", "vm_state": "stopped", "vm_groups": [
    {"name": "g", "image": "i", "flavor": "f", "count": 1,
     "interfaces": [{"network": "n", "ip": "10.0.0.5"}, {"network": "m", "ip": None}],
     "kpi": {"type": "icmp_ping", "interval_s": 3, "down_after": None}, "recovery": {"policy": "none"}},
    {"name": "h", "image": "i", "flavor": "f", "count": 3, "interfaces": [],
     "kpi": {"type": "icmp_ping", "interval_s": None, "down_after": None}, "recovery": {"policy": "reboot"}}]}


def test_resources_go_to_xml_and_back_unchanged() -> None:
    res = mapping.empty()
    res["tenant"][(None, "t")] = {"name": "t", "description": "x"}
    res["deployment"][("t", "d/1")] = mapping.normalize("deployment", DEPLOYMENT, "d")
    res["network"][(None, "n")] = {"name": "n", "description": "", "shared": True}
    v6 = {"name": "v6", "cidr": "2001:db8::/64", "gateway_ip": "2001:db8::1", "dhcp": False}
    res["subnet"][("n", "v6")] = mapping.normalize("subnet", v6, "s")
    res["subnet"][("n", "v4")] = mapping.normalize("subnet", {"name": "v4", "cidr": "10.0.0.0/8"}, "s")
    res["flavor"][(None, "f")] = mapping.normalize("flavor", {"name": "f", "vcpus": 2, "memory_mb": 64,
                                                              "root_disk_gb": 3}, "f")
    image = {"name": "i", "src": "u", "disk_format": "raw"}
    res["image"][(None, "i")] = mapping.normalize("image", image, "i")
    xml = yangtree.to_xml(mapping.config_tree(res))
    assert xml is not None
    back = mapping.resources(yangtree.from_xml(xml))
    assert back == res


@pytest.mark.parametrize("body, tag", [
    ("<tenants><tenant><description>no key</description></tenant></tenants>", "missing-element"),
    ("<tenants><tenant><name>a</name><colour>red</colour></tenant></tenants>", "unknown-element"),
    ("<tenants><tenant><name>a</name></tenant><tenant><name>a</name></tenant></tenants>", "bad-element"),
    ("<opdata/>", "invalid-value"),
    ("<flavors><flavor><name>f</name><vcpus>1</vcpus><memory_mb>1</memory_mb>"
     "<root_disk_mb>1000</root_disk_mb></flavor></flavors>", "invalid-value"),
    ("<networks><network><name>n</name><subnet><name>s</name><address>10.0.0.1</address>"
     "<netmask>8</netmask></subnet></network></networks>", "invalid-value"),
])
def test_bad_configurations_are_refused_with_their_tag(body: str, tag: str) -> None:
    from lxml import etree

    el = etree.fromstring(f'<esc_datamodel xmlns="http://www.cisco.com/esc/esc">{body}</esc_datamodel>')
    with pytest.raises(RpcError) as e:
        mapping.resources(yangtree.from_xml(el))
    assert e.value.tag == tag, e.value.message


def test_framing_end_of_message_then_chunked() -> None:
    d = Deframer(max_size=100)
    d.push(b"<hello/>]]>]]>\n#3\nabc\n#2\nde\n##\n")
    assert d.pop() == b"<hello/>"
    d.chunked = True
    assert d.pop() == b"abcde" and d.pop() is None
    d.push(frame(b"xyz", chunked=True)[:5])
    assert d.pop() is None
    d.push(frame(b"xyz", chunked=True)[5:])
    assert d.pop() == b"xyz"
    for bad in (b"#3\nabc", b"\n#0\n", b"\n#x\n", b"\n#101\n"):
        d = Deframer(max_size=100)
        d.chunked = True
        d.push(bad)
        with pytest.raises(FramingError):
            d.pop()
    d = Deframer(max_size=10)
    d.push(b"x" * 20)
    with pytest.raises(FramingError):
        d.pop()


# --- edit-config's operations on the configuration (esc.netconf.edit), no database --------

NC = 'xmlns:nc="urn:ietf:params:xml:ns:netconf:base:1.0"'
ESC = "http://www.cisco.com/esc/esc"


def _tree(body: str) -> object:
    from lxml import etree

    return etree.fromstring(f'<esc_datamodel xmlns="{ESC}" {NC}>{body}</esc_datamodel>')


def _edited(current: str, edit_body: str, default: str = "merge") -> dict:
    from esc.netconf import edit

    return yangtree.from_xml(edit.apply(_tree(current), _tree(edit_body), default))  # type: ignore[arg-type]


GROUP = "<vm_group><name>g</name><image>i</image><flavor>f</flavor></vm_group>"
CURRENT = (f"<tenants><tenant><name>t</name><description>old</description><deployments><deployment>"
           f"<name>d</name>{GROUP}</deployment></deployments></tenant><tenant><name>u</name></tenant></tenants>"
           "<images><image><name>i</name><src>s</src></image></images>")


def test_merge_changes_a_leaf_and_adds_an_entry() -> None:
    got = _edited(CURRENT, "<tenants><tenant><name>t</name><description>new</description></tenant>"
                           "<tenant><name>v</name></tenant></tenants>")
    tenants = got["tenants"]["tenant"]
    assert [t["name"] for t in tenants] == ["t", "u", "v"] and tenants[0]["description"] == "new"
    assert tenants[0]["deployments"]["deployment"][0]["vm_group"][0]["image"] == "i"  # untouched


def test_replace_a_list_entry_and_delete_a_leaf() -> None:
    got = _edited(CURRENT, '<tenants><tenant nc:operation="replace"><name>t</name></tenant>'
                           '<tenant><name>u</name><description nc:operation="remove"/></tenant></tenants>')
    t = got["tenants"]["tenant"][0]
    assert t == {"name": "t"}  # its deployments and description gone with the replace
    got = _edited(CURRENT, '<tenants><tenant><name>t</name><description nc:operation="delete"/></tenant>'
                           "</tenants>")
    assert "description" not in got["tenants"]["tenant"][0]


def test_operation_none_is_only_a_path() -> None:
    got = _edited(CURRENT, '<tenants nc:operation="none"><tenant nc:operation="none"><name>w</name>'
                           "</tenant></tenants>")
    assert [t["name"] for t in got["tenants"]["tenant"]] == ["t", "u"]  # nothing made
    # none on a leaf that exists changes nothing; on one that does not, data-missing (RFC 6241 7.2)
    got = _edited(CURRENT, "<tenants><tenant><name>t</name><description>x</description></tenant></tenants>",
                  "none")
    assert got["tenants"]["tenant"][0]["description"] == "old"
    with pytest.raises(RpcError) as e:
        _edited(CURRENT, "<tenants><tenant><name>u</name><description>x</description></tenant></tenants>",
                "none")
    assert e.value.tag == "data-missing"


def test_default_operation_replace_is_the_whole_configuration() -> None:
    got = _edited(CURRENT, "<images><image><name>j</name><src>s</src></image></images>", "replace")
    assert got == {"images": {"image": [{"name": "j", "src": "s"}]}}


@pytest.mark.parametrize("body, tag", [
    ('<tenants><tenant nc:operation="create"><name>t</name></tenant></tenants>', "data-exists"),
    ('<tenants><tenant nc:operation="delete"><name>x</name></tenant></tenants>', "data-missing"),
    ('<tenants><tenant nc:operation="frob"><name>t</name></tenant></tenants>', "bad-attribute"),
    ("<tenants><tenant><description>no key</description></tenant></tenants>", "missing-element"),
    ("<opdata/>", "invalid-value"),
    ("<gadgets/>", "unknown-element"),
])
def test_edit_errors(body: str, tag: str) -> None:
    with pytest.raises(RpcError) as e:
        _edited(CURRENT, body)
    assert e.value.tag == tag, e.value.message


def test_a_notification_queue_that_overflows_says_so() -> None:
    import asyncio

    from esc.netconf.notifications import asyncio_listener

    async def run() -> int:
        queue: asyncio.Queue[object] = asyncio.Queue(maxsize=2)
        overflowed: list[bool] = []
        put = asyncio_listener(asyncio.get_running_loop(), queue, lambda: overflowed.append(True))  # type: ignore[arg-type]
        for i in range(3):
            put(i)  # type: ignore[arg-type]
        await asyncio.sleep(0.05)
        assert queue.qsize() == 2
        return len(overflowed)

    assert asyncio.run(run()) == 1
