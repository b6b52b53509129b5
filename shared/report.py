"""One self-contained HTML report from the analysis folders (the ``report`` logic).

The report reads only what the stages wrote: each analysis folder's
``summary.json`` (which lists its tables and figures), its CSV tables and PNG
figures, and optionally image folders for galleries and thumbnails. Figures
and thumbnails are embedded as data URIs so the file travels alone.
"""

from __future__ import annotations

import base64
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from .files import InputError, error_line, open_input, open_output, read_json
from .images import MANIFEST, SHARD_MANIFESTS, load_rgb, read_image_folder
from .records import parse_jsonl

THUMBNAIL_PX = 128
GALLERY_PER_SET = 8
LONG_TABLE_ROWS = 12  # tables longer than this are collapsed and sortable
# Per-channel tables of separability cover every layer; the report shows their top layers only.
TOP_LAYER_TABLES = ("top_neurons", "top_images")
TOP_CHANNELS_SHOWN = 3


@dataclass
class Table:
    key: str
    file: str
    description: str
    columns: list[str]
    rows: list[list]

    @property
    def long(self) -> bool:
        return len(self.rows) > LONG_TABLE_ROWS

    def split_by(self, column_name: str) -> dict[str, "Table"]:
        """One table per value of a column (e.g. per bias class), in first-seen order."""
        column = self.columns.index(column_name)
        parts: dict[str, list] = {}
        for row in self.rows:
            parts.setdefault(str(row[column]), []).append(row)
        return {value: Table(self.key, self.file, self.description, self.columns, rows) for value, rows in parts.items()}

    def only_layers(self, layers: list[str]) -> "Table":
        column = self.columns.index("layer")
        rows = [row for row in self.rows if row[column] in layers]
        note = f"shown for the top layers only; all {len(self.rows)} rows are in the CSV"
        return Table(self.key, self.file, f"{self.description} ({note})" if self.description else note, self.columns, rows)


@dataclass
class Analysis:
    folder: Path
    summary: dict
    tables: dict[str, Table]
    figures: dict[str, str]  # name -> data URI


@dataclass
class Gallery:
    title: str
    images: list[dict] = field(default_factory=list)  # {id, uri, caption}


def png_uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode("ascii")


def format_cell(value) -> object:
    """Numbers to 4 significant digits; NaN as an empty cell."""
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        return f"{value:.4g}"
    return value


def read_table(folder: Path, key: str, file: str, description: str = "") -> Table:
    path = folder / file
    try:
        frame = pd.read_csv(path, keep_default_na=True)
    except UnicodeDecodeError:
        raise InputError(f"cannot read table {path}: not UTF-8 text (a binary file?)") from None
    except (OSError, ValueError) as exc:  # pandas' ParserError and EmptyDataError are ValueErrors
        raise InputError(f"cannot read table {path}: {error_line(exc)}") from None
    rows = [[format_cell(v) for v in row] for row in frame.itertuples(index=False, name=None)]
    return Table(key, file, description, [str(c) for c in frame.columns], rows)


def load_analysis(folder: str | Path) -> Analysis:
    """An analysis folder: summary.json names its tables and figures."""
    folder = Path(folder)
    summary_path = folder / "summary.json"
    if not summary_path.is_file():
        raise InputError(f"{folder} is not an analysis folder (no summary.json); run separability or bias-report first")
    summary = read_json(summary_path)
    if not isinstance(summary, dict):
        raise InputError(f"{summary_path}: not a summary (a JSON object); rerun separability or bias-report")
    # separability lists {key: {file, description}} under "tables", bias-report {key: file} under "files".
    declared = summary.get("tables") or summary.get("files") or {p.stem: p.name for p in sorted(folder.glob("*.csv"))}
    tables = {}
    figures = {}
    try:
        for key, entry in declared.items():
            file, description = (entry["file"], entry.get("description", "")) if isinstance(entry, dict) else (entry, "")
            tables[key] = read_table(folder, key, file, description)
            if key in TOP_LAYER_TABLES and summary.get("top_layers") and "layer" in tables[key].columns:
                tables[key] = tables[key].only_layers(summary["top_layers"])
        for name, file in (summary.get("figures") or {}).items():
            path = folder / file
            if not path.is_file():
                raise InputError(f"{summary_path} names the figure {file}, which is missing")
            figures[name] = png_uri(path.read_bytes())
    except (AttributeError, KeyError, TypeError) as exc:
        raise InputError(f"{summary_path}: its tables or figures are not as written by separability or bias-report "
                         f"({error_line(exc)})") from None
    return Analysis(folder, summary, tables, figures)


