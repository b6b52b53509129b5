"""The options of a generation run, checked and resolved before any model loads."""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass

from ..devices import resolve_device
from ..files import InputError
from ..formats.image_cache import ImageCache
from ..formats.prompts import PromptRecord
from .model import ModelSource, resolve_model

log = logging.getLogger("synthprobe")

DTYPES = ("float32", "bfloat16", "float16")


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


def device_name(requested: str) -> str:
    return str(resolve_device(requested))


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
    engine=None,
) -> Settings:
    """Check every option and read the model's small config files (or the cache's record of them); never loads
    weights. With a Dask ``engine`` the device is the one its workers have."""
    width, height = parse_size(size)
    # Settings and run.json keep the name; a cluster that cannot be reached stops the run before the cache is touched.
    device = engine.as_a_worker_sees_it(device_name, device) if engine is not None else device_name(device)
    source, scheduler, identity = resolve_model(model, revision, width, height, cache, dry_run)
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
