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
