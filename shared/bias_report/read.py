"""bias-report's settings and inputs: ``Params`` and ``read_inputs``, which reads the store, the class files,
the optional prompt and check files and resolves each class's target set (nothing is computed here)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from synthprobe.bias_report.targets import TargetSet, class_labels, resolve_targets
from synthprobe.common.files import InputError
from synthprobe.common.wordnet import load_wordnet
from synthprobe.formats.activation_store import ActivationStore
from synthprobe.formats.bias_classes import DEFAULT_BIAS_CLASSES, BiasClass, known_bias_classes, load_bias_class
from synthprobe.formats.image_checks import checked_rows
from synthprobe.formats.prompts import read_prompts


@dataclass(frozen=True)
class Params:
    """bias-report's settings; the tool's defaults are these field defaults."""

    classes: tuple[str, ...] = DEFAULT_BIAS_CLASSES
    mapping: str = "hierarchy"
    unit: str | None = None  # None: prompt units (a row without a prompt text is its own unit)
    level: float = 0.95
    top: int = 5
    drop: tuple[str, ...] = ()  # image-check verdicts whose images are left out (needs a checks file)
    class_dir: Path | None = None  # None: the bundled data/bias_classes
    wordnet_dir: str | None = None
    allow_incomplete: bool = False


@dataclass(frozen=True)
class Inputs:
    """Everything bias-report reads, as read: ``analyse`` leaves it unchanged."""

    store_path: str
    store: ActivationStore
    rows: pd.DataFrame  # the store's row table
    logits: np.ndarray  # (rows, classifier classes)
    definitions: dict[str, BiasClass]  # in --classes order
    targets: dict[str, TargetSet]
    labels: list[str]  # a name for every classifier class
    texts: dict[str, str]  # record id -> prompt text, from --prompts (empty without)
    not_dropped: pd.Series  # rows the image checks keep (all without checks)
    flagged: pd.Series  # rows any judge flagged
    checked: dict | None  # the checks' counts for summary.json, None without checks
    prompts_path: str | None
    checks_path: str | None


def load_classes(names: list[str], class_dir: Path | None) -> dict[str, BiasClass]:
    if not names:
        raise InputError("--classes is empty; known classes: " + ", ".join(known_bias_classes(class_dir)))
    definitions = {name: load_bias_class(name, class_dir) for name in dict.fromkeys(names)}
    owner: dict[str, str] = {}
    for name, definition in definitions.items():
        if definition.synset in owner:
            raise InputError(
                f"bias classes {owner[definition.synset]!r} and {name!r} share the synset "
                f"{definition.synset}; their images cannot be told apart"
            )
        owner[definition.synset] = name
    return definitions


def read_inputs(
    store_path: str | Path, params: Params, prompts: str | Path | None = None, checks: str | Path | None = None
) -> Inputs:
    """Read what an audit needs: ``prompts`` (a prompt file: texts for rows without one) and
    ``checks`` (image-check's checks.jsonl) are optional."""
    definitions = load_classes(list(params.classes), params.class_dir)
    store = ActivationStore(store_path, params.allow_incomplete)
    logits = store.logits()
    model_classes = store.attrs.get("classes")
    wn = load_wordnet(params.wordnet_dir) if params.mapping == "hierarchy" else None
    targets = {
        name: resolve_targets(d, params.mapping, model_classes, logits.shape[1], wn) for name, d in definitions.items()
    }
    rows = store.rows()
    not_dropped, flagged, checked = checked_rows(rows, checks, params.drop)
    return Inputs(
        store_path=str(store_path),
        store=store,
        rows=rows,
        logits=logits,
        definitions=definitions,
        targets=targets,
        labels=class_labels(store.attrs, logits.shape[1]),
        texts=prompt_texts(prompts, rows, store_path) if prompts else {},
        not_dropped=not_dropped,
        flagged=flagged,
        checked=checked,
        prompts_path=str(prompts) if prompts else None,
        checks_path=str(checks) if checks else None,
    )


def prompt_texts(prompts: str | Path, rows, store_path) -> dict[str, str]:
    """Record id -> prompt text of a prompt file, which must be the one the store's images were made from."""
    texts = {r.id: r.prompt for r in read_prompts(prompts)}
    if texts and not set(rows["id"]) & texts.keys():
        raise InputError(
            f"{prompts}: none of its {len(texts)} record ids is an image of {store_path}; "
            "give the prompt file the images were made from"
        )
    return texts
