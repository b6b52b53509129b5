"""Every command and subcommand has --help with an example (sqlite-utils' test_docs idea)."""

from __future__ import annotations

import importlib
from importlib.metadata import distribution
from pathlib import Path

import click
import pytest

from synthprobe.common.options import PRECISION_CHOICES, CommaList

# The installed console scripts (pyproject's [project.scripts]), read without tomllib (Python 3.11+)
SCRIPTS = {e.name: e.value for e in distribution("synthprobe").entry_points if e.group == "console_scripts"}
DOCS_CLI = (Path(__file__).parents[1] / "docs" / "cli.md").read_text()


def commands(name: str, command: click.Command, path: tuple[str, ...] = ()):
    yield name, command, path
    if isinstance(command, click.Group):
        for sub_name, sub in command.commands.items():
            yield from commands(f"{name} {sub_name}", sub, (*path, sub_name))


def all_commands():
    for script, target in sorted(SCRIPTS.items()):
        module, attr = target.split(":")
        yield from commands(script, getattr(importlib.import_module(module), attr))


@pytest.mark.parametrize("name,command,path", list(all_commands()), ids=lambda v: v if isinstance(v, str) else "")
def test_help_has_an_example(name, command, path, cli):
    root = importlib.import_module(SCRIPTS[name.split()[0]].split(":")[0]).main
    result = cli(root, *path, "--help")
    assert "Usage:" in result.output
    if not isinstance(command, click.Group):
        assert "Example" in result.output, f"{name} --help shows no example"


# ---- docs/cli.md's conventions --------------------------------------------------------------------

LEAVES = [(name, command, path) for name, command, path in all_commands() if not isinstance(command, click.Group)]
LEAF_IDS = [name for name, _, _ in LEAVES]


def options(command: click.Command) -> dict[str, click.Option]:
    return {opt: p for p in command.params if isinstance(p, click.Option) for opt in p.opts}


@pytest.mark.parametrize("name,command,path", LEAVES, ids=LEAF_IDS)
def test_options_follow_docs_cli(name, command, path):
    found = options(command)
    assert found["--out"].opts == ["-o", "--out"], f"{name}: every output is -o/--out"
    assert not {"--dtype", "--output"} & set(found), f"{name}: --precision/--store-dtype and -o/--out instead"
    if "--precision" in found:
        assert tuple(found["--precision"].type.choices) == PRECISION_CHOICES
    if "--device" in found:
        assert found["--device"].help.startswith("auto ("), f"{name} --device"
    if "--batch-size" in found:
        assert found["--batch-size"].help.startswith("Images per"), f"{name} --batch-size"
    if "--seed" in found:
        assert found["--seed"].type is click.INT
    for option in command.params:
        if "comma" in (getattr(option, "help", None) or "") or isinstance(option.type, CommaList):
            assert isinstance(option.type, CommaList) and option.multiple, f"{name} {option.opts}: use list_option"
    for opt in ("-o/--out", "--precision", "--store-dtype", "--device", "--batch-size", "--silent", "--seed"):
        assert f"`{opt}" in DOCS_CLI, f"docs/cli.md does not state the {opt} convention"


def test_precision_names_are_the_same_in_both_model_tools():
    from synthprobe.common.precision import PRECISIONS
    from synthprobe.sd_generate.settings import PRECISION_DTYPES

    assert ("auto", *PRECISIONS) == ("auto", *PRECISION_DTYPES) == PRECISION_CHOICES


def parsed(command: click.Command, args: list[str]) -> dict:
    """The values click hands the command for ``args``, with a placeholder for each required parameter."""
    required = []
    for param in command.params:
        if param.required and isinstance(param, click.Argument):
            required.append("x")
        elif param.required and not set(param.opts) & set(args):
            required += [param.opts[0], "x"]
    with command.make_context(command.name, [*required, *args]) as ctx:
        return ctx.params


LIST_OPTIONS = [
    (name, command, option)
    for name, command, _ in LEAVES
    for option in command.params
    if isinstance(option.type, CommaList)
]


@pytest.mark.parametrize("name,command,option", LIST_OPTIONS, ids=[f"{n} {o.opts[0]}" for n, _, o in LIST_OPTIONS])
def test_list_options_take_repeated_flags_or_a_comma_list(name, command, option):
    flag = option.opts[0]
    a, b = option.type.choices[:2] if option.type.choices else ("a.n.01", "b.n.01")
    repeated = parsed(command, [flag, a, flag, b])[option.name]
    assert (
        repeated
        == parsed(command, [flag, f"{a},{b}"])[option.name]
        == parsed(command, [flag, f" {a} ,", flag, b])[option.name]
    )
    assert repeated == (a, b)
    assert parsed(command, [flag, ""])[option.name] == ()


