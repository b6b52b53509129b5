"""Prompt records to images through the content-addressed cache (the library behind ``sd-generate``).

The flow: resolve the model and the settings, compute every record's cache
key without loading anything, link cached images into the output folder,
build the pipeline only if something is missing, generate the missing images
in batches (one ``torch.Generator`` per record, so an image depends on its own
seed only), and return one row per record. The pipeline comes from a builder
function so tests can inject tiny or failing ones.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from .devices import resolve_device
from .files import InputError, atomic_write, error_line, read_json, sha256_file
from .formats.image_cache import CacheEntry, ImageCache, cache_key, canonical_json
from .formats.prompts import PromptRecord
from .progress import progress
from .quiet import quiet_loaded_libraries

log = logging.getLogger("synthprobe")

DEFAULT_MODEL = "stabilityai/stable-diffusion-3.5-large"
# SD3's VAE scales by 8 and its transformer patches are 2 pixels of latent.
SD3_MULTIPLE = 16
DTYPES = ("float32", "bfloat16", "float16")


# ---- settings --------------------------------------------------------------------------------


def parse_size(text: str) -> tuple[int, int]:
    """``1024`` or ``768x1024`` (width x height) to (width, height)."""
    match = re.fullmatch(r"\s*(\d+)\s*(?:[xX]\s*(\d+)\s*)?", text)
    if not match or int(match[1]) == 0 or (match[2] is not None and int(match[2]) == 0):
        raise InputError(f"--size {text!r}: expected a positive number such as 1024, or WIDTHxHEIGHT such as 768x1024")
    width = int(match[1])
    return width, int(match[2]) if match[2] else width


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``K/N`` to (K, N) with 0 <= K < N."""
    if text is None:
        return None
    match = re.fullmatch(r"(\d+)/(\d+)", text.strip())
    if not match:
        raise InputError(f"--shard {text!r}: expected K/N, such as 0/4")
    index, count = int(match[1]), int(match[2])
    if count < 1 or index >= count:
        raise InputError(
            f"--shard {text}: K must be in 0..N-1 and N at least 1 (for N={count}: 0/{count} to {count - 1}/{count})"
        )
    return index, count


def shard_of(record_id: str, count: int) -> int:
    """The shard of a record: a hash of its id, so adding records never moves existing ones."""
    return int.from_bytes(hashlib.sha256(record_id.encode("utf-8")).digest()[:8], "big") % count


def select_records(records: list[PromptRecord], shard: tuple[int, int] | None, limit: int | None) -> list[PromptRecord]:
    if shard is not None:
        records = [r for r in records if shard_of(r.id, shard[1]) == shard[0]]
    return records[:limit] if limit is not None else records


def resolve_dtype(requested: str, device: str) -> str:
    if requested == "auto":
        return "bfloat16" if device.startswith("cuda") else "float32"
    return requested


def resolve_quantization(requested: str, device: str) -> str:
    """``auto`` means 4-bit NF4 on CUDA, else none; bitsandbytes quantization needs CUDA."""
    on_cuda = device.startswith("cuda")
    if requested == "auto":
        if on_cuda:
            return "4bit"
        log.info("--quantize auto: no CUDA GPU, so the model loads unquantized")
        return "none"
    if requested != "none" and not on_cuda:
        raise InputError(f"--quantize {requested} needs a CUDA GPU (bitsandbytes); use --quantize none or auto here")
    return requested


# ---- the model, before it is loaded ----------------------------------------------------------


@dataclass(frozen=True)
class ModelSource:
    """A hub id (with a revision) or a local pipeline folder."""

    name: str
    revision: str | None = None
    folder: Path | None = None

    @property
    def is_local(self) -> bool:
        return self.folder is not None


def resolve_model_source(model: str, revision: str | None) -> ModelSource:
    folder = Path(model).expanduser()
    if folder.is_dir():
        if not (folder / "model_index.json").is_file():
            raise InputError(f"model folder {model} is not a diffusers pipeline (it has no model_index.json)")
        if revision:
            raise InputError(f"--revision applies to hub models, not to the local folder {model}")
        return ModelSource(model, None, folder)
    if model.startswith((".", "/", "~")) or model.count("/") > 1 or folder.exists():
        raise InputError(f"model folder {model} does not exist (a hub model is named like {DEFAULT_MODEL})")
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(model)
    except ValueError:
        raise InputError(
            f"--model {model!r} is neither a local folder nor a Hugging Face model id like {DEFAULT_MODEL}"
        ) from None
    return ModelSource(model, revision or "main")


