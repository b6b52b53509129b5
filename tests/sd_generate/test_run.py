"""sd-generate end to end on a tiny random SD3 pipeline: golden run, dry run, selection, determinism,
shards, the log, and cached reruns that need nothing of the model.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from helpers import fails_with
from helpers.sd_generate import FAST, make_records, pixels, read_rows, run_in_process, subprocess_env
from PIL import Image

from synthprobe.formats.image_cache import ImageCache
from synthprobe.formats.prompts import read_prompts
from synthprobe.sd_generate.model import ModelSource, read_model_json
from synthprobe.sd_generate.pipeline import load_pipeline
from synthprobe.sd_generate.settings import select_records, shard_of
from synthprobe.tiny_models import tiny_sd3_settings
from synthprobe.tools.sd_generate import main

pytestmark = pytest.mark.usefixtures("offline_hub")


def test_golden_run_then_cached_rerun(tiny_model, prompts, tmp_path, golden, monkeypatch, cli):
    """Real loader, batch 2: images.jsonl, run.json, PNG chunks, copies, pixels; then a rerun loads nothing."""
    cache = tmp_path / "cache"
    out = tmp_path / "out"
    path = prompts(make_records(4))
    cli(main, path, "--out", out, "--model", tiny_model, "--cache", cache, "--batch-size", 2, *FAST)

    rows = read_rows(out / "images.jsonl")
    assert [r["id"] for r in rows] == [r.id for r in read_prompts(path)]
    for row in rows:
        png = out / row["path"]
        assert hashlib.sha256(png.read_bytes()).hexdigest() == row["sha256"]
        cached_png = cache / row["cache_key"][:2] / f"{row['cache_key']}.png"
        assert png.read_bytes() == cached_png.read_bytes() and not os.path.samefile(png, cached_png)
        assert cached_png.stat().st_mode & 0o222 == 0, "cache files are read-only"
        text = Image.open(png).text
        assert (text["prompt"], text["seed"], text["model"]) == (row["prompt"], str(row["seed"]), str(tiny_model))
    # The PNGs' hashes are the model's output (their pixels differ between CPUs); the cache keys and params.model
    # carry the temporary model folder.
    manifest = (out / "images.jsonl").read_text()
    golden.check_close("sd_generate/images.jsonl", manifest, masked=("sha256", "cache_key", "model"))
    # Pixels within 2 levels, as in diffusers' tests: BLAS order varies by CPU.
    slices = {r["id"]: pixels(out / r["path"])[-3:, -3:, :].tolist() for r in rows}
    golden.check_close("sd_generate/pixel_slices.json", json.dumps(slices), rtol=0, atol=2)

    run = json.loads((out / "run.json").read_text())
    # make_records gives every fourth record a negative prompt, which the tiny SD3 uses at guidance 3.5.
    assert run["summary"] == {"records": 4, "generated": 4, "cached": 0, "failed": 0, "negative_prompts": 1}
    assert run["config"]["batch_size"] == 2 and run["config"]["quantization"] == "none"
    assert run["config"]["dask"] is None

    first_manifest = (out / "images.jsonl").read_bytes()
    monkeypatch.setattr(
        "synthprobe.sd_generate.pipeline.load_pipeline", lambda s: pytest.fail("an all-cached run loaded the model")
    )
    cli(main, path, "--out", out, "--model", tiny_model, "--cache", cache, "--batch-size", 3, *FAST)
    assert (out / "images.jsonl").read_bytes() == first_manifest
    assert json.loads((out / "run.json").read_text())["summary"] == {
        "records": 4,
        "generated": 0,
        "cached": 4,
        "failed": 0,
        "negative_prompts": 1,
    }


def test_dry_run_lists_work_and_writes_nothing(tiny_model, tiny_pipeline, prompts, tmp_path, no_model_load, cli):
    cache = ImageCache(tmp_path / "cache")
    records = make_records(3)
    run_in_process(records[:1], tiny_sd3_settings(tiny_model, cache), cache, tmp_path / "first", tiny_pipeline)
    out = tmp_path / "out"
    result = cli(main, prompts(records), "--out", out, "--model", tiny_model, "--cache", cache.root, "--dry-run", *FAST)
    lines = [line.split("\t")[:2] for line in result.stdout.splitlines()]
    assert lines == [["cached", records[0].id], ["generate", records[1].id], ["generate", records[2].id]]
    assert "2 to generate, 1 cached" in result.stderr
    assert not out.exists()

    fresh = tmp_path / "fresh-cache"
    cli(main, prompts(records), "--out", out, "--model", tiny_model, "--cache", fresh, "--dry-run", *FAST)
    assert not fresh.exists() and not out.exists(), "a dry run writes neither the cache nor the output"


def test_limit_and_shard_select_records(tiny_model, tiny_pipeline, prompts, tmp_path, monkeypatch, cli):
    monkeypatch.setattr("synthprobe.sd_generate.pipeline.load_pipeline", lambda s: tiny_pipeline)
    records = make_records(8)
    out = tmp_path / "out"
    selection = ["--shard", "1/2", "--limit", 2]
    cli(main, prompts(records), "--out", out, "--model", tiny_model, "--cache", tmp_path / "c", *selection, *FAST)
    shard_ids = [r.id for r in records if shard_of(r.id, 2) == 1][:2]
    assert [r["id"] for r in read_rows(out / "images.shard-1-of-2.jsonl")] == shard_ids
    assert sorted(p.name for p in out.glob("*.png")) == sorted(f"{i}.png" for i in shard_ids)
    assert not (out / "images.jsonl").exists(), "a shard never writes the folder's manifest"


def test_images_do_not_depend_on_batch_size_or_order(tiny_model, tiny_pipeline, tmp_path):
    records = make_records(5)
    results = {}
    for batch_size, order in [(1, records), (3, records[::-1])]:
        cache = ImageCache(tmp_path / f"cache-{batch_size}")
        out = tmp_path / f"out-{batch_size}"
        result = run_in_process(
            order, tiny_sd3_settings(tiny_model, cache, batch_size=batch_size), cache, out, tiny_pipeline
        )
        assert result.generated == 5
        results[batch_size] = {row["id"]: (row["cache_key"], pixels(out / row["path"])) for row in result.rows}
    for record in records:
        key_1, image_1 = results[1][record.id]
        key_3, image_3 = results[3][record.id]
        assert key_1 == key_3
        # Batched matmuls round differently in the last float bit: at most one level of 255.
        assert np.abs(image_1 - image_3).max() <= 1, record.id
    assert np.abs(results[1][records[0].id][1] - results[1][records[1].id][1]).max() > 10, (
        "different seeds, different images"
    )


def test_shards_partition_by_id_and_match_an_unsharded_run(tiny_model, tiny_pipeline, tmp_path):
    records = make_records(6)
    parts = [select_records(records, (k, 3), None) for k in range(3)]
    assert sorted(r.id for part in parts for r in part) == sorted(r.id for r in records)
    grown = make_records(6) + make_records(20, start=6)
    assert [select_records(grown, (k, 3), None)[: len(parts[k])] for k in range(3)] == parts, (
        "adding records moves none"
    )

    whole_cache = ImageCache(tmp_path / "whole")
    whole = run_in_process(
        records, tiny_sd3_settings(tiny_model, whole_cache), whole_cache, tmp_path / "whole-out", tiny_pipeline
    )
    shard_cache = ImageCache(tmp_path / "shards")
    shard_rows = {}
    for part in parts:
        result = run_in_process(
            part, tiny_sd3_settings(tiny_model, shard_cache), shard_cache, tmp_path / "shard-out", tiny_pipeline
        )
        shard_rows.update({row["id"]: row for row in result.rows})
    for row in whole.rows:  # batch size 1: bit-identical PNGs whatever the shard
        assert shard_rows[row["id"]]["sha256"] == row["sha256"]


def test_log_is_short_and_sums_up_long_prompts(tiny_model, prompts, tmp_path):
    """Off a terminal: no progress bars, no per-batch library warnings; one line for the prompts CLIP truncates."""
    long = "a photo of a bee " + "with many yellow stripes " * 30
    records = make_records(3)
    records[0] = dataclasses.replace(records[0], prompt=long)
    records[1] = dataclasses.replace(records[1], prompt=long + "and wings")
    command = [
        sys.executable,
        "-m",
        "synthprobe.tools.sd_generate",
        str(prompts(records)),
        "--model",
        str(tiny_model),
        "--size",
        "32",
        "--steps",
        "2",
        "--quantize",
        "none",
    ]
    note = "2 prompts exceed the CLIP text encoders' 77 tokens; the rest is cut off"
    for extra, expected in (([], ["loading", note, "3 records"]), (["--silent"], [note])):
        name = "silent" if extra else "default"
        result = subprocess.run(
            command + ["--out", str(tmp_path / name), "--cache", str(tmp_path / f"cache-{name}"), *extra],
            env=subprocess_env(),
            capture_output=True,
            text=True,
        )
        assert result.returncode == 0, result.stderr
        lines = result.stderr.splitlines()
        assert len(lines) == len(expected) and all(line.startswith(start) for line, start in zip(lines, expected)), (
            lines
        )


def test_a_cached_run_needs_nothing_of_a_local_model(tiny_model, tiny_pipeline, prompts, tmp_path, monkeypatch, cli):
    model = tmp_path / "models" / "tiny-sd3"
    shutil.copytree(tiny_model, model)
    cache = tmp_path / "cache"
    path = prompts(make_records(3))
    real_load = load_pipeline
    monkeypatch.setattr("synthprobe.sd_generate.pipeline.load_pipeline", lambda settings: tiny_pipeline)
    cli(main, path, "--out", tmp_path / "first", "--model", model, "--cache", cache, *FAST)
    shutil.rmtree(model)  # the cache travels to a machine without the model
    monkeypatch.setattr("synthprobe.sd_generate.pipeline.load_pipeline", real_load)
    cli(main, path, "--out", tmp_path / "again", "--model", model, "--cache", cache, *FAST)
    assert [r["status"] for r in read_rows(tmp_path / "again" / "images.jsonl")] == ["ok"] * 3
    assert read_rows(tmp_path / "again" / "images.jsonl") == read_rows(tmp_path / "first" / "images.jsonl")
    # A record that is not cached needs the model, and says so.
    result = cli(
        main,
        prompts(make_records(4)),
        "--out",
        tmp_path / "more",
        "--model",
        model,
        "--cache",
        cache,
        *FAST,
        exit_code=1,
    )
    fails_with(result, f"model folder {model} does not exist")


def test_a_cached_run_needs_nothing_of_a_hub_model(tiny_model, tiny_pipeline, prompts, tmp_path, monkeypatch, cli):
    hub_id = "someone/tiny-sd3"
    cache = tmp_path / "cache"
    path = prompts(make_records(3))
    # The first run reads the configs from the hub (here: the tiny model's files) and loads the pipeline.
    real_read = read_model_json
    monkeypatch.setattr(
        "synthprobe.sd_generate.model.read_model_json",
        lambda source, name, download=True: real_read(ModelSource(str(tiny_model), None, tiny_model), name),
    )
    monkeypatch.setattr("synthprobe.sd_generate.pipeline.load_pipeline", lambda settings: tiny_pipeline)
    cli(main, path, "--out", tmp_path / "first", "--model", hub_id, "--cache", cache, *FAST)
    # Then no config, no Hugging Face cache (the fixture's is empty and offline), no weights.
    monkeypatch.setattr("synthprobe.sd_generate.model.read_model_json", real_read)
    monkeypatch.setattr(
        "synthprobe.sd_generate.pipeline.load_pipeline", lambda settings: pytest.fail("the model was loaded")
    )
    cli(main, path, "--out", tmp_path / "again", "--model", hub_id, "--cache", cache, *FAST)
    assert read_rows(tmp_path / "again" / "images.jsonl") == read_rows(tmp_path / "first" / "images.jsonl")
    # Without a record, the same offline run stops saying what to do.
    result = cli(
        main,
        path,
        "--out",
        tmp_path / "other",
        "--model",
        hub_id,
        "--cache",
        tmp_path / "empty-cache",
        *FAST,
        exit_code=1,
    )
    fails_with(result, "not in the local Hugging Face cache")
