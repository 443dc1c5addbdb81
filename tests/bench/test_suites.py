"""The suite files shipped in benchmarks/ load: known settings, known methods and options."""
from pathlib import Path

import pytest

from decodelab.bench import load_suite
from decodelab.bench.cli import SUITE_KEYS

SUITES = sorted((Path(__file__).resolve().parents[2] / "benchmarks").glob("*.toml"))


def test_there_are_suites():
    assert SUITES


@pytest.mark.parametrize("path", SUITES, ids=lambda p: p.name)
def test_suite_loads(path):
    rows, opts = load_suite(str(path))  # unknown methods or options raise here
    assert rows and set(opts) <= SUITE_KEYS
    assert len({r.label for r in rows}) == len(rows)
