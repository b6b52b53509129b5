"""sd-generate refuses bad input with one clear line, a non-zero exit and no model load."""

from __future__ import annotations

import types

import pytest
from helpers import fails_with
from helpers.sd_generate import FAST, make_records

from synthprobe.common.files import InputError
from synthprobe.formats.image_cache import ImageCache
from synthprobe.sd_generate.model import ModelSource
from synthprobe.sd_generate.pipeline import load_pipeline
from synthprobe.sd_generate.settings import ResolvedParams
from synthprobe.tiny_models import TINY_SD3_MULTIPLE, tiny_sd3_settings
from synthprobe.tools.sd_generate import main

pytestmark = pytest.mark.usefixtures("offline_hub")


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
        "hub-size": ["--model", "stabilityai/stable-diffusion-3.5-medium", "--size", "1000"],  # known: no download
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
    fails_with(cli(main, *args, exit_code=1), expected)


def test_load_errors_name_the_fix(monkeypatch, tiny_model, tmp_path):
    from diffusers import DiffusionPipeline
    from huggingface_hub.errors import GatedRepoError

    settings = tiny_sd3_settings(tiny_model, ImageCache(tmp_path / "cache"))
    settings = ResolvedParams(**{**settings.__dict__, "source": ModelSource("org/gated", "main")})

    def gated(*args, **kwargs):
        try:
            raise hub_error(GatedRepoError, "401")
        except GatedRepoError as exc:
            raise OSError("diffusers wraps it") from exc  # diffusers re-raises hub errors as OSError

    monkeypatch.setattr(DiffusionPipeline, "from_pretrained", gated)
    with pytest.raises(InputError, match="is gated: accept its licence"):
        load_pipeline(settings)


@pytest.mark.parametrize("where", ["cache", "out"])
def test_a_full_disk_names_the_file_it_could_not_write(where, tiny_model, prompts, tmp_path, monkeypatch, cli):
    """The disk fills while the image goes into the cache (a fsync fails) or while it is copied to --out."""
    import errno
    import os
    import shutil

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    path = prompts(make_records(1))
    if where == "cache":
        monkeypatch.setattr(os, "fsync", disk_full)
    else:
        monkeypatch.setattr(shutil, "copyfileobj", disk_full)
    out, cache = tmp_path / "out", tmp_path / "cache"
    result = cli(main, path, "--out", out, "--cache", cache, "--model", tiny_model, *FAST, exit_code=None)
    record = make_records(1)[0]
    line = fails_with(result, "cannot write", str(cache if where == "cache" else out / f"{record.id}.png"), "No space")
    assert ".tmp" not in line
    assert not (out / "images.jsonl").exists()


def test_a_cache_png_rewritten_in_place_with_its_size_and_mtime_kept_is_not_handed_out(tmp_path):
    """Same inode, same size, mtime set back: only the ctime (which no user can set) tells, and the hit is hashed."""
    import os

    cache = ImageCache(tmp_path / "cache")
    entry = cache.store("ab" * 32, b"original pixels", {"prompt": "p"})
    cache.save_memo()
    before = os.stat(entry.png)
    os.chmod(entry.png, 0o644)
    with open(entry.png, "r+b") as handle:  # in place: the inode stays
        handle.write(b"replaced pixels")
    os.utime(entry.png, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(entry.png)
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (before.st_ino, before.st_size, before.st_mtime_ns)
    assert ImageCache(tmp_path / "cache").lookup(entry.key) is None  # evicted, to be generated again
    assert not entry.png.exists()


def test_stale_temp_files_of_killed_writes_are_removed_on_the_next_run(tiny_model, prompts, tmp_path, cli):
    """A day-old temp file (a write killed before its rename) goes; a young one may be another run's, and stays."""
    import os
    import time

    out, cache = tmp_path / "out", tmp_path / "cache"
    stale = [out / ".images.jsonl.k1ll3d.tmp", cache / "ab" / f".{'ab' * 32}.png.x7.tmp", cache / ".memo.json.q.tmp"]
    young = [out / ".images.jsonl.busy.tmp", cache / "ab" / f".{'ab' * 32}.json.busy.tmp"]
    for path in stale + young:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"half a file")
    day_ago = time.time() - 25 * 3600
    for path in stale:
        os.utime(path, (day_ago, day_ago))
    cli(main, prompts(make_records(1)), "--out", out, "--cache", cache, "--model", tiny_model, *FAST)
    assert not any(path.exists() for path in stale)
    assert all(path.exists() for path in young)
