"""cnn-hooks on odd and damaged images: colour modes, reduced JPEG decoding, truncated files, --skip-bad."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import fails_with, smooth_image
from helpers.cnn_hooks import SMALL, make_tree
from PIL import Image

from synthprobe.common.decode import decode_rgb, load_rgb
from synthprobe.common.image_dataset import ImageDataset
from synthprobe.common.networks import build_network
from synthprobe.common.preprocessing import DECODING
from synthprobe.formats.activation_store import ActivationStore
from synthprobe.tools.cnn_hooks import main

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_grayscale_rgba_palette_and_16_bit_pngs_are_converted(tmp_path, cli):
    folder = tmp_path / "odd" / "bee.n.01"
    folder.mkdir(parents=True)
    Image.fromarray(np.full((40, 40), 100, np.uint8), "L").save(folder / "gray.png")
    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[:20] = (255, 0, 0, 255)  # opaque red above, fully transparent below
    Image.fromarray(rgba, "RGBA").save(folder / "rgba.png")
    Image.fromarray(np.full((40, 40), 65535, np.uint16)).save(folder / "deep.png")
    palette = Image.new("P", (40, 40), 0)
    palette.putpalette([30, 60, 90] + [0] * 765)
    palette.save(folder / "palette.png")
    Image.fromarray(np.full((40, 40, 3), 200, np.uint8)).save(folder / "photo.jpg", quality=95)
    assert Image.open(folder / "deep.png").mode == "I;16"
    assert np.asarray(load_rgb(folder / "gray.png"))[0, 0].tolist() == [100, 100, 100]
    assert np.asarray(load_rgb(folder / "rgba.png"))[0, 0].tolist() == [255, 0, 0]
    assert np.asarray(load_rgb(folder / "rgba.png"))[39, 0].tolist() == [255, 255, 255]
    assert np.asarray(load_rgb(folder / "deep.png"))[0, 0].tolist() == [255, 255, 255]
    assert np.asarray(load_rgb(folder / "palette.png"))[0, 0].tolist() == [30, 60, 90]
    out = tmp_path / "odd.zarr"
    cli(main, tmp_path / "odd", "--out", out, *SMALL, "--layers", "fc")
    rows = ActivationStore(out).rows()
    assert len(rows) == 5 and (rows["status"] == "ok").all()


def test_large_jpegs_decode_at_a_reduced_scale_that_still_covers_the_resize(tmp_path):
    """PIL's draft: a 1024 px JPEG decodes at 1/4 scale for the 232 px resize, close to the full decode; PNG in full."""
    photo = Image.fromarray(smooth_image(np.random.default_rng(0), 1024))
    photo.save(tmp_path / "photo.jpg", quality=90)
    photo.save(tmp_path / "photo.png")
    photo.resize((400, 300)).save(tmp_path / "small.jpg", quality=90)
    preprocessing = build_network("resnet50", "none").preprocessing
    files = [tmp_path / name for name in ("photo.jpg", "photo.png", "small.jpg")]
    dataset = ImageDataset(files, [""] * 3, preprocessing)
    jpeg = (tmp_path / "photo.jpg").read_bytes()
    assert preprocessing.resize == 232 and decode_rgb(jpeg, preprocessing.resize).size == (256, 256)
    assert decode_rgb((tmp_path / "photo.png").read_bytes(), preprocessing.resize).size == (1024, 1024)
    assert decode_rgb((tmp_path / "small.jpg").read_bytes(), preprocessing.resize).size == (
        400,
        300,
    )  # 1/2 is too small
    reduced, full = dataset[0][0].float(), preprocessing.to_uint8(load_rgb(files[0])).float()
    assert reduced.shape == (3, 224, 224) and 0 < (reduced - full).abs().mean() < 1.5
    assert torch.equal(dataset[1][0], preprocessing.to_uint8(load_rgb(files[1])))
    assert build_network("resnet18", "none").preprocessing.attrs()["decode"] == DECODING


@pytest.fixture
def folder_with_truncated_png(tmp_path) -> Path:
    folder = make_tree(tmp_path / "images", per_synset=1)
    data = (folder / "frog.n.01" / "img 00.png").read_bytes()
    (folder / "frog.n.01" / "img 00.png").write_bytes(data[: len(data) // 2])
    return folder


def test_truncated_image_fails_naming_the_file(tmp_path, folder_with_truncated_png, cli):
    line = fails_with(
        cli(main, folder_with_truncated_png, "--out", tmp_path / "a.zarr", *SMALL, exit_code=None),
        "cannot decode",
        "frog.n.01/img 00.png",
        "--skip-bad",
    )
    assert "truncated" in line.lower() or "error" in line.lower()


def test_skip_bad_records_a_failed_row_with_nan_values(tmp_path, folder_with_truncated_png, cli):
    out = tmp_path / "a.zarr"
    # Two decoding worker processes here: failures travel back from them as row errors.
    cli(
        main,
        folder_with_truncated_png,
        "--out",
        out,
        *SMALL,
        "--workers",
        "2",
        "--batch-size",
        "2",
        "--skip-bad",
        "--layers",
        "layer4,fc",
    )
    store = ActivationStore(out)
    rows = store.rows()
    bad = rows.index[rows["path"] == "frog.n.01/img 00.png"][0]
    assert rows["status"][bad] == "failed" and (rows["status"] == "ok").sum() == 2
    assert np.isnan(store.read_layer("layer4")[bad]).all() and np.isnan(store.logits()[bad]).all()
    assert np.isfinite(np.delete(store.read_layer("layer4"), bad, axis=0)).all()


def test_skip_bad_rows_are_retried_on_a_rerun(tmp_path, folder_with_truncated_png, tree, cli):
    out = tmp_path / "a.zarr"
    args = [*SMALL, "--batch-size", "2", "--skip-bad", "--layers", "layer4,fc"]
    cli(main, folder_with_truncated_png, "--out", out, *args)
    before = ActivationStore(out).rows()
    bad = before.index[before["status"] == "failed"][0]
    shutil.copyfile(tree / "frog.n.01" / "img 00.png", folder_with_truncated_png / "frog.n.01" / "img 00.png")
    cli(main, folder_with_truncated_png, "--out", out, *args)
    store = ActivationStore(out)
    rows = store.rows()
    assert len(rows) == 3 and (rows["status"] == "ok").all() and rows["id"].tolist() == before["id"].tolist()
    assert rows["sha256"][bad] and rows["sha256"].tolist()[:bad] == before["sha256"].tolist()[:bad]
    fresh = tmp_path / "fresh.zarr"
    cli(main, folder_with_truncated_png, "--out", fresh, *args)
    np.testing.assert_array_equal(store.read_layer("layer4"), ActivationStore(fresh).read_layer("layer4"))
    np.testing.assert_array_equal(store.logits(), ActivationStore(fresh).logits())
