"""The NETCONF protocol (RFC 6241) above the transport: a session's hello, its RPCs and
their replies, its lock and its subscription (RFC 5277). Knows nothing of SSH
(server.py hands it whole messages and sends what it returns).

Operations: get, get-config, edit-config (merge, replace, create, delete, remove, none;
test-only), validate, lock, unlock, close-session, kill-session, create-subscription,
get-schema (RFC 6022). The running datastore is the only one. Every failure is an
rpc-error with RFC 6241 appendix A's tag, and an edit-config is written whole or not
at all."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from lxml import etree
from psycopg_pool import ConnectionPool, PoolTimeout

from esc.netconf import datastore, edit, mapping, subtree, xpath, yangtree
from esc.netconf.errors import RpcError, bad_element
from esc.netconf.names import (
    CAPABILITIES,
    ESC_MODULE,
    ESC_NS,
    ESC_REVISION,
    MON_NS,
    NC_NOTIF_NS,
    NC_NS,
    NOTIF_NS,
    esc_yang,
    qn,
)
from esc.netconf.notifications import EventFeed, Notification, asyncio_listener, history, oldest, signal
from esc.services.db import CommitNotConfirmed, one_line
from esc.services.serving import OperationMode, ServingLease

log = logging.getLogger("esc.netconf")

PARSER = etree.XMLParser(resolve_entities=False, no_network=True, remove_comments=True,
                         remove_pis=True, load_dtd=False, huge_tree=False)
NOT_SERVING = ("this node is not serving: its agent has not confirmed it is the active "
               "(reconnect through the VIP)")
MAINTENANCE = ("the pair is in maintenance mode: new northbound requests are refused until "
               "`escadm op_mode set --mode=operation`")


def parse(data: bytes) -> etree._Element:
    """A message as XML, with no DTD (no entity expansion, nothing fetched)."""
    try:
        root = etree.fromstring(data, PARSER)
    except etree.XMLSyntaxError as e:
        raise RpcError("malformed-message", f"not well-formed XML: {e}", type="rpc") from None
    if root.getroottree().docinfo.doctype:
        raise RpcError("malformed-message", "a DOCTYPE is not allowed", type="rpc")
    return root


def serialize(el: etree._Element) -> bytes:
    return etree.tostring(el, xml_declaration=True, encoding="UTF-8")


def hello(session_id: int) -> bytes:
    h = etree.Element(qn("hello"), nsmap={None: NC_NS})
    caps = etree.SubElement(h, qn("capabilities"))
    for c in CAPABILITIES:
        etree.SubElement(caps, qn("capability")).text = c
    etree.SubElement(h, qn("session-id")).text = str(session_id)
    return serialize(h)


def client_capabilities(data: bytes) -> list[str]:
    """The capabilities of a client's <hello>; RpcError if it is not one (RFC 6241 8.1:
    a client's hello has no session-id)."""
    root = parse(data)
    if root.tag != qn("hello"):
        raise RpcError("malformed-message", "the first message must be a <hello>", type="rpc")
    if root.find(qn("session-id")) is not None:
        raise RpcError("malformed-message", "a client's <hello> has no session-id", type="rpc")
    return [(c.text or "").strip() for c in root.iterfind(f"{qn('capabilities')}/{qn('capability')}")]


@dataclass
class Server:
    """What the sessions share: the database, the serving lease and mode, the lock of
    the running datastore, the sessions (for kill-session) and the event feed."""

    pool: ConnectionPool
    lease: ServingLease
    mode: OperationMode
    feed: EventFeed | None = None
    sessions: dict[int, Session] = field(default_factory=dict)
    lock_owner: int | None = None
    next_id: int = 1

    def open(self, user: str, peer: str, send: Callable[[bytes], Awaitable[None]],
             close: Callable[[], Awaitable[None]]) -> Session:
        sid, self.next_id = self.next_id, self.next_id + 1
        s = Session(self, sid, user, peer, send, close)
        self.sessions[sid] = s
        return s

    def ended(self, s: Session) -> None:
        """A session is gone (closed, killed, or its connection lost): its lock and its
        subscription with it (RFC 6241 7.5)."""
        self.sessions.pop(s.id, None)
        if self.lock_owner == s.id:
            self.lock_owner = None
        s.stop_subscription()


