"""wn-prompts on damaged Core WordNet lists, template files, synset lists and unwritable outputs.

The cases and the checks are in tests/helpers/bad_input_cases.py and the fails_cleanly fixture (conftest.py)."""

from __future__ import annotations

import pytest
from helpers.bad_input_cases import WN_PROMPTS_CASES

from synthprobe.tools import wn_prompts


@pytest.mark.parametrize("case", list(WN_PROMPTS_CASES))
def test_wn_prompts(case, wn, tmp_path, fails_cleanly):
    args, names = WN_PROMPTS_CASES[case](tmp_path)
    line = fails_cleanly(wn_prompts.main, [*args, "--silent"], tmp_path, names)
    assert ".tmp" not in line
