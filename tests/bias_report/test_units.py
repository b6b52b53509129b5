"""bias-report's experimental units: prompts by default, images with --unit image or on a store made before
the row table held prompt texts.
"""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
from helpers import fails_with
from helpers.bias_report import guitar_text

from synthprobe.formats.activation_store import ActivationStore
from synthprobe.formats.bias_classes import load_bias_class
from synthprobe.tools.bias_report import main


@pytest.fixture(scope="module")
def old_store(imagenet_store, tmp_path_factory):
    """The same store as made before rows/prompt and rows/template existed."""
    store, prompts = imagenet_store
    old = tmp_path_factory.mktemp("old-store") / "bias.zarr"
    shutil.copytree(store, old)
    for name in ("prompt", "template"):
        shutil.rmtree(old / "rows" / name)
    assert "prompt" not in ActivationStore(old).rows()
    return old, prompts


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


def test_old_store_falls_back_to_image_units(old_store, tmp_path, caplog, cli):
    store, prompts = old_store
    with caplog.at_level("WARNING", logger="synthprobe"):
        cli(main, store, "--out", tmp_path, "--classes", "bee,frog,guitar", "--prompts", prompts)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["unit"] == "image" and "no prompt texts" in summary["unit_note"]
    assert summary["unit_note"] in caplog.text
    # Texts to show come from --prompts, else from the id and the class definition.
    table = pd.read_csv(tmp_path / "prompts.csv", keep_default_na=False).set_index("id")
    assert table.loc["guitar-street", "prompt"] == guitar_text("street", "object-only")
    assert table.loc["bias-frog-mixed-01", "prompt"] == load_bias_class("frog").prompts["mixed"][1]
    assert table.loc["guitar-unlisted", "prompt"] == ""


def test_unit_prompt_on_an_old_store(old_store, tmp_path, cli):
    store, _ = old_store
    result = cli(main, store, "--out", tmp_path / "out", "--classes", "bee", "--unit", "prompt", exit_code=None)
    fails_with(result, "no prompt texts", "--unit image")
    assert not (tmp_path / "out").exists()
