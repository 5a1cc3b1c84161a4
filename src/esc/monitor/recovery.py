"""Carrying out a recovery action with a VIM driver (what a controller's
``on_action`` does, once it has recorded the action)."""

from __future__ import annotations

from esc.monitor.core import Action, Recovery
from esc.vim.driver import VimDriver, VmInfo, VmSpec


def execute(driver: VimDriver, action: Action, spec: VmSpec | None = None) -> VmInfo:
    """``reboot``: ``driver.reboot_vm``. ``redeploy``: delete the VM, create it again
    from ``spec`` (the spec it was created with; the controller keeps it in its
    database). Both are idempotent, so an action repeated after a failover is safe."""
    if action.kind is Recovery.REBOOT:
        return driver.reboot_vm(action.vm)
    if spec is None:
        raise ValueError(f"redeploy of {action.vm} needs the VM's spec")
    if spec.name != action.vm:
        raise ValueError(f"spec {spec.name!r} is not VM {action.vm!r}")
    driver.delete_vm(action.vm)
    return driver.create_vm(spec)
