"""Fixtures that the tests of several stages use: a hermetic cache, WordNet, the command runner, golden files, the
bad-input check, and the tiny SD3 model and pristine store. A fixture only one stage's tests use lives in
tests/<stage>/conftest.py.

Goldens live in tests/golden/; ``pytest --regen-goldens`` (or
scripts/regen-goldens) rewrites them from the current code.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from helpers import fails_with
from helpers.bad_inputs import build_pristine_store, files_under, looks_complete
from helpers.golden import Golden

from synthprobe.tiny_models import save_tiny_sd3


def pytest_addoption(parser):
    parser.addoption("--regen-goldens", action="store_true", help="Rewrite golden files instead of comparing.")


def pytest_collection_modifyitems(config, items):
    for item in items:  # a test that compares with a golden file is a golden test, marked so with no line of its own
        if "golden" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.golden)
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
    from synthprobe.common.wordnet import load_wordnet

    if not Path("/usr/share/wordnet/data.noun").is_file():
        pytest.fail("WordNet is missing: install Debian's wordnet-base (make system-deps does it)")
    return load_wordnet(None, None, False)


@pytest.fixture(scope="session")
def core_wordnet_path():
    """The copy bundled in the package (tests never read outside the repository)."""
    from synthprobe.wn_prompts.core_wordnet import core_wordnet_file

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


@pytest.fixture
def golden(request):
    return Golden(request.config.getoption("--regen-goldens"))


# ---- bad input -------------------------------------------------------------------------------


@pytest.fixture
def fails_cleanly(cli):
    """``fails_cleanly(command, args, root, names)`` runs ``command`` and asserts one clear line naming every string
    in ``names`` and nothing complete written under ``root``; it returns that line."""

    def check(command, args, root: Path, names: list[str]) -> str:
        before = files_under(root)
        line = fails_with(cli(command, *args, exit_code=None), *names)
        after = files_under(root)
        written = [p for p, stamp in after.items() if before.get(p) != stamp]
        assert not [p for p in written if looks_complete(p)], written
        return line

    return check


@pytest.fixture(scope="session")
def pristine_store(tmp_path_factory) -> Path:
    """The store whose copies the separability, bias-report and report cases damage; never changed itself."""
    return build_pristine_store(tmp_path_factory.mktemp("store") / "acts.zarr")


# ---- the tiny SD3 model: sd-generate's tests and the Dask tests ----------------------------------


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """The tiny random SD3 pipeline's folder; tests that change it change a copy."""
    return save_tiny_sd3(tmp_path_factory.mktemp("models") / "tiny-sd3")
