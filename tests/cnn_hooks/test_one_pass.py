"""Several classifiers in one cnn-hooks pass: each image decoded once, each store as a run of its own writes it,
resumable and locked on its own."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import fails_with
from helpers.cnn_hooks import store_arrays

from synthprobe.cnn_hooks import writer
from synthprobe.common import decode
from synthprobe.common.locks import exclusive_writer
from synthprobe.common.preprocessing import Preprocessing
from synthprobe.tools.cnn_hooks import main

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# resnet18 and mobilenet_v3_small share their resize, crop and interpolation (bilinear); efficientnet_lite0 resizes
# bicubic: two resized images of each decoded file.
MODELS = ("resnet18", "mobilenet_v3_small", "timm:efficientnet_lite0")
COMMON = ["--weights", "none", "--image-size", "64", "--precision", "fp32", "--workers", "0", "--silent"]
SMALL_RUN = [*COMMON, "--batch-size", "2", "--rows-per-write", "2"]


def folder_name(model: str) -> str:
    return model.replace(":", "-")


def attrs(store: Path) -> dict:
    return json.loads((store / "zarr.json").read_text())["attributes"]


def assert_same_store(got: Path, want: Path) -> None:
    got_arrays, want_arrays = store_arrays(got), store_arrays(want)
    assert got_arrays.keys() == want_arrays.keys()
    for name, values in want_arrays.items():
        np.testing.assert_array_equal(got_arrays[name], values, err_msg=f"{got}: {name}")
    assert attrs(got) == attrs(want)


@pytest.fixture
def counted(monkeypatch):
    """How often files are decoded and decoded images resized."""
    calls = {"decode": 0, "resize": 0}
    real_decode, real_resize = decode.decode_rgb, Preprocessing.to_uint8

    def counting_decode(*args, **kwargs):
        calls["decode"] += 1
        return real_decode(*args, **kwargs)

    def counting_resize(self, image):
        calls["resize"] += 1
        return real_resize(self, image)

    monkeypatch.setattr(decode, "decode_rgb", counting_decode)
    monkeypatch.setattr(Preprocessing, "to_uint8", counting_resize)
    return calls


def test_one_pass_writes_the_stores_of_separate_runs_decoding_each_image_once(tree, tmp_path, counted, cli):
    models = [arg for model in MODELS for arg in ("--model", f"{model}=none")]  # as the Makefile gives them
    cli(main, tree, "-o", tmp_path / "pass" / "{model}" / "acts.zarr", *models, *COMMON[2:], "--pool", "both")
    assert counted == {"decode": 6, "resize": 12}  # 6 images, 2 distinct resizes
    for model in MODELS:
        separate = tmp_path / "separate" / folder_name(model) / "acts.zarr"
        cli(main, tree, "-o", separate, "--model", model, *COMMON, "--pool", "both")
        assert_same_store(tmp_path / "pass" / folder_name(model) / "acts.zarr", separate)


def test_a_rerun_finishes_only_the_interrupted_store(tree, tmp_path, monkeypatch, counted, cli):
    store = str(tmp_path / "{model}.zarr")
    both = ["--model", "resnet18", "--model", "timm:efficientnet_lite0", *SMALL_RUN]
    cli(main, tree, "-o", store, "--model", "resnet18", *SMALL_RUN)  # complete
    complete = store_arrays(tmp_path / "resnet18.zarr")
    interrupted = tmp_path / "timm-efficientnet_lite0.zarr"
    real_add = writer.StoreFeed.add

    def interrupt_at_row_4(feed, *args):
        if feed.writer.path == interrupted and feed.start == 4:
            raise KeyboardInterrupt
        real_add(feed, *args)

    monkeypatch.setattr(writer.StoreFeed, "add", interrupt_at_row_4)
    cli(main, tree, "-o", store, *both, exit_code=130)
    assert attrs(interrupted)["rows_committed"] == 4 and not attrs(interrupted)["complete"]
    monkeypatch.setattr(writer.StoreFeed, "add", real_add)
    counted.update(decode=0, resize=0)
    cli(main, tree, "-o", store, *both)
    assert counted == {"decode": 2, "resize": 2}  # the 2 rows the interrupted store lacked, for it alone
    got = store_arrays(tmp_path / "resnet18.zarr")
    assert all(np.array_equal(got[name], values) for name, values in complete.items())
    cli(main, tree, "-o", tmp_path / "reference.zarr", "--model", "timm:efficientnet_lite0", *SMALL_RUN)
    assert_same_store(interrupted, tmp_path / "reference.zarr")


def test_each_store_has_its_own_writer_lock(tree, tmp_path, cli):
    store = tmp_path / "{model}.zarr"
    with exclusive_writer(tmp_path / "resnet18.zarr"):
        fails_with(
            cli(
                main, tree, "-o", store, "--model", "mobilenet_v3_small", "--model", "resnet18", *COMMON, exit_code=None
            ),
            tmp_path / "resnet18.zarr",
            "is being written by pid",
        )
    assert not (tmp_path / "mobilenet_v3_small.zarr").exists()
    cli(main, tree, "-o", store, "--model", "mobilenet_v3_small", *COMMON, "--layers", "classifier")


def test_several_models_one_weights_file_each(tmp_path):
    from synthprobe.cnn_hooks import classifiers

    out = "out/{model}/acts.zarr"
    assert classifiers(("resnet50", "timm:efficientnet_lite0=lite0.pth"), ("none",), out) == [
        ("out/resnet50/acts.zarr", "resnet50", "none"),
        ("out/timm-efficientnet_lite0/acts.zarr", "timm:efficientnet_lite0", "lite0.pth"),
    ]
    assert classifiers(("resnet50", "resnet18"), ("a.pth", "none"), out) == [
        ("out/resnet50/acts.zarr", "resnet50", "a.pth"),
        ("out/resnet18/acts.zarr", "resnet18", "none"),
    ]
    assert classifiers(("resnet18",), (), "acts.zarr") == [("acts.zarr", "resnet18", "DEFAULT")]


WEIGHTS_3 = ["--weights", "none"] * 3


@pytest.mark.parametrize(
    "args,fragments",
    [
        (["-o", "acts.zarr", "--model", "resnet18", "--model", "resnet50"], ["acts.zarr", "{model}"]),
        (["-o", "{model}.zarr", "--model", "resnet18", "--model", "resnet18=b.pth"], ["resnet18.zarr", "same store"]),
        (["-o", "{model}.zarr", "--model", "resnet18", "--model", "vgg11", *WEIGHTS_3], ["3 --weights for 2"]),
        (["-o", "{model}.zarr", "--model", "resnet18=", "--model", "vgg11"], ["--model 'resnet18='"]),
        (["-o", "{model}.zarr", "--model", "resnet18=a.pth", "--model", "vgg11", *WEIGHTS_3[:4]], ["twice"]),
        (["-o", "a.zarr", "--model", "resnet18=a.pth", *WEIGHTS_3[:2]], ["--weights none applies to no --model"]),
    ],
    ids=["no-field", "same-store", "weights-count", "empty-weights", "weights-twice", "weights-unused"],
)
def test_bad_model_lists_are_one_line_before_anything_is_written(args, fragments, tree, tmp_path, cli):
    args = [str(tmp_path / a) if a.endswith(".zarr") else a for a in args]
    fails_with(cli(main, tree, *args, "--silent", exit_code=None), *fragments)
    assert list(tmp_path.iterdir()) == []


def test_list_layers_of_several_models(cli):
    result = cli(main, "--list-layers", "--model", "resnet18", "--model", "mobilenet_v3_small", "--layers", "avgpool")
    lines = [line.split("\t")[:2] for line in result.output.splitlines()]
    assert lines == [["# resnet18"], ["avgpool", "512"], ["# mobilenet_v3_small"], ["avgpool", "576"]]
