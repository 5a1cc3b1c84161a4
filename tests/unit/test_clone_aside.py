"""A clone never deletes the data it replaces: the old directory is moved aside (the
newest such copy kept), a failed clone leaves the local data in place, and status shows
what is set aside. pg_basebackup is stood in for by a function that writes (or fails to
write) a directory: what is checked is what happens to the local data around it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from esc.config import NodeConfig, NodePaths
from esc.ha import postgres
from esc.health import status_details


@pytest.fixture
def node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[NodePaths, NodeConfig]:
    paths, cfg = NodePaths(tmp_path), NodeConfig(name="n1")
    monkeypatch.setattr(postgres, "prepare_dirs", lambda *_: None)
    monkeypatch.setattr(postgres, "conninfo_peer", lambda *_a, **_k: "host=peer")
    pgdata = paths.pgdata(cfg)
    pgdata.mkdir(parents=True)
    (pgdata / "PG_VERSION").write_text("15\n")
    (pgdata / "diverged-history").write_bytes(b"x" * 4096)
    return paths, cfg


def basebackup(ok: bool, marker: str):  # type: ignore[no-untyped-def]
    def run(argv: list[str], **_: object) -> subprocess.CompletedProcess[str]:
        target = Path(argv[argv.index("-D") + 1])
        target.mkdir(parents=True)
        (target / "PG_VERSION").write_text("15\n")
        (target / marker).write_text("from the peer\n")
        if not ok:  # half-written, then failed
            return subprocess.CompletedProcess(argv, 1, "", "connection lost")
        return subprocess.CompletedProcess(argv, 0, "", "")
    return run


def test_the_replaced_data_is_moved_aside_not_deleted(node, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    paths, cfg = node
    pgdata = paths.pgdata(cfg)
    monkeypatch.setattr(postgres, "run_as_postgres", basebackup(True, "copy-1"))
    aside = postgres.clone(paths, cfg)
    assert aside is not None and (aside.path / "diverged-history").read_bytes() == b"x" * 4096
    assert aside.bytes >= 4096
    assert (pgdata / "copy-1").exists() and not (pgdata / "diverged-history").exists()
    assert postgres.aside_copies(pgdata) == [aside]


def test_only_the_newest_aside_copy_is_kept(node, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    paths, cfg = node
    pgdata = paths.pgdata(cfg)
    monkeypatch.setattr(postgres, "run_as_postgres", basebackup(True, "copy-1"))
    first = postgres.clone(paths, cfg)
    assert first is not None
    # the next clone's copy is named by a later second
    monkeypatch.setattr(postgres, "aside_stamp", lambda: "20991231T000000Z")
    monkeypatch.setattr(postgres, "run_as_postgres", basebackup(True, "copy-2"))
    second = postgres.clone(paths, cfg)
    assert second is not None and (second.path / "copy-1").exists()
    assert [a.path for a in postgres.aside_copies(pgdata)] == [second.path]
    assert not first.path.exists()


def test_a_failed_clone_leaves_the_local_data_in_place(node, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    paths, cfg = node
    pgdata = paths.pgdata(cfg)
    monkeypatch.setattr(postgres, "run_as_postgres", basebackup(False, "half"))
    with pytest.raises(RuntimeError, match="pg_basebackup failed: connection lost"):
        postgres.clone(paths, cfg)
    assert (pgdata / "diverged-history").exists() and not (pgdata / "half").exists()
    assert postgres.aside_copies(pgdata) == []
    assert not pgdata.with_name(pgdata.name + ".clone").exists()


def test_status_says_what_is_set_aside_and_its_size(node, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    paths, cfg = node
    monkeypatch.setattr(postgres, "run_as_postgres", basebackup(True, "copy-1"))
    aside = postgres.clone(paths, cfg)
    assert aside is not None
    st = {"node": "n1", "role": "STANDBY", "disk": {
        "path": str(paths.root), "free_bytes": 2**30, "total_bytes": 2**31, "full": False,
        "aside": [{"path": str(aside.path), "bytes": aside.bytes, "made_at": aside.made_at}]}}
    text = status_details(st)
    assert str(aside.path) in text and "MiB" in text
