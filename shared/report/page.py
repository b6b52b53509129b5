"""One HTML report from the analysis folders (the ``report`` logic).

The report reads only what the stages wrote: each analysis folder's
``summary.json`` (which lists its tables and figures), its CSV tables and PNG
figures, and optionally image folders for galleries and thumbnails. Figures
and thumbnails are embedded as data URIs. The report stays small (under 5 MB)
for any number of hook points or images: a long table shows its top rows and
links its full CSV, copied into ``<report>_files/`` beside the HTML.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pandas as pd

from synthprobe.common.files import InputError, open_output
from synthprobe.formats.activation_store import grouped_aliases
from synthprobe.report.compare import bias_tables, classifier_name, compared, depth_figures
from synthprobe.report.data import Analysis, Table, Thumbnails, load_analysis, run_summaries
from synthprobe.report.transfer import transfer_entries

TOP_CHANNELS_SHOWN = 3
FLAGGED_SHOWN = 60  # flagged images shown per image-check folder


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
    from synthprobe.formats.image_checks import FLAGS, read_checks

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
    transfer_dirs: list[Path] = (),
) -> dict:
    separability = [load_analysis(d) for d in separability_dirs]
    biases = [load_analysis(d) for d in bias_dirs]
    checks = [load_analysis(d) for d in check_dirs]
    transfers = [load_analysis(d) for d in transfer_dirs]
    if not separability and not biases and not transfers:
        raise InputError("nothing to report: give --separability DIR, --bias DIR and/or --transfer DIR")
    thumbnails = Thumbnails(image_dirs) if image_dirs else None
    analyses = separability + biases + checks + transfers
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
        "transfers": transfer_entries(transfers, biases),
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
