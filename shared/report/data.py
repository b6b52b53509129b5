"""The report's inputs: analysis folders (summary, tables, figures) read into ``Analysis`` and ``Table``, and
thumbnails and galleries from image folders."""

from __future__ import annotations

import base64
import io
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from synthprobe.common.decode import load_rgb
from synthprobe.common.files import InputError, error_line, open_input, sha256_file
from synthprobe.formats.analysis_folder import SUMMARY_FILE, read_summary
from synthprobe.formats.image_checks import CHECKS_FILE
from synthprobe.formats.image_folder import MANIFEST, RUN_FILE, SHARD_MANIFESTS, read_image_folder, read_run
from synthprobe.formats.prompts import parse_jsonl

log = logging.getLogger("synthprobe")

THUMBNAIL_PX = 128
GALLERY_PER_SET = 8
GALLERY_THUMBNAILS = 240  # about 1.5 MB of thumbnails in all; many sets get fewer images each
LONG_TABLE_ROWS = 12  # tables longer than this are collapsed and sortable
TABLE_ROWS_SHOWN = 200  # longer tables show their top rows and link the full CSV
# What ranks the rows of a long table, (column, largest first); other tables keep the order of their CSV.
TABLE_RANKING = {
    "layers": ("distance_rank", False),
    "selective_channels": ("auroc", True),
    "synset_max_activation": ("max_activation", True),
    "images": ("confidence", True),
}
# Per-channel tables of separability cover every layer; the report shows their top layers only.
TOP_LAYER_TABLES = ("top_neurons", "top_images")


@dataclass
class Table:
    key: str
    file: str
    description: str
    columns: list[str]
    rows: list[list]
    source: Path | None = None  # the CSV the rows come from
    total_rows: int | None = None  # the CSV's rows, where only some are shown
    shown_note: str = ""  # which rows are shown, where only some are
    href: str | None = None  # relative link to the full CSV beside the report

    @property
    def long(self) -> bool:
        return len(self.rows) > LONG_TABLE_ROWS

    @property
    def partial(self) -> bool:
        return self.total_rows is not None and self.total_rows > len(self.rows)

    @property
    def shown_in_part(self) -> bool:
        """Whether the page shows only some rows (``top_rows`` leaves some out, or some were left out already)."""
        return self.partial or len(self.rows) > TABLE_ROWS_SHOWN

    def subset(self, rows: list[list], shown_note: str) -> Table:
        total = self.total_rows if self.total_rows is not None else len(self.rows)
        note = f"{self.shown_note}; of those, {shown_note}" if self.shown_note else shown_note
        return Table(self.key, self.file, self.description, self.columns, rows, self.source, total, note)

    def top_rows(self, limit: int = TABLE_ROWS_SHOWN) -> Table:
        """At most ``limit`` rows, ranked by TABLE_RANKING where the table has that column."""
        if len(self.rows) <= limit:
            return self
        column, largest_first = TABLE_RANKING.get(self.key, (None, False))
        if column not in self.columns:
            return self.subset(self.rows[:limit], f"the first {limit} rows")
        index = self.columns.index(column)

        def rank(row):  # empty cells (NaN) last
            value = pd.to_numeric(row[index], errors="coerce")
            return (math.isnan(value), -value if largest_first else value)

        order = "largest" if largest_first else "smallest"
        return self.subset(sorted(self.rows, key=rank)[:limit], f"the {limit} rows with the {order} {column}")

    def split_by(self, column_name: str) -> dict[str, Table]:
        """One table per value of a column (e.g. per bias class), in first-seen order."""
        column = self.columns.index(column_name)
        parts: dict[str, list] = {}
        for row in self.rows:
            parts.setdefault(str(row[column]), []).append(row)
        return {
            value: Table(self.key, self.file, self.description, self.columns, rows, self.source)
            for value, rows in parts.items()
        }

    def only_layers(self, layers: list[str]) -> Table:
        column = self.columns.index("layer")
        return self.subset([row for row in self.rows if row[column] in layers], "the top layers' rows")


@dataclass
class Analysis:
    folder: Path
    summary: dict
    tables: dict[str, Table]
    figures: dict[str, str]  # name -> data URI
    files: dict[str, Path] = field(default_factory=dict)  # other files the summary names, confined to the folder

    @property
    def store(self) -> dict:
        """The attrs of the store the analysis read (bias-report nests them under "attrs")."""
        store = self.summary.get("store", {})
        return store.get("attrs", store)


@dataclass
class Gallery:
    title: str
    images: list[dict] = field(default_factory=list)  # {id, thumb, caption}


def png_uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode("ascii")


