"""The sd-generate tests' fixtures: an offline hub, prompt files, the tiny pipeline loaded once, a model load that
fails. The tiny model's folder (tiny_model) is in tests/conftest.py: the Dask tests use it too."""

from __future__ import annotations

import pytest


@pytest.fixture
def offline_hub(monkeypatch, tmp_path):
    """No test touches the network: the hub is offline and its cache empty (the flags are read at import)."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))


@pytest.fixture
def prompts(tmp_path):
    """``prompts(records, name="prompts.jsonl")`` writes a prompt file into tmp_path and returns its path."""
    from synthprobe.formats.prompts import write_prompts

    def write(records, name="prompts.jsonl"):
        path = tmp_path / name
        write_prompts(path, records)
        return path

    return write


@pytest.fixture(scope="session")
def tiny_pipeline(tiny_model, tmp_path_factory):
    """The tiny pipeline loaded once through the real loader, shared by the in-process tests."""
    from synthprobe.formats.image_cache import ImageCache
    from synthprobe.sd_generate.pipeline import load_pipeline
    from synthprobe.tiny_models import tiny_sd3_settings

    settings = tiny_sd3_settings(tiny_model, ImageCache(tmp_path_factory.mktemp("loader-cache")))
    return load_pipeline(settings)


@pytest.fixture
def no_model_load(monkeypatch):
    """Make any model load fail loudly, to prove a code path never loads one."""

    def refuse(settings):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr("synthprobe.sd_generate.pipeline.load_pipeline", refuse)


@pytest.fixture(scope="session")
def tiny_family(tiny_model, tmp_path_factory):
    """``tiny_family(name)``: the folder of the tiny pipeline of a generator family, each built once a session
    (SD3's is tiny_model)."""
    from synthprobe.tiny_models import save_tiny_pipeline

    folders = {"sd3": tiny_model}

    def folder(family: str):
        if family not in folders:
            folders[family] = save_tiny_pipeline(tmp_path_factory.mktemp("models") / f"tiny-{family}", family)
        return folders[family]

    return folder


@pytest.fixture(scope="session")
def tiny_clip_judge(tmp_path_factory):
    """The tiny random CLIP judge, for the image-check leg of the family runs."""
    from synthprobe.tiny_models import save_tiny_clip

    return save_tiny_clip(tmp_path_factory.mktemp("models") / "tiny-clip")
