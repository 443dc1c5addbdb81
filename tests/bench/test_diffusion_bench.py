"""The bench on masked diffusion LMs: the one-token-per-step llada reference (and llada at the
steps and blocks of each lossless row) measured in the same unit, no transformers peers, rows of
the other family left out, NFE / tokens per forward / forwarded tokens, exact match against the
reference (a planted lossy method that claims losslessness FAILS), accuracy per task, the
ParallelBench table, the accuracy-vs-NFE plot, agreement on code, and suite files whose models
take their own workloads and rows."""
import json
from dataclasses import dataclass

import pytest

from decodelab import registry
from decodelab.bench import grid, parse_row, report
from decodelab.bench.plots import front
from decodelab.cli import main
from decodelab.loops import diffusion
from decodelab.options import Options

from .conftest import FAST

ROWS = ["llada:steps=12", "llada:steps=6", "fast_dllm", "freedave", "freedave:block_length=8", "eoser", "greedy"]


def _row(res, label):
    return next(r for r in res["rows"] if r["row"] == label)


@pytest.fixture(scope="module")
def tasks_run():
    settings = FAST.__class__(**{**FAST.__dict__, "limit": None, "max_new_tokens": None})
    cells = grid.cells_for([("zoo:tasks-mdlm", None, ["tasks:copy"])], [])
    # two prompts per task: tasks:copy limited by hand (limit cuts the combined list)
    return grid.run(cells, [parse_row(r) for r in ROWS], settings.__class__(**{**settings.__dict__, "limit": 3}),
                    progress=False)


def test_rows_references_and_no_peers(tasks_run):
    labels = [r["row"] for r in tasks_run["rows"]]
    assert labels[:2] == ["llada", "llada:block_length=8"]  # the references first
    assert "greedy" not in labels and not any(lb.startswith("hf:") for lb in labels)  # other family, no peers
    assert set(ROWS) - {"greedy"} <= set(labels)
    assert all(r["status"] == "ok" for r in tasks_run["rows"]), [(r["row"], r["status"]) for r in tasks_run["rows"]]
    assert tasks_run["units"][0]["unit"]["reference"] == "llada" and tasks_run["units"][0]["max_new_tokens"] == 24


def test_counts_and_ratios(tasks_run):
    base, half, fd = _row(tasks_run, "llada"), _row(tasks_run, "llada:steps=12"), _row(tasks_run, "freedave")
    assert base["nfe"] == 24 and base["tokens_per_forward"] == 1.0 and base["speedup_vs_reference"]["median"] == 1.0
    assert half["nfe"] == 12 and half["tokens_per_forward"] == 2.0 and half["nfe_reduction"] == 2.0
    assert fd["nfe"] < 24 and fd["forwarded_per_forward"] > base["forwarded_per_forward"]  # batches of drafts
    assert fd["claims_greedy_equality"] and fd["exact_match"]["rate"] == 1.0 and fd["exact_match_ref"] == "llada"
    blocked = _row(tasks_run, "freedave:block_length=8")
    assert blocked["exact_match_ref"] == "llada:block_length=8" and blocked["exact_match"]["rate"] == 1.0
    assert not half["claims_greedy_equality"] and half["exact_match_1step"] is not None
    assert base["quality_kind"] == "accuracy" and base["by_task"]["copy"]["accuracy"] == base["quality"]
    assert base["by_task"]["copy"]["nfe"] == 24
    json.dumps(tasks_run)


def test_report_tables_and_plot(tasks_run, tmp_path):
    md = report.markdown(tasks_run)
    assert "## tasks:copy on zoo:tasks-mdlm (masked diffusion)" in md and "| x llada [IQR] |" in md
    assert "ParallelBench-style" in md and "| copy | 1.00 | " in md and "| 1/step | 2/step | 4/step |" in md
    assert "Accuracy per task" in md
    paths = report.render(tasks_run, tmp_path)
    assert (tmp_path / "pareto.png").stat().st_size > 0 and len(paths) == 2


def test_pareto_front():
    pts = [(24, 1.0), (12, 1.0), (6, 0.9), (3, 0.5), (8, 0.8), (1, 0.4)]
    assert front(pts) == [5, 3, 2, 1]  # (1, .4), (3, .5), (6, .9), (12, 1.0): (24, 1.0) and (8, .8) dominated


