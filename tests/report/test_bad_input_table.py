"""report on damaged analysis folders, image folders and unwritable outputs.

The cases and the checks are in tests/helpers/bad_input_cases.py and the fails_cleanly fixture (conftest.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from helpers.bad_input_cases import REPORT_CASES
from helpers.bad_inputs import a_file, write
from PIL import Image

from synthprobe.tools import bias_report, report, separability


@pytest.fixture(scope="module")
def analyses(pristine_store, tmp_path_factory, cli) -> Path:
    """A separability folder, a bias-report folder and an image folder, as the tools write them."""
    root = tmp_path_factory.mktemp("analyses")
    cli(separability.main, pristine_store, "--out", root / "sep", "--permutations", "0", "--silent")
    cli(
        bias_report.main,
        pristine_store,
        "--out",
        root / "bias",
        "--classes",
        "bee,frog",
        "--mapping",
        "exact",
        "--silent",
    )
    images = root / "images"
    images.mkdir()
    Image.new("RGB", (8, 8), (200, 10, 10)).save(images / "concept-00.png")
    write(
        images / "images.jsonl",
        json.dumps(
            {"id": "concept-00", "synset": "bee.n.01", "path": "concept-00.png", "status": "ok", "prompt": "a bee"}
        )
        + "\n",
    )
    write(images / "run.json", json.dumps({"schema": 1, "tool": "sd-generate", "summary": {}}) + "\n")
    return root


@pytest.mark.parametrize("case", [*REPORT_CASES, "output-is-a-folder", "output-under-a-file"])
def test_report(case, analyses, tmp_path, fails_cleanly):
    for name in ("sep", "bias", "images"):
        shutil.copytree(analyses / name, tmp_path / name)
    output = tmp_path / "report.html"
    if case == "output-is-a-folder":
        output.mkdir()
        names = [output, "folder"]
    elif case == "output-under-a-file":
        output = a_file(tmp_path) / "report.html"
        names = [output]
    else:
        names, _ = REPORT_CASES[case](tmp_path)
    line = fails_cleanly(
        report.main,
        [
            "--separability",
            tmp_path / "sep",
            "--bias",
            tmp_path / "bias",
            "--images",
            tmp_path / "images",
            "-o",
            output,
            "--silent",
        ],
        tmp_path,
        names,
    )
    assert ".tmp" not in line, "names the output, not a temp file"
