"""make demo: a two-node pair in namespaces, writes through the VIP, a failover,
a rejoin, a switchover by hand, and the figures."""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    Writer,
    api,
    escadm,
    failover_once,
    names_via_vip,
    wait_transaction,
)

from esc.lab import lab as labmod  # noqa: E402
from esc.lab.measure import analyse  # noqa: E402


def floor_text() -> str:
    """The raw keepalived + promote floor, as the last `make bench` measured it here."""
    import json

    try:
        floor = json.loads((Path(__file__).resolve().parent.parent / "docs/benchmarks/floor.json")
                           .read_text())
        return (f"raw keepalived + promote on this machine: {floor['first_write_median_s']:.2f} s "
                f"median (bench/floor.py at {floor['commit']}, {floor['date']})")
    except (OSError, ValueError, KeyError, TypeError):
        return "raw keepalived + promote: run `make bench` to measure it here"


def step(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m", flush=True)


def main() -> int:
    if labmod.is_up():
        labmod.down()
    step("1. Lab up: namespaces n1, n2, client on a bridge; both nodes installed with "
         "`escadm install ... --ha_node_list --kad_vip --kad_vif` and started")
    t0 = time.monotonic()
    state = labmod.up()
    print(f"pair ready in {time.monotonic() - t0:.1f}s; VIP {state['vip']}")
    try:
        for n in labmod.NODES:
            step(f"escadm status -v on {n}")
            print(escadm(n, "status", "-v"))
        step("escadm health on both nodes")
        for n in labmod.NODES:
            print(escadm(n, "health"))

        step("2. Writes through the VIP from the client namespace (3 s)")
        w = Writer(state, "demo")
        time.sleep(3)
        rec = w.stop()
        out = analyse(rec, names_via_vip(state))
        print(f"{out.acked} records acknowledged (each committed on both nodes first); "
              f"{len(out.lost)} missing")

        step("3. A deployment through the VIP: 2 VMs (processes in their own namespaces), "
             "monitored by the active")
        for path, body in (("/v0/images", {"name": "cirros", "src": "file:///cirros.img"}),
                           ("/v0/flavors", {"name": "small", "vcpus": 1, "memory_mb": 256}),
                           ("/v0/tenants", {"name": "demo"}),
                           ("/v0/tenants/demo/deployments",
                            {"name": "vnf1", "vm_groups": [{"name": "g", "image": "cirros",
                                                            "flavor": "small", "count": 2}]})):
            status, out = api(state, "POST", path, body)
            tx = wait_transaction(state, out["transaction_id"])  # type: ignore[index]
            print(f"POST {path} -> {status}, transaction {tx['transaction_id']} {tx['status']}")
        _, dep = api(state, "GET", "/v0/tenants/demo/deployments/vnf1")
        print("VMs:", ", ".join(f"{v['name']} {v['status']}" for v in dep["vms"]))  # type: ignore[index]

        step("4. Power cut of the active node (every process killed at once, link down)")
        res = failover_once(state, "failover")
        o = res.outcome
        print(f"killed {res.old}; {res.new} took over")
        print(escadm(res.new, "status", "-v"))
        step("Figures")
        print(f"kill -> first accepted write : {o.kill_to_first_ack:.3f} s")
        print(f"write gap around the failover: {o.max_gap:.3f} s")
        print(f"acknowledged writes          : {o.acked}, lost: {len(o.lost)}")
        print(f"old node back as STANDBY in  : {res.rejoin_s:.1f} s after power-on")
        print(f"(the original: 2 to 5 minutes of failover; {floor_text()})")
        _, dep = api(state, "GET", "/v0/tenants/demo/deployments/vnf1")
        print("deployment vnf1 after the failover:",
              ", ".join(f"{v['name']} {v['status']}" for v in dep["vms"]))  # type: ignore[index]
        from esc.lab import net
        from esc.vim.local import LocalDriver

        vms = LocalDriver(labmod.vim_state_dir(), net.ns("")).list()
        print("its VMs, untouched by the controller's death:",
              ", ".join(f"{v.name} {v.address} {v.state} (pid {v.pid})" for v in vms))

        step(f"5. Switchover by hand, back to {res.old} (`escadm ha switchover`), "
             "with writes running")
        w = Writer(state, "switchover")
        time.sleep(1)
        print(escadm(res.new, "ha", "switchover"))
        time.sleep(1)
        rec = w.stop()
        out = analyse(rec, names_via_vip(state))
        print(f"roles now: {labmod.roles()}; {out.acked} acknowledged during it, "
              f"{len(out.lost)} lost, longest write gap {out.max_gap:.3f} s")
        for n in labmod.NODES:
            print(escadm(n, "status"))
    finally:
        step("6. Lab down")
        labmod.down()
        print("all namespaces and processes removed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
