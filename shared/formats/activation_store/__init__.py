"""The activation store (docs/formats.md): a Zarr v3 group written by cnn-hooks.

Layout::

    STORE.zarr/                 attrs: provenance, ordered hook points, committed row count
      rows/{id,synset,group,target,path,status,sha256,prompt,template}   (image,) strings: the row table
      logits/logits             (image, class) float32, when the model is a classifier
      hooks/<hook point>/mean   (image, channel), and /max when asked for

Rows are appended in batches; ``attrs["rows_committed"]`` is raised only after
every array of a batch is written, so it is the resume point: arrays longer
than it hold an interrupted batch and are cut back on reopen. Zarr's local
store writes every file through a temp file and a rename, so a kill -9 never
leaves a half-written shard or attribute file behind.

Chunks (the unit of reading) hold whole rows, at least 1 MB, a power of two
rows long. Shards (the unit of writing, one file each) hold ``rows_per_write``
rows where a chunk is shorter than that, so a writer that appends that many
rows at a time writes whole shards and never rewrites one; narrower layers get
one chunk per shard, rewritten a few times while it fills.
"""

from synthprobe.formats.activation_store.layout import (
    FILL_TEXT,
    MIN_CHUNK_BYTES,
    REBUILD_HINT,
    ROW_FIELDS,
    ROWS_PER_WRITE,
    STORE_SCHEMA,
    grouped_aliases,
    rows_per_chunk,
    rows_per_shard,
)
from synthprobe.formats.activation_store.reader import ActivationStore
from synthprobe.formats.activation_store.writer import StoreWriter

__all__ = [
    "FILL_TEXT",
    "MIN_CHUNK_BYTES",
    "REBUILD_HINT",
    "ROW_FIELDS",
    "ROWS_PER_WRITE",
    "STORE_SCHEMA",
    "ActivationStore",
    "StoreWriter",
    "grouped_aliases",
    "rows_per_chunk",
    "rows_per_shard",
]
