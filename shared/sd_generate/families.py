"""Generator families: what sd-generate knows of each kind of diffusers pipeline, by model_index.json's class.

A family's row gives the defaults a run takes where the user sets no --steps, --guidance or --size, the size
rule, which components --quantize and --compile act on, and the call arguments that change its pixels. A model
in KNOWN_MODELS refines its family's defaults (a distilled model takes fewer steps and no guidance): the one its
denoiser's config names (VARIANTS: a local copy under any name), else the one its hub id names.
"""

from __future__ import annotations

import json
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
    # The KNOWN_MODELS id whose defaults it took and what told it (its denoiser's config, or the model's name)
    variant: dict | None = None


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


# What a model's denoiser config says of its variant, by family: (config entry, test of its value, the KNOWN_MODELS id
# whose defaults apply), the first that holds. By config, so a local copy or a mirror under any name gets its model's
# defaults; the config wins over the name.
VARIANTS = {
    # FLUX.1-dev is guidance-distilled: its transformer embeds the guidance scale, schnell's has no such embedder
    # (diffusers' single-file loader tells them apart by the same weights).
    "flux": (
        ("guidance_embeds", lambda value: value is False, "black-forest-labs/FLUX.1-schnell"),
        ("guidance_embeds", lambda value: value is True, "black-forest-labs/FLUX.1-dev"),
    ),
    # SD3.5 Medium is the SD3 with dual attention layers (MMDiT-X). Large Turbo's configs equal Large's (it differs
    # in its weights only), so Turbo is known by its hub id alone.
    "sd3": (("dual_attention_layers", bool, "stabilityai/stable-diffusion-3.5-medium"),),
}


def other_family(pipeline: str, index: dict) -> Family:
    """A pipeline sd-generate has no row for: no defaults, the denoiser by its component name."""
    denoiser = next((name for name in ("transformer", "unet") if name in index), None)
    return Family("other", (pipeline,), None, None, None, 8, None, 8, True, (CLIP,), denoiser)


def family_of(index: dict | None, model: str) -> Family | None:
    """The family of a pipeline from its model_index.json (None: not read; a hub id in KNOWN_MODELS still has
    one), before with_variant."""
    if index is None:
        return FAMILIES[KNOWN_MODELS[model]["family"]] if model in KNOWN_MODELS else None
    pipeline = str(index.get("_class_name"))
    family = next((f for f in FAMILIES.values() if pipeline in f.pipelines), None)
    return family or other_family(pipeline, index)


def config_variant(family: Family, denoiser_config: dict | None) -> tuple[str, str] | None:
    """The KNOWN_MODELS id a model of ``family`` is a copy of by its denoiser's config, and the entry that says so."""
    for entry, holds, known in VARIANTS.get(family.name, ()):
        if denoiser_config and entry in denoiser_config and holds(denoiser_config[entry]):
            return known, f"{family.denoiser}/config.json {entry}={json.dumps(denoiser_config[entry])}"
    return None


def with_variant(family: Family, model: str, denoiser_config: dict | None) -> Family:
    """``family`` with the defaults of the known model its denoiser's config names (VARIANTS), else of the hub id
    ``model`` where KNOWN_MODELS has it in this family; as it is where neither says."""
    variant = config_variant(family, denoiser_config)
    if variant is None and KNOWN_MODELS.get(model, {}).get("family") == family.name:
        variant = model, "the hub id"
    if variant is None:
        return family
    known, evidence = variant
    refinement = {name: value for name, value in KNOWN_MODELS[known].items() if name != "family"}
    call = {**family.call, **refinement.pop("call", {})}
    return replace(family, **refinement, call=call, variant={"model": known, "by": evidence})


def quantized_components(family: Family, index: dict | None) -> tuple[str, ...]:
    """What --quantize quantizes: the denoiser and the T5 text encoders (T5-XXL's is about 9.5 GB in bf16, as
    large as a denoiser), those the pipeline has (model_index.json; an SD3 saved without T5 has none)."""
    t5 = [name.replace("tokenizer", "text_encoder") for name, encoder, _ in family.encoders if encoder == "T5"]
    names = [name for name in (family.denoiser, *t5) if name]
    if index is None:  # a known hub id the hub did not answer for: its full pipeline
        return tuple(names)
    return tuple(name for name in names if isinstance(index.get(name), list) and index[name][:1] != [None])


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
