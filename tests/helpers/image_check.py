"""What the image-check test modules share: a bias image folder as sd-generate writes it, and the checks' rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from synthprobe.formats import image_checks as K
from synthprobe.image_check import checks as C

from . import smooth_image, write_manifest

BIAS_CLASSES = {"bee": "bee.n.01", "frog": "frog.n.01"}
GROUPS = ("object-only", "context-only", "mixed")


def write_bias_folder(root: Path, per_group: int = 2, seed: int = 0, size: int = 48) -> Path:
    """A manifest folder as sd-generate writes it for 'wn-prompts bias' records (two classes, three groups)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, synset in BIAS_CLASSES.items():
        for group in GROUPS:
            for t in range(per_group):
                row_id = f"bias-{name}-{group}-{t:02d}-s00"
                Image.fromarray(smooth_image(rng, size)).save(root / f"{row_id}.png")
                rows.append(
                    {
                        "schema": 1,
                        "id": row_id,
                        "synset": synset,
                        "lemma": name,
                        "group": group,
                        "target": synset,
                        "prompt": f"{name} {group} {t}",
                        "seed": t,
                        "template": f"{name}/{group}/{t:02d}",
                        "path": f"{row_id}.png",
                        "status": "ok",
                    }
                )
    write_manifest(root, rows)
    return root


def read_rows(out: Path) -> list[dict]:
    return K.read_checks(out / K.CHECKS_FILE)


def clip_settings(**changes) -> C.Params:
    return C.Params(silent=True, batch_size=4, **changes)


def page_items(html: Path) -> list[dict]:
    """The sampled images a labelling page embeds (its items JSON)."""
    import json
    import re

    found = re.search(r'<script type="application/json" id="items">(.*?)</script>', html.read_text(), re.S)
    return json.loads(found[1])
