"""Builders and checks that several test modules share; test modules import this package, never each other.

This module holds what serves several tools; helpers.<tool> what serves one tool's test modules.
"""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd

from synthprobe.formats.activation_store import StoreWriter
from synthprobe.formats.prompts import PROMPT_SCHEMA

# Styling hooks and embedded image bytes: what a stylesheet or an image edit changes, not what the page says.
STYLING_ATTRIBUTES = {"class", "style"}
DATA_URI_PAYLOAD = re.compile(r"(data:[\w/+.-]+(?:;[\w=-]+)*),[\w+/=%-]*")
VOID_ELEMENTS = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
STORE_ATTRS = {"model": "resnet50", "weights": "test", "preprocessing": "resize 224"}
# A prompt that must reach every page as text: markup, an ampersand and quotes.
HOSTILE_PROMPT = 'a <script>window.__pwned = 1</script> cat & "dog"'


def fails_with(result, *fragments) -> str:
    """The one-error-line rule, for every test of a bad input: a non-zero exit without a traceback and one short line
    on stderr, ``Error: ...``, naming every fragment (str() of it: paths, numbers); returns that line."""
    assert result.exit_code not in (0, None), result.output
    assert isinstance(result.exception, SystemExit), f"a traceback: {result.exception!r}"
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    for fragment in fragments:
        assert str(fragment) in lines[0], f"{fragment} not in: {lines[0]}"
    assert "BytesIO" not in lines[0] and "Traceback" not in lines[0] and len(lines[0]) < 500, lines[0]
    return lines[0]


def smooth_image(rng: np.random.Generator, size: int = 64) -> np.ndarray:
    """A photo-like RGB image: per channel two crossing triangle waves of random frequency and phase plus a little
    noise, in integer arithmetic only, so that every CPU makes the same pixels (numpy's SIMD sin and cos do not)."""
    y, x = np.mgrid[0:size, 0:size]
    channels = []
    for _ in range(3):
        (fx, fy), (px, py) = rng.integers(1, 6, 2), rng.integers(0, 2 * size, 2)
        channels.append(triangle_wave(fx * x + px, size) + triangle_wave(fy * y + py, size))  # 0 .. 2 * size
    image = np.stack(channels, -1) * 220 // (2 * size) + 18 + rng.integers(-8, 9, (size, size, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def triangle_wave(t: np.ndarray, half_period: int) -> np.ndarray:
    """0 up to ``half_period`` and back down, over and over: a smooth integer ramp."""
    return np.abs(t % (2 * half_period) - half_period)


def integer_normal(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Bell-shaped values of mean 0 and standard deviation about 1 from integer draws only (a sum of three uniform
    integers over an exact division), the same on every CPU; Generator.normal's ziggurat calls exp and log."""
    return rng.integers(-1000, 1001, (3, *shape)).sum(axis=0) / 1000


def write_manifest(folder: Path, rows: list[dict]) -> None:
    """An images.jsonl as sd-generate writes it."""
    (folder / "images.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def prompt_record(**fields) -> dict:
    """A valid prompt record (wn-prompts' output), with ``fields`` changed."""
    return {
        "schema": PROMPT_SCHEMA,
        "id": "a",
        "synset": "bee.n.01",
        "lemma": "bee",
        "group": "concept",
        "target": "bee.n.01",
        "prompt": "a bee",
        "seed": 1,
        **fields,
    }


def build_store(
    path,
    layers: dict[str, np.ndarray],
    synsets,
    groups=None,
    status=None,
    batch=7,
    prompts=None,
    aliases=None,
    templates=None,
):
    """A store whose rows are ``synsets`` (one per image); tiny chunks so that every layer spans several.

    Without ``prompts`` every image is its own unit (empty prompt texts, as for ImageFolder rows); without
    ``templates`` no row has a template.
    """
    n = len(synsets)
    rows = pd.DataFrame(
        {
            "prompt": list(prompts) if prompts is not None else [""] * n,
            "id": [f"img{i:03d}" for i in range(n)],
            "synset": list(synsets),
            "group": list(groups) if groups is not None else ["concept"] * n,
            "target": list(synsets),
            "path": [f"images/{s}/{i:03d}.png" for i, s in enumerate(synsets)],
            "status": list(status) if status is not None else ["ok"] * n,
            "template": list(templates) if templates is not None else [""] * n,
        }
    )
    writer = StoreWriter(
        path,
        attrs={**STORE_ATTRS, "hook_aliases": aliases or {}},
        hook_channels={k: v.shape[1] for k, v in layers.items()},
        pools=("mean",),
        min_chunk_bytes=64,
    )
    for start in range(0, n, batch):
        writer.append(
            rows.iloc[start : start + batch],
            {k: {"mean": v[start : start + batch].astype("float32")} for k, v in layers.items()},
        )
    writer.finish()
    return path


def without_payloads(text: str) -> str:
    """Each data: URI reduced to its media type: ``data:image/png;base64,…``."""
    return DATA_URI_PAYLOAD.sub(r"\1,…", text)


class _ContentOutline(HTMLParser):
    """The page as an indented outline of elements, kept attributes and text; style contents are left out."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.lines: list[str] = []
        self.open: list[str] = []

    def handle_starttag(self, tag, attrs):
        kept = "".join(
            f" {name}" if value is None else f" {name}={json.dumps(without_payloads(value), ensure_ascii=False)}"
            for name, value in attrs
            if name not in STYLING_ATTRIBUTES
        )
        self.lines.append("  " * len(self.open) + tag + kept)
        if tag not in VOID_ELEMENTS:
            self.open.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        if tag not in VOID_ELEMENTS:
            self.open.pop()

    def handle_endtag(self, tag):
        if tag in self.open:
            while self.open.pop() != tag:
                pass

    def handle_data(self, data):
        if "style" in self.open:
            return
        data = without_payloads(data)
        # Preformatted text and scripts keep their lines; elsewhere white space is layout.
        kept = data.splitlines() if {"pre", "script"} & set(self.open) else [" ".join(data.split())]
        self.lines += ["  " * len(self.open) + line.rstrip() for line in kept if line.strip()]


def page_content(html: str) -> str:
    """What an HTML page says (headings, text, tables, links, image alt texts and captions), one line per element or
    text, without its stylesheet, its class and style attributes or the bytes of its embedded images."""
    outline = _ContentOutline()
    outline.feed(html)
    outline.close()
    return "\n".join(outline.lines) + "\n"


HOLD_LOCK = """
import sys, time
from synthprobe.common.locks import exclusive_writer
with exclusive_writer(sys.argv[1]):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
    open(sys.argv[1] + "/done", "w").close()  # the last thing done under the lock
"""


def lock_holder(folder, seconds: float):
    """Another process that holds ``folder``'s writer lock for ``seconds`` (returned once it holds it)."""
    import subprocess
    import sys

    process = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(folder), str(seconds)], stdout=subprocess.PIPE, text=True
    )
    assert process.stdout.readline().strip() == "held"
    return process
