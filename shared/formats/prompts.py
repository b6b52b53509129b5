"""The prompt-record contract (docs/formats.md): JSON Lines, one record per image.

Reading validates every record and names the file and line of the first
problem; writing emits keys in a fixed order so equal inputs give
byte-identical files.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import IO, TypeVar

from synthprobe.common.files import InputError, open_input, open_output

T = TypeVar("T")

# 2: seed_index (which image of its prompt text a record is) and the balanced concept design (docs/formats.md).
PROMPT_SCHEMA = 2
GROUPS = ("concept", "object-only", "context-only", "mixed")
MAX_ID_LENGTH = 200  # ids name files; most file systems allow 255 bytes per name
ID_PATTERN = re.compile(rf"^[A-Za-z0-9._-]{{1,{MAX_ID_LENGTH}}}$")
ID_RULE = f"may only hold letters, digits, '.', '_' and '-', at most {MAX_ID_LENGTH} of them"
SYNSET_PATTERN = re.compile(r"^.+\.[nvasr]\.\d{2,}$")


@dataclass(frozen=True)
class PromptRecord:
    id: str
    synset: str
    lemma: str
    group: str
    target: str
    prompt: str
    seed: int
    negative_prompt: str | None = None
    template: str | None = None
    seed_index: int | None = None  # 0 .. images of this prompt text - 1: the records of one text differ in seed
    schema: int = field(default=PROMPT_SCHEMA)

    def to_json(self) -> dict:
        record = {k: v for k, v in asdict(self).items() if v is not None}
        return {"schema": record.pop("schema"), **record}


REQUIRED = {"id": str, "synset": str, "lemma": str, "group": str, "target": str, "prompt": str, "seed": int}
OPTIONAL = {"negative_prompt": str, "template": str, "seed_index": int}


def brief_text(text: str, limit: int = 60) -> str:
    """A value for a one-line message, cut to ``limit`` characters."""
    return repr(text) if len(text) <= limit else f"{text[:limit]!r}... ({len(text)} characters)"


def safe_id(text: str) -> str:
    """Turn any text into a string usable as a record id and a file name."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", text)


def validate_prompt(data: object) -> PromptRecord:
    """Check one decoded record against the contract; raise ValueError naming the field."""
    if not isinstance(data, dict):
        raise ValueError(f"expected a JSON object, got {type(data).__name__}")
    if "schema" not in data:
        raise ValueError(
            f"missing field 'schema' (prompt records of this version have \"schema\": {PROMPT_SCHEMA}); "
            "make the file with wn-prompts, or add the field"
        )
    schema = data["schema"]
    if schema != PROMPT_SCHEMA:
        raise ValueError(
            f"prompt schema {schema!r}, but this version reads schema {PROMPT_SCHEMA} only; "
            "make the file again with wn-prompts"
        )
    for name, kind in REQUIRED.items():
        if name not in data:
            raise ValueError(f"missing field {name!r}")
        value = data[name]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ValueError(f"field {name!r} must be {kind.__name__}, got {value!r}")
    for name, kind in OPTIONAL.items():
        value = data.get(name)
        if value is not None and (not isinstance(value, kind) or (kind is int and isinstance(value, bool))):
            raise ValueError(f"field {name!r} must be {kind.__name__}, got {data[name]!r}")
    if not ID_PATTERN.match(data["id"]):
        raise ValueError(f"id {brief_text(data['id'])} {ID_RULE}")
    if data["group"] not in GROUPS:
        raise ValueError(f"group {data['group']!r} is not one of {', '.join(GROUPS)}")
    for name in ("synset", "target"):
        if not SYNSET_PATTERN.match(data[name]):
            raise ValueError(f"{name} {data[name]!r} is not a synset name like 'bee.n.01'")
    if not data["prompt"].strip():
        raise ValueError("prompt is empty")
    if not 0 <= data["seed"] < 2**63:
        raise ValueError(f"seed {data['seed']} is out of range 0..2**63-1")
    if data.get("seed_index") is not None and data["seed_index"] < 0:
        raise ValueError(f"seed_index {data['seed_index']} is negative")
    return PromptRecord(**{k: data.get(k) for k in (*REQUIRED, *OPTIONAL)})


def parse_jsonl(handle: IO[str], source: str) -> Iterator[tuple[int, dict]]:
    """Yield (line number, decoded object) for each non-blank line, naming file:line on bad JSON."""
    lineno = 0
    try:
        for lineno, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"{source}:{lineno}: not valid JSON ({exc.msg})") from None
            yield lineno, data
    except UnicodeDecodeError:  # decoding runs ahead of the lines, so the line number is approximate
        where = f" after line {lineno}" if lineno else ""
        raise InputError(f"{source}: not UTF-8 text{where} (a binary file?)") from None


def read_records(
    path: str | os.PathLike, validate: Callable[[dict], T], duplicate: str, empty: str
) -> list[tuple[int, T]]:
    """The validated records of a JSON Lines file (``-`` is stdin) with their line numbers; ids must be unique.

    ``validate`` turns a decoded line into a record with an ``id`` (ValueError: what is wrong); ``duplicate`` words
    a second record of one id (``{id}`` is replaced), ``empty`` a file without records.
    """
    source = "<stdin>" if str(path) == "-" else str(path)
    records: list[tuple[int, T]] = []
    seen: dict[str, int] = {}
    with open_input(path) as handle:
        for lineno, data in parse_jsonl(handle, source):
            try:
                record = validate(data)
            except ValueError as exc:
                raise InputError(f"{source}:{lineno}: {exc}") from None
            if record.id in seen:
                first = seen[record.id]
                raise InputError(f"{source}:{lineno}: {duplicate.format(id=repr(record.id))} (first on line {first})")
            seen[record.id] = lineno
            records.append((lineno, record))
    if not records:
        raise InputError(f"{source}: {empty}")
    return records


def read_prompts(path: str | os.PathLike) -> list[PromptRecord]:
    """Read and validate a prompt file (``-`` is stdin). Ids must be unique."""
    return [record for _, record in read_records(path, validate_prompt, "duplicate id {id}", "no prompt records")]


def dumps(record: dict) -> str:
    return json.dumps(record, ensure_ascii=False, separators=(", ", ": "))


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> int:
    """Write dicts as JSON Lines atomically (``-`` is stdout); return the count."""
    count = 0
    with open_output(path) as handle:
        for row in rows:
            handle.write(dumps(row) + "\n")
            count += 1
    return count


def write_prompts(path: str | os.PathLike, records: Iterable[PromptRecord]) -> int:
    records = list(records)
    ids = [r.id for r in records]
    if len(set(ids)) != len(ids):
        duplicate = next(i for i in ids if ids.count(i) > 1)
        raise InputError(f"two records share the id {duplicate!r}")
    return write_jsonl(path, (r.to_json() for r in records))
