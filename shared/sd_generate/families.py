"""Generator families: what sd-generate knows of each kind of diffusers pipeline, by model_index.json's class.

A family's row gives the defaults a run takes where the user sets no --steps, --guidance or --size, the size
rule, which component --quantize and --compile act on, and the call arguments that change its pixels. A hub id
in KNOWN_MODELS refines its family's defaults (a distilled model takes fewer steps and no guidance).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from synthprobe.common.files import InputError


@dataclass(frozen=True)
class Family:
    name: str
    pipelines: tuple[str, ...]  # model_index.json's _class_name
    steps: int | None
    guidance: float | None
    size: int | None
    # Width and height must be multiples of lcm(pipeline_multiple, vae scale factor x latent pixels a token
    # covers); packing is those latent pixels where the pipeline packs latents itself, else the denoiser's patch_size.
    pipeline_multiple: int
    packing: int | None
    multiple: int  # the real models' multiple, where the model's configs cannot be read
    # Whether the pipeline uses a negative prompt (with guidance > 1); FLUX's takes one but uses it only with
    # true_cfg_scale > 1, which sd-generate does not set.
    negative_prompt: bool
    # (pipeline attribute, encoder, token limit) per text encoder, shortest first; None: the tokenizer's own limit
    encoders: tuple[tuple[str, str, int | None], ...]
    denoiser: str | None  # what --quantize quantizes and --compile compiles
    call: dict = field(default_factory=dict)  # pipeline call arguments beyond sd-generate's own


CLIP = ("tokenizer", "CLIP", None)
FAMILIES = {
    family.name: family
    for family in (
        Family("sd3", ("StableDiffusion3Pipeline",), 28, 3.5, 1024, 1, None, 16, True,
               (CLIP, ("tokenizer_3", "T5", 256)), "transformer", call={"max_sequence_length": 256}),
        Family("sdxl", ("StableDiffusionXLPipeline",), 50, 5.0, 1024, 8, 1, 8, True, (CLIP,), "unet"),
        Family("flux", ("FluxPipeline",), 28, 3.5, 1024, 1, 2, 16, False,
               (CLIP, ("tokenizer_2", "T5", 512)), "transformer", call={"max_sequence_length": 512}),
        # Resolution binning renders at a bin of the model's sizes and resizes; sd-generate renders --size itself.
        Family("pixart-sigma", ("PixArtSigmaPipeline",), 20, 4.5, 1024, 8, None, 16, True,
               (("tokenizer", "T5", 300),), "transformer",
               call={"max_sequence_length": 300, "use_resolution_binning": False}),
        Family("sana", ("SanaPipeline",), 20, 4.5, 1024, 32, None, 32, True,
               (("tokenizer", "Gemma", 300),), "transformer",
               call={"max_sequence_length": 300, "use_resolution_binning": False}),
    )
}  # fmt: skip

# Hub ids: their family, so that a size is checked before anything is downloaded, and the defaults that differ
# from their family's (the model cards' settings).
KNOWN_MODELS = {
    "stabilityai/stable-diffusion-3.5-large": {"family": "sd3"},
    "stabilityai/stable-diffusion-3.5-medium": {"family": "sd3", "steps": 40, "guidance": 4.5},
    "stabilityai/stable-diffusion-3.5-large-turbo": {"family": "sd3", "steps": 4, "guidance": 0.0},
    "stabilityai/stable-diffusion-xl-base-1.0": {"family": "sdxl"},
    "black-forest-labs/FLUX.1-schnell": {
        "family": "flux",
        "steps": 4,
        "guidance": 0.0,
        "call": {"max_sequence_length": 256},
    },
    "black-forest-labs/FLUX.1-dev": {"family": "flux", "steps": 50},
    "PixArt-alpha/PixArt-Sigma-XL-2-1024-MS": {"family": "pixart-sigma"},
    "Efficient-Large-Model/Sana_1600M_1024px_diffusers": {"family": "sana"},
}


def other_family(pipeline: str, index: dict) -> Family:
    """A pipeline sd-generate has no row for: no defaults, the denoiser by its component name."""
    denoiser = next((name for name in ("transformer", "unet") if name in index), None)
    return Family("other", (pipeline,), None, None, None, 8, None, 8, True, (CLIP,), denoiser)


def family_of(index: dict | None, model: str) -> Family | None:
    """The family of a pipeline from its model_index.json (None: not read; a hub id in KNOWN_MODELS still has
    one), refined by KNOWN_MODELS."""
    known = dict(KNOWN_MODELS.get(model, {}))
    if index is None:
        if not known:
            return None
        family = FAMILIES[known["family"]]
    else:
        pipeline = str(index.get("_class_name"))
        family = next((f for f in FAMILIES.values() if pipeline in f.pipelines), None)
        family = family or other_family(pipeline, index)
    if known and known.pop("family") == family.name:
        family = replace(family, **{**known, "call": {**family.call, **known.get("call", {})}})
    return family


def size_multiple(family: Family, vae: dict | None, denoiser: dict | None) -> int:
    """What width and height must be multiples of, from the VAE's and the denoiser's configs where they are read."""
    blocks = (vae or {}).get("block_out_channels") or (vae or {}).get("encoder_block_out_channels")
    if not blocks:
        return family.multiple
    packing = family.packing or int((denoiser or {}).get("patch_size") or 1)
    return math.lcm(family.pipeline_multiple, 2 ** (len(blocks) - 1) * packing)


def defaults(family: Family, steps: int | None, guidance: float | None, size: tuple[int, int] | None, model: str):
    """(steps, guidance, (width, height)): the user's values, else the family's; one line where neither is set."""
    unset = [
        option
        for option, given, default in (
            ("--steps", steps, family.steps),
            ("--guidance", guidance, family.guidance),
            ("--size", size, family.size),
        )
        if given is None and default is None
    ]
    if unset:
        raise InputError(
            f"model {model} is a {family.pipelines[0]}, which sd-generate has no defaults for: "
            f"give {', '.join(unset)} (known families: {', '.join(FAMILIES)})"
        )
    return (
        family.steps if steps is None else steps,
        float(family.guidance if guidance is None else guidance),
        (family.size, family.size) if size is None else size,
    )


def check_memory_options(family: Family, quantization: str, offload: bool, compile_: bool, device: str) -> None:
    """--quantize and --compile where the family has a denoiser, --offload (model CPU offload: every diffusers
    pipeline has it) where there is a CUDA GPU; else one line."""
    if family.denoiser is None and (quantization != "none" or compile_):
        option = "--compile" if compile_ else f"--quantize {quantization}"
        raise InputError(f"{option}: a {family.pipelines[0]} has no transformer or unet to act on")
    if offload and not device.startswith("cuda"):
        raise InputError(f"--offload moves components between the CPU and a CUDA GPU; the device here is {device}")


def long_prompt_note(pipe, family: Family, texts: set[str]) -> str | None:
    """One line for the prompts longer than the first text encoder's limit (diffusers warns per batch and
    encoder), saying what the longer encoder, if any, makes of them."""
    limits = []
    for attribute, encoder, limit in family.encoders:
        if encoder != "CLIP":  # the long encoder takes what max_sequence_length allows (FLUX schnell: 256)
            limit = family.call.get("max_sequence_length", limit)
        tokenizer = getattr(pipe, attribute, None)
        if tokenizer is not None and callable(tokenizer):
            limits.append((tokenizer, encoder, limit or tokenizer.model_max_length))
    if not limits:
        return None
    counts = [sum(len(tok(text, verbose=False).input_ids) > limit for text in texts) for tok, _, limit in limits]
    if not counts[0]:
        return None
    prompts = "1 prompt exceeds" if counts[0] == 1 else f"{counts[0]} prompts exceed"
    _, encoder, limit = limits[0]
    encoders = "text encoders'" if encoder == "CLIP" and family.name != "flux" else "text encoder's"
    if len(limits) == 1:
        rest = "the rest is cut off"
    elif counts[1]:
        rest = f"{limits[1][1]} cuts {counts[1]} of them at {limits[1][2]} tokens too"
    else:
        rest = f"{limits[1][1]} gets the whole prompt"
    return f"{prompts} the {encoder} {encoders} {limit} tokens; {rest}"
