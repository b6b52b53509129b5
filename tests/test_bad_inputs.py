"""A table of damaged inputs per tool, as a new user would hand them over.

Every case must end with a non-zero exit, exactly one stderr line (``Error: ...``, no traceback) that
names the damaged file, and no new or changed file that looks complete (a summary.json, a manifest, a
report, a store marked complete). The valid inputs are built once per module; each case damages a copy.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import prompt_record
from PIL import Image

from synthprobe.formats.activation_store import StoreWriter
from synthprobe.imagenet import imagenet_wnids
from synthprobe.tiny_models import save_tiny_sd3
from synthprobe.tools import bias_report, cnn_hooks, report, sd_generate, separability, wn_prompts

MARKERS = {"summary.json", "images.jsonl", "run.json", "report.html", "out.jsonl"}
BINARY = bytes(range(256)) * 4  # not UTF-8, not JSON, not an image
LATIN1_JSONL = '{"id": "caf\xe9", "prompt": "caf\xe9"}\n'.encode("latin-1")
LONG_ID = "a" * 300


# ---- the checks -------------------------------------------------------------------------------


def files_under(root: Path) -> dict[Path, tuple[int, int]]:
    return {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


def looks_complete(path: Path) -> bool:
    if path.name in MARKERS:
        return True
    if path.name == "zarr.json":
        try:
            return json.loads(path.read_text())["attributes"].get("complete") is True
        except (ValueError, KeyError, UnicodeDecodeError):
            return False
    return False


@pytest.fixture
def fails_cleanly(cli):
    """``fails_cleanly(command, args, root, names)`` runs ``command`` and asserts one clear line naming every string
    in ``names`` and nothing complete written under ``root``; it returns that line."""

    def check(command, args, root: Path, names: list[str]) -> str:
        before = files_under(root)
        result = cli(command, *args, exit_code=None)
        assert result.exit_code not in (0, None), result.output
        assert isinstance(result.exception, SystemExit), f"a traceback: {result.exception!r}"
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
        for name in names:
            assert str(name) in lines[0], f"{name} not in: {lines[0]}"
        assert "BytesIO" not in lines[0] and "Traceback" not in lines[0] and len(lines[0]) < 500, lines[0]
        after = files_under(root)
        written = [p for p, stamp in after.items() if before.get(p) != stamp]
        assert not [p for p in written if looks_complete(p)], written
        return lines[0]

    return check


def write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    return path


def edit_json(path: Path, change) -> None:
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))


def set_attr(store: Path, **attrs) -> None:
    edit_json(store / "zarr.json", lambda doc: doc["attributes"].update(attrs))


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def flip_byte(path: Path, offset: int = 40) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def a_file(tmp_path: Path) -> Path:
    return write(tmp_path / "a-file", "not a folder")


# ---- a small store, built once: concept rows first, then bias rows ---------------------------

SYNSETS = {"bee": "bee.n.01", "frog": "frog.n.01"}
TARGET = {"bee": 309, "frog": 31}


@pytest.fixture(scope="module")
def pristine_store(tmp_path_factory) -> Path:
    rows, logits = [], []
    rng = np.random.default_rng(0)
    for i in range(12):
        synset = ("bee.n.01", "frog.n.01", "dog.n.01")[i % 3]
        rows.append({"id": f"concept-{i:02d}", "synset": synset, "group": "concept", "target": synset})
    for name, synset in SYNSETS.items():
        for group in ("object-only", "context-only", "mixed"):
            for s in range(2):
                rows.append(
                    {"id": f"bias-{name}-{group}-00-s{s:02d}", "synset": synset, "group": group, "target": synset}
                )
    table = pd.DataFrame(rows).assign(path=lambda t: t["id"] + ".png", status="ok", sha256="")
    logits = rng.normal(0, 1, (len(table), 1000)).astype(np.float32)
    for i, row in table.iterrows():
        name = next((n for n, s in SYNSETS.items() if s == row["synset"]), None)
        if name and row["group"] != "concept":
            logits[i, TARGET[name]] += 6.0
    layers = {"early": rng.normal(0, 1, (len(table), 8)), "late": rng.normal(0, 1, (len(table), 16))}
    path = tmp_path_factory.mktemp("store") / "acts.zarr"
    writer = StoreWriter(
        path,
        attrs={"model": "resnet50", "weights": "test", "preprocessing": "test", "classes": list(imagenet_wnids())},
        hook_channels={k: v.shape[1] for k, v in layers.items()},
        pools=("mean",),
        n_classes=1000,
        min_chunk_bytes=256,
        rows_per_write=8,
    )
    for start in range(0, len(table), 8):
        writer.append(
            table.iloc[start : start + 8],
            {k: {"mean": v[start : start + 8].astype(np.float32)} for k, v in layers.items()},
            logits[start : start + 8],
        )
    writer.finish()
    return path


def store_copy(pristine: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(pristine, tmp_path / "acts.zarr"))


# Store damage shared by the two readers: (case, damage(store, tmp_path) -> the path the line must name, array).
def store_damage(array: str, shard: str):
    """``array`` is the array the reader reads first (its rows 0-7 are in ``shard``)."""
    chunk = lambda s: s / array / "c" / shard

    def delete(s, t):
        chunk(s).unlink()
        return [s, array, "rows 0-7 are missing"]

    def truncated(s, t):
        truncate(chunk(s))
        return [s, array, "damaged"]

    def flipped(s, t):
        flip_byte(chunk(s))
        return [s, array, "damaged"]

    def rows_chunk(field):
        def damage(s, t):
            (s / "rows" / field / "c" / "0").unlink()
            return [s, f"rows/{field}", "missing"]

        return damage

    def committed(value):
        def damage(s, t):
            set_attr(s, rows_committed=value)
            return [s, "rows_committed"]

        return damage

    def unfinished(s, t):
        set_attr(s, complete=False)
        return [s, "not complete", "--allow-incomplete"]

    def store_json(data):
        def damage(s, t):
            write(s / "zarr.json", data)
            return [s / "zarr.json"]

        return damage

    def array_json(s, t):
        truncate(s / array / "zarr.json")
        return [s / array / "zarr.json"]

    def zero_fill(s, t):  # a store from before NaN fill values
        edit_json(s / array / "zarr.json", lambda doc: doc.update(fill_value=0.0))
        return [s, array, "older cnn-hooks"]

    def array_gone(s, t):
        shutil.rmtree(s / array)
        return [s, array, "missing"]

    def no_zarr_json(s, t):
        (s / "zarr.json").unlink()
        return [s, "no zarr.json"]

    def file_not_store(s, t):
        shutil.rmtree(s)
        write(s, "a file")
        return [s]

    def missing(s, t):
        shutil.rmtree(s)
        return [s]

    return {
        "deleted-chunk": delete,
        "truncated-shard": truncated,
        "edited-shard": flipped,
        "deleted-rows-chunk": rows_chunk("synset"),
        "deleted-status-chunk": rows_chunk("status"),
        "rows-committed-too-large": committed(40),
        "rows-committed-not-a-number": committed("12"),
        "unfinished-store": unfinished,
        "corrupt-zarr-json": store_json('{"zarr_format": 3, "node_ty'),
        "binary-zarr-json": store_json(BINARY),
        "empty-zarr-json": store_json(b""),
        "list-zarr-json": store_json("[1, 2]"),
        "corrupt-array-json": array_json,
        "deleted-array": array_gone,
        "zero-fill-value": zero_fill,
        "no-zarr-json": no_zarr_json,
        "store-is-a-file": file_not_store,
        "missing-store": missing,
    }


def output_damage():
    """--out that cannot be written: under a regular file (root ignores chmod), or an existing file."""
    return {
        "out-under-a-file": lambda s, t: (a_file(t) / "out", [a_file(t) / "out"]),
        "out-is-a-file": lambda s, t: (write(t / "out", "x"), [t / "out"]),
    }


# ---- separability ----------------------------------------------------------------------------

SEPARABILITY_CASES = {**store_damage("hooks/early/mean", "0/0"), **output_damage()}


@pytest.mark.parametrize("case", list(SEPARABILITY_CASES))
def test_separability(case, pristine_store, tmp_path, fails_cleanly):
    store = store_copy(pristine_store, tmp_path)
    outcome = SEPARABILITY_CASES[case](store, tmp_path)
    out, names = outcome if isinstance(outcome, tuple) else (tmp_path / "sep", outcome)
    fails_cleanly(separability.main, [store, "--out", out, "--permutations", 0, "--silent"], tmp_path, names)


def test_store_arrays_cannot_read_as_zeros(pristine_store):
    """Missing chunks read as NaN or U+FFFF, never as data; every chunk carries a crc32c."""
    import zarr
    from zarr.codecs import Crc32cCodec

    group = zarr.open_group(str(pristine_store), mode="r")
    for key in ("hooks/early/mean", "logits/logits"):
        array = group[key]
        assert np.isnan(array.fill_value)
        assert any(isinstance(c, Crc32cCodec) for c in array.metadata.codecs[0].codecs), key  # inside the shard
    for field in ("id", "status", "synset"):
        assert group[f"rows/{field}"].fill_value == "\uffff"
        assert any(isinstance(c, Crc32cCodec) for c in group[f"rows/{field}"].metadata.codecs)


def test_separability_reads_the_pristine_store_and_skip_bad_rows(pristine_store, tmp_path, cli):
    """The control: the undamaged store passes; NaN in a failed row is not a missing chunk."""
    store = store_copy(pristine_store, tmp_path)
    args = ["--permutations", 0, "--silent"]
    cli(separability.main, store, "--out", tmp_path / "a", *args)
    import zarr

    group = zarr.open_group(str(store), mode="r+")
    group["rows/status"][1] = "failed"
    group["hooks/early/mean"][1] = np.nan
    cli(separability.main, store, "--out", tmp_path / "b", *args)


def test_allow_incomplete_analyses_with_a_warning(pristine_store, tmp_path, cli):
    store = store_copy(pristine_store, tmp_path)
    set_attr(store, complete=False)
    cli(separability.main, store, "--out", tmp_path / "sep", "--allow-incomplete", "--permutations", 0)
    summary = json.loads((tmp_path / "sep" / "summary.json").read_text())
    assert "not complete" in summary["store"]["warning"]
    html = tmp_path / "report.html"
    cli(report.main, "--separability", tmp_path / "sep", "-o", html)
    assert "the store is not complete" in html.read_text()


# ---- bias-report -----------------------------------------------------------------------------


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
        "prompts-long-id": prompts(
            json.dumps(
                {
                    "id": LONG_ID,
                    "synset": "bee.n.01",
                    "lemma": "bee",
                    "group": "mixed",
                    "target": "bee.n.01",
                    "prompt": "p",
                    "seed": 0,
                }
            )
            + "\n"
        ),
        "prompts-is-a-folder": lambda s, t: (t / "bias", [(t / "pf").mkdir() or t / "pf"], ["--prompts", t / "pf"]),
        "class-file-corrupt": class_dir('{"name": "bee", '),
        "class-file-binary": class_dir(BINARY),
        "class-file-wrong-shape": class_dir('{"name": "bee", "synset": "bee.n.01", "prompts": {"mixed": 5}}'),
    }


BIAS_CASES = {**store_damage("logits/logits", "0/0"), **output_damage(), **bias_only_cases()}


@pytest.mark.parametrize("case", list(BIAS_CASES))
def test_bias_report(case, pristine_store, tmp_path, fails_cleanly):
    store = store_copy(pristine_store, tmp_path)
    outcome = BIAS_CASES[case](store, tmp_path)
    out, names, extra = (tmp_path / "bias", outcome, []) if isinstance(outcome, list) else (*outcome, [])[:3]
    fails_cleanly(
        bias_report.main,
        [store, "--out", out, "--classes", "bee,frog", "--mapping", "exact", "--silent", *extra],
        tmp_path,
        names,
    )


def test_bias_report_reads_the_pristine_store(pristine_store, tmp_path, cli):
    cli(
        bias_report.main,
        pristine_store,
        "--out",
        tmp_path / "bias",
        "--classes",
        "bee,frog",
        "--mapping",
        "exact",
        "--silent",
    )


# ---- report ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def analyses(pristine_store, tmp_path_factory, cli) -> Path:
    """A separability folder, a bias-report folder and an image folder, as the tools write them."""
    root = tmp_path_factory.mktemp("analyses")
    cli(separability.main, pristine_store, "--out", root / "sep", "--permutations", "0", "--silent")
    cli(
        bias_report.main,
        pristine_store,
        "--out",
        root / "bias",
        "--classes",
        "bee,frog",
        "--mapping",
        "exact",
        "--silent",
    )
    images = root / "images"
    images.mkdir()
    Image.new("RGB", (8, 8), (200, 10, 10)).save(images / "concept-00.png")
    write(
        images / "images.jsonl",
        json.dumps(
            {"id": "concept-00", "synset": "bee.n.01", "path": "concept-00.png", "status": "ok", "prompt": "a bee"}
        )
        + "\n",
    )
    write(images / "run.json", json.dumps({"schema": 1, "tool": "sd-generate", "summary": {}}) + "\n")
    return root


def report_cases():
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


@pytest.mark.parametrize("case", [*REPORT_CASES, "output-is-a-folder", "output-under-a-file"])
def test_report(case, analyses, tmp_path, fails_cleanly):
    for name in ("sep", "bias", "images"):
        shutil.copytree(analyses / name, tmp_path / name)
    output = tmp_path / "report.html"
    if case == "output-is-a-folder":
        output.mkdir()
        names = [output, "folder"]
    elif case == "output-under-a-file":
        output = a_file(tmp_path) / "report.html"
        names = [output]
    else:
        names, _ = REPORT_CASES[case](tmp_path)
    line = fails_cleanly(
        report.main,
        [
            "--separability",
            tmp_path / "sep",
            "--bias",
            tmp_path / "bias",
            "--images",
            tmp_path / "images",
            "-o",
            output,
            "--silent",
        ],
        tmp_path,
        names,
    )
    assert ".tmp" not in line, "names the output, not a temp file"


# ---- wn-prompts ------------------------------------------------------------------------------


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


@pytest.mark.parametrize("case", list(WN_PROMPTS_CASES))
def test_wn_prompts(case, wn, tmp_path, fails_cleanly):
    args, names = WN_PROMPTS_CASES[case](tmp_path)
    line = fails_cleanly(wn_prompts.main, [*args, "--silent"], tmp_path, names)
    assert ".tmp" not in line


# ---- sd-generate -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return save_tiny_sd3(tmp_path_factory.mktemp("models") / "tiny-sd3")


@pytest.fixture
def no_model_load(monkeypatch):
    """Every case must fail before a model loads."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr("synthprobe.sd.pipeline.load_pipeline", lambda settings: pytest.fail("a model was loaded"))


