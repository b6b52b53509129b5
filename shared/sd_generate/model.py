"""The model before it is loaded: its source, small config files, identity and the cache's record of it."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from synthprobe.common.files import InputError, atomic_write, read_json, sha256_file
from synthprobe.formats.image_cache import ImageCache, canonical_json
from synthprobe.sd_generate.families import Family, family_of, size_multiple, with_variant

log = logging.getLogger("synthprobe")

DEFAULT_MODEL = "stabilityai/stable-diffusion-3.5-large"


@dataclass(frozen=True)
class ModelSource:
    """A hub id (with a revision) or a local pipeline folder."""

    name: str
    revision: str | None = None
    folder: Path | None = None

    @property
    def is_local(self) -> bool:
        return self.folder is not None


def resolve_model_source(model: str, revision: str | None) -> ModelSource:
    folder = Path(model).expanduser()
    if folder.is_dir():
        if not (folder / "model_index.json").is_file():
            raise InputError(f"model folder {model} is not a diffusers pipeline (it has no model_index.json)")
        if revision:
            raise InputError(f"--revision applies to hub models, not to the local folder {model}")
        return ModelSource(model, None, folder.resolve())  # absolute: a Dask worker may run in another folder
    if model.startswith((".", "/", "~")) or model.count("/") > 1 or folder.exists():
        raise InputError(f"model folder {model} does not exist (a hub model is named like {DEFAULT_MODEL})")
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(model)
    except ValueError:
        raise InputError(
            f"--model {model!r} is neither a local folder nor a Hugging Face model id like {DEFAULT_MODEL}"
        ) from None
    return ModelSource(model, revision or "main")


def hub_error_message(exc: BaseException, source: ModelSource) -> str | None:
    """One actionable line for a hub failure anywhere in the exception chain, else None."""
    from huggingface_hub.errors import (
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    name = source.name
    while exc is not None:
        if isinstance(exc, GatedRepoError):
            return (
                f"model {name} is gated: accept its licence at https://huggingface.co/{name} "
                "and log in with `hf auth login` (or set HF_TOKEN)"
            )
        if isinstance(exc, RepositoryNotFoundError):
            return (
                f"model {name} was not found on the Hugging Face hub: check the id; "
                "if it is private, log in with `hf auth login`"
            )
        if isinstance(exc, RevisionNotFoundError):
            return f"revision {source.revision!r} of model {name} was not found on the Hugging Face hub"
        if isinstance(exc, LocalEntryNotFoundError):
            return offline_message(source)
        exc = exc.__cause__ or exc.__context__
    return None


def offline_message(source: ModelSource) -> str:
    return (
        f"model {source.name} is not in the local Hugging Face cache and the hub cannot be reached: "
        f"connect once (for a gated model accept its licence at https://huggingface.co/{source.name} "
        "and run `hf auth login`), or pass a local pipeline folder"
    )


def read_model_json(source: ModelSource, filename: str, download: bool = True) -> dict | None:
    """A small JSON file of the pipeline (local folder, hub cache, else hub); None if absent or unreachable."""
    if source.is_local:
        path = source.folder / filename
        return read_config(path) if path.is_file() else None
    from huggingface_hub import hf_hub_download, try_to_load_from_cache
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError

    cached = try_to_load_from_cache(source.name, filename, revision=source.revision)
    if isinstance(cached, str):
        path = cached
    elif cached is not None or not download:  # cached as absent, or the caller wants no network
        return None
    else:
        try:
            path = hf_hub_download(source.name, filename, revision=source.revision)
        except EntryNotFoundError:
            return None
        except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as exc:
            message = hub_error_message(exc, source)
            if message and not isinstance(exc, LocalEntryNotFoundError):
                raise InputError(message) from None
            return None
    return read_config(Path(path))


def read_config(path: Path) -> dict:
    config = read_json(path)
    if not isinstance(config, dict):
        raise InputError(f"{path}: not a model config (a JSON object)")
    return config


def model_family(source: ModelSource) -> tuple[dict | None, dict | None, Family, int]:
    """The pipeline's model_index.json (None where the hub cannot be reached), its denoiser's config (None where
    not at hand), its family with the defaults of its variant, and the multiple of width and height (the family's
    own where the VAE's config is not at hand)."""
    index = read_model_json(source, "model_index.json")
    family = family_of(index, source.name)
    if family is None:
        raise InputError(offline_message(source))
    vae = read_model_json(source, "vae/config.json", download=False)
    # where the hub answered, its denoiser's config is fetched: it tells the variant (FLUX schnell or dev)
    denoiser_file = f"{family.denoiser}/config.json"
    denoiser = read_model_json(source, denoiser_file, download=index is not None) if family.denoiser else None
    family = with_variant(family, source.name, denoiser)
    if family.variant and family.variant["model"] != source.name:
        log.info("%s takes the defaults of %s (%s)", source.name, family.variant["model"], family.variant["by"])
    return index, denoiser, family, size_multiple(family, vae, denoiser)


def check_size(width: int, height: int, multiple: int, source: ModelSource) -> None:
    if width % multiple or height % multiple:
        suggestion = f"{max(multiple, width // multiple * multiple)}x{max(multiple, height // multiple * multiple)}"
        raise InputError(
            f"--size {width}x{height}: width and height must be multiples of {multiple} "
            f"for {source.name} (for example {suggestion})"
        )


def scheduler_spec(source: ModelSource) -> dict | None:
    """The scheduler class and config the model ships with; part of the cache key."""
    config = read_model_json(source, "scheduler/scheduler_config.json")
    if config is None:
        if source.is_local:
            return None
        raise InputError(offline_message(source))
    return {
        "class": config.get("_class_name"),
        "config": {k: v for k, v in sorted(config.items()) if not k.startswith("_")},
    }


def local_model_digest(folder: Path, memo_file: Path, remember: bool = True) -> str:
    """sha256 over every file of a local pipeline; memoised by (path, size, mtime) since weights are large.

    ``remember=False`` reads the memo but never writes it (``--dry-run`` changes nothing).
    """
    files = sorted(
        p for p in folder.rglob("*") if p.is_file() and not any(s.startswith(".") for s in p.relative_to(folder).parts)
    )
    stamp = [(p.relative_to(folder).as_posix(), p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    memo_key = hashlib.sha256(canonical_json([str(folder.resolve()), stamp]).encode()).hexdigest()
    try:
        memo = json.loads(memo_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        memo = {}
    if memo_key in memo:
        return memo[memo_key]
    digest = hashlib.sha256()
    for path, (relative, _, _) in zip(files, stamp):
        digest.update(f"{relative}\0{sha256_file(path)}\n".encode())
    result = digest.hexdigest()
    if not remember:
        return result
    try:  # a read-only cache just means hashing again next time
        with atomic_write(memo_file) as handle:
            json.dump({**memo, memo_key: result}, handle)
    except (OSError, InputError):
        pass
    return result


def model_record_file(cache: ImageCache, model: str, revision: str | None) -> Path:
    """Where the image cache keeps what the cache keys need of a model, by its name and revision as given."""
    name = canonical_json([os.path.normpath(os.path.expanduser(model)), revision])
    return cache.root / f"model-{hashlib.sha256(name.encode()).hexdigest()[:32]}.json"  # beside, not among, the entries


@dataclass(frozen=True)
class ModelInfo:
    """What sd-generate knows of the model before loading it: where it is, its pipeline and family, the resolved
    image size, the scheduler and the identity (the cache key's parts)."""

    source: ModelSource
    index: dict | None  # model_index.json; None where only a known hub id's name was had
    pipeline: str
    family: Family
    size: tuple[int, int]
    scheduler: dict | None
    identity: dict


def resolve_model(
    model: str, revision: str | None, size: tuple[int, int] | None, cache: ImageCache, dry_run: bool
) -> ModelInfo:
    """The model's source, family, scheduler and identity, with ``size`` (None: the family's) checked.

    Read from the model (its small config files, a local folder's file hashes) and recorded in the
    image cache; where the model cannot be had (no folder, no Hugging Face cache, no network) the
    record stands in, so a run whose images are all cached needs nothing of the model.
    """
    record_file = model_record_file(cache, model, revision)
    try:
        source = resolve_model_source(model, revision)
        index, denoiser, family, multiple = model_family(source)
        width, height = size or (family.size or 0, family.size or 0)
        check_size(width, height, multiple, source)
        scheduler = scheduler_spec(source)
        if index is None:  # the scheduler's config came, so the hub answers now
            index = read_model_json(source, "model_index.json")
    except InputError as exc:
        try:
            record = json.loads(record_file.read_text(encoding="utf-8"))
            index = record["index"]
        except (OSError, ValueError, KeyError):
            raise exc from None
        source = ModelSource(record["name"], record["revision"], Path(record["folder"]) if record["folder"] else None)
        family = with_variant(family_of(index, source.name), source.name, record.get("denoiser"))
        width, height = size or (family.size or 0, family.size or 0)
        check_size(width, height, record["multiple"], source)
        log.info("%s cannot be read here; the image cache's record of it serves for the images cached", model)
        pipeline = str(index.get("_class_name"))
        return ModelInfo(source, index, pipeline, family, (width, height), record["scheduler"], record["identity"])
    if source.is_local:
        identity = {"local_sha256": local_model_digest(source.folder, cache.root / "model-digests.json", not dry_run)}
    else:
        identity = {"hub": source.name, "revision": source.revision}
    record = {
        "name": source.name,
        "revision": source.revision,
        "folder": str(source.folder) if source.folder else None,
        "index": index,
        "denoiser": denoiser,  # its config, which tells the variant
        "multiple": multiple,
        "scheduler": scheduler,
        "identity": identity,
    }
    if not dry_run and index is not None:  # a record without the model's index could not tell its family later
        try:  # a read-only cache can still serve a run that has the model
            if not record_file.is_file() or json.loads(record_file.read_text(encoding="utf-8")) != record:
                with atomic_write(record_file) as handle:
                    json.dump(record, handle, indent=1)
        except (OSError, ValueError, InputError):
            pass
    pipeline = str(index.get("_class_name")) if index else family.pipelines[0]
    return ModelInfo(source, index, pipeline, family, (width, height), scheduler, identity)
