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
