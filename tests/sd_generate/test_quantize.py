"""sd-generate's quantization: the CPU fallback, and 4-bit and 8-bit generation where CUDA is present."""

from __future__ import annotations

import numpy as np
import pytest
from helpers.sd_generate import make_records, pixels

from synthprobe.formats.image_cache import ImageCache
from synthprobe.sd_generate.pipeline import load_pipeline
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
