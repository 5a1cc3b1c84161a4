"""An in-memory ``VimDriver`` for tests of its callers (the REST API, the monitor's
wiring): same contract as the local driver, no processes, no root."""

from __future__ import annotations

import itertools
import threading
from datetime import UTC, datetime

from esc.vim.driver import VimError, VmConflict, VmInfo, VmNotFound, VmSpec


class FakeDriver:
    """``calls`` records every mutating call as ``(verb, name)``; ``kill(name)`` stops a
    VM as a crash would; ``fail_next`` makes the next mutating call raise ``VimError``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._vms: dict[str, tuple[VmSpec, VmInfo]] = {}
        self._pids = itertools.count(1000)
        self.calls: list[tuple[str, str]] = []
        self.fail_next: str | None = None

    def _maybe_fail(self, verb: str, name: str) -> None:
        self.calls.append((verb, name))
        if self.fail_next is not None:
            why, self.fail_next = self.fail_next, None
            raise VimError(f"{verb} {name}: {why}")

    def create_vm(self, spec: VmSpec) -> VmInfo:
        with self._lock:
            if spec.name in self._vms:
                old, info = self._vms[spec.name]
                if (old.image, old.address, old.network) != (spec.image, spec.address, spec.network):
                    raise VmConflict(f"VM {spec.name!r} exists with another spec")
                return info
            self._maybe_fail("create", spec.name)
            info = VmInfo(spec.name, spec.address, "running", next(self._pids), datetime.now(UTC),
                          spec.image)
            self._vms[spec.name] = (spec, info)
            return info

    def delete_vm(self, name: str) -> None:
        with self._lock:
            self._maybe_fail("delete", name)
            self._vms.pop(name, None)

    def reboot_vm(self, name: str) -> VmInfo:
        with self._lock:
            if name not in self._vms:
                raise VmNotFound(f"no VM named {name!r}")
            self._maybe_fail("reboot", name)
            spec, info = self._vms[name]
            info = VmInfo(name, info.address, "running", next(self._pids), info.created_at, info.image)
            self._vms[name] = (spec, info)
            return info

    def stop_vm(self, name: str) -> VmInfo:
        with self._lock:
            if name not in self._vms:
                raise VmNotFound(f"no VM named {name!r}")
            spec, info = self._vms[name]
            info = VmInfo(name, info.address, "stopped", None, info.created_at, info.image)
            self._vms[name] = (spec, info)
            return info

    def get(self, name: str) -> VmInfo | None:
        with self._lock:
            entry = self._vms.get(name)
            return entry[1] if entry else None

    def list(self) -> list[VmInfo]:
        with self._lock:
            return [info for _, info in sorted(self._vms.values(), key=lambda e: e[0].name)]

    def spec(self, name: str) -> VmSpec | None:
        with self._lock:
            entry = self._vms.get(name)
            return entry[0] if entry else None

    def kill(self, name: str) -> None:
        with self._lock:
            spec, info = self._vms[name]
            self._vms[name] = (spec, VmInfo(name, info.address, "stopped", None, info.created_at,
                                            info.image))
