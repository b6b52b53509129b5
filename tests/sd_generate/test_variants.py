"""Known models told by their own configs: a local copy or a hub mirror of FLUX.1-schnell takes schnell's defaults
whatever its name, the config wins over the name, and run.json and the image cache's model record keep what was
detected."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from helpers.sd_generate import make_records

from synthprobe.formats.image_cache import ImageCache
from synthprobe.sd_generate.families import FAMILIES, KNOWN_MODELS, with_variant
from synthprobe.sd_generate.settings import Params, resolve_settings
from synthprobe.tools import sd_generate

pytestmark = pytest.mark.usefixtures("offline_hub")

SCHNELL, DEV = "black-forest-labs/FLUX.1-schnell", "black-forest-labs/FLUX.1-dev"
MEDIUM = "stabilityai/stable-diffusion-3.5-medium"


def flux_copy(tiny_family, folder, guidance_embeds: bool):
    """A copy of the tiny FLUX whose transformer config says ``guidance_embeds`` (dev's true, schnell's false);
    only its configs are read here, so the weights need not match."""
    shutil.copytree(tiny_family("flux"), folder)
    config_file = folder / "transformer" / "config.json"
    config_file.write_text(json.dumps({**json.loads(config_file.read_text()), "guidance_embeds": guidance_embeds}))
    return folder


def resolve(model, cache, **options):
    return resolve_settings(Params(model=str(model), device="cpu", quantize="none", **options), cache, dry_run=True)


def expected(known):
    row = {**vars(FAMILIES["flux"]), **KNOWN_MODELS[known]}
    return row["steps"], row["guidance"], {**FAMILIES["flux"].call, **KNOWN_MODELS[known].get("call", {})}


@pytest.mark.parametrize(("guidance_embeds", "known"), [(False, SCHNELL), (True, DEV)])
def test_a_local_flux_folder_takes_the_defaults_of_the_model_its_config_names(
    guidance_embeds, known, tiny_family, tmp_path
):
    folder = flux_copy(tiny_family, tmp_path / "downloads" / "my-flux", guidance_embeds)
    settings = resolve(folder, ImageCache(tmp_path / "cache"))
    assert (settings.steps, settings.guidance, settings.family.call) == expected(known)
    by = f"transformer/config.json guidance_embeds={json.dumps(guidance_embeds)}"
    assert settings.family.variant == {"model": known, "by": by}


def test_the_config_wins_over_a_hub_id_as_the_folder_name(tiny_family, tmp_path, monkeypatch):
    """A folder named like schnell's hub id whose transformer embeds guidance is a dev: dev's defaults."""
    flux_copy(tiny_family, tmp_path / "black-forest-labs" / "FLUX.1-schnell", guidance_embeds=True)
    monkeypatch.chdir(tmp_path)
    settings = resolve(SCHNELL, ImageCache(tmp_path / "cache"))
    assert settings.source.is_local and settings.family.variant["model"] == DEV
    assert (settings.steps, settings.guidance, settings.family.call) == expected(DEV)
    assert with_variant(FAMILIES["flux"], SCHNELL, {"guidance_embeds": True}).variant["model"] == DEV


def test_a_hub_mirror_at_a_revision_is_told_by_its_cached_config(tiny_family, tmp_path):
    """A hub id that KNOWN_MODELS lacks, at a tag, from the Hugging Face cache (offline): schnell by its config."""
    import huggingface_hub.constants

    commit = "0" * 40
    repo = Path(huggingface_hub.constants.HF_HUB_CACHE) / "models--someone--flux-mirror"
    shutil.copytree(tiny_family("flux"), repo / "snapshots" / commit, ignore=shutil.ignore_patterns("*.safetensors"))
    (repo / "refs").mkdir()
    (repo / "refs" / "v1").write_text(commit)
    settings = resolve("someone/flux-mirror", ImageCache(tmp_path / "cache"), revision="v1")
    assert not settings.source.is_local and settings.model_identity == {"hub": "someone/flux-mirror", "revision": "v1"}
    assert (settings.steps, settings.guidance, settings.family.call) == expected(SCHNELL)
    assert settings.family.variant["by"] == "transformer/config.json guidance_embeds=false"


def test_sd35_medium_is_told_by_its_dual_attention_layers(tiny_family, tmp_path):
    """Medium (MMDiT-X) has dual attention layers; Large and Large Turbo have identical configs, so neither is told."""
    folder = tmp_path / "my-sd35"
    shutil.copytree(tiny_family("sd3"), folder)
    cache = ImageCache(tmp_path / "cache")
    assert resolve(folder, cache).family.variant is None
    config_file = folder / "transformer" / "config.json"
    config_file.write_text(json.dumps({**json.loads(config_file.read_text()), "dual_attention_layers": [0]}))
    settings = resolve(folder, cache)
    assert settings.family.variant == {"model": MEDIUM, "by": "transformer/config.json dual_attention_layers=[0]"}
    assert (settings.steps, settings.guidance) == (KNOWN_MODELS[MEDIUM]["steps"], KNOWN_MODELS[MEDIUM]["guidance"])


def test_run_json_records_the_detection_and_the_cache_record_keeps_it(tiny_family, prompts, tmp_path, cli):
    """A real run of a schnell-like copy: its defaults and what told them are in run.json; once the folder is gone,
    the image cache's model record still gives schnell's defaults, so the cached images are found again."""
    folder = tmp_path / "my-flux"
    shutil.copytree(tiny_family("flux"), folder)
    out, cache = tmp_path / "out", tmp_path / "cache"
    args = [prompts(make_records(2)), "--model", folder, "--cache", cache, "--size", 32, "--quantize", "none"]
    cli(sd_generate.main, *args, "--out", out, "--device", "cpu", "--silent")
    config = json.loads((out / "run.json").read_text())["config"]
    assert config["variant"] == {"model": SCHNELL, "by": "transformer/config.json guidance_embeds=false"}
    assert (config["steps"], config["guidance"], config["call"]) == expected(SCHNELL)
    shutil.rmtree(folder)
    settings = resolve(folder, ImageCache(cache))
    assert (settings.steps, settings.guidance, settings.family.variant) == (config["steps"], 0.0, config["variant"])
    again = cli(sd_generate.main, *args, "--out", tmp_path / "again", "--device", "cpu", "--dry-run")
    assert again.output.count("cached\t") == 2 and "generate\t" not in again.output
