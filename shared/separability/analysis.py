"""Which layers tell concepts apart, and which channels prefer which concept.

Two kinds of numbers, computed one layer at a time (``layer.py``):

* The original study's metrics (1-4), exact over every selected image, from
  per-synset sufficient statistics gathered in one chunked pass over the layer
  (count, sum and sum of squares per channel, and a running top-m of rows per
  channel).
* Scale-free measures (Fisher ratio, cosine silhouette, linear probe) with
  permutation p-values, effects and family-wise p-values, and per-channel
  selectivity tests, all on prompt units within blocks (templates)
  (``design.py``, ``measures.py``, ``selectivity.py``), computed on the layer's
  *analysis sample*: every selected row when there are at most ``sample`` of
  them, else whole units drawn at random within each synset. Memory and cost
  of this part are bounded by ``sample`` and ``dims``, not by the number of images.

The stage's shape: ``read(store, params)`` -> ``compute(inputs, params)`` -> ``Result`` ->
``outputs.write_outputs(result, params, store, out)``; ``analyse`` is the first two.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from synthprobe.common.files import InputError
from synthprobe.common.memory import keep_freed_memory
from synthprobe.common.units import Units, assign_units
from synthprobe.formats.image_checks import checked_rows
from synthprobe.separability.design import Blocks, Design, assign_blocks
from synthprobe.separability.layer import layer_outputs
from synthprobe.separability.scan import select_layers, select_rows, unit_sample
from synthprobe.separability.tables import effect_columns, selective_channels, top_synsets_table
from synthprobe.separability.variance import VarianceModel

log = logging.getLogger("synthprobe")


@dataclass(frozen=True)
class Params:
    groups: tuple[str, ...] = ("concept",)
    layers: tuple[str, ...] = ("*",)
    pool: str = "mean"
    unit: str | None = None  # None: prompt units (a row without a prompt text is its own unit)
    block: str | None = None  # None: template blocks where some template is shared by two synsets, else none
    top_layers: int = 6
    top_synsets: int = 5
    top_neurons: int = 10
    top_images: int = 5
    permutations: int = 1000
    sample: int = 1000
    dims: int = 64
    folds: int = 5
    alpha: float = 0.05
    fdr: str = "bh"
    seed: int = 0
    jobs: int = 0  # worker processes over the layers; 0: one per core where there are at least PARALLEL_LAYERS
    checks: str | None = None  # an image-check checks.jsonl: its flags are counted, ``drop`` ones left out
    drop: tuple[str, ...] = ()


@dataclass(frozen=True)
class Inputs:
    """What an analysis reads before its first layer: the rows, their units and blocks, the layers, the sample."""

    store: object  # an ActivationStore
    store_rows: np.ndarray  # (rows,) row numbers in the store
    synsets: np.ndarray  # (K,) synset names; codes index them
    codes: np.ndarray  # (rows,) synset index of each row
    row_ids: np.ndarray
    paths: np.ndarray
    units: Units
    blocks: Blocks
    layers: list[str]
    sample_positions: np.ndarray  # positions (among rows) of the analysis sample
    design: Design  # of the analysis sample
    variance: VarianceModel  # the sample's design for the variance decomposition
    notes: list[str]
    checks: dict | None

    @property
    def counts(self) -> np.ndarray:
        return np.bincount(self.codes, minlength=len(self.synsets))


@dataclass
class Result:
    layers: pd.DataFrame
    synset_max: pd.DataFrame
    top_synsets: pd.DataFrame
    top_neurons: pd.DataFrame
    top_images: pd.DataFrame
    selective: pd.DataFrame
    synset_counts: dict[str, int]
    units: dict  # unit kind and number of units
    blocks: dict  # block kind, number of blocks, and where templates and synsets cannot be told apart
    n_sample: int
    n_tests: int  # (layer, synset, channel) tests in the selectivity family
    notes: list[str]
    checks: dict | None = None  # image-check counts per synset and group, when the analysis read a checks file


# numpy's and scipy's BLAS pools, two threads each, thrash on two cores (twice the CPU for the same wall time); the
# products here are small enough that one thread each does not lose (docs/methods.md, README performance)
@threadpool_limits.wrap(limits=1)
def analyse(store, params: Params, progress=lambda items, **_: items) -> Result:
    """Run every measure over the chosen layers of ``store`` (an ActivationStore)."""
    keep_freed_memory()  # the relabellings' temporaries, reused instead of mapped anew every batch
    return compute(read(store, params), params, progress)


def read(store, params: Params) -> Inputs:
    """The rows, units, blocks, layers and analysis sample of ``store`` that ``params`` choose."""
    if not params.groups:
        raise InputError("--group is empty; give one group or a comma list, e.g. concept")
    if params.pool not in store.pools:
        raise InputError(f"--pool {params.pool} is not in the store; it has: {', '.join(store.pools)}")
    rows = store.rows()
    keep, _, checks = checked_rows(rows, params.checks, params.drop)
    chosen = select_rows(rows[keep], params.groups)
    synsets, codes = np.unique(chosen["synset"].to_numpy(), return_inverse=True)
    units = assign_units(chosen, params.unit)
    blocks = assign_blocks(chosen, params.block)
    sample_positions = unit_sample(codes, units.codes, params.sample, params.seed, blocks.codes)
    design = Design.of(
        codes[sample_positions], units.codes[sample_positions], len(synsets), blocks.codes[sample_positions]
    )
    counts = np.bincount(codes, minlength=len(synsets))
    notes = [f"synset {s} has one image: its standard deviations are undefined (NaN)" for s in synsets[counts == 1]]
    notes += [blocks.note] if blocks.note else []
    few_units = synsets[design.units_per_synset() < 2]
    if len(few_units):
        within = "within templates" if blocks.kind == "template" else "over all units"
        note = (
            f"fewer than two {units.kind} units in the sample for {', '.join(few_units)}: the linear probe is "
            f"undefined (NaN) and permutations run {within}"
        )
        log.warning(note)
        notes.append(note)
    return Inputs(
        store=store,
        store_rows=chosen.index.to_numpy(),
        synsets=synsets,
        codes=codes,
        row_ids=chosen["id"].to_numpy(),
        paths=chosen["path"].to_numpy(),
        units=units,
        blocks=blocks,
        layers=select_layers(store.hook_points, params.layers, store.attrs.get("hook_aliases")),
        sample_positions=sample_positions,
        design=design,
        variance=VarianceModel.of(design.codes, template_codes(chosen, sample_positions), design.units),
        notes=notes,
        checks=checks,
    )


def template_codes(chosen: pd.DataFrame, positions: np.ndarray) -> np.ndarray | None:
    """Template codes of the sample rows; None unless every one has a template (ImageFolder rows have "")."""
    templates = chosen["template"].to_numpy()[positions]
    if (templates == "").any() or pd.isna(templates).any():
        return None
    return np.unique(templates, return_inverse=True)[1]


def compute(inputs: Inputs, params: Params, progress=lambda items, **_: items) -> Result:
    """Every layer's measures, then what needs all layers: ranks, family-wise p-values, selective channels."""
    outputs = layer_outputs(inputs, params, progress)
    table = pd.DataFrame([out.row for out in outputs])
    table.insert(7, "distance_rank", table["avg_centroid_distance"].rank(ascending=False, method="first").astype(int))
    table = effect_columns(table, [out.null for out in outputs])
    selective, per_layer, n_tests = selective_channels(
        inputs.layers, [out.tested for out in outputs], inputs.synsets, inputs.design, params.alpha, params.fdr
    )
    table["n_selective_channels"] = per_layer
    synset_max = pd.DataFrame([r for out in outputs for r in out.max_rows])
    return Result(
        layers=table,
        synset_max=synset_max,
        top_synsets=top_synsets_table(table, synset_max, params.top_layers, params.top_synsets),
        top_neurons=pd.DataFrame([r for out in outputs for r in out.neuron_rows]),
        top_images=pd.DataFrame([r for out in outputs for r in out.image_rows]),
        selective=selective,
        synset_counts={str(s): int(n) for s, n in zip(inputs.synsets, inputs.counts)},
        units=inputs.units.summary(),
        blocks=inputs.blocks.summary(),
        n_sample=len(inputs.design.codes),
        n_tests=n_tests,
        notes=inputs.notes,
        checks=inputs.checks,
    )
