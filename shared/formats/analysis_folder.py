"""The analysis-folder contract (docs/formats.md): what separability, bias-report and image-check leave for report.

A folder of CSV tables, PNG figures and ``summary.json``, written last, so its
presence marks the folder complete. summary.json always holds::

    schema      the version of this kind's summary (KINDS)
    kind        separability | bias-report | image-check | image-check-audit | transfer
    ...         the tool's own keys
    tables      {key: {file, rows, description}}, each file a CSV in the folder
    figures     {key: file}, each file a PNG in the folder
    provenance  {synthprobe: version, inputs: {name: path or null}}

One writer (``write_summary``) and one reader (``read_summary``) for all three kinds; ``provenance_of``
and ``table_entry`` build the entries.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from synthprobe import __version__
from synthprobe.common.files import InputError, atomic_write, error_line, read_json

SUMMARY_FILE = "summary.json"
# kind -> the summary schema this version writes and reads; a reader refuses any other.
KINDS = {"separability": 3, "bias-report": 3, "image-check": 2, "image-check-audit": 1, "transfer": 1}
WRITER = {"image-check-audit": "image-check audit"}  # the command that writes a kind, where it is not the kind


@dataclass(frozen=True)
class TableEntry:
    file: str  # as the summary names it
    path: Path  # resolved, inside the folder
    rows: int | None
    description: str


@dataclass
class AnalysisSummary:
    """A read summary.json: the whole object, and its tables and figures checked."""

    folder: Path
    summary: dict
    kind: str
    tables: dict[str, TableEntry]
    figures: dict[str, Path]  # key -> the PNG's resolved path, inside the folder

    def file(self, field: str, default: str) -> Path:
        """A file the summary names under ``files.<field>`` (or ``default``), confined to the folder."""
        files = self.summary.get("files") or {}
        name = files.get(field, default) if isinstance(files, dict) else default
        return confined(self.folder, name, f"files.{field}")


def table_entry(file: str, rows: int, description: str) -> dict:
    return {"file": file, "rows": int(rows), "description": description}


def provenance_of(**inputs: str | Path | None) -> dict:
    """What made the folder: synthprobe's version and each input as given (path or null)."""
    return {"synthprobe": __version__, "inputs": {k: None if v is None else str(v) for k, v in inputs.items()}}


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def write_summary(
    out: str | Path,
    kind: str,
    fields: dict,
    *,
    tables: dict[str, dict],
    figures: dict[str, str],
    provenance: dict,
) -> dict:
    """Write ``out/summary.json`` (atomically, after every table and figure it names) and return it.

    ``fields`` are the tool's own keys; ``schema``, ``kind``, ``tables``, ``figures`` and
    ``provenance`` are set here.
    """
    out = Path(out)
    missing = [e["file"] for e in tables.values() if not (out / e["file"]).is_file()]
    missing += [f for f in figures.values() if not (out / f).is_file()]
    if missing:  # the summary marks the folder complete: everything it names is written first
        raise RuntimeError(f"{out}: {', '.join(missing)} not written before {SUMMARY_FILE}")
    summary = {
        "schema": KINDS[kind],
        "kind": kind,
        **fields,
        "tables": tables,
        "figures": dict(figures),
        "provenance": provenance,
    }
    with atomic_write(out / SUMMARY_FILE) as handle:
        handle.write(json.dumps(summary, indent=2, ensure_ascii=False, default=_json_default) + "\n")
    return summary


def read_summary(folder: str | Path, expected_kind: str | tuple[str, ...] | None = None) -> AnalysisSummary:
    """An analysis folder's summary.json, with its kind, schema, tables and figures checked.

    Every file the summary names must lie inside ``folder`` (no absolute path, no ``..``, no symlink out): a
    folder received from someone else cannot make a reader open another file of the user's.
    """
    folder = Path(folder)
    path = folder / SUMMARY_FILE
    if not path.is_file():
        raise InputError(
            f"{folder} is not an analysis folder (no {SUMMARY_FILE}); "
            "run separability, bias-report or image-check first"
        )
    summary = read_json(path)
    if not isinstance(summary, dict):
        raise InputError(f"{path}: not a summary (a JSON object); rerun separability, bias-report or image-check")
    kind = check_kind(summary, path, expected_kind)
    try:
        tables = {
            str(key): TableEntry(
                entry["file"],
                confined(folder, entry["file"], f"tables.{key}.file"),
                _rows(entry.get("rows")),
                str(entry.get("description") or ""),
            )
            for key, entry in _mapping(summary.get("tables", {})).items()
        }
        figures = {
            str(key): confined(folder, file, f"figures.{key}")
            for key, file in _mapping(summary.get("figures", {})).items()
        }
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise InputError(f"{path}: its tables or figures are not as {kind} writes them ({error_line(exc)})") from None
    return AnalysisSummary(folder, summary, kind, tables, figures)


def check_kind(summary: dict, path: Path, expected_kind: str | tuple[str, ...] | None) -> str:
    kind = summary.get("kind")
    if kind not in KINDS:
        raise InputError(
            f"{path}: kind {kind!r} is not one of {', '.join(KINDS)}; rerun the tool that wrote it with this version"
        )
    expected = (expected_kind,) if isinstance(expected_kind, str) else expected_kind
    if expected is not None and kind not in expected:
        raise InputError(f"{path}: a {kind} folder, given where a {' or '.join(expected)} folder belongs")
    if summary.get("schema") != KINDS[kind]:
        raise InputError(
            f"{path}: schema {summary.get('schema')!r}, but this version reads {kind} schema {KINDS[kind]}; "
            f"rerun {WRITER.get(kind, kind)} to write the folder again"
        )
    return kind


def confined(folder: Path, name, field: str) -> Path:
    """``folder / name`` resolved, refused unless it stays inside ``folder`` (one line naming the summary field)."""
    where = f"{folder / SUMMARY_FILE}: {field}"
    if not isinstance(name, str) or not name:
        raise InputError(f"{where} must be a file name, not {name!r}")
    relative = Path(name)
    if relative.is_absolute() or ".." in relative.parts:
        raise InputError(f"{where} names {name!r}, outside the folder; an analysis folder's files stay inside it")
    path = (folder / relative).resolve()
    if not path.is_relative_to(folder.resolve()):
        raise InputError(f"{where} names {name!r}, a link out of the folder; an analysis folder's files stay inside it")
    return path


def _mapping(value) -> dict:
    if not isinstance(value, dict):
        raise TypeError(f"expected an object of file entries, not {value!r}")
    return value


def _rows(rows) -> int | None:
    if rows is not None and (not isinstance(rows, int) or isinstance(rows, bool)):
        raise TypeError(f"rows must be a count, not {rows!r}")
    return rows
