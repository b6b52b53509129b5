"""Check, before ``make all`` starts, that the generator and the CNN weights can be had.

The command is ``python -m synthprobe.tools.preflight --generator ID --cnn NAME --weights W``:
it exits non-zero with one line saying what to do (log in, accept a licence,
connect, or try ``make demo``) instead of failing an hour into the run.
"""

from __future__ import annotations

import urllib.request
from pathlib import Path

from synthprobe.common.files import InputError, error_line
from synthprobe.common.networks import TIMM_PREFIX, weights_kind
from synthprobe.sd_generate.model import hub_error_message, offline_message, read_model_json, resolve_model_source

DEMO_HINT = "; to see the whole pipeline work offline, run `make demo`"


def check_generator(model: str, revision: str | None = None) -> str:
    source = resolve_model_source(model, revision)
    try:
        index = read_model_json(source, "model_index.json", download=True)
    except InputError as exc:
        raise InputError(f"{exc}{DEMO_HINT}") from None
    except Exception as exc:  # any hub failure: say what it means if we can
        raise InputError(f"{hub_error_message(exc, source) or error_line(exc)}{DEMO_HINT}") from None
    if index is None:
        raise InputError(offline_message(source) + DEMO_HINT)
    return f"generator {model}: ok"


def url_reachable(url: str, timeout: float = 10) -> bool:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout):
            return True
    except OSError:
        return False


def check_cnn_weights(cnn: str, weights: str) -> str:
    kind = weights_kind(weights)
    if kind == "none":
        return f"cnn {cnn} ({weights}): nothing to fetch"
    if kind == "file":
        if not Path(weights).is_file():
            raise InputError(f"weights file {weights} does not exist")
        return f"cnn weights {weights}: local file"
    if cnn.startswith(TIMM_PREFIX):
        return check_timm_weights(cnn[len(TIMM_PREFIX) :])
    import torchvision.models as tvm

    try:
        enum = tvm.get_model_weights(cnn)
    except ValueError:
        raise InputError(f"unknown torchvision model {cnn!r}") from None
    chosen = enum.DEFAULT if kind == "default" else enum.__members__.get(weights)
    if chosen is None:
        raise InputError(f"--weights {weights}: not DEFAULT, none, a file, or one of {', '.join(enum.__members__)}")
    return check_url(f"cnn {cnn} weights {chosen}", chosen.url)


def check_url(what: str, url: str) -> str:
    """Weights that torch.hub downloads: in its cache, or reachable now."""
    import torch

    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name
    if cached.is_file() or url_reachable(url):
        return f"{what}: ok"
    raise InputError(
        f"cannot reach {url} for {what} and it is not in {cached.parent}: "
        f"connect once, or pass a local state-dict file as WEIGHTS=PATH{DEMO_HINT}"
    )


def check_timm_weights(name: str) -> str:
    import timm

    config = timm.models.get_pretrained_cfg(name) if timm.is_model(name) else None
    if config is None:
        raise InputError(f"timm model {name!r} has no pretrained weights; use WEIGHTS=none or a local file")
    if not config.hf_hub_id:
        return check_url(f"cnn timm:{name}", config.url)
    from huggingface_hub import file_exists, try_to_load_from_cache

    files = ("model.safetensors", "pytorch_model.bin")
    if any(isinstance(try_to_load_from_cache(config.hf_hub_id, f), str) for f in files):
        return f"cnn timm:{name} weights {config.hf_hub_id}: cached"
    try:
        if file_exists(config.hf_hub_id, files[0]) or file_exists(config.hf_hub_id, files[1]):
            return f"cnn timm:{name} weights {config.hf_hub_id}: ok"
    except Exception:  # offline or hub errors: the advice is the same
        pass
    raise InputError(
        f"cannot reach the Hugging Face hub for timm:{name} ({config.hf_hub_id}) and its weights are not "
        f"cached: connect once, or pass a local state-dict file as WEIGHTS=PATH{DEMO_HINT}"
    )
