"""A monitor wired to the local VIM driver, printing JSON lines: the lab's (and the
controller's) reference wiring.

    ip netns exec <controller ns> python -m esc.monitor --state-dir DIR --ns-prefix P

watches every VM of the driver's state dir (one deployment, ``--deployment``),
prints ``{"type": "ready"}``, then one line per event, per recovery action and
per action result (``action_done``), and carries out recovery through the
driver. SIGTERM or SIGINT stops it.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import time
from pathlib import Path

from esc.monitor import recovery
from esc.monitor.core import Action, Event, Recovery, Thresholds
from esc.monitor.monitor import Monitor
from esc.vim.local import LocalDriver

_out = threading.Lock()


def emit(obj: dict) -> None:
    with _out:
        print(json.dumps({"at": round(time.time(), 3), **obj}), flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m esc.monitor", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--state-dir", required=True, type=Path)
    p.add_argument("--ns-prefix", default="")
    p.add_argument("--deployment", default="lab")
    p.add_argument("--recovery", choices=[r.value for r in Recovery], default="reboot")
    p.add_argument("--max-attempts", type=int, default=3)
    p.add_argument("--interval", type=float, default=1.0)
    p.add_argument("--timeout", type=float, default=1.0)
    p.add_argument("--rise", type=int, default=2)
    p.add_argument("--down-after", type=int, default=3)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    driver = LocalDriver(args.state_dir, args.ns_prefix)

    def on_event(ev: Event) -> None:
        emit(ev.to_dict())

    def on_action(action: Action) -> None:
        emit(action.to_dict())
        try:
            info = recovery.execute(driver, action, driver.spec(action.vm))
        except Exception as e:
            emit({"type": "action_done", "vm": action.vm, "action": str(action.kind), "ok": False,
                  "error": str(e)})
            raise
        emit({"type": "action_done", "vm": action.vm, "action": str(action.kind), "ok": True,
              "pid": info.pid, "state": info.state})

    records = [{"name": vm.name, "deployment": args.deployment, "address": vm.address,
                "recovery": args.recovery, "max_attempts": args.max_attempts} for vm in driver.list()]
    monitor = Monitor.load(records, on_event, on_action, interval_s=args.interval, timeout_s=args.timeout,
                           thresholds=Thresholds(rise=args.rise, down_after=args.down_after))
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    monitor.start()
    emit({"type": "ready", "vms": [r["name"] for r in records]})
    while not done.wait(0.5):
        pass
    monitor.stop()
    emit({"type": "stopped"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
