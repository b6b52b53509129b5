"""image-check audit: the judge's error rates against labels, their intervals' coverage on simulated labels under the
labelling page's sample design, the corrected flag rates, and the audited thresholds the check takes.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from helpers.image_check import page_items, read_rows, write_bias_folder

from synthprobe.common.stats import Estimate, clustered_proportion
from synthprobe.formats.analysis_folder import read_summary
from synthprobe.formats.labels import Label, write_labels
from synthprobe.image_check import audit as A
from synthprobe.image_check.checks import Thresholds, verdict
from synthprobe.image_check.correction import rogan_gladen
from synthprobe.image_check.labels import allocate, draw_sample
from synthprobe.image_check.roc import auc, chosen_threshold, cuts
from synthprobe.tools.image_check import main

# ---- the sample design -----------------------------------------------------------------------


def test_allocation_takes_every_stratum_oversamples_flagged_and_never_more_than_there_is():
    sizes, factors = np.array([100, 10, 3, 50]), np.array([1, 4, 4, 1])
    take = allocate(sizes, factors, 40)
    assert take.sum() == 40 and (take >= 1).all() and (take <= sizes).all()
    assert take[2] == 3  # a small flagged stratum is taken whole
    assert take[1] / sizes[1] > 2 * take[0] / sizes[0]  # flagged strata sampled more densely
    assert allocate(sizes, factors, 1000).tolist() == sizes.tolist()
    assert allocate(sizes, factors, 2).tolist() == [1, 0, 0, 1]  # short of strata: the largest demand first


# ---- coverage on simulated labels ------------------------------------------------------------


def population(rng, prompts: int, per_prompt: int, prevalence: float, sensitivity: float, specificity: float):
    """Images of ``prompts`` prompts; each prompt has its own prevalence and judge error (Beta around the given
    means), so the images of a prompt are correlated in both the answer and the verdict."""
    unit = np.repeat(np.arange(prompts), per_prompt)
    prompt_prevalence = rng.beta(prevalence * 3, (1 - prevalence) * 3, size=prompts)[unit]
    prompt_se = rng.beta(sensitivity * 9, (1 - sensitivity) * 9, size=prompts)[unit]
    prompt_sp = rng.beta(specificity * 9, (1 - specificity) * 9, size=prompts)[unit]
    condition = rng.random(len(unit)) < prompt_prevalence
    flagged = np.where(condition, rng.random(len(unit)) < prompt_se, rng.random(len(unit)) > prompt_sp)
    return pd.DataFrame(
        {
            "id": [f"i{i}" for i in range(len(unit))],
            "synset": "frog.n.01",
            "group": "object-only",
            "flagged": flagged,
            "condition": condition,
            "unit": unit.astype(str),
        }
    )


def labelled(rng, images: pd.DataFrame, n: int) -> pd.DataFrame:
    """The page's stratified sample of ``images``, answered without error, as the audit joins it."""
    sample = draw_sample(images, n, int(rng.integers(1 << 31))).rows
    return sample[["unit", "stratum", "weight", "condition", "flagged"]].assign(score=0.5)


REPEATS = 600  # coverage to about +-0.009 (one standard error)
SCENARIOS = {
    "common flags, 4 images a prompt": dict(
        prompts=300, per_prompt=4, prevalence=0.3, sensitivity=0.8, specificity=0.9
    ),
    "few prompts, 8 images each": dict(prompts=100, per_prompt=8, prevalence=0.3, sensitivity=0.8, specificity=0.9),
}


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_audit_intervals_reach_their_nominal_coverage(scenario):
    truth = SCENARIOS[scenario]
    prevalence, se, sp = truth["prevalence"], truth["sensitivity"], truth["specificity"]
    expected = {
        "sensitivity": se,
        "specificity": sp,
        "precision": prevalence * se / (prevalence * se + (1 - prevalence) * (1 - sp)),
    }
    rng = np.random.default_rng(len(scenario))
    covered = {name: [] for name in A.MEASURES}
    for _ in range(REPEATS):
        row = A.measure(labelled(rng, population(rng, **truth), 200), A.KINDS[0])
        for name in A.MEASURES:
            covered[name].append(row[f"{name}_low"] <= expected[name] <= row[f"{name}_high"])
    coverage = {name: float(np.mean(hits)) for name, hits in covered.items()}
    assert all(0.92 <= c <= 0.97 for c in coverage.values()), coverage


def test_ignoring_the_design_overcovers_specificity():
    """The check can fail: an unweighted, unstratified interval is not what the audit computes."""
    rng = np.random.default_rng(7)
    truth = SCENARIOS["common flags, 4 images a prompt"]
    widths = []
    for _ in range(40):
        part = labelled(rng, population(rng, **truth), 200)
        ours = A.measure(part, A.KINDS[0])
        negatives = part[~part["condition"]]
        naive = clustered_proportion((~negatives["flagged"]).astype(int), np.ones(len(negatives)))
        widths.append((ours["specificity_high"] - ours["specificity_low"]) / (naive.high - naive.low))
    assert np.mean(widths) < 0.8, np.mean(widths)  # stratifying by verdict makes specificity sharper


