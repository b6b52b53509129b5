"""image-check label: the sample's design, and the labelling page in Chromium (keys, undo, reload, export)."""

from __future__ import annotations

import json
import shutil

import pytest
from helpers.image_check import page_items, write_bias_folder

from synthprobe.common.files import InputError, sha256_file
from synthprobe.formats.image_checks import CHECKS_FILE, write_checks
from synthprobe.formats.labels import read_labels
from synthprobe.tools.image_check import main

BOX = [0.25, 0.25, 0.75, 0.5]


@pytest.fixture
def labelled_folder(tmp_path):
    """(images, checks folder) of 18 bias images with a detector judge's verdicts written by hand: every third image
    flagged, the flagged ones with a box."""
    images = write_bias_folder(tmp_path / "images", per_group=3)
    rows = [json.loads(line) for line in (images / "images.jsonl").open()]
    checks = []
    for i, row in enumerate(rows):
        flagged = i % 3 == 0
        verdict = ("object-leaked" if row["group"] == "context-only" else "object-missing") if flagged else "ok"
        checks.append(
            {
                "schema": 1,
                **{k: row[k] for k in ("id", "synset", "group", "target", "path")},
                "judge": "owlv2:tiny",
                "sha256": sha256_file(images / row["path"]),
                "object_score": 0.5,
                "verdict": verdict,
                **({"box": BOX} if flagged else {}),
            }
        )
    (tmp_path / "checks").mkdir()
    write_checks(tmp_path / "checks" / CHECKS_FILE, checks)
    return images, tmp_path / "checks"


def test_sample_is_stratified_oversamples_flagged_images_and_weights_back_to_the_whole(labelled_folder, tmp_path, cli):
    images, checks = labelled_folder
    cli(main, "label", images, "--checks", checks, "-o", tmp_path / "a.html", "--sample", 12, "--seed", 0, "--silent")
    items = page_items(tmp_path / "a.html")
    assert len(items) == 12 and len({i["id"] for i in items}) == 12
    # Weights are stratum size over sampled: they add up to every checked image, and each stratum to its own size.
    assert sum(i["weight"] for i in items) == pytest.approx(18)
    flagged = [i for i in items if i["stratum"].endswith("|flagged")]
    assert len(flagged) == 6  # all six flagged images: flagged strata are sampled four times as densely
    assert {i["question"] for i in items} == {"Is there a bee in this image?", "Is there a frog in this image?"}
    assert all(i["boxes"] == {"owlv2:tiny": BOX} for i in flagged)
    assert all(i["sha256"] == sha256_file(images / f"{i['id']}.png") for i in items)
    cli(main, "label", images, "--checks", checks, "-o", tmp_path / "b.html", "--sample", 12, "--seed", 0, "--silent")
    assert (tmp_path / "a.html").read_bytes() == (tmp_path / "b.html").read_bytes()  # seeded


def test_label_refuses_checks_of_other_images(labelled_folder, tmp_path, fails_cleanly):
    images, checks = labelled_folder
    other = write_bias_folder(tmp_path / "other", per_group=1, seed=1)
    (other / "images.jsonl").write_text("".join(line for line in (other / "images.jsonl").open() if "frog" in line))
    args = ["label", other, "--checks", checks, "-o", tmp_path / "page.html"]
    fails_cleanly(main, args, tmp_path, [CHECKS_FILE, "checked images are not in", str(other)])


def test_labels_format_names_the_bad_line(tmp_path):
    path = tmp_path / "labels.jsonl"
    good = {"id": "a", "sha256": "a" * 64, "answer": "yes", "time": 1}
    path.write_text(json.dumps(good) + "\n" + json.dumps({**good, "id": "b", "answer": "maybe"}) + "\n")
    with pytest.raises(InputError, match=r"labels.jsonl:2: answer 'maybe' is not one of yes, no, skip"):
        read_labels(path)
    path.write_text(json.dumps(good) + "\n" + json.dumps(good) + "\n")
    with pytest.raises(InputError, match="labels.jsonl:2: a second answer for 'a' .first on line 1"):
        read_labels(path)
    path.write_text(json.dumps(good) + "\n")
    (label,) = read_labels(path)
    assert (label.weight, label.stratum, label.prompt) == (1.0, "", "")  # a hand-written file: a simple sample


def test_labelling_page_in_chromium(labelled_folder, tmp_path, cli):
    playwright = pytest.importorskip("playwright.sync_api")
    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is missing (make test installs it as root)"
    images, checks = labelled_folder
    page_file = tmp_path / "labels.html"
    cli(main, "label", images, "--checks", checks, "-o", page_file, "--sample", 6, "--seed", 1, "--silent")
    items = page_items(page_file)
    assert b"http" not in page_file.read_bytes().replace(b"http-equiv", b"")  # no network: everything inline
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
        context = browser.new_context(accept_downloads=True)
        page = context.new_page()
        errors = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        page.goto(page_file.as_uri())
        assert page.inner_text("#progress") == "0 of 6 answered"
        assert page.inner_text("#question") == items[0]["question"]
        assert page.get_attribute("#image", "data-id") == items[0]["id"]
        assert page.evaluate("document.getElementById('image').naturalWidth") > 0
        assert page.locator("#frame .box").count() == len(items[0]["boxes"])
        for key in ("y", "n", "s", "u", "n"):  # undo takes back the skip; the third image is answered no
            page.keyboard.press(key)
        assert page.inner_text("#progress") == "3 of 6 answered"
        page.reload()  # answers live in the browser's storage
        assert page.inner_text("#progress") == "3 of 6 answered"
        assert page.get_attribute("#image", "data-id") == items[3]["id"]
        page.keyboard.press("u")
        assert page.inner_text("#progress") == "2 of 6 answered"
        for key in ("y", "y", "s", "n"):
            page.keyboard.press(key)
        assert page.locator("#done").is_visible() and not page.locator("#task").is_visible()
        with page.expect_download() as download:
            page.click("#export")
        assert download.value.suggested_filename == "labels.jsonl"
        download.value.save_as(tmp_path / "labels.jsonl")
        assert errors == []
        browser.close()
    labels = read_labels(tmp_path / "labels.jsonl")
    assert [label.id for label in labels] == [item["id"] for item in items]
    assert [label.answer for label in labels] == ["yes", "no", "yes", "yes", "skip", "no"]
    for label, item in zip(labels, items):
        assert (label.sha256, label.weight, label.stratum) == (item["sha256"], item["weight"], item["stratum"])
        assert label.time.endswith("Z")
