"""The pair's operation mode: ``operation`` or ``maintenance`` (no automatic failover).

It is one setting for the pair: ``escadm op_mode set`` on either node sets it on
that node and tells the peer; each node keeps it on disk (it survives a restart)
and sends it in every heartbeat answer. When the two disagree (one was down when
it changed), the newer setting wins on both.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from esc.config import NodePaths, write_json_atomic

Mode = Literal["operation", "maintenance"]
MODES: tuple[Mode, ...] = ("operation", "maintenance")


@dataclass(frozen=True)
class OpMode:
    mode: Mode = "operation"
    set_at: float = 0.0  # wall time, to order two settings made on different nodes
    by: str = ""  # the node it was set on

    @property
    def maintenance(self) -> bool:
        return self.mode == "maintenance"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def parse(cls, data: object) -> OpMode | None:
        """From JSON (a file, a peer's answer, a command body); None if malformed."""
        if not isinstance(data, dict) or data.get("mode") not in MODES:
            return None
        try:
            return cls(data["mode"], float(data.get("set_at", 0.0)), str(data.get("by", "")))
        except (TypeError, ValueError):
            return None

    @classmethod
    def now(cls, mode: Mode, by: str) -> OpMode:
        return cls(mode, time.time(), by)


def newer(mine: OpMode, theirs: OpMode | None) -> OpMode:
    return theirs if theirs is not None and theirs.set_at > mine.set_at else mine


def path(paths: NodePaths) -> Path:
    return paths.lib / "op_mode.json"


def load(paths: NodePaths) -> OpMode:
    try:
        return OpMode.parse(json.loads(path(paths).read_text())) or OpMode()
    except (OSError, ValueError):
        return OpMode()


def save(paths: NodePaths, op: OpMode) -> None:
    write_json_atomic(path(paths), op.to_dict())
