"""sd-generate and negative prompts: passed where the pipeline uses one, dropped (with one log line) where it does
not, and the cache key, images.jsonl, the PNG and run.json saying which happened."""

from __future__ import annotations

import inspect
import json
from dataclasses import replace

import numpy as np
import pytest
from helpers.sd_generate import FAST, make_records, pixels, read_rows, run_in_process
from PIL import Image

from synthprobe.formats.image_cache import ImageCache
from synthprobe.sd_generate.families import FAMILIES
from synthprobe.sd_generate.pipeline import negative_prompt_unused
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
        def __call__(
            self,
            prompt,
            num_inference_steps,
            guidance_scale,
            width,
            height,
            generator,
            output_type,
            max_sequence_length,
        ):
            return super().__call__(
                prompt=prompt,
                max_sequence_length=max_sequence_length,
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
    # A family whose row says its pipeline uses no negative prompt (the tiny model's model_index.json names SD3).
    no_negative = replace(FAMILIES["sd3"], pipelines=("NoNegativePipeline",), negative_prompt=False)
    monkeypatch.setattr("synthprobe.sd_generate.model.family_of", lambda index, model: no_negative)
    records = [*twin_records(), replace(twin_records()[1], id="another-negative", negative_prompt="bee")]
    out = tmp_path / "out"
    args = (prompts(records), "--out", out, "--model", tiny_model, "--cache", tmp_path / "cache", *FAST[:-1])
    with caplog.at_level("INFO", logger="synthprobe"):
        cli(main, *args, "--batch-size", 2)
    notes = [r.getMessage() for r in caplog.records if "negative prompt" in r.getMessage()]
    assert len(notes) == 1, notes  # once per run, not per record or batch
    assert notes[0].endswith(
        "2 negative prompt(s) left out: a NoNegativePipeline uses no negative prompt at sd-generate's settings"
    )
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


def test_the_family_table_says_what_diffusers_pipelines_do_with_a_negative_prompt():
    """A family uses one where its class's __call__ takes negative_prompt without true_cfg_scale (FLUX takes one,
    but uses it only with true CFG, which sd-generate does not set); and only with classifier-free guidance."""
    import diffusers

    for family in FAMILIES.values():
        parameters = inspect.signature(getattr(diffusers, family.pipelines[0]).__call__).parameters
        assert family.negative_prompt == ("negative_prompt" in parameters and "true_cfg_scale" not in parameters)
        assert (negative_prompt_unused(family, 3.5) is None) == family.negative_prompt
    assert "FluxPipeline uses no negative prompt" in negative_prompt_unused(FAMILIES["flux"], 3.5)
    assert "guidance 0 does no classifier-free guidance" in negative_prompt_unused(FAMILIES["sd3"], 0.0)


def test_an_image_does_not_depend_on_its_batch_mates_negative_prompts(tiny_family, tmp_path):
    """SDXL's "no negative prompt" is zero embeddings, not those of "": a record without one must get them whether
    or not its batch mates have one, so batches hold the two kinds apart."""
    from diffusers import DiffusionPipeline

    model = tiny_family("sdxl")
    pipe = DiffusionPipeline.from_pretrained(model)
    pipe.set_progress_bar_config(disable=True)
    plain, negative = twin_records()
    made = {}
    for batch_size, records in ((2, [negative, plain]), (1, [plain])):
        cache = ImageCache(tmp_path / f"cache{batch_size}")
        settings = tiny_sd3_settings(model, cache, guidance=5.0, batch_size=batch_size)
        result = run_in_process(records, settings, cache, tmp_path / f"out{batch_size}", pipe)
        made[batch_size] = {row["id"]: pixels(tmp_path / f"out{batch_size}" / row["path"]) for row in result.rows}
    np.testing.assert_array_equal(made[2][plain.id], made[1][plain.id])
    assert np.abs(made[2][negative.id] - made[2][plain.id]).max() > 0
    import torch

    with_empty = pipe(  # what passing "" for "none" made
        prompt=[plain.prompt],
        negative_prompt=[""],
        num_inference_steps=2,
        guidance_scale=5.0,
        width=32,
        height=32,
        generator=[torch.Generator("cpu").manual_seed(plain.seed)],
        output_type="np",
    ).images[0]
    assert np.abs((with_empty * 255).round() - made[1][plain.id]).max() > 0
