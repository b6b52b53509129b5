"""cnn-hooks as one call: read the image folder and build the network -> record every hook point -> the store.

A notebook calls ``record_activations(images, out, Params(...), model="resnet50", weights="DEFAULT")``; the store
is written as the run goes (it is the resume point), so reading, computing and writing share one step here.
"""

from __future__ import annotations

from pathlib import Path

from synthprobe.cnn_hooks.hook_points import discover_hook_points, find_aliases
from synthprobe.cnn_hooks.run import Params, RunResult, run_hooks
from synthprobe.common.files import InputError, os_reason
from synthprobe.common.globs import select_by_globs
from synthprobe.common.networks import build_network
from synthprobe.common.wordnet import load_wordnet
from synthprobe.formats.image_folder import read_image_folder, read_labelled_folder, with_wordnet_synsets


def record_activations(
    images: str | Path,
    out: str | Path,
    params: Params,
    *,
    model: str = "resnet50",
    weights: str = "DEFAULT",
    image_size: int | None = None,
    labels: str | Path | None = None,
    engine=None,
) -> RunResult:
    """Append every image of the folder ``images`` that the store ``out`` lacks; see ``run_hooks``. Its synsets
    come from its manifest, its folder names (WordNet names or ImageNet wnids) or a ``labels`` CSV path,synset."""
    folder = read_labelled_folder(images, labels) if labels else read_image_folder(images)
    folder = with_wordnet_synsets(folder, load_wordnet)
    network = build_network(model, weights, image_size)
    return run_hooks(folder, Path(out), network, params, engine=engine)


def layer_lines(model: str, image_size: int | None, patterns: list[str]) -> list[str]:
    """One line per hook point: name, channels, output shape, and '= canonical' for an alias (stored once, as its
    canonical). Weights do not change layers, so none are loaded."""
    network = build_network(model, "none", image_size)
    points, _ = discover_hook_points(network.module, network.preprocessing)
    aliases = find_aliases(network.module, points, network.preprocessing)
    chosen = set(select_by_globs([p.name for p in points], patterns, more=" (see --list-layers)"))
    return [
        f"{p.name}\t{p.channels}\t{'x'.join(map(str, p.shape))}"
        + (f"\t= {aliases[p.name]}" if p.name in aliases else "")
        for p in points
        if p.name in chosen
    ]


def read_class_names(path: str | Path) -> list[str]:
    """One name per classifier output, one per line (``--class-names``)."""
    try:
        return [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    except OSError as exc:
        raise InputError(f"cannot read --class-names {path}: {os_reason(exc)}") from None
