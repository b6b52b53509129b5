"""The cached generation run: plan cache keys, generate what is missing in batches, one row per record."""

from __future__ import annotations

import functools
import io
import logging
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from synthprobe.common.files import error_line
from synthprobe.common.locks import KeyClaims
from synthprobe.common.progress import progress
from synthprobe.formats.image_cache import CacheEntry, ImageCache, cache_key, canonical_json
from synthprobe.formats.prompts import PromptRecord
from synthprobe.sd_generate.families import long_prompt_note
from synthprobe.sd_generate.pipeline import (
    drop_unused_negative_prompts,
    load_pipeline,
    negative_prompt_argument,
    record_batches,
)
from synthprobe.sd_generate.settings import ResolvedParams

log = logging.getLogger("synthprobe")
# Records per Dask task (rounded up to whole batches): small enough that a dead worker costs little, large
# enough to hide the task overhead.
TASK_RECORDS = 4
CLAIMS_FOLDER = "claims"  # in the cache: a lock file per key being made


@dataclass
class Planned:
    record: PromptRecord
    key: str
    fields: dict
    entry: CacheEntry | None


def plan(records: list[PromptRecord], settings: ResolvedParams, cache: ImageCache) -> list[Planned]:
    """Each record's cache key, for the record as the pipeline will see it (a negative prompt it ignores dropped)."""
    records = drop_unused_negative_prompts(records, settings)
    planned = []
    for record in records:
        fields = settings.key_fields(record)
        key = cache_key(fields)
        planned.append(Planned(record, key, fields, cache.lookup(key)))
    return planned


def png_bytes(pixels, text: dict) -> bytes:
    """Encode HxWx3 uint8 pixels as PNG with ``text`` in tEXt/iTXt chunks."""
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    for name, value in text.items():
        if value is not None:
            info.add_text(name, str(value))
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def to_uint8(image):
    """Float [0, 1] pixels to uint8 exactly as diffusers' numpy_to_pil does."""
    import numpy as np

    return (image * 255).round().astype(np.uint8)


def call_pipeline(pipe, batch: list[Planned], settings: ResolvedParams):
    """One pipeline call for a batch; numpy output so NaNs stay visible (PIL output hides them as black)."""
    import torch

    return pipe(
        prompt=[p.record.prompt for p in batch],
        **negative_prompt_argument(pipe, [p.record.negative_prompt for p in batch]),
        num_inference_steps=settings.steps,
        guidance_scale=settings.guidance,
        width=settings.width,
        height=settings.height,
        # One CPU generator per record: the noise depends on the record's seed only, on any device.
        generator=[torch.Generator("cpu").manual_seed(p.record.seed) for p in batch],
        output_type="np",
        **settings.family.call,
    ).images


def generate_batch(pipe, batch: list[Planned], settings: ResolvedParams) -> Iterator[tuple[Planned, object]]:
    """Yield (planned, float image or error text). A failed batch is retried one record at a time."""
    import numpy as np
    import torch

    try:
        images = call_pipeline(pipe, batch, settings)
    except Exception as exc:  # out of memory or a pipeline error: isolate the record(s) that fail
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        if len(batch) > 1:
            for planned in batch:
                yield from generate_batch(pipe, [planned], settings)
            return
        yield batch[0], error_line(exc)
        return
    for planned, image in zip(batch, images):
        if not np.isfinite(image).all():
            yield planned, f"the image has NaN or infinite values (dtype {settings.dtype}; try --precision fp32)"
        else:
            yield planned, image


@dataclass
class RunResult:
    rows: list[dict]
    generated: int = 0
    cached: int = 0
    failed: int = 0
    negative_prompts: int = 0  # images made with a negative prompt

    def summary(self) -> dict:
        counts = (len(self.rows), self.generated, self.cached, self.failed, self.negative_prompts)
        return dict(zip(("records", "generated", "cached", "failed", "negative_prompts"), counts))


