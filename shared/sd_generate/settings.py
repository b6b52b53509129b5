"""The options of a generation run, checked and resolved before any model loads."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

from synthprobe.common.devices import resolve_device
from synthprobe.common.files import InputError
from synthprobe.formats.image_cache import ImageCache
from synthprobe.formats.prompts import PromptRecord
from synthprobe.sd_generate.families import Family, check_memory_options, defaults, quantized_components
from synthprobe.sd_generate.model import DEFAULT_MODEL, ModelSource, resolve_model

log = logging.getLogger("synthprobe")

# --precision's names to the torch dtype names that run.json, images.jsonl and the cache key record
PRECISION_DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


@dataclass(frozen=True)
class Params:
    """A run's options as given; sd-generate's defaults are these field defaults, and where one is None the model
    family's (sd_generate.families). resolve_settings checks them."""

    model: str = DEFAULT_MODEL
    revision: str | None = None
    steps: int | None = None
    guidance: float | None = None
    size: tuple[int, int] | None = None  # (width, height)
    batch_size: int = 1
    device: str = "auto"
    precision: str = "auto"  # auto, or a key of PRECISION_DTYPES
    quantize: str = "auto"
    offload: bool = False
    compile: bool = False  # torch.compile the denoiser


def shard_of(record_id: str, count: int) -> int:
    """The shard of a record: a hash of its id, so adding records never moves existing ones."""
    return int.from_bytes(hashlib.sha256(record_id.encode("utf-8")).digest()[:8], "big") % count


def select_records(records: list[PromptRecord], shard: tuple[int, int] | None, limit: int | None) -> list[PromptRecord]:
    if shard is not None:
        records = [r for r in records if shard_of(r.id, shard[1]) == shard[0]]
    return records[:limit] if limit is not None else records


def device_name(requested: str) -> str:
    return str(resolve_device(requested))


def resolve_dtype(precision: str, device: str) -> str:
    """The torch dtype name of ``--precision``; auto is bfloat16 on CUDA, float32 elsewhere."""
    if precision == "auto":
        return "bfloat16" if device.startswith("cuda") else "float32"
    return PRECISION_DTYPES[precision]


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


@dataclass(frozen=True)
class ResolvedParams:
    """Everything resolved before any model loads."""

    source: ModelSource
    pipeline: str  # model_index.json's _class_name
    family: Family
    steps: int
    guidance: float
    width: int
    height: int
    batch_size: int
    device: str
    dtype: str
    quantization: str
    quantized: tuple[str, ...]  # the components --quantize acts on: () where quantization is none
    offload: bool
    compile: bool
    scheduler: dict | None
    model_identity: dict

    def params(self) -> dict:
        """The generation parameters as listed in images.jsonl."""
        return {
            "model": self.source.name,
            "revision": self.source.revision,
            "pipeline": self.pipeline,
            "family": self.family.name,
            "steps": self.steps,
            "guidance": self.guidance,
            "width": self.width,
            "height": self.height,
            "scheduler": (self.scheduler or {}).get("class"),
            "dtype": self.dtype,
            "quantization": self.quantization,
        }

    @property
    def quantized_encoders(self) -> tuple[str, ...]:
        return tuple(name for name in self.quantized if name != self.family.denoiser)

    def key_fields(self, record: PromptRecord) -> dict:
        """Everything that changes the pixels of this record's image."""
        return {
            "model": self.model_identity,
            "family": self.family.name,
            "call": self.family.call,
            "prompt": record.prompt,
            "negative_prompt": record.negative_prompt or "",  # dropped before, where the pipeline ignores it
            "seed": record.seed,
            "width": self.width,
            "height": self.height,
            "steps": self.steps,
            "guidance": self.guidance,
            "scheduler": self.scheduler,
            "dtype": self.dtype,
            "quantization": self.quantization,
            # The text encoders quantized with the denoiser change the pixels too; absent where none is, so the keys
            # of a denoiser quantized alone stay those it had before the encoders were.
            **({"quantized_encoders": list(self.quantized_encoders)} if self.quantized_encoders else {}),
            "device": self.device.split(":")[0],
        }


def resolve_settings(options: Params, cache: ImageCache, dry_run: bool = False, engine=None) -> ResolvedParams:
    """Check every option and read the model's small config files (or the cache's record of them); never loads
    weights. With a Dask ``engine`` the device is the one its workers have."""
    # The resolved parameters and run.json keep the name; a cluster that cannot be reached stops the run before
    # the cache is touched.
    device = (
        engine.as_a_worker_sees_it(device_name, options.device) if engine is not None else device_name(options.device)
    )
    model = resolve_model(options.model, options.revision, options.size, cache, dry_run)
    steps, guidance, _ = defaults(model.family, options.steps, options.guidance, options.size, options.model)
    # auto quantizes the denoiser where there is one; an explicit --quantize without one is refused below
    auto_none = options.quantize == "auto" and model.family.denoiser is None
    quantization = "none" if auto_none else resolve_quantization(options.quantize, device)
    check_memory_options(model.family, quantization, options.offload, options.compile, device)
    quantized = quantized_components(model.family, model.index) if quantization != "none" else ()
    return ResolvedParams(
        model.source,
        model.pipeline,
        model.family,
        steps,
        guidance,
        *model.size,
        options.batch_size,
        device,
        resolve_dtype(options.precision, device),
        quantization,
        quantized,
        options.offload,
        options.compile,
        model.scheduler,
        model.identity,
    )
