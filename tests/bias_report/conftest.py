"""The bias-report tests' fixtures: a synthetic ImageNet classifier's store and a ten-class custom one's."""

from __future__ import annotations

import pytest
from helpers.bias_report import build_custom_setup, build_imagenet_store


@pytest.fixture(scope="session")
def imagenet_store(tmp_path_factory):
    """(store, prompt file) of a synthetic ImageNet classifier on bias images (build_imagenet_store says which)."""
    return build_imagenet_store(tmp_path_factory.mktemp("imagenet-store"))


@pytest.fixture(scope="session")
def custom_setup(tmp_path_factory):
    """(store, class folder, folder) of a ten-class classifier that is not ImageNet."""
    return build_custom_setup(tmp_path_factory.mktemp("custom"))
