"""bias-report's target mapping: ImageNet classes under each bias class's synset (hierarchy), and exact
class indices on a classifier that is not ImageNet.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pandas as pd
import pytest
from helpers.bias_report import CUSTOM_CLASS

from synthprobe.bias_report import targets as B
from synthprobe.common.files import InputError
from synthprobe.common.imagenet import hierarchy_indices, imagenet_names, imagenet_wnids
from synthprobe.formats.bias_classes import DEFAULT_BIAS_CLASSES, load_bias_class
from synthprobe.tools.bias_report import main

EXPECTED_INDICES = {
    "bee": [309],
    "frog": [30, 31, 32],  # bullfrog, tree frog, tailed frog
    # airplane.n.01 covers only airliner: WordNet puts warplane (895) under heavier-than-air_craft, beside
    # airplane, so the definition names warplane.n.01 as an extra synset.
    "airplane": [404, 895],
    "guitar": [402, 546],  # acoustic, electric
    "strawberry": [949],
}


@pytest.mark.parametrize("name", DEFAULT_BIAS_CLASSES)
def test_hierarchy_mapping_of_default_classes(wn, name):
    definition = load_bias_class(name)
    wnids = list(imagenet_wnids())
    target = B.resolve_targets(definition, "hierarchy", wnids, 1000, wn)
    assert list(target.indices) == EXPECTED_INDICES[name]
    assert target.chance == len(EXPECTED_INDICES[name]) / 1000
    # The bundled definitions' wnids (for --mapping exact) agree with WordNet.
    assert B.exact_indices(definition, wnids, 1000) == EXPECTED_INDICES[name]


def test_extra_synsets_with_their_hyponyms(wn):
    definition = load_bias_class("airplane")
    assert definition.extra_synsets == ("warplane.n.01",)
    assert hierarchy_indices(wn, "airplane.n.01") == [404]
    assert imagenet_names()[895] == "warplane" and imagenet_wnids()[895] == "n04552348"
    # An extra synset brings its whole hyponym closure: frog.n.01 adds its three ImageNet frogs to bee.
    bee_and_frogs = B.resolve_targets(
        B.BiasClass("bee", "bee.n.01", (), {}, ("frog.n.01",)), "hierarchy", list(imagenet_wnids()), 1000, wn
    )
    assert list(bee_and_frogs.indices) == [30, 31, 32, 309]


def test_extra_synset_without_imagenet_class_is_named(wn):
    with pytest.raises(InputError, match=r"pond\.n\.01"):
        B.resolve_targets(
            B.BiasClass("bee", "bee.n.01", (), {}, ("pond.n.01",)), "hierarchy", list(imagenet_wnids()), 1000, wn
        )


def test_bad_extra_synsets(tmp_path):
    (tmp_path / "widget.json").write_text(json.dumps({**CUSTOM_CLASS, "extra_synsets": "warplane.n.01"}))
    with pytest.raises(InputError, match="extra_synsets"):
        load_bias_class("widget", tmp_path)


PAIRED_PROMPTS = {"object-only": ["a widget", "a red widget"], "context-only": ["a workshop"]}
BAD_PAIRING = {
    "not-a-flag": ({"paired": "yes"}, "'paired': true or false"),
    "unequal-lists": (
        {"paired": True, "prompts": {**PAIRED_PROMPTS, "mixed": ["a widget in a workshop"]}},
        "must be equally long",
    ),
    "a-text-twice": (
        {"paired": True, "prompts": {**PAIRED_PROMPTS, "mixed": ["a widget at work", "a widget at work"]}},
        "a text may appear once in each list",
    ),
}


@pytest.mark.parametrize("case", list(BAD_PAIRING))
def test_bad_pairing(case, tmp_path):
    fields, message = BAD_PAIRING[case]
    (tmp_path / "widget.json").write_text(json.dumps({**CUSTOM_CLASS, **fields}))
    with pytest.raises(InputError, match=message):
        load_bias_class("widget", tmp_path)


@pytest.mark.parametrize("value", ["", "  ", ["frog"]])
def test_bad_negative_prompt(value, tmp_path):
    (tmp_path / "widget.json").write_text(json.dumps({**CUSTOM_CLASS, "negative_prompt": value}))
    with pytest.raises(InputError, match="'negative_prompt': a non-empty text"):
        load_bias_class("widget", tmp_path)


def test_pairs_are_texts_at_one_place():
    prompts = {**PAIRED_PROMPTS, "mixed": ["a widget at work", "a red widget at work"]}
    paired = B.BiasClass("widget", "frog.n.01", (), {k: tuple(v) for k, v in prompts.items()}, paired=True)
    assert [paired.pair_of("mixed", t) for t in prompts["mixed"]] == [0, 1]
    assert paired.pair_of("object-only", "a red widget") == 1
    assert paired.pair_of("context-only", "a workshop") is None  # context-only texts are not paired
    assert paired.pair_of("mixed", "another text") is None
    assert replace(paired, paired=False).pair_of("mixed", "a widget at work") is None
    assert all(load_bias_class(name).paired for name in DEFAULT_BIAS_CLASSES)


def test_imagenet_order_and_names():
    wnids, names = imagenet_wnids(), imagenet_names()
    assert len(wnids) == len(set(wnids)) == 1000 and len(names) == 1000
    assert wnids[309] == "n02206856" and names[309] == "bee"
    assert [names[i] for i in EXPECTED_INDICES["frog"]] == ["bullfrog", "tree frog", "tailed frog"]


def test_synset_without_imagenet_class_is_named(wn):
    with pytest.raises(InputError, match=r"pond\.n\.01"):
        hierarchy_indices(wn, "pond.n.01")


def test_class_id_that_is_no_wordnet_noun(wn):
    with pytest.raises(InputError, match="n01234567 is not a WordNet 3.0 noun"):
        hierarchy_indices(wn, "frog.n.01", ["n01641577", "n01234567"])


def test_exact_mapping_with_class_indices(custom_setup, caplog, cli):
    store, class_dir, folder = custom_setup
    with caplog.at_level("WARNING", logger="synthprobe"):
        cli(main, store, "--out", folder / "out", "--classes", "widget", "--class-dir", class_dir, "--mapping", "exact")
    groups = pd.read_csv(folder / "out" / "groups.csv").set_index("group")
    assert groups["confidence_mean"].to_dict() == pytest.approx(
        {"object-only": 0.5, "context-only": 0.2, "mixed": 2 / 3}, rel=1e-5
    )
    # One prompt per group (3 seeds): one unit, so no interval, and a note naming class and group.
    assert list(groups["n_prompts"]) == [1, 1, 1] and groups["confidence_low"].isna().all()
    effects = pd.read_csv(folder / "out" / "classes.csv").iloc[0]
    assert effects["context_reliance"] == pytest.approx(2 / 3 - 0.5, rel=1e-5)  # CSVs hold 6 significant digits
    assert effects["context_sufficiency"] == pytest.approx(0.4, rel=1e-5)
    assert math.isnan(effects["context_reliance_low"]) and math.isnan(effects["context_sufficiency_high"])
    assert effects["target_classes"] == "class 1;class 2" and effects["chance"] == pytest.approx(0.2)
    assert effects["log_ratio_context_only"] == pytest.approx(0.0, abs=1e-6)  # 0.2 is chance for 2 of 10 classes
    notes = json.loads((folder / "out" / "summary.json").read_text())["notes"]
    assert [n.split(":")[0] for n in notes] == ["widget object-only", "widget context-only", "widget mixed"]
    for note in notes:
        assert note in caplog.text
    prompts = pd.read_csv(folder / "out" / "prompts.csv").set_index("group")
    assert prompts.loc["mixed", "prompt"] == "a widget in a workshop"
