"""The serving controller's report of its parts (esc.services.components), which the
agent turns into the health lines vimmanager, monitor and mona."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

from esc.services import components


def _wait_for(path: Path, timeout: float = 5.0) -> dict:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never written"
        time.sleep(0.02)
    return json.loads(path.read_text())


def test_the_serving_controller_reports_its_parts_and_takes_the_report_away(  # type: ignore[no-untyped-def]
    make_esc_api, tmp_path: Path
) -> None:
    path = tmp_path / components.FILE
    monitor_up = threading.Event()
    with make_esc_api(components_file=path, monitor_running=monitor_up.is_set):
        data = _wait_for(path)
        assert data["pid"] == os.getpid()
        assert components.read(path, os.getpid()) == {
            "worker": True,
            "callbacks": True,
            "janitor": True,
            "monitor": False,
        }
        monitor_up.set()
        deadline = time.monotonic() + 5
        while not (components.read(path, os.getpid()) or {}).get("monitor"):
            assert time.monotonic() < deadline, "the monitor's start was not reported"
            time.sleep(0.05)
    assert not path.exists()  # a stopped controller vouches for nothing


def test_no_vim_is_reported_as_no_monitor(make_esc_api, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / components.FILE
    with make_esc_api(components_file=path):
        _wait_for(path)
        assert components.read(path, os.getpid())["monitor"] is None  # type: ignore[index]


def test_a_report_of_another_process_or_too_old_says_nothing(tmp_path: Path) -> None:
    path = tmp_path / components.FILE
    rep = components.Reporter(path, {"worker": lambda: True, "broken": lambda: 1 / 0})
    rep.write()
    assert components.read(path, os.getpid()) == {"worker": True, "broken": False}
    assert components.read(path, os.getpid() + 1) is None  # a restarted controller's pid
    assert components.read(path, None) is None
    assert components.read(path, os.getpid(), max_age=-1) is None  # it stopped writing
    path.write_text("{not json")
    assert components.read(path, os.getpid()) is None
    path.write_text(json.dumps({"pid": os.getpid(), "at": time.time(), "components": [1]}))
    assert components.read(path, os.getpid()) is None
