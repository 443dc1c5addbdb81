"""The suite files shipped in benchmarks/ load: known settings, known methods and options."""
from pathlib import Path

import pytest

from decodelab.bench import load_suite, parse_row
from decodelab.bench.cli import SUITE_KEYS

SUITES = sorted((Path(__file__).resolve().parents[2] / "benchmarks").glob("*.toml"))


def test_there_are_suites():
    assert SUITES


@pytest.mark.parametrize("path", SUITES, ids=lambda p: p.name)
def test_suite_loads(path):
    rows, opts = load_suite(str(path))  # unknown methods or options raise here
    assert set(opts) <= SUITE_KEYS
    assert len({r.label for r in rows}) == len(rows)
    own = [[parse_row(m) for m in model.get("methods", [])] for model in opts.get("models", [])
           if isinstance(model, dict)]  # a model's own rows
    assert rows or any(own)
    for model_rows in own:
        assert len({r.label for r in model_rows}) == len(model_rows)
