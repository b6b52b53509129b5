"""cnn-hooks as one call: read the image folder and build the network -> record every hook point -> the store.

A notebook calls ``record_activations(images, out, Params(...), model="resnet50", weights="DEFAULT")``, or
``record_classifiers(images, [(out, model, weights), ...], Params(...))`` for several classifiers in one pass over
the images; a store is written as the run goes (it is the resume point), so reading, computing and writing share
one step here.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from synthprobe.cnn_hooks.hook_points import discover_hook_points, find_aliases
from synthprobe.cnn_hooks.run import Params, RunResult, run_pass
from synthprobe.common.files import InputError, os_reason
from synthprobe.common.globs import select_by_globs
from synthprobe.common.networks import build_network
from synthprobe.common.wordnet import load_wordnet
from synthprobe.formats.image_folder import read_image_folder, read_labelled_folder, with_wordnet_synsets

MODEL_FIELD = "{model}"


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
    (result,) = record_classifiers(
        images, [(out, model, weights)], params, image_size=image_size, labels=labels, engine=engine
    )
    return result


def record_classifiers(
    images: str | Path,
    classifiers: list[tuple[str | Path, str, str]],
    params: Params,
    *,
    image_size: int | None = None,
    labels: str | Path | None = None,
    engine=None,
) -> list[RunResult]:
    """record_activations for each (store, model, weights) in one pass over the images (``run_pass``)."""
    folder = read_labelled_folder(images, labels) if labels else read_image_folder(images)
    folder = with_wordnet_synsets(folder, load_wordnet)
    stores = [(Path(out), build_network(model, weights, image_size)) for out, model, weights in classifiers]
    return run_pass(folder, stores, params, engine=engine)


def classifier_folder(model: str) -> str:
    """A classifier's folder name, what ``{model}`` in ``--out`` becomes (the Makefile's $(OUT)/<name>/ too): the
    model name with ':' as '-'."""
    return model.replace(":", "-")


def classifiers(models: Sequence[str], weights: Sequence[str], out: str) -> list[tuple[str, str, str]]:
    """(store, model, weights) of each ``--model`` (MODEL or MODEL=WEIGHTS): a model's own =WEIGHTS, else
    ``--weights`` given once for all or once per model in order (none: DEFAULT); the store is ``out`` with
    ``{model}`` as the classifier's folder name, which several models need."""
    if len(weights) not in (0, 1, len(models)):
        raise InputError(
            f"{len(weights)} --weights for {len(models)} --model: give one for all, or one per model in order"
        )
    per_model = len(weights) == len(models) > 1
    if len(weights) == 1 and all("=" in given for given in models):
        raise InputError(f"--weights {weights[0]} applies to no --model: each has its own =WEIGHTS; give one")
    chosen = []
    for index, given in enumerate(models):
        model, equals, own = given.partition("=")
        if not model or (equals and not own):
            raise InputError(f"--model {given!r}: expected MODEL or MODEL=WEIGHTS")
        if own and per_model:
            raise InputError(f"--model {given}: weights given twice (=WEIGHTS and --weights); give one")
        name = own or (weights[index] if per_model else weights[0] if weights else "DEFAULT")
        chosen.append((out.replace(MODEL_FIELD, classifier_folder(model)), model, name))
    if len(models) > 1 and MODEL_FIELD not in out:
        raise InputError(
            f"--out {out}: with several --model, put {MODEL_FIELD} in it where each classifier's name goes, "
            f"e.g. 'out/{MODEL_FIELD}/acts.zarr'"
        )
    stores = [store for store, _, _ in chosen]
    twice = next((store for store in stores if stores.count(store) > 1), None)
    if twice is not None:
        raise InputError(f"two --model write to the same store {twice}; give each model once")
    return chosen


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
