"""Loading a diffusers pipeline, optionally bitsandbytes-quantized, and what its call does with a negative prompt."""

from __future__ import annotations

import inspect
import json
import logging
from dataclasses import replace
from importlib.metadata import version

from synthprobe.common.files import InputError, atomic_write, error_line
from synthprobe.common.quiet import quiet_loaded_libraries
from synthprobe.formats.image_cache import ImageCache, canonical_json
from synthprobe.formats.prompts import PromptRecord
from synthprobe.sd_generate.model import hub_error_message, read_model_json
from synthprobe.sd_generate.settings import ResolvedParams

log = logging.getLogger("synthprobe")
CALL_MEMO = "pipeline-calls.json"  # in the image cache: [model identity, diffusers version] -> class, CALL_KEYWORDS
CALL_KEYWORDS = ("negative_prompt", "true_cfg_scale")


def dtype_argument() -> str:
    """diffusers renamed from_pretrained's ``torch_dtype`` to ``dtype``; older releases know only the first."""
    try:
        from diffusers.utils.deprecation_utils import _resolve_dtype  # noqa: F401
    except ImportError:
        return "torch_dtype"
    return "dtype"


def class_keywords(settings: ResolvedParams, cache: ImageCache) -> tuple[str, set[str]] | None:
    """The pipeline class model_index.json names and which of CALL_KEYWORDS its ``__call__`` takes; None where
    neither the model nor the image cache can say, or this diffusers lacks the class.

    Remembered in the image cache per model identity and diffusers version: a run whose images are all cached then
    needs neither the model nor an import of diffusers (seconds) to know whether a negative prompt counts.
    """
    memo_file = cache.root / CALL_MEMO
    memo_key = canonical_json([settings.model_identity, version("diffusers")])
    try:
        memo = json.loads(memo_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        memo = {}
    memo = memo if isinstance(memo, dict) else {}
    known = memo.get(memo_key)
    if isinstance(known, dict) and isinstance(known.get("class"), str) and isinstance(known.get("takes"), list):
        return known["class"], set(known["takes"])
    try:
        name = (read_model_json(settings.source, "model_index.json") or {}).get("_class_name")
    except InputError:
        return None
    import diffusers

    cls = getattr(diffusers, name, None) if isinstance(name, str) else None
    if cls is None:
        return None
    keywords = [k for k in CALL_KEYWORDS if k in inspect.signature(cls.__call__).parameters]
    if cache.writable:
        try:  # a read-only cache means reading the class again next time
            with atomic_write(memo_file) as handle:
                json.dump({**memo, memo_key: {"class": name, "takes": keywords}}, handle)
        except (OSError, InputError):
            pass
    return name, set(keywords)


def takes_negative_prompt(pipe) -> bool:
    """Whether a pipeline accepts ``negative_prompt``; a wrapper taking ``**kwargs`` passes it on."""
    parameters = inspect.signature(pipe).parameters.values()
    return any(p.name == "negative_prompt" or p.kind is p.VAR_KEYWORD for p in parameters)


def negative_prompt_unused(found: tuple[str, set[str]] | None, guidance: float) -> str | None:
    """Why a pipeline (``class_keywords``' answer) would make the same image with or without a negative prompt, or
    None where the negative prompt counts. A class not known is taken to use one, as the default SD3 does."""
    name, keywords = found or ("the pipeline", {"negative_prompt"})
    if "negative_prompt" not in keywords:
        return f"{name} takes no negative_prompt"
    if "true_cfg_scale" in keywords:  # FLUX: the negative prompt acts only with true classifier-free guidance
        return f"{name} uses a negative prompt only with true_cfg_scale > 1, which sd-generate does not set"
    if guidance <= 1:
        return f"guidance {guidance:g} does no classifier-free guidance, which a negative prompt needs"
    return None


def drop_unused_negative_prompts(
    records: list[PromptRecord], settings: ResolvedParams, cache: ImageCache
) -> list[PromptRecord]:
    """The records as the pipeline will see them: where it would ignore a negative prompt, without one (one log
    line), so that the cache key, images.jsonl and the PNG never claim a negative prompt that made no difference."""
    with_negative = sum(bool(r.negative_prompt) for r in records)
    unused = with_negative and negative_prompt_unused(class_keywords(settings, cache), settings.guidance)
    if not unused:
        return records
    log.info("%d negative prompt(s) left out: %s", with_negative, unused)
    return [replace(r, negative_prompt=None) for r in records]


def negative_prompt_argument(pipe, negatives: list[str | None]) -> dict:
    """The ``negative_prompt`` keyword for one pipeline call (none for a pipeline that takes none)."""
    if takes_negative_prompt(pipe):
        return {"negative_prompt": [text or "" for text in negatives]}
    if any(negatives):  # planned from model_index.json's class; passing none would contradict the cache key
        raise RuntimeError(f"{type(pipe).__name__} takes no negative_prompt, unlike its model_index.json's class")
    return {}


def load_pipeline(settings: ResolvedParams):
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