@pytest.fixture
def planted():
    @dataclass(frozen=True, kw_only=True)
    class _No(Options):
        pass

    # claims losslessness but unmasks 4 positions per step without verifying them
    registry.register("planted_parallel", family="diffusion", config=_No, lossless="greedy", modes=("greedy",))(
        lambda req, config: diffusion.decode(req, diffusion.Ranked(),
                                             schedule=lambda size, block: [4] * (size // 4)))
    yield
    registry._METHODS.pop("planted_parallel", None)


def test_a_lossy_method_claiming_losslessness_fails(planted):
    cells = grid.cells_for([("zoo:tasks-mdlm", None, ["tasks:shuffle"])], [])
    res = grid.run(cells, [parse_row("planted_parallel")], FAST.__class__(**{**FAST.__dict__, "limit": 12,
                                                                           "max_new_tokens": None}),
                   progress=False)
    row = _row(res, "planted_parallel")
    assert row["exact_match"]["rate"] < 1.0 and row["status"].startswith("FAIL: output differs from llada")


def test_code_quality_is_agreement_with_llada():
    settings = FAST.__class__(**{**FAST.__dict__, "limit": 1, "max_new_tokens": 16})
    res = grid.run(grid.cells_for([("zoo:code-mdlm", None)], ["code-heldout"]),
                   [parse_row("llada:steps=4"), parse_row("freedave")], settings, progress=False)
    assert _row(res, "llada")["quality"] == 1.0 and _row(res, "llada")["quality_kind"] == "agreement"
    assert 0 <= _row(res, "llada:steps=4")["quality"] <= 1 and _row(res, "freedave")["quality"] == 1.0


def test_default_models_and_rows_follow_the_family():
    assert grid.cells_for([], ["tasks:copy", "code-heldout"], diffusion=True) == [
        ("zoo:tasks-mdlm", None, "tasks:copy"), ("zoo:code-mdlm", None, "code-heldout")]
    assert grid.cells_for([], ["tasks:copy"]) == [("zoo:tasks-ar", "zoo:tasks-draft", "tasks:copy")]
    units = grid.plan([("zoo:tasks-ar", None, "tasks:copy")], [parse_row("greedy"), parse_row("llada")], FAST,
                      peers_on=False)
    assert [r.label for r in units[0].rows] == ["greedy"]  # a diffusion row is left out of a causal cell


def test_split_units_keep_their_references():
    units = grid.plan([("zoo:tasks-mdlm", None, "tasks:copy")], [parse_row("freedave:block_length=8")], FAST,
                      split=True)
    by_main = {u.main: [r.label for r in u.rows] for u in units}
    assert by_main[("llada",)] == ["llada"]
    assert by_main[("freedave:block_length=8",)] == ["llada", "llada:block_length=8", "freedave:block_length=8"]


def test_suite_models_with_their_own_workloads_and_rows(tmp_path):
    suite = tmp_path / "s.toml"
    suite.write_text('[bench]\nlimit = 1\nrepeats = 1\nwarmup = 0\nthreads = 1\npeers = false\n'
                     'models = [{ target = "zoo:tasks-mdlm", workloads = ["tasks:copy"], methods = ["eoser"] },\n'
                     '          { target = "zoo:code-mdlm", workloads = ["code-heldout"], limit = 2 }]\n'
                     'max_new_tokens = 8\n\n[[method]]\nname = "fast_dllm"\n')
    out = tmp_path / "o"
    assert main(["bench", "--suite", str(suite), "--out", str(out), "--no-plots", "--no-progress"]) == 0
    res = json.loads((out / "results.json").read_text())
    cells = {(r["model"], r["workload"]) for r in res["rows"]}
    assert cells == {("zoo:tasks-mdlm", "tasks:copy"), ("zoo:code-mdlm", "code-heldout")}
    assert {r["row"] for r in res["rows"] if r["model"] == "zoo:tasks-mdlm"} == {"llada", "fast_dllm", "eoser"}
    assert {r["row"] for r in res["rows"] if r["model"] == "zoo:code-mdlm"} == {"llada", "fast_dllm"}
    assert [u["unit"]["settings"]["limit"] for u in res["units"]] == [1, 2] and len(res["units"][1]["prompts"]) == 2
    bad = tmp_path / "bad.toml"
    bad.write_text('[bench]\nmodels = [{ target = "zoo:tasks-mdlm", rows = ["x"] }]\n')
    assert main(["bench", "--suite", str(bad)]) == 2
