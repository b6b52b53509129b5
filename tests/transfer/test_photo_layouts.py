"""The layouts photos come in (issue 21): ImageNet wnid folders and a CSV path,synset, read as WordNet synsets."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import fails_with, smooth_image
from PIL import Image

from synthprobe.common.files import InputError
from synthprobe.formats.image_folder import read_image_folder, read_labelled_folder, with_wordnet_synsets


def save_images(folder, names, seed=0):
    rng = np.random.default_rng(seed)
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(smooth_image(rng, 32)).save(folder / name)


def test_wnid_folders_become_wordnet_synsets(tmp_path, wn):
    save_images(tmp_path, ["n01440764/a.JPEG", "n01440764/b.JPEG", "frog.n.01/c.png"])
    folder = with_wordnet_synsets(read_image_folder(tmp_path), lambda: wn)
    assert folder.rows["synset"].tolist() == ["frog.n.01", "tench.n.01", "tench.n.01"]
    assert (folder.rows["target"] == folder.rows["synset"]).all() and (folder.rows["prompt"] == "").all()


def test_wordnet_is_not_loaded_without_wnids(tmp_path):
    save_images(tmp_path, ["frog.n.01/c.png"])
    folder = read_image_folder(tmp_path)
    assert with_wordnet_synsets(folder, lambda: pytest.fail("WordNet loaded")) is folder


def test_labels_csv_names_a_flat_folder(tmp_path, wn):
    save_images(tmp_path / "val", ["ILSVRC2012_val_00000001.JPEG", "ILSVRC2012_val_00000002.JPEG", "sub/x.png"])
    labels = tmp_path / "labels.csv"
    labels.write_text(
        "path,synset\nILSVRC2012_val_00000001.JPEG,n01440764\nILSVRC2012_val_00000002.JPEG,frog.n.01\nsub/x.png,"
        "frog.n.01\n"
    )
    folder = with_wordnet_synsets(read_labelled_folder(tmp_path / "val", labels), lambda: wn)
    assert folder.layout == "labels" and len(folder.rows) == 3
    assert folder.rows["synset"].tolist() == ["tench.n.01", "frog.n.01", "frog.n.01"]
    assert folder.rows["id"].is_unique and (folder.rows["group"] == "concept").all()


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("file,label\na.png,frog.n.01\n", "no path or synset column"),
        ("path,synset\nmissing.png,frog.n.01\n", "labels.csv:2: "),
        ("path,synset\n../a.png,frog.n.01\n", "leaves the image folder"),
        ("path,synset\na.png,\n", "no synset for"),
        ("path,synset\n", "no images"),
    ],
)
def test_bad_labels_files(tmp_path, text, fragment):
    save_images(tmp_path / "photos", ["a.png"])
    (tmp_path / "labels.csv").write_text(text)
    with pytest.raises(InputError, match=fragment.replace("(", r"\(")):
        read_labelled_folder(tmp_path / "photos", tmp_path / "labels.csv")


def test_an_unknown_wnid_is_named(tmp_path, wn):
    save_images(tmp_path, ["n00000001/a.png"])
    with pytest.raises(InputError, match="n00000001 looks like an ImageNet wnid but is not a WordNet 3.0 noun"):
        with_wordnet_synsets(read_image_folder(tmp_path), lambda: wn)


def test_cnn_hooks_labels_option(tmp_path, cli, wn):
    from helpers.cnn_hooks import SMALL

    from synthprobe.formats.activation_store import ActivationStore
    from synthprobe.tools.cnn_hooks import main

    save_images(tmp_path / "val", ["1.JPEG", "2.JPEG"])
    (tmp_path / "labels.csv").write_text("path,synset\n1.JPEG,n01440764\n2.JPEG,frog.n.01\n")
    out = tmp_path / "photos.zarr"
    cli(main, tmp_path / "val", "--labels", tmp_path / "labels.csv", "--out", out, *SMALL, "--layers", "layer4*")
    assert ActivationStore(out).rows()["synset"].tolist() == ["tench.n.01", "frog.n.01"]
    (tmp_path / "bad.csv").write_text("path\n1.JPEG\n")
    result = cli(main, tmp_path / "val", "--labels", tmp_path / "bad.csv", "--out", tmp_path / "b.zarr", exit_code=None)
    fails_with(result, "bad.csv: no synset column")
