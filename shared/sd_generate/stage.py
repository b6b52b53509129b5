"""sd-generate as one call: read the prompt records -> generate (through the cache) -> write images.jsonl and run.json.

A notebook calls ``generate(prompts, out, Params(...))``; ``plan_run`` is ``--dry-run``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from synthprobe import library_versions
from synthprobe.common.files import begin_outputs
from synthprobe.formats.image_cache import ImageCache, default_image_cache
from synthprobe.formats.image_folder import output_names, write_manifest, write_run
from synthprobe.formats.prompts import PromptRecord, read_prompts
from synthprobe.sd_generate import pipeline
from synthprobe.sd_generate.run import Planned, RunResult, plan, run_generation
from synthprobe.sd_generate.settings import Params, ResolvedParams, resolve_settings, select_records


@dataclass(frozen=True)
class Selection:
    """Which records a run makes and where from: the prompt file (``-`` for stdin), then a shard, then a limit."""

    prompts: str
    shard: tuple[int, int] | None = None
    limit: int | None = None

    def read(self) -> list[PromptRecord]:
        return select_records(read_prompts(self.prompts), self.shard, self.limit)


@dataclass
class Generation:
    """A finished run: its rows and counts (``result``), where they were written, and how long it took."""

    result: RunResult
    manifest: Path
    seconds: float


def plan_run(selection: Selection, params: Params, cache_dir: str | Path | None = None, engine=None) -> list[Planned]:
    """What a run would generate and what is cached (``--dry-run``): changes nothing, loads no model."""
    cache = ImageCache(cache_dir or default_image_cache(), writable=False)
    settings = resolve_settings(params, cache, dry_run=True, engine=engine)
    return plan(selection.read(), settings, cache)


def generate(
    selection: Selection,
    out_dir: str | Path,
    params: Params,
    *,
    cache_dir: str | Path | None = None,
    engine=None,
    silent: bool = False,
    build_pipeline: Callable[[ResolvedParams], object] | None = None,
) -> Generation:
    """Make sure ``out_dir`` holds every selected record's image; then write its manifest and run.json.

    ``build_pipeline`` (default sd_generate.pipeline.load_pipeline) builds the diffusers pipeline, once, and only if
    an image is missing from the cache; with a Dask ``engine`` its workers generate.
    """
    started = time.perf_counter()
    records = selection.read()
    cache = ImageCache(cache_dir or default_image_cache())
    settings = resolve_settings(params, cache, engine=engine)
    manifest_name, run_name = output_names(selection.shard)
    out = begin_outputs(out_dir, manifest_name, run_name)
    result = run_generation(
        records,
        settings,
        cache,
        out,
        build_pipeline=build_pipeline or pipeline.load_pipeline,  # looked up now, so a test can replace it
        silent=silent,
        engine=engine,
    )
    seconds = time.perf_counter() - started
    run = {
        "tool": "sd-generate",
        "manifest": manifest_name,
        "config": run_config(settings, selection, cache, engine),
        "summary": result.summary(),
        "seconds": round(seconds, 3),
        "versions": library_versions("torch", "diffusers", "transformers"),
    }
    write_run(out / run_name, run)
    write_manifest(out / manifest_name, result.rows)
    return Generation(result, out / manifest_name, seconds)


def run_config(settings: ResolvedParams, selection: Selection, cache: ImageCache, engine) -> dict:
    """run.json's ``config``: the resolved settings and the selection, as given."""
    shard = selection.shard
    return {
        "prompts": selection.prompts,
        "model": settings.source.name,
        "revision": settings.source.revision,
        "model_identity": settings.model_identity,
        "pipeline": settings.pipeline,
        "family": settings.family.name,
        "call": settings.family.call,
        "variant": settings.family.variant,  # the known model whose defaults it took, and what told it
        "steps": settings.steps,
        "guidance": settings.guidance,
        "width": settings.width,
        "height": settings.height,
        "batch_size": settings.batch_size,
        "device": settings.device,
        "dtype": settings.dtype,
        "quantization": settings.quantization,
        "quantized": list(settings.quantized),
        "offload": settings.offload,
        "compile": settings.compile,
        "scheduler": settings.scheduler,
        "cache": str(cache.root),
        "shard": f"{shard[0]}/{shard[1]}" if shard else None,
        "limit": selection.limit,
        "dask": engine.spec if engine is not None else None,
    }
