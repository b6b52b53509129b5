"""sd-generate on damaged prompt files, damaged model folders and unwritable outputs; no model loads.

The cases and the checks are in tests/helpers/bad_input_cases.py and the fails_cleanly fixture (conftest.py)."""

from __future__ import annotations

import pytest
from helpers.bad_input_cases import SD_GENERATE_CASES

from synthprobe.tools import sd_generate


@pytest.fixture
def no_model_load(monkeypatch):
    """Every case must fail before a model loads."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(
        "synthprobe.sd_generate.pipeline.load_pipeline", lambda settings: pytest.fail("a model was loaded")
    )


@pytest.mark.parametrize("case", list(SD_GENERATE_CASES))
def test_sd_generate(case, tiny_model, tmp_path, no_model_load, fails_cleanly):
    args, names = SD_GENERATE_CASES[case](tmp_path, tiny_model)
    options = {"--out": tmp_path / "out", "--model": tiny_model, "--cache": tmp_path / "cache"}
    for flag in options:
        if flag in args:
            options[flag] = args.pop(args.index(flag) + 1)
            args.remove(flag)
    fails_cleanly(
        sd_generate.main,
        [
            *args,
            *(x for pair in options.items() for x in pair),
            "--size",
            "32",
            "--steps",
            "1",
            "--device",
            "cpu",
            "--silent",
        ],
        tmp_path,
        names,
    )