def figure_uri(data: bytes, source: Path | None = None) -> str:
    """A PNG figure as a data URI, in a 256-colour palette where that is smaller (plots: about a third).

    A figure that cannot be decoded is one line naming ``source`` (PIL's message names a BytesIO object).
    """
    from PIL import Image

    buffer = io.BytesIO()
    try:
        Image.open(io.BytesIO(data)).convert("RGB").quantize(256).save(buffer, format="PNG", optimize=True)
    except (OSError, ValueError, SyntaxError) as exc:  # UnidentifiedImageError and truncated files are OSErrors
        reason = "not an image PIL can read" if "BytesIO" in str(exc) else error_line(exc)
        raise InputError(f"cannot read figure {source or 'data'}: {reason}") from None
    return png_uri(min(data, buffer.getvalue(), key=len))


def format_cell(value) -> object:
    """Numbers to 4 significant digits; NaN as an empty cell."""
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        return f"{value:.4g}"
    return value


def read_table(path: Path, key: str, file: str, description: str = "") -> Table:
    try:
        frame = pd.read_csv(path, keep_default_na=True)
    except UnicodeDecodeError:
        raise InputError(f"cannot read table {path}: not UTF-8 text (a binary file?)") from None
    except (OSError, ValueError) as exc:  # pandas' ParserError and EmptyDataError are ValueErrors
        raise InputError(f"cannot read table {path}: {error_line(exc)}") from None
    rows = [[format_cell(v) for v in row] for row in frame.itertuples(index=False, name=None)]
    return Table(key, file, description, [str(c) for c in frame.columns], rows, path)


def _texts(value) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def _mapping(check):
    return lambda value: isinstance(value, dict) and all(check(item) for item in value.values())


# The summary fields the page reads beyond tables and figures, and the shape each must have where present.
SUMMARY_FIELDS = {
    "layers": (_texts, "a list of layer names"),
    "top_layers": (_texts, "a list of layer names"),
    "best_layers": (_mapping(_texts), "an object of layer name lists"),
    "notes": (_texts, "a list of texts"),
    "definitions": (_mapping(lambda v: isinstance(v, str)), "an object of texts"),
    "files": (_mapping(lambda v: isinstance(v, str)), "an object of file names"),
    "store": (_mapping(lambda v: True), "an object"),
    "thresholds": (_mapping(lambda v: True), "an object"),
}


def check_summary_fields(summary: dict, path: Path) -> None:
    """A field of another shape is one line naming it, not a TypeError while the page is built."""
    for name, (valid, shape) in SUMMARY_FIELDS.items():
        if name in summary and not valid(summary[name]):
            raise InputError(f"{path}: {name} is not {shape}; rerun the tool that wrote it")
    store = summary.get("store", {})
    attrs = store.get("attrs", store)  # bias-report nests the store's attrs
    if not isinstance(attrs, dict) or not _mapping(lambda v: isinstance(v, str))(attrs.get("hook_aliases", {})):
        raise InputError(f"{path}: the store's attrs or hook_aliases are not an object; rerun the tool that wrote it")


# The file of its own that a kind's summary may name under "files" (beside its tables and figures).
OWN_FILES = {"image-check": {"checks": CHECKS_FILE}}


def load_analysis(folder: str | Path, kind: str | tuple[str, ...] | None = None) -> Analysis:
    """An analysis folder (shared/formats/analysis_folder.py) of ``kind``: summary.json names its tables and figures,
    each read from inside the folder."""
    read = read_summary(folder, kind)
    summary_path = read.folder / SUMMARY_FILE
    check_summary_fields(read.summary, summary_path)
    tables = {}
    for key, entry in read.tables.items():
        tables[key] = read_table(entry.path, key, entry.file, entry.description)
        if key in TOP_LAYER_TABLES and read.summary.get("top_layers") and "layer" in tables[key].columns:
            tables[key] = tables[key].only_layers(read.summary["top_layers"])
    figures = {}
    for name, path in read.figures.items():
        if not path.is_file():
            raise InputError(f"{summary_path} names the figure {path.name}, which is missing")
        figures[name] = figure_uri(path.read_bytes(), path)
    files = {field: read.file(field, default) for field, default in OWN_FILES.get(read.kind, {}).items()}
    return Analysis(read.folder, read.summary, tables, figures, files)


