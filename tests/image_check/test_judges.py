"""image-check's judges: CLIP and classifier scores, thresholds that rescore nothing, resume, bad input, the
GPU against the CPU.
"""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import fails_with, smooth_image, write_manifest
from helpers.image_check import BIAS_CLASSES, GROUPS, clip_settings, read_rows, write_bias_folder
from PIL import Image
from scipy.special import softmax

from synthprobe.common.decode import load_rgb
from synthprobe.common.files import InputError
from synthprobe.common.imagenet import hierarchy_indices
from synthprobe.common.networks import build_network
from synthprobe.formats import image_checks as K
from synthprobe.formats.analysis_folder import SUMMARY_FILE
from synthprobe.formats.bias_classes import load_bias_class
from synthprobe.image_check import checks as C
from synthprobe.image_check import judges as J
from synthprobe.tools.image_check import main


def test_clip_judge_scores_are_softmax_probabilities_of_the_right_captions(tmp_path, tiny_clip, wn, golden, cli):
    images = write_bias_folder(tmp_path / "images")
    cli(main, images, "--out", tmp_path / "checks", "--judge", f"clip:{tiny_clip}", "--silent")
    rows = read_rows(tmp_path / "checks")
    assert [r["id"] for r in rows] == [json.loads(line)["id"] for line in (images / "images.jsonl").open()]
    # Recompute two rows by hand with transformers' own processor, outside the stage's code.
    from transformers import CLIPModel, CLIPProcessor

    model, processor = CLIPModel.from_pretrained(tiny_clip).eval(), CLIPProcessor.from_pretrained(tiny_clip)
    captions = [
        f"a photo of a {name}, {wn.synset(synset).definition().split(';')[0].strip()}"
        for name, synset in BIAS_CLASSES.items()
    ] + list(J.BACKGROUND_PROMPTS)
    bee_context = list(load_bias_class("bee").prompts["context-only"])
    for row in (rows[0], rows[2]):  # bee object-only, bee context-only
        inputs = processor(
            text=captions + bee_context,
            images=load_rgb(images / row["path"]),
            return_tensors="pt",
            padding=True,
            truncation=True,
        )
        with torch.no_grad():
            logits = model(**inputs).logits_per_image[0].double().numpy()
        object_p = softmax(logits[: len(captions)])[0]
        context_p = softmax(logits)[len(captions) :].sum()
        # Within the resampling difference of PIL's resize in transformers and torchvision's.
        assert row["object_score"] == pytest.approx(object_p, rel=2e-3)
        assert row["context_score"] == pytest.approx(context_p, rel=2e-3)
        assert row["verdict"] == C.verdict(row["group"], row["object_score"], C.Thresholds())
    summary = json.loads((tmp_path / "checks" / SUMMARY_FILE).read_text())
    assert summary["n_images"] == 12 and sum(summary["verdicts"].values()) == 12
    assert [(c["synset"], c["group"], c["n"]) for c in summary["counts"]] == [
        (synset, group, 2) for synset in BIAS_CLASSES.values() for group in sorted(GROUPS)
    ]
    # The judge's name carries a digest of the tiny CLIP's random weights, whose last bits differ between CPUs (torch's
    # normal_ kernels); sha256 hashes PNG bytes, which change with Pillow's zlib.
    assert all(r["judge"].startswith("clip:tiny-clip@") for r in rows)
    checks = (tmp_path / "checks" / K.CHECKS_FILE).read_text()
    golden.check_close("image_check/clip-checks.jsonl", checks, masked=("judge", "sha256"))


def test_classifier_judge_is_the_softmax_mass_of_the_hyponym_closure(tmp_path, wn, cli):
    rng = np.random.default_rng(1)
    for folder in ("frog.n.01", "n01440764", "cloud.n.01", "cats"):  # a synset, a wnid, no ImageNet class, no synset
        (tmp_path / "photos" / folder).mkdir(parents=True)
        Image.fromarray(smooth_image(rng, 64)).save(tmp_path / "photos" / folder / "a.png")
    cli(main, tmp_path / "photos", "--out", tmp_path / "checks", "--judge", "resnet18", "--weights", "none", "--silent")
    rows = {r["synset"]: r for r in read_rows(tmp_path / "checks")}
    network = build_network("resnet18", "none")
    for synset, closure in (("frog.n.01", "frog.n.01"), ("n01440764", "tench.n.01")):
        pixels = network.preprocessing.to_uint8(load_rgb(tmp_path / "photos" / rows[synset]["path"]))[None]
        with torch.no_grad():
            probabilities = torch.softmax(
                network.module(network.preprocessing.normalizer(torch.device("cpu"))(pixels)).double(), 1
            )[0].numpy()
        assert rows[synset]["object_score"] == pytest.approx(
            probabilities[hierarchy_indices(wn, closure)].sum(), rel=1e-5
        )
        assert rows[synset]["judge"] == "resnet18@none" and rows[synset]["context_score"] is None
    assert rows["cloud.n.01"]["verdict"] == "unscored" and rows["cloud.n.01"]["object_score"] is None
    assert rows["cloud.n.01"]["note"] == "no ImageNet class lies under cloud.n.01"
    assert rows["cats"]["verdict"] == "unscored" and rows["cats"]["note"] == "cats is not a WordNet synset"


