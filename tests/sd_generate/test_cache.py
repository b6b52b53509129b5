"""sd-generate's image cache: what its key covers, complete entries only, concurrent writers, damaged
entries, outputs that are separate copies.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading

import pytest
from helpers.sd_generate import make_records, run_in_process

from synthprobe.formats.image_cache import ImageCache, cache_key, reflink_or_copy
from synthprobe.formats.prompts import PromptRecord
from synthprobe.tiny_models import tiny_sd3_settings

pytestmark = pytest.mark.usefixtures("offline_hub")


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
    from synthprobe.common import files

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
