"""image-check refuses a checks file of another schema in one line that says how to rebuild it."""

from __future__ import annotations

import json

import pytest
from helpers import fails_with
from helpers.image_check import write_bias_folder

from synthprobe.common.files import InputError
from synthprobe.formats import image_checks as K
from synthprobe.tools.image_check import main


@pytest.mark.parametrize("schema", [K.CHECKS_SCHEMA - 1, K.CHECKS_SCHEMA + 1, None])
def test_checks_of_another_schema_are_refused(schema, tmp_path, cli):
    images = write_bias_folder(tmp_path / "images", per_group=1)
    out = tmp_path / "checks"
    out.mkdir()
    row = {"schema": schema, "id": "bias-bee-mixed-00-s00", "judge": "resnet18", "verdict": "ok"}
    (out / K.CHECKS_FILE).write_text(json.dumps(row) + "\n")
    expected = [
        f"{out / K.CHECKS_FILE}:1",
        f"schema {schema!r}",
        f"reads schema {K.CHECKS_SCHEMA}",
        "rerun image-check",
    ]
    with pytest.raises(InputError) as refused:
        K.read_checks(out / K.CHECKS_FILE)
    assert all(fragment in str(refused.value) for fragment in expected), refused.value
    result = cli(main, images, "--out", out, "--judge", "resnet18", "--weights", "none", exit_code=None)
    fails_with(result, *expected)
    assert not (out / "summary.json").exists()


DAMAGED_ROWS = {
    "a string score": ({"object_score": "high"}, "object_score is 'high', not a number or null"),
    "a list score": ({"context_score": [0.5]}, "context_score is '[0.5]', not a number or null"),
    "a true score": ({"object_score": True}, "object_score is 'True', not a number or null"),
    "an unknown verdict": ({"verdict": "maybe"}, "verdict 'maybe' is not one of ok, object-missing"),
    "a number as id": ({"id": 7}, "id is '7', not a string"),
}


@pytest.mark.parametrize("case", list(DAMAGED_ROWS))
def test_damaged_rows_are_refused_naming_the_line_and_field(case, tmp_path, cli):
    """A checks.jsonl an earlier run left (or a user edited): image-check into it, and the analyses' --checks,
    read it through one reader; a bad row is one line, never a TypeError in the verdict."""
    images = write_bias_folder(tmp_path / "images", per_group=1)
    out = tmp_path / "checks"
    out.mkdir()
    change, fragment = DAMAGED_ROWS[case]
    row = {"schema": K.CHECKS_SCHEMA, "id": "bias-bee-mixed-00-s00", "judge": "resnet18@none", "verdict": "ok"}
    good = {**row, "id": "bias-bee-object-only-00-s00", "object_score": 0.5}
    (out / K.CHECKS_FILE).write_text(json.dumps(good) + "\n" + json.dumps({**row, "object_score": 0.2, **change}))
    result = cli(main, images, "--out", out, "--judge", "resnet18", "--weights", "none", exit_code=None)
    fails_with(result, f"{out / K.CHECKS_FILE}:2: {fragment}", "rerun image-check")
    assert not (out / "summary.json").exists()
