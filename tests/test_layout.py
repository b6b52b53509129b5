"""The architecture, held by tests: one package per stage, named as its command; a stage imports ``formats`` and
``common`` (the infrastructure), never another stage; no import cycles; only the CLI layer imports click."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SHARED = Path(__file__).parents[1] / "shared"
TOOLS = Path(__file__).parents[1] / "tools"
STAGES = {"wn_prompts", "sd_generate", "image_check", "cnn_hooks", "separability", "bias_report", "report", "transfer"}
LAYERS = {"common", "formats"}
# Not stages: preflight checks two stages' models before a make run, tiny_models builds the test and demo models.
STAGE_USERS = {"preflight", "tiny_models"}
MAX_MODULE_LINES = 350


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SHARED).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(["synthprobe", *parts])


def imported_modules(path: Path, known: set[str]) -> dict[str, int]:
    """Every synthprobe module ``path`` imports (at any depth of its code), with a line number."""
    own = module_name(path)
    package = own if path.name == "__init__.py" else own.rsplit(".", 1)[0]
    found = {}
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # `from pkg import module` imports the module; `from module import name` the module itself
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for target in targets:
            if target.startswith("synthprobe"):
                while target not in known and "." in target:
                    target = target.rsplit(".", 1)[0]
                found.setdefault(target, node.lineno)
    return found


def import_graph() -> dict[str, dict[str, int]]:
    paths = {module_name(p): p for p in SHARED.rglob("*.py")}
    return {name: imported_modules(path, set(paths)) for name, path in paths.items()}


def part_of(module: str) -> str:
    """The stage, layer or top-level module that ``module`` belongs to ('' for the package itself)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_every_command_has_its_stage_package():
    commands = {p.stem for p in TOOLS.glob("*.py")} - {"__init__", "preflight"}
    assert commands == STAGES, "a tool's library lives in shared/<its name>/"
    for stage in STAGES:
        assert (SHARED / stage / "__init__.py").is_file(), stage
    loose = {p.stem for p in SHARED.glob("*.py")} - {"__init__"} - STAGE_USERS
    assert not loose, f"modules outside a stage or layer package: {sorted(loose)}"


def test_stages_import_only_formats_and_common():
    problems = []
    for module, imports in import_graph().items():
        own = part_of(module)
        allowed = {own, "", *LAYERS} if own in STAGES else {own, "", *LAYERS} if own in LAYERS else None
        if allowed is None:  # the package itself and the stage users
            continue
        for target, line in imports.items():
            if part_of(target) not in allowed:
                problems.append(f"{module}:{line} imports {target}")
    assert not problems, "\n".join(problems)


def test_layers_import_no_stage():
    for module, imports in import_graph().items():
        if part_of(module) in LAYERS:
            stages = {t for t in imports if part_of(t) in STAGES}
            assert not stages, f"{module} imports the stages {stages}"


def test_no_import_cycles():
    graph = {m: set(imports) - {m} for m, imports in import_graph().items()}
    state: dict[str, int] = {}  # 1: on the path, 2: done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph.get(module, ())):
            if state.get(target) == 1:
                cycle = path[path.index(target) :] + [target]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target, path + [target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


def test_only_the_cli_layer_imports_click():
    """Library modules stay usable without click: only common/cli.py and common/options.py import it or them."""
    cli_layer = {"click", "synthprobe.common.cli", "synthprobe.common.options"}
    for path in sorted(SHARED.rglob("*.py")):
        if module_name(path) in cli_layer:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                names = {node.module or ""} | {f"{node.module}.{a.name}" for a in node.names}
            else:
                continue
            assert not names & cli_layer, f"{path}:{node.lineno} imports {names & cli_layer}"


def test_modules_stay_short():
    roots = [SHARED, TOOLS, Path(__file__).parent, Path(__file__).parents[1] / "bench"]
    long = [
        f"{p} ({n} lines)"
        for root in roots
        for p in root.rglob("*.py")
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES
    ]
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"
