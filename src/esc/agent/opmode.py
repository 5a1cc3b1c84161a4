"""The pair's operation mode: ``operation`` or ``maintenance`` (no automatic failover).

It is one setting for the pair: ``escadm op_mode set`` on either node sets it on
that node and tells the peer; each node keeps it on disk (it survives a restart)
and sends it in every heartbeat answer. When the two disagree (one was down when
it changed), the newer setting wins on both.

"Newer" is a counter, not a clock: each setting takes the highest version this node
has seen plus one, so clock skew between the nodes cannot undo a later setting. Two
settings made on both sides of a partition can carry the same version: maintenance
wins then (the conservative one: no automatic failover), then the node name.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from esc.config import NodePaths, write_json_atomic

Mode = Literal["operation", "maintenance"]
MODES: tuple[Mode, ...] = ("operation", "maintenance")


MAX_VERSION = 2**31  # a peer's answer beyond this is malformed, not "newest forever"


@dataclass(frozen=True)
class OpMode:
    mode: Mode = "operation"
    version: int = 0  # orders settings made on either node (see the module's docstring)
    by: str = ""  # the node it was set on
    set_at: float = 0.0  # wall time, shown to the operator only; never used to order

    @property
    def maintenance(self) -> bool:
        return self.mode == "maintenance"

    def order(self) -> tuple[int, bool, str]:
        return (self.version, self.maintenance, self.by)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def parse(cls, data: object) -> OpMode | None:
        """From JSON (a file, a peer's answer, a command body); None if malformed."""
        if not isinstance(data, dict) or data.get("mode") not in MODES:
            return None
        version, set_at, by = data.get("version", 0), data.get("set_at", 0.0), data.get("by", "")
        if isinstance(version, bool) or not isinstance(version, int) \
                or not 0 <= version <= MAX_VERSION:
            return None
        if isinstance(set_at, bool) or not isinstance(set_at, (int, float)) \
                or not math.isfinite(set_at) or not isinstance(by, str) or len(by) > 64:
            return None
        return cls(data["mode"], version, by, float(set_at))

    def next(self, mode: Mode, by: str) -> OpMode:
        """A new setting made on this node, ordered after every one it has seen."""
        return OpMode(mode, min(self.version + 1, MAX_VERSION), by, time.time())


def newer(mine: OpMode, theirs: OpMode | None) -> OpMode:
    return theirs if theirs is not None and theirs.order() > mine.order() else mine


def path(paths: NodePaths) -> Path:
    return paths.lib / "op_mode.json"


def load(paths: NodePaths) -> OpMode:
    try:
        return OpMode.parse(json.loads(path(paths).read_text())) or OpMode()
    except (OSError, ValueError):
        return OpMode()


def save(paths: NodePaths, op: OpMode) -> None:
    write_json_atomic(path(paths), op.to_dict())
