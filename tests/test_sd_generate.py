"""sd-generate on a tiny random SD3 pipeline: cache, determinism, resume, shards, failures, bad input."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from synthprobe.files import InputError
from synthprobe.formats.image_cache import ImageCache, cache_key, reflink_or_copy
from synthprobe.formats.prompts import PromptRecord, read_prompts, write_prompts
from synthprobe.sd.model import ModelSource, read_model_json
from synthprobe.sd.pipeline import load_pipeline
from synthprobe.sd.run import plan, run_generation
from synthprobe.sd.settings import (
    Settings,
    resolve_dtype,
    resolve_quantization,
    select_records,
    shard_of,
)
from synthprobe.tiny_models import TINY_SD3_MULTIPLE, save_tiny_sd3, tiny_sd3_settings
from synthprobe.tools.sd_generate import main

FAST = ["--size", "32", "--steps", "2", "--quantize", "none", "--silent"]


def make_records(count: int, start: int = 0) -> list[PromptRecord]:
    subjects = ["bee", "frog", "guitar", "strawberry", "airplane"]
    return [
        PromptRecord(
            id=f"{subjects[i % 5]}.n.01-{i:03d}",
            synset=f"{subjects[i % 5]}.n.01",
            lemma=subjects[i % 5],
            group="concept",
            target=f"{subjects[i % 5]}.n.01",
            prompt=f"a photo of a {subjects[i % 5]}, view {i}",
            seed=1000 + i,
            negative_prompt="blurry" if i % 4 == 3 else None,
        )
        for i in range(start, start + count)
    ]


@pytest.fixture(autouse=True)
def offline_hub(monkeypatch, tmp_path):
    """No test touches the network: the hub is offline and its cache empty (the flags are read at import)."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return save_tiny_sd3(tmp_path_factory.mktemp("models") / "tiny-sd3")


@pytest.fixture
def prompts(tmp_path):
    def write(records, name="prompts.jsonl"):
        path = tmp_path / name
        write_prompts(path, records)
        return path

    return write


@pytest.fixture(scope="session")
def tiny_pipeline(tiny_model, tmp_path_factory):
    """The tiny pipeline loaded once through the real loader, shared by the in-process tests."""
    settings = tiny_sd3_settings(tiny_model, ImageCache(tmp_path_factory.mktemp("loader-cache")))
    return load_pipeline(settings)


@pytest.fixture
def no_model_load(monkeypatch):
    """Make any model load fail loudly, to prove a code path never loads one."""

    def refuse(settings):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr("synthprobe.sd.pipeline.load_pipeline", refuse)


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)


def run_in_process(records, settings, cache, out, pipeline):
    return run_generation(records, settings, cache, out, build_pipeline=lambda s: pipeline, silent=True)


