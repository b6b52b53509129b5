"""One HTML report from the analysis folders (the ``report`` logic).

The report reads only what the stages wrote: each analysis folder's
``summary.json`` (which lists its tables and figures), its CSV tables and PNG
figures, and optionally image folders for galleries and thumbnails. Figures
and thumbnails are embedded as data URIs. The report stays small (under 5 MB)
for any number of hook points or images: a long table shows its top rows and
links its full CSV, copied into ``<report>_files/`` beside the HTML.
"""

from __future__ import annotations

import base64
import io
import json
import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from .compare import bias_tables, classifier_name, compared, depth_figures
from .decode import load_rgb
from .files import InputError, error_line, open_input, open_output, read_json
from .formats.activation_store import grouped_aliases
from .formats.analysis_folder import SUMMARY_FILE, read_summary
from .formats.image_folder import MANIFEST, SHARD_MANIFESTS, read_image_folder
from .formats.prompts import parse_jsonl

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
TOP_CHANNELS_SHOWN = 3
FLAGGED_SHOWN = 60  # flagged images shown per image-check folder


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


def figure_uri(data: bytes) -> str:
    """A PNG figure as a data URI, in a 256-colour palette where that is smaller (plots: about a third)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.open(io.BytesIO(data)).convert("RGB").quantize(256).save(buffer, format="PNG", optimize=True)
    return png_uri(min(data, buffer.getvalue(), key=len))


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
    return Table(key, file, description, [str(c) for c in frame.columns], rows, path)


def load_analysis(folder: str | Path) -> Analysis:
    """An analysis folder (shared/formats/analysis_folder.py): summary.json names its tables and figures."""
    read = read_summary(folder)
    summary_path = read.folder / SUMMARY_FILE
    tables = {}
    for key, entry in read.tables.items():
        tables[key] = read_table(read.folder, key, entry.file, entry.description)
        if key in TOP_LAYER_TABLES and read.summary.get("top_layers") and "layer" in tables[key].columns:
            tables[key] = tables[key].only_layers(read.summary["top_layers"])
    figures = {}
    for name, file in read.figures.items():
        path = read.folder / file
        if not path.is_file():
            raise InputError(f"{summary_path} names the figure {file}, which is missing")
        figures[name] = figure_uri(path.read_bytes())
    return Analysis(read.folder, read.summary, tables, figures)


class Thumbnails:
    """Image lookup by row id across the given image folders; each thumbnail is embedded once.

    ``thumb`` gives a key into ``uris`` (key -> JPEG data URI); the page fills every image
    with that key from one table, so an image shown in several places costs its bytes once.
    """

    def __init__(self, image_dirs: list[Path]):
        self.folders = [read_image_folder(d) for d in image_dirs]
        self.files: dict[str, Path] = {}
        self.prompts: dict[str, str] = {}
        for folder in self.folders:
            for row in folder.rows.itertuples(index=False):
                self.files.setdefault(row.id, folder.file(row.path))
            self.prompts.update(manifest_prompts(folder.root))
        self.keys: dict[Path, str | None] = {}
        self.uris: dict[str, str] = {}

    def thumb(self, image_id: str, path: str | None = None) -> str | None:
        file = self.files.get(image_id)
        if file is None and path:
            file = next((f.file(path) for f in self.folders if f.file(path).is_file()), None)
        if file is None:
            return None
        if file not in self.keys:
            try:
                image = load_rgb(file)
            except (OSError, ValueError):
                self.keys[file] = None
                return None
            image.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
            buffer = io.BytesIO()
            image.save(buffer, format="JPEG", quality=85)
            self.keys[file] = f"t{len(self.uris)}"
            self.uris[self.keys[file]] = png_uri(buffer.getvalue(), "image/jpeg")
        return self.keys[file]

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
        images = [
            {
                "id": r["id"],
                "thumb": thumbnails.thumb(str(r["id"]), str(r.get("path", ""))),
                "caption": f"{r.get('synset', '')} {r.get('activation', '')}".strip(),
            }
            for _, r in rows.iterrows()
        ]
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


def hook_aliases(analysis: Analysis) -> dict[str, list[str]]:
    """{stored hook point: [its aliases]} from the store provenance in an analysis summary."""
    return grouped_aliases(analysis.store.get("hook_aliases", {}))


def toy_warnings(analyses: list[Analysis]) -> list[str]:
    """Say plainly when the numbers come from untrained weights."""
    notes = []
    for analysis in analyses:
        store = analysis.store
        if str(store.get("weights", "")).lower() == "none":
            notes.append(
                f"{analysis.folder}: the classifier {store.get('model', '')} has random weights "
                "(--weights none); its numbers show the pipeline works, not what a trained model learned."
            )
    return notes


def shown_tables(analyses: list[Analysis], per_class: list[dict[str, dict[str, Table]]]) -> list[Table]:
    """Cut every table the report shows to its top rows; returns them all, the partial ones to be linked."""
    shown = []
    for analysis in analyses:
        analysis.tables = {key: table.top_rows() for key, table in analysis.tables.items()}
        shown += analysis.tables.values()
    for tables in (tables for classes in per_class for tables in classes.values()):
        for key in tables:
            tables[key] = tables[key].top_rows()
            shown.append(tables[key])
    return shown


def link_full_tables(tables: list[Table], output: str | Path) -> None:
    """Copy the full CSV of each partial table into ``<report>_files/`` and link it relatively.

    The copies are named by their path below the analysis folders' common parent
    (``sep-layers.csv``; ``resnet50-separability-concepts-layers.csv`` beside another
    classifier's); a report written to stdout names the original file instead.
    """
    partial = [t for t in tables if t.partial and t.source is not None]
    if str(output) == "-":
        for table in partial:
            table.href = table.source.resolve().as_uri()
        return
    output = Path(output)
    files_dir = output.with_name(f"{output.stem}_files")
    shutil.rmtree(files_dir, ignore_errors=True)  # no stale tables from an earlier report
    if not partial:
        return
    sources = {table.source.resolve() for table in partial}
    common = Path(os.path.commonpath([source.parent for source in sources])).parent
    files_dir.mkdir(parents=True, exist_ok=True)
    for source in sources:
        shutil.copyfile(source, files_dir / "-".join(source.relative_to(common).parts))
    for table in partial:
        table.href = f"{files_dir.name}/{'-'.join(table.source.resolve().relative_to(common).parts)}"


def store_warnings(analyses: list[Analysis]) -> list[str]:
    """The warnings a reader left in its summary (an unfinished store analysed with --allow-incomplete)."""
    notes = []
    for analysis in analyses:
        store = analysis.summary.get("store", {})
        warning = store.get("warning") or store.get("attrs", {}).get("warning")  # bias-report nests the attrs
        if warning:
            notes.append(f"{analysis.folder}: {warning}.")
    return notes


def flagged_images(checks: Analysis, thumbnails: Thumbnails | None, limit: int = FLAGGED_SHOWN) -> list[dict]:
    """The images an image-check folder flagged, with their verdict and score, as thumbnails."""
    from .formats.image_checks import FLAGS, read_checks

    if thumbnails is None:
        return []
    flagged = [
        r
        for r in read_checks(checks.folder / checks.summary.get("files", {}).get("checks", "checks.jsonl"))
        if r.get("verdict") in FLAGS
    ]
    return [
        {
            "id": r["id"],
            "thumb": thumbnails.thumb(r["id"], r.get("path")),
            "caption": f"{r['synset']} · {r['group']}: {r['verdict']} (object score {r.get('object_score')})",
        }
        for r in flagged[:limit]
    ]


def build_context(
    separability_dirs: list[Path],
    bias_dirs: list[Path],
    image_dirs: list[Path],
    check_dirs: list[Path] = (),
    title: str = "synthprobe report",
    notice: str | None = None,
) -> dict:
    separability = [load_analysis(d) for d in separability_dirs]
    biases = [load_analysis(d) for d in bias_dirs]
    checks = [load_analysis(d) for d in check_dirs]
    if not separability and not biases:
        raise InputError("nothing to report: give --separability DIR and/or --bias DIR")
    thumbnails = Thumbnails(image_dirs) if image_dirs else None
    analyses = separability + biases + checks
    per_class = [bias_class_tables(bias) for bias in biases]
    top_channels = [top_channel_images(a, thumbnails) for a in separability]  # from the whole top_images table
    comparison = {
        "figures": depth_figures(separability) if compared(separability) else {},
        "tables": bias_tables(biases) if compared(biases) else [],
    }  # from the whole CSVs
    return {
        "tables": shown_tables(analyses, per_class),
        "title": title,
        "notices": ([notice] if notice else []) + toy_warnings(analyses) + store_warnings(analyses),
        "separability": [
            {"analysis": a, "top_channels": channels, "aliases": hook_aliases(a), "classifier": classifier_name(a)}
            for a, channels in zip(separability, top_channels)
        ],
        "biases": [
            {
                "analysis": bias,
                "classes": classes,
                "class_keys": {key for tables in classes.values() for key in tables},
                "classifier": classifier_name(bias),
            }
            for bias, classes in zip(biases, per_class)
        ],
        "comparison": comparison,
        "checks": [{"analysis": a, "flagged": flagged_images(a, thumbnails)} for a in checks],
        "galleries": thumbnails.galleries() if thumbnails else [],
        "thumbnails": thumbnails.uris if thumbnails else {},
        "runs": run_summaries(image_dirs),
    }


def render(context: dict) -> str:
    from importlib import resources

    from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

    env = Environment(
        loader=FileSystemLoader(str(resources.files("synthprobe.templates"))),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["tojson_pretty"] = lambda value: json.dumps(value, indent=2, sort_keys=True, default=str)
    return env.get_template("report.html.j2").render(**context)


def write_report(output: str | Path, **kwargs) -> Path:
    context = build_context(**kwargs)
    link_full_tables(context["tables"], output)
    html = render(context)
    with open_output(output) as handle:
        handle.write(html)
    return Path(output)
