"""wn-prompts: concept and bias prompt records, WordNet loading, Core WordNet parsing."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from helpers import prompt_record

from synthprobe.common.files import InputError
from synthprobe.common.wordnet import DICT_FILES, build_nltk_layout, load_wordnet
from synthprobe.formats import bias_classes
from synthprobe.formats.prompts import ID_PATTERN, read_prompts
from synthprobe.tools.wn_prompts import main
from synthprobe.wn_prompts import prompts as P
from synthprobe.wn_prompts.core_wordnet import parse_core_wordnet, resolve_entries

SMALL_CORE = Path(__file__).parent / "data" / "core-wordnet-small.txt"


def records_of(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]


def test_concepts_golden(wn, golden, tmp_path, cli):
    out = tmp_path / "concepts.jsonl"
    args = ("--n-synsets", 4, "--per-synset", 3, "--seeds-per-prompt", 2, "--seed", 7)
    cli(main, "concepts", "--core-wordnet", SMALL_CORE, *args, "-o", out)
    golden.check("wn_prompts/concepts-small.jsonl", out.read_text())


def test_bias_golden(wn, golden, cli):
    result = cli(main, "bias", "--classes", "bee,frog", "--per-group", 2, "--seeds-per-prompt", 2, "--seed", 3)
    golden.check("wn_prompts/bias-bee-frog.jsonl", result.stdout)


def test_same_arguments_give_byte_identical_output(wn, tmp_path, cli):
    args = ("concepts", "--core-wordnet", SMALL_CORE, "--n-synsets", 3, "--per-synset", 4)
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    cli(main, *args, "-o", first)
    cli(main, *args, "-o", second)
    assert first.read_bytes() == second.read_bytes()
    assert cli(main, *args, "--seed", 1).stdout != first.read_text()


def test_concepts_on_full_core_wordnet(wn, core_wordnet_path, cli):
    records = records_of(
        cli(main, "concepts", "--core-wordnet", core_wordnet_path, "--n-synsets", 40, "--per-synset", 2).stdout
    )
    synsets = {r["synset"] for r in records}
    assert len(records) == 80 and len(synsets) == 40
    assert len({r["id"] for r in records}) == 80 and all(ID_PATTERN.match(r["id"]) for r in records)
    assert all(P.is_picturable(wn.synset(name)) for name in synsets)
    bias_synsets = {bias_classes.load_bias_class(c).synset for c in bias_classes.DEFAULT_BIAS_CLASSES}
    assert not synsets & bias_synsets
    assert all(r["group"] == "concept" and r["target"] == r["synset"] for r in records)
    assert len({tuple(r["template"] for r in records if r["synset"] == name) for name in synsets}) == 1


def test_concepts_default_to_the_bundled_core_wordnet(wn, core_wordnet_path, cli):
    assert core_wordnet_path.is_relative_to(Path(P.__file__).resolve().parents[2])
    notice = " ".join((core_wordnet_path.parent / "core-wordnet.LICENSE").read_text().split())
    assert "WordNet 3.0 Copyright 2006 by Princeton University" in notice
    args = ("concepts", "--n-synsets", 5, "--per-synset", 1)
    assert cli(main, *args).stdout == cli(main, *args, "--core-wordnet", core_wordnet_path).stdout


def test_core_wordnet_url_is_downloaded_once(wn, tmp_path, monkeypatch, cli):
    import http.server
    import threading

    requests = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            requests.append(self.path)
            body = SMALL_CORE.read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("SYNTHPROBE_CACHE", str(tmp_path / "cache"))
    url = f"http://127.0.0.1:{server.server_port}/core-wordnet.txt"
    try:
        args = ("concepts", "--n-synsets", 2, "--per-synset", 1)
        first = cli(main, *args, "--core-wordnet", url).stdout
        assert (
            first
            == cli(main, *args, "--core-wordnet", url).stdout
            == cli(main, *args, "--core-wordnet", SMALL_CORE).stdout
        )
    finally:
        server.shutdown()
    assert requests == ["/core-wordnet.txt"]


def test_core_wordnet_resolution_counts(wn, core_wordnet_path):
    entries = parse_core_wordnet(core_wordnet_path)
    resolution = resolve_entries(wn, entries)
    nouns = [e for e in entries if e.pos == "n"]
    assert len(entries) == 4997 and len(nouns) == 3299
    # 30 keys of the published list are not WordNet 3.0 sense keys (e.g. few%1:23:00::).
    assert len(resolution.unresolved) == 30
    assert sum(e.pos == "n" for e in resolution.unresolved) == 6
    assert "few%1:23:00::" in {e.sense_key for e in resolution.unresolved}
    picturable = [s for s in resolution.synsets if P.is_picturable(s)]
    assert len(picturable) == 849  # of 3,293 resolved noun senses


def test_unresolved_lines_are_reported_not_fatal(wn):
    resolution = resolve_entries(wn, parse_core_wordnet(SMALL_CORE))
    assert [e.lemma for e in resolution.unresolved] == ["nosuchword"]
    assert "line 14 [nosuchword%1:05:00::]" in resolution.report()
    assert "chair.n.01" in {s.name() for s in resolution.synsets}


def test_picturable_uses_wordnet_not_a_list(wn):
    assert P.is_picturable(wn.synset("dog.n.01"))
    assert P.is_picturable(wn.synset("apple.n.01"))
    assert not P.is_picturable(wn.synset("idea.n.01"))
    assert not P.is_picturable(wn.synset("chair.n.02"))  # professorship


def test_explicit_synsets_and_file(wn, tmp_path, cli):
    listing = tmp_path / "synsets.txt"
    listing.write_text("dog.n.01  # a comment\n\ncat.n.01\n")
    from_file = records_of(cli(main, "concepts", "--synsets", f"@{listing}", "--per-synset", 1).stdout)
    from_list = records_of(cli(main, "concepts", "--synsets", "dog.n.01,cat.n.01", "--per-synset", 1).stdout)
    assert from_file == from_list
    assert [r["synset"] for r in from_list] == ["dog.n.01", "cat.n.01"]


def test_bias_records_cover_groups_and_seeds(wn, cli):
    records = records_of(cli(main, "bias", "--per-group", 4, "--seeds-per-prompt", 3).stdout)
    assert len(records) == 5 * 3 * 4 * 3
    for group in bias_classes.BIAS_GROUPS:
        assert sum(r["group"] == group for r in records) == 5 * 4 * 3
    assert {r["target"] for r in records} == {
        "bee.n.01",
        "frog.n.01",
        "airplane.n.01",
        "guitar.n.01",
        "strawberry.n.01",
    }
    assert len({r["seed"] for r in records}) == len(records)


def test_context_only_records_name_the_object_as_negative_prompt(wn, cli):
    records = records_of(cli(main, "bias", "--classes", "frog,airplane", "--per-group", 2).stdout)
    negatives = {(r["target"], r["group"]): r.get("negative_prompt") for r in records}
    assert negatives[("frog.n.01", "context-only")] == "frog, toad, toad frog, anuran, batrachian, salientian"
    # The extra synsets count as the class too, so they are named; WordNet's underscores become spaces.
    assert negatives[("airplane.n.01", "context-only")] == "airplane, aeroplane, plane, warplane, military plane"
    assert all(negatives[(t, g)] is None for t, g in negatives if g != "context-only")
    args = ("bias", "--classes", "frog,airplane", "--per-group", 2)
    plain = records_of(cli(main, *args, "--no-negative-prompts").stdout)
    assert plain == [{k: v for k, v in r.items() if k != "negative_prompt"} for r in records]


def test_a_class_file_sets_its_own_negative_prompt(wn):
    frog = bias_classes.load_bias_class("frog")
    own = "frogs, toads, tadpoles"
    assert P.negative_prompt_for(replace(frog, negative_prompt=own), wn) == own
    many = replace(frog, extra_synsets=("toad.n.01", "tree_frog.n.01"))
    assert len(P.negative_prompt_for(many, wn).split(", ")) == P.NEGATIVE_TERMS  # short: a few words


def test_every_bias_class_has_at_least_four_texts_per_group(wn):
    for name in bias_classes.known_bias_classes():
        bias_class = bias_classes.load_bias_class(name)
        wn.synset(bias_class.synset)
        assert all(len(bias_class.prompts[g]) >= 4 for g in bias_classes.BIAS_GROUPS), name


def test_record_seed_depends_only_on_seed_and_id():
    assert P.record_seed(0, "a") == P.record_seed(0, "a")
    assert P.record_seed(0, "a") != P.record_seed(1, "a")
    assert 0 <= P.record_seed(5, "x") < 2**31


def test_output_reads_back_through_the_contract(wn, tmp_path, cli):
    out = tmp_path / "bias.jsonl"
    cli(main, "bias", "--classes", "guitar", "-o", out)
    records = read_prompts(out)
    assert records and all(r.group in bias_classes.BIAS_GROUPS for r in records)


# ---- WordNet loader -----------------------------------------------------------


def test_wordnet_built_from_a_copied_dict_folder(tmp_path):
    source = tmp_path / "dict"
    source.mkdir()
    for name in DICT_FILES:
        shutil.copyfile(Path("/usr/share/wordnet") / name, source / name)
    wn = load_wordnet(str(source), str(tmp_path / "nltk_data"), False)
    built = tmp_path / "nltk_data" / "corpora" / "wordnet"
    assert (built / "lexnames").read_text().splitlines()[5] == "05\tnoun.animal\t1"
    assert wn.lemma_from_key("bee%1:05:00::").synset().name() == "bee.n.01"
    assert wn.synset_from_pos_and_offset("n", 2206856).name() == "bee.n.01"
    assert wn.synset("frog.n.01").lexname() == "noun.animal"
    index_sense = (built / "index.sense").read_text().splitlines()
    assert index_sense == sorted(set(index_sense)) and len(index_sense) > 200_000


def test_wordnet_folder_missing_files(tmp_path):
    (tmp_path / "dict").mkdir()
    with pytest.raises(InputError, match="not a WordNet 3.0 dict folder.*data.noun"):
        build_nltk_layout(tmp_path / "dict", tmp_path / "nltk_data")
    assert not (tmp_path / "nltk_data" / "corpora" / "wordnet").exists()


def test_wordnet_dir_that_does_not_exist(tmp_path, cli):
    result = cli(main, "bias", "--wordnet-dir", tmp_path / "nowhere", exit_code=None)
    assert result.exit_code != 0
    assert "does not exist" in result.output and "wordnet-base" in result.output


# ---- bad input: one line, non-zero exit ----------------------------------------


def error_line(result) -> str:
    assert result.exit_code != 0
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    return lines[0]


BAD_SELECTIONS = {
    "unknown-synset-suggests-close-names": (
        ("concepts", "--synsets", "dog.n.99"),
        ("unknown synset 'dog.n.99'", "dog.n.01"),
    ),
    "misspelt-synset-suggests-close-words": (("concepts", "--synsets", "guitr.n.01"), ("guitar.n.01",)),
    "unknown-bias-class-lists-known-ones": (
        ("bias", "--classes", "bee,unicorn"),
        ("unknown bias class 'unicorn'", "strawberry"),
    ),
    "empty-selection": (("concepts", "--synsets", "bee.n.01"), ("selection is empty",)),
}


@pytest.mark.parametrize("case", list(BAD_SELECTIONS))
def test_bad_selection(case, wn, cli):
    args, fragments = BAD_SELECTIONS[case]
    line = error_line(cli(main, *args, exit_code=None))
    for fragment in fragments:
        assert fragment in line, line


def test_bad_core_wordnet_line_names_file_and_line(wn, tmp_path, cli):
    bad = tmp_path / "core.txt"
    bad.write_text("n [bee%1:05:00::] [bee] insect\nthis is not a core line\n")
    line = error_line(cli(main, "concepts", "--core-wordnet", bad, exit_code=None))
    assert f"{bad}:2:" in line


def test_unwritable_output_path(wn, tmp_path, cli):
    blocker = tmp_path / "file"
    blocker.write_text("")
    line = error_line(cli(main, "bias", "-o", blocker / "out.jsonl", exit_code=None))
    assert "cannot write" in line and str(blocker) in line


def test_malformed_record_read_back_names_file_and_line(tmp_path):
    path = tmp_path / "p.jsonl"
    good = prompt_record()
    path.write_text(json.dumps(good) + "\n" + json.dumps({**good, "id": "b", "group": "weird"}) + "\n")
    with pytest.raises(InputError, match=rf"{path}:2: group 'weird'"):
        read_prompts(path)
    path.write_text(json.dumps(good) + "\n{not json\n")
    with pytest.raises(InputError, match=rf"{path}:2: not valid JSON"):
        read_prompts(path)
    path.write_text(json.dumps(good) + "\n" + json.dumps(good) + "\n")
    with pytest.raises(InputError, match="duplicate id 'a'"):
        read_prompts(path)
    path.write_text(json.dumps({**good, "id": "a b"}) + "\n")
    with pytest.raises(InputError, match=":1: id 'a b'"):
        read_prompts(path)


def test_explicit_synsets_are_all_kept(wn, cli):
    names = [
        "dog.n.01",
        "cat.n.01",
        "car.n.01",
        "apple.n.01",
        "chair.n.01",
        "tree.n.01",
        "cow.n.01",
        "horse.n.01",
        "boat.n.01",
        "pear.n.01",
        "lamp.n.01",
        "sock.n.01",
    ]
    records = records_of(cli(main, "concepts", "--synsets", ",".join(names), "--per-synset", 1).stdout)
    assert [r["synset"] for r in records] == names


def test_template_with_unknown_field(wn, tmp_path, cli):
    templates = tmp_path / "t.json"
    templates.write_text(json.dumps({"templates": [{"id": "odd", "text": "a {colour} {lemma}"}]}))
    line = error_line(cli(main, "concepts", "--synsets", "dog.n.01", "--templates", templates, exit_code=None))
    assert "template 'odd' uses colour" in line
