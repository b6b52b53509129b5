"""Tiny text-to-image pipelines built from configs alone, one per generator family sd-generate knows.

The component sizes are those of diffusers' own fast tests (tests/pipelines/stable_diffusion_3, _xl, flux,
pixart_sigma), with the tokenizers written locally (synthprobe.tiny_models.text). Where a test's size would leave
the size check nothing to reject, a component differs, as noted. The weights are random but seeded: the same call on
the same machine gives the same files and the same pixels; on another CPU (instruction set) torch's normal_ kernels
round differently, so the weights, their digest and the pixels differ in the last digits.
"""

from __future__ import annotations

from pathlib import Path

from synthprobe.tiny_models.text import tiny_clip_text_config, tiny_clip_tokenizer, tiny_t5_encoder, tiny_t5_tokenizer

TINY_SD3_MULTIPLE = 4  # vae_scale_factor 2 * patch_size 2


def tiny_vae(blocks: int, latent_channels: int, **config):
    """A seeded AutoencoderKL with ``blocks`` blocks (scale factor 2 ** (blocks - 1))."""
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * blocks,
        up_block_types=("UpDecoderBlock2D",) * blocks,
        latent_channels=latent_channels,
        **config,
    )


def flow_matching_vae(latent_channels: int, block_out_channels: tuple[int, ...]):
    """The VAE of diffusers' SD3 and FLUX tests: no quant convs, SD3's shift and scaling factors."""
    return tiny_vae(
        len(block_out_channels),
        latent_channels,
        sample_size=32,
        block_out_channels=block_out_channels,
        norm_num_groups=1,
        use_quant_conv=False,
        use_post_quant_conv=False,
        shift_factor=0.0609,
        scaling_factor=1.5035,
    )


def clip_encoders(with_projection: tuple[bool, ...]) -> list:
    """Seeded tiny CLIP text encoders, with or without the projection head each, and their shared tokenizer."""
    import torch
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    tokenizer = tiny_clip_tokenizer()
    config = tiny_clip_text_config(tokenizer)
    encoders = []
    for projection in with_projection:
        torch.manual_seed(0)
        encoders.append((CLIPTextModelWithProjection if projection else CLIPTextModel)(config))
    return [tokenizer, *encoders]


def build_tiny_sd3_pipeline():
    """SD3 as diffusers' test builds it, except: the VAE has two blocks and the transformer patch size is 2, so
    sizes must be a multiple of 4 as with the real model's 16; T5 is left out."""
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline

    tokenizer, text_encoder, text_encoder_2 = clip_encoders((True, True))
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
    vae = flow_matching_vae(latent_channels=4, block_out_channels=(4, 8))
    return StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        text_encoder_2=text_encoder_2,
        tokenizer_2=tokenizer,
        text_encoder_3=None,
        tokenizer_3=None,
    )


def build_tiny_sdxl_pipeline():
    """SDXL as diffusers' test builds it (a two-block UNet, a two-block VAE: sizes in multiples of the pipeline's
    own 8)."""
    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel

    tokenizer, text_encoder, text_encoder_2 = clip_encoders((False, True))
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(2, 4),
        layers_per_block=2,
        sample_size=32,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=80,  # 6 * 8 + 32
        cross_attention_dim=64,
        norm_num_groups=1,
    )
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, steps_offset=1, beta_schedule="scaled_linear", timestep_spacing="leading"
    )
    return StableDiffusionXLPipeline(
        unet=unet,
        scheduler=scheduler,
        vae=tiny_vae(2, 4, block_out_channels=(32, 64), sample_size=128),
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        text_encoder_2=text_encoder_2,
        tokenizer_2=tokenizer,
        image_encoder=None,
        feature_extractor=None,
    )


def build_tiny_flux_pipeline():
    """FLUX as diffusers' test builds it: a one-block VAE with one latent channel, so sizes are multiples of 2 (the
    pipeline packs 2x2 latents; the real model's multiple is 16)."""
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    tokenizer, text_encoder = clip_encoders((False,))
    tokenizer_2 = tiny_t5_tokenizer()
    torch.manual_seed(0)
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=4,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=32,
        axes_dims_rope=[4, 4, 8],
    )
    vae = flow_matching_vae(latent_channels=1, block_out_channels=(4,))
    return FluxPipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        text_encoder_2=tiny_t5_encoder(tokenizer_2),
        tokenizer_2=tokenizer_2,
    )


def build_tiny_pixart_sigma_pipeline():
    """PixArt-Sigma as diffusers' test builds it: a one-block VAE and patch size 2, so sizes are multiples of the
    pipeline's own 8 (the real model's multiple is 16)."""
    import torch
    from diffusers import DDIMScheduler, PixArtSigmaPipeline, PixArtTransformer2DModel

    torch.manual_seed(0)
    transformer = PixArtTransformer2DModel(
        sample_size=8,
        num_layers=2,
        patch_size=2,
        attention_head_dim=8,
        num_attention_heads=3,
        caption_channels=32,
        in_channels=4,
        cross_attention_dim=24,
        out_channels=8,
        attention_bias=True,
        activation_fn="gelu-approximate",
        num_embeds_ada_norm=1000,
        norm_type="ada_norm_single",
        norm_elementwise_affine=False,
        norm_eps=1e-6,
    )
    tokenizer = tiny_t5_tokenizer()
    return PixArtSigmaPipeline(
        transformer=transformer.eval(),
        vae=tiny_vae(1, 4, block_out_channels=(64,)).eval(),
        scheduler=DDIMScheduler(),
        text_encoder=tiny_t5_encoder(tokenizer),
        tokenizer=tokenizer,
    )


BUILDERS = {
    "sd3": build_tiny_sd3_pipeline,
    "sdxl": build_tiny_sdxl_pipeline,
    "flux": build_tiny_flux_pipeline,
    "pixart-sigma": build_tiny_pixart_sigma_pipeline,
}


def save_tiny_pipeline(folder: str | Path, family: str = "sd3") -> Path:
    """Write the tiny pipeline of ``family`` (a key of BUILDERS) to ``folder`` with save_pretrained (1-3 MB)."""
    folder = Path(folder)
    BUILDERS[family]().save_pretrained(folder)
    return folder


def save_tiny_sd3(folder: str | Path) -> Path:
    return save_tiny_pipeline(folder, "sd3")


def tiny_sd3_settings(model: str | Path, cache, **overrides):
    """sd-generate's settings for a tiny pipeline folder (any family) as the tests and benchmarks run it: on the
    CPU, 32 px, 2 steps, one image a batch, nothing quantized or offloaded; ``overrides`` are Params fields that
    change any of them."""
    from synthprobe.sd_generate.settings import Params, resolve_settings

    options = {"steps": 2, "size": (32, 32), "device": "cpu", "quantize": "none", **overrides}
    return resolve_settings(Params(model=str(model), **options), cache)
