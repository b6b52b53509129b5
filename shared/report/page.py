"""One HTML report from the analysis folders (the ``report`` logic).

The report reads only what the stages wrote: each analysis folder's
``summary.json`` (which lists its tables and figures), its CSV tables and PNG
figures, and optionally image folders for galleries and thumbnails. Figures
and thumbnails are embedded as data URIs. The report stays small (under 5 MB)
for any number of hook points or images: a long table shows its top rows and
links its full CSV, copied into ``<report>_files/`` beside the HTML.

One stage shape: ``read_inputs`` (the folders) -> ``build_context`` (what the page shows; no input is changed)
-> ``render`` (HTML) -> ``write_page`` (the HTML and the full tables); ``write_report`` runs the four.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from synthprobe.common.files import InputError, open_output
from synthprobe.formats.activation_store import grouped_aliases
from synthprobe.report.compare import bias_tables, classifier_name, compared, depth_figures
from synthprobe.report.data import Analysis, Table, Thumbnails, load_analysis, run_summaries
from synthprobe.report.transfer import transfer_entries


@dataclass(frozen=True)
class ReportInputs:
    """What the report reads: the analysis folders, and the image folders' thumbnails and run.json files."""

    separability: list[Analysis]
    biases: list[Analysis]
    checks: list[Analysis]
    audits: list[Analysis]  # image-check audits, each of one of the checks folders
    transfers: list[Analysis]
    thumbnails: Thumbnails | None  # memoises the thumbnails it makes; their lookup never changes
    runs: list[dict]


def read_inputs(
    separability_dirs: list[Path] = (),
    bias_dirs: list[Path] = (),
    image_dirs: list[Path] = (),
    check_dirs: list[Path] = (),
    allow_changed: bool = False,
    transfer_dirs: list[Path] = (),
) -> ReportInputs:
    if not separability_dirs and not bias_dirs and not transfer_dirs:
        raise InputError("nothing to report: give --separability DIR, --bias DIR and/or --transfer DIR")
    given = [load_analysis(d, ("image-check", "image-check-audit")) for d in check_dirs]
    checks = [a for a in given if a.summary["kind"] == "image-check"]
    audits = [a for a in given if a.summary["kind"] == "image-check-audit"]
    check_audits_match(checks, audits)
    return ReportInputs(
        [load_analysis(d, "separability") for d in separability_dirs],
        [load_analysis(d, "bias-report") for d in bias_dirs],
        checks,
        audits,
        [load_analysis(d, "transfer") for d in transfer_dirs],
        Thumbnails(image_dirs, allow_changed) if image_dirs else None,
        run_summaries(image_dirs),
    )


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


def shown(table: Table, links: dict[Path, str]) -> Table:
    """The table as the page shows it: its top rows, linked to its full CSV where rows were left out."""
    top = table.top_rows()
    return replace(top, href=links.get(top.source.resolve())) if top.partial and top.source is not None else top


def full_table_sources(tables: list[Table]) -> set[Path]:
    """The CSVs of the tables the page shows only in part."""
    return {t.source.resolve() for t in tables if t.shown_in_part and t.source is not None}


def full_table_names(sources: set[Path]) -> dict[Path, str]:
    """Each full CSV's name in ``<report>_files/``: its path below the analysis folders' common parent
    (``sep-layers.csv``; ``resnet50-separability-concepts-layers.csv`` beside another classifier's)."""
    if not sources:
        return {}
    common = Path(os.path.commonpath([source.parent for source in sources])).parent
    return {source: "-".join(source.relative_to(common).parts) for source in sources}


def files_dir(output: str | Path) -> Path:
    output = Path(output)
    return output.with_name(f"{output.stem}_files")


def full_table_links(tables: list[Table], output: str | Path | None) -> dict[Path, str]:
    """{full CSV: href}: relative to the report, or the original file's URI for a report on stdout."""
    sources = full_table_sources(tables)
    if output is None:
        return {}
    if str(output) == "-":
        return {source: source.as_uri() for source in sources}
    return {source: f"{files_dir(output).name}/{name}" for source, name in full_table_names(sources).items()}


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
    flagged = [r for r in read_checks(checks.files["checks"]) if r.get("verdict") in FLAGS]
    return [
        {
            "id": r["id"],
            "thumb": thumbnails.thumb(r["id"], r.get("path")),
            "caption": f"{r['synset']} · {r['group']}: {r['verdict']} (object score {r.get('object_score')})",
        }
        for r in flagged[:limit]
    ]


