"""report refuses an analysis folder or a run.json of another schema in one line that says how to rebuild it."""

from __future__ import annotations

import json

import pytest
from helpers import fails_with
from PIL import Image

from synthprobe.formats.analysis_folder import KINDS
from synthprobe.formats.image_folder import RUN_SCHEMA
from synthprobe.tools import report

RERUN = {"separability": "rerun separability", "bias-report": "rerun bias-report", "image-check": "rerun image-check"}


def analysis_folder(folder, kind: str, schema) -> None:
    folder.mkdir()
    (folder / "summary.json").write_text(json.dumps({"schema": schema, "kind": kind, "tables": {}, "figures": {}}))


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("offset", [-1, 1])
def test_a_summary_of_another_schema_is_refused(kind, offset, tmp_path, cli):
    schema = KINDS[kind] + offset
    analysis_folder(tmp_path / "sep", "separability", KINDS["separability"])
    analysis_folder(tmp_path / "other", kind, schema)
    flag = {"separability": "--separability", "bias-report": "--bias", "image-check": "--checks"}[kind]
    args = ["--separability", tmp_path / "sep", flag, tmp_path / "other", "-o", tmp_path / "r.html", "--silent"]
    fails_with(
        cli(report.main, *args, exit_code=None),
        str(tmp_path / "other" / "summary.json"),
        f"schema {schema}",
        f"reads {kind} schema {KINDS[kind]}",
        RERUN[kind],
    )
    assert not (tmp_path / "r.html").exists()


@pytest.mark.parametrize("schema", [RUN_SCHEMA - 1, RUN_SCHEMA + 1, None])
def test_a_run_json_of_another_schema_is_refused(schema, tmp_path, cli):
    analysis_folder(tmp_path / "sep", "separability", KINDS["separability"])
    images = tmp_path / "images"
    (images / "bee.n.01").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(images / "bee.n.01" / "a.png")
    (images / "run.json").write_text(json.dumps({"schema": schema, "tool": "sd-generate", "summary": {}}))
    args = ["--separability", tmp_path / "sep", "--images", images, "-o", tmp_path / "r.html", "--silent"]
    fails_with(
        cli(report.main, *args, exit_code=None),
        str(images / "run.json"),
        f"schema {schema!r}",
        f"reads run.json schema {RUN_SCHEMA}",
        "rerun sd-generate",
    )