def hub_error_message(exc: BaseException, source: ModelSource) -> str | None:
    """One actionable line for a hub failure anywhere in the exception chain, else None."""
    from huggingface_hub.errors import (
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    name = source.name
    while exc is not None:
        if isinstance(exc, GatedRepoError):
            return (
                f"model {name} is gated: accept its licence at https://huggingface.co/{name} "
                "and log in with `hf auth login` (or set HF_TOKEN)"
            )
        if isinstance(exc, RepositoryNotFoundError):
            return (
                f"model {name} was not found on the Hugging Face hub: check the id; "
                "if it is private, log in with `hf auth login`"
            )
        if isinstance(exc, RevisionNotFoundError):
            return f"revision {source.revision!r} of model {name} was not found on the Hugging Face hub"
        if isinstance(exc, LocalEntryNotFoundError):
            return offline_message(source)
        exc = exc.__cause__ or exc.__context__
    return None


def offline_message(source: ModelSource) -> str:
    return (
        f"model {source.name} is not in the local Hugging Face cache and the hub cannot be reached: "
        f"connect once (for a gated model accept its licence at https://huggingface.co/{source.name} "
        "and run `hf auth login`), or pass a local pipeline folder"
    )


def read_model_json(source: ModelSource, filename: str, download: bool = True) -> dict | None:
    """A small JSON file of the pipeline (local folder, hub cache, else hub); None if absent or unreachable."""
    if source.is_local:
        path = source.folder / filename
        return read_config(path) if path.is_file() else None
    from huggingface_hub import hf_hub_download, try_to_load_from_cache
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError

    cached = try_to_load_from_cache(source.name, filename, revision=source.revision)
    if isinstance(cached, str):
        path = cached
    elif cached is not None or not download:  # cached as absent, or the caller wants no network
        return None
    else:
        try:
            path = hf_hub_download(source.name, filename, revision=source.revision)
        except EntryNotFoundError:
            return None
        except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as exc:
            message = hub_error_message(exc, source)
            if message and not isinstance(exc, LocalEntryNotFoundError):
                raise InputError(message) from None
            return None
    return read_config(Path(path))


def read_config(path: Path) -> dict:
    config = read_json(path)
    if not isinstance(config, dict):
        raise InputError(f"{path}: not a model config (a JSON object)")
    return config


def required_multiple(source: ModelSource) -> int:
    """Width and height must be multiples of vae_scale_factor * patch size (SD3's 16 when not in a cache)."""
    vae = read_model_json(source, "vae/config.json", download=False)
    if vae is None or "block_out_channels" not in vae:
        return SD3_MULTIPLE
    transformer = read_model_json(source, "transformer/config.json", download=False) or {}
    return 2 ** (len(vae["block_out_channels"]) - 1) * int(transformer.get("patch_size", 1))


def check_size(width: int, height: int, multiple: int, source: ModelSource) -> None:
    if width % multiple or height % multiple:
        suggestion = f"{max(multiple, width // multiple * multiple)}x{max(multiple, height // multiple * multiple)}"
        raise InputError(
            f"--size {width}x{height}: width and height must be multiples of {multiple} "
            f"for {source.name} (for example {suggestion})"
        )


def scheduler_spec(source: ModelSource) -> dict | None:
    """The scheduler class and config the model ships with; part of the cache key."""
    config = read_model_json(source, "scheduler/scheduler_config.json")
    if config is None:
        if source.is_local:
            return None
        raise InputError(offline_message(source))
    return {
        "class": config.get("_class_name"),
        "config": {k: v for k, v in sorted(config.items()) if not k.startswith("_")},
    }


def local_model_digest(folder: Path, memo_file: Path, remember: bool = True) -> str:
    """sha256 over every file of a local pipeline; memoised by (path, size, mtime) since weights are large.

    ``remember=False`` reads the memo but never writes it (``--dry-run`` changes nothing).
    """
    files = sorted(
        p for p in folder.rglob("*") if p.is_file() and not any(s.startswith(".") for s in p.relative_to(folder).parts)
    )
    stamp = [(p.relative_to(folder).as_posix(), p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    memo_key = hashlib.sha256(canonical_json([str(folder.resolve()), stamp]).encode()).hexdigest()
    try:
        memo = json.loads(memo_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        memo = {}
    if memo_key in memo:
        return memo[memo_key]
    digest = hashlib.sha256()
    for path, (relative, _, _) in zip(files, stamp):
        digest.update(f"{relative}\0{sha256_file(path)}\n".encode())
    result = digest.hexdigest()
    if not remember:
        return result
    try:  # a read-only cache just means hashing again next time
        with atomic_write(memo_file) as handle:
            json.dump({**memo, memo_key: result}, handle)
    except (OSError, InputError):
        pass
    return result


@dataclass(frozen=True)
class Settings:
    """Everything resolved before any model loads."""

    source: ModelSource
    steps: int
    guidance: float
    width: int
    height: int
    batch_size: int
    device: str
    dtype: str
    quantization: str
    offload: bool
    scheduler: dict | None
    model_identity: dict

    def params(self) -> dict:
        """The generation parameters as listed in images.jsonl."""
        return {
            "model": self.source.name,
            "revision": self.source.revision,
            "steps": self.steps,
            "guidance": self.guidance,
            "width": self.width,
            "height": self.height,
            "scheduler": (self.scheduler or {}).get("class"),
            "dtype": self.dtype,
            "quantization": self.quantization,
        }

    def key_fields(self, record: PromptRecord) -> dict:
        """Everything that changes the pixels of this record's image."""
        return {
            "model": self.model_identity,
            "prompt": record.prompt,
            "negative_prompt": record.negative_prompt or "",
            "seed": record.seed,
            "width": self.width,
            "height": self.height,
            "steps": self.steps,
            "guidance": self.guidance,
            "scheduler": self.scheduler,
            "dtype": self.dtype,
            "quantization": self.quantization,
            "device": self.device.split(":")[0],
        }


def model_record_file(cache: ImageCache, model: str, revision: str | None) -> Path:
    """Where the image cache keeps what the cache keys need of a model, by its name and revision as given."""
    name = canonical_json([os.path.normpath(os.path.expanduser(model)), revision])
    return cache.root / f"model-{hashlib.sha256(name.encode()).hexdigest()[:32]}.json"  # beside, not among, the entries


def resolve_model(
    model: str, revision: str | None, width: int, height: int, cache: ImageCache, dry_run: bool
) -> tuple[ModelSource, dict | None, dict]:
    """The model's source, scheduler and identity (the cache key's part), with the size checked.

    Read from the model (its small config files, a local folder's file hashes) and recorded in the
    image cache; where the model cannot be had (no folder, no Hugging Face cache, no network) the
    record stands in, so a run whose images are all cached needs nothing of the model.
    """
    record_file = model_record_file(cache, model, revision)
    try:
        source = resolve_model_source(model, revision)
        multiple = required_multiple(source)
        check_size(width, height, multiple, source)
        scheduler = scheduler_spec(source)
    except InputError as exc:
        try:
            record = json.loads(record_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise exc from None
        source = ModelSource(record["name"], record["revision"], Path(record["folder"]) if record["folder"] else None)
        check_size(width, height, record["multiple"], source)
        log.info("%s cannot be read here; the image cache's record of it serves for the images cached", model)
        return source, record["scheduler"], record["identity"]
    if source.is_local:
        identity = {"local_sha256": local_model_digest(source.folder, cache.root / "model-digests.json", not dry_run)}
    else:
        identity = {"hub": source.name, "revision": source.revision}
    record = {
        "name": source.name,
        "revision": source.revision,
        "folder": str(source.folder) if source.folder else None,
        "multiple": multiple,
        "scheduler": scheduler,
        "identity": identity,
    }
    if not dry_run:
        try:  # a read-only cache can still serve a run that has the model
            if not record_file.is_file() or json.loads(record_file.read_text(encoding="utf-8")) != record:
                with atomic_write(record_file) as handle:
                    json.dump(record, handle, indent=1)
        except (OSError, ValueError, InputError):
            pass
    return source, scheduler, identity


def resolve_settings(
    *,
    model: str,
    revision: str | None,
    steps: int,
    guidance: float,
    size: str,
    batch_size: int,
    device: str,
    dtype: str,
    quantize: str,
    offload: bool,
    cache: ImageCache,
    dry_run: bool = False,
) -> Settings:
    """Check every option and read the model's small config files (or the cache's record of them); never loads
    weights."""
    width, height = parse_size(size)
    source, scheduler, identity = resolve_model(model, revision, width, height, cache, dry_run)
    device = str(resolve_device(device))  # Settings and run.json keep the name
    return Settings(
        source,
        steps,
        float(guidance),
        width,
        height,
        batch_size,
        device,
        resolve_dtype(dtype, device),
        resolve_quantization(quantize, device),
        offload,
        scheduler,
        identity,
    )


# ---- loading ---------------------------------------------------------------------------------


def dtype_argument() -> str:
    """diffusers renamed from_pretrained's ``torch_dtype`` to ``dtype``; older releases know only the first."""
    try:
        from diffusers.utils.deprecation_utils import _resolve_dtype  # noqa: F401
    except ImportError:
        return "torch_dtype"
    return "dtype"


def load_pipeline(settings: Settings):
    """The real loader: any diffusers text-to-image pipeline, optionally bitsandbytes-quantized."""
    import torch
    from diffusers import DiffusionPipeline, PipelineQuantizationConfig

    quiet_loaded_libraries()
    source = settings.source
    if source.is_local and not source.folder.is_dir():
        raise InputError(
            f"model folder {source.folder} does not exist; without it only images already cached can be had"
        )
    torch_dtype = getattr(torch, settings.dtype)
    index = read_model_json(source, "model_index.json") or {}
    # Components saved as [null, null] (SD3 without T5) must be passed as None again, or loading fails.
    kwargs = {name: None for name, value in index.items() if isinstance(value, list) and value[:1] == [None]}
    if settings.quantization != "none":
        denoiser = "transformer" if "transformer" in index else "unet"
        if settings.quantization == "4bit":
            quant = {"load_in_4bit": True, "bnb_4bit_quant_type": "nf4", "bnb_4bit_compute_dtype": torch_dtype}
        else:
            quant = {"load_in_8bit": True}
        kwargs["quantization_config"] = PipelineQuantizationConfig(
            quant_backend=f"bitsandbytes_{settings.quantization}", quant_kwargs=quant, components_to_quantize=[denoiser]
        )
    if not source.is_local:
        kwargs["revision"] = source.revision
    log.info(
        "loading %s (%s, %s, quantization %s)", source.name, settings.device, settings.dtype, settings.quantization
    )
    try:
        pipe = DiffusionPipeline.from_pretrained(
            str(source.folder or source.name), **{dtype_argument(): torch_dtype}, **kwargs
        )
    except Exception as exc:
        message = hub_error_message(exc, source)
        raise InputError(message or f"cannot load model {source.name}: {error_line(exc)}") from None
    if settings.offload:
        pipe.enable_model_cpu_offload(device=settings.device)
    else:
        pipe.to(settings.device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


# ---- generating ------------------------------------------------------------------------------


@dataclass
class Planned:
    record: PromptRecord
    key: str
    fields: dict
    entry: CacheEntry | None


def plan(records: list[PromptRecord], settings: Settings, cache: ImageCache) -> list[Planned]:
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


def call_pipeline(pipe, batch: list[Planned], settings: Settings):
    """One pipeline call for a batch; numpy output so NaNs stay visible (PIL output hides them as black)."""
    import torch

    return pipe(
        prompt=[p.record.prompt for p in batch],
        negative_prompt=[p.record.negative_prompt or "" for p in batch],
        num_inference_steps=settings.steps,
        guidance_scale=settings.guidance,
        width=settings.width,
        height=settings.height,
        # One CPU generator per record: the noise depends on the record's seed only, on any device.
        generator=[torch.Generator("cpu").manual_seed(p.record.seed) for p in batch],
        output_type="np",
    ).images


def generate_batch(pipe, batch: list[Planned], settings: Settings) -> Iterator[tuple[Planned, object]]:
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
            yield planned, f"the image has NaN or infinite values (dtype {settings.dtype}; try --dtype float32)"
        else:
            yield planned, image


@dataclass
class RunResult:
    rows: list[dict]
    generated: int = 0
    cached: int = 0
    failed: int = 0

    def summary(self) -> dict:
        return {"records": len(self.rows), "generated": self.generated, "cached": self.cached, "failed": self.failed}


def save_image(planned: Planned, image, settings: Settings, cache: ImageCache, out_dir: Path) -> None:
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


def long_prompt_note(pipe, records: list[PromptRecord]) -> str | None:
    """One line for the prompts longer than the CLIP tokenizer's limit (diffusers warns per batch and encoder)."""
    tokenizer = getattr(pipe, "tokenizer", None)
    if tokenizer is None or not callable(tokenizer):
        return None
    limit = tokenizer.model_max_length
    texts = {r.prompt for r in records} | {r.negative_prompt for r in records if r.negative_prompt}
    long = sum(len(tokenizer(text, verbose=False).input_ids) > limit for text in texts)
    if not long:
        return None
    rest = "T5 gets the whole prompt" if getattr(pipe, "text_encoder_3", None) is not None else "the rest is cut off"
    prompts = "1 prompt exceeds" if long == 1 else f"{long} prompts exceed"
    return f"{prompts} the CLIP text encoders' {limit} tokens; {rest}"


def generate_missing(
    missing: list[Planned],
    settings: Settings,
    cache: ImageCache,
    out_dir: Path,
    build_pipeline: Callable[[Settings], object],
    silent: bool,
) -> dict[str, str]:
    """Generate, cache and link every missing image; return errors by cache key."""
    errors: dict[str, str] = {}
    unique = list({p.key: p for p in missing}.values())  # records sharing a key are made once
    pipe = build_pipeline(settings)
    note = long_prompt_note(pipe, [p.record for p in unique])
    if note:
        log.warning("%s", note)
    bar = progress(None, total=len(unique), desc="generating", unit="img", silent=silent)
    # PNG encoding and the cache's fsyncs run in a writer thread while the next batch is denoised;
    # at most two batches wait there, and leaving the block (even on Ctrl-C) finishes them.
    in_flight: deque = deque()
    try:
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="png-writer") as writer:
            for start in range(0, len(unique), settings.batch_size):
                for planned, outcome in generate_batch(pipe, unique[start : start + settings.batch_size], settings):
                    if isinstance(outcome, str):
                        errors[planned.key] = outcome
                    else:
                        in_flight.append(writer.submit(save_image, planned, outcome, settings, cache, out_dir))
                while len(in_flight) > 2 * settings.batch_size:
                    in_flight.popleft().result()
                bar.update(min(settings.batch_size, len(unique) - start))
                bar.set_postfix(failed=len(errors))
            while in_flight:
                in_flight.popleft().result()
    finally:
        bar.close()
    for planned in missing:  # duplicates of a generated key share its entry
        planned.entry = planned.entry or cache.lookup(planned.key)
    return errors


def run_generation(
    records: list[PromptRecord],
    settings: Settings,
    cache: ImageCache,
    out_dir: Path,
    *,
    build_pipeline: Callable[[Settings], object] = load_pipeline,
    silent: bool = False,
) -> RunResult:
    """Make sure every record has its image in ``out_dir``; return one row per record, in order."""
    planned = plan(records, settings, cache)
    missing = [p for p in planned if p.entry is None]
    errors: dict[str, str] = {}
    if missing:
        cache.check_writable()
        errors = generate_missing(missing, settings, cache, out_dir, build_pipeline, silent)
    result = RunResult([])
    params = settings.params()
    missing_keys = {p.key for p in missing}
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
            if p.key in missing_keys:
                result.generated += 1
            else:
                result.cached += 1
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
