"""VIM drivers: how the controller creates, deletes, reboots and finds VMs.

``esc.vim.driver`` is the interface (``VimDriver``, ``VmSpec``, ``VmInfo``),
``esc.vim.local`` runs VMs as processes in namespaces on this machine, and
``esc.vim.fake`` keeps them in memory for tests of callers.
"""

from esc.vim.driver import (
    Network,
    VimDriver,
    VimError,
    VmConflict,
    VmInfo,
    VmNotFound,
    VmSpec,
    VmState,
)

__all__ = ["Network", "VimDriver", "VimError", "VmConflict", "VmInfo", "VmNotFound", "VmSpec", "VmState"]