def test_thresholds_change_exactly_the_rows_that_cross_them_and_score_nothing(
    tmp_path, tiny_clip, wn, monkeypatch, caplog, cli
):
    images, out = write_bias_folder(tmp_path / "images"), tmp_path / "checks"
    cli(main, images, "--out", out, "--judge", f"clip:{tiny_clip}", "--silent")
    before = read_rows(out)
    context = sorted(r["object_score"] for r in before if r["group"] == "context-only")
    other = sorted(r["object_score"] for r in before if r["group"] != "context-only")
    leaked_above, missing_below = (context[1] + context[2]) / 2, (other[3] + other[4]) / 2

    def no_model(*_):
        raise AssertionError("re-thresholding must not load the judge")

    monkeypatch.setattr(J, "load_clip", no_model)
    caplog.set_level(logging.INFO, logger="synthprobe")
    cli(
        main,
        images,
        "--out",
        out,
        "--judge",
        f"clip:{tiny_clip}",
        "--missing-below",
        missing_below,
        "--leaked-above",
        leaked_above,
    )
    assert "scored 0 images, reused 12" in caplog.text
    after = read_rows(out)
    assert [r["object_score"] for r in after] == [r["object_score"] for r in before]
    changed = {r["id"] for r, s in zip(before, after) if r["verdict"] != s["verdict"]}
    crossing = {
        r["id"]
        for r in before
        if (r["group"] == "context-only" and (r["object_score"] > leaked_above) != (r["object_score"] > 0.5))
        or (r["group"] != "context-only" and (r["object_score"] < missing_below) != (r["object_score"] < 0.1))
    }
    assert changed == crossing and changed
    assert sum(r["verdict"] == "object-leaked" for r in after) == 2
    assert sum(r["verdict"] == "object-missing" for r in after) == 4
    assert {r["missing_below"] for r in after} == {missing_below}
    summary = json.loads((out / SUMMARY_FILE).read_text())
    assert summary["thresholds"] == {"missing_below": missing_below, "leaked_above": leaked_above}
    assert summary["verdicts"]["object-leaked"] == 2
    rates = pd.read_csv(out / summary["tables"]["rates"]["file"])  # follow the new flags, per synset and group
    assert rates["n_flagged"].sum() == 6 and set(rates["flag"]) == {"object-leaked", "object-missing"}
    leaked = rates[rates["flag"] == "object-leaked"]
    assert (leaked["group"] == "context-only").all()
    assert np.allclose(rates["rate"], rates["n_flagged"] / rates["n"])


class CountingJudge:
    """Wraps a judge, counts the images it scores and can stop the run (like a kill) after ``stop_after``."""

    def __init__(self, judge, stop_after: int | None = None):
        self.judge, self.stop_after, self.scored = judge, stop_after, []
        self.identity = judge.identity

    def __getattr__(self, name):
        return getattr(self.judge, name)

    def score(self, pixels, targets, groups):
        if self.stop_after is not None and len(self.scored) >= self.stop_after:
            raise KeyboardInterrupt
        self.scored.extend(t.synset for t in targets)
        return self.judge.score(pixels, targets, groups)


def test_resume_scores_nothing_twice(tmp_path, tiny_clip, wn):
    images, out = write_bias_folder(tmp_path / "images", per_group=2), tmp_path / "checks"
    judge = CountingJudge(J.parse_judge(f"clip:{tiny_clip}", "DEFAULT"), stop_after=4)
    with pytest.raises(KeyboardInterrupt):
        C.run_image_check(images, out, judge, clip_settings(rows_per_write=2))
    assert len(read_rows(out)) == 4 and not (out / SUMMARY_FILE).exists()  # committed rows survive, no summary
    partial = (out / K.CHECKS_FILE).read_text()

    judge = CountingJudge(J.parse_judge(f"clip:{tiny_clip}", "DEFAULT"))
    result = C.run_image_check(images, out, judge, clip_settings())
    assert (result.scored, result.reused, len(judge.scored)) == (8, 4, 8)
    assert (out / K.CHECKS_FILE).read_text().startswith(partial)

    # A changed image is scored again; the others come from the cache.
    first = images / read_rows(out)[0]["path"]
    Image.fromarray(smooth_image(np.random.default_rng(9), 48)).save(first)
    judge = CountingJudge(J.parse_judge(f"clip:{tiny_clip}", "DEFAULT"))
    result = C.run_image_check(images, out, judge, clip_settings())
    assert (result.scored, result.reused, len(judge.scored)) == (1, 11, 1)

    # Another judge's rows live beside the first judge's, one row per image and judge.
    result = C.run_image_check(images, out, J.parse_judge("resnet18", "none"), clip_settings())
    rows = read_rows(out)
    assert result.scored == 12 and len(rows) == 24 and len({(r["id"], r["judge"]) for r in rows}) == 24
    assert result.summary["judges"] == sorted({r["judge"] for r in rows})


