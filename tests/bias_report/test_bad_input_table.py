"""bias-report on damaged copies of a valid store, prompt files and class files; the undamaged control.

The cases and the checks are in tests/helpers/bad_input_cases.py and the fails_cleanly fixture (conftest.py)."""

from __future__ import annotations

import pytest
from helpers.bad_input_cases import BIAS_CASES
from helpers.bad_inputs import store_copy

from synthprobe.tools import bias_report


@pytest.mark.parametrize("case", list(BIAS_CASES))
def test_bias_report(case, pristine_store, tmp_path, fails_cleanly):
    store = store_copy(pristine_store, tmp_path)
    outcome = BIAS_CASES[case](store, tmp_path)
    out, names, extra = (tmp_path / "bias", outcome, []) if isinstance(outcome, list) else (*outcome, [])[:3]
    fails_cleanly(
        bias_report.main,
        [store, "--out", out, "--classes", "bee,frog", "--mapping", "exact", "--silent", *extra],
        tmp_path,
        names,
    )


def test_bias_report_reads_the_pristine_store(pristine_store, tmp_path, cli):
    cli(
        bias_report.main,
        pristine_store,
        "--out",
        tmp_path / "bias",
        "--classes",
        "bee,frog",
        "--mapping",
        "exact",
        "--silent",
    )
