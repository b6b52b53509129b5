"""wn-prompts concepts' design: every synset gets the same templates the same number of times (docs/methods.md,
"The design"), each prompt text with --seeds-per-prompt seeds; the prompt file's schema."""

from __future__ import annotations

import json

import pytest
from helpers import prompt_record

from synthprobe.common.files import InputError
from synthprobe.formats.prompts import ID_PATTERN, read_prompts
from synthprobe.tools.wn_prompts import main
from synthprobe.wn_prompts import prompts as P

from .test_prompts import error_line, records_of

SIX_SYNSETS = "dog.n.01,cat.n.01,car.n.01,apple.n.01,chair.n.01,tree.n.01"


def templates_by_synset(records: list[dict]) -> set[tuple[str, ...]]:
    """The distinct template lists (in record order, repeats kept) that the synsets got."""
    per_synset: dict[str, list[str]] = {}
    for r in records:
        per_synset.setdefault(r["synset"], []).append(r["template"])
    return {tuple(t) for t in per_synset.values()}


def test_per_synset_below_the_template_count_gives_every_synset_the_same_templates(wn, cli):
    """The demo's --per-synset 4: the same seeded 4 of the 8 templates for every synset, once each."""
    records = records_of(cli(main, "concepts", "--synsets", SIX_SYNSETS, "--per-synset", 4, "--seed", 5).stdout)
    (templates,) = templates_by_synset(records)
    assert len(templates) == len(set(templates)) == 4 and len(records) == 6 * 4
    bundled = [t.id for t in P.load_templates()]
    assert list(templates) == [t for t in bundled if t in templates]  # in file order
    assert all(r["seed_index"] == 0 for r in records)
    other = records_of(cli(main, "concepts", "--synsets", SIX_SYNSETS, "--per-synset", 4, "--seed", 6).stdout)
    assert templates_by_synset(other) != {templates}  # the subset is seeded


def test_per_synset_above_the_template_count_gives_whole_rounds(wn, cli, caplog):
    """16 with 8 templates: two rounds, each text twice with other seeds; 20 is rounded down to 16, said once."""
    args = ("concepts", "--synsets", "dog.n.01,cat.n.01", "--seed", 1)
    sixteen = records_of(cli(main, *args, "--per-synset", 16).stdout)
    (templates,) = templates_by_synset(sixteen)
    assert len(sixteen) == 32 and sorted(templates) == sorted(2 * [t.id for t in P.load_templates()])
    by_text = {}
    for r in sixteen:
        by_text.setdefault((r["synset"], r["prompt"]), []).append(r)
    assert len(by_text) == 16
    for group in by_text.values():
        assert [r["seed_index"] for r in group] == [0, 1] and len({r["seed"] for r in group}) == 2
    caplog.clear()
    assert records_of(cli(main, *args, "--per-synset", 20).stdout) == sixteen
    rounding = [r.message for r in caplog.records if "whole number of rounds" in r.message]
    assert len(rounding) == 1 and "16 per synset (2 round(s))" in rounding[0], rounding


def test_seeds_per_prompt_renders_each_text_with_several_seeds(wn, cli):
    records = records_of(
        cli(main, "concepts", "--synsets", "dog.n.01,cat.n.01", "--per-synset", 3, "--seeds-per-prompt", 3).stdout
    )
    assert len(records) == 2 * 3 * 3
    units = {}
    for r in records:
        units.setdefault((r["synset"], r["template"]), []).append(r)
    assert len(units) == 6
    for group in units.values():
        assert len({r["prompt"] for r in group}) == 1
        assert [r["seed_index"] for r in group] == [0, 1, 2]
        assert len({r["seed"] for r in group}) == len({r["id"] for r in group}) == 3
    assert all(ID_PATTERN.match(r["id"]) for r in records)
    assert records[0]["id"] == f"{records[0]['synset']}-{records[0]['template']}-s00"


def test_template_ids_must_differ(wn, tmp_path, cli):
    templates = tmp_path / "t.json"
    twins = [{"id": "photo", "text": "a {lemma}"}, {"id": "photo", "text": "an old {lemma}"}]
    templates.write_text(json.dumps({"templates": twins}))
    line = error_line(cli(main, "concepts", "--synsets", "dog.n.01", "--templates", templates, exit_code=None))
    assert "template id 'photo' names two templates" in line


def test_prompt_file_of_another_schema_says_how_to_remake_it(tmp_path):
    path = tmp_path / "old.jsonl"
    path.write_text(json.dumps(prompt_record(schema=1)) + "\n")
    with pytest.raises(InputError, match=rf"{path}:1: prompt schema 1, .* reads schema 2 only; make the file again"):
        read_prompts(path)
    path.write_text(json.dumps(prompt_record(seed_index=-1)) + "\n")
    with pytest.raises(InputError, match="seed_index -1 is negative"):
        read_prompts(path)
