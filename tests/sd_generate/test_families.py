"""Generator families: each tiny family through sd-generate, image-check and cnn-hooks; the family table's defaults,
size multiples, cache keys and run.json fields."""

from __future__ import annotations

import functools
import json
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
from helpers import fails_with
from helpers.cnn_hooks import SMALL
from helpers.sd_generate import make_records, pixels, read_rows, run_in_process

from synthprobe.formats.activation_store import ActivationStore
from synthprobe.formats.image_cache import ImageCache, cache_key
from synthprobe.formats.image_checks import read_checks
from synthprobe.formats.prompts import PromptRecord
from synthprobe.sd_generate.families import FAMILIES, KNOWN_MODELS, family_of, long_prompt_note, with_variant
from synthprobe.sd_generate.pipeline import drop_unused_negative_prompts, load_pipeline
from synthprobe.sd_generate.settings import Params, resolve_settings
from synthprobe.tiny_models import tiny_clip_tokenizer, tiny_sd3_settings
from synthprobe.tiny_models.text import tiny_t5_tokenizer
from synthprobe.tools import cnn_hooks, image_check, sd_generate

PIPELINES = {
    "sd3": "StableDiffusion3Pipeline",
    "sdxl": "StableDiffusionXLPipeline",
    "flux": "FluxPipeline",
    "pixart-sigma": "PixArtSigmaPipeline",
}
# (a size the tiny pipeline refuses, its multiple): the pipeline's own 8 for SDXL and PixArt-Sigma, FLUX's 2x2
# latent packing on a VAE that does not scale, SD3's VAE factor 2 x patch 2
REFUSED = {"sd3": (30, 4), "sdxl": (36, 8), "flux": (33, 2), "pixart-sigma": (36, 8)}
FAST = ["--size", "32", "--steps", "2", "--quantize", "none", "--silent"]
# The tiny FLUX's transformer has no guidance embedder (as diffusers' test builds it): it takes schnell's defaults.
TINY_VARIANTS = {"flux": "black-forest-labs/FLUX.1-schnell"}


def generate(cli, prompt_file, out, model, cache, *extra):
    return cli(sd_generate.main, prompt_file, "--out", out, "--model", model, "--cache", cache, *FAST, *extra)


@pytest.mark.parametrize("family", list(PIPELINES))
def test_each_family_runs_through_sd_generate_image_check_and_cnn_hooks(
    family, tiny_family, tiny_clip_judge, prompts, wn, tmp_path, cli
):
    records = make_records(4)
    prompt_file = prompts(records)
    model = tiny_family(family)
    images = {}
    for batch_size in (1, 4):
        out = tmp_path / f"images-{batch_size}"
        generate(cli, prompt_file, out, model, tmp_path / f"cache-{batch_size}", "--batch-size", batch_size)
        rows = read_rows(out / "images.jsonl")
        assert [row["status"] for row in rows] == ["ok"] * 4
        assert {row["params"]["family"] for row in rows} == {family}
        images[batch_size] = np.stack([pixels(out / row["path"]) for row in rows])
    assert images[1].shape == (4, 32, 32, 3) and images[1].std() > 1, "real images, not a constant"
    assert np.abs(images[1] - images[4]).max() <= 1, "a seed gives the same pixels in any batch size"
    assert len({image.tobytes() for image in images[1]}) == 4, "each seed its own image"
    config = json.loads((tmp_path / "images-1" / "run.json").read_text())["config"]
    assert (config["family"], config["pipeline"]) == (family, PIPELINES[family])
    variant = TINY_VARIANTS.get(family)
    assert config["call"] == {**FAMILIES[family].call, **KNOWN_MODELS.get(variant, {}).get("call", {})}
    assert (config["variant"] or {}).get("model") == variant and config["compile"] is False

    cli(image_check.main, tmp_path / "images-1", "--out", tmp_path / "checks", "--judge", f"clip:{tiny_clip_judge}")
    checks = read_checks(tmp_path / "checks" / "checks.jsonl")
    assert sorted(row["id"] for row in checks) == sorted(r.id for r in records)
    assert all(0 <= row["object_score"] <= 1 for row in checks)

    cli(cnn_hooks.main, tmp_path / "images-1", "--out", tmp_path / "acts.zarr", *SMALL)
    store = ActivationStore(tmp_path / "acts.zarr")
    assert list(store.rows()["id"]) == [r.id for r in records]


@pytest.mark.parametrize("family", list(REFUSED))
def test_a_size_off_the_family_multiple_is_refused_in_one_line(family, tiny_family, prompts, tmp_path, cli):
    size, multiple = REFUSED[family]
    result = cli(
        sd_generate.main,
        prompts(make_records(1)),
        "--out",
        tmp_path / "out",
        "--model",
        tiny_family(family),
        "--cache",
        tmp_path / "cache",
        "--size",
        size,
        exit_code=1,
    )
    fails_with(result, f"--size {size}x{size}: width and height must be multiples of {multiple}")
    assert not (tmp_path / "out" / "images.jsonl").exists()


