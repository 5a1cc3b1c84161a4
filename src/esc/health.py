"""Status and health texts, from the agent's status object (pure functions)."""

from __future__ import annotations


def op_mode_line(op: dict) -> str:
    """``operation``, or ``maintenance (set on n1 at ...): no automatic failover``."""
    import datetime

    mode = op.get("mode", "operation")
    if mode != "maintenance":
        return mode
    at = op.get("set_at")
    when = datetime.datetime.fromtimestamp(at).isoformat(timespec="seconds") if at else "?"
    return f"maintenance (set on {op.get('by') or '?'} at {when}): no automatic failover"


def status_line(st: dict) -> str:
    role = st.get("role", "STOPPED")
    reason = st.get("reason", "")
    line = f"{role}" + (f" ({reason})" if reason and role not in ("ACTIVE", "STANDBY") else "")
    if (st.get("op_mode") or {}).get("mode") == "maintenance" and "maintenance" not in line:
        line += ", maintenance mode"
    return line


def peer_seen_text(p: dict) -> str:
    """When the peer last answered: per network when there are several (a cut network
    shows here while the peer is still alive on another)."""
    paths = p.get("paths") or []
    if len(paths) > 1:
        return "".join(f", via {x['address']} " + (f"{x['last_seen_s']}s" if x.get("reachable")
                                                   else "unreachable") for x in paths)
    return f", last answer {p['last_seen_s']}s ago" if p.get("last_seen_s") is not None else ""


def bgp_session_text(b: dict) -> str:
    """The BGP session in one phrase; when it is not up, what to check."""
    peer = f"{b['neighbor']} (AS {b['remote_as']})"
    if b.get("established"):
        return f"session to {peer} established"
    since = f" for {b['session_for_s']:.0f}s" if b.get("session_for_s") is not None else ""
    state = b.get("session") or "down"
    why = f"; last: {b['last_reason']}" if b.get("last_reason") else ""
    check = "the MD5 key (--md5), " if b.get("md5") else "MD5 (set on the router but not here?), "
    return (f"session to {peer} not established{since} ({state}{why}); "
            f"check {check}AS numbers and addresses on both ends")


def bgp_route_text(b: dict) -> str:
    if b.get("announced"):
        return f"{b['prefix']} announced"
    if b.get("desired") == "announce":
        return f"{b['prefix']} to be announced (waiting for the session)"
    return f"{b['prefix']} withdrawn"


