"""bias-report on a synthetic ImageNet store: golden tables and summary, confidences, per-prompt, per-group
and per-class tables, the cross-class matrix, figures.

The intervals' calibration is tested in test_bias_stats.py.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from helpers.bias_report import TARGETS
from scipy import stats

from synthprobe.bias_report import Params, analyse, read_inputs, write
from synthprobe.bias_report.outputs import TABLES
from synthprobe.formats.activation_store import ActivationStore
from synthprobe.formats.bias_classes import load_bias_class
from synthprobe.tools.bias_report import main


@pytest.fixture(scope="module")
def imagenet_report(wn, imagenet_store, tmp_path_factory, cli):
    store, prompts = imagenet_store
    out = tmp_path_factory.mktemp("report")
    cli(main, store, "--out", out, "--classes", "bee,frog,guitar", "--top", 3, "--silent")
    return store, out


def normalized_summary(out, store) -> str:
    """summary.json with the temporary folder of the store and prompt file masked."""
    return (out / "summary.json").read_text().replace(str(store.parent), "<tmp>")


@pytest.mark.parametrize("name", sorted(file for file, _ in TABLES.values()))
def test_golden_tables(imagenet_report, golden, name):
    _, out = imagenet_report
    golden.check_close(f"bias_report/{name}", (out / name).read_text())


def test_golden_summary(imagenet_report, golden):
    store, out = imagenet_report
    golden.check_close("bias_report/summary.json", normalized_summary(out, store), masked=("synthprobe",))


def test_notebook_steps_give_the_command_s_folder_and_leave_the_inputs_alone(wn, imagenet_report, tmp_path):
    store, out = imagenet_report
    params = Params(classes=("bee", "frog", "guitar"), top=3)
    inputs = read_inputs(store, params)
    rows, logits = inputs.rows.copy(deep=True), inputs.logits.copy()
    result = analyse(inputs, params)
    assert inputs.rows.equals(rows) and np.array_equal(inputs.logits, logits)
    write(result, tmp_path / "notebook")
    for file, _ in TABLES.values():
        assert (tmp_path / "notebook" / file).read_text() == (out / file).read_text(), file
    assert normalized_summary(tmp_path / "notebook", store) == normalized_summary(out, store)


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
    # The estimate is the mean of the prompts' means, the interval a t-interval over them, cut at 0 ...
    bee_context = images[(images["class"] == "bee") & (images["group"] == "context-only")]
    prompt_means = bee_context.groupby("unit")["confidence"].mean()
    expected = stats.ttest_1samp(prompt_means, 0).confidence_interval(0.95)
    line = groups.loc[("bee", "context-only")]
    assert expected.low < 0 < expected.high < 1
    assert (line["confidence_mean"], line["confidence_low"], line["confidence_high"]) == pytest.approx(
        (prompt_means.mean(), 0, expected.high), rel=1e-5
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
    # bee's and frog's files pair their texts (text k object-only with text k mixed): a paired t on the pairs'
    # unit means; guitar's images have texts of no class file: Welch.
    assert list(classes["context_reliance_test"]) == ["paired", "paired", "welch"]
    assert list(classes["context_reliance_n_pairs"].fillna(0)) == [2, 2, 0]
    for name in ("bee", "frog"):
        pairs = images[images["class"] == name].groupby(["group", "pair"])["confidence"].mean()
        expected = stats.ttest_rel(pairs["mixed"], pairs["object-only"])
        assert classes.loc[name, "context_reliance_p"] == pytest.approx(expected.pvalue, rel=1e-4)
    assert images.loc[images["class"] == "guitar", "pair"].isna().all()
    assert images.loc[images["group"] == "context-only", "pair"].isna().all()
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
    # Log ratios' intervals are on the log scale: log ratio ± t(units - 1) s / (sqrt(units) mean).
    bee_units = images[(images["class"] == "bee") & (images["group"] == "mixed")].groupby("unit")["confidence"].mean()
    half = stats.t.ppf(0.975, 1) * bee_units.std() / (math.sqrt(2) * bee_units.mean())
    assert (classes.loc["bee", "log_ratio_mixed_low"], classes.loc["bee", "log_ratio_mixed_high"]) == pytest.approx(
        (classes.loc["bee", "log_ratio_mixed"] - half, classes.loc["bee", "log_ratio_mixed"] + half), rel=1e-5
    )

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
    assert (summary["unit"], summary["n_units"]) == ("prompt", 15)
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
