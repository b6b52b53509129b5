"""sd-generate runs that stop or fail: resume after kill -9, concurrent shards sharing one cache, failed
images as rows while the rest go on.
"""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
from helpers.sd_generate import (
    FAST,
    failing_pipeline,
    make_records,
    read_rows,
    run_in_process,
    subprocess_env,
    tool_command,
)
from PIL import Image

from synthprobe.formats.image_cache import ImageCache
from synthprobe.formats.prompts import PromptRecord
from synthprobe.sd_generate.run import plan, run_generation
from synthprobe.sd_generate.settings import shard_of
from synthprobe.tiny_models import tiny_sd3_settings
from synthprobe.tools.sd_generate import main

pytestmark = pytest.mark.usefixtures("offline_hub")


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
        "synthprobe.sd_generate.pipeline.load_pipeline", lambda s: pytest.fail("assembling the shards loaded the model")
    )
    cli(main, path, "--out", out, "--model", tiny_model, "--cache", cache, *FAST)
    rows = read_rows(out / "images.jsonl")
    assert [r["id"] for r in rows] == [r.id for r in records] and {r["status"] for r in rows} == {"ok"}
    assert len(list(Path(cache).glob("*/*.png"))) == 6 and rows[0]["sha256"] == rows[-1]["sha256"]


# ---- failures are rows ------------------------------------------------------------------------


def test_failures_are_rows_and_the_rest_go_on(tiny_model, tiny_pipeline, prompts, tmp_path, monkeypatch, cli):
    records = make_records(5)
    records[1] = PromptRecord(**{**records[1].__dict__, "prompt": "boom"})
    records[3] = PromptRecord(**{**records[3].__dict__, "prompt": "nan"})
    out = tmp_path / "out"
    out.mkdir()
    (out / f"{records[1].id}.png").write_bytes(b"stale image from an earlier run")
    monkeypatch.setattr("synthprobe.sd_generate.pipeline.load_pipeline", lambda s: failing_pipeline(tiny_pipeline))
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


def test_two_runs_on_one_cache_make_each_image_once(tiny_model, prompts, tmp_path):
    """A second run with other outputs on the same cache leaves the images the first is making to it, waits,
    and takes them from the cache. The first is paused (SIGSTOP) holding its claims, so the two overlap."""
    path = prompts(make_records(4))
    cache = tmp_path / "cache"
    first = subprocess.Popen(
        tool_command(path, tmp_path / "a", tiny_model, cache), env=subprocess_env(), stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 120
    while len(list((cache / "claims").glob("*.lock"))) < 4 and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    first.send_signal(signal.SIGSTOP)
    try:
        command = [arg for arg in tool_command(path, tmp_path / "b", tiny_model, cache) if arg != "--silent"]
        second = subprocess.Popen(command, env=subprocess_env(), stderr=subprocess.PIPE, text=True)
        waiting = second.stderr.readline()
        while waiting and "being made by another run" not in waiting:
            waiting = second.stderr.readline()
        assert "4 images are being made by another run on this cache; waiting for them" in waiting
    finally:
        first.send_signal(signal.SIGCONT)
    assert first.wait(timeout=120) == 0, first.stderr.read()
    assert second.wait(timeout=120) == 0, second.stderr.read()
    runs = [json.loads((tmp_path / name / "run.json").read_text())["summary"] for name in ("a", "b")]
    assert (runs[0]["generated"], runs[1]["generated"], runs[1]["cached"]) == (4, 0, 4)
    assert len(list(cache.glob("*/*.png"))) == 4 and not list((cache / "claims").glob("*.lock"))
    assert [r["sha256"] for r in read_rows(tmp_path / "a" / "images.jsonl")] == [
        r["sha256"] for r in read_rows(tmp_path / "b" / "images.jsonl")
    ]