class Thumbnails:
    """Image lookup by row id across the given image folders, with cached thumbnails."""

    def __init__(self, image_dirs: list[Path]):
        self.folders = [read_image_folder(d) for d in image_dirs]
        self.files: dict[str, Path] = {}
        self.prompts: dict[str, str] = {}
        for folder in self.folders:
            for row in folder.rows.itertuples(index=False):
                self.files.setdefault(row.id, folder.file(row.path))
            self.prompts.update(manifest_prompts(folder.root))
        self._cache: dict[Path, str] = {}

    def uri(self, image_id: str, path: str | None = None) -> str | None:
        file = self.files.get(image_id)
        if file is None and path:
            file = next((f.file(path) for f in self.folders if f.file(path).is_file()), None)
        if file is None:
            return None
        if file not in self._cache:
            try:
                image = load_rgb(file)
            except (OSError, ValueError):
                return None
            image.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
            buffer = io.BytesIO()
            image.save(buffer, format="JPEG", quality=85)
            self._cache[file] = png_uri(buffer.getvalue(), "image/jpeg")
        return self._cache[file]

    def galleries(self, per_set: int = GALLERY_PER_SET) -> list[Gallery]:
        """One gallery per synset for concept images, one per (target, group) for bias images."""
        galleries: dict[str, Gallery] = {}
        for folder in self.folders:
            for row in folder.rows.itertuples(index=False):
                title = row.synset if row.group == "concept" else f"{row.target} · {row.group}"
                gallery = galleries.setdefault(title, Gallery(title))
                if len(gallery.images) < per_set:
                    gallery.images.append({"id": row.id, "uri": self.uri(row.id),
                                           "caption": self.prompts.get(row.id, row.id)})
        return list(galleries.values())


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
    """The generation summaries (run.json of sd-generate) of the image folders that have one."""
    runs = []
    for folder in image_dirs:
        path = Path(folder) / "run.json"
        if path.is_file():
            run = read_json(path)
            if not isinstance(run, dict):
                raise InputError(f"{path}: not a run summary (a JSON object); rerun sd-generate")
            runs.append({"folder": str(folder), **run})
    return runs


def top_channel_images(analysis: Analysis, thumbnails: Thumbnails | None) -> list[dict]:
    """For separability's top channels: their most activating images as thumbnails."""
    table = analysis.tables.get("top_images")
    if table is None or thumbnails is None:
        return []
    frame = pd.DataFrame(table.rows, columns=table.columns)
    if "rank" in frame:
        frame = frame[pd.to_numeric(frame["rank"]) <= TOP_CHANNELS_SHOWN]
    groups = []
    for (layer, channel), rows in frame.groupby(["layer", "channel"], sort=False):
        images = [{"id": r["id"], "uri": thumbnails.uri(str(r["id"]), str(r.get("path", ""))),
                   "caption": f"{r.get('synset', '')} {r.get('activation', '')}".strip()} for _, r in rows.iterrows()]
        groups.append({"layer": layer, "channel": channel, "images": images})
    return groups


BIAS_CLASS_TABLES = ("prompts", "top_prompts")


def bias_class_tables(bias: Analysis) -> dict[str, dict[str, Table]]:
    """Per class, as the original study showed them: every prompt by group, and the top prompts."""
    per_class: dict[str, dict[str, Table]] = {}
    for key in BIAS_CLASS_TABLES:
        table = bias.tables.get(key)
        if table is not None and "class" in table.columns:
            for name, part in table.split_by("class").items():
                per_class.setdefault(name, {})[key] = part
    return per_class


def toy_warnings(analyses: list[Analysis]) -> list[str]:
    """Say plainly when the numbers come from untrained weights."""
    notes = []
    for analysis in analyses:
        store = analysis.summary.get("store", {})
        store = store.get("attrs", store)  # bias-report nests the store's attrs
        if str(store.get("weights", "")).lower() == "none":
            notes.append(f"{analysis.folder}: the classifier {store.get('model', '')} has random weights "
                         "(--weights none); its numbers show the pipeline works, not what a trained model learned.")
    return notes


def store_warnings(analyses: list[Analysis]) -> list[str]:
    """The warnings a reader left in its summary (an unfinished store analysed with --allow-incomplete)."""
    notes = []
    for analysis in analyses:
        store = analysis.summary.get("store", {})
        warning = store.get("warning") or store.get("attrs", {}).get("warning")  # bias-report nests the attrs
        if warning:
            notes.append(f"{analysis.folder}: {warning}.")
    return notes


def build_context(separability_dirs: list[Path], bias_dir: Path | None, image_dirs: list[Path],
                  title: str = "synthprobe report", notice: str | None = None) -> dict:
    separability = [load_analysis(d) for d in separability_dirs]
    bias = load_analysis(bias_dir) if bias_dir else None
    if not separability and bias is None:
        raise InputError("nothing to report: give --separability DIR and/or --bias DIR")
    thumbnails = Thumbnails(image_dirs) if image_dirs else None
    analyses = separability + ([bias] if bias else [])
    bias_classes = bias_class_tables(bias) if bias else {}
    return {
        "title": title,
        "notices": ([notice] if notice else []) + toy_warnings(analyses) + store_warnings(analyses),
        "separability": [{"analysis": a, "top_channels": top_channel_images(a, thumbnails)} for a in separability],
        "bias": bias,
        "bias_classes": bias_classes,
        "bias_class_keys": {key for tables in bias_classes.values() for key in tables},
        "galleries": thumbnails.galleries() if thumbnails else [],
        "runs": run_summaries(image_dirs),
    }


def render(context: dict) -> str:
    from importlib import resources

    from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

    env = Environment(loader=FileSystemLoader(str(resources.files("synthprobe.templates"))),
                      autoescape=select_autoescape(default=True, default_for_string=True),
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["tojson_pretty"] = lambda value: json.dumps(value, indent=2, sort_keys=True, default=str)
    return env.get_template("report.html.j2").render(**context)


def write_report(output: str | Path, **kwargs) -> Path:
    html = render(build_context(**kwargs))
    with open_output(output) as handle:
        handle.write(html)
    return Path(output)
