"""The runner end to end on tiny random models: rows, peers, the exact-match check against a
planted divergent method, failure rows, interrupted runs, and the CLI's bad-input exits."""
import json
from dataclasses import dataclass

import pytest
import torch

from decodelab import registry
from decodelab.bench import grid, parse_row
from decodelab.cli import main
from decodelab.bench import runner
from decodelab.loops import autoregressive
from decodelab.options import Options
from decodelab.state import State

from .conftest import FAST


@dataclass(frozen=True, kw_only=True)
class _NoConfig(Options):
    pass


@pytest.fixture
def planted():
    """Two test-only methods, removed afterwards: `planted_divergent` claims greedy losslessness
    but takes the runner-up token at step 3 of prompts whose first token is even;
    `planted_interrupt` raises KeyboardInterrupt on its third call."""
    def divergent(req, config):
        flip = int(req.prompt[0]) % 2 == 0
        n0 = len(req.prompt)

        def pick(logits, ctx):
            if flip and len(ctx) == n0 + 3:
                return int(torch.topk(logits, 2).indices[1])
            return int(logits.argmax())
        return autoregressive.decode(req, pick)

    calls = []

    def interrupt(req, config):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return autoregressive.decode(req, lambda lg, ctx: int(lg.argmax()))

    registry.register("planted_divergent", family="autoregressive", config=_NoConfig, lossless="greedy",
                      modes=("greedy",))(divergent)
    registry.register("planted_interrupt", family="autoregressive", config=_NoConfig, lossless="greedy",
                      modes=("greedy",))(interrupt)
    yield
    registry._METHODS.pop("planted_divergent", None)
    registry._METHODS.pop("planted_interrupt", None)


def _cells(tiny_dirs, arch="llama"):
    t, d = tiny_dirs[arch]
    return grid.cells_for([(t, d)], ["synthetic"])


def _row(results, label):
    return next(r for r in results["rows"] if r["row"] == label)


def test_rows_peers_and_counts(tiny_dirs):
    rows = [parse_row("greedy"), parse_row("sps:gamma=3"), parse_row("sps:fixed_budget=3"), parse_row("sample")]
    res = grid.run(_cells(tiny_dirs), rows, FAST, progress=False)
    labels = [r["row"] for r in res["rows"]]
    assert labels == ["greedy", "hf:greedy", "sps:gamma=3", "sps:fixed_budget=3", "sample", "hf:assisted",
                      "hf:prompt-lookup"]
    assert not res["partial"] and all(r["status"] == "ok" for r in res["rows"]), [r["status"] for r in res["rows"]]
    unit = res["units"][0]
    assert len(unit["records"]) == 7 * 2 and all(r["new_tokens"] == 8 for r in unit["records"])
    # every row generated the same number of tokens, and the lossless ones the same tokens
    for label in ("sps:gamma=3", "sps:fixed_budget=3", "hf:greedy", "hf:assisted", "hf:prompt-lookup"):
        assert _row(res, label)["exact_match"]["rate"] == 1.0
        assert unit["outputs"][label] == unit["outputs"]["greedy"]
    g, sps = _row(res, "greedy"), _row(res, "sps:gamma=3")
    assert g["tau"] == 1.0 and g["target_forwards_per_token"] == 1.0 and g["tokens_per_target_forward"] == 1.0
    assert sps["draft_forwards_per_token"] > 0 and sps["tokens_per_target_forward"] > 1.0
    assert _row(res, "sps:fixed_budget=3")["tokens_per_target_forward"] <= 3.0
    assert _row(res, "hf:greedy")["tau"] == 1.0 and _row(res, "hf:greedy")["target_forwards_per_token"] == 1.0
    assert _row(res, "sample")["quality"] is not None and not _row(res, "sample")["claims_greedy_equality"]
    assert g["speedup_vs_greedy"]["median"] == 1.0 and g["speedup_vs_hf_greedy"]["median"] > 0
    json.dumps(res)  # the whole document is JSON
    from decodelab.bench import report

    md = report.markdown(res).splitlines()
    (answer,) = [x for x in md if x.startswith("**Fastest here**")]
    assert "with our greedy's output on every prompt: `" in answer and "With another output: `sample` at " in answer
    # the peer line: each pair's median [IQR] and its range over the prompts
    s = _row(res, "sps:gamma=3")["speedup_vs_peer"]
    assert s["min"] <= s["q25"] <= s["median"] <= s["q75"] <= s["max"]
    (peers,) = [x for x in md if x.startswith("vs the peer")]
    assert (f"sps:gamma=3 / hf:assisted = {s['median']:.2f} [{s['q25']:.2f}-{s['q75']:.2f}], "
            f"{s['min']:.2f}-{s['max']:.2f}") in peers


