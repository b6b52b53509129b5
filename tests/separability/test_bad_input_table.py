"""separability on damaged copies of a valid store and unwritable outputs; the undamaged controls.

The cases and the checks are in tests/helpers/bad_input_cases.py and the fails_cleanly fixture (conftest.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers.bad_input_cases import SEPARABILITY_CASES
from helpers.bad_inputs import set_attr, store_copy

from synthprobe.tools import report, separability


@pytest.mark.parametrize("case", list(SEPARABILITY_CASES))
def test_separability(case, pristine_store, tmp_path, fails_cleanly):
    store = store_copy(pristine_store, tmp_path)
    outcome = SEPARABILITY_CASES[case](store, tmp_path)
    out, names = outcome if isinstance(outcome, tuple) else (tmp_path / "sep", outcome)
    fails_cleanly(separability.main, [store, "--out", out, "--permutations", 0, "--silent"], tmp_path, names)


def test_store_arrays_cannot_read_as_zeros(pristine_store):
    """Missing chunks read as NaN or U+FFFF, never as data; every chunk carries a crc32c."""
    import zarr
    from zarr.codecs import Crc32cCodec

    group = zarr.open_group(str(pristine_store), mode="r")
    for key in ("hooks/early/mean", "logits/logits"):
        array = group[key]
        assert np.isnan(array.fill_value)
        assert any(isinstance(c, Crc32cCodec) for c in array.metadata.codecs[0].codecs), key  # inside the shard
    for field in ("id", "status", "synset"):
        assert group[f"rows/{field}"].fill_value == "\uffff"
        assert any(isinstance(c, Crc32cCodec) for c in group[f"rows/{field}"].metadata.codecs)


def test_separability_reads_the_pristine_store_and_skip_bad_rows(pristine_store, tmp_path, cli):
    """The control: the undamaged store passes; NaN in a failed row is not a missing chunk."""
    store = store_copy(pristine_store, tmp_path)
    args = ["--permutations", 0, "--silent"]
    cli(separability.main, store, "--out", tmp_path / "a", *args)
    import zarr

    from synthprobe.formats.activation_store.checksums import record_file_crcs

    group = zarr.open_group(str(store), mode="r+")
    group["rows/status"][1] = "failed"
    group["hooks/early/mean"][1] = np.nan
    for key in ("rows/status", "hooks/early/mean"):  # as the writer does: its files' CRC-32 recorded again
        record_file_crcs(store, group[key], [0])
    cli(separability.main, store, "--out", tmp_path / "b", *args)


def test_allow_incomplete_analyses_with_a_warning(pristine_store, tmp_path, cli):
    store = store_copy(pristine_store, tmp_path)
    set_attr(store, complete=False)
    cli(separability.main, store, "--out", tmp_path / "sep", "--allow-incomplete", "--permutations", 0)
    summary = json.loads((tmp_path / "sep" / "summary.json").read_text())
    assert "not complete" in summary["store"]["warning"]
    html = tmp_path / "report.html"
    cli(report.main, "--separability", tmp_path / "sep", "-o", html)
    assert "the store is not complete" in html.read_text()
