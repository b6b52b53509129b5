"""Shared test fixtures: a hermetic cache, WordNet, the command runner and golden files.

Goldens live in tests/golden/; ``pytest --regen-goldens`` (or
scripts/regen-goldens) rewrites them from the current code.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

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


def run_command(command, *args, exit_code: int | None = 0, **invoke_options) -> Result:
    """Run a click command in-process, as sqlite-utils' tests do: ``CliRunner().invoke(command, args)``.

    Arguments go through str() (paths, numbers). The exit code must be ``exit_code`` (0: success); with
    ``exit_code=None`` the caller checks the result itself.
    """
    result = CliRunner().invoke(command, [str(arg) for arg in args], **invoke_options)
    if exit_code is not None:
        assert result.exit_code == exit_code, (result.output, result.exception)
    return result


@pytest.fixture(scope="session")
def cli():
    """The one way the tests run a command: ``cli(main, "--out", path)`` or ``cli(main, ..., exit_code=None)``."""
    return run_command


class Golden:
    """Every golden file goes through here: compared, or rewritten with --regen-goldens."""

    def __init__(self, regen: bool):
        self.regen = regen

    def check(self, name: str, actual: str) -> None:
        """Compare text with tests/golden/NAME (or rewrite it with --regen-goldens)."""
        expected = self._expected(name, actual)
        assert actual == expected, (
            f"output differs from golden {GOLDEN_DIR / name}; if the change is intended, run scripts/regen-goldens"
        )

    def check_json(self, name: str, values, assert_close, indent: int | None = None) -> None:
        """Compare ``values`` with the JSON in tests/golden/NAME through ``assert_close(expected, values)``: numbers
        that vary with the CPU's floating-point order match within a tolerance, not to the letter."""
        expected = self._expected(name, json.dumps(values, indent=indent) + "\n")
        assert_close(json.loads(expected), values)

    def _expected(self, name: str, actual: str) -> str:
        path = GOLDEN_DIR / name
        if self.regen:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(actual, encoding="utf-8")
        assert path.is_file(), f"golden file {path} is missing; run scripts/regen-goldens"
        return path.read_text(encoding="utf-8")


@pytest.fixture
def golden(request):
    return Golden(request.config.getoption("--regen-goldens"))
