"""Every float option of every command refuses NaN and infinities as a usage error (exit 2): a NaN passes every
range check, and sd-generate wrote ``"guidance": NaN`` into run.json, which is not JSON."""

from __future__ import annotations

import importlib
from importlib.metadata import distribution

import click
import pytest

from synthprobe.common.options import FiniteFloat

SCRIPTS = {e.name: e.value for e in distribution("synthprobe").entry_points if e.group == "console_scripts"}
# Their tools are being changed by others now; they take FiniteFloat when they next change (issue 25).


def float_options():
    for script, target in sorted(SCRIPTS.items()):
        module, attr = target.split(":")
        command = getattr(importlib.import_module(module), attr)
        commands = command.commands.values() if isinstance(command, click.Group) else [command]
        for leaf in commands:
            for option in leaf.params:
                if isinstance(option.type, (click.types.FloatParamType, click.FloatRange)):
                    yield script, leaf, option


FLOAT_OPTIONS = [
    pytest.param(
        script,
        command,
        option,
        id=f"{script} {option.opts[0]}",
    )
    for script, command, option in float_options()
]


@pytest.mark.parametrize("script,command,option", FLOAT_OPTIONS)
def test_float_options_are_finite(script, command, option):
    assert isinstance(option.type, FiniteFloat), f"{script} {option.opts[0]} takes {option.type!r}"


@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-inf", "1e400"])
def test_finite_float_refuses_nan_and_infinity_in_one_usage_line(value):
    with pytest.raises(click.BadParameter, match=f"'{value}' is not a finite number"):
        FiniteFloat().convert(value, None, None)
    with pytest.raises(click.BadParameter):
        FiniteFloat(0, 1).convert(value, None, None)


def test_finite_float_keeps_numbers_and_bounds():
    assert FiniteFloat().convert("7.5", None, None) == 7.5
    assert FiniteFloat(0, 1).convert("0.25", None, None) == 0.25
    with pytest.raises(click.BadParameter, match="0<=x<=1"):
        FiniteFloat(0, 1).convert("1.5", None, None)


def test_sd_generate_guidance_nan_is_a_usage_error_and_writes_nothing(tmp_path, cli):
    from synthprobe.tools import sd_generate

    result = cli(sd_generate.main, "p.jsonl", "-o", tmp_path / "out", "--guidance", "nan", exit_code=2)
    assert "Invalid value for '--guidance': 'nan' is not a finite number" in result.output
    assert not (tmp_path / "out").exists()