def status_details(st: dict) -> str:
    lines = [f"node:        {st.get('node', '?')}", f"reason:      {st.get('reason', '')}",
             f"op_mode:     {op_mode_line(st.get('op_mode') or {})}",
             f"keepalived:  {st.get('vrrp', '?')}"]
    if "vip" in st:
        v = st["vip"]
        lines.append(f"vip:         {v['address']} on {v['interface']} "
                     f"({'present here' if v['present'] else 'not here'})")
    if "bgp" in st:
        b = st["bgp"]
        lines.append(f"anycast:     {bgp_route_text(b)}, from {b['local_ip']} AS {b['local_as']}"
                     f"{', MD5' if b.get('md5') else ''}, hold {b.get('hold_time')}s"
                     f"{'' if b.get('loopback') else ' (NOT on lo)'}")
        lines.append(f"bgp:         {bgp_session_text(b)}")
    if "peer" in st:
        p = st["peer"]
        why = f" ({p['error']})" if not p.get("role") and p.get("error") else ""
        lines.append(f"peer:        {p['address']} {p.get('role') or 'unreachable'}{peer_seen_text(p)}{why}")
    if "witness" in st:
        w = st["witness"]
        held = "lease held here" if w.get("held") else \
            f"lease held by {w['holder']}" if w.get("holder") else "lease not held"
        via = f" via {w['endpoint']}" if w.get("endpoint") else ""  # etcd: the member answering
        why = f" ({w['error']})" if w.get("error") else ""
        lines.append(f"witness:     {w['address']}: {held}{via}{why}")
        if w.get("warning"):
            lines.append(f"             {w['warning']}")
        if w.get("outdated"):
            lines.append(f"             holds {w['outdated']} outdated: it gets no lease (it cannot "
                         "promote) until it is a complete standby again")
    db = st.get("db", {})
    if db:
        if db.get("state") == "primary":
            rep = ("synchronous, standby complete" if db.get("peer_complete") else
                   "synchronous, standby catching up" if db.get("peer_streaming") and db.get("sync")
                   else "alone (commits do not wait for a standby)")
        elif db.get("state") == "standby":
            rep = "streaming from the active" if db.get("streaming") else "not streaming"
        else:
            rep = "-"
        lsn = int(db.get("lsn") or 0)
        lines.append(f"database:    {db.get('state')}, timeline {db.get('timeline')}, "
                     f"lsn {lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}")
        lines.append(f"replication: {rep}")
        kept = db.get("wal_kept_for_peer")
        if kept:
            lines.append(f"WAL kept:    {kept['bytes'] / 2**20:.1f} MiB for the peer (slot "
                         f"{kept['slot']}; given up past {kept['limit']}: the peer is then cloned)")
    if "replication" in st:
        lines.append(f"lag:         {st['replication']['lag_bytes']} bytes")
    disk = st.get("disk") or {}
    if "free_bytes" in disk:
        free, total = disk["free_bytes"] // 2**20, disk["total_bytes"] // 2**20
        lines.append(f"disk:        {free} MiB free of {total} MiB under {disk['path']}"
                     + (" (FULL)" if disk.get("full") else ""))
    for aside in disk.get("aside") or []:
        size = f"{aside['bytes'] / 2**20:.1f} MiB" if aside.get("bytes", -1) >= 0 else "size unknown"
        lines.append(f"set aside:   {aside['path']} ({size}, {aside['made_at']}): old data a "
                     "clone replaced; remove it when not needed")
    for name, svc in st.get("services", {}).items():
        pid = f" (pid {svc['pid']})" if svc.get("pid") else ""
        detail = f" [{svc['detail']}]" if svc.get("detail") else ""
        lines.append(f"service:     {name}{pid} {svc['state']}{detail}")
    if "northbound" in st:
        nb = st["northbound"]
        origin = "operator's" if nb.get("tls_supplied") else "generated"
        cert = (f"certificate SHA-256 {nb['tls_sha256']} ({origin})" if nb.get("tls_sha256")
                else "no certificate: HTTPS off")
        lines.append(f"northbound:  http {nb['http_port']}, https {nb['https_port']}, {cert}")
    if "etsi" in st:
        e = st["etsi"]
        if e.get("enabled"):
            count = f", {e['instances']} VNF instance(s)" if e.get("instances") is not None else ""
            lines.append(f"etsi:        server address {e['server_address']}, http {e['http_port']}, "
                         f"https {e['https_port']}{count}")
        else:
            lines.append("etsi:        disabled (escadm etsi set --enable)")
    if (st.get("confd") or {}).get("enabled"):
        c = st["confd"]
        lines.append(f"confd:       NETCONF over SSH port {c['port']}, user {c['user']}, "
                     f"host key {c['host_key']}")
    for t in st.get("transitions", [])[-5:]:
        lines.append(f"transition:  {t['from']} -> {t['to']}: {t['reason']}")
    return "\n".join(lines)


# The original's health.sh order (its active node's). Lines for snmp, portal and confd
# appear where they are configured; bgp only where BGP is configured.
ORDER = ("vimmanager", "monitor", "mona", "drbd", "snmp", "etsi", "pgsql", "keepalived", "bgp",
         "portal", "confd", "filesystem", "escmanager")


