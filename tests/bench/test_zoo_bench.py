"""The bench on the bundled zoo code pair (slow): every lossless row equals greedy on HumanEval
prompts, peers included."""
import pytest

from decodelab.bench import Settings, grid, parse_row

pytestmark = pytest.mark.slow


def test_zoo_code_pair_humaneval():
    cells = grid.cells_for([], ["humaneval"])  # the checkpoints ship with the package
    rows = [parse_row("greedy"), parse_row("sps"), parse_row("sps:fixed_budget=4")]
    res = grid.run(cells, rows, Settings(limit=3, repeats=1, warmup=0, max_new_tokens=48, threads=1), progress=False)
    assert not res["partial"]
    for r in res["rows"]:
        assert r["status"] == "ok", (r["row"], r["status"])
        if r["row"] != "greedy":
            assert r["exact_match"]["rate"] == 1.0
    sps = next(r for r in res["rows"] if r["row"] == "sps")
    assert sps["tau"] > 1.0  # the trained draft gets tokens accepted