def test_planted_divergent_method_is_a_failure_row(tiny_dirs, planted):
    settings = FAST.__class__(**{**FAST.__dict__, "limit": 4})
    res = grid.run(_cells(tiny_dirs), [parse_row("planted_divergent")], settings, peers_on=False, progress=False)
    row = _row(res, "planted_divergent")
    prompts = res["units"][0]["prompts"]
    even = sum(p[0] % 2 == 0 for p in prompts)
    assert 0 < even < 4  # the planted flip hits some prompts, not all
    assert row["exact_match"]["rate"] == pytest.approx((4 - even) / 4)
    assert row["status"].startswith("FAIL: output differs from greedy")
    from decodelab.bench import report

    md = report.markdown(res)
    assert "**FAILURE: planted_divergent" in md and "FAIL**" in md


def test_failing_row_does_not_stop_the_others(tiny_dirs):
    t, _ = tiny_dirs["llama"]
    # sps without a draft model is refused up front (a row the user asked for)
    from decodelab.errors import DecodeLabError

    with pytest.raises(DecodeLabError, match="need a draft model"):
        grid.run(grid.cells_for([(t, None)], ["synthetic"]), [parse_row("sps")], FAST, progress=False)
    # with default rows it is left out instead
    res = grid.run(grid.cells_for([(t, None)], ["synthetic"]), [parse_row("greedy"), parse_row("sps")], FAST,
                   peers_on=False, progress=False, strict=False)
    assert [r["row"] for r in res["rows"]] == ["greedy"]


def test_interrupted_run_keeps_results_marked_partial(tiny_dirs, planted, tmp_path):
    t, d = tiny_dirs["llama"]
    code = main(["bench", "--model", t, "--workload", "synthetic", "--method", "greedy", "--method",
                 "planted_interrupt", "--no-peers", "--limit", "2", "--repeats", "2", "--warmup", "0",
                 "--max-new-tokens", "4", "--threads", "1", "--out", str(tmp_path), "--no-plots", "--no-progress"])
    assert code == 130
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["partial"] and all(r["status"] == "partial" for r in res["rows"])
    recs = res["units"][0]["records"]
    # repeat 0: greedy p0, interrupt p0, greedy p1, interrupt p1; repeat 1: greedy p0, then the
    # third call of planted_interrupt raises: the five generations before it are kept
    assert [(r["row"], r["prompt"], r["repeat"]) for r in recs] == [
        ("greedy", 0, 0), ("planted_interrupt", 0, 0), ("greedy", 1, 0), ("planted_interrupt", 1, 0), ("greedy", 0, 1)]
    assert "PARTIAL RESULTS" in (tmp_path / "results.md").read_text()


@pytest.mark.parametrize("argv,msg", [
    (["--workload", "nope"], "unknown workload 'nope'"),
    (["--workload", "synthetic", "--method", "nope"], "unknown method 'nope'"),
    (["--workload", "synthetic", "--method", "sps:gamma=-1"], "gamma must be an integer in [1, 128] or 'auto', got -1"),
    (["--workload", "synthetic"], "has no default model"),
    (["--workload", "synthetic", "--model", "/"], "is not a model directory"),
    (["--workload", "synthetic", "--model", "zoo:nope"], "zoo"),
])
def test_cli_bad_input_exits_2(argv, msg, capsys, tmp_path):
    assert main(["bench", *argv, "--out", str(tmp_path)]) == 2
    assert msg in capsys.readouterr().err
    assert not (tmp_path / "results.json").exists()  # nothing half-written


def test_cli_run_and_report_rerender(tiny_dirs, tmp_path, capsys):
    t, d = tiny_dirs["gpt2"]
    out = tmp_path / "run"
    code = main(["bench", "--model", t, "--draft", d, "--workload", "synthetic", "--method", "greedy", "--method",
                 "sps:gamma=2", "--limit", "1", "--repeats", "1", "--warmup", "0", "--max-new-tokens", "4",
                 "--threads", "1", "--out", str(out), "--no-progress"])
    assert code == 0
    assert {p.name for p in out.iterdir()} >= {"results.json", "results.md", "speedup.png"}
    first = (out / "results.md").read_text()
    assert "| sps:gamma=2 |" in first and "| hf:assisted |" in first
    again = tmp_path / "again"
    assert main(["bench", "report", str(out / "results.json"), "--out", str(again), "--no-plots"]) == 0
    assert (again / "results.md").read_text() == first
    (tmp_path / "junk.json").write_text("{not json")
    assert main(["bench", "report", str(tmp_path / "junk.json")]) == 2
    assert "not a bench results JSON" in capsys.readouterr().err


