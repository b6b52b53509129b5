"""What the transfer test modules share: simulated generated/photo layers and stores built from them."""

from __future__ import annotations

import numpy as np
import pandas as pd

from synthprobe.formats.activation_store import StoreWriter

from . import STORE_ATTRS

SYNSETS = [f"s{k}.n.01" for k in range(6)]


def generated_rows(n_synsets: int, prompts: int, images: int, templates: int = 2) -> pd.DataFrame:
    """Concept prompts crossing synsets with templates; several seeds (images) per prompt text."""
    records = []
    for k in range(n_synsets):
        for p in range(prompts):
            template = f"template {p % templates}"
            for i in range(images):
                records.append(
                    {
                        "id": f"g{k}-{p}-{i}",
                        "synset": f"s{k}.n.01",
                        "prompt": f"a photo of s{k}, {template}, variant {p}",
                        "template": template,
                    }
                )
    return finish_rows(records, "generated")


def photo_rows(n_synsets: int, per_synset: int) -> pd.DataFrame:
    """ImageFolder photos: no prompt text, so each is its own unit."""
    records = [
        {"id": f"p{k}-{i}", "synset": f"s{k}.n.01", "prompt": "", "template": ""}
        for k in range(n_synsets)
        for i in range(per_synset)
    ]
    return finish_rows(records, "photos")


def finish_rows(records: list[dict], folder: str) -> pd.DataFrame:
    rows = pd.DataFrame(records)
    rows["group"], rows["status"], rows["sha256"] = "concept", "ok", ""
    rows["target"] = rows["synset"]
    rows["path"] = [f"{folder}/{i}.png" for i in rows["id"]]
    return rows


def simulated_layers(
    rng,
    scenario: str,
    n_synsets: int = 6,
    prompts: int = 4,
    images: int = 3,
    photos: int = 12,
    channels: int = 16,
    effect: float = 1.5,
    offset: float = 0.0,
):
    """Generated and photo values of one layer and their row tables.

    ``scenario``: "shared" (both sources place the synsets at the same centres), "generated-only" (the photos
    carry no synset information) or "none" (neither does). Generated images share a random effect per prompt.
    ``offset`` adds one constant vector to every photo row.
    """
    rows_g, rows_p = generated_rows(n_synsets, prompts, images), photo_rows(n_synsets, photos)
    codes_g = np.searchsorted(sorted(set(rows_g["synset"])), rows_g["synset"])
    codes_p = np.searchsorted(sorted(set(rows_p["synset"])), rows_p["synset"])
    centres = rng.normal(size=(n_synsets, channels)) * (0.0 if scenario == "none" else effect)
    prompt_effect = np.repeat(rng.normal(size=(n_synsets * prompts, channels)) * 0.5, images, axis=0)
    x_g = centres[codes_g] + prompt_effect + rng.normal(size=(len(rows_g), channels))
    photo_centres = centres if scenario == "shared" else np.zeros_like(centres)
    x_p = photo_centres[codes_p] + rng.normal(size=(len(rows_p), channels)) + offset * rng.normal(size=channels)
    return x_g, rows_g, x_p, rows_p


def write_store(path, rows: pd.DataFrame, layers: dict[str, np.ndarray], **attrs) -> None:
    writer = StoreWriter(
        path,
        attrs={**STORE_ATTRS, **attrs},
        hook_channels={name: values.shape[1] for name, values in layers.items()},
        pools=("mean",),
        min_chunk_bytes=64,
    )
    writer.append(rows, {name: {"mean": values.astype("float32")} for name, values in layers.items()})
    writer.finish()