def record(**fields) -> str:
    return json.dumps(prompt_record(**{"id": "r1", **fields})) + "\n"


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


@pytest.mark.parametrize("case", list(SD_GENERATE_CASES))
def test_sd_generate(case, tiny_model, tmp_path, no_model_load, fails_cleanly):
    args, names = SD_GENERATE_CASES[case](tmp_path, tiny_model)
    options = {"--out": tmp_path / "out", "--model": tiny_model, "--cache": tmp_path / "cache"}
    for flag in options:
        if flag in args:
            options[flag] = args.pop(args.index(flag) + 1)
            args.remove(flag)
    fails_cleanly(
        sd_generate.main,
        [
            *args,
            *(x for pair in options.items() for x in pair),
            "--size",
            "32",
            "--steps",
            "1",
            "--device",
            "cpu",
            "--silent",
        ],
        tmp_path,
        names,
    )


# ---- cnn-hooks -------------------------------------------------------------------------------

SMALL = [
    "--model",
    "resnet18",
    "--weights",
    "none",
    "--image-size",
    "32",
    "--workers",
    "0",
    "--layers",
    "layer1",
    "--silent",
]


@pytest.fixture(scope="module")
def image_folders(tmp_path_factory, cli) -> Path:
    """A manifest folder, an ImageFolder tree and a store made from the tree."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    manifest = root / "manifest"
    manifest.mkdir()
    rows = []
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(manifest / f"im{i}.png")
        rows.append({"id": f"im{i}", "synset": "bee.n.01", "path": f"im{i}.png", "status": "ok"})
    write(manifest / "images.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    tree = root / "tree"
    for synset in ("bee.n.01", "frog.n.01"):
        (tree / synset).mkdir(parents=True)
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(tree / synset / "a.png")
    cli(cnn_hooks.main, tree, "--out", root / "tree.zarr", *SMALL)
    return root


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
    }


CNN_HOOKS_CASES = cnn_hooks_cases()


@pytest.mark.parametrize("case", list(CNN_HOOKS_CASES))
def test_cnn_hooks(case, image_folders, tmp_path, fails_cleanly):
    for name in ("manifest", "tree", "tree.zarr"):
        shutil.copytree(image_folders / name, tmp_path / name)
    args, names = CNN_HOOKS_CASES[case](tmp_path)
    fails_cleanly(cnn_hooks.main, [*SMALL, *args], tmp_path, names)  # args last: their --weights wins


def test_cnn_hooks_disk_full_names_the_store(image_folders, tmp_path, monkeypatch, fails_cleanly):
    import errno

    from synthprobe.formats.activation_store import writer

    def disk_full(pairs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(writer, "_append_all", disk_full)
    out = tmp_path / "acts.zarr"
    line = fails_cleanly(cnn_hooks.main, [image_folders / "manifest", "--out", out, *SMALL], tmp_path, [out])
    assert "No space left on device" in line


def test_the_table_has_at_least_15_inputs_per_tool():
    for cases in (SEPARABILITY_CASES, BIAS_CASES, REPORT_CASES, WN_PROMPTS_CASES, SD_GENERATE_CASES, CNN_HOOKS_CASES):
        assert len(cases) >= 15
