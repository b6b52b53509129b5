"""The tables of damaged inputs, one per tool: each case builds its damage under a test's tmp_path and says what
the error line must name. One module holds them all so that one test can check every table's size."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from PIL import Image

from synthprobe.tools import bias_report

from . import prompt_record
from .bad_inputs import (
    BINARY,
    LATIN1_JSONL,
    LONG_ID,
    a_file,
    edit_json,
    flip_byte,
    output_damage,
    set_attr,
    store_damage,
    truncate,
    write,
)

SEPARABILITY_CASES = {**store_damage("hooks/early/mean", "0/0"), **output_damage()}


def record_fields(**fields) -> dict:
    return prompt_record(**{"id": "r1", **fields})


def record(**fields) -> str:
    return json.dumps(record_fields(**fields)) + "\n"


def bias_only_cases():
    def prompts(data):
        def damage(s, t):
            return (t / "bias", [write(t / "prompts.jsonl", data)], ["--prompts", t / "prompts.jsonl"])

        return damage

    def class_dir(data):
        def damage(s, t):
            folder = t / "classes"
            shutil.copytree(Path(bias_report.__file__).parents[1] / "data" / "bias_classes", folder)
            return (t / "bias", [write(folder / "bee.json", data)], ["--class-dir", folder])

        return damage

    return {
        "prompts-binary": prompts(BINARY),
        "prompts-corrupt-json": prompts('{"id": "x",\n'),
        "prompts-long-id": prompts(record(id=LONG_ID, group="mixed")),
        "prompts-is-a-folder": lambda s, t: (t / "bias", [(t / "pf").mkdir() or t / "pf"], ["--prompts", t / "pf"]),
        "class-file-corrupt": class_dir('{"name": "bee", '),
        "class-file-binary": class_dir(BINARY),
        "class-file-wrong-shape": class_dir('{"name": "bee", "synset": "bee.n.01", "prompts": {"mixed": 5}}'),
    }


BIAS_CASES = {**store_damage("logits/logits", "0/0"), **output_damage(), **bias_only_cases()}


def report_cases():
    figure = lambda t: t / "sep" / "max_activation_heatmap.png"

    def damaged(name, damage):
        def case(t):
            target = t / name
            return damage(target), target

        return case

    return {
        "no-summary": lambda t: ([t / "sep"], (t / "sep" / "summary.json").unlink()),
        "summary-corrupt": lambda t: ([write(t / "sep" / "summary.json", '{"schema": 1, "tables"')], None),
        "summary-binary": lambda t: ([write(t / "sep" / "summary.json", BINARY)], None),
        "summary-empty": lambda t: ([write(t / "sep" / "summary.json", b"")], None),
        "summary-is-a-list": lambda t: ([write(t / "sep" / "summary.json", "[1, 2, 3]")], None),
        "summary-tables-wrong-type": lambda t: (
            [t / "sep" / "summary.json"],
            edit_json(t / "sep" / "summary.json", lambda d: d.update(tables={"layers": 5})),
        ),
        "summary-layers-a-string": lambda t: (
            [t / "sep" / "summary.json", "layers is not a list"],
            edit_json(t / "sep" / "summary.json", lambda d: d.update(layers="x")),
        ),
        "summary-top-layers-a-number": lambda t: (
            [t / "sep" / "summary.json", "top_layers"],
            edit_json(t / "sep" / "summary.json", lambda d: d.update(top_layers=5)),
        ),
        "summary-store-a-string": lambda t: (
            [t / "bias" / "summary.json", "store"],
            edit_json(t / "bias" / "summary.json", lambda d: d.update(store="x")),
        ),
        "figure-not-an-image": lambda t: ([write(figure(t), "text"), "not an image"], 0),
        "figure-truncated": lambda t: ([figure(t), "truncated"], truncate(figure(t))),
        "table-binary": lambda t: ([write(t / "sep" / "layers.csv", BINARY)], None),
        "table-empty": lambda t: ([write(t / "sep" / "layers.csv", b"")], None),
        "table-deleted": lambda t: ([t / "sep" / "layers.csv"], (t / "sep" / "layers.csv").unlink()),
        "figure-deleted": lambda t: (
            [t / "sep" / "summary.json", "separability_by_depth.png"],
            (t / "sep" / "separability_by_depth.png").unlink(),
        ),
        "bias-summary-corrupt": lambda t: ([write(t / "bias" / "summary.json", "{")], None),
        "run-json-corrupt": lambda t: ([write(t / "images" / "run.json", '{"schema": 1,')], None),
        "run-json-is-a-list": lambda t: ([write(t / "images" / "run.json", "[]")], None),
        "manifest-corrupt": lambda t: ([write(t / "images" / "images.jsonl", '{"id": "a", "pa\n')], None),
        "manifest-binary": lambda t: ([write(t / "images" / "images.jsonl", BINARY)], None),
        "manifest-path-outside": lambda t: (
            [
                write(
                    t / "images" / "images.jsonl",
                    json.dumps({"id": "x", "synset": "bee.n.01", "path": "../../etc/passwd"}) + "\n",
                )
            ],
            None,
        ),
        "manifest-absolute-path": lambda t: (
            [
                write(
                    t / "images" / "images.jsonl",
                    json.dumps({"id": "x", "synset": "bee.n.01", "path": "/etc/passwd"}) + "\n",
                )
            ],
            None,
        ),
    }


REPORT_CASES = report_cases()


def wn_prompts_cases():
    core = lambda data: lambda t: (["concepts", "--core-wordnet", write(t / "core.txt", data)], [t / "core.txt"])
    templates = lambda data: (
        lambda t: (
            [
                "concepts",
                "--synsets",
                "dog.n.01",
                "--templates",
                write(t / "templates.json", data),
            ],
            [t / "templates.json"],
        )
    )
    synset_file = lambda data: (
        lambda t: (
            ["concepts", "--synsets", f"@{write(t / 'synsets.txt', data)}"],
            [t / "synsets.txt"],
        )
    )
    return {
        "core-missing": lambda t: (["concepts", "--core-wordnet", t / "none.txt"], [t / "none.txt"]),
        "core-empty": core(b""),
        "core-binary": core(BINARY),
        "core-latin1": core("n [dog%1:05:00::] [dog] caf\xe9\n".encode("latin-1")),
        "core-wrong-format": core("this is not core wordnet\n"),
        "core-is-a-folder": lambda t: (["concepts", "--core-wordnet", (t / "cf").mkdir() or t / "cf"], [t / "cf"]),
        "templates-missing": lambda t: (
            ["concepts", "--synsets", "dog.n.01", "--templates", t / "none.json"],
            [t / "none.json"],
        ),
        "templates-corrupt": templates('{"templates": [{"id": "a", '),
        "templates-binary": templates(BINARY),
        "templates-wrong-type": templates('["a photo of a {lemma}"]'),
        "templates-unknown-field": templates('{"templates": [{"id": "a", "text": "a {colour} {lemma}"}]}'),
        "templates-is-a-folder": lambda t: (
            ["concepts", "--synsets", "dog.n.01", "--templates", (t / "tf").mkdir() or t / "tf"],
            [t / "tf"],
        ),
        "synset-list-binary": synset_file(BINARY),
        "synset-list-missing": lambda t: (["concepts", "--synsets", f"@{t / 'none.txt'}"], [t / "none.txt"]),
        "output-is-a-folder": lambda t: (
            ["bias", "--classes", "bee", "-o", (t / "of").mkdir() or t / "of"],
            [t / "of", "folder"],
        ),
        "output-under-a-file": lambda t: (
            ["bias", "--classes", "bee", "-o", a_file(t) / "out.jsonl"],
            [a_file(t) / "out.jsonl"],
        ),
    }


WN_PROMPTS_CASES = wn_prompts_cases()


def sd_generate_cases():
    prompts = lambda data: lambda t, m: ([write(t / "p.jsonl", data)], [t / "p.jsonl"])

    def model_file(relative, data):
        def case(t, m):
            copy = Path(shutil.copytree(m, t / "model"))
            write(copy / relative, data)
            return [write(t / "p.jsonl", record()), "--model", copy], [copy / relative]

        return case

    def good(t):
        return write(t / "p.jsonl", record())

    return {
        "prompts-missing": lambda t, m: ([t / "none.jsonl"], [t / "none.jsonl"]),
        "prompts-empty": prompts(b""),
        "prompts-binary": prompts(BINARY),
        "prompts-latin1": prompts(LATIN1_JSONL),
        "prompts-corrupt-json": prompts(record() + '{"id": "r2", "synset": '),
        "prompts-truncated": prompts(record()[:30]),
        "prompts-wrong-type": prompts("[1, 2]\n"),
        "prompts-seed-a-string": prompts(record(seed="one")),
        "prompts-long-id": prompts(record(id=LONG_ID)),
        "prompts-without-schema": prompts(json.dumps({k: v for k, v in record_fields().items() if k != "schema"})),
        "prompts-id-with-a-slash": prompts(record(id="../escape")),
        "prompts-duplicate-id": prompts(record() + record()),
        "prompts-is-a-folder": lambda t, m: ([(t / "pf").mkdir() or t / "pf"], [t / "pf"]),
        "model-scheduler-corrupt": model_file("scheduler/scheduler_config.json", '{"_class_name": '),
        "model-vae-config-a-list": model_file("vae/config.json", "[]"),
        "model-config-binary": model_file("transformer/config.json", BINARY),
        "out-under-a-file": lambda t, m: ([good(t), "--out", a_file(t) / "out"], [a_file(t) / "out"]),
        "out-is-a-file": lambda t, m: ([good(t), "--out", write(t / "of", "x")], [t / "of"]),
        "cache-under-a-file": lambda t, m: ([good(t), "--cache", a_file(t) / "cache"], [a_file(t) / "cache"]),
    }


SD_GENERATE_CASES = sd_generate_cases()


def manifest_row(**fields) -> dict:
    return {"id": "im0", "synset": "bee.n.01", "path": "im0.png", "status": "ok", **fields}


def cnn_hooks_cases():
    """Each case returns (arguments before SMALL, strings the line must hold)."""

    def fresh(t, *extra):  # the manifest folder into a new store
        return [t / "manifest", "--out", t / "acts.zarr", *extra]

    def manifest(data):
        return lambda t: (fresh(t), [write(t / "manifest" / "images.jsonl", data)])

    def rows(*rows):
        return manifest("".join(json.dumps(r) + "\n" for r in rows))

    def image(damage):
        def case(t):
            damage(t / "manifest" / "im1.png")
            return fresh(t), [t / "manifest" / "im1.png"]

        return case

    def resumed(damage):  # the tree into its damaged store
        def case(t):
            damage(t / "tree.zarr")
            return [t / "tree", "--out", t / "tree.zarr"], [t / "tree.zarr"]

        return case

    def folder(make):
        return lambda t: ([make(t), "--out", t / "acts.zarr"], [make(t)])

    def hash_mismatch(t):
        rows(manifest_row(sha256="0" * 64))(t)
        return fresh(t), [t / "manifest" / "im0.png", "sha256 differs"]

    def changed_image(t):
        Image.new("RGB", (32, 32), (1, 2, 3)).save(t / "tree" / "frog.n.01" / "a.png")
        return [t / "tree", "--out", t / "tree.zarr"], ["frog.n.01/a.png", "--rebuild"]

    def weights(t):
        return fresh(t, "--weights", write(t / "w.pth", BINARY)), [t / "w.pth"]

    def weights_with_code(t):
        import torch

        torch.save({"conv1.weight": Path("not a tensor")}, t / "code.pth")  # unpickling it would build an object
        return fresh(t, "--weights", t / "code.pth"), [t / "code.pth", "could run code"]

    def out_under_a_file(t):
        return [t / "manifest", "--out", a_file(t) / "acts.zarr"], [t / "a-file" / "acts.zarr"]

    def not_a_store(t):
        shutil.rmtree(t / "tree.zarr")
        write(t / "tree.zarr" / "notes.txt", "mine")
        return [t / "tree", "--out", t / "tree.zarr"], [t / "tree.zarr", "not an activation store"]

    def replace_with_folder(path):
        path.unlink()
        path.mkdir()

    return {
        "folder-missing": folder(lambda t: t / "none"),
        "folder-is-a-file": folder(lambda t: write(t / "f", "x")),
        "folder-empty": folder(lambda t: (t / "empty").mkdir(exist_ok=True) or t / "empty"),
        "manifest-empty": manifest(b""),
        "manifest-binary": manifest(BINARY),
        "manifest-latin1": manifest(LATIN1_JSONL),
        "manifest-corrupt-json": manifest('{"id": "im0", "path"\n'),
        "manifest-row-a-list": rows([1, 2]),
        "manifest-path-not-a-string": rows(manifest_row(path=7)),
        "manifest-path-outside": rows(manifest_row(path="../tree/bee.n.01/a.png")),
        "manifest-absolute-path": rows(manifest_row(path="/etc/passwd")),
        "manifest-long-id": rows(manifest_row(id=LONG_ID)),
        "manifest-id-with-a-slash": rows(manifest_row(id="a/b")),
        "manifest-negative-prompt-not-a-string": rows(manifest_row(negative_prompt=["frog"])),
        "manifest-hash-mismatch": hash_mismatch,
        "image-truncated": image(truncate),
        "image-not-an-image": image(lambda p: write(p, b"hello, I am text")),
        "image-binary": image(lambda p: write(p, BINARY)),
        "image-is-a-folder": image(replace_with_folder),
        "weights-binary": weights,
        "weights-with-code": weights_with_code,
        "out-under-a-file": out_under_a_file,
        "out-not-a-store": not_a_store,
        "store-zarr-json-corrupt": resumed(lambda s: truncate(s / "zarr.json")),
        "store-rows-committed-too-large": resumed(lambda s: set_attr(s, rows_committed=9)),
        "store-array-deleted": resumed(lambda s: shutil.rmtree(s / "hooks" / "layer1")),
        "store-row-chunk-deleted": resumed(lambda s: (s / "rows" / "id" / "c" / "0").unlink()),
        "imagefolder-image-changed": changed_image,
        "imagefolder-not-a-synset": lambda t: (
            [(t / "tree" / "javascript:alert(1)").mkdir() or t / "tree", "--out", t / "acts.zarr"],
            [t / "tree" / "javascript:alert(1)", "not a synset"],
        ),
        "store-of-another-folder": lambda t: (
            [t / "manifest", "--out", t / "tree.zarr"],
            [t / "tree.zarr", "holds 2 images that", str(t / "manifest"), "made from another folder"],
        ),
        "store-shard-truncated": resumed(lambda s: truncate(s / "hooks" / "layer1" / "mean" / "c" / "0" / "0")),
        "store-shard-edited": resumed(lambda s: flip_byte(s / "hooks" / "layer1" / "mean" / "c" / "0" / "0", 20)),
        "store-shard-deleted": resumed(lambda s: (s / "hooks" / "layer1" / "mean" / "c" / "0" / "0").unlink()),
        "store-chunk-of-another-array": lambda t: (
            resumed(lambda s: shutil.copyfile(s / "rows" / "id" / "c" / "0", s / "rows" / "synset" / "c" / "0"))(t)[0],
            [t / "tree.zarr", "rows/synset", "not the file written there"],
        ),
    }


CNN_HOOKS_CASES = cnn_hooks_cases()
