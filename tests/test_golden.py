"""The golden comparison: floats within a tolerance, integers and text exactly, masked fields stored masked."""

from __future__ import annotations

import json

import pytest
from helpers import golden as G


def checked(tmp_path, monkeypatch, name, first, second, **options):
    """Write ``first`` as the golden NAME, then compare ``second`` with it; returns the golden's text."""
    monkeypatch.setattr(G, "GOLDEN_DIR", tmp_path)
    G.Golden(regen=True).check_close(name, first, **options)
    G.Golden(regen=False).check_close(name, second, **options)
    return (tmp_path / name).read_text()


def test_floats_match_within_the_tolerance_in_csv_and_json_lines(tmp_path, monkeypatch):
    checked(tmp_path, monkeypatch, "t.csv", "a,b,c\nx,1,0.096189\n", "a,b,c\nx,1,0.0961897\n", rtol=1e-4)
    checked(tmp_path, monkeypatch, "t.jsonl", '{"p": [0.5, 4]}\n', '{"p": [0.50001, 4]}\n', rtol=1e-4)
    checked(tmp_path, monkeypatch, "t.csv", "a\n4\n", "a\n3.99999\n", rtol=1e-4)  # %g prints 4.0 as 4
    checked(tmp_path, monkeypatch, "t.json", '{"v": NaN}', '{"v": NaN}')
    with pytest.raises(AssertionError, match=r"regen-goldens\)\[0\]: b: 0.5011 != 0.5"):
        checked(tmp_path, monkeypatch, "t.csv", "a,b\nx,0.5\n", "a,b\nx,0.5011\n", rtol=1e-3)


@pytest.mark.parametrize(
    "first, second",
    [
        ('{"n": 12}', '{"n": 13}'),  # integers (counts, ranks, indices) match exactly
        ('{"id": "a"}', '{"id": "b"}'),
        ('{"n": 1}', '{"n": "1"}'),
        ('{"a": 1, "b": 2}', '{"b": 2, "a": 1}'),  # key order is part of the output
        ('{"v": [1.0, 2.0]}', '{"v": [1.0]}'),
        ('{"v": NaN}', '{"v": 0.0}'),
    ],
)
def test_everything_but_floats_matches_exactly(tmp_path, monkeypatch, first, second):
    with pytest.raises(AssertionError):
        checked(tmp_path, monkeypatch, "t.json", first, second)


def test_masked_fields_are_stored_masked_at_any_depth(tmp_path, monkeypatch):
    first = {"id": "a", "sha256": "0f" * 32, "params": {"model": "/tmp/x", "steps": 2}}
    second = {**first, "sha256": "1e" * 32, "params": {"model": "/tmp/y", "steps": 2}}
    text = checked(tmp_path, monkeypatch, "t.jsonl", json.dumps(first), json.dumps(second), masked=("sha256", "model"))
    assert json.loads(text) == {"id": "a", "sha256": "<masked>", "params": {"model": "<masked>", "steps": 2}}