BAD_VALUES = [
    ("sd-generate", ["p.jsonl", "-o", "out", "--size", "0"], "--size", "'0'"),
    ("sd-generate", ["p.jsonl", "-o", "out", "--size", "64x"], "--size", "'64x'"),
    ("sd-generate", ["p.jsonl", "-o", "out", "--size", "64x0"], "--size", "'64x0'"),
    ("sd-generate", ["p.jsonl", "-o", "out", "--size", "big"], "--size", "'big'"),
    ("sd-generate", ["p.jsonl", "-o", "out", "--shard", "4/4"], "--shard", "4/4: K must be in 0..N-1, here 0/4 to 3/4"),
    ("sd-generate", ["p.jsonl", "-o", "out", "--shard", "0/0"], "--shard", "0/0: N must be at least 1"),
    ("sd-generate", ["p.jsonl", "-o", "out", "--shard", "-1/2"], "--shard", "'-1/2'"),
    ("sd-generate", ["p.jsonl", "-o", "out", "--shard", "1"], "--shard", "'1': expected K/N"),
    ("sd-generate", ["p.jsonl", "-o", "out", "--precision", "bfloat16"], "--precision", "bfloat16"),
    ("separability", ["s.zarr", "-o", "out", "--drop", "object-gone"], "--drop", "object-gone is not one of"),
    ("bias-report", ["s.zarr", "-o", "out", "--drop", "ok,object-leaked"], "--drop", "ok is not one of"),
]


@pytest.mark.parametrize("script,args,option,fragment", BAD_VALUES, ids=[" ".join(c[1][3:]) for c in BAD_VALUES])
def test_bad_values_are_usage_errors(script, args, option, fragment, tmp_path, cli):
    module = importlib.import_module(SCRIPTS[script].split(":")[0])
    args = [str(tmp_path / "out") if a == "out" else a for a in args]
    result = cli(module.main, *args, exit_code=2, prog_name=script)
    assert not (tmp_path / "out").exists(), "nothing is written before the options are checked"
    assert result.output.startswith(f"Usage: {script} [OPTIONS]"), result.output
    assert f"Invalid value for '{option}'" in result.output and fragment in result.output, result.output


def test_repeated_choices_count_once():
    from synthprobe.tools import separability

    drop = parsed(separability.main, ["--drop", "object-missing,object-leaked", "--drop", "object-missing"])["drop"]
    assert drop == ("object-missing", "object-leaked")


# config.mk's variables and the option each one feeds; PER_GROUP differs on purpose (config.mk says why)
CONFIG_OPTIONS = {
    "SEED": ("separability", "--seed"),
    "N_SYNSETS": ("wn-prompts concepts", "--n-synsets"),
    "PER_SYNSET": ("wn-prompts concepts", "--per-synset"),
    "BIAS_CLASSES": ("wn-prompts bias", "--classes"),
    "SEEDS_PER_PROMPT": ("wn-prompts bias", "--seeds-per-prompt"),
    "GEN_MODEL": ("sd-generate", "--model"),
    "STEPS": ("sd-generate", "--steps"),
    "GUIDANCE": ("sd-generate", "--guidance"),
    "SIZE": ("sd-generate", "--size"),
    "GEN_BATCH": ("sd-generate", "--batch-size"),
    "QUANTIZE": ("sd-generate", "--quantize"),
    "CNNS": ("cnn-hooks", "--model"),
    "WEIGHTS": ("cnn-hooks", "--weights"),
    "HOOK_BATCH": ("cnn-hooks", "--batch-size"),
    "JUDGE": ("image-check check", "--judge"),
    "JUDGE_WEIGHTS": ("image-check check", "--weights"),
    "MISSING_BELOW": ("image-check check", "--missing-below"),
    "LEAKED_ABOVE": ("image-check check", "--leaked-above"),
    "CHECK_BATCH": ("image-check check", "--batch-size"),
    "AUDIT": ("image-check check", "--audit"),
    "DROP": ("separability", "--drop"),
    "PERMUTATIONS": ("separability", "--permutations"),
}


def test_config_mk_equals_the_tools_defaults():
    import re

    text = (Path(__file__).parents[1] / "config.mk").read_text()
    values = dict(re.findall(r"^(\w+) \?= ?(.*)$", text, flags=re.MULTILINE))
    commands_by_name = {name: command for name, command, _ in LEAVES}
    for variable, (name, opt) in CONFIG_OPTIONS.items():
        option = options(commands_by_name[name])[opt]
        args = [opt, values[variable]] if values[variable] else []
        assert parsed(commands_by_name[name], args)[option.name] == parsed(commands_by_name[name], [])[option.name], (
            f"config.mk {variable}={values[variable]} is not {name}'s {opt} default: make one the other, "
            "or say in config.mk why they differ"
        )
