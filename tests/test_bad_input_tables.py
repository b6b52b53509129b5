"""A table of damaged inputs per tool, as a new user would hand them over.

Every case must end with a non-zero exit, exactly one stderr line (``Error: ...``, no traceback) that
names the damaged file, and no new or changed file that looks complete (a summary.json, a manifest, a
report, a store marked complete). The valid inputs are built once; each case damages a copy. The tables
are in tests/helpers/bad_input_cases.py, their runs in tests/<tool>/test_bad_input_table.py.
"""

from __future__ import annotations

from helpers.bad_input_cases import (
    BIAS_CASES,
    CNN_HOOKS_CASES,
    REPORT_CASES,
    SD_GENERATE_CASES,
    SEPARABILITY_CASES,
    WN_PROMPTS_CASES,
)


def test_the_table_has_at_least_15_inputs_per_tool():
    for cases in (SEPARABILITY_CASES, BIAS_CASES, REPORT_CASES, WN_PROMPTS_CASES, SD_GENERATE_CASES, CNN_HOOKS_CASES):
        assert len(cases) >= 15
