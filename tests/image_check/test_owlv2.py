"""image-check's detector judge (owlv2:): the best box score over the synset's lemma queries, its box kept in
checks.jsonl, context-only images judged by the same presence question; end to end on a tiny random OWLv2."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers.image_check import page_items, read_rows, write_bias_folder

from synthprobe.common.decode import load_rgb
from synthprobe.image_check import judges as J
from synthprobe.image_check import owlv2 as O
from synthprobe.image_check.checks import Thresholds, verdict
from synthprobe.tools.image_check import main


@pytest.fixture(scope="module")
def detected(tmp_path_factory, tiny_owlv2, wn):
    from click.testing import CliRunner

    root = tmp_path_factory.mktemp("owlv2")
    images = write_bias_folder(root / "images", size=32)
    result = CliRunner().invoke(
        main, [str(images), "--out", str(root / "checks"), "--judge", f"owlv2:{tiny_owlv2}", "--silent"]
    )
    assert result.exit_code == 0, result.output
    return images, root / "checks"


def test_object_score_is_the_best_box_over_the_lemma_queries(detected, tiny_owlv2, wn):
    images, checks = detected
    rows = read_rows(checks)
    assert len(rows) == 12 and {r["judge"] for r in rows} == {f"owlv2:tiny-owlv2@{J.folder_digest(tiny_owlv2)}"}
    # Recompute two rows with transformers' own processor, outside the stage's code.
    from transformers import Owlv2ForObjectDetection, Owlv2Processor

    model = Owlv2ForObjectDetection.from_pretrained(tiny_owlv2).eval()
    processor = Owlv2Processor.from_pretrained(tiny_owlv2)
    frog_queries = ["a photo of a frog", "a photo of a toad", "a photo of a toad frog", "a photo of an anuran"]
    assert O.lemma_queries(J.Target("frog.n.01", "frog.n.01", "", ()), wn)[:4] == frog_queries
    for row in (rows[0], rows[-1]):
        queries = O.lemma_queries(J.Target(row["synset"], row["synset"], "", ()), wn)
        inputs = processor(
            text=[queries], images=load_rgb(images / row["path"]), return_tensors="pt", padding="max_length"
        )
        with torch.no_grad():
            output = model(**inputs)
        scores = torch.sigmoid(output.logits[0].double()).numpy()
        best = int(scores.max(axis=1).argmax())
        assert row["object_score"] == pytest.approx(scores.max(), abs=2e-3)
        assert row["box"] == pytest.approx(O.corners(output.pred_boxes[0, best].numpy()), abs=0.05)
        assert row["context_score"] is None
        assert row["verdict"] == verdict(row["group"], row["object_score"], Thresholds())


def test_boxes_are_fractions_of_the_image_and_context_only_images_get_the_presence_question(detected):
    _, checks = detected
    for row in read_rows(checks):
        x0, y0, x1, y1 = row["box"]
        assert 0 <= x0 <= x1 <= 1 and 0 <= y0 <= y1 <= 1
        assert row["verdict"] in ("ok", "object-leaked" if row["group"] == "context-only" else "object-missing")


def test_corners_clip_to_the_image():
    assert O.corners(np.array([0.5, 0.5, 0.5, 0.25])) == [0.25, 0.375, 0.75, 0.625]
    assert O.corners(np.array([0.05, 0.95, 0.2, 0.2])) == [0.0, 0.85, 0.15, 1.0]


def test_judge_spec_and_load_errors_are_one_line(tmp_path, cli):
    images = write_bias_folder(tmp_path / "images", per_group=1, size=32)
    result = cli(main, images, "--out", tmp_path / "checks", "--judge", "owlv2:", exit_code=1)
    assert "--judge owlv2: needs a hub id" in result.output
    assert O.Owlv2Judge("google/owlv2-base-patch16-ensemble", "abc123").identity == (
        "owlv2:google/owlv2-base-patch16-ensemble@abc123"
    )
    (tmp_path / "not-a-model").mkdir()
    result = cli(
        main, images, "--out", tmp_path / "checks", "--judge", f"owlv2:{tmp_path / 'not-a-model'}", exit_code=1
    )
    assert result.output.startswith("Error: cannot load the OWLv2 judge") and len(result.output.splitlines()) == 1


def test_the_labelling_page_carries_the_detectors_boxes(detected, tmp_path, cli):
    images, checks = detected
    cli(main, "label", images, "--checks", checks, "-o", tmp_path / "labels.html", "--sample", 4, "--silent")
    boxes = {r["id"]: r["box"] for r in read_rows(checks)}
    items = page_items(tmp_path / "labels.html")
    assert len(items) == 4
    assert all(list(item["boxes"].values()) == [boxes[item["id"]]] for item in items)
