"""cnn-hooks refuses bad input with one clear line: unknown models and layers, unfitting weights, foreign
stores, bad folders and manifests.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
import torchvision
from helpers import fails_with, write_manifest
from helpers.bad_inputs import set_attr
from helpers.cnn_hooks import SMALL, make_tree, manifest_row, store_arrays

from synthprobe.common.files import InputError
from synthprobe.formats.activation_store import STORE_SCHEMA, ActivationStore
from synthprobe.tools.cnn_hooks import main

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_unknown_model_suggests_close_names(tmp_path, tree, cli):
    fails_with(
        cli(main, tree, "--out", tmp_path / "a.zarr", "--model", "resnet5", "--weights", "none", exit_code=None),
        "unknown torchvision classification model 'resnet5'",
        "did you mean",
        "resnet50",
        "timm:<name>",
    )
    fails_with(
        cli(main, tree, "--out", tmp_path / "a.zarr", "--model", "timm:efficientnet_lite9", exit_code=None),
        "unknown timm model 'timm:efficientnet_lite9'",
        "did you mean timm:efficientnet_lite",
    )


def test_layers_pattern_matching_nothing_fails(tmp_path, tree, cli):
    fails_with(
        cli(main, tree, "--out", tmp_path / "a.zarr", *SMALL, "--layers", "layer4.*,conv9*", exit_code=None),
        "--layers 'conv9*' matches no hook point",
    )
    assert not (tmp_path / "a.zarr").exists()


def test_weights_file_that_does_not_fit_names_the_keys(tmp_path, tree, cli):
    state = torchvision.models.resnet18(num_classes=10).state_dict()  # a 10-class head fits: the model follows it
    state["extra.weight"] = torch.zeros(1)
    del state["layer1.0.conv1.weight"]
    state["conv1.weight"] = torch.zeros(64, 3, 3, 3)
    torch.save(state, tmp_path / "bad.pth")

    def with_weights(weights):
        return cli(
            main, tree, "--out", tmp_path / "a.zarr", "--model", "resnet18", "--weights", weights, exit_code=None
        )

    fails_with(
        with_weights(tmp_path / "bad.pth"),
        "does not fit resnet18",
        "missing keys: layer1.0.conv1.weight",
        "unexpected keys: extra.weight",
        "conv1.weight (64, 3, 3, 3) vs (64, 3, 7, 7)",
    )
    torch.save(torchvision.models.resnet18(), tmp_path / "pickled_module.pth")  # not a state dict: weights_only refuses
    fails_with(with_weights(tmp_path / "pickled_module.pth"), "cannot read", "as a state dict")
    fails_with(with_weights(tmp_path / "missing.pth"), "no such file")
    fails_with(with_weights("IMAGENET9K"), "IMAGENET1K_V1")


def test_default_weights_offline_fail_with_a_hint(tmp_path, tree, monkeypatch, cli):
    import urllib.error

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torchvision.models.WeightsEnum, "get_state_dict", offline)
    fails_with(
        cli(main, tree, "--out", tmp_path / "a.zarr", "--model", "resnet18", exit_code=None),
        "cannot fetch the ResNet18_Weights.IMAGENET1K_V1 weights",
        "--weights",
    )


def test_existing_store_from_another_model_is_refused(tmp_path, tree, small_store, cli):
    copy = tmp_path / "copy.zarr"

    shutil.copytree(small_store, copy)
    args = [
        "--pool",
        "both",
        "--store-dtype",
        "float16",
        "--precision",
        "fp32",
        "--workers",
        "0",
        "--silent",
        "--image-size",
        "64",
    ]
    fails_with(
        cli(main, tree, "--out", copy, "--model", "resnet34", "--weights", "none", *args, exit_code=None),
        "another model",
        "'resnet18'",
        "'resnet34'",
    )
    fails_with(
        cli(main, tree, "--out", copy, "--model", "resnet18", "--weights", "none", *args[:-1], "96", exit_code=None),
        "another preprocessing",
    )
    fails_with(
        cli(
            main,
            tree,
            "--out",
            copy,
            *SMALL,
            "--pool",
            "mean",
            "--store-dtype",
            "float16",
            "--precision",
            "fp32",
            exit_code=None,
        ),
        "another pooling",
    )
    assert ActivationStore(copy).attrs == ActivationStore(small_store).attrs  # refused before touching it


@pytest.mark.parametrize("schema", [STORE_SCHEMA - 1, STORE_SCHEMA + 1, None])
def test_a_store_of_another_schema_is_refused_with_how_to_rebuild(schema, tmp_path, tree, small_store, cli):
    copy = tmp_path / "copy.zarr"
    shutil.copytree(small_store, copy)
    set_attr(copy, schema=schema)
    expected = [str(copy / "zarr.json"), f"schema {schema!r}", f"reads schema {STORE_SCHEMA}", "--rebuild"]
    with pytest.raises(InputError) as refused:
        ActivationStore(copy)
    assert all(fragment in str(refused.value) for fragment in expected), refused.value
    fails_with(cli(main, tree, "--out", copy, *SMALL, "--pool", "both", exit_code=None), *expected)
    rebuilt = cli(main, tree, "--out", copy, *SMALL, "--pool", "both", "--store-dtype", "float16", "--rebuild")
    assert rebuilt.exit_code == 0 and ActivationStore(copy).attrs["schema"] == STORE_SCHEMA


def test_out_that_is_not_a_store_is_refused(tmp_path, tree, cli):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine")
    fails_with(
        cli(main, tree, "--out", tmp_path / "notes", *SMALL, exit_code=None), "exists and is not an activation store"
    )
    assert (tmp_path / "notes" / "keep.txt").read_text() == "mine"


def test_bad_folders_and_manifests(tmp_path, cli):
    fails_with(cli(main, tmp_path / "nowhere", "--out", tmp_path / "a.zarr", *SMALL, exit_code=None), "is not a folder")
    (tmp_path / "empty").mkdir()
    fails_with(cli(main, tmp_path / "empty", "--out", tmp_path / "a.zarr", *SMALL, exit_code=None), "no images")
    folder = tmp_path / "manifest"
    folder.mkdir()
    write_manifest(folder, [manifest_row("a", "a.png"), {"id": "b", "synset": "bee.n.01", "status": "ok"}])
    fails_with(
        cli(main, folder, "--out", tmp_path / "a.zarr", *SMALL, exit_code=None), "images.jsonl:2", "needs a 'path'"
    )
    write_manifest(folder, [manifest_row("a", "a.png"), manifest_row("a", "b.png")])
    fails_with(
        cli(main, folder, "--out", tmp_path / "a.zarr", *SMALL, exit_code=None),
        "two images share the id 'a'",
        "a.png, b.png",
    )
    fails_with(cli(main, folder, *SMALL, exit_code=None), "give IMAGES and --out")


# Of the 255 files this run writes: while the store is created, mid-batch, the first commit, after two commits, and
# the last write (the store marked complete).
@pytest.mark.parametrize("writes_before_full", [3, 140, 163, 210, 254])
def test_disk_full_names_the_store_and_a_rerun_resumes_to_an_uninterrupted_store(
    writes_before_full, tmp_path, monkeypatch, cli
):
    """Every file zarr writes goes through zarr.storage._local._put: the disk fills after some of them; once space
    is free the same command finishes the store, equal to one never interrupted."""
    import errno

    import zarr.storage._local as local

    images = make_tree(tmp_path / "images", per_synset=4)  # 12 images
    args = [images, *SMALL, "--precision", "fp32", "--batch-size", "2", "--rows-per-write", "4", "--layers", "layer1*"]
    put, calls = local._put, []

    def fills_up(path, value, exclusive=False):
        calls.append(path)
        if len(calls) > writes_before_full:
            raise OSError(errno.ENOSPC, "No space left on device")
        return put(path, value, exclusive=exclusive)

    store = tmp_path / "acts.zarr"
    monkeypatch.setattr(local, "_put", fills_up)
    fails_with(cli(main, *args, "--out", store, exit_code=None), f"cannot write {store}", "No space left on device")
    monkeypatch.setattr(local, "_put", put)
    cli(main, *args, "--out", store)
    reference = tmp_path / "reference.zarr"
    cli(main, *args, "--out", reference)
    got, want = store_arrays(store), store_arrays(reference)
    assert got.keys() == want.keys()
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    assert ActivationStore(store).attrs == ActivationStore(reference).attrs
