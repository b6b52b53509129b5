"""The experimental unit shared by both analyses."""

from __future__ import annotations

import logging

import pandas as pd
import pytest

from synthprobe.common.files import InputError
from synthprobe.common.units import assign_units

ROWS = pd.DataFrame(
    {
        "id": ["a0", "a1", "b0", "c0", "photo1", "photo2"],
        "synset": ["dog.n.01", "dog.n.01", "cat.n.01", "dog.n.01", "dog.n.01", "dog.n.01"],
        # a0 and a1 are two seeds of one prompt; the same text for a cat is another unit; photos have no prompt
        "prompt": ["a photo of a pet", "a photo of a pet", "a photo of a pet", "a dog running", "", ""],
    }
)


def test_prompt_units_are_synset_and_prompt_text_and_photos_are_their_own():
    units = assign_units(ROWS, None)
    assert units.kind == "prompt" and units.note is None
    assert units.codes.tolist() == [0, 0, 1, 2, 3, 4] and units.n_units == 5
    assert assign_units(ROWS, "prompt").codes.tolist() == units.codes.tolist()


def test_image_units():
    units = assign_units(ROWS, "image")
    assert units.kind == "image" and units.codes.tolist() == [0, 1, 2, 3, 4, 5]


def test_rows_without_prompt_texts(caplog):
    old = ROWS.drop(columns="prompt")
    with pytest.raises(InputError, match="acts.zarr has no prompt texts .* use --unit image, or rebuild"):
        assign_units(old, "prompt", source="acts.zarr")
    caplog.set_level(logging.WARNING, logger="synthprobe")
    units = assign_units(old, None, source="acts.zarr")
    assert units.kind == "image" and units.n_units == 6
    assert "each image is its own unit" in units.note and units.note in caplog.text
    assert units.summary() == {"unit": "image", "n_units": 6, "unit_note": units.note}
