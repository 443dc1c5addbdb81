"""decodelab.bench: which decoding method makes a model fastest without changing its output, and
what a lossy one costs, measured side by side with transformers generate() in one run.

    from decodelab.bench import Settings, grid, parse_row
    results = grid.run(grid.cells_for([("zoo:code-target", "zoo:code-draft")], ["humaneval"]),
                       [parse_row("greedy"), parse_row("sps:gamma=4")], Settings(limit=5))

Layout: workloads (prompts), rows (method specs, budget axis), peers (transformers rows), runner
(one unit, timed), metrics (arithmetic), grid (plan, in-process or Ray, merge), report (JSON,
markdown), plots (PNG), cli (`decodelab bench`). Guide: docs/bench.md.
"""
from .rows import Row, load_suite, parse_row
from .runner import Settings, Unit, run_unit

__all__ = ["Row", "parse_row", "load_suite", "Settings", "Unit", "run_unit"]
