"""The image-check contract (docs/formats.md): ``checks.jsonl``, one verdict per image id and judge.

image-check writes it; the analyses read it (``--checks``, ``--drop``) and so
does the report. Rows keep the raw scores, so a reader can re-threshold them.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from synthprobe.common.files import InputError, atomic_write
from synthprobe.formats.prompts import brief_text, dumps, parse_jsonl

log = logging.getLogger("synthprobe")

CHECKS_SCHEMA = 1
CHECKS_FILE = "checks.jsonl"
VERDICTS = ("ok", "object-missing", "object-leaked", "unscored")
FLAGS = ("object-missing", "object-leaked")


def read_checks(path: str | Path) -> list[dict]:
    """The rows of a checks.jsonl, with file:line on the first bad one; another schema is refused."""
    rows = []
    with open(path, encoding="utf-8") as handle:
        for lineno, row in parse_jsonl(handle, str(path)):
            if not isinstance(row, dict) or not {"id", "judge", "verdict"} <= row.keys():
                raise InputError(
                    f"{path}:{lineno}: not an image-check row (schema {CHECKS_SCHEMA}, id, judge, verdict)"
                )
            if row.get("schema") != CHECKS_SCHEMA:
                raise InputError(
                    f"{path}:{lineno}: image-check schema {row.get('schema')!r}, but this version reads schema "
                    f"{CHECKS_SCHEMA}; delete {path} and rerun image-check to score the images again"
                )
            problem = row_problem(row)
            if problem:
                raise InputError(f"{path}:{lineno}: {problem}; delete {path} and rerun image-check")
            rows.append(row)
    return rows


TEXT_FIELDS = ("id", "judge", "synset", "group", "target", "path", "sha256", "contrast")
SCORE_FIELDS = ("object_score", "context_score", "missing_below", "leaked_above")


def row_problem(row: dict) -> str | None:
    """What makes a row unusable: a verdict not in VERDICTS, a text field that is not text, a score that is not a
    number (or null); None for a good row."""
    if row["verdict"] not in VERDICTS:
        return f"verdict {brief_text(str(row['verdict']))} is not one of {', '.join(VERDICTS)}"
    for name in TEXT_FIELDS:
        if name in row and not isinstance(row[name], str):
            return f"{name} is {brief_text(str(row[name]))}, not a string"
    for name in SCORE_FIELDS:
        value = row.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            return f"{name} is {brief_text(str(value))}, not a number or null"
    return None


def write_checks(path: Path, rows: list[dict]) -> None:
    with atomic_write(path) as handle:
        for row in rows:
            handle.write(dumps(row) + "\n")


# ---- the analyses' use of a checks file ------------------------------------------------------


def checked_rows(
    rows: pd.DataFrame, checks_path: str | Path | None, drop: tuple[str, ...]
) -> tuple[pd.Series, pd.Series, dict | None]:
    """Which store rows an analysis keeps, which any judge flagged (boolean masks on ``rows``), and the
    counts for its summary.json.

    An image is dropped when any judge gave it a verdict in ``drop``; with no
    checks file every row is kept. The counts per synset and group say how many
    images each flag verdict marked (dropped or not) and how many were dropped.
    """
    if checks_path is None:
        if drop:
            raise InputError("--drop needs --checks CHECKS.jsonl (the image-check output)")
        return pd.Series(True, index=rows.index), pd.Series(False, index=rows.index), None
    checks = pd.DataFrame(read_checks(checks_path), columns=["id", "judge", "verdict"])
    ids = set(rows["id"])
    if not ids & set(checks["id"]):
        raise InputError(
            f"{checks_path} holds checks of other images (none of its ids is among the {len(rows)} images of the store)"
        )
    flagged = {verdict: set(checks.loc[checks["verdict"] == verdict, "id"]) for verdict in FLAGS}
    dropped = set().union(*(flagged[v] for v in drop))
    keep = ~rows["id"].isin(dropped)
    flagged_any = rows["id"].isin(set().union(*flagged.values()))
    unchecked = int((~rows["id"].isin(set(checks["id"]))).sum())
    if unchecked:
        log.warning("%d of %d images have no check in %s; they are kept", unchecked, len(rows), checks_path)
    table = rows.assign(
        **{v: rows["id"].isin(flagged[v]) for v in FLAGS}, dropped=~keep, checked=rows["id"].isin(set(checks["id"]))
    )
    counts = [
        {
            "synset": synset,
            "group": group,
            "n": len(part),
            "checked": int(part["checked"].sum()),
            **{v: int(part[v].sum()) for v in FLAGS},
            "dropped": int(part["dropped"].sum()),
        }
        for (synset, group), part in table.groupby(["synset", "group"], sort=True)
    ]
    summary = {
        "file": str(checks_path),
        "judges": sorted(set(checks["judge"])),
        "drop": list(drop),
        "n_unchecked": unchecked,
        "n_dropped": int((~keep).sum()),
        "counts": counts,
    }
    return keep, flagged_any, summary
