"""Shared test fixtures: a hermetic cache, WordNet, the command runner, golden files, and the inputs that several
test modules of one tool build once per session (tiny models, stores, image folders).

Goldens live in tests/golden/; ``pytest --regen-goldens`` (or
scripts/regen-goldens) rewrites them from the current code.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from helpers.bad_inputs import build_pristine_store, files_under, looks_complete
from helpers.bias_report import build_custom_setup, build_imagenet_store
from helpers.cnn_hooks import SMALL, make_tree
from helpers.golden import Golden

from synthprobe.tiny_models import save_tiny_clip, save_tiny_sd3


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


# ---- cnn-hooks -------------------------------------------------------------------------------


@contextmanager
def torch_threads(count: int):
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny forwards run fastest on one thread, and they stay fast when other jobs load the CPU."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="session")
def tree(tmp_path_factory) -> Path:
    """The cnn-hooks tests' ImageFolder tree: two photo-like PNGs of each of three synsets."""
    return make_tree(tmp_path_factory.mktemp("tree"), per_synset=2)


@pytest.fixture(scope="session")
def small_store(tmp_path_factory, tree, cli) -> Path:
    """resnet18 (random), both poolings, float16 values, fp32 compute: the store most cnn-hooks tests read."""
    from synthprobe.tools.cnn_hooks import main

    out = tmp_path_factory.mktemp("stores") / "acts.zarr"
    with torch_threads(1):
        cli(main, tree, "--out", out, *SMALL, "--pool", "both", "--store-dtype", "float16", "--precision", "fp32")
    return out


# ---- sd-generate -----------------------------------------------------------------------------


@pytest.fixture
def offline_hub(monkeypatch, tmp_path):
    """No test touches the network: the hub is offline and its cache empty (the flags are read at import)."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """The tiny random SD3 pipeline's folder; tests that change it change a copy."""
    return save_tiny_sd3(tmp_path_factory.mktemp("models") / "tiny-sd3")


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


# ---- bad input -------------------------------------------------------------------------------


@pytest.fixture
def fails_cleanly(cli):
    """``fails_cleanly(command, args, root, names)`` runs ``command`` and asserts one clear line naming every string
    in ``names`` and nothing complete written under ``root``; it returns that line."""

    def check(command, args, root: Path, names: list[str]) -> str:
        before = files_under(root)
        result = cli(command, *args, exit_code=None)
        assert result.exit_code not in (0, None), result.output
        assert isinstance(result.exception, SystemExit), f"a traceback: {result.exception!r}"
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
        for name in names:
            assert str(name) in lines[0], f"{name} not in: {lines[0]}"
        assert "BytesIO" not in lines[0] and "Traceback" not in lines[0] and len(lines[0]) < 500, lines[0]
        after = files_under(root)
        written = [p for p, stamp in after.items() if before.get(p) != stamp]
        assert not [p for p in written if looks_complete(p)], written
        return lines[0]

    return check


@pytest.fixture(scope="session")
def pristine_store(tmp_path_factory) -> Path:
    """The store whose copies the separability, bias-report and report cases damage; never changed itself."""
    return build_pristine_store(tmp_path_factory.mktemp("store") / "acts.zarr")


# ---- bias-report -----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def imagenet_store(tmp_path_factory):
    """(store, prompt file) of a synthetic ImageNet classifier on bias images (build_imagenet_store says which)."""
    return build_imagenet_store(tmp_path_factory.mktemp("imagenet-store"))


@pytest.fixture(scope="session")
def custom_setup(tmp_path_factory):
    """(store, class folder, folder) of a ten-class classifier that is not ImageNet."""
    return build_custom_setup(tmp_path_factory.mktemp("custom"))


# ---- image-check -----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory) -> Path:
    """A tiny random CLIP model's folder, the judge of the image-check tests."""
    return save_tiny_clip(tmp_path_factory.mktemp("models") / "tiny-clip")