def test_the_cache_key_tells_families_and_schedulers_apart(tiny_family, tmp_path):
    cache = ImageCache(tmp_path / "cache")
    record = make_records(1)[0]
    fields = {family: tiny_sd3_settings(tiny_family(family), cache).key_fields(record) for family in PIPELINES}
    assert {f["family"] for f in fields.values()} == set(PIPELINES)
    other_scheduler = tmp_path / "sd3-shift-3"
    shutil.copytree(tiny_family("sd3"), other_scheduler)
    config_file = other_scheduler / "scheduler" / "scheduler_config.json"
    config_file.write_text(json.dumps({**json.loads(config_file.read_text()), "shift": 3.0}))
    shifted = tiny_sd3_settings(other_scheduler, cache).key_fields(record)
    assert shifted["scheduler"] != fields["sd3"]["scheduler"]
    keys = {cache_key(f) for f in [*fields.values(), shifted]}
    assert len(keys) == len(PIPELINES) + 1
    # Only the scheduler differs: the copy's weights are the same files, yet its images are keyed apart.
    assert shifted["model"] != fields["sd3"]["model"]
    assert cache_key({**shifted, "model": fields["sd3"]["model"]}) != cache_key(fields["sd3"])


def test_a_negative_prompt_is_keyed_only_where_the_family_uses_it(tiny_family, tmp_path):
    record = make_records(1)[0]
    negative = PromptRecord(**{**record.__dict__, "negative_prompt": "blurry"})
    for family, used in (("sd3", True), ("flux", False)):
        settings = tiny_sd3_settings(tiny_family(family), ImageCache(tmp_path / "cache"))
        seen = drop_unused_negative_prompts([record, negative], settings)  # as the pipeline will see them
        assert (cache_key(settings.key_fields(seen[0])) != cache_key(settings.key_fields(seen[1]))) == used


def test_the_tiny_tokenizers_survive_save_and_load(tiny_family):
    """The pipelines load their tokenizers back from the folders; the loaded ones must split text as the built."""
    from transformers import AutoTokenizer

    text = "A photo of a bee, view 3!"
    for subfolder, built in (("tokenizer", tiny_clip_tokenizer()), ("tokenizer_2", tiny_t5_tokenizer())):
        loaded = AutoTokenizer.from_pretrained(tiny_family("flux") / subfolder)
        assert loaded(text).input_ids == built(text).input_ids and loaded.model_max_length == built.model_max_length
    assert tiny_t5_tokenizer()(text).input_ids[-1] == tiny_t5_tokenizer().eos_token_id


@pytest.mark.parametrize("family", list(PIPELINES))
def test_unset_steps_guidance_and_size_come_from_the_family_table(family, tiny_family, tmp_path):
    params = Params(model=str(tiny_family(family)), device="cpu", quantize="none")
    settings = resolve_settings(params, ImageCache(tmp_path / "cache"), dry_run=True)
    row = {**FAMILIES[family].__dict__, **KNOWN_MODELS.get(TINY_VARIANTS.get(family), {})}
    assert (settings.steps, settings.guidance, settings.width, settings.height) == (
        row["steps"],
        row["guidance"],
        row["size"],
        row["size"],
    )
    given = resolve_settings(
        Params(model=params.model, steps=3, guidance=1.5, size=(64, 32), device="cpu", quantize="none"),
        ImageCache(tmp_path / "cache"),
        dry_run=True,
    )
    assert (given.steps, given.guidance, given.width, given.height) == (3, 1.5, 64, 32)


def test_the_cli_takes_the_family_defaults_and_records_them_in_run_json(tiny_family, prompts, tmp_path, cli):
    out = tmp_path / "out"
    args = ["--out", out, "--model", tiny_family("sd3"), "--cache", tmp_path / "cache", "--size", 32, "--silent"]
    cli(sd_generate.main, prompts(make_records(1)), *args, "--quantize", "none")
    config = json.loads((out / "run.json").read_text())["config"]
    assert (config["steps"], config["guidance"]) == (FAMILIES["sd3"].steps, FAMILIES["sd3"].guidance)


def test_hub_ids_refine_their_family_defaults_without_a_download():
    def known(model):
        return with_variant(family_of(None, model), model, None)

    schnell = known("black-forest-labs/FLUX.1-schnell")
    assert (schnell.name, schnell.steps, schnell.guidance) == ("flux", 4, 0.0)
    assert schnell.call["max_sequence_length"] == 256 and schnell.denoiser == "transformer"
    assert schnell.variant == {"model": "black-forest-labs/FLUX.1-schnell", "by": "the hub id"}
    turbo = known("stabilityai/stable-diffusion-3.5-large-turbo")
    assert (turbo.name, turbo.steps, turbo.guidance, turbo.multiple) == ("sd3", 4, 0.0, 16)
    assert family_of(None, "org/unknown") is None
    finetune = family_of({"_class_name": "StableDiffusionXLPipeline"}, "org/my-sdxl-finetune")
    assert finetune.denoiser == "unet" and with_variant(finetune, "org/my-sdxl-finetune", {}) == finetune