class Session:
    def __init__(self, server: Server, sid: int, user: str, peer: str,
                 send: Callable[[bytes], Awaitable[None]], close: Callable[[], Awaitable[None]]) -> None:
        self.server, self.id, self.user, self.peer = server, sid, user, peer
        self.send, self.close = send, close
        self.closing = False  # after close-session's reply, the transport ends
        self.subscription: asyncio.Task[None] | None = None

    # ---------------------------------------------------------------- messages
    async def handle(self, data: bytes) -> bytes:
        """The reply to one message."""
        attrs: dict[str, str] = {}
        try:
            root = parse(data)
            attrs = dict(root.attrib)
            if root.tag != qn("rpc"):
                raise bad_element("unknown-element", etree.QName(root).localname,
                                  "a message must be an <rpc>", type="rpc")
            if "message-id" not in attrs:
                raise RpcError("missing-attribute", "an <rpc> needs a message-id", type="rpc",
                               info={"bad-attribute": "message-id", "bad-element": "rpc"})
            ops = [c for c in root if isinstance(c.tag, str)]
            if len(ops) != 1:
                raise RpcError("malformed-message", "an <rpc> holds one operation", type="rpc")
            body = await self.operation(ops[0])
            if not self.server.lease.valid():  # answered by a node that is no longer the active
                raise RpcError("resource-denied", NOT_SERVING)
        except RpcError as e:
            body = [e.element()]
        except Exception as e:  # a fault of ours: say so rather than drop the session
            log.exception("session %d: internal error", self.id)
            body = [RpcError("operation-failed", f"internal error: {type(e).__name__}").element()]
        reply = etree.Element(qn("rpc-reply"), nsmap={None: NC_NS})
        for k, v in attrs.items():
            reply.set(k, v)  # RFC 6241 4.2: every attribute of the <rpc>, message-id first
        for el in body:
            reply.append(el)
        return serialize(reply)

    async def operation(self, op: etree._Element) -> list[etree._Element]:
        q = etree.QName(op)
        name = q.localname
        handler = {
            (NC_NS, "get"): self.get, (NC_NS, "get-config"): self.get_config,
            (NC_NS, "edit-config"): self.edit_config, (NC_NS, "validate"): self.validate,
            (NC_NS, "lock"): self.lock, (NC_NS, "unlock"): self.unlock,
            (NC_NS, "close-session"): self.close_session, (NC_NS, "kill-session"): self.kill_session,
            (NOTIF_NS, "create-subscription"): self.create_subscription,
            (MON_NS, "get-schema"): self.get_schema,
        }.get((q.namespace or "", name))
        if handler is None:
            if q.namespace == NC_NS and name in ("copy-config", "delete-config", "commit",
                                                  "discard-changes", "cancel-commit"):
                raise RpcError("operation-not-supported",
                               f"{name}: only the running datastore is served, written by edit-config",
                               type="protocol")
            raise bad_element("operation-not-supported", name, f"no operation {name} in {q.namespace}",
                              type="protocol")
        if name not in ("close-session", "kill-session"):
            if not self.server.lease.valid():
                raise RpcError("resource-denied", NOT_SERVING)
            if self.server.mode.maintenance:
                raise RpcError("resource-denied", MAINTENANCE)
        return await handler(op)

    async def _db(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(conn, *args)`` on a pooled connection, off the event loop."""
        def run() -> Any:
            with self.server.pool.connection() as conn:
                return fn(conn, *args)
        try:
            return await asyncio.to_thread(run)
        except (psycopg.Error, PoolTimeout, CommitNotConfirmed) as e:
            # read-only (a node stepping down), connection lost, no connection in time, a
            # commit the standby did not confirm: nothing was acknowledged, the client retries
            log.warning("session %d: database: %s", self.id, one_line(e))
            raise RpcError("operation-failed", "database unavailable: nothing was written; retry") from None

    # ---------------------------------------------------------------- reads
    async def get_config(self, op: etree._Element) -> list[etree._Element]:
        _datastore(op, "source")
        config = await self._db(_config_xml)
        return [_data([config], _child(op, "filter"))]

    async def get(self, op: etree._Element) -> list[etree._Element]:
        config, state, since = await self._db(_everything)
        yangtree.to_xml(mapping.opdata_tree(state), yangtree.OPDATA, config)
        return [_data([config, _monitoring(), _streams(since)], _child(op, "filter"))]

    async def get_schema(self, op: etree._Element) -> list[etree._Element]:
        ident = _text(op, "identifier", MON_NS)
        version = _text(op, "version", MON_NS)
        fmt = _text(op, "format", MON_NS)
        if ident is None:
            raise bad_element("missing-element", "identifier", "get-schema needs an identifier")
        if ident != ESC_MODULE or (version not in (None, "", ESC_REVISION)):
            raise RpcError("invalid-value", f"no schema {ident}" + (f"@{version}" if version else ""),
                           info={"bad-element": "identifier"})
        if fmt not in (None, "", "yang") and not fmt.endswith(":yang"):
            raise RpcError("invalid-value", f"schema format {fmt}: only yang", info={"bad-element": "format"})
        data = etree.Element(f"{{{MON_NS}}}data", nsmap={None: MON_NS})
        data.text = esc_yang()
        return [data]

    # ---------------------------------------------------------------- writes
    async def edit_config(self, op: etree._Element) -> list[etree._Element]:
        _datastore(op, "target")
        if self.server.lock_owner not in (None, self.id):
            raise RpcError("in-use", f"the running datastore is locked by session {self.server.lock_owner}",
                           type="protocol", info={"session-id": str(self.server.lock_owner)})
        default_op = _text(op, "default-operation") or "merge"
        test = _text(op, "test-option") or "test-then-set"
        if test not in ("test-then-set", "set", "test-only"):
            raise bad_element("invalid-value", "test-option", f"test-option {test!r}")
        error_option = _text(op, "error-option") or "stop-on-error"
        if error_option not in ("stop-on-error", "rollback-on-error", "continue-on-error"):
            raise bad_element("invalid-value", "error-option", f"error-option {error_option!r}")
        # every error-option gets all or nothing: an edit is one database transaction
        config = _child(op, "config")
        if config is None:
            if _child(op, "url") is not None:
                raise RpcError("operation-not-supported", "edit-config from a url (no :url capability)",
                               type="protocol")
            raise bad_element("missing-element", "config", "edit-config needs a <config>")
        edits = _esc_children(config)
        txs = await self._db(_edit, edits, default_op, test == "test-only")
        if txs:
            log.info("session %d (%s): edit-config accepted as transaction(s) %s", self.id, self.user,
                     ", ".join(map(str, txs)))
        return [etree.Element(qn("ok"))]

    async def validate(self, op: etree._Element) -> list[etree._Element]:
        source = _child(op, "source")
        if source is None:
            raise bad_element("missing-element", "source", "validate needs a <source>")
        config = _child(source, "config")
        if config is None:
            _datastore(op, "source")
            return [etree.Element(qn("ok"))]  # the running datastore is kept valid
        edits = _esc_children(config)
        tree = yangtree.from_xml(edits[0]) if edits else {}
        mapping_check(mapping.resources(tree))
        return [etree.Element(qn("ok"))]

    # ---------------------------------------------------------------- locks
    async def lock(self, op: etree._Element) -> list[etree._Element]:
        _datastore(op, "target")
        owner = self.server.lock_owner
        if owner is not None:
            raise RpcError("lock-denied", f"the running datastore is locked by session {owner}",
                           type="protocol", info={"session-id": str(owner)})
        self.server.lock_owner = self.id
        return [etree.Element(qn("ok"))]

    async def unlock(self, op: etree._Element) -> list[etree._Element]:
        _datastore(op, "target")
        if self.server.lock_owner != self.id:
            raise RpcError("operation-failed", "this session does not hold the lock of the running datastore",
                           type="protocol", info={"session-id": str(self.server.lock_owner or 0)})
        self.server.lock_owner = None
        return [etree.Element(qn("ok"))]

    # ---------------------------------------------------------------- sessions
    async def close_session(self, op: etree._Element) -> list[etree._Element]:
        self.closing = True
        return [etree.Element(qn("ok"))]

    async def kill_session(self, op: etree._Element) -> list[etree._Element]:
        text = _text(op, "session-id")
        if text is None:
            raise bad_element("missing-element", "session-id", "kill-session needs a session-id")
        try:
            sid = int(text)
        except ValueError:
            raise bad_element("invalid-value", "session-id", f"session-id {text!r}") from None
        if sid == self.id:
            raise bad_element("invalid-value", "session-id", "a session cannot kill itself: close-session",
                              type="protocol")
        other = self.server.sessions.get(sid)
        if other is None:
            raise bad_element("invalid-value", "session-id", f"no session {sid}", type="protocol")
        log.info("session %d (%s) killed session %d (%s)", self.id, self.user, sid, other.user)
        self.server.ended(other)
        await other.close()
        return [etree.Element(qn("ok"))]

    # ---------------------------------------------------------------- notifications
    async def create_subscription(self, op: etree._Element) -> list[etree._Element]:
        if self.subscription is not None and not self.subscription.done():
            raise RpcError("operation-failed", "this session has a subscription already", type="protocol")
        stream = _text(op, "stream", NOTIF_NS) or "NETCONF"
        if stream != "NETCONF":
            raise bad_element("invalid-value", "stream", f"no stream {stream}: the stream is NETCONF")
        start, stop = _time(op, "startTime"), _time(op, "stopTime")
        now = dt.datetime.now(dt.UTC)
        if stop is not None and start is None:
            raise bad_element("missing-element", "startTime", "stopTime without startTime")
        if start is not None and start > now:
            raise bad_element("bad-element", "startTime", "startTime is in the future")
        if start is not None and stop is not None and stop < start:
            raise bad_element("bad-element", "stopTime", "stopTime is before startTime")
        filt = _child(op, "filter", NOTIF_NS)
        if filt is not None and filt.get("type", "subtree") not in ("subtree", "xpath"):
            raise RpcError("bad-attribute", f"filter type {filt.get('type')!r}: subtree or xpath",
                           type="protocol", info={"bad-attribute": "type", "bad-element": "filter"})
        feed = self.server.feed
        if feed is None:
            raise RpcError("operation-not-supported", "no notifications here", type="protocol")
        queue: asyncio.Queue[Notification] = asyncio.Queue(maxsize=self.QUEUE_MAX)
        listener = asyncio_listener(asyncio.get_running_loop(), queue, self._overflow)
        feed.add(listener)  # before the replay is read: nothing between them is lost
        self.subscription = asyncio.create_task(self._deliver(queue, listener, start, stop, filt))
        return [etree.Element(qn("ok"))]

    QUEUE_MAX = 10_000  # events waiting for a client that does not read

    def _overflow(self) -> None:
        """The client reads its notifications slower than they come: its subscription
        ends (it subscribes again with a replay from its last eventTime) rather than the
        server's memory."""
        if self.subscription is None or self.subscription.cancelling():
            return  # said once
        log.warning("session %d (%s): over %d notifications unread: subscription ended",
                    self.id, self.user, self.QUEUE_MAX)
        self.stop_subscription()

    def stop_subscription(self) -> None:
        if self.subscription is not None:
            self.subscription.cancel()

    async def _deliver(self, queue: asyncio.Queue[Notification], listener: Callable[[Notification], None],
                       start: dt.datetime | None, stop: dt.datetime | None,
                       filt: etree._Element | None) -> None:
        assert self.server.feed is not None
        await asyncio.sleep(0)  # the reply to create-subscription goes first
        sent: set[tuple[Any, ...]] = set()
        try:
            if start is not None:
                for n in await self._db(history, start, stop):
                    sent.add(n.key)
                    await self._notify(n, filt)
                await self.send(serialize(signal("replayComplete")))
            while True:
                timeout = None if stop is None else (stop - dt.datetime.now(dt.UTC)).total_seconds()
                if timeout is not None and timeout <= 0:
                    break
                try:
                    n = await asyncio.wait_for(queue.get(), timeout)
                except TimeoutError:
                    break
                if n.key in sent:
                    continue
                await self._notify(n, filt)
            await self.send(serialize(signal("notificationComplete")))
        except asyncio.CancelledError:
            pass
        except (RpcError, ConnectionError, OSError) as e:
            log.warning("session %d: subscription ended: %s", self.id, e)
        finally:
            self.server.feed.remove(listener)

    async def _notify(self, n: Notification, filt: etree._Element | None) -> None:
        if filt is not None:
            if filt.get("type", "subtree") == "xpath":
                picked = xpath.apply([n.content], filt.get("select", ""), dict(filt.nsmap))
            else:
                picked = subtree.apply([n.content], filt)
            if not picked:
                return
        await self.send(serialize(n.xml()))


# --- helpers ----------------------------------------------------------------------------------


def _child(op: etree._Element, name: str, ns: str = NC_NS) -> etree._Element | None:
    """A parameter of an operation; unqualified too (ncclient sends <config> so)."""
    el = op.find(f"{{{ns}}}{name}")
    return el if el is not None else op.find(name)


def _text(op: etree._Element, name: str, ns: str = NC_NS) -> str | None:
    el = _child(op, name, ns)
    if el is None:
        return None
    if len(el):
        return etree.QName(el[0]).localname  # e.g. <source><running/></source>
    return (el.text or "").strip()


def _datastore(op: etree._Element, where: str) -> None:
    el = _child(op, where)
    if el is None:
        raise bad_element("missing-element", where, f"{etree.QName(op).localname} needs a <{where}>")
    names = [etree.QName(c).localname for c in el if isinstance(c.tag, str)]
    if names != ["running"]:
        raise bad_element("invalid-value", where,
                          f"{where} {', '.join(names) or 'empty'}: the running datastore is the only one",
                          type="protocol")


def _time(op: etree._Element, name: str) -> dt.datetime | None:
    text = _text(op, name, NOTIF_NS)
    if text is None:
        return None
    try:
        t = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise bad_element("bad-element", name, f"{name} {text!r} is not a date and time") from None
    return t if t.tzinfo else t.replace(tzinfo=dt.UTC)


def _esc_children(config: etree._Element) -> list[etree._Element]:
    out = []
    for c in config:
        if not isinstance(c.tag, str):
            continue
        q = etree.QName(c)
        if q.namespace != ESC_NS:
            raise RpcError("unknown-namespace", f"no data model in namespace {q.namespace}",
                           type="application", info={"bad-element": q.localname,
                                                     "bad-namespace": q.namespace or ""})
        if q.localname != yangtree.SCHEMA.name:
            raise bad_element("unknown-element", q.localname, f"no top-level element {q.localname}",
                              type="application")
        out.append(c)
    return out


def _data(elements: list[etree._Element], filt: etree._Element | None) -> etree._Element:
    data = etree.Element(qn("data"), nsmap={None: NC_NS})
    if filt is not None:
        kind = filt.get("type", "subtree")
        if kind == "xpath":
            elements = xpath.apply(elements, filt.get("select", ""), dict(filt.nsmap))
        elif kind == "subtree":
            elements = subtree.apply(elements, filt)
        else:
            raise RpcError("bad-attribute", f"filter type {kind!r}: subtree or xpath", type="protocol",
                           info={"bad-attribute": "type", "bad-element": "filter"})
    for el in elements:
        data.append(el)
    return data


def _config_xml(conn: Any) -> etree._Element:
    el = yangtree.to_xml(mapping.config_tree(datastore.read(conn)))
    assert el is not None
    return el


def _everything(conn: Any) -> tuple[etree._Element, list[dict[str, Any]], dt.datetime | None]:
    return _config_xml(conn), datastore.read_state(conn), oldest(conn)


def _monitoring() -> etree._Element:
    """netconf-state/schemas (RFC 6022): what get-schema serves."""
    st = etree.Element(f"{{{MON_NS}}}netconf-state", nsmap={None: MON_NS})
    schema = etree.SubElement(etree.SubElement(st, f"{{{MON_NS}}}schemas"), f"{{{MON_NS}}}schema")
    for k, v in (("identifier", ESC_MODULE), ("version", ESC_REVISION), ("format", "yang"),
                 ("namespace", ESC_NS), ("location", "NETCONF")):
        etree.SubElement(schema, f"{{{MON_NS}}}{k}").text = v
    return st


def _streams(since: dt.datetime | None) -> etree._Element:
    """netconf/streams (RFC 5277 3.2.5.1): the one stream, with its replay."""
    top = etree.Element(f"{{{NC_NOTIF_NS}}}netconf", nsmap={None: NC_NOTIF_NS})
    stream = etree.SubElement(etree.SubElement(top, f"{{{NC_NOTIF_NS}}}streams"), f"{{{NC_NOTIF_NS}}}stream")
    for k, v in (("name", "NETCONF"), ("description", "deployment, VM and pair events"),
                 ("replaySupport", "true"),
                 ("replayLogCreationTime", (since or dt.datetime.now(dt.UTC)).isoformat())):
        etree.SubElement(stream, f"{{{NC_NOTIF_NS}}}{k}").text = v
    return top


def mapping_check(res: mapping.Resources) -> None:
    """What a complete configuration must hold besides its shape: every image, flavor
    and network a deployment names."""
    have = {k: {name for (_, name) in res[k]} for k in ("image", "flavor", "network")}
    for (tenant, name), d in res["deployment"].items():
        for g in d.get("vm_groups", []):
            refs = [("image", g["image"]), ("flavor", g["flavor"])]
            refs += [("network", i["network"]) for i in g.get("interfaces", [])]
            missing = [f"{k} {n}" for k, n in refs if n not in have[k]]
            if missing:
                path = datastore.instance_path("deployment", tenant, name)
                raise RpcError("invalid-value", f"{path}: refers to unknown {', '.join(missing)}", path=path)


def _edit(conn: Any, edits: list[etree._Element], default_op: str, test_only: bool) -> list[int]:
    """Read, edit, check and write in one database transaction; the transactions' ids."""
    old = datastore.read(conn)
    tree = yangtree.to_xml(mapping.config_tree(old))
    assert tree is not None
    if not edits and default_op == "replace":
        edits = [etree.Element(f"{{{ESC_NS}}}{yangtree.SCHEMA.name}")]
    for e in edits:
        tree = edit.apply(tree, e, default_op)
    new = mapping.resources(yangtree.from_xml(tree))
    mapping_check(new)
    requests = datastore.changes(old, new)
    if test_only or not requests:
        conn.rollback()
        return []
    return datastore.submit(conn, requests)
