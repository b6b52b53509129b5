"""The two sources of a transfer analysis: which stores may be compared, which rows, synsets, units and folds.

Generated images are grouped in prompt units; a photo without a prompt text is its own unit (``common/units.py``).
Only the synsets both sources hold are analysed; the others are named in the summary.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from synthprobe.common.files import InputError
from synthprobe.common.globs import select_by_globs
from synthprobe.common.units import assign_units

# What makes two stores the same classifier seen the same way: refused if any differs.
SAME_CLASSIFIER = ("model", "weights", "preprocessing")


def check_same_classifier(generated, photos) -> None:
    """One line naming the first attribute that differs between the two stores."""
    for key in SAME_CLASSIFIER:
        mine, theirs = generated.attrs.get(key), photos.attrs.get(key)
        if mine != theirs:
            raise InputError(
                f"{photos.path} and {generated.path} differ in {key} ({theirs!r} vs {mine!r}); run cnn-hooks on "
                "the photos with the generated store's --model and --weights"
            )


def shared_layers(generated, photos, patterns: tuple[str, ...]) -> list[str]:
    """Hook points of both stores that match a glob, in the generated store's depth order."""
    in_photos = set(photos.hook_points)
    common = [hook for hook in generated.hook_points if hook in in_photos]
    if not common:
        raise InputError(f"{generated.path} and {photos.path} have no hook point in common")
    return select_by_globs(common, patterns, more=f"; both stores have: {', '.join(common[:8])} ...")


@dataclass
class Source:
    """One source's selected rows over the shared synsets."""

    name: str  # "generated" or "photos"
    rows: np.ndarray  # (n,) store row numbers, ascending
    codes: np.ndarray  # (n,) index into the shared synsets
    units: np.ndarray  # (n,) unit index 0 .. U-1
    unit_codes: np.ndarray  # (U,) synset index of each unit
    unit_kind: str
    synsets: np.ndarray  # the shared synsets, sorted: codes index them

    @property
    def n_synsets(self) -> int:
        return len(self.synsets)

    @property
    def n_units(self) -> int:
        return len(self.unit_codes)

    def units_per_synset(self) -> np.ndarray:
        return np.bincount(self.unit_codes, minlength=self.n_synsets)

    def counts(self) -> np.ndarray:
        return np.bincount(self.codes, minlength=self.n_synsets)


def usable_rows(rows: pd.DataFrame, groups: tuple[str, ...], where: str) -> pd.DataFrame:
    """The ok rows of ``groups``; index = row number in the store."""
    chosen = rows[rows["group"].isin(groups) & (rows["status"] == "ok")]
    if chosen.empty:
        raise InputError(f"{where} has no ok rows of group {','.join(groups)}")
    return chosen


def pair_sources(
    generated: pd.DataFrame, photos: pd.DataFrame, groups: tuple[str, ...], unit: str | None, where=("", "")
) -> tuple[Source, Source, dict]:
    """Both row tables restricted to their shared synsets, and which synsets each has (for synsets.csv).

    ``where`` names the two stores in messages."""
    tables = {
        "generated": usable_rows(generated, groups, where[0]),
        "photos": usable_rows(photos, groups, where[1]),
    }
    have = {name: set(table["synset"]) for name, table in tables.items()}
    shared = np.array(sorted(have["generated"] & have["photos"]))
    if len(shared) < 2:
        raise InputError(
            f"{where[0]} and {where[1]} share {len(shared)} synset(s) ({', '.join(shared) or 'none'}); "
            "transfer needs at least two: name the photo folders by synset (or wnid), or give cnn-hooks --labels"
        )
    sources = []
    for name, table in tables.items():
        table = table[table["synset"].isin(shared)]
        codes = np.searchsorted(shared, table["synset"].to_numpy())
        units = assign_units(table, unit)
        unit_codes = np.zeros(units.n_units, dtype=np.int64)
        unit_codes[units.codes] = codes
        rows = table.index.to_numpy()
        sources.append(Source(name, rows, codes, units.codes, unit_codes, units.kind, shared))
    return sources[0], sources[1], {"shared": list(shared), **{k: sorted(v) for k, v in have.items()}}


def grouped_folds(codes: np.ndarray, units: np.ndarray, n_folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train rows, test rows) per fold: each class's units shuffled and dealt to the folds in turn, so every unit
    stays whole and every fold holds each class's units in proportion. None when a class has fewer than two units.
    """
    unit_ids, first = np.unique(units, return_index=True)
    unit_classes = codes[first]
    per_class = np.bincount(unit_classes)
    if len(per_class) < 2 or per_class[per_class > 0].min() < 2:
        return []
    folds = min(n_folds, int(per_class[per_class > 0].min()))
    rng = np.random.default_rng(seed)
    unit_fold = np.empty(len(unit_ids), dtype=np.int64)
    for c in np.flatnonzero(per_class):
        members = rng.permutation(np.flatnonzero(unit_classes == c))
        unit_fold[members] = (np.arange(len(members)) + rng.integers(folds)) % folds
    row_fold = unit_fold[np.searchsorted(unit_ids, units)]
    return [(np.flatnonzero(row_fold != f), np.flatnonzero(row_fold == f)) for f in range(folds)]
