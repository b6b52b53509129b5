"""Shared test fixtures: a hermetic cache, WordNet, and golden files.

Goldens live in tests/golden/; ``pytest --regen-goldens`` (or
scripts/regen-goldens) rewrites them from the current code.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

GOLDEN_DIR = Path(__file__).parent / "golden"


def pytest_addoption(parser):
    parser.addoption("--regen-goldens", action="store_true", help="Rewrite golden files instead of comparing.")


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    if not has_cuda:
        skip = pytest.mark.skip(reason="needs CUDA; runs where torch.cuda.is_available()")
        for item in items:
            if "cuda" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def hermetic_cache(tmp_path_factory):
    """Every test session gets its own cache folder, never the user's."""
    cache = tmp_path_factory.mktemp("synthprobe-cache")
    old = os.environ.get("SYNTHPROBE_CACHE")
    os.environ["SYNTHPROBE_CACHE"] = str(cache)
    yield cache
    if old is None:
        os.environ.pop("SYNTHPROBE_CACHE", None)
    else:
        os.environ["SYNTHPROBE_CACHE"] = old


@pytest.fixture(scope="session")
def wn(hermetic_cache):
    """WordNet 3.0 built from /usr/share/wordnet (Debian's wordnet-base) into the session cache."""
    from synthprobe.wordnet import load_wordnet

    if not Path("/usr/share/wordnet/data.noun").is_file():
        pytest.fail("WordNet is missing: install Debian's wordnet-base (make system-deps does it)")
    return load_wordnet(None, None, False)


@pytest.fixture(scope="session")
def core_wordnet_path():
    """The copy bundled in the package (tests never read outside the repository)."""
    from synthprobe.core_wordnet import core_wordnet_file

    return core_wordnet_file(None)


class Golden:
    def __init__(self, regen: bool):
        self.regen = regen

    def check(self, name: str, actual: str) -> None:
        """Compare text with tests/golden/NAME (or rewrite it with --regen-goldens)."""
        path = GOLDEN_DIR / name
        if self.regen:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(actual, encoding="utf-8")
            return
        assert path.is_file(), f"golden file {path} is missing; run scripts/regen-goldens"
        expected = path.read_text(encoding="utf-8")
        assert actual == expected, (
            f"output differs from golden {path}; if the change is intended, run scripts/regen-goldens"
        )


@pytest.fixture
def golden(request):
    return Golden(request.config.getoption("--regen-goldens"))
