"""An image folder (docs/formats.md): a manifest folder or a plain ImageFolder tree, and sd-generate's run.json.

A manifest folder has ``images.jsonl`` (sd-generate writes it; a user may too):
one JSON row per record with at least ``path`` (relative to the folder) and
``synset``; ``status`` "failed" rows have no image and are skipped. A sharded
sd-generate run leaves ``images.shard-K-of-N.jsonl`` files instead; they are
read in name order. A plain tree ``DIR/<synset>/*.png|jpg`` is read in sorted
path order with the synset from the folder name. ``run.json`` (schema
RUN_SCHEMA) beside the manifest says how sd-generate made the folder.

Decoding the images is shared/common/decode.py's.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath

import pandas as pd

from synthprobe.common.files import InputError, atomic_write, open_input, read_json, sha256_file
from synthprobe.formats.prompts import (
    GROUPS,
    ID_PATTERN,
    ID_RULE,
    SYNSET_PATTERN,
    brief_text,
    dumps,
    parse_jsonl,
    safe_id,
    write_jsonl,
)

MANIFEST = "images.jsonl"
SHARD_MANIFESTS = "images.shard-*-of-*.jsonl"
RUN_FILE = "run.json"
RUN_SCHEMA = 1
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
# sha256 from the manifest, else ""; prompt and template (the prompt unit of the analyses) "" for a plain tree;
# negative_prompt "" where none made the image (image-check splits leak rates by it).
ROW_COLUMNS = ("id", "synset", "group", "target", "path", "sha256", "prompt", "template", "negative_prompt")


@dataclass
class ImageFolder:
    """The images of a folder, in a fixed order: ``rows`` holds ROW_COLUMNS, ``path`` relative to ``root``."""

    root: Path
    rows: pd.DataFrame
    source_sha256: str  # of the manifest(s), or of the sorted file list of a plain tree
    layout: str  # "manifest" or "imagefolder"

    def file(self, relative: str) -> Path:
        return self.root / relative


def read_image_folder(folder: str | os.PathLike) -> ImageFolder:
    root = Path(folder)
    if not root.is_dir():
        raise InputError(f"{root} is not a folder (expected an image folder with images.jsonl, or DIR/<synset>/*.png)")
    manifests = [root / MANIFEST] if (root / MANIFEST).is_file() else sorted(root.glob(SHARD_MANIFESTS))
    if manifests:
        rows = [row for manifest in manifests for row in read_manifest(manifest)]
        digest = hashlib.sha256(b"".join(bytes.fromhex(sha256_file(m)) for m in manifests)).hexdigest()
        layout = "manifest"
    else:
        rows = scan_tree(root)
        digest = hashlib.sha256("\n".join(r["path"] for r in rows).encode("utf-8")).hexdigest()
        layout = "imagefolder"
    if not rows:
        where = ", ".join(map(str, manifests)) or root
        raise InputError(f"{where}: no images (no 'ok' rows in a manifest, or no DIR/<synset>/*.png|jpg files)")
    table = pd.DataFrame(rows, columns=list(ROW_COLUMNS))
    duplicated = table["id"][table["id"].duplicated()]
    if len(duplicated):
        first = duplicated.iloc[0]
        paths = ", ".join(table.loc[table["id"] == first, "path"])
        raise InputError(f"{root}: two images share the id {first!r} ({paths}); ids must be unique")
    return ImageFolder(root, table, digest, layout)


def read_manifest(manifest: Path) -> list[dict]:
    """The 'ok' rows of one manifest, reduced to ROW_COLUMNS, with file:line on the first bad row."""
    rows = []
    with open_input(manifest) as handle:
        for lineno, data in parse_jsonl(handle, str(manifest)):
            try:
                row = manifest_row(data)
                if row is not None:
                    check_inside(row["path"])
            except ValueError as exc:
                raise InputError(f"{manifest}:{lineno}: {exc}") from None
            if row is not None:
                rows.append(row)
    return rows


def manifest_row(data: object) -> dict | None:
    if not isinstance(data, dict):
        raise ValueError(f"expected a JSON object, got {type(data).__name__}")
    status = data.get("status", "ok")
    if status != "ok":
        return None
    for name in ("path", "synset"):
        if not isinstance(data.get(name), str) or not data[name]:
            raise ValueError(f"an 'ok' row needs a {name!r} string")
    row = {
        "id": data.get("id") or safe_id(data["path"]),
        "synset": data["synset"],
        "group": data.get("group") or "concept",
        "target": data.get("target") or data["synset"],
        "path": data["path"],
        "sha256": data.get("sha256") or "",
        "prompt": data.get("prompt") or "",
        "template": data.get("template") or "",
        "negative_prompt": data.get("negative_prompt") or "",
    }
    if not isinstance(row["id"], str) or not ID_PATTERN.match(row["id"]):
        raise ValueError(f"id {brief_text(str(row['id']))} {ID_RULE}")
    if row["group"] not in GROUPS:
        raise ValueError(f"group {row['group']!r} is not one of {', '.join(GROUPS)}")
    if not isinstance(row["negative_prompt"], str):
        raise ValueError(f"negative_prompt must be a string, got {row['negative_prompt']!r}")
    return row


def check_inside(relative: str) -> None:
    """A manifest path must name a file inside the image folder: relative, without '..'."""
    path = PurePosixPath(relative.replace("\\", "/"))
    if path.is_absolute() or PureWindowsPath(relative).drive or ".." in path.parts:
        raise ValueError(f"path {brief_text(relative)} leaves the image folder; paths are relative to it, without '..'")


def class_name(class_dir: Path) -> str:
    """A tree's folder name as the synset of its images: a synset name (``bee.n.01``), or a plain name (an ImageNet
    wnid, ``cats``) of letters, digits, '.', '_' and '-'; any other name is refused, not carried into every table
    and page downstream."""
    name = class_dir.name
    if not (SYNSET_PATTERN.match(name) or ID_PATTERN.match(name)):
        raise InputError(
            f"{class_dir}: the folder name {brief_text(name)} is not a synset (such as bee.n.01) or a class name of "
            "letters, digits, '.', '_' and '-'; rename the folder"
        )
    return name


def scan_tree(root: Path) -> list[dict]:
    rows = []
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        synset = class_name(class_dir)
        for file in sorted(class_dir.rglob("*")):
            if file.is_file() and file.suffix.lower() in IMAGE_SUFFIXES:
                rows.append(photo_row(file.relative_to(root).as_posix(), synset))
    return rows


def output_names(shard: tuple[int, int] | None) -> tuple[str, str]:
    """The manifest and run.json names of a run; a shard writes its own, so concurrent shards never overwrite one
    another's."""
    if shard is None:
        return MANIFEST, RUN_FILE
    suffix = f"shard-{shard[0]}-of-{shard[1]}"
    return f"images.{suffix}.jsonl", f"run.{suffix}.json"


