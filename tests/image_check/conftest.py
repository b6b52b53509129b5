"""The image-check tests' fixtures: the tiny random CLIP judge."""

from __future__ import annotations

from pathlib import Path

import pytest

from synthprobe.tiny_models import save_tiny_clip


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory) -> Path:
    """A tiny random CLIP model's folder, the judge of the image-check tests."""
    return save_tiny_clip(tmp_path_factory.mktemp("models") / "tiny-clip")
