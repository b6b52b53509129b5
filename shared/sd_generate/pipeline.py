"""Loading a diffusers pipeline, optionally bitsandbytes-quantized, and what its call does with a negative prompt."""

from __future__ import annotations

import inspect
import logging
from dataclasses import replace

from synthprobe.common.files import InputError, error_line
from synthprobe.common.quiet import quiet_loaded_libraries
from synthprobe.formats.prompts import PromptRecord
from synthprobe.sd_generate.families import Family
from synthprobe.sd_generate.model import hub_error_message, read_model_json
from synthprobe.sd_generate.settings import ResolvedParams

log = logging.getLogger("synthprobe")


def dtype_argument() -> str:
    """diffusers renamed from_pretrained's ``torch_dtype`` to ``dtype``; older releases know only the first."""
    try:
        from diffusers.utils.deprecation_utils import _resolve_dtype  # noqa: F401
    except ImportError:
        return "torch_dtype"
    return "dtype"


def takes_negative_prompt(pipe) -> bool:
    """Whether a pipeline accepts ``negative_prompt``; a wrapper taking ``**kwargs`` passes it on."""
    parameters = inspect.signature(pipe).parameters.values()
    return any(p.name == "negative_prompt" or p.kind is p.VAR_KEYWORD for p in parameters)


def negative_prompt_unused(family: Family, guidance: float) -> str | None:
    """Why a pipeline of ``family`` would make the same image with or without a negative prompt at ``guidance``, or
    None where the negative prompt counts. A pipeline sd-generate has no row for is taken to use one, as SD3 does; if
    it then takes none, its records fail (``negative_prompt_argument``) rather than be cached under a false key."""
    if not family.negative_prompt:
        return f"a {family.pipelines[0]} uses no negative prompt at sd-generate's settings"
    if guidance <= 1:
        return f"guidance {guidance:g} does no classifier-free guidance, which a negative prompt needs"
    return None


def drop_unused_negative_prompts(records: list[PromptRecord], settings: ResolvedParams) -> list[PromptRecord]:
    """The records as the pipeline will see them: where it would ignore a negative prompt, without one (one log
    line), so that the cache key, images.jsonl and the PNG never claim a negative prompt that made no difference."""
    with_negative = sum(bool(r.negative_prompt) for r in records)
    unused = with_negative and negative_prompt_unused(settings.family, settings.guidance)
    if not unused:
        return records
    log.info("%d negative prompt(s) left out: %s", with_negative, unused)
    return [replace(r, negative_prompt=None) for r in records]


def negative_prompt_argument(pipe, negatives: list[str | None]) -> dict:
    """The ``negative_prompt`` keyword for one pipeline call: none where no record of the batch has one (the
    pipeline's own "no negative prompt": SDXL then uses zero embeddings, not those of ""), and none for a pipeline
    that takes none. Batches hold records with and without one apart (``record_batches``)."""
    if not any(negatives):
        return {}
    name = type(pipe).__name__
    if not takes_negative_prompt(pipe):  # planned from the family's row; passing none would contradict the cache key
        raise RuntimeError(f"{name} takes no negative_prompt, unlike its model_index.json's class")
    if "true_cfg_scale" in inspect.signature(pipe).parameters:  # a pipeline of a class the family table lacks
        raise RuntimeError(
            f"{name} uses a negative prompt only with true_cfg_scale > 1, which sd-generate does not set"
        )
    return {"negative_prompt": [text or "" for text in negatives]}


def record_batches(records: list, size: int) -> list[list]:
    """``records`` (Planned) in batches of ``size``, those with a negative prompt apart from those without, each in
    its order: a record's image must not depend on whether its batch mates have one."""
    groups = ([p for p in records if not p.record.negative_prompt], [p for p in records if p.record.negative_prompt])
    return [group[start : start + size] for group in groups for start in range(0, len(group), size)]


def quantization_config(settings: ResolvedParams):
    """diffusers' PipelineQuantizationConfig for ``settings.quantized`` (None where nothing is quantized): one
    bitsandbytes backend for the diffusers denoiser and the transformers text encoders alike. Building it loads
    nothing; loading with it needs CUDA."""
    if not settings.quantized:
        return None
    import torch
    from diffusers import PipelineQuantizationConfig

    if settings.quantization == "4bit":
        compute = getattr(torch, settings.dtype)
        quant = {"load_in_4bit": True, "bnb_4bit_quant_type": "nf4", "bnb_4bit_compute_dtype": compute}
    else:
        quant = {"load_in_8bit": True}
    return PipelineQuantizationConfig(
        quant_backend=f"bitsandbytes_{settings.quantization}",
        quant_kwargs=quant,
        components_to_quantize=list(settings.quantized),
    )


def load_pipeline(settings: ResolvedParams):
    """The real loader: any diffusers text-to-image pipeline, its denoiser and T5 text encoders optionally
    bitsandbytes-quantized, its denoiser optionally compiled with torch.compile."""
    import torch
    from diffusers import DiffusionPipeline

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
    quantization = quantization_config(settings)
    if quantization is not None:
        kwargs["quantization_config"] = quantization
    if not source.is_local:
        kwargs["revision"] = source.revision
    quantized = f" of {', '.join(settings.quantized)}" if settings.quantized else ""
    log.info(
        "loading %s (%s, %s, quantization %s%s)",
        source.name,
        settings.device,
        settings.dtype,
        settings.quantization,
        quantized,
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
    if settings.compile:  # in place: the pipeline's checks of its denoiser's class and config still hold
        getattr(pipe, settings.family.denoiser).compile()
    pipe.set_progress_bar_config(disable=True)
    return pipe
