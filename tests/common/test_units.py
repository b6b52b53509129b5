"""The experimental unit shared by both analyses."""

from __future__ import annotations

import pandas as pd

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
    assert units.kind == "prompt" and units.summary() == {"unit": "prompt", "n_units": 5}
    assert units.codes.tolist() == [0, 0, 1, 2, 3, 4] and units.n_units == 5
    assert assign_units(ROWS, "prompt").codes.tolist() == units.codes.tolist()


def test_image_units():
    units = assign_units(ROWS, "image")
    assert units.kind == "image" and units.codes.tolist() == [0, 1, 2, 3, 4, 5]