def test_bad_input_gets_one_line(tmp_path, tiny_clip, wn, monkeypatch, cli):
    images = write_bias_folder(tmp_path / "images", per_group=1)
    fails_with(
        cli(main, images, "--out", tmp_path / "c", "--judge", "resnet5000", exit_code=None),
        "unknown torchvision classification model 'resnet5000'",
    )
    fails_with(
        cli(main, images, "--out", tmp_path / "c", "--judge", "clip:", exit_code=None), "--judge clip: needs a hub id"
    )
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    fails_with(
        cli(main, images, "--out", tmp_path / "c", "--judge", "clip:nobody/no-such-clip", exit_code=None),
        "cannot load the CLIP judge 'nobody/no-such-clip'",
        "local folder",
    )

    loose = tmp_path / "loose"  # PNGs without images.jsonl and without class folders
    loose.mkdir()
    Image.fromarray(smooth_image(np.random.default_rng(0), 32)).save(loose / "a.png")
    fails_with(cli(main, loose, "--out", tmp_path / "c", "--judge", f"clip:{tiny_clip}", exit_code=None), "no images")

    other = write_bias_folder(tmp_path / "other", per_group=1)
    rows = [json.loads(line) for line in (other / "images.jsonl").open()]
    write_manifest(other, [{**r, "id": "other-" + r["id"]} for r in rows])
    cli(main, other, "--out", tmp_path / "other-checks", "--judge", f"clip:{tiny_clip}", "--silent")
    fails_with(
        cli(main, images, "--out", tmp_path / "other-checks", "--judge", f"clip:{tiny_clip}", exit_code=None),
        "holds checks of other images",
    )

    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / K.CHECKS_FILE).write_text('{"schema": 1, "id": "x"}\n')
    fails_with(
        cli(main, images, "--out", tmp_path / "broken", "--judge", f"clip:{tiny_clip}", exit_code=None),
        "checks.jsonl:1: not an image-check row",
    )

    first = json.loads((images / "images.jsonl").open().readline())
    (images / first["path"]).write_bytes(b"not a png")
    fails_with(
        cli(main, images, "--out", tmp_path / "c2", "--judge", f"clip:{tiny_clip}", exit_code=None), "cannot decode"
    )


def test_a_hub_clip_judge_is_pinned_by_its_revision(tmp_path, tiny_clip, monkeypatch):
    pinned = J.parse_judge("clip:org/clip@0123abc", "DEFAULT")
    assert (pinned.source, pinned.revision, pinned.identity) == ("org/clip", "0123abc", "clip:org/clip@0123abc")
    assert J.parse_judge("clip:org/clip", "DEFAULT").identity == "clip:org/clip"
    folder = tmp_path / "clip@v2"  # a local folder whose name holds an @ is still the folder
    shutil.copytree(tiny_clip, folder)
    assert J.parse_judge(f"clip:{folder}", "DEFAULT").revision is None
    with pytest.raises(InputError, match="needs a hub id"):
        J.parse_judge("clip:org/clip@", "DEFAULT")
    asked = []

    def from_pretrained(source, revision=None):
        asked.append((source, revision))
        raise OSError("offline")

    monkeypatch.setattr("transformers.CLIPModel.from_pretrained", from_pretrained)
    with pytest.raises(InputError, match="cannot load the CLIP judge 'org/clip' at revision 0123abc"):
        J.load_clip(pinned.source, pinned.revision)
    assert asked == [("org/clip", "0123abc")]


@pytest.mark.cuda
def test_judges_batch_on_the_gpu_and_agree_with_the_cpu(tmp_path, tiny_clip, wn):
    images = write_bias_folder(tmp_path / "images")
    for name, judge in (("clip", f"clip:{tiny_clip}"), ("resnet", "resnet18")):
        scores = {}
        for device in ("cpu", "cuda"):
            out = tmp_path / f"{name}-{device}"
            C.run_image_check(images, out, J.parse_judge(judge, "none"), clip_settings(device=device))
            scores[device] = [r["object_score"] for r in read_rows(out)]
        # Half precision on the GPU moves softmax probabilities by well under 0.03 on these tiny models.
        np.testing.assert_allclose(scores["cuda"], scores["cpu"], atol=0.03)
