"""cnn-hooks: images to an activation store through forward hooks.

The notebook API: ``record_activations(images, out, Params(...), model=..., weights=...)`` (``run_hooks`` with a
network built elsewhere), ``record_classifiers`` (several classifiers, one pass over the images; ``run_pass``),
``layer_lines`` (``--list-layers``), and the store's reader,
``synthprobe.formats.activation_store.ActivationStore``.

``hook_points`` names and pools the module calls; ``run`` drives the run between the decoding workers
(common.image_dataset) and ``writer`` (the store's write buffer); ``forward`` is the per-batch forward, in this
process or, through ``run_cluster``, on Dask workers. Networks and their preprocessing are common's, since
image-check's classifier judges build them too.
"""

from synthprobe.cnn_hooks.run import Params, RunResult, run_hooks, run_pass
from synthprobe.cnn_hooks.stage import (
    classifiers,
    layer_lines,
    read_class_names,
    record_activations,
    record_classifiers,
)

__all__ = [
    "Params",
    "RunResult",
    "classifiers",
    "layer_lines",
    "read_class_names",
    "record_activations",
    "record_classifiers",
    "run_hooks",
    "run_pass",
]
