"""The design of separability's analysis sample: synsets, units, blocks, folds and the relabellings that respect them
(docs/methods.md).

``wn-prompts concepts`` crosses templates with synsets: every synset gets the same templates. A template ("studio,
plain background" vs "in its usual surroundings") moves a layer as much as a concept does, so the tests *block* on
it: units of one template form a block, every relabelling permutes synset labels only among the units of one block
(and one probe fold), and the probe's folds keep each block's units together. Units are exchangeable within a block
when synsets do not differ, which makes every test below exact under that null, whatever the template effect.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from synthprobe.common.files import InputError

log = logging.getLogger("synthprobe")

BLOCKS = ("template", "none")


@dataclass(frozen=True)
class Blocks:
    """Which block each row belongs to, and what a reader must know about the design."""

    kind: str  # "template" or "none"
    codes: np.ndarray  # (rows,) block index of every row
    names: list[str]  # block names by index ("" for the one block of --block none)
    note: str | None  # where templates and synsets cannot be told apart

    def summary(self) -> dict:
        return {"block": self.kind, "n_blocks": len(self.names), "design_note": self.note}


def assign_blocks(rows: pd.DataFrame, block: str | None) -> Blocks:
    """Block codes for ``rows`` (a row table with ``synset`` and, in new stores, ``template``).

    ``block`` None means template blocks where some template is shared by two or more synsets, else one block.
    A template held by one synset only confounds template and concept: its units cannot move, and a note says so.
    """
    if block not in (None, *BLOCKS):
        raise InputError(f"--block {block!r} is not one of {', '.join(BLOCKS)}")
    templates = rows["template"].astype(str).to_numpy() if "template" in rows else np.full(len(rows), "")
    synsets_per_template = pd.Series(rows["synset"].to_numpy()).groupby(templates).nunique()
    synsets_per_template = synsets_per_template[synsets_per_template.index != ""]
    shared = synsets_per_template[synsets_per_template >= 2]
    if block == "template" and synsets_per_template.empty:
        raise InputError("--block template: the rows have no templates (ImageFolder rows or an older store)")
    kind = block or ("template" if len(shared) else "none")
    note = confounding_note(synsets_per_template, kind)
    if note:
        log.warning(note)
    if kind == "none":
        return Blocks(kind, np.zeros(len(rows), dtype=np.int64), [""], note)
    names, codes = np.unique(templates, return_inverse=True)
    return Blocks(kind, codes.ravel(), [str(n) for n in names], note)


def confounding_note(synsets_per_template: pd.Series, kind: str) -> str | None:
    """One line where some template belongs to one synset only; None where every template is shared."""
    alone = synsets_per_template.index[synsets_per_template < 2].tolist()
    if not alone:
        return None
    listed = ", ".join(alone[:5]) + (f" and {len(alone) - 5} more" if len(alone) > 5 else "")
    if len(alone) == len(synsets_per_template):
        return (
            "every template belongs to one synset only: concept and template cannot be told apart, so a difference "
            "between synsets may be a difference between templates"
            + ("" if kind == "none" else "; blocked on template, nothing can move and no p-value is given")
        )
    return (
        f"{len(alone)} of {len(synsets_per_template)} templates belong to one synset only ({listed}): there concept "
        "and template cannot be told apart"
        + (
            "; their units keep their labels in every permutation"
            if kind == "template"
            else "; the tests do not block on template (--block none)"
        )
    )


@dataclass(frozen=True)
class Design:
    """Who is who in the analysis sample."""

    codes: np.ndarray  # (n,) synset index of each row
    units: np.ndarray  # (n,) unit index of each row, 0 .. U-1
    unit_codes: np.ndarray  # (U,) synset index of each unit
    n_synsets: int
    unit_blocks: np.ndarray  # (U,) block index of each unit, 0 .. B-1
    folds: dict = field(default_factory=dict, compare=False, repr=False)  # probe_folds by (n_folds, seed)

    @classmethod
    def of(
        cls, codes: np.ndarray, units: np.ndarray, n_synsets: int | None = None, blocks: np.ndarray | None = None
    ) -> Design:
        """Renumber ``units`` 0 .. U-1 and ``blocks`` (per row; None: one block) 0 .. B-1, and check that each unit
        lies in one synset and one block."""
        codes = np.asarray(codes)
        _, units = np.unique(units, return_inverse=True)
        units = units.ravel()
        _, blocks = np.unique(np.zeros(len(codes)) if blocks is None else blocks, return_inverse=True)
        unit_codes = np.zeros(units.max() + 1, dtype=np.int64)
        unit_codes[units] = codes
        unit_blocks = np.zeros(units.max() + 1, dtype=np.int64)
        unit_blocks[units] = blocks.ravel()
        if (unit_codes[units] != codes).any():
            raise ValueError("a unit spans two synsets")
        if (unit_blocks[units] != blocks.ravel()).any():
            raise ValueError("a unit spans two blocks")
        k = int(codes.max()) + 1 if n_synsets is None else n_synsets
        return cls(codes, units, unit_codes, k, unit_blocks)

    @property
    def n_units(self) -> int:
        return len(self.unit_codes)

    @property
    def n_blocks(self) -> int:
        return int(self.unit_blocks.max()) + 1

    @property
    def blocks(self) -> np.ndarray:
        """(n,) block index of each row."""
        return self.unit_blocks[self.units]

    def units_per_synset(self) -> np.ndarray:
        return np.bincount(self.unit_codes, minlength=self.n_synsets)

    def unit_sums(self, values: np.ndarray) -> np.ndarray:
        """(U, ...) sums of ``values`` (n, ...) over each unit's rows."""
        return group_sums(values, self.units)

    def unit_means(self, values: np.ndarray) -> np.ndarray:
        sizes = np.bincount(self.units, minlength=self.n_units).astype(np.float64)
        return self.unit_sums(values) / sizes.reshape(-1, *[1] * (values.ndim - 1))

    def within_blocks(self, values: np.ndarray) -> np.ndarray:
        """``values`` (n, C) less their block's mean row: a template's offset is not a concept's. It uses no synset
        label and commutes with every relabelling within blocks, so the tests stay exact."""
        return values - block_means(values, self.blocks)


