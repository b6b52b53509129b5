"""The damage the bad-input tests do: writers of broken files, the checks of a clean failure, and the store whose
copies the analyses' cases damage (concept rows first, then bias rows)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from synthprobe.common.imagenet import imagenet_wnids
from synthprobe.formats.activation_store import StoreWriter

MARKERS = {"summary.json", "images.jsonl", "run.json", "report.html", "out.jsonl"}
BINARY = bytes(range(256)) * 4  # not UTF-8, not JSON, not an image
LATIN1_JSONL = '{"id": "caf\xe9", "prompt": "caf\xe9"}\n'.encode("latin-1")
LONG_ID = "a" * 300


def files_under(root: Path) -> dict[Path, tuple[int, int]]:
    return {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


def looks_complete(path: Path) -> bool:
    if path.name in MARKERS:
        return True
    if path.name == "zarr.json":
        try:
            return json.loads(path.read_text())["attributes"].get("complete") is True
        except (ValueError, KeyError, UnicodeDecodeError):
            return False
    return False


def write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    return path


def edit_json(path: Path, change) -> None:
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))


def set_attr(store: Path, **attrs) -> None:
    edit_json(store / "zarr.json", lambda doc: doc["attributes"].update(attrs))


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def flip_byte(path: Path, offset: int = 40) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def a_file(tmp_path: Path) -> Path:
    return write(tmp_path / "a-file", "not a folder")


SYNSETS = {"bee": "bee.n.01", "frog": "frog.n.01"}
TARGET = {"bee": 309, "frog": 31}


def build_pristine_store(path: Path) -> Path:
    """12 concept rows of three synsets, then 2 seeds x 3 groups of bee and frog; logits favour the target."""
    rows, logits = [], []
    rng = np.random.default_rng(0)
    for i in range(12):
        synset = ("bee.n.01", "frog.n.01", "dog.n.01")[i % 3]
        rows.append({"id": f"concept-{i:02d}", "synset": synset, "group": "concept", "target": synset})
    for name, synset in SYNSETS.items():
        for group in ("object-only", "context-only", "mixed"):
            for s in range(2):
                rows.append(
                    {"id": f"bias-{name}-{group}-00-s{s:02d}", "synset": synset, "group": group, "target": synset}
                )
    table = pd.DataFrame(rows).assign(path=lambda t: t["id"] + ".png", status="ok", sha256="")
    logits = rng.normal(0, 1, (len(table), 1000)).astype(np.float32)
    for i, row in table.iterrows():
        name = next((n for n, s in SYNSETS.items() if s == row["synset"]), None)
        if name and row["group"] != "concept":
            logits[i, TARGET[name]] += 6.0
    layers = {"early": rng.normal(0, 1, (len(table), 8)), "late": rng.normal(0, 1, (len(table), 16))}
    writer = StoreWriter(
        path,
        attrs={"model": "resnet50", "weights": "test", "preprocessing": "test", "classes": list(imagenet_wnids())},
        hook_channels={k: v.shape[1] for k, v in layers.items()},
        pools=("mean",),
        n_classes=1000,
        min_chunk_bytes=256,
        rows_per_write=8,
    )
    for start in range(0, len(table), 8):
        writer.append(
            table.iloc[start : start + 8],
            {k: {"mean": v[start : start + 8].astype(np.float32)} for k, v in layers.items()},
            logits[start : start + 8],
        )
    writer.finish()
    return path


def store_copy(pristine: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(pristine, tmp_path / "acts.zarr"))


# Store damage shared by the two readers: (case, damage(store, tmp_path) -> the path the line must name, array).
def store_damage(array: str, shard: str):
    """``array`` is the array the reader reads first (its rows 0-7 are in ``shard``)."""
    chunk = lambda s: s / array / "c" / shard

    def delete(s, t):
        chunk(s).unlink()
        return [s, array, "rows 0-7 are missing"]

    def truncated(s, t):
        truncate(chunk(s))
        return [s, array, "damaged"]

    def flipped(s, t):
        flip_byte(chunk(s))
        return [s, array, "damaged"]

    def moved(s, t):  # rows 8-15's shard over rows 0-7's: each passes its chunk checksums
        shutil.copyfile(s / array / "c" / "1" / "0", chunk(s))
        return [s, array, "rows 0-7", "not the file written there"]

    def rows_chunk(field):
        def damage(s, t):
            (s / "rows" / field / "c" / "0").unlink()
            return [s, f"rows/{field}", "missing"]

        return damage

    def committed(value):
        def damage(s, t):
            set_attr(s, rows_committed=value)
            return [s, "rows_committed"]

        return damage

    def unfinished(s, t):
        set_attr(s, complete=False)
        return [s, "not complete", "--allow-incomplete"]

    def store_json(data):
        def damage(s, t):
            write(s / "zarr.json", data)
            return [s / "zarr.json"]

        return damage

    def array_json(s, t):
        truncate(s / array / "zarr.json")
        return [s / array / "zarr.json"]

    def zero_fill(s, t):  # an edited fill value: a missing chunk would read as data
        edit_json(s / array / "zarr.json", lambda doc: doc.update(fill_value=0.0))
        return [s, array, "not NaN"]

    def array_gone(s, t):
        shutil.rmtree(s / array)
        return [s, array, "missing"]

    def no_zarr_json(s, t):
        (s / "zarr.json").unlink()
        return [s, "no zarr.json"]

    def file_not_store(s, t):
        shutil.rmtree(s)
        write(s, "a file")
        return [s]

    def missing(s, t):
        shutil.rmtree(s)
        return [s]

    return {
        "deleted-chunk": delete,
        "truncated-shard": truncated,
        "edited-shard": flipped,
        "shard-moved": moved,
        "deleted-rows-chunk": rows_chunk("synset"),
        "deleted-status-chunk": rows_chunk("status"),
        "rows-committed-too-large": committed(40),
        "rows-committed-not-a-number": committed("12"),
        "unfinished-store": unfinished,
        "corrupt-zarr-json": store_json('{"zarr_format": 3, "node_ty'),
        "binary-zarr-json": store_json(BINARY),
        "empty-zarr-json": store_json(b""),
        "list-zarr-json": store_json("[1, 2]"),
        "corrupt-array-json": array_json,
        "deleted-array": array_gone,
        "zero-fill-value": zero_fill,
        "no-zarr-json": no_zarr_json,
        "store-is-a-file": file_not_store,
        "missing-store": missing,
    }


def output_damage():
    """--out that cannot be written: under a regular file (root ignores chmod), or an existing file."""
    return {
        "out-under-a-file": lambda s, t: (a_file(t) / "out", [a_file(t) / "out"]),
        "out-is-a-file": lambda s, t: (write(t / "out", "x"), [t / "out"]),
    }
