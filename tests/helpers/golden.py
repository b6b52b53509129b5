"""Golden files: every one goes through Golden (the ``golden`` fixture), compared with tests/golden/NAME or rewritten
with ``pytest --regen-goldens`` (scripts/regen-goldens)."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

GOLDEN_DIR = Path(__file__).parent.parent / "golden"


class Golden:
    """Every golden file goes through here: compared, or rewritten with --regen-goldens."""

    def __init__(self, regen: bool):
        self.regen = regen

    def check(self, name: str, actual: str) -> None:
        """Compare text whose content is exact (prompt files, layouts, integer tables) with tests/golden/NAME."""
        expected = self._expected(name, actual)
        assert actual == expected, (
            f"output differs from golden {GOLDEN_DIR / name}; if the change is intended, run scripts/regen-goldens"
        )

    def check_close(
        self, name: str, actual: str, *, rtol: float = 1e-4, atol: float = 1e-8, masked: tuple[str, ...] = ()
    ) -> None:
        """Compare JSON (NAME ends .json), JSON Lines (.jsonl) or CSV (.csv) with tests/golden/NAME: floats within
        ``rtol`` / ``atol`` (a model's or a float pipeline's output differs in its last digits between CPUs, instruction
        sets and thread counts), everything else exactly. The values of the keys or columns in ``masked`` (hashes of
        model-made images, version strings) are stored and compared as ``<masked>``."""
        kind = Path(name).suffix
        masked_actual = dump_values(kind, mask_values(load_values(kind, actual), set(masked)))
        expected = load_values(kind, self._expected(name, masked_actual))
        where = f"golden {GOLDEN_DIR / name} (if the change is intended, run scripts/regen-goldens)"
        assert_values_close(expected, load_values(kind, masked_actual), rtol, atol, where)

    def _expected(self, name: str, actual: str) -> str:
        path = GOLDEN_DIR / name
        if self.regen:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(actual, encoding="utf-8")
        assert path.is_file(), f"golden file {path} is missing; run scripts/regen-goldens"
        return path.read_text(encoding="utf-8")


MASK = "<masked>"


def load_values(kind: str, text: str):
    """JSON as its value, JSON Lines as a list of values, CSV as a list of rows (dicts; cells that are numbers as
    numbers)."""
    if kind == ".json":
        return json.loads(text)
    if kind == ".jsonl":
        return [json.loads(line) for line in text.splitlines()]
    if kind == ".csv":
        return [{key: csv_cell(cell) for key, cell in row.items()} for row in csv.DictReader(io.StringIO(text))]
    raise ValueError(f"no numeric comparison for {kind} files")


def dump_values(kind: str, values) -> str:
    if kind == ".json":
        return json.dumps(values, indent=1) + "\n"
    if kind == ".jsonl":
        return "".join(json.dumps(value) + "\n" for value in values)
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(values[0]) if values else [], lineterminator="\n")
    writer.writeheader()
    writer.writerows(values)
    return text.getvalue()


def csv_cell(cell: str):
    for number in (int, float):
        try:
            return number(cell)
        except ValueError:
            pass
    return cell


def mask_values(values, masked: set[str]):
    """``values`` with the value of every key in ``masked``, at any depth, replaced by MASK."""
    if isinstance(values, dict):
        return {key: MASK if key in masked else mask_values(value, masked) for key, value in values.items()}
    if isinstance(values, list):
        return [mask_values(value, masked) for value in values]
    return values


def assert_values_close(expected, actual, rtol: float, atol: float, where: str) -> None:
    """Equal structure and equal text; numbers equal within the tolerance where either is a float."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        assert list(actual) == list(expected), f"{where}: keys {list(actual)} != {list(expected)}"
        for key in expected:
            assert_values_close(expected[key], actual[key], rtol, atol, f"{where}: {key}")
    elif isinstance(expected, list) and isinstance(actual, list):
        assert len(actual) == len(expected), f"{where}: {len(actual)} items != {len(expected)}"
        for index, (want, got) in enumerate(zip(expected, actual)):
            assert_values_close(want, got, rtol, atol, f"{where}[{index}]")
    elif is_number(expected) and is_number(actual) and float in (type(expected), type(actual)):
        both_nan = math.isnan(actual) and math.isnan(expected)
        close = both_nan or math.isclose(actual, expected, rel_tol=rtol, abs_tol=atol)
        assert close, f"{where}: {actual} != {expected} within rtol {rtol}, atol {atol}"
    else:
        assert type(actual) is type(expected) and actual == expected, f"{where}: {actual!r} != {expected!r}"


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