def write_manifest(path: Path, rows: list[dict]) -> None:
    """One row per record, in order (atomically: the manifest is complete or absent)."""
    write_jsonl(path, rows)


def write_run(path: Path, run: dict) -> None:
    """sd-generate's run.json: ``run`` (tool, manifest, config, summary, seconds, versions) under RUN_SCHEMA."""
    with atomic_write(path) as handle:
        handle.write(dumps({"schema": RUN_SCHEMA, **run}) + "\n")


def read_run(path: Path) -> dict:
    """A run.json; another schema is refused in one line saying how to make it again."""
    run = read_json(path)
    if not isinstance(run, dict):
        raise InputError(f"{path}: not a run summary (a JSON object); rerun sd-generate")
    if run.get("schema") != RUN_SCHEMA:
        raise InputError(
            f"{path}: schema {run.get('schema')!r}, but this version reads run.json schema {RUN_SCHEMA}; "
            "rerun sd-generate on the folder (its images come from the cache)"
        )
    return run


# ---------------------------------------------------------------- the layouts photos come in (issue 21)

LABEL_COLUMNS = ("path", "synset")


def read_labelled_folder(folder: str | os.PathLike, labels: str | os.PathLike) -> ImageFolder:
    """Images named by a CSV ``path,synset`` (``cnn-hooks --labels``): paths relative to ``folder``, in any layout
    (ImageNet's flat validation folder included); the synset a WordNet name or an ImageNet wnid."""
    root = Path(folder)
    if not root.is_dir():
        raise InputError(f"{root} is not a folder of images")
    try:
        table = pd.read_csv(labels, dtype=str, keep_default_na=False)
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read --labels {labels}: {exc}") from None
    missing = [c for c in LABEL_COLUMNS if c not in table.columns]
    if missing:
        raise InputError(
            f"{labels}: no {' or '.join(missing)} column; a labels file is a CSV with a header path,synset"
        )
    rows = []
    for line, (relative, synset) in enumerate(zip(table["path"], table["synset"]), start=2):
        try:
            check_inside(relative)
        except ValueError as exc:
            raise InputError(f"{labels}:{line}: {exc}") from None
        if not synset:
            raise InputError(f"{labels}:{line}: no synset for {brief_text(relative)}")
        if not (root / relative).is_file():
            raise InputError(f"{labels}:{line}: {root / relative} is not a file")
        rows.append(photo_row(relative, synset))
    if not rows:
        raise InputError(f"{labels}: no images")
    return ImageFolder(root, pd.DataFrame(rows, columns=list(ROW_COLUMNS)), sha256_file(labels), "labels")


def photo_row(relative: str, synset: str) -> dict:
    """The row of an image without a manifest: a concept image of ``synset``, its own unit (no prompt)."""
    return dict(id=safe_id(relative), synset=synset, group="concept", target=synset, path=relative, sha256="",
                prompt="", template="", negative_prompt="")  # fmt: skip


def with_wordnet_synsets(folder: ImageFolder, load_wordnet) -> ImageFolder:
    """ImageNet wnids (``n01440764``, a folder name or a labels entry) as WordNet 3.0 synset names
    (``tench.n.01``): a wnid is a noun offset. Other synsets are left as they are; ``load_wordnet()`` is called
    only when there is a wnid to map."""
    import warnings

    from synthprobe.common.imagenet import is_wnid

    wnids = sorted({s for s in folder.rows["synset"] if is_wnid(s)})
    if not wnids:
        return folder
    wn, names = load_wordnet(), {}
    for wnid in wnids:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # nltk warns and returns None for an unknown offset
            synset = wn.synset_from_pos_and_offset("n", int(wnid[1:]))
        if synset is None:
            raise InputError(f"{folder.root}: {wnid} looks like an ImageNet wnid but is not a WordNet 3.0 noun offset")
        names[wnid] = synset.name()
    rows = folder.rows.copy()
    for column in ("synset", "target"):
        rows[column] = rows[column].map(lambda s: names.get(s, s))
    return ImageFolder(folder.root, rows, folder.source_sha256, folder.layout)
