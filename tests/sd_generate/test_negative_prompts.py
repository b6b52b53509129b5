"""sd-generate and negative prompts: passed where the pipeline uses one, dropped (with one log line) where it does
not, and the cache key, images.jsonl, the PNG and run.json saying which happened."""

from __future__ import annotations

import inspect
import json
import shutil
from dataclasses import replace

import numpy as np
import pytest
from helpers.sd_generate import FAST, make_records, pixels, read_rows, run_in_process
from PIL import Image

from synthprobe.formats.image_cache import ImageCache
from synthprobe.sd_generate.pipeline import CALL_MEMO, class_keywords, negative_prompt_unused
from synthprobe.tiny_models import tiny_sd3_settings
from synthprobe.tools.sd_generate import main

pytestmark = pytest.mark.usefixtures("offline_hub")


def twin_records():
    """Two records that differ only in their negative prompt (and id)."""
    plain = replace(make_records(1)[0], negative_prompt=None)
    return [plain, replace(plain, id="with-negative", negative_prompt="frog, toad")]


@pytest.fixture(scope="module")
def no_negative_class():
    """The tiny SD3 pipeline under a class whose __call__ has no negative_prompt (as FLUX schnell's has no use
    for one)."""
    from diffusers import StableDiffusion3Pipeline

    class NoNegativePipeline(StableDiffusion3Pipeline):
        def __call__(self, prompt, num_inference_steps, guidance_scale, width, height, generator, output_type):
            return super().__call__(
                prompt=prompt,
                num_inference_steps=num_inference_steps,
                guidance_scale=guidance_scale,
                width=width,
                height=height,
                generator=generator,
                output_type=output_type,
            )

    return NoNegativePipeline


def test_a_negative_prompt_changes_the_key_and_the_image(tiny_model, tiny_pipeline, tmp_path):
    cache = ImageCache(tmp_path / "cache")
    settings = tiny_sd3_settings(tiny_model, cache)
    result = run_in_process(twin_records(), settings, cache, tmp_path / "out", tiny_pipeline)
    plain, negative = result.rows
    assert plain["cache_key"] != negative["cache_key"]
    assert np.abs(pixels(tmp_path / "out" / plain["path"]) - pixels(tmp_path / "out" / negative["path"])).max() > 0
    assert negative["negative_prompt"] == "frog, toad" and "negative_prompt" not in plain
    assert Image.open(tmp_path / "out" / negative["path"]).text["negative_prompt"] == "frog, toad"
    assert result.summary()["negative_prompts"] == 1


def test_a_pipeline_without_negative_prompt_gets_none_and_the_key_says_so(
    tiny_model, tiny_pipeline, no_negative_class, prompts, tmp_path, monkeypatch, cli, caplog
):
    pipe = no_negative_class(**tiny_pipeline.components)
    pipe.set_progress_bar_config(disable=True)
    monkeypatch.setattr("synthprobe.sd_generate.pipeline.load_pipeline", lambda settings: pipe)
    # What model_index.json would say of such a class (the tiny model's names SD3).
    monkeypatch.setattr(
        "synthprobe.sd_generate.pipeline.class_keywords", lambda settings, cache: ("NoNegativePipeline", set())
    )
    records = [*twin_records(), replace(twin_records()[1], id="another-negative", negative_prompt="bee")]
    out = tmp_path / "out"
    args = (prompts(records), "--out", out, "--model", tiny_model, "--cache", tmp_path / "cache", *FAST[:-1])
    with caplog.at_level("INFO", logger="synthprobe"):
        cli(main, *args, "--batch-size", 2)
    notes = [r.getMessage() for r in caplog.records if "negative prompt" in r.getMessage()]
    assert len(notes) == 1, notes  # once per run, not per record or batch
    assert notes[0].endswith("2 negative prompt(s) left out: NoNegativePipeline takes no negative_prompt")
    rows = read_rows(out / "images.jsonl")
    # What was passed is the plain record: one key, one image, made once, and no row claims a negative prompt.
    assert len({r["cache_key"] for r in rows}) == 1 and len({r["sha256"] for r in rows}) == 1
    assert not any("negative_prompt" in r for r in rows)
    assert "negative_prompt" not in Image.open(out / rows[1]["path"]).text
    summary = json.loads((out / "run.json").read_text())["summary"]
    assert (summary["records"], summary["failed"], summary["negative_prompts"]) == (3, 0, 0)