def save_image(planned: Planned, image, settings: ResolvedParams, cache: ImageCache, out_dir: Path) -> None:
    """Encode, cache and link one generated image."""
    record = planned.record
    text = {
        "prompt": record.prompt,
        "negative_prompt": record.negative_prompt,
        "seed": record.seed,
        "model": settings.source.name,
        "synthprobe": canonical_json({"cache_key": planned.key, "params": settings.params()}),
    }
    planned.entry = cache.store(planned.key, png_bytes(to_uint8(image), text), planned.fields)
    cache.export(planned.entry, out_dir / f"{record.id}.png")


def generate_missing(
    missing: list[Planned],
    settings: ResolvedParams,
    cache: ImageCache,
    out_dir: Path,
    build_pipeline: Callable[[ResolvedParams], object],
    silent: bool,
) -> tuple[dict[str, str], set[str]]:
    """Generate, cache and link every missing image; return errors by cache key and the keys made here.

    Each key is claimed in the cache first: one that another run is making (a run on the same cache with other
    outputs) is left to it, then waited for, and made here only if that run did not store it.
    """
    unique = list({p.key: p for p in missing}.values())  # records sharing a key are made once
    bar = progress(None, total=len(unique), desc="generating", unit="img", silent=silent)
    pipeline = functools.cache(lambda: loaded_pipeline(build_pipeline, settings, unique))  # only if one is made
    errors: dict[str, str] = {}
    made_here: set[str] = set()
    pending = unique
    try:
        with KeyClaims(cache.root / CLAIMS_FOLDER) as claims:
            while pending:
                mine = [p for p in pending if claims.take(p.key)]
                made = [p for p in mine if cache.lookup(p.key) is not None]  # by a run that let go of it since
                bar.update(len(made))
                todo = [p for p in mine if p not in made]
                errors.update(generate_batches(todo, settings, cache, out_dir, pipeline, bar))
                made_here.update(p.key for p in todo if p.key not in errors)
                claims.release()
                others = [p for p in pending if p not in mine]
                if others:
                    log.info("%d images are being made by another run on this cache; waiting for them", len(others))
                for p in others:
                    claims.wait_for(p.key)
                pending = [p for p in others if cache.lookup(p.key) is None]  # that run failed or stopped: ours
                bar.update(len(others) - len(pending))
    finally:
        bar.close()
    return errors, made_here


def loaded_pipeline(build_pipeline: Callable, settings: ResolvedParams, records: list[Planned]):
    pipe = build_pipeline(settings)
    texts = {p.record.prompt for p in records} | {p.record.negative_prompt for p in records if p.record.negative_prompt}
    note = long_prompt_note(pipe, settings.family, texts)
    if note:
        log.warning("%s", note)
    return pipe


def generate_batches(
    todo: list[Planned], settings: ResolvedParams, cache: ImageCache, out_dir: Path, pipeline: Callable, bar
) -> dict[str, str]:
    """Generate ``todo`` in batches with ``pipeline()``; return errors by cache key.

    PNG encoding and the cache's fsyncs run in a writer thread while the next batch is denoised; at most two
    batches wait there, and leaving the block (even on Ctrl-C) finishes them.
    """
    errors: dict[str, str] = {}
    if not todo:
        return errors
    pipe = pipeline()
    in_flight: deque = deque()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="png-writer") as writer:
        for batch in record_batches(todo, settings.batch_size):
            for planned, outcome in generate_batch(pipe, batch, settings):
                if isinstance(outcome, str):
                    errors[planned.key] = outcome
                else:
                    in_flight.append(writer.submit(save_image, planned, outcome, settings, cache, out_dir))
            while len(in_flight) > 2 * settings.batch_size:
                in_flight.popleft().result()
            bar.update(len(batch))
            bar.set_postfix(failed=len(errors))
        while in_flight:
            in_flight.popleft().result()
    return errors


@functools.lru_cache(maxsize=4)
def task_cache(root: Path) -> ImageCache:
    """A worker's view of the shared cache, kept between tasks: its hash memo is read once, not once per task."""
    return ImageCache(root)