def test_corrected_rate_intervals_cover_the_true_rate():
    rng = np.random.default_rng(3)
    truth = dict(prompts=300, per_prompt=4, prevalence=0.2, sensitivity=0.8, specificity=0.9)
    covered, apparent = [], []
    for _ in range(300):
        images = population(rng, **truth)
        per_prompt = images.groupby("unit")["flagged"].agg(["sum", "size"])
        rate = clustered_proportion(per_prompt["sum"], per_prompt["size"])
        row = A.measure(labelled(rng, images, 200), A.KINDS[0])
        se, sp = (Estimate(row[m], row[f"{m}_low"], row[f"{m}_high"]) for m in ("sensitivity", "specificity"))
        corrected = rogan_gladen(rate, se, sp)
        covered.append(corrected.low <= truth["prevalence"] <= corrected.high)
        apparent.append(rate.low <= truth["prevalence"] <= rate.high)
    assert 0.92 <= np.mean(covered) <= 0.97, np.mean(covered)
    assert np.mean(apparent) < 0.5  # the flag rate itself is biased: 0.2 x 0.8 + 0.8 x 0.1 = 0.24


def test_rogan_gladen_is_undefined_for_a_judge_no_better_than_chance():
    assert np.isnan(rogan_gladen(Estimate(0.3, 0.2, 0.4), Estimate(0.5, 0.4, 0.6), Estimate(0.5, 0.4, 0.6)).value)
    exact = rogan_gladen(Estimate(0.24, 0.2, 0.28), Estimate(0.8, 0.7, 0.9), Estimate(0.9, 0.85, 0.95))
    assert exact.value == pytest.approx(0.2) and exact.low < 0.2 < exact.high


# ---- the command -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def checked(tmp_path_factory, tiny_clip, wn):
    """(images, checks folder, labelling page) of 18 bias images checked by the tiny CLIP, 12 of them sampled."""
    from click.testing import CliRunner

    root = tmp_path_factory.mktemp("audit")
    images, checks, page = write_bias_folder(root / "images", per_group=3), root / "checks", root / "labels.html"
    for args in (
        [images, "--out", checks, "--judge", f"clip:{tiny_clip}", "--silent"],
        ["label", images, "--checks", checks, "-o", page, "--sample", 12, "--seed", 0, "--silent"],
    ):
        result = CliRunner().invoke(main, [str(a) for a in args])
        assert result.exit_code == 0, result.output
    return images, checks, page


def answer_page(page, path, answer_of) -> list[Label]:
    labels = [
        Label(
            item["id"],
            item["sha256"],
            answer_of(item),
            "2026-01-01T00:00:00Z",
            item["weight"],
            item["stratum"],
            item["prompt"],
        )
        for item in page_items(page)
    ]
    write_labels(path, labels)
    return labels


def test_audit_measures_each_judge_against_the_labels(checked, tmp_path, cli):
    images, checks, page = checked
    items = page_items(page)
    assert len(items) == 12 and {i["group"] for i in items} == {"object-only", "context-only", "mixed"}
    # A person who says the object is there in every other image.
    answer_page(page, tmp_path / "labels.jsonl", lambda item: "yes" if int(item["id"][-6:-4]) % 2 else "no")
    cli(
        main,
        "audit",
        "--checks",
        checks,
        "--labels",
        tmp_path / "labels.jsonl",
        "-o",
        tmp_path / "audit",
        "--target-recall",
        0.5,
    )
    table = pd.read_csv(tmp_path / "audit" / A.AUDIT_FILE)
    assert list(table.columns) == A.AUDIT_COLUMNS
    for column in ("judge", "kind", "n", "sensitivity", "specificity", "precision", "auc"):
        assert column in table and (column in ("judge", "kind", "n", "auc") or f"{column}_low" in table)
    rows = {r["id"]: r for r in read_rows(checks)}
    answers = {json.loads(line)["id"]: json.loads(line) for line in (tmp_path / "labels.jsonl").open()}
    for _, measured in table.iterrows():
        kind = next(k for k in A.KINDS if k.name == measured["kind"])
        mine = [(answers[i], rows[i]) for i in answers if A.kind_of_group(rows[i]["group"]) == kind]
        weight = np.array([a["weight"] for a, _ in mine])
        condition = np.array([a["answer"] == kind.condition for a, _ in mine])
        flagged = np.array([r["verdict"] == kind.flag for _, r in mine])
        assert measured["n"] == len(mine)
        if condition.any():
            assert measured["sensitivity"] == pytest.approx(
                (weight * flagged * condition).sum() / (weight * condition).sum()
            )
        assert measured["specificity"] == pytest.approx(
            (weight * ~flagged * ~condition).sum() / (weight * ~condition).sum()
        )
    summary = read_summary(tmp_path / "audit")
    assert summary.kind == "image-check-audit" and set(summary.tables) == {
        "audit",
        "roc",
        "thresholds",
        "corrected_rates",
    }
    assert summary.summary["labels"]["yes"] + summary.summary["labels"]["no"] == 12