def test_task_workload_scores_accuracy(tok_model_dir):
    cells = grid.cells_for([(tok_model_dir, None)], ["tasks:copy"])
    res = grid.run(cells, [parse_row("greedy"), parse_row("sample")], FAST, peers_on=False, progress=False)
    g = _row(res, "greedy")
    assert g["quality_kind"] == "accuracy" and 0.0 <= g["quality"] <= 1.0
    assert len(res["units"][0]["quality"]["sample"]) == 2


def test_cli_suite_file(tiny_dirs, tmp_path):
    t, d = tiny_dirs["qwen2"]
    suite = tmp_path / "suite.toml"
    suite.write_text(f'[bench]\nworkloads = ["synthetic"]\nmodels = [{{ target = "{t}", draft = "{d}" }}]\n'
                     'limit = 1\nrepeats = 1\nwarmup = 0\nmax_new_tokens = 4\nthreads = 1\npeers = false\n\n'
                     '[[method]]\nname = "sps"\nfixed_budget = 3\n')
    assert main(["bench", "--suite", str(suite), "--out", str(tmp_path / "o"), "--no-plots", "--no-progress"]) == 0
    res = json.loads((tmp_path / "o" / "results.json").read_text())
    assert [r["row"] for r in res["rows"]] == ["greedy", "sps:fixed_budget=3"] and res["settings"]["limit"] == 1
    suite.write_text("[bench]\nrepeatz = 2\n")
    assert main(["bench", "--suite", str(suite)]) == 2


# token_recycling and aded with a fixed tree: their auto sizes read the clock-measured cost curve
# (so two repeats need not make the same forwards), and these checks need them to draft
@pytest.mark.parametrize("method", ["token_recycling:template=top8", "aded:budget=8"])
def test_stateful_methods_start_every_repeat_cold(tok_model_dir, method, monkeypatch):
    """State carries over the prompts of a repeat but not into the next repeat: every repeat
    makes the same forwards. With one State for the whole run (the runner's per-repeat States
    switched off) the second repeat runs warm on prompts it has seen, and its counts differ (so
    the check can fail)."""
    settings = FAST.__class__(**{**FAST.__dict__, "limit": 3, "repeats": 2, "warmup": 1, "max_new_tokens": 24})
    cells = grid.cells_for([(tok_model_dir, None)], ["code-heldout"])

    def forwards(res):
        recs = res["units"][0]["records"]
        return [[r["target_forwards"] for r in recs if r["row"] == method and r["repeat"] == k] for k in (0, 1)]

    res = grid.run(cells, [parse_row(method)], settings, peers_on=False, progress=False)
    first, second = forwards(res)
    assert first == second
    shared = State()
    monkeypatch.setattr(runner, "State", lambda: shared)
    first, second = forwards(grid.run(cells, [parse_row(method)], settings, peers_on=False, progress=False))
    assert sum(second) < sum(first)


def test_rows_of_a_stateful_method_keep_separate_states(tok_model_dir, monkeypatch):
    """Two rows with the same configuration decode each prompt with the same forwards: the
    second row does not draft from what the first learnt on that prompt. With one shared State
    the second row needs fewer forwards, so the check can fail."""
    settings = FAST.__class__(**{**FAST.__dict__, "limit": 3, "max_new_tokens": 24})
    cells = grid.cells_for([(tok_model_dir, None)], ["code-heldout"])
    rows = [parse_row("token_recycling:template=top8"), parse_row("token_recycling:template=top8,topk=8")]

    def forwards():
        recs = grid.run(cells, rows, settings, peers_on=False, progress=False)["units"][0]["records"]
        return [sum(r["target_forwards"] for r in recs if r["row"] == row.label) for row in rows]

    first, second = forwards()
    assert first == second
    shared = State()
    monkeypatch.setattr(runner, "State", lambda: shared)
    first, second = forwards()
    assert second < first


def test_peak_memory_sees_each_generations_own_peak():
    """The peak of one generation's window: an allocation made and freed inside it counts, and a
    reset forgets it (the kernel's VmHWM on Linux, else the polling thread)."""
    import numpy as np

    from decodelab.bench.runner import _PeakMemory

    with _PeakMemory("cpu") as mem:
        mem.reset()
        base = mem.peak()
        a = np.ones(50_000_000)  # 381 MiB, touched
        del a
        import time

        time.sleep(0.02)  # the polling thread's fallback samples every 5 ms
        assert mem.peak() - base > 300
        mem.reset()
        assert mem.peak() - base < 100
