"""Shared file handling: atomic writes, completion markers, one-line errors for OS failures."""

from __future__ import annotations

import json

import click
import pytest
from helpers import lock_holder

from synthprobe.common.cli import run_guarded
from synthprobe.common.files import InputError, Sha256Memo, atomic_write, begin_outputs


def test_atomic_write_leaves_the_old_file_on_failure(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_write(target) as handle:
            handle.write("half")
            raise RuntimeError("crash")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_begin_outputs_removes_the_completion_marker_first(tmp_path):
    (tmp_path / "summary.json").write_text("{}")
    (tmp_path / "layers.csv").write_text("old")
    assert begin_outputs(tmp_path, "summary.json") == tmp_path
    assert not (tmp_path / "summary.json").exists() and (tmp_path / "layers.csv").exists()


def test_os_errors_become_one_line_naming_the_file(tmp_path):
    @run_guarded
    def fails():
        open(tmp_path / "missing" / "file.txt")

    with pytest.raises(click.ClickException, match=r"missing/file.txt: No such file or directory"):
        fails()


def test_disk_full_names_the_file_being_written(tmp_path):
    import errno

    target = tmp_path / "out.jsonl"
    with pytest.raises(InputError, match=rf"cannot write {target}: No space left on device"):
        with atomic_write(target) as handle:
            handle.write("a row\n")
            raise OSError(errno.ENOSPC, "No space left on device")  # what a full disk raises from write()
    assert list(tmp_path.iterdir()) == []


def test_decoding_and_json_errors_that_a_reader_missed_are_one_line():
    @run_guarded
    def undecodable():
        b"\xff".decode("utf-8")

    with pytest.raises(click.ClickException, match=r"^UnicodeDecodeError: 'utf-8' codec can't decode"):
        undecodable()


def test_sha256_memo_reads_a_file_again_only_when_it_changed(tmp_path, monkeypatch):
    import os

    from synthprobe.common import files

    path = tmp_path / "image.png"
    path.write_bytes(b"one")
    memo = Sha256Memo(tmp_path / "memo.json")
    first = memo.sha256(path)
    memo.save()
    reads = []
    real = files.sha256_file
    monkeypatch.setattr(files, "sha256_file", lambda p: reads.append(p) or real(p))
    again = Sha256Memo(tmp_path / "memo.json")
    assert again.sha256(path) == first and reads == []
    path.write_bytes(b"two")
    os.utime(path, ns=(1, 1))  # even an mtime moved back: the stamp differs
    assert again.sha256(path) != first and reads == [path]


def test_sha256_memo_drops_the_entries_of_files_that_are_gone_when_saved(tmp_path):
    kept, removed = tmp_path / "kept.png", tmp_path / "removed.png"
    memo = Sha256Memo(tmp_path / "memo.json")
    for path in (kept, removed):
        path.write_bytes(path.name.encode())
        memo.sha256(path)
    memo.save()
    removed.unlink()
    memo.remember(kept, memo.sha256(kept))
    memo.save()
    assert set(json.loads((tmp_path / "memo.json").read_text())) == {str(kept)}


# ---- one writer at a time ------------------------------------------------------------------------


def test_a_second_writer_is_refused_naming_the_first(tmp_path):
    from synthprobe.common.locks import exclusive_writer

    process = lock_holder(tmp_path, 30)
    try:
        with pytest.raises(InputError, match=rf"being written by pid {process.pid} on "):
            with exclusive_writer(tmp_path):
                pass
    finally:
        process.kill()
        process.wait()
    with exclusive_writer(tmp_path):  # kill -9 leaves the lock file, not the lock
        pass


def test_a_waiting_writer_goes_on_once_the_first_is_done(tmp_path):
    from synthprobe.common.locks import exclusive_writer

    process = lock_holder(tmp_path, 0.5)
    with exclusive_writer(tmp_path, wait=True):
        assert (tmp_path / "done").exists(), "entered while the other process still held the lock"
    process.wait()