def generate_task(
    batch: list[Planned], settings: ResolvedParams, cache_root: Path, out_dir: Path, build_pipeline: Callable
) -> tuple[dict[str, str], dict[str, str]]:
    """One Dask task: generate the images of ``batch`` the shared cache still lacks; return errors and the
    sha256 of each image stored, by cache key.

    A task run again after its worker died finds the images that worker finished in the cache.
    """
    from synthprobe.common.cluster import worker_model

    cache = task_cache(cache_root)
    todo = [p for p in batch if cache.lookup(p.key) is None]
    if not todo:
        return {}, {}
    errors, _ = generate_missing(todo, settings, cache, out_dir, lambda s: worker_model(build_pipeline, s), silent=True)
    return errors, {p.key: p.entry.sha256 for p in todo if p.entry is not None}


def generate_on_cluster(
    engine,
    missing: list[Planned],
    settings: ResolvedParams,
    cache: ImageCache,
    out_dir: Path,
    build_pipeline,
    silent: bool,
) -> dict[str, str]:
    """Generate the missing images as Dask tasks of whole batches, at least ``TASK_RECORDS`` records each, in the
    prompt file's order; errors by cache key.

    The workers' images are taken as the workers hashed them: the cache and the output copies are not read again.
    """
    unique = list({p.key: p for p in missing}.values())
    size = -(-max(TASK_RECORDS, settings.batch_size) // settings.batch_size) * settings.batch_size
    tasks = [unique[start : start + size] for start in range(0, len(unique), size)]
    root, out = cache.root.resolve(), out_dir.resolve()
    errors: dict[str, str] = {}
    for i, (task_errors, stored) in engine.run_tasks(
        generate_task,
        [(task, settings, root, out, build_pipeline) for task in tasks],
        [len(task) for task in tasks],
        desc="generating",
        unit="img",
        silent=silent,
    ):
        errors.update(task_errors)
        for planned in tasks[i]:
            if planned.key in stored:
                planned.entry = cache.adopt(planned.key, stored[planned.key])
                cache.memo.remember(out_dir / f"{planned.record.id}.png", planned.entry.sha256)
    return errors


def run_generation(
    records: list[PromptRecord],
    settings: ResolvedParams,
    cache: ImageCache,
    out_dir: Path,
    *,
    build_pipeline: Callable[[ResolvedParams], object] = load_pipeline,
    silent: bool = False,
    engine=None,
) -> RunResult:
    """Make sure every record has its image in ``out_dir``; return one row per record, in order.

    With a Dask ``engine`` (synthprobe.common.cluster) its workers generate the missing images into the shared cache.
    """
    planned = plan(records, settings, cache)
    missing = [p for p in planned if p.entry is None]
    errors: dict[str, str] = {}
    made_here: set[str] = set()  # the rest of the missing keys another run on the cache made meanwhile
    if missing:
        cache.check_writable()
        if engine is None:
            errors, made_here = generate_missing(missing, settings, cache, out_dir, build_pipeline, silent)
        else:
            errors = generate_on_cluster(engine, missing, settings, cache, out_dir, build_pipeline, silent)
            made_here = {p.key for p in missing} - set(errors)
        for p in missing:  # duplicates of a generated key share its entry
            p.entry = p.entry or cache.lookup(p.key)
    result = RunResult([])
    params = settings.params()
    for p in planned:
        base = p.record.to_json()
        target = out_dir / f"{p.record.id}.png"
        if p.entry is None:
            target.unlink(missing_ok=True)  # an image from earlier parameters would contradict the row
            result.failed += 1
            row = {
                **base,
                "status": "failed",
                "error": errors.get(p.key, "no image was produced"),
                "cache_key": p.key,
                "params": params,
            }
        else:
            cache.export(p.entry, target)
            if p.key in made_here:
                result.generated += 1
            else:
                result.cached += 1
            result.negative_prompts += bool(p.record.negative_prompt)
            row = {
                **base,
                "path": target.name,
                "sha256": p.entry.sha256,
                "status": "ok",
                "cache_key": p.key,
                "params": params,
            }
        result.rows.append(row)
    cache.save_memo()
    return result
