"""Core WordNet: the ~5,000 most used word senses, as published by Princeton.

A copy ships in the package (data/core-wordnet.txt, licence notice beside it),
so the prompt stage works offline; a path or URL can replace it. Line format:
``POS [sense_key] [lemma] gloss words`` (CRLF endings). Lines whose sense key WordNet
does not know are reported, not fatal.
"""

from __future__ import annotations

import hashlib
import logging
import re
import urllib.request
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from synthprobe.common.files import InputError, atomic_write_bytes, cache_root, error_line, os_reason

log = logging.getLogger("synthprobe")

CORE_WORDNET_URL = "https://wordnetcode.princeton.edu/standoff-files/core-wordnet.txt"
LINE_PATTERN = re.compile(r"^(?P<pos>[nva])\s+\[(?P<key>[^\]\s]+)\]\s+\[(?P<lemma>[^\]]+)\]\s*(?P<gloss>.*)$")


@dataclass(frozen=True)
class CoreEntry:
    lineno: int
    pos: str
    sense_key: str
    lemma: str
    gloss_words: str


@dataclass
class CoreResolution:
    synsets: list  # nltk Synsets in file order, without repeats
    unresolved: list[CoreEntry]

    def report(self, examples: int = 5) -> str:
        shown = ", ".join(f"line {e.lineno} [{e.sense_key}]" for e in self.unresolved[:examples])
        return f"{len(self.unresolved)} Core WordNet lines did not resolve to a synset (e.g. {shown})"


def core_wordnet_file(source: str | None) -> Path:
    """The bundled list when SOURCE is None, a download for an http(s) URL, else the local path."""
    if source is None:
        return Path(str(resources.files("synthprobe.data") / "core-wordnet.txt"))
    if source.startswith(("http://", "https://")):
        return fetch_core_wordnet(source)
    return Path(source)


def fetch_core_wordnet(url: str = CORE_WORDNET_URL, cache_dir: Path | None = None, timeout: float = 30) -> Path:
    """Download the list once into the cache (one file per URL); later calls read the cached copy."""
    url_hash = hashlib.sha256(url.encode()).hexdigest()[:16]
    target = (cache_dir or cache_root()) / f"core-wordnet-{url_hash}.txt"
    if target.is_file():
        return target
    log.info("Downloading Core WordNet from %s", url)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            data = response.read()
    except OSError as exc:
        raise InputError(
            f"cannot download Core WordNet from {url} ({error_line(exc)}); "
            "leave out --core-wordnet to use the bundled copy, or pass a local PATH"
        ) from None
    atomic_write_bytes(target, data)
    return target


def parse_core_wordnet(path: str | Path) -> list[CoreEntry]:
    """Parse every line; a line that does not fit the format is an error naming file:line."""
    entries = []
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"cannot read Core WordNet file {path}: {os_reason(exc)}") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text ({exc.reason})") from None
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        match = LINE_PATTERN.match(line.strip())
        if not match:
            raise InputError(
                f"{path}:{lineno}: not a Core WordNet line ('POS [sense_key] [lemma] gloss'): {line.strip()[:60]!r}"
            )
        entries.append(CoreEntry(lineno, match["pos"], match["key"], match["lemma"], match["gloss"].strip()))
    if not entries:
        raise InputError(f"{path}: no Core WordNet entries")
    return entries


def resolve_entries(wn, entries: list[CoreEntry]) -> CoreResolution:
    """Map sense keys to synsets with ``lemma_from_key``; collect those that fail."""
    from nltk.corpus.reader.wordnet import WordNetError

    synsets, seen, unresolved = [], set(), []
    for entry in entries:
        try:
            synset = wn.lemma_from_key(entry.sense_key).synset()
        except (WordNetError, ValueError, KeyError, IndexError, AttributeError):
            unresolved.append(entry)
            continue
        if synset.name() not in seen:
            seen.add(synset.name())
            synsets.append(synset)
    return CoreResolution(synsets, unresolved)
