"""image-check's verdicts, and the analyses' --checks/--drop leaving out exactly the flagged images."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
from helpers.image_check import read_rows, write_bias_folder

from synthprobe.common.files import InputError
from synthprobe.formats import image_checks as K
from synthprobe.image_check import checks as C
from synthprobe.tools.image_check import main


def test_verdicts_follow_the_group():
    thresholds = C.Thresholds(missing_below=0.2, leaked_above=0.6)
    assert C.verdict("context-only", 0.7, thresholds) == "object-leaked"
    assert C.verdict("context-only", 0.1, thresholds) == "ok"
    assert all(C.verdict(g, 0.1, thresholds) == "object-missing" for g in ("object-only", "mixed", "concept"))
    assert all(C.verdict(g, 0.7, thresholds) == "ok" for g in ("object-only", "mixed", "concept"))
    assert C.verdict("mixed", math.nan, thresholds) == "unscored"


def test_checked_rows_drop_exactly_the_flagged_images(tmp_path):
    rows = pd.DataFrame(
        {
            "id": ["a", "b", "c", "d", "e"],
            "synset": ["bee.n.01"] * 3 + ["frog.n.01"] * 2,
            "group": ["object-only", "context-only", "mixed", "object-only", "context-only"],
        }
    )
    checks = [
        {"schema": 1, "id": i, "judge": judge, "verdict": v}
        for i, judge, v in (
            ("a", "clip:x", "object-missing"),
            ("b", "clip:x", "object-leaked"),
            ("c", "clip:x", "ok"),
            ("d", "clip:x", "ok"),
            ("d", "resnet50@none", "object-missing"),
        )
    ]  # e has no check
    path = tmp_path / "checks.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in checks))
    keep, flagged, _ = K.checked_rows(rows, None, ())
    assert keep.all() and not flagged.any()
    for drop, dropped in (
        ((), set()),
        (("object-leaked",), {"b"}),
        (("object-missing",), {"a", "d"}),
        (K.FLAGS, {"a", "b", "d"}),
    ):
        keep, flagged, summary = K.checked_rows(rows, path, drop)
        assert set(rows["id"][~keep]) == dropped
        assert set(rows["id"][flagged]) == {"a", "b", "d"}
        assert summary["n_dropped"] == len(dropped) and summary["n_unchecked"] == 1
    bee_object_only = next(c for c in summary["counts"] if (c["synset"], c["group"]) == ("bee.n.01", "object-only"))
    assert bee_object_only == {
        "synset": "bee.n.01",
        "group": "object-only",
        "n": 1,
        "checked": 1,
        "object-missing": 1,
        "object-leaked": 0,
        "dropped": 1,
    }
    assert summary["judges"] == ["clip:x", "resnet50@none"]
    with pytest.raises(InputError, match="holds checks of other images"):
        K.checked_rows(rows.assign(id=rows["id"] + "-other"), path, ())
    with pytest.raises(InputError, match="--drop needs --checks"):
        K.checked_rows(rows, None, ("object-missing",))


def test_analyses_leave_out_exactly_the_dropped_images(tmp_path, tiny_clip, wn, cli):
    from synthprobe.tools.bias_report import main as bias_report
    from synthprobe.tools.cnn_hooks import main as cnn_hooks
    from synthprobe.tools.separability import main as separability

    images, checks = write_bias_folder(tmp_path / "images"), tmp_path / "checks"
    cli(
        cnn_hooks,
        images,
        "--out",
        tmp_path / "acts.zarr",
        "--model",
        "resnet18",
        "--weights",
        "none",
        "--image-size",
        "64",
        "--layers",
        "layer4",
        "--workers",
        "0",
        "--silent",
    )
    cli(main, images, "--out", checks, "--judge", f"clip:{tiny_clip}", "--silent")
    scores = read_rows(checks)
    context = sorted(r["object_score"] for r in scores if r["group"] == "context-only")
    other = sorted(r["object_score"] for r in scores if r["group"] != "context-only")
    # One leak and one miss, so that every synset keeps images.
    cli(
        main,
        images,
        "--out",
        checks,
        "--judge",
        f"clip:{tiny_clip}",
        "--silent",
        "--leaked-above",
        (context[-1] + context[-2]) / 2,
        "--missing-below",
        (other[0] + other[1]) / 2,
    )
    flagged = {r["verdict"]: r["id"] for r in read_rows(checks) if r["verdict"] != "ok"}
    assert set(flagged) == set(K.FLAGS)
    checks_file = str(checks / K.CHECKS_FILE)

    def bias_ids(out, *extra):
        cli(bias_report, tmp_path / "acts.zarr", "--out", out, "--classes", "bee,frog", "--silent", *extra)
        return set(pd.read_csv(out / "images.csv")["id"]), json.loads((out / "summary.json").read_text())

    everything, plain = bias_ids(tmp_path / "bias-all")
    counted, summary = bias_ids(tmp_path / "bias-counted", "--checks", checks_file)
    assert counted == everything and len(everything) == 12 and "checks" not in plain
    assert summary["checks"]["n_dropped"] == 0 and sum(c["object-leaked"] for c in summary["checks"]["counts"]) == 1
    # Every group with and without the flagged images, side by side.
    groups = pd.read_csv(tmp_path / "bias-counted" / "groups.csv")
    images_table = pd.read_csv(tmp_path / "bias-counted" / "images.csv")
    assert (groups["n"] - groups["n_unflagged"]).sum() == 2
    for line in groups.itertuples():
        clean = images_table[
            (images_table["class"] == line[1])
            & (images_table["group"] == line.group)
            & ~images_table["id"].isin(set(flagged.values()))
        ]
        assert line.n_unflagged == len(clean)
        assert line.confidence_mean_unflagged == pytest.approx(
            clean.groupby("unit")["confidence"].mean().mean(), rel=1e-5
        )
    assert "n_unflagged" not in pd.read_csv(tmp_path / "bias-all" / "groups.csv")
    kept, summary = bias_ids(tmp_path / "bias-drop", "--checks", checks_file, "--drop", "object-missing,object-leaked")
    assert kept == everything - set(flagged.values())
    assert summary["checks"]["n_dropped"] == 2 and summary["parameters"]["drop"] == list(K.FLAGS)
    kept, _ = bias_ids(tmp_path / "bias-leak", "--checks", checks_file, "--drop", "object-leaked")
    assert kept == everything - {flagged["object-leaked"]}

    sep = [
        str(tmp_path / "acts.zarr"),
        "--group",
        "object-only,mixed",
        "--permutations",
        "0",
        "--folds",
        "2",
        "--unit",
        "image",
        "--silent",
    ]
    cli(separability, *sep, "--out", tmp_path / "sep-all")
    cli(separability, *sep, "--out", tmp_path / "sep-drop", "--checks", checks_file, "--drop", "object-missing")
    before = json.loads((tmp_path / "sep-all" / "summary.json").read_text())
    after = json.loads((tmp_path / "sep-drop" / "summary.json").read_text())
    assert before["n_images"] == 8 and after["n_images"] == 7 and after["checks"]["n_dropped"] == 1
    result = cli(
        bias_report,
        tmp_path / "acts.zarr",
        "--out",
        tmp_path / "b",
        "--checks",
        checks_file,
        "--drop",
        "object-gone",
        exit_code=2,  # click's usage error: Usage, then the Error line
    )
    assert "Error: Invalid value for '--drop': object-gone is not one of object-missing" in result.output
