"""bias-report's experimental units: prompts by default, images with --unit image; a row without a prompt
text (an ImageFolder tree's image) is its own unit."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from helpers.bias_report import guitar_text, write_store

from synthprobe.formats.activation_store import ActivationStore
from synthprobe.formats.bias_classes import load_bias_class
from synthprobe.tools.bias_report import main


@pytest.fixture(scope="module")
def textless_store(imagenet_store, tmp_path_factory):
    """The same rows and logits with no prompt texts, as for images of an ImageFolder tree."""
    store, prompts = imagenet_store
    source = ActivationStore(store)
    rows = source.rows().assign(prompt="", template="")
    attrs = {name: source.attrs[name] for name in ("classes", "class_names")}
    textless = write_store(tmp_path_factory.mktemp("textless-store") / "bias.zarr", rows, source.logits(), attrs)
    assert (ActivationStore(textless).rows()["prompt"] == "").all()
    return textless, prompts


def test_unit_image_makes_every_image_a_unit(imagenet_store, tmp_path, cli):
    store, _ = imagenet_store
    cli(main, store, "--out", tmp_path, "--classes", "bee,frog,guitar", "--unit", "image", "--silent")
    groups = pd.read_csv(tmp_path / "groups.csv")
    assert (groups["n_prompts"] == groups["n"]).all()
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert (summary["unit"], summary["n_units"], summary["parameters"]["unit"]) == ("image", 29, "image")
    assert summary["definitions"]["unit"].startswith("the image")
    # With image units the group estimate is the plain image mean.
    images = pd.read_csv(tmp_path / "images.csv")
    image_means = images.groupby(["class", "group"])["confidence"].mean()
    for (name, group), mean in image_means.items():
        assert groups.set_index(["class", "group"]).loc[(name, group), "confidence_mean"] == pytest.approx(
            mean, rel=1e-5
        )


def test_rows_without_prompt_texts_are_their_own_units(textless_store, tmp_path, cli):
    store, prompts = textless_store
    cli(main, store, "--out", tmp_path, "--classes", "bee,frog,guitar", "--prompts", prompts, "--silent")
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert (summary["unit"], summary["n_units"]) == ("prompt", 29)
    # Texts to show come from --prompts, else from the id and the class definition.
    table = pd.read_csv(tmp_path / "prompts.csv", keep_default_na=False).set_index("id")
    assert table.loc["guitar-street", "prompt"] == guitar_text("street", "object-only")
    assert table.loc["bias-frog-mixed-01", "prompt"] == load_bias_class("frog").prompts["mixed"][1]
    assert table.loc["guitar-unlisted", "prompt"] == ""
