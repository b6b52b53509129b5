"""The image-check tests' fixtures: the tiny random CLIP judge and OWLv2 detector."""

from __future__ import annotations

from pathlib import Path

import pytest

from synthprobe.tiny_models import build_tiny_owlv2, save_tiny_clip, save_tiny_model


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory) -> Path:
    """A tiny random CLIP model's folder, the judge of the image-check tests."""
    return save_tiny_clip(tmp_path_factory.mktemp("models") / "tiny-clip")


@pytest.fixture(scope="session")
def tiny_owlv2(tmp_path_factory) -> Path:
    """A tiny random OWLv2 detector's folder, the detector judge of the image-check tests."""
    return save_tiny_model(tmp_path_factory.mktemp("models") / "tiny-owlv2", build_tiny_owlv2)
