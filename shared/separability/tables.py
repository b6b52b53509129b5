"""separability's tables that need every layer: family-wise p-values, the selective channels over one family,
the top layers and their top synsets."""

from __future__ import annotations

import numpy as np
import pandas as pd

from synthprobe.common.files import InputError
from synthprobe.separability.design import Design
from synthprobe.separability.effects import max_t_p
from synthprobe.separability.measures import MEASURES
from synthprobe.separability.selectivity import FDR_METHODS, q_values

ESTIMATE_COLUMNS = {"fisher": "fisher", "silhouette": "silhouette", "probe": "probe_accuracy"}


def effect_columns(layers: pd.DataFrame, nulls: list[dict[str, np.ndarray]]) -> pd.DataFrame:
    """``layers`` with ``<measure>_p_fwer``: Westfall-Young max-T over the layers, from their nulls under the
    relabellings every layer shares."""
    out = layers.copy()
    for m in MEASURES:
        lengths = {len(null[m]) for null in nulls}
        stacked = np.stack([null[m] for null in nulls]) if len(lengths) == 1 else np.zeros((len(nulls), 0))
        adjusted = max_t_p(out[ESTIMATE_COLUMNS[m]].to_numpy(), stacked, out[f"{m}_p"].to_numpy())
        out.insert(out.columns.get_loc(f"{m}_p") + 1, f"{m}_p_fwer", adjusted)
    return out


def selectivity_candidates(selectivity: dict[str, np.ndarray], alpha: float) -> dict[str, np.ndarray]:
    """What the family-wide correction needs of one layer: every p-value (float32 bounds the memory of a
    many-synset run), and the other figures only where p < alpha, since a q-value is never below its p-value."""
    p = selectivity["p_value"]
    synset_index, channel_index = np.nonzero(p < alpha)
    return {
        "p_value": p.astype(np.float32),
        "synset": synset_index,
        "channel": channel_index,
        **{key: selectivity[key][synset_index, channel_index] for key in ("auroc", "d_prime")},
        "candidate_p": p[synset_index, channel_index],
    }


def selective_channels(
    layers: list[str], tested: list[dict], synsets: np.ndarray, design: Design, alpha: float, fdr: str
) -> tuple[pd.DataFrame, list[int], int]:
    """The (layer, synset, channel) tests with q-value below ``alpha``, corrected as one family over every
    layer, synset and channel; per layer the number of channels selective for some synset; the family's size."""
    if fdr not in FDR_METHODS:
        raise InputError(f"--fdr {fdr!r} is not one of {', '.join(FDR_METHODS)}")
    flat = np.concatenate([t["p_value"].ravel() for t in tested]).astype(np.float64) if tested else np.zeros(0)
    q_flat = q_values(flat, fdr)
    parts, per_layer, start = [], [], 0
    n_synset_units = design.units_per_synset()
    for hook, t in zip(layers, tested):
        q = q_flat[start : start + t["p_value"].size].reshape(t["p_value"].shape)[t["synset"], t["channel"]]
        start += t["p_value"].size
        keep = q < alpha
        synset_index, channel_index = t["synset"][keep], t["channel"][keep]
        per_layer.append(len(np.unique(channel_index)))
        parts.append(
            pd.DataFrame(
                {
                    "layer": hook,
                    "channel": channel_index,
                    "synset": synsets[synset_index],
                    "auroc": t["auroc"][keep],
                    "d_prime": t["d_prime"][keep],
                    "p_value": t["candidate_p"][keep],
                    "q_value": q[keep],
                    "n_units_synset": n_synset_units[synset_index],
                    "n_units_rest": design.n_units - n_synset_units[synset_index],
                }
            )
        )
    selective = pd.concat(parts, ignore_index=True).sort_values(
        ["layer", "channel", "synset"], kind="stable", key=lambda c: c.map(layers.index) if c.name == "layer" else c
    )
    return selective.reset_index(drop=True), per_layer, int(np.count_nonzero(~np.isnan(flat)))


def top_layers(layers: pd.DataFrame, n: int) -> list[str]:
    """Metric 2's top-K: layers by average centroid distance, largest first."""
    return layers.sort_values("distance_rank")["layer"].head(n).tolist()


def top_synsets_table(layers: pd.DataFrame, synset_max: pd.DataFrame, n_layers: int, n_synsets: int) -> pd.DataFrame:
    """Metric 3: for each top layer, its synsets with the highest max activation."""
    parts = []
    for layer_rank, layer in enumerate(top_layers(layers, n_layers), 1):
        rows = (
            synset_max[synset_max["layer"] == layer]
            .sort_values(["max_activation", "synset"], ascending=[False, True])
            .head(n_synsets)
        )
        parts.append(rows.assign(layer_rank=layer_rank, rank=range(1, len(rows) + 1)))
    columns = ["layer_rank", "layer", "rank", "synset", "max_activation", "n_images"]
    return pd.concat(parts, ignore_index=True)[columns]
