"""report refuses an analysis folder or a run.json of another schema in one line that says how to rebuild it."""

from __future__ import annotations

import json

import pytest
from helpers import fails_with, prompt_record
from PIL import Image

from synthprobe.formats.analysis_folder import KINDS
from synthprobe.formats.image_folder import RUN_SCHEMA
from synthprobe.tools import report

RERUN = {
    "separability": "rerun separability",
    "bias-report": "rerun bias-report",
    "image-check": "rerun image-check",
    "image-check-audit": "rerun image-check audit",
    "transfer": "rerun transfer",
}
FLAG = {
    "separability": "--separability",
    "bias-report": "--bias",
    "image-check": "--checks",
    "image-check-audit": "--checks",
    "transfer": "--transfer",
}


def analysis_folder(folder, kind: str, schema) -> None:
    folder.mkdir()
    (folder / "summary.json").write_text(json.dumps({"schema": schema, "kind": kind, "tables": {}, "figures": {}}))


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("offset", [-1, 1])
def test_a_summary_of_another_schema_is_refused(kind, offset, tmp_path, cli):
    schema = KINDS[kind] + offset
    analysis_folder(tmp_path / "sep", "separability", KINDS["separability"])
    analysis_folder(tmp_path / "other", kind, schema)
    flag = FLAG[kind]
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


# ---- report reads only inside the folders it is given ------------------------------------------------------------


def separability_folder(folder, tables=None, figures=None) -> None:
    folder.mkdir()
    (folder / "layers.csv").write_text("layer,fisher\nconv1,1.0\n")
    summary = {
        "schema": KINDS["separability"],
        "kind": "separability",
        "tables": tables or {"layers": {"file": "layers.csv", "rows": 1, "description": ""}},
        "figures": figures or {},
    }
    (folder / "summary.json").write_text(json.dumps(summary))


SECRET = "private,data\n1,2\n"


@pytest.mark.parametrize(
    "field,name",
    [
        ("tables.layers.file", "../secret.csv"),
        ("tables.layers.file", "SECRET_ABSOLUTE"),
        ("tables.layers.file", "link.csv"),
        ("figures.depth", "../secret.png"),
        ("figures.depth", "link.png"),
    ],
)
def test_a_summary_cannot_name_a_file_outside_its_folder(field, name, tmp_path, cli):
    secret = tmp_path / "secret.csv"
    secret.write_text(SECRET)
    Image.new("RGB", (4, 4)).save(tmp_path / "secret.png")
    name = str(secret) if name == "SECRET_ABSOLUTE" else name
    entry = {"layers": {"file": name, "rows": 1, "description": ""}} if field.startswith("tables") else None
    figures = {"depth": name} if field.startswith("figures") else None
    separability_folder(tmp_path / "sep", entry, figures)
    (tmp_path / "sep" / "link.csv").symlink_to(secret)
    (tmp_path / "sep" / "link.png").symlink_to(tmp_path / "secret.png")
    result = cli(report.main, "--separability", tmp_path / "sep", "-o", tmp_path / "r.html", exit_code=None)
    fails_with(result, str(tmp_path / "sep" / "summary.json"), field, repr(name))
    assert not (tmp_path / "r.html").exists()


@pytest.mark.parametrize(
    "flag,kind", [("--separability", "bias-report"), ("--bias", "separability"), ("--checks", "separability")]
)
def test_a_folder_of_another_kind_is_refused(flag, kind, tmp_path, cli):
    separability_folder(tmp_path / "sep")
    analysis_folder(tmp_path / "other", kind, KINDS[kind])
    base = [] if flag == "--separability" else ["--separability", tmp_path / "sep"]
    result = cli(report.main, *base, flag, tmp_path / "other", "-o", tmp_path / "r.html", exit_code=None)
    fails_with(result, str(tmp_path / "other" / "summary.json"), f"a {kind} folder")


def image_folder(root):
    """A generated folder of one PNG with its manifest's sha256."""
    from synthprobe.common.files import sha256_file

    (root / "bee.n.01").mkdir(parents=True)
    Image.new("RGB", (16, 16), (10, 200, 30)).save(root / "bee.n.01" / "a.png")
    png = root / "bee.n.01" / "a.png"
    row = {**prompt_record(), "path": "bee.n.01/a.png", "sha256": sha256_file(png)}
    (root / "images.jsonl").write_text(json.dumps(row) + "\n")


def test_a_changed_image_is_refused_or_marked(tmp_path, cli):
    separability_folder(tmp_path / "sep")
    image_folder(tmp_path / "images")
    Image.new("RGB", (16, 16), (200, 10, 30)).save(tmp_path / "images" / "bee.n.01" / "a.png")  # edited since
    args = ["--separability", tmp_path / "sep", "--images", tmp_path / "images", "-o", tmp_path / "r.html"]
    fails_with(cli(report.main, *args, exit_code=None), "a.png changed since generation", "--allow-changed")
    assert not (tmp_path / "r.html").exists()
    cli(report.main, *args, "--allow-changed")
    assert "data:image/jpeg" in (tmp_path / "r.html").read_text()


def test_a_gallery_image_linked_out_of_its_folder_is_refused(tmp_path, cli):
    separability_folder(tmp_path / "sep")
    image_folder(tmp_path / "images")
    png = tmp_path / "images" / "bee.n.01" / "a.png"
    png.rename(tmp_path / "outside.png")
    png.symlink_to(tmp_path / "outside.png")
    args = ["--separability", tmp_path / "sep", "--images", tmp_path / "images", "-o", tmp_path / "r.html"]
    fails_with(cli(report.main, *args, exit_code=None), str(png), "a link out of the image folder")
