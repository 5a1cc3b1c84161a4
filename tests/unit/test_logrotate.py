"""Log files kept to a size (copy, then truncate), and a service's output and uncaught
exceptions in its log, one line each."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from esc import logrotate


def test_a_log_over_the_limit_is_copied_and_truncated_under_its_writer(tmp_path: Path) -> None:
    log = tmp_path / "postgres.log"
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)  # as the supervisor opens it
    try:
        os.write(fd, b"old line\n" * 200)
        (tmp_path / "other.txt").write_bytes(b"x" * 5000)  # not a log: left alone
        for _ in range(7):
            assert logrotate.rotate_dir(tmp_path, max_bytes=1000, keep=3) == ["postgres.log"]
            os.write(fd, b"old line\n" * 200)
        os.write(fd, b"new line\n")
    finally:
        os.close(fd)
    assert logrotate.rotate_dir(tmp_path, max_bytes=1000, keep=3) == ["postgres.log"]
    assert log.read_bytes() == b""  # the writer's next line lands at the start
    kept = sorted(p.name for p in tmp_path.iterdir())
    assert kept == ["other.txt", "postgres.log", "postgres.log.1", "postgres.log.2", "postgres.log.3"]
    assert (tmp_path / "postgres.log.1").read_bytes().endswith(b"new line\n")
    assert (tmp_path / "postgres.log.1").stat().st_size == 1809  # no hole before the new lines
    assert logrotate.rotate_dir(tmp_path, max_bytes=1000) == []


def test_output_and_uncaught_exceptions_go_to_the_log_one_line_each(tmp_path: Path) -> None:
    code = textwrap.dedent(f"""
        import sys, threading
        from pathlib import Path
        from esc import logs
        listener = logs.setup(Path({str(tmp_path)!r}), "agent.log", "n1")
        logs.capture_output()
        print("printed")
        sys.stderr.write("warned\\n")
        t = threading.Thread(target=lambda: 1 / 0, name="worker")
        t.start(); t.join()
        listener.stop()
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout == "" and res.stderr == ""  # nothing past the log
    lines = (tmp_path / "agent.log").read_text().splitlines()
    assert len(lines) == 3, lines
    assert lines[0].endswith("INFO printed") and lines[1].endswith("WARNING warned")
    assert "ERROR thread worker died | Traceback" in lines[2] and "ZeroDivisionError" in lines[2]
