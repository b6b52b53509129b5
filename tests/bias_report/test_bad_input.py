"""bias-report refuses bad stores, classes and prompt files with one clear line; --help has an example."""

from __future__ import annotations

import json

import numpy as np
from helpers import fails_with, prompt_record
from helpers.bias_report import CUSTOM_CLASS, row, write_store

from synthprobe.common.imagenet import imagenet_wnids
from synthprobe.formats.prompts import PROMPT_SCHEMA
from synthprobe.tools.bias_report import main


def test_store_without_logits(tmp_path, cli):
    store = write_store(tmp_path / "nologits.zarr", [row("bias-bee-mixed-00-s00", "bee.n.01", "mixed")], None)
    fails_with(cli(main, store, "--out", tmp_path / "out", exit_code=None), "no logits", "cnn-hooks", "classifier")
    assert not (tmp_path / "out").exists()


def test_not_a_store(tmp_path, cli):
    fails_with(cli(main, tmp_path, "--out", tmp_path / "out", exit_code=None), "not an activation store")


def test_unknown_class_lists_known(imagenet_store, tmp_path, cli):
    store, _ = imagenet_store
    fails_with(cli(main, store, "--out", tmp_path, "--classes", "bee,zebra", exit_code=None), "'zebra'", "bee, frog")


def test_empty_class_list(imagenet_store, tmp_path, cli):
    store, _ = imagenet_store
    fails_with(
        cli(main, store, "--out", tmp_path, "--classes", " , ", exit_code=None), "--classes is empty", "strawberry"
    )


def test_hierarchy_needs_an_imagenet_classifier(custom_setup, tmp_path, cli):
    store, class_dir, _ = custom_setup
    result = cli(main, store, "--out", tmp_path, "--classes", "widget", "--class-dir", class_dir, exit_code=None)
    fails_with(result, "--mapping hierarchy needs an ImageNet classifier", "--mapping exact")


def test_exact_wnids_on_a_classifier_without_class_ids(custom_setup, tmp_path, cli):
    store, _, _ = custom_setup
    result = cli(main, store, "--out", tmp_path, "--classes", "frog", "--mapping", "exact", exit_code=None)
    fails_with(result, "'n01641577' is not one of the classifier's classes", "integer indices")


def test_exact_index_out_of_range(custom_setup, tmp_path, cli):
    store, _, _ = custom_setup
    class_dir = tmp_path / "classes"
    class_dir.mkdir()
    (class_dir / "widget.json").write_text(json.dumps({**CUSTOM_CLASS, "imagenet_classes": [1, 10]}))
    options = ["--classes", "widget", "--class-dir", class_dir, "--mapping", "exact"]
    result = cli(main, store, "--out", tmp_path / "out", *options, exit_code=None)
    fails_with(result, "class index 10 is out of range", "10 classes")


def test_class_synset_without_imagenet_class(wn, imagenet_store, tmp_path, cli):
    store, _ = imagenet_store
    (tmp_path / "pond.json").write_text(json.dumps({**CUSTOM_CLASS, "name": "pond", "synset": "pond.n.01"}))
    result = cli(main, store, "--out", tmp_path / "out", "--classes", "pond", "--class-dir", tmp_path, exit_code=None)
    fails_with(result, "pond.n.01")


def test_store_without_bias_images(tmp_path, cli):
    rows = [row("dog.n.01-000", "dog.n.01", "concept")]
    store = write_store(
        tmp_path / "concepts.zarr", rows, np.zeros((1, 1000), dtype=np.float32), {"classes": list(imagenet_wnids())}
    )
    result = cli(main, store, "--out", tmp_path / "out", "--classes", "bee", "--mapping", "exact", exit_code=None)
    fails_with(result, "no object-only, context-only or mixed images of bee", "groups found: concept")


def test_bad_prompt_file(imagenet_store, tmp_path, cli):
    store, _ = imagenet_store
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "x"}\n')
    options = ["--classes", "bee", "--mapping", "exact", "--prompts", bad]
    result = cli(main, store, "--out", tmp_path / "out", *options, exit_code=None)
    fails_with(result, "bad.jsonl:1", "missing field")


def test_help_has_example(cli):
    result = cli(main, "--help")
    assert "Example" in result.output and "--mapping [hierarchy|exact]" in result.output


def test_an_unrelated_prompt_file_is_refused(imagenet_store, tmp_path, cli):
    store, _ = imagenet_store
    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps({**prompt_record(id="somewhere-else"), "schema": PROMPT_SCHEMA}) + "\n")
    result = cli(main, store, "--out", tmp_path / "out", "--classes", "bee", "--prompts", other, exit_code=None)
    fails_with(
        result, str(other), "none of its 1 record ids is an image of", "the prompt file the images were made from"
    )
    assert not (tmp_path / "out").exists()
