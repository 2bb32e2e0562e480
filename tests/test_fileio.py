"""Atomic replacement and the append-only JSON-lines log (agent.core.fileio)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from agent.core.fileio import JsonlLog, atomic_open, atomic_write, staged


def test_atomic_write_replaces_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "a.json"
    target.write_text("old")
    atomic_write(target, '{"k": "값"}')
    assert target.read_text(encoding="utf-8") == '{"k": "값"}'
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]
    assert target.stat().st_mode & 0o777 == 0o644


def test_an_error_inside_the_block_leaves_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "sub.csv"
    target.write_text("id,answer\n")
    with pytest.raises(RuntimeError), atomic_open(target, "w", encoding="utf-8") as f:
        f.write("half a fi")
        raise RuntimeError("killed")
    assert target.read_text() == "id,answer\n" and [p.name for p in tmp_path.iterdir()] == ["sub.csv"]


def test_staged_files_replace_together_or_not_at_all(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text("v1")
    with pytest.raises(OSError), staged() as stage:
        stage(tmp_path / "data.bin").write_bytes(b"new data")
        stage(tmp_path / "missing" / "x")  # a folder that is not there: fails before anything is replaced
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json"]
    with staged() as stage:
        stage(tmp_path / "data.bin").write_bytes(b"new data")
        stage(tmp_path / "manifest.json").write_text("v2")
    assert (tmp_path / "data.bin").read_bytes() == b"new data" and (tmp_path / "manifest.json").read_text() == "v2"


def test_atomic_open_refuses_append_mode(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'w' mode"), atomic_open(tmp_path / "x", "a"):
        pass


def test_jsonl_log_drops_a_torn_last_line_and_appends_whole_lines(tmp_path: Path) -> None:
    path = tmp_path / "run" / "results.jsonl"
    path.parent.mkdir()
    path.write_text('{"id": 1}\n{"id": 2}\n{"id"')  # killed mid-write
    log = JsonlLog(path)
    assert log.lines() == ['{"id": 1}', '{"id": 2}']
    threads = [threading.Thread(target=log.append, args=(f'{{"id": {i}}}',), kwargs={"sync": i % 2 == 0})
               for i in range(3, 23)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    log.sync()
    lines = log.lines()
    assert len(lines) == 22 and sorted(lines) == sorted(f'{{"id": {i}}}' for i in range(1, 23))
    with pytest.raises(ValueError, match="one line"):
        log.append('{"a":\n1}')


def test_jsonl_log_creates_its_folder_and_reads_nothing_from_a_new_file(tmp_path: Path) -> None:
    log = JsonlLog(tmp_path / "new" / "trace.jsonl")
    assert log.lines() == [] and (tmp_path / "new").is_dir()


@pytest.mark.parametrize("sync_every, fsyncs_while_appending", [(0.0, 5), (3600.0, 0)])
def test_jsonl_log_group_commit_writes_through_and_fsyncs_at_most_once_per_interval(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sync_every: float, fsyncs_while_appending: int) -> None:
    """Every append is readable at once (a killed process loses nothing); with ``sync_every`` the fsyncs are
    grouped, and ``sync()`` makes the rest durable (the end of a run)."""
    fsyncs: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (fsyncs.append(fd), real_fsync(fd))[1])
    log = JsonlLog(tmp_path / "results.jsonl", sync_every=sync_every)
    for i in range(5):
        log.append(f'{{"id": {i}}}')
        assert JsonlLog(tmp_path / "results.jsonl").lines()[-1] == f'{{"id": {i}}}'  # another reader sees it now
    assert len(fsyncs) == fsyncs_while_appending
    log.sync(when_due=True)
    assert len(fsyncs) == fsyncs_while_appending  # not due: the last fsync is younger than sync_every
    log.sync()
    log.sync()  # nothing new since: no second fsync
    assert len(fsyncs) == fsyncs_while_appending + (sync_every > 0)
