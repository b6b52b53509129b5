"""sd-generate's quantization: the CPU fallback, which components each family quantizes (the denoiser and the T5
text encoders) and the bitsandbytes config built for them, and 4-bit and 8-bit generation where CUDA is present."""

from __future__ import annotations

import numpy as np
import pytest
from helpers.sd_generate import make_records, pixels

from synthprobe.formats.image_cache import ImageCache
from synthprobe.sd_generate.families import FAMILIES, quantized_components
from synthprobe.sd_generate.pipeline import load_pipeline, quantization_config
from synthprobe.sd_generate.run import run_generation
from synthprobe.sd_generate.settings import resolve_dtype, resolve_quantization
from synthprobe.tiny_models import tiny_sd3_settings

pytestmark = pytest.mark.usefixtures("offline_hub")


def test_quantize_auto_without_cuda_logs_one_line(caplog):
    with caplog.at_level("INFO", logger="synthprobe"):
        assert resolve_quantization("auto", "cpu") == "none"
    assert [r.getMessage() for r in caplog.records] == ["--quantize auto: no CUDA GPU, so the model loads unquantized"]
    assert resolve_quantization("none", "cpu") == "none"
    assert resolve_dtype("auto", "cpu") == "float32" and resolve_dtype("auto", "cuda") == "bfloat16"


# What each tiny pipeline quantizes; the tiny SD3 has no T5 (model_index.json's text_encoder_3 is [null, null]).
TINY_QUANTIZED = {
    "sd3": ("transformer",),
    "sdxl": ("unet",),
    "flux": ("transformer", "text_encoder_2"),
    "pixart-sigma": ("transformer", "text_encoder"),
}


@pytest.mark.parametrize("family", list(TINY_QUANTIZED))
@pytest.mark.parametrize("quantize", ["4bit", "8bit"])
def test_the_quantization_config_covers_the_denoiser_and_t5(family, quantize, tiny_family, tmp_path, monkeypatch):
    """Resolved as on a CUDA machine (nothing loads, so none is needed): the denoiser gets diffusers' bitsandbytes
    config, the T5 text encoder transformers' one, and the rest none; the key names the encoders quantized."""
    from diffusers import BitsAndBytesConfig
    from transformers import BitsAndBytesConfig as TransformersBitsAndBytesConfig

    monkeypatch.setattr("synthprobe.sd_generate.settings.device_name", lambda requested: "cuda")
    settings = tiny_sd3_settings(tiny_family(family), ImageCache(tmp_path / "cache"), device="auto", quantize=quantize)
    assert (settings.quantization, settings.quantized) == (quantize, TINY_QUANTIZED[family])
    config = quantization_config(settings)
    assert config.components_to_quantize == list(TINY_QUANTIZED[family])
    denoiser, *encoders = TINY_QUANTIZED[family]
    built = config._resolve_quant_config(is_diffusers=True, module_name=denoiser)  # as from_pretrained asks for it
    assert isinstance(built, BitsAndBytesConfig) and getattr(built, f"load_in_{quantize}")
    for encoder in encoders:
        built = config._resolve_quant_config(is_diffusers=False, module_name=encoder)
        assert isinstance(built, TransformersBitsAndBytesConfig) and getattr(built, f"load_in_{quantize}")
    assert config._resolve_quant_config(is_diffusers=True, module_name="vae") is None
    key = settings.key_fields(make_records(1)[0])
    assert key.get("quantized_encoders") == (encoders or None)
    unquantized = tiny_sd3_settings(tiny_family(family), ImageCache(tmp_path / "cache"), device="auto", quantize="none")
    assert unquantized.quantized == () and quantization_config(unquantized) is None


def test_the_real_models_quantize_their_t5_and_a_pipeline_without_one_does_not():
    sd3 = {"transformer": ["diffusers", "SD3Transformer2DModel"], "text_encoder_3": ["transformers", "T5EncoderModel"]}
    assert quantized_components(FAMILIES["sd3"], sd3) == ("transformer", "text_encoder_3")
    assert quantized_components(FAMILIES["sd3"], {**sd3, "text_encoder_3": [None, None]}) == ("transformer",)
    assert quantized_components(FAMILIES["flux"], None) == ("transformer", "text_encoder_2")  # a hub id, unread
    assert quantized_components(FAMILIES["sana"], None) == ("transformer",)  # Gemma is left as it is


# ---- CUDA only ---------------------------------------------------------------------------------


@pytest.mark.cuda
@pytest.mark.parametrize("quantize", ["4bit", "8bit"])
def test_cuda_quantized_generation(tiny_model, tmp_path, quantize):
    import bitsandbytes as bnb

    cache = ImageCache(tmp_path / "cache")
    settings = tiny_sd3_settings(tiny_model, cache, device="auto", quantize=quantize)
    assert (settings.device, settings.dtype, settings.quantization) == ("cuda", "bfloat16", quantize)
    pipe = load_pipeline(settings)
    layer = bnb.nn.Linear4bit if quantize == "4bit" else bnb.nn.Linear8bitLt
    assert any(isinstance(m, layer) for m in pipe.transformer.modules())
    result = run_generation(
        make_records(3), settings, cache, tmp_path / "out", build_pipeline=lambda s: pipe, silent=True
    )
    assert result.generated == 3 and result.failed == 0


@pytest.mark.cuda
def test_cuda_quantizes_the_flux_t5_with_its_transformer(tiny_family, tmp_path):
    import bitsandbytes as bnb

    cache = ImageCache(tmp_path / "cache")
    settings = tiny_sd3_settings(tiny_family("flux"), cache, device="auto", quantize="4bit")
    pipe = load_pipeline(settings)
    for component in ("transformer", "text_encoder_2"):
        assert any(isinstance(m, bnb.nn.Linear4bit) for m in getattr(pipe, component).modules()), component
    assert not any(isinstance(m, bnb.nn.Linear4bit) for m in pipe.text_encoder.modules())
    result = run_generation(
        make_records(2), settings, cache, tmp_path / "out", build_pipeline=lambda s: pipe, silent=True
    )
    assert result.generated == 2 and result.failed == 0


@pytest.mark.cuda
def test_cuda_auto_quantizes_4bit_and_is_deterministic(tiny_model, tmp_path):
    cache = ImageCache(tmp_path / "cache")
    settings = tiny_sd3_settings(tiny_model, cache, device="auto", quantize="auto", batch_size=2)
    assert settings.quantization == "4bit" and settings.key_fields(make_records(1)[0])["device"] == "cuda"
    pipe = load_pipeline(settings)
    records = make_records(4)
    first = run_generation(records, settings, cache, tmp_path / "a", build_pipeline=lambda s: pipe, silent=True)
    again = ImageCache(tmp_path / "again")
    second = run_generation(records[::-1], settings, again, tmp_path / "b", build_pipeline=lambda s: pipe, silent=True)
    by_id = {r["id"]: r for r in second.rows}
    for row in first.rows:
        difference = np.abs(
            pixels(tmp_path / "a" / row["path"]) - pixels(tmp_path / "b" / by_id[row["id"]]["path"])
        ).max()
        assert difference <= 2, row["id"]
