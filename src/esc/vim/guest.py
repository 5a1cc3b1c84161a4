"""What a local "VM" runs: a holder, and a guest that answers ping (and HTTP).

``--hold``: the VM's "hardware". Started by ``esc.vim.local`` in a new network
namespace (``unshare --net``), it keeps that namespace alive and does nothing
else; ``--label <prefix>vm-<name>`` in its command line is how a lab's VMs are
found again (``cleanup_all``). It switches off the kernel's own echo replies
(``net.ipv4.icmp_echo_ignore_all=1``).

Without ``--hold``: the guest, started in the holder's namespace. Echo replies
come from this process through a raw ICMP socket, so a VM whose guest died
stops answering ping although its namespace, interface and address remain:
what a monitor must detect. The "web" image also answers HTTP 200 on port 80.
At boot it announces its address by gratuitous ARP, as a booting VM does: a
redeployed VM has a new MAC address that neighbours' ARP caches must learn
(the kernel's own ``arp_notify`` announcement is sent before the veth's queue
is active, and lost).

Both write ``{"pid": ..}`` atomically to ``--ready`` once ready. Standard
library only; run as a script (``python -I guest.py``): imports nothing of ours.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import struct
import sys
import threading
import time
from typing import Any

ECHO_REQUEST, ECHO_REPLY = 8, 0


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def echo_reply(packet: bytes, own: set[str]) -> tuple[bytes, str] | None:
    """The reply to an IPv4 packet carrying an ICMP echo request to one of our
    addresses, and where to send it; None for anything else."""
    if len(packet) < 20 or packet[0] >> 4 != 4:
        return None
    ihl = (packet[0] & 0x0F) * 4
    icmp = packet[ihl:]
    if len(icmp) < 8 or icmp[0] != ECHO_REQUEST or icmp[1] != 0:
        return None
    src, dst = socket.inet_ntoa(packet[12:16]), socket.inet_ntoa(packet[16:20])
    if dst not in own and not dst.startswith("127."):
        return None  # broadcast, multicast: a VM does not answer those
    body = bytes([ECHO_REPLY, 0, 0, 0]) + icmp[4:]
    csum = checksum(body)
    return body[:2] + struct.pack("!H", csum) + body[4:], src


def garp_frame(mac: bytes, address: str) -> bytes:
    """A broadcast gratuitous ARP request: who-has ``address`` tell ``address``."""
    ip = socket.inet_aton(address)
    arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, mac, ip, b"\0" * 6, ip)
    return b"\xff" * 6 + mac + b"\x08\x06" + arp


def announce(iface: str, address: str, times: int = 3, gap: float = 0.5) -> None:
    try:
        with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as s:
            s.bind((iface, 0))
            frame = garp_frame(s.getsockname()[4], address)
            for i in range(times):
                if i:
                    time.sleep(gap)
                s.send(frame)
    except OSError as e:
        print(f"gratuitous ARP on {iface} failed: {e}", flush=True)


def serve_icmp(sock: socket.socket, own: set[str]) -> None:
    while True:
        packet, _ = sock.recvfrom(65535)
        reply = echo_reply(packet, own)
        if reply is not None:
            try:
                sock.sendto(reply[0], (reply[1], 0))
            except OSError:
                pass  # no route back: the asker will time out


def http_server(name: str, port: int) -> Any:
    import http.server  # only the web image pays for it

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            body = json.dumps({"vm": name, "status": "ok"}).encode() + b"\n"
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_HEAD = do_GET  # noqa: N815

        def log_message(self, *args: object) -> None:
            pass

    http.server.HTTPServer.allow_reuse_address = True
    return http.server.HTTPServer(("0.0.0.0", port), Handler)


def write_ready(path: str) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump({"pid": os.getpid(), "started_at": time.time()}, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def set_sysctl(key: str, value: str) -> None:
    """Of this process's network namespace (``/proc/sys/net`` follows the opener's)."""
    with open(f"/proc/sys/{key.replace('.', '/')}", "w") as f:
        f.write(value + "\n")


def hold(args: argparse.Namespace) -> int:
    set_sysctl("net.ipv4.icmp_echo_ignore_all", "1")
    write_ready(args.ready)
    while True:
        signal.pause()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--vm", required=True, help="the VM's name")
    p.add_argument("--hold", action="store_true", help="be the VM's namespace holder")
    p.add_argument("--label", help="holder: <prefix>vm-<name>, how cleanup finds it")
    p.add_argument("--image", choices=("cirros", "web"))
    p.add_argument("--address", help="the VM's IPv4 address, no prefix")
    p.add_argument("--http-port", type=int, default=80)
    p.add_argument("--iface", default="eth0", help="where to announce the address")
    p.add_argument("--ready", required=True)
    args = p.parse_args(argv)
    if args.hold:
        return hold(args)
    if not args.image or not args.address:
        p.error("a guest needs --image and --address")

    set_sysctl("net.ipv4.icmp_echo_ignore_all", "1")  # the holder did; a guest never relies on it
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    server = http_server(args.vm, args.http_port) if args.image == "web" else None
    if server is not None:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    write_ready(args.ready)
    threading.Thread(target=announce, args=(args.iface, args.address), daemon=True).start()
    print(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} vm {args.vm} ({args.image}) up at {args.address}, "
          f"pid {os.getpid()}", flush=True)
    serve_icmp(sock, {args.address})
    return 0


if __name__ == "__main__":
    sys.exit(main())