def block_means(values: np.ndarray, blocks: np.ndarray) -> np.ndarray:
    """(len(values), C) the mean of the rows of each row's block."""
    return (group_sums(values, blocks) / np.bincount(blocks)[:, None])[blocks]


def group_sums(values: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """(G, C) float64 sums of ``values`` (n, C) over the rows of each group 0 .. G-1, added in row order as numpy's
    mean of a group's rows adds them (ties between equal means stay ties): a sparse indicator product, many times
    faster than ``np.add.at``."""
    from scipy.sparse import csr_matrix

    rows = np.arange(len(groups))
    indicator = csr_matrix((np.ones(len(groups)), (groups, rows)), shape=(int(groups.max()) + 1, len(groups)))
    return indicator @ np.asarray(values, dtype=np.float64)


# ---------------------------------------------------------------- folds and relabellings


def probe_folds(design: Design, n_folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]] | None:
    """The probe's (train rows, test rows) folds, stratified by synset: whole blocks per fold where every synset is
    in two or more blocks and every training side still holds every synset (the probe is then tested on templates
    it was not trained on), at most as many folds as the fewest blocks of a synset; else whole units per fold.
    None when a synset has fewer than two units. Every layer of a run has the same design: computed once."""
    key = (n_folds, seed)
    if key not in design.folds:
        design.folds[key] = design_folds(design, n_folds, seed)
    return design.folds[key]


def design_folds(design: Design, n_folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]] | None:
    from sklearn.model_selection import StratifiedGroupKFold

    smallest = int(design.units_per_synset().min())
    if smallest < 2:
        return None
    rows = np.zeros((len(design.codes), 1))
    blocks_per_synset = np.unique(np.stack([design.unit_codes, design.unit_blocks]), axis=1)[0]
    fewest_blocks = int(np.bincount(blocks_per_synset, minlength=design.n_synsets).min())
    if fewest_blocks >= 2:
        splitter = StratifiedGroupKFold(min(n_folds, fewest_blocks), shuffle=True, random_state=seed)
        folds = list(splitter.split(rows, design.codes, groups=design.blocks))
        if all(len(np.unique(design.codes[train])) == design.n_synsets for train, _ in folds):
            return folds
    splitter = StratifiedGroupKFold(min(n_folds, smallest), shuffle=True, random_state=seed)
    return list(splitter.split(rows, design.codes, groups=design.units))


def permutation_strata(design: Design, folds: list[tuple[np.ndarray, np.ndarray]] | None) -> np.ndarray:
    """(U,) stratum of each unit: its block and the fold that tests it. Relabelling within strata keeps every
    block's and every fold's synset counts, so the folds stay valid for each relabelling."""
    fold_of_unit = np.zeros(design.n_units, dtype=np.int64)
    for f, (_, test) in enumerate(folds or []):
        fold_of_unit[design.units[test]] = f
    _, strata = np.unique(np.stack([design.unit_blocks, fold_of_unit]), axis=1, return_inverse=True)
    return strata.ravel()


def can_move(unit_labels: np.ndarray, strata: np.ndarray) -> bool:
    """Whether some stratum holds two synsets, so that a relabelling can differ from the observed labels."""
    pairs = np.unique(np.stack([strata, unit_labels]), axis=1)
    return len(np.unique(pairs[0])) < pairs.shape[1]


def block_permutations(unit_labels: np.ndarray, blocks: np.ndarray, count: int, rng) -> np.ndarray:
    """(count, U) relabellings of the units: each permutes the labels among the units of one block."""
    order = np.argsort(blocks, kind="stable")
    shuffled = np.argsort(blocks[None, :] + rng.random((count, len(blocks))), axis=1)  # random order inside blocks
    labels = np.empty((count, len(blocks)), dtype=unit_labels.dtype)
    labels[:, order] = unit_labels[shuffled]
    return labels