def test_audited_thresholds_are_taken_and_recorded(checked, tmp_path, tiny_clip, cli):
    images, checks, page = checked
    answer_page(page, tmp_path / "labels.jsonl", lambda item: "no" if item["group"] != "context-only" else "yes")
    audit = tmp_path / "audit"
    cli(main, "audit", "--checks", checks, "--labels", tmp_path / "labels.jsonl", "-o", audit, "--target-recall", 0.5)
    (thresholds,) = read_summary(audit).summary["thresholds"].values()
    out = tmp_path / "rechecked"
    shutil.copytree(checks, out)  # its scores are the cache: re-thresholding loads no model
    judge = ("--judge", f"clip:{tiny_clip}", "--silent")
    cli(main, images, "--out", out, *judge, "--missing-below", "audited", "--leaked-above", "audited", "--audit", audit)
    rows = read_rows(out)
    assert {r["missing_below"] for r in rows} == {thresholds["missing_below"]}
    assert {r["leaked_above"] for r in rows} == {thresholds["leaked_above"]}
    assert read_summary(out).summary["provenance"]["inputs"]["audit"] == str(audit.resolve())
    result = cli(main, images, "--out", out, *judge, "--missing-below", "audited", exit_code=1)
    assert "need --audit AUDIT_DIR" in result.output


def test_labels_of_changed_images_are_refused_by_name(checked, tmp_path, fails_cleanly):
    images, checks, page = checked
    labels = answer_page(page, tmp_path / "labels.jsonl", lambda item: "yes")
    changed = labels[3]
    write_labels(tmp_path / "labels.jsonl", [*labels[:3], Label(changed.id, "0" * 64, "no", 0), *labels[4:]])
    args = ["audit", "--checks", checks, "--labels", tmp_path / "labels.jsonl", "-o", tmp_path / "audit"]
    line = fails_cleanly(main, args, tmp_path, [changed.id, "labels.jsonl:4", "changed since it was labelled"])
    assert "label it again" in line


def test_help_says_the_check_is_the_default_command(cli):
    assert "A first argument that is not a command runs check" in cli(main, "--help").output


def test_auc_matches_scikit_learn_with_weights_and_ties():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(11)
    part = pd.DataFrame(
        {
            "condition": rng.random(60) < 0.4,
            "score": rng.integers(0, 7, size=60) / 6,  # many ties
            "weight": rng.choice([1.0, 2.5, 7.0], size=60),
        }
    )
    for kind in A.KINDS:
        strength = -part["score"] if kind.low_flags else part["score"]
        expected = roc_auc_score(part["condition"], strength, sample_weight=part["weight"])
        assert auc(part, kind.low_flags) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("kind", A.KINDS, ids=lambda k: k.name)
def test_chosen_threshold_flags_as_the_check_would_and_reaches_its_target(kind):
    rng = np.random.default_rng(5)
    condition = rng.random(80) < 0.4
    deserving = rng.beta(2, 5, 80) if kind.low_flags else rng.beta(5, 2, 80)  # scores of images deserving the flag
    score = np.round(np.where(condition, deserving, 1 - deserving), 3)
    part = pd.DataFrame({"condition": condition, "score": score, "weight": rng.choice([1.0, 3.0], 80)})
    table = cuts(part, kind.low_flags)
    assert table["threshold"].between(0, 1).all() and table["recall"].max() == 1
    for target in (0.7, 0.8):
        chosen = chosen_threshold(table, precision=target)
        group = "context-only" if kind.name == "leaked" else "object-only"
        thresholds = Thresholds(chosen["threshold"], chosen["threshold"])
        flagged = np.array([verdict(group, value, thresholds) != "ok" for value in score])
        w = part["weight"].to_numpy()
        assert chosen["precision"] == pytest.approx((w * flagged * condition).sum() / (w * flagged).sum())
        assert chosen["recall"] == pytest.approx((w * flagged * condition).sum() / (w * condition).sum())
        assert chosen["precision"] >= target
        better = table[table["precision"] >= target]
        assert chosen["recall"] == better["recall"].max()  # the most recall among the cuts that reach the target
    assert np.isnan(chosen_threshold(table, precision=1.01)["threshold"])