def audit_of(checks: Analysis, audits: list[Analysis]) -> Analysis | None:
    """The audit (image-check audit) of a checks folder among those given, or None: the judge is unaudited."""
    mine = [a for a in audits if a.summary.get("checks") == str(checks.folder.resolve())]
    return mine[-1] if mine else None


def check_audits_match(checks: list[Analysis], audits: list[Analysis]) -> None:
    """An audit is shown beside the checks it measured; one whose checks folder is not given would vanish."""
    folders = {str(a.folder.resolve()) for a in checks}
    for audit in audits:
        if audit.summary.get("checks") not in folders:
            raise InputError(
                f"{audit.folder} audits {audit.summary.get('checks')}, which is not among the --checks folders; "
                "give both"
            )


def all_tables(inputs: ReportInputs, per_class: list[dict[str, dict[str, Table]]]) -> list[Table]:
    analyses = inputs.separability + inputs.biases + inputs.checks + inputs.audits + inputs.transfers
    return [t for a in analyses for t in a.tables.values()] + [
        t for classes in per_class for tables in classes.values() for t in tables.values()
    ]


def build_context(
    inputs: ReportInputs, title: str = "synthprobe report", notice: str | None = None, output: str | Path | None = None
) -> dict:
    """Everything the template shows. Long tables are cut to their top rows and, given the report's ``output``,
    linked to their full CSVs (``write_page`` copies them there)."""
    thumbnails = inputs.thumbnails
    per_class = [bias_class_tables(bias) for bias in inputs.biases]
    links = full_table_links(all_tables(inputs, per_class), output)

    def cut(analysis: Analysis) -> Analysis:
        return replace(analysis, tables={key: shown(t, links) for key, t in analysis.tables.items()})

    analyses = inputs.separability + inputs.biases + inputs.checks + inputs.audits + inputs.transfers
    return {
        "title": title,
        "notices": ([notice] if notice else []) + toy_warnings(analyses) + store_warnings(analyses),
        "separability": [
            {
                "analysis": cut(a),
                "top_channels": top_channel_images(a, thumbnails),  # from the whole top_images table
                "aliases": hook_aliases(a),
                "classifier": classifier_name(a),
            }
            for a in inputs.separability
        ],
        "biases": [
            {
                "analysis": cut(bias),
                "classes": {
                    name: {key: shown(t, links) for key, t in tables.items()} for name, tables in classes.items()
                },
                "class_keys": {key for tables in classes.values() for key in tables},
                "classifier": classifier_name(bias),
            }
            for bias, classes in zip(inputs.biases, per_class)
        ],
        "comparison": {  # from the whole CSVs
            "figures": depth_figures(inputs.separability) if compared(inputs.separability) else {},
            "tables": bias_tables(inputs.biases) if compared(inputs.biases) else [],
        },
        "checks": [
            {"analysis": cut(a), "flagged": flagged_images(a, thumbnails), "audit": audit_of(a, inputs.audits)}
            for a in inputs.checks
        ],
        "transfers": transfer_entries([cut(t) for t in inputs.transfers], inputs.biases),
        "galleries": thumbnails.galleries() if thumbnails else [],
        "thumbnails": thumbnails.uris if thumbnails else {},
        "runs": inputs.runs,
        "full_tables": sorted(links),
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


def write_page(output: str | Path, html: str, full_tables: list[Path]) -> Path:
    """The HTML, and the full CSVs of its partial tables in ``<report>_files/`` (none for a report on stdout)."""
    if str(output) != "-":
        copies = files_dir(output)
        shutil.rmtree(copies, ignore_errors=True)  # no stale tables from another report
        if full_tables:
            copies.mkdir(parents=True, exist_ok=True)
            for source, name in full_table_names(set(full_tables)).items():
                shutil.copyfile(source, copies / name)
    with open_output(output) as handle:
        handle.write(html)
    return Path(output)


def write_report(
    output: str | Path,
    separability_dirs: list[Path] = (),
    bias_dirs: list[Path] = (),
    image_dirs: list[Path] = (),
    check_dirs: list[Path] = (),
    title: str = "synthprobe report",
    notice: str | None = None,
    allow_changed: bool = False,
    transfer_dirs: list[Path] = (),
) -> Path:
    """read_inputs -> build_context -> render -> write_page: one HTML file (``-`` for stdout)."""
    inputs = read_inputs(separability_dirs, bias_dirs, image_dirs, check_dirs, allow_changed, transfer_dirs)
    context = build_context(inputs, title, notice, output)
    return write_page(output, render(context), context["full_tables"])