def test_a_pipeline_that_contradicts_its_model_index_fails_the_record(
    tiny_model, tiny_pipeline, no_negative_class, tmp_path
):
    """model_index.json names SD3 (which takes a negative prompt), but the pipeline built takes none: the record
    fails rather than being cached under a key that claims its negative prompt."""
    cache = ImageCache(tmp_path / "cache")
    pipe = no_negative_class(**tiny_pipeline.components)
    pipe.set_progress_bar_config(disable=True)
    result = run_in_process(twin_records(), tiny_sd3_settings(tiny_model, cache), cache, tmp_path / "out", pipe)
    assert [r["status"] for r in result.rows] == ["ok", "failed"]
    assert "takes no negative_prompt" in result.rows[1]["error"]


def test_no_classifier_free_guidance_leaves_the_negative_prompt_out(tiny_model, tiny_pipeline, tmp_path, caplog):
    cache = ImageCache(tmp_path / "cache")
    settings = tiny_sd3_settings(tiny_model, cache, guidance=1.0)
    with caplog.at_level("INFO", logger="synthprobe"):
        result = run_in_process(twin_records(), settings, cache, tmp_path / "out", tiny_pipeline)
    assert "1 negative prompt(s) left out: guidance 1 does no classifier-free guidance" in caplog.text
    assert result.rows[0]["cache_key"] == result.rows[1]["cache_key"] and result.summary()["negative_prompts"] == 0


def test_which_pipelines_use_a_negative_prompt():
    import diffusers

    def found(name):
        parameters = inspect.signature(getattr(diffusers, name).__call__).parameters
        return name, {k for k in ("negative_prompt", "true_cfg_scale") if k in parameters}

    assert negative_prompt_unused(found("StableDiffusion3Pipeline"), 3.5) is None
    assert negative_prompt_unused(found("StableDiffusionXLPipeline"), 5.0) is None
    assert negative_prompt_unused(None, 3.5) is None  # not known: as the default SD3
    # FLUX takes one, but uses it only with true CFG, which sd-generate does not set.
    assert "true_cfg_scale > 1" in negative_prompt_unused(found("FluxPipeline"), 3.5)
    assert "guidance 0 does no classifier-free guidance" in negative_prompt_unused(None, 0.0)


def test_the_pipeline_class_is_read_once_then_remembered_in_the_cache(tiny_model, tmp_path):
    """A rerun whose images are all cached needs neither the model nor an import of diffusers (seconds) to know
    what the class takes."""
    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    cache = ImageCache(tmp_path / "cache")
    settings = tiny_sd3_settings(model, cache)
    assert class_keywords(settings, cache) == ("StableDiffusion3Pipeline", {"negative_prompt"})
    memo_file = cache.root / CALL_MEMO
    memo = json.loads(memo_file.read_text())
    assert [v["takes"] for v in memo.values()] == [["negative_prompt"]]
    shutil.rmtree(model)  # the memo, keyed by the model's identity, stands in for it
    assert class_keywords(settings, cache) == ("StableDiffusion3Pipeline", {"negative_prompt"})
    memo_file.write_text(json.dumps({k: {**v, "takes": []} for k, v in memo.items()}))
    assert class_keywords(settings, cache) == ("StableDiffusion3Pipeline", set()), "the memo is what is read"
    memo_file.write_text("{broken")  # a memo, safe to lose: without it and the model, the class is not known
    assert class_keywords(settings, ImageCache(cache.root, writable=False)) is None
    assert memo_file.read_text() == "{broken", "a dry run writes nothing"
