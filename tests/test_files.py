"""Shared file handling: atomic writes, completion markers, one-line errors for OS failures."""

from __future__ import annotations

import click
import pytest

from synthprobe.cli import run_guarded
from synthprobe.files import atomic_write, begin_outputs


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