def test_a_pipeline_without_a_family_needs_its_settings_given(tiny_family, prompts, tmp_path, cli):
    model = tmp_path / "other"
    shutil.copytree(tiny_family("sd3"), model)
    index = json.loads((model / "model_index.json").read_text())
    (model / "model_index.json").write_text(json.dumps({**index, "_class_name": "KandinskyV99Pipeline"}))
    args = [prompts(make_records(1)), "--out", tmp_path / "out", "--model", model, "--cache", tmp_path / "cache"]
    result = cli(sd_generate.main, *args, "--dry-run", "--size", 32, exit_code=1)
    fails_with(result, "KandinskyV99Pipeline, which sd-generate has no defaults for: give --steps, --guidance")
    cli(sd_generate.main, *args, "--dry-run", "--size", 32, "--steps", 2, "--guidance", 1)
    del index["transformer"]  # nothing left for --compile or --quantize to act on
    (model / "model_index.json").write_text(json.dumps({**index, "_class_name": "KandinskyV99Pipeline"}))
    given = ["--size", 32, "--steps", 2, "--guidance", 1, "--device", "cpu"]
    result = cli(sd_generate.main, *args, "--dry-run", *given, "--compile", exit_code=1)
    fails_with(result, "--compile: a KandinskyV99Pipeline has no transformer or unet to act on")


def test_offload_off_cuda_is_refused_in_one_line(tiny_family, prompts, tmp_path, cli):
    args = [prompts(make_records(1)), "--out", tmp_path / "out", "--model", tiny_family("flux"), "--cache", tmp_path]
    result = cli(sd_generate.main, *args, *FAST, "--device", "cpu", "--offload", exit_code=1)
    fails_with(result, "--offload moves components between the CPU and a CUDA GPU; the device here is cpu")


def test_compile_gives_the_eager_images(tiny_family, tiny_pipeline, monkeypatch, tmp_path):
    """--compile compiles the denoiser in place. Inductor's code generation takes about a minute on this 2-core CPU,
    so the test compiles with dynamo's aot_eager backend: the graph capture and the wiring, not inductor's kernels
    (bench/gpu_check.py times inductor on a GPU)."""
    import torch

    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="aot_eager"))
    records = make_records(2)
    results = {}
    for compiled in (False, True):
        cache = ImageCache(tmp_path / f"cache-{compiled}")
        settings = tiny_sd3_settings(tiny_family("sd3"), cache, compile=compiled)
        pipe = load_pipeline(settings) if compiled else tiny_pipeline
        assert (pipe.transformer._compiled_call_impl is not None) == compiled
        out = tmp_path / f"out-{compiled}"
        result = run_in_process(records, settings, cache, out, pipe)
        results[compiled] = np.stack([pixels(out / row["path"]) for row in result.rows])
        assert settings.key_fields(records[0])["family"] == "sd3"
    assert np.abs(results[True] - results[False]).max() <= 1


@pytest.mark.parametrize(
    ("family", "tokenizers", "length", "note"),
    [
        ("sd3", ("tokenizer", "tokenizer_3"), 120, "the CLIP text encoders' 77 tokens; T5 gets the whole prompt"),
        (
            "flux",
            ("tokenizer", "tokenizer_2"),
            900,
            "the CLIP text encoder's 77 tokens; T5 cuts 1 of them at 512 tokens too",
        ),
        ("pixart-sigma", ("tokenizer",), 600, "the T5 text encoder's 300 tokens; the rest is cut off"),
    ],
)
def test_the_long_prompt_note_names_the_family_encoders_and_limits(family, tokenizers, length, note):
    """One line per run for the prompts over the first encoder's limit, and what the second encoder keeps."""
    clip, t5 = tiny_clip_tokenizer(), tiny_t5_tokenizer()
    encoders = dict(zip(tokenizers, (t5,) if family == "pixart-sigma" else (clip, t5)))
    pipe = SimpleNamespace(**{"tokenizer": None, "tokenizer_2": None, "tokenizer_3": None, **encoders})
    texts = {"a bee", ("a bee on a flower " * 60)[:length]}
    assert long_prompt_note(pipe, FAMILIES[family], texts) == f"1 prompt exceeds {note}"
    assert long_prompt_note(pipe, FAMILIES[family], {"a bee"}) is None


def test_the_long_prompt_note_takes_the_limit_a_hub_id_sets():
    """FLUX.1-schnell's T5 takes 256 tokens (max_sequence_length), not the family's 512."""
    pipe = SimpleNamespace(tokenizer=tiny_clip_tokenizer(), tokenizer_2=tiny_t5_tokenizer())
    schnell = with_variant(FAMILIES["flux"], "black-forest-labs/FLUX.1-schnell", None)
    long_prompt = ("a bee on a flower " * 60)[:450]
    assert long_prompt_note(pipe, schnell, {long_prompt}).endswith("T5 cuts 1 of them at 256 tokens too")
    assert long_prompt_note(pipe, FAMILIES["flux"], {long_prompt}).endswith("T5 gets the whole prompt")
