"""MONA, the VM monitor: a pure rise/fall core (``esc.monitor.core``) and an I/O
edge that probes on a schedule (``esc.monitor.monitor``). ``python -m esc.monitor``
runs one against the local VIM driver's VMs and prints what happens as JSON lines."""

from esc.monitor.core import (
    Action,
    Event,
    EventKind,
    Fleet,
    Health,
    Recovery,
    Target,
    Thresholds,
    VmHealth,
)
from esc.monitor.monitor import Monitor, ping

__all__ = ["Action", "Event", "EventKind", "Fleet", "Health", "Monitor", "Recovery", "Target", "Thresholds",
           "VmHealth", "ping"]
