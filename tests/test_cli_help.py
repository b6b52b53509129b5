"""Every command and subcommand has --help with an example (sqlite-utils' test_docs idea)."""

from __future__ import annotations

import importlib
from pathlib import Path

import click
import pytest
import tomllib

SCRIPTS = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]["scripts"]


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


def test_only_the_cli_layer_imports_click():
    """Library modules stay usable without click: only shared/cli.py and shared/options.py import it or them."""
    import ast

    cli_layer = {"cli", "options", "click"}
    for path in sorted((Path(__file__).parents[1] / "shared").glob("*.py")):
        if path.stem in {"cli", "options"}:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                module = (node.module or "").removeprefix("synthprobe.").split(".")[0]
                names = {module} if module else {alias.name for alias in node.names}
            else:
                continue
            assert not names & cli_layer, f"{path.name}:{node.lineno} imports {names & cli_layer}"
