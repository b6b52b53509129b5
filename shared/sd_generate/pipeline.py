"""Loading a diffusers pipeline, optionally bitsandbytes-quantized."""

from __future__ import annotations

import logging

from synthprobe.common.files import InputError, error_line
from synthprobe.common.quiet import quiet_loaded_libraries
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


def load_pipeline(settings: ResolvedParams):
    """The real loader: any diffusers text-to-image pipeline, its denoiser optionally bitsandbytes-quantized or
    compiled with torch.compile."""
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
    denoiser = settings.family.denoiser
    if settings.quantization != "none":
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
    if settings.compile:  # in place: the pipeline's checks of its denoiser's class and config still hold
        getattr(pipe, denoiser).compile()
    pipe.set_progress_bar_config(disable=True)
    return pipe
