"""A tiny Stable Diffusion 3 pipeline built from configs alone, for tests and the offline demo.

The component sizes follow diffusers' own SD3 fast tests, except that the VAE
has two blocks and the transformer patch size is 2, so that sizes must be a
multiple of 4 as with the real model's 16 (the size check has something to
reject). The weights are random but seeded: the same call on the same machine
gives the same files and the same pixels; on another CPU (instruction set) torch's
normal_ kernels round differently, so the weights, their digest and the pixels
differ in the last digits. Usage: ``python -m synthprobe.tiny_models DIR``;
``python -m synthprobe.tiny_models --clip DIR`` writes the tiny CLIP judge of
``image-check`` instead, ``--owlv2 DIR`` its tiny detector judge.
"""

from __future__ import annotations

import sys
from pathlib import Path

TINY_SD3_MULTIPLE = 4  # vae_scale_factor 2 * patch_size 2


def tiny_clip_tokenizer():
    """A byte-level CLIP tokenizer with no merges, written locally (the test tokenizers live on the hub)."""
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import CLIPTokenizer

    symbols = sorted(ByteLevel.alphabet())
    vocab = {token: index for index, token in enumerate(symbols + [s + "</w>" for s in symbols])}
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    # Without model_max_length the tokenizer pads prompts to 1e30 tokens.
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


def tiny_clip_text_config(tokenizer):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        bos_token_id=tokenizer.convert_tokens_to_ids("<|startoftext|>"),
        # The pooled output is read at the eos token; a wrong id pools the wrong position.
        eos_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        pad_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        hidden_size=32,
        intermediate_size=37,
        layer_norm_eps=1e-05,
        num_attention_heads=4,
        num_hidden_layers=5,
        vocab_size=len(tokenizer),
        hidden_act="gelu",
        projection_dim=32,
    )


def tiny_sd3_vae():
    """A two-block VAE (scale factor 2), seeded."""
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    return AutoencoderKL(
        sample_size=32,
        in_channels=3,
        out_channels=3,
        block_out_channels=(4, 8),
        layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        latent_channels=4,
        norm_num_groups=1,
        use_quant_conv=False,
        use_post_quant_conv=False,
        shift_factor=0.0609,
        scaling_factor=1.5035,
    )


def build_tiny_sd3_pipeline():
    """The pipeline object, CPU, float32, with seeded random weights."""
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
    from transformers import CLIPTextModelWithProjection

    tokenizer = tiny_clip_tokenizer()
    torch.manual_seed(0)
    transformer = SD3Transformer2DModel(
        sample_size=32,
        patch_size=2,
        in_channels=4,
        num_layers=1,
        attention_head_dim=8,
        num_attention_heads=4,
        caption_projection_dim=32,
        joint_attention_dim=32,
        pooled_projection_dim=64,
        out_channels=4,
    )
    clip_config = tiny_clip_text_config(tokenizer)
    torch.manual_seed(0)
    text_encoder = CLIPTextModelWithProjection(clip_config)
    torch.manual_seed(0)
    text_encoder_2 = CLIPTextModelWithProjection(clip_config)
    return StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=tiny_sd3_vae(),
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        text_encoder_2=text_encoder_2,
        tokenizer_2=tokenizer,
        text_encoder_3=None,
        tokenizer_3=None,
    )


def save_tiny_sd3(folder: str | Path) -> Path:
    """Write the tiny pipeline to ``folder`` (about 1 MB) with save_pretrained."""
    folder = Path(folder)
    build_tiny_sd3_pipeline().save_pretrained(folder)
    return folder


def tiny_sd3_settings(model: str | Path, cache, **overrides):
    """sd-generate's settings for a tiny SD3 folder as the tests and benchmarks run it: on the CPU, 32 px, 2 steps,
    one image a batch, nothing quantized or offloaded; ``overrides`` are Params fields that change any of them."""
    from synthprobe.sd_generate.settings import Params, resolve_settings

    options = {"steps": 2, "size": (32, 32), "device": "cpu", "quantize": "none", **overrides}
    return resolve_settings(Params(model=str(model), **options), cache)


# The two towers of the tiny CLIP and the tiny OWLv2: 32 px images, patch 8, two layers each.
TINY_VISION = dict(
    image_size=32, patch_size=8, hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2
)


def tiny_text_config(tokenizer) -> dict:
    end = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    return dict(
        bos_token_id=tokenizer.convert_tokens_to_ids("<|startoftext|>"),
        eos_token_id=end,
        pad_token_id=end,
        hidden_size=32,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=2,
        vocab_size=len(tokenizer),
        max_position_embeddings=tokenizer.model_max_length,
    )


def build_tiny_clip():
    """A CLIPModel (32 px images, patch 8, two layers per tower) and its CLIPProcessor, seeded random weights."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    tokenizer = tiny_clip_tokenizer()
    text, vision = tiny_text_config(tokenizer), TINY_VISION
    torch.manual_seed(0)
    model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).eval()
    images = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return model, CLIPProcessor(image_processor=images, tokenizer=tokenizer)


def save_tiny_clip(folder: str | Path) -> Path:
    """Write the tiny CLIP model and processor to ``folder`` (about 300 kB) with save_pretrained."""
    return save_tiny_model(folder, build_tiny_clip)


def build_tiny_owlv2():
    """An Owlv2ForObjectDetection with the tiny CLIP's towers (16 boxes on a 32 px image) and its Owlv2Processor,
    seeded random weights; box scores lie between sigmoid(-1) and sigmoid(1). The class head maps image features
    into the text tower's width, so the projection dimension equals it."""
    import torch
    from transformers import Owlv2Config, Owlv2ForObjectDetection, Owlv2ImageProcessor, Owlv2Processor

    tokenizer = tiny_clip_tokenizer()
    text = tiny_text_config(tokenizer)
    torch.manual_seed(0)
    config = Owlv2Config(text_config=text, vision_config=TINY_VISION, projection_dim=text["hidden_size"])
    model = Owlv2ForObjectDetection(config).eval()
    with torch.no_grad():  # random logit scales saturate every score at 0 or 1; unit scale leaves the cosine, -1..1
        for layer in (model.class_head.logit_shift, model.class_head.logit_scale):
            layer.weight.zero_()
            layer.bias.zero_()
    images = Owlv2ImageProcessor(size={"height": 32, "width": 32})
    return model, Owlv2Processor(image_processor=images, tokenizer=tokenizer)


def save_tiny_model(folder: str | Path, build) -> Path:
    """Write a tiny judge's model and processor (``build()``) to ``folder`` with save_pretrained."""
    folder = Path(folder)
    model, processor = build()
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


if __name__ == "__main__":
    from synthprobe.common.quiet import quiet_libraries

    quiet_libraries(silent=True)  # diffusers' notes on the absent T5 and its save bars
    if len(sys.argv) == 3 and sys.argv[1] == "--clip":
        print(save_tiny_clip(sys.argv[2]))
    elif len(sys.argv) == 3 and sys.argv[1] == "--owlv2":
        print(save_tiny_model(sys.argv[2], build_tiny_owlv2))
    elif len(sys.argv) == 2:
        print(save_tiny_sd3(sys.argv[1]))
    else:
        sys.exit("usage: python -m synthprobe.tiny_models [--clip | --owlv2] DIR")