# ---- the tool end to end ----------------------------------------------------------------------


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
    masked = [
        {**r, "sha256": "<sha256>", "cache_key": "<key>", "params": {**r["params"], "model": "<tiny-sd3>"}}
        for r in rows
    ]
    golden.check("sd_generate/images.jsonl", "".join(json.dumps(r) + "\n" for r in masked))

    slices = {r["id"]: pixels(out / r["path"])[-3:, -3:, :].tolist() for r in rows}

    def assert_close(expected, slices):
        for record_id, values in slices.items():  # a tolerance, as in diffusers' tests: BLAS order varies by CPU
            assert np.abs(np.array(values) - np.array(expected[record_id])).max() <= 2, record_id

    golden.check_json("sd_generate/pixel_slices.json", slices, assert_close)

    run = json.loads((out / "run.json").read_text())
    assert run["summary"] == {"records": 4, "generated": 4, "cached": 0, "failed": 0}
    assert run["config"]["batch_size"] == 2 and run["config"]["quantization"] == "none"

    first_manifest = (out / "images.jsonl").read_bytes()
    monkeypatch.setattr(
        "synthprobe.sd.pipeline.load_pipeline", lambda s: pytest.fail("an all-cached run loaded the model")
    )
    cli(main, path, "--out", out, "--model", tiny_model, "--cache", cache, "--batch-size", 3, *FAST)
    assert (out / "images.jsonl").read_bytes() == first_manifest
    assert json.loads((out / "run.json").read_text())["summary"] == {
        "records": 4,
        "generated": 0,
        "cached": 4,
        "failed": 0,
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
    monkeypatch.setattr("synthprobe.sd.pipeline.load_pipeline", lambda s: tiny_pipeline)
    records = make_records(8)
    out = tmp_path / "out"
    selection = ["--shard", "1/2", "--limit", 2]
    cli(main, prompts(records), "--out", out, "--model", tiny_model, "--cache", tmp_path / "c", *selection, *FAST)
    shard_ids = [r.id for r in records if shard_of(r.id, 2) == 1][:2]
    assert [r["id"] for r in read_rows(out / "images.shard-1-of-2.jsonl")] == shard_ids
    assert sorted(p.name for p in out.glob("*.png")) == sorted(f"{i}.png" for i in shard_ids)
    assert not (out / "images.jsonl").exists(), "a shard never writes the folder's manifest"


# ---- determinism and sharding -----------------------------------------------------------------


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


# ---- the cache --------------------------------------------------------------------------------


def test_cache_key_covers_every_pixel_parameter(tiny_model, tmp_path):
    cache = ImageCache(tmp_path / "cache")
    record = make_records(1)[0]
    base = tiny_sd3_settings(tiny_model, cache)
    keys = {cache_key(base.key_fields(record))}
    variants = [
        base.key_fields(PromptRecord(**{**record.__dict__, "prompt": "another prompt"})),
        base.key_fields(PromptRecord(**{**record.__dict__, "negative_prompt": "ugly"})),
        base.key_fields(PromptRecord(**{**record.__dict__, "seed": record.seed + 1})),
        *(
            tiny_sd3_settings(tiny_model, cache, **change).key_fields(record)
            for change in [{"steps": 3}, {"guidance": 5.0}, {"size": (32, 36)}, {"precision": "bf16"}]
        ),
        {**base.key_fields(record), "scheduler": {"class": "EulerDiscreteScheduler", "config": {}}},
        {**base.key_fields(record), "quantization": "4bit"},
        {**base.key_fields(record), "model": {"hub": "org/model", "revision": "main"}},
    ]
    keys.update(cache_key(fields) for fields in variants)
    assert len(keys) == len(variants) + 1
    same_record_other_id = PromptRecord(**{**record.__dict__, "id": "other", "group": "mixed"})
    assert cache_key(base.key_fields(same_record_other_id)) == cache_key(base.key_fields(record)), (
        "id does not change pixels"
    )
    assert (
        base.model_identity["local_sha256"]
        == tiny_sd3_settings(tiny_model, ImageCache(tmp_path / "fresh")).model_identity["local_sha256"]
    )


def test_cache_entry_counts_only_when_complete(tmp_path):
    cache = ImageCache(tmp_path / "cache")
    key = "ab" * 32
    png, meta = cache._paths(key)
    png.parent.mkdir(parents=True)
    png.write_bytes(b"\x89PNG half")  # a kill between the PNG rename and the JSON rename
    assert cache.lookup(key) is None
    entry = cache.store(key, b"png bytes", {"seed": 1})
    assert cache.lookup(key) == entry and entry.sha256 == hashlib.sha256(b"png bytes").hexdigest()
    meta.write_text("{truncated")
    assert cache.lookup(key) is None


def test_concurrent_stores_of_one_key_leave_one_valid_entry(tmp_path):
    cache = ImageCache(tmp_path / "cache")
    data = os.urandom(200_000)
    threads = [threading.Thread(target=cache.store, args=("cd" * 32, data, {})) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    entry = cache.lookup("cd" * 32)
    assert entry.png.read_bytes() == data
    assert sorted(p.name for p in entry.png.parent.iterdir()) == [f"{'cd' * 32}.json", f"{'cd' * 32}.png"]


def test_damaged_cache_entry_is_evicted_and_made_again(tiny_model, tiny_pipeline, tmp_path, caplog):
    cache = ImageCache(tmp_path / "cache")
    settings = tiny_sd3_settings(tiny_model, cache)
    records = make_records(3)
    out = tmp_path / "out"
    first = run_in_process(records, settings, cache, out, tiny_pipeline)
    truncated, edited, _ = (cache.lookup(row["cache_key"]).png for row in first.rows)
    truncated.write_bytes(truncated.read_bytes()[:100])
    data = bytearray(edited.read_bytes())  # same size, other bytes: only the sha256 tells
    data[-20] ^= 0xFF
    edited.write_bytes(bytes(data))
    caplog.set_level(logging.WARNING, logger="synthprobe")
    dry_run = ImageCache(cache.root, writable=False)
    assert dry_run.lookup(first.rows[0]["cache_key"]) is None and truncated.exists(), "a dry run evicts nothing"
    caplog.clear()
    again = run_in_process(records, settings, ImageCache(cache.root), out, tiny_pipeline)
    assert (again.generated, again.cached) == (2, 1)
    assert caplog.text.count("does not match its record") == 2 and str(truncated) in caplog.text
    assert again.rows == first.rows  # the same images, the same hashes
    for row in again.rows:
        assert hashlib.sha256((out / row["path"]).read_bytes()).hexdigest() == row["sha256"]
        assert hashlib.sha256(cache.lookup(row["cache_key"]).png.read_bytes()).hexdigest() == row["sha256"]


def test_editing_an_output_image_never_reaches_the_cache(tiny_model, tiny_pipeline, tmp_path):
    cache = ImageCache(tmp_path / "cache")
    settings = tiny_sd3_settings(tiny_model, cache)
    records = make_records(1)
    out = tmp_path / "out"
    row = run_in_process(records, settings, cache, out, tiny_pipeline).rows[0]
    output = out / row["path"]
    output.write_bytes(b"edited in place")  # through the same inode, as an image editor saving over it would
    entry = cache.lookup(row["cache_key"])
    assert hashlib.sha256(entry.png.read_bytes()).hexdigest() == row["sha256"]
    again = run_in_process(records, settings, cache, out, tiny_pipeline)
    assert again.cached == 1 and hashlib.sha256(output.read_bytes()).hexdigest() == row["sha256"]


def test_cache_hits_hash_each_file_once(tiny_model, tiny_pipeline, tmp_path, monkeypatch):
    """The sha256 check of a hit is memoised by inode, size and mtime: a rerun reads no image."""
    from synthprobe import files

    cache_root = tmp_path / "cache"
    settings = tiny_sd3_settings(tiny_model, ImageCache(cache_root))
    records = make_records(3)
    run_in_process(records, settings, ImageCache(cache_root), tmp_path / "out", tiny_pipeline)
    monkeypatch.setattr(files, "sha256_file", lambda path: pytest.fail(f"hashed {path} again"))
    assert run_in_process(records, settings, ImageCache(cache_root), tmp_path / "out", tiny_pipeline).cached == 3


def test_output_is_a_separate_copy_even_without_reflinks(tmp_path, monkeypatch):
    import fcntl

    source = tmp_path / "a.png"
    source.write_bytes(b"image")
    dest = tmp_path / "out" / "b.png"
    dest.parent.mkdir()
    dest.write_bytes(b"old image")

    def no_reflinks(fd, request, arg):
        raise OSError(95, "Operation not supported")

    monkeypatch.setattr(fcntl, "ioctl", no_reflinks)
    reflink_or_copy(source, dest)
    assert dest.read_bytes() == b"image" and not os.path.samefile(source, dest)
    assert [p.name for p in dest.parent.iterdir()] == ["b.png"]
    with open(dest, "r+b") as handle:  # an edit of the output in place
        handle.write(b"EDIT")
    assert source.read_bytes() == b"image"


# ---- resume and concurrency (real subprocesses) -----------------------------------------------


def tool_command(prompt_path, out, model, cache, *extra):
    return [
        sys.executable,
        "-m",
        "synthprobe.tools.sd_generate",
        str(prompt_path),
        "--out",
        str(out),
        "--model",
        str(model),
        "--cache",
        str(cache),
        *FAST,
        *map(str, extra),
    ]


def subprocess_env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def test_resume_after_kill_9(tiny_model, tiny_pipeline, prompts, tmp_path):
    records = make_records(12)
    path = prompts(records)
    cache = ImageCache(tmp_path / "cache")
    out = tmp_path / "out"
    # More steps make each image slow enough to kill the process between two of them.
    command = tool_command(path, out, tiny_model, cache.root, "--steps", 8)
    process = subprocess.Popen(command, env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 90
    while len(list(cache.root.glob("*/*.json"))) < 2:
        assert process.poll() is None, process.stderr.read().decode()
        assert time.monotonic() < deadline, "the subprocess made no image in 90 s"
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    process.stderr.close()

    settings = tiny_sd3_settings(tiny_model, cache, steps=8)
    committed = {p.key: p.record.seed for p in plan(records, settings, cache) if p.entry}
    assert 2 <= len(committed) < len(records), "kill the run in the middle"
    for key in committed:
        entry = cache.lookup(key)
        assert hashlib.sha256(entry.png.read_bytes()).hexdigest() == entry.sha256
        Image.open(entry.png).load()  # raises on a truncated PNG
    assert not (out / "images.jsonl").exists()

    seeds_generated = []

    def spy(settings):
        def pipe(**kwargs):
            seeds_generated.extend(g.initial_seed() for g in kwargs["generator"])
            return tiny_pipeline(**kwargs)

        return pipe

    result = run_generation(records, settings, cache, out, build_pipeline=spy, silent=True)
    assert (result.generated, result.cached, result.failed) == (len(records) - len(committed), len(committed), 0)
    assert sorted(seeds_generated) == sorted(set(r.seed for r in records) - set(committed.values()))


def test_concurrent_shards_share_one_cache(tiny_model, prompts, tmp_path, monkeypatch, cli):
    records = make_records(6)
    # A record with another id but the same prompt and seed, in the other shard: both shards make that key at once.
    twin_id = next(
        f"{records[0].id}-twin{j}"
        for j in range(99)
        if shard_of(f"{records[0].id}-twin{j}", 2) != shard_of(records[0].id, 2)
    )
    records.append(PromptRecord(**{**records[0].__dict__, "id": twin_id}))
    path = prompts(records)
    cache = tmp_path / "cache"
    out = tmp_path / "out"
    processes = [
        subprocess.Popen(
            tool_command(path, out, tiny_model, cache, "--shard", f"{k}/2"),
            env=subprocess_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for k in range(2)
    ]
    for process in processes:
        _, stderr = process.communicate(timeout=120)
        assert process.returncode == 0, stderr.decode()
    shard_ids = [{r["id"] for r in read_rows(out / f"images.shard-{k}-of-2.jsonl")} for k in range(2)]
    assert not shard_ids[0] & shard_ids[1] and shard_ids[0] | shard_ids[1] == {r.id for r in records}

    monkeypatch.setattr(
        "synthprobe.sd.pipeline.load_pipeline", lambda s: pytest.fail("assembling the shards loaded the model")
    )
    cli(main, path, "--out", out, "--model", tiny_model, "--cache", cache, *FAST)
    rows = read_rows(out / "images.jsonl")
    assert [r["id"] for r in rows] == [r.id for r in records] and {r["status"] for r in rows} == {"ok"}
    assert len(list(Path(cache).glob("*/*.png"))) == 6 and rows[0]["sha256"] == rows[-1]["sha256"]


# ---- failures are rows ------------------------------------------------------------------------


def failing_pipeline(pipeline):
    """The tiny pipeline, except that 'boom' prompts raise (like an OOM) and 'nan' prompts give NaN pixels."""

    def pipe(**kwargs):
        if any("boom" in prompt for prompt in kwargs["prompt"]):
            raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB\nmore detail")
        output = pipeline(**kwargs)
        for index, prompt in enumerate(kwargs["prompt"]):
            if "nan" in prompt:
                output.images[index][0, 0, 0] = np.nan
        return output

    return pipe


def test_failures_are_rows_and_the_rest_go_on(tiny_model, tiny_pipeline, prompts, tmp_path, monkeypatch, cli):
    records = make_records(5)
    records[1] = PromptRecord(**{**records[1].__dict__, "prompt": "boom"})
    records[3] = PromptRecord(**{**records[3].__dict__, "prompt": "nan"})
    out = tmp_path / "out"
    out.mkdir()
    (out / f"{records[1].id}.png").write_bytes(b"stale image from an earlier run")
    monkeypatch.setattr("synthprobe.sd.pipeline.load_pipeline", lambda s: failing_pipeline(tiny_pipeline))
    model = ["--model", tiny_model, "--cache", tmp_path / "cache"]
    result = cli(main, prompts(records), "--out", out, *model, "--batch-size", 3, *FAST, exit_code=1)
    assert "3 generated, 0 cached, 2 failed" in result.output

    rows = read_rows(out / "images.jsonl")
    assert [r["status"] for r in rows] == ["ok", "failed", "ok", "failed", "ok"]
    assert rows[1]["error"] == "RuntimeError: CUDA out of memory. Tried to allocate 20.00 GiB"
    assert "NaN" in rows[3]["error"]
    for row in (rows[1], rows[3]):
        assert "path" not in row and "sha256" not in row and row["cache_key"]
        assert not (out / f"{row['id']}.png").exists()
    assert json.loads((out / "run.json").read_text())["summary"]["failed"] == 2

    # The batch that failed was retried one record at a time: the same pixels as a clean run.
    clean_cache = ImageCache(tmp_path / "clean")
    clean = run_in_process(
        [records[0], records[2]],
        tiny_sd3_settings(tiny_model, clean_cache),
        clean_cache,
        tmp_path / "clean-out",
        tiny_pipeline,
    )
    assert [r["sha256"] for r in clean.rows] == [rows[0]["sha256"], rows[2]["sha256"]]


# ---- bad input: one clear line, non-zero exit, no model load ----------------------------------


def hub_error(cls, message):
    return cls(message, response=types.SimpleNamespace(headers={}, request=None))


@pytest.mark.parametrize(
    "case",
    [
        "size",
        "hub-size",
        "missing-folder",
        "not-a-pipeline",
        "offline-hub",
        "gated",
        "not-found",
        "malformed",
        "cache",
        "cuda-quantize",
        "device",
    ],
)
def test_bad_input_gives_one_line(case, tiny_model, prompts, tmp_path, monkeypatch, no_model_load, cli):
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    path = prompts(make_records(2))
    args = [path, "--out", tmp_path / "out", "--model", tiny_model, *FAST]
    expected = {
        "size": f"--size 30x30: width and height must be multiples of {TINY_SD3_MULTIPLE}",
        "hub-size": "--size 1000x1000: width and height must be multiples of 16",
        "missing-folder": "model folder ./no/such/model does not exist",
        "not-a-pipeline": "is not a diffusers pipeline",
        "offline-hub": "is not in the local Hugging Face cache",
        "gated": "accept its licence at https://huggingface.co/org/gated and log in with `hf auth login`",
        "not-found": "org/none was not found on the Hugging Face hub",
        "malformed": f"{tmp_path / 'bad.jsonl'}:2: missing field 'seed'",
        "cache": "cannot write to the image cache",
        "cuda-quantize": "--quantize 4bit needs a CUDA GPU",
        "device": "--device 'gpu' is not a device name",
    }[case]
    args += {
        "size": ["--size", "30"],
        "hub-size": ["--model", "org/uncached", "--size", "1000"],
        "missing-folder": ["--model", "./no/such/model"],
        "not-a-pipeline": ["--model", tmp_path],
        "offline-hub": ["--model", "org/uncached"],
        "cuda-quantize": ["--quantize", "4bit", "--device", "cpu"],
        "device": ["--device", "gpu"],
    }.get(case, [])
    if case in ("gated", "not-found"):
        error = hub_error(GatedRepoError, "401 gated") if case == "gated" else hub_error(RepositoryNotFoundError, "404")

        def download(*a, **k):
            raise error

        monkeypatch.setattr("huggingface_hub.hf_hub_download", download)
        args += ["--model", "org/gated" if case == "gated" else "org/none"]
    elif case == "malformed":
        bad = tmp_path / "bad.jsonl"
        lines = path.read_text().splitlines()
        bad.write_text(lines[0] + "\n" + lines[1].replace('"seed"', '"sead"') + "\n")
        args[0] = bad
    elif case == "cache":
        (tmp_path / "file").write_text("not a folder")
        args += ["--cache", tmp_path / "file" / "cache"]
    result = cli(main, *args, exit_code=1)
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and expected in lines[0], result.output


def test_load_errors_name_the_fix(monkeypatch, tiny_model, tmp_path):
    from diffusers import DiffusionPipeline
    from huggingface_hub.errors import GatedRepoError

    settings = tiny_sd3_settings(tiny_model, ImageCache(tmp_path / "cache"))
    settings = Settings(**{**settings.__dict__, "source": ModelSource("org/gated", "main")})

    def gated(*args, **kwargs):
        try:
            raise hub_error(GatedRepoError, "401")
        except GatedRepoError as exc:
            raise OSError("diffusers wraps it") from exc  # diffusers re-raises hub errors as OSError

    monkeypatch.setattr(DiffusionPipeline, "from_pretrained", gated)
    with pytest.raises(InputError, match="is gated: accept its licence"):
        load_pipeline(settings)


def test_quantize_auto_without_cuda_logs_one_line(caplog):
    with caplog.at_level("INFO", logger="synthprobe"):
        assert resolve_quantization("auto", "cpu") == "none"
    assert [r.getMessage() for r in caplog.records] == ["--quantize auto: no CUDA GPU, so the model loads unquantized"]
    assert resolve_quantization("none", "cpu") == "none"
    assert resolve_dtype("auto", "cpu") == "float32" and resolve_dtype("auto", "cuda") == "bfloat16"


# ---- CUDA only ---------------------------------------------------------------------------------


@pytest.mark.cuda
@pytest.mark.parametrize("quantize", ["4bit", "8bit"])
def test_cuda_quantized_generation(tiny_model, tmp_path, quantize):
    import bitsandbytes as bnb

    cache = ImageCache(tmp_path / "cache")
    settings = tiny_sd3_settings(tiny_model, cache, device="auto", quantize=quantize)
    assert (settings.device, settings.dtype, settings.quantization) == ("cuda", "bfloat16", quantize)
    pipe = load_pipeline(settings)
    layer = bnb.nn.Linear4bit if quantize == "4bit" else bnb.nn.Linear8bitLt
    assert any(isinstance(m, layer) for m in pipe.transformer.modules())
    result = run_generation(
        make_records(3), settings, cache, tmp_path / "out", build_pipeline=lambda s: pipe, silent=True
    )
    assert result.generated == 3 and result.failed == 0


@pytest.mark.cuda
def test_cuda_auto_quantizes_4bit_and_is_deterministic(tiny_model, tmp_path):
    cache = ImageCache(tmp_path / "cache")
    settings = tiny_sd3_settings(tiny_model, cache, device="auto", quantize="auto", batch_size=2)
    assert settings.quantization == "4bit" and settings.key_fields(make_records(1)[0])["device"] == "cuda"
    pipe = load_pipeline(settings)
    records = make_records(4)
    first = run_generation(records, settings, cache, tmp_path / "a", build_pipeline=lambda s: pipe, silent=True)
    again = ImageCache(tmp_path / "again")
    second = run_generation(records[::-1], settings, again, tmp_path / "b", build_pipeline=lambda s: pipe, silent=True)
    by_id = {r["id"]: r for r in second.rows}
    for row in first.rows:
        difference = np.abs(
            pixels(tmp_path / "a" / row["path"]) - pixels(tmp_path / "b" / by_id[row["id"]]["path"])
        ).max()
        assert difference <= 2, row["id"]


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
    monkeypatch.setattr("synthprobe.sd.pipeline.load_pipeline", lambda settings: tiny_pipeline)
    cli(main, path, "--out", tmp_path / "first", "--model", model, "--cache", cache, *FAST)
    shutil.rmtree(model)  # the cache travels to a machine without the model
    monkeypatch.setattr("synthprobe.sd.pipeline.load_pipeline", real_load)
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
    assert f"model folder {model} does not exist" in result.output


def test_a_cached_run_needs_nothing_of_a_hub_model(tiny_model, tiny_pipeline, prompts, tmp_path, monkeypatch, cli):
    hub_id = "someone/tiny-sd3"
    cache = tmp_path / "cache"
    path = prompts(make_records(3))
    # The first run reads the configs from the hub (here: the tiny model's files) and loads the pipeline.
    real_read = read_model_json
    monkeypatch.setattr(
        "synthprobe.sd.model.read_model_json",
        lambda source, name, download=True: real_read(ModelSource(str(tiny_model), None, tiny_model), name),
    )
    monkeypatch.setattr("synthprobe.sd.pipeline.load_pipeline", lambda settings: tiny_pipeline)
    cli(main, path, "--out", tmp_path / "first", "--model", hub_id, "--cache", cache, *FAST)
    # Then no config, no Hugging Face cache (the fixture's is empty and offline), no weights.
    monkeypatch.setattr("synthprobe.sd.model.read_model_json", real_read)
    monkeypatch.setattr("synthprobe.sd.pipeline.load_pipeline", lambda settings: pytest.fail("the model was loaded"))
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
    assert "not in the local Hugging Face cache" in result.output
