"""Fan-out: the split plan (one unit per row, references measured alongside) gives the same
result as the in-process run, run through any map-like executor and through a local Ray."""

from decodelab.bench import grid, parse_row
from decodelab.bench.runner import run_unit

from .conftest import FAST

TIMING = {"tokens_per_s", "speedup_vs_greedy", "pooled_speedup_vs_greedy", "cpu_speedup_vs_greedy",
          "speedup_vs_hf_greedy", "speedup_vs_peer", "efficiency", "peak_mem_mb", "unit"}


def _grid(tiny_dirs):
    cells = grid.cells_for([tiny_dirs["llama"], tiny_dirs["qwen2"]], ["synthetic"])
    return cells, [parse_row("greedy"), parse_row("sps:gamma=2"), parse_row("sample")]


def _comparable(results):
    rows = {(r["model"], r["workload"], r["row"]): {k: v for k, v in r.items() if k not in TIMING}
            for r in results["rows"]}
    outputs = {(u["unit"]["model"], label): outs for u in results["units"] for label, outs in u["outputs"].items()}
    return rows, outputs


def test_plan_splits_rows_and_keeps_references(tiny_dirs):
    cells, rows = _grid(tiny_dirs)
    units = grid.plan(cells, rows, FAST, split=True)
    mains = [m for u in units for m in u.main]
    assert sorted(mains) == sorted(2 * ["greedy", "hf:greedy", "sps:gamma=2", "sample", "hf:assisted",
                                        "hf:prompt-lookup"])
    assert all({"greedy", "hf:greedy"} <= {r.label for r in u.rows} for u in units)
    assert len(grid.plan(cells, rows, FAST)) == 2  # in-process: one unit per cell


def test_split_units_equal_in_process(tiny_dirs):
    cells, rows = _grid(tiny_dirs)
    local = grid.run(cells, rows, FAST, progress=False)
    fanned = grid.run(cells, rows, FAST, progress=False, executor=lambda units: map(run_unit, units))
    assert fanned["settings"]["executor"] == "custom" and len(fanned["units"]) == 10
    assert _comparable(local)[0] == _comparable(fanned)[0]


def test_ray_local_equals_in_process(tiny_dirs):
    """A real local Ray instance (about 30 s on 2 cores); ray comes with the test extra."""
    cells, rows = _grid(tiny_dirs)
    local = grid.run(cells, rows, FAST, progress=False)
    fanned = grid.run(cells, rows, FAST, progress=False, ray="local")
    assert fanned["settings"]["executor"] == "ray:local" and not fanned["partial"]
    assert _comparable(local)[0] == _comparable(fanned)[0]