def report(st: dict) -> tuple[str, bool]:
    """Lines in the shape of the original's health.sh, and whether the node is healthy:
    every service that exists here, in its order and wording ("is running", "is
    stopped", "is disabled at startup"); a serving node must run them all and a standby
    none but its replica, keepalived and bgp."""
    role = st.get("role", "STOPPED")
    svcs = st.get("services", {})
    db = st.get("db", {})

    def pid(name: str) -> str:
        return str(svcs.get(name, {}).get("pid") or 0)

    def running(name: str) -> bool:
        return svcs.get(name, {}).get("state") == "running"

    title = {"ACTIVE": "ESC HA (ACTIVE)", "STANDBY": "ESC HA (Standby)",
             "STANDALONE": "ESC (STANDALONE)"}.get(role, f"ESC HA ({role})")
    lines = [f"===== {title} with DRBD =====" if st.get("ha") else f"===== {title} ====="]
    checks: list[bool] = []
    serving = role in ("ACTIVE", "STANDALONE")

    def line(name: str, ok: bool, want: bool = True, pgid: str | None = None) -> None:
        lines.append(f"{name} (pgid {pgid if pgid is not None else pid(name)}) is running" if ok
                     else f"{name} is stopped")
        checks.append(ok == want)

    def service(name: str) -> None:
        """One of the serving node's services (the controller's parts, the ETSI service)."""
        svc = svcs.get(name)
        if svc is None:
            return
        # the parked services run on both nodes: up is serving
        parked_kind = name in ("etsi", "confd")
        up = svc.get("state") == "running" and (not parked_kind or svc.get("detail") == "serving")
        if svc.get("state") == "disabled" or (name == "etsi" and not serving and not up):
            # as the original: a standby's ETSI service (or one turned off) is "disabled at startup"
            lines.append(f"{name} is disabled at startup")
            return
        if name == "monitor" and (st.get("op_mode") or {}).get("mode") == "maintenance":
            # maintenance pauses the monitor: stopped is expected, running no fault either
            lines.append(f"monitor (pgid {pid(name)}) is running" if up else "monitor is stopped")
            return
        # traps are sent by both nodes (each its own view); the others serve on the active
        line(name, up, serving or name == "snmp")

    def drbd() -> None:
        if not st.get("ha"):
            return
        lines.append(f"drbd (pgid {pid('pgsql')}) is active" if db.get("state") == "primary" else
                     f"drbd (pgid {pid('pgsql')}) is standby" if db.get("state") == "standby"
                     else "drbd is stopped")
        checks.append(db.get("state") == ("primary" if serving else "standby")
                      and (db.get("streaming") or serving))

    def bgp() -> None:
        if "bgp" not in st:
            return
        b = st["bgp"]
        up = running("bgp") and bool(b.get("established"))
        if up:
            lines.append(f"bgp (pgid {pid('bgp')}) is running, {bgp_session_text(b)}, {bgp_route_text(b)}")
        elif running("bgp"):
            lines.append(f"bgp (pgid {pid('bgp')}) is running, {bgp_session_text(b)}")
        else:
            lines.append("bgp is stopped")
        # The writer must be reachable (route out); a standby must not attract traffic.
        checks.append(up and bool(b.get("announced")) == serving and bool(b.get("loopback")))

    for name in ORDER:
        if name in ("vimmanager", "monitor", "mona", "etsi", "snmp", "portal", "confd"):
            service(name)
        elif name == "drbd":
            drbd()
        elif name == "pgsql":
            line("pgsql", serving and db.get("state") == "primary", serving)
        elif name == "keepalived":
            if st.get("ha"):
                line("keepalived", running("keepalived"))
        elif name == "bgp":
            bgp()
        elif name == "filesystem":
            line("filesystem", svcs.get("filesystem", {}).get("state") == "running", pgid="0")
        elif name == "escmanager":
            esc_up = running("escmanager") and svcs.get("escmanager", {}).get("detail") == "serving"
            line("escmanager", esc_up, serving)
    disk = st.get("disk") or {}
    if disk.get("full"):
        lines.append(f"disk {disk['path']} is full ({disk['free_bytes'] // 2**20} MiB free)")
        checks.append(False)
    ok = role in ("ACTIVE", "STANDBY", "STANDALONE") and all(checks)
    if (st.get("op_mode") or {}).get("mode") == "maintenance":
        lines.append("operation mode is maintenance (no automatic failover)")
    lines += ["=====", "ESC HEALTH PASSED" if ok else "ESC HEALTH FAILED"]
    return "\n".join(lines), ok
