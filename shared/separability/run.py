"""separability end to end, as the command runs it: open the store, analyse, write the folder, one log line."""

from __future__ import annotations

import logging

from synthprobe.common.files import check_writable_dir
from synthprobe.common.progress import progress
from synthprobe.formats.activation_store import ActivationStore
from synthprobe.separability.analysis import Params, analyse
from synthprobe.separability.outputs import write_outputs

log = logging.getLogger("synthprobe")


def run_separability(store, out_dir, params: Params, allow_incomplete: bool = False, silent: bool = False) -> dict:
    """Analyse the activation store at ``store`` into ``out_dir``; returns summary.json's content."""
    activations = ActivationStore(store, allow_incomplete)
    check_writable_dir(out_dir)
    result = analyse(activations, params, progress=lambda items, **kw: progress(items, silent=silent, **kw))
    summary = write_outputs(result, params, activations, out_dir)
    log.info(
        "%d layers, %d images in %d %s units of %d synsets (blocks: %s); top layers by centroid distance: %s; wrote %s",
        len(summary["layers"]),
        summary["n_images"],
        summary["n_units"],
        summary["unit"],
        summary["n_synsets"],
        summary["block"],
        ", ".join(summary["top_layers"]),
        out_dir,
    )
    return summary