class Thumbnails:
    """Image lookup by row id across the given image folders; each thumbnail is embedded once.

    ``thumb`` gives a key into ``uris`` (key -> JPEG data URI); the page fills every image
    with that key from one table, so an image shown in several places costs its bytes once.
    An image is shown only as it was generated: its file must match the manifest's sha256 (with
    ``allow_changed``, a changed one is shown with a red "changed" mark) and stay inside its folder.
    """

    def __init__(self, image_dirs: list[Path], allow_changed: bool = False):
        self.folders = [read_image_folder(d) for d in image_dirs]
        self.allow_changed = allow_changed
        self.files: dict[str, tuple[Path, Path, str]] = {}  # id -> (file, its folder, manifest sha256 or "")
        self.prompts: dict[str, str] = {}
        for folder in self.folders:
            for row in folder.rows.itertuples(index=False):
                self.files.setdefault(row.id, (folder.file(row.path), folder.root, row.sha256))
            self.prompts.update(manifest_prompts(folder.root))
        self.keys: dict[Path, str | None] = {}
        self.uris: dict[str, str] = {}

    def thumb(self, image_id: str, path: str | None = None) -> str | None:
        found = self.files.get(image_id)
        if found is None and path:
            found = next(((f.file(path), f.root, "") for f in self.folders if f.file(path).is_file()), None)
        if found is None:
            return None
        file, root, digest = found
        if file not in self.keys:
            self.keys[file] = self._embed(file, root, digest)
        return self.keys[file]

    def _embed(self, file: Path, root: Path, digest: str) -> str | None:
        if not file.resolve().is_relative_to(root.resolve()):
            raise InputError(f"{file} is a link out of the image folder {root}; copy the image in instead")
        if not file.is_file():
            log.warning("%s: no such image; its thumbnail is left out", file)
            return None
        changed = bool(digest) and sha256_file(file) != digest
        if changed and not self.allow_changed:
            raise InputError(
                f"{file} changed since generation (its sha256 is not the manifest's); regenerate it, "
                "or rerun report with --allow-changed to show it marked"
            )
        try:
            image = load_rgb(file)
        except (OSError, ValueError) as exc:
            log.warning("%s: not a readable image (%s); its thumbnail is left out", file, error_line(exc))
            return None
        image.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
        if changed:
            mark_changed(image)
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=85)
        key = f"t{len(self.uris)}"
        self.uris[key] = png_uri(buffer.getvalue(), "image/jpeg")
        return key

    def galleries(self, per_set: int = GALLERY_PER_SET, budget: int = GALLERY_THUMBNAILS) -> list[Gallery]:
        """One gallery per synset for concept images, one per (target, group) for bias images.

        At most ``budget`` thumbnails in all: with many sets each shows fewer images (at least one),
        and beyond ``budget`` sets the rest are left out.
        """
        members: dict[str, list] = {}
        for folder in self.folders:
            for row in folder.rows.itertuples(index=False):
                title = row.synset if row.group == "concept" else f"{row.target} · {row.group}"
                members.setdefault(title, []).append(row)
        per_set = max(1, min(per_set, budget // max(1, len(members))))
        return [
            Gallery(
                title,
                [
                    {"id": row.id, "thumb": self.thumb(row.id), "caption": self.prompts.get(row.id, row.id)}
                    for row in rows[:per_set]
                ],
            )
            for title, rows in list(members.items())[:budget]
        ]


def mark_changed(image) -> None:
    """A red frame and the word "changed" on a thumbnail whose file is not the generated one."""
    from PIL import ImageDraw

    draw = ImageDraw.Draw(image)
    draw.rectangle([0, 0, image.width - 1, image.height - 1], outline=(220, 0, 0), width=4)
    draw.rectangle([0, 0, 52, 14], fill=(220, 0, 0))
    draw.text((3, 2), "changed", fill=(255, 255, 255))


def manifest_prompts(root: Path) -> dict[str, str]:
    """id -> prompt text from an image folder's manifest or shard manifests (none for a plain tree)."""
    manifests = [root / MANIFEST] if (root / MANIFEST).is_file() else sorted(root.glob(SHARD_MANIFESTS))
    prompts = {}
    for manifest in manifests:
        with open_input(manifest) as handle:
            for _, row in parse_jsonl(handle, str(manifest)):
                if isinstance(row, dict) and "id" in row and "prompt" in row:
                    prompts[row["id"]] = row["prompt"]
    return prompts


def run_summaries(image_dirs: list[Path]) -> list[dict]:
    """The generation summaries (run.json of sd-generate) of the image folders that have one, each with
    ``negative_prompts``: how many of its images a negative prompt made (from its rows, as image-check counts)."""
    return [
        {
            "folder": str(folder),
            **read_run(Path(folder) / RUN_FILE),
            "negative_prompts": int((read_image_folder(folder).rows["negative_prompt"] != "").sum()),
        }
        for folder in image_dirs
        if (Path(folder) / RUN_FILE).is_file()
    ]
