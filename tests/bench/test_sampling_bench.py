"""The bench's text-quality figures for sampling and search rows: distinct-n and rep-4 on
hand-built outputs, the surprise of a ToyLM whose probabilities are powers of two (so every
token's surprise is a whole number of bits), and a small end-to-end run: every returned sequence
kept, the report's table, the speed-against-quality plot."""
import math
from types import SimpleNamespace

import pytest
import torch

from decodelab.bench import Settings, grid, metrics, parse_row, report, runner
from decodelab.bench.rows import Row
from decodelab.models.toy import ToyLM

# P[prev][next], each a power of two: -log2 p is 1, 2 or 3 bits
P = [[1 / 2, 1 / 4, 1 / 8, 1 / 8],
     [1 / 8, 1 / 8, 1 / 2, 1 / 4],
     [1 / 4, 1 / 2, 1 / 8, 1 / 8],
     [1 / 8, 1 / 2, 1 / 4, 1 / 8]]


def unit(outputs, quality=None, sequences=None, kind="perplexity"):
    rows = [Row("greedy", "greedy"), Row("beam", "beam")]
    return {"unit": {"uid": 0, "model": "m", "draft": None, "workload": "w", "rows": [r.to_dict() for r in rows],
                     "main": [r.label for r in rows]},
            "records": [], "outputs": outputs, "sequences": sequences or {}, "quality": quality or {},
            "quality_kind": kind, "errors": {}, "partial": False}


def test_distinct_and_repetition_on_hand_built_outputs():
    a = [1, 2, 3, 1, 2, 3, 1, 2]  # 3 types / 8 tokens; 3 of 7 bigrams; 3 of 6 trigrams; 3 of 5 4-grams
    b = [4, 5, 6, 7]  # nothing repeats
    t = metrics.text_quality(unit({"greedy": [a, b]}), "greedy")
    assert t["distinct_1"] == pytest.approx((3 / 8 + 1) / 2)  # within each output, mean over prompts
    assert t["distinct_2"] == pytest.approx((3 / 7 + 1) / 2)
    assert t["distinct_3"] == pytest.approx((3 / 6 + 1) / 2)
    assert t["repetition_4"] == pytest.approx((1 - 3 / 5 + 0) / 2)
    assert t["distinct_across_2"] is None and t["sequences_per_prompt"] == 1
    assert t["surprise_bits"] is None  # no NLL measured
    # a several-output row: pooled over each prompt's returned sequences, then the mean over prompts
    seqs = [[[1, 2, 3], [1, 2, 4]], [[5, 6], [5, 6]]]  # prompt 0: 4 of 6 unigrams, 3 of 4 bigrams; 1: 2/4, 1/2
    t = metrics.text_quality(unit({"beam": [s[0] for s in seqs]}, sequences={"beam": seqs}), "beam")
    assert t["distinct_across_1"] == pytest.approx((4 / 6 + 2 / 4) / 2)
    assert t["distinct_across_2"] == pytest.approx((3 / 4 + 1 / 2) / 2)
    assert t["distinct_across_3"] == pytest.approx((2 / 2 + 1.0) / 2)  # [5, 6] has no trigram: prompt 0 only
    assert t["distinct_1"] == pytest.approx(1.0) and t["sequences_per_prompt"] == 2
    # an output shorter than n counts for nothing, not for zero
    assert metrics.text_quality(unit({"greedy": [[1, 2], [3]]}), "greedy")["distinct_2"] == pytest.approx(1.0)


def test_surprise_is_the_teacher_forced_nll_in_bits():
    toy = ToyLM(torch.log(torch.tensor(P)))
    prompts, outs = [[0], [3]], [[1, 2, 1], [3, 0]]  # 2 + 1 + 1 bits; 3 + 3 bits
    assert runner.target_logprobs(toy, prompts[0], outs[0]) == pytest.approx(
        [math.log(1 / 4), math.log(1 / 2), math.log(1 / 2)])
    wl = SimpleNamespace(quality="perplexity", checker=None)
    nll = runner._quality(toy, wl, prompts, outs)
    assert nll == pytest.approx([4 * math.log(2), 6 * math.log(2)])  # the NLL sums perplexity is made of
    res = unit({"greedy": outs}, quality={"greedy": nll})
    t = metrics.text_quality(res, "greedy")
    assert t["surprise_bits"] == pytest.approx(10 / 5)  # token-weighted: 10 bits over 5 tokens (not 13/6)
    assert metrics.row_summary(res, Row("greedy", "greedy"))["quality"] == pytest.approx(2 ** 2)  # ppl = 2^bits
    # only a perplexity cell has one
    assert metrics.text_quality(unit({"greedy": outs}, {"greedy": [1.0, 0.0]}, kind="accuracy"),
                                "greedy")["surprise_bits"] is None


def test_a_sampling_cell_end_to_end(tok_model_dir, tmp_path):
    rows = [parse_row("greedy"), parse_row("sample:top_p=0.9"), parse_row("mirostat:tau=3"),
            parse_row("beam:num_beams=2"), parse_row("diverse_beam:num_beams=4,num_beam_groups=2")]
    settings = Settings(repeats=1, warmup=0, limit=2, max_new_tokens=8, threads=1)
    res = grid.run(grid.cells_for([(tok_model_dir, None)], ["synthetic"]), rows, settings, peers_on=False,
                   progress=False)
    assert all(r["status"] == "ok" for r in res["rows"]), [(r["row"], r["status"], r["error"]) for r in res["rows"]]
    u = res["units"][0]
    assert set(u["sequences"]) == {"beam:num_beams=2", "diverse_beam:num_beam_groups=2,num_beams=4"}
    for label, seqs in u["sequences"].items():  # every returned sequence per prompt, best first = the output
        assert [s[0] for s in seqs] == u["outputs"][label] and len(seqs) == 2
    by = {r["row"]: r for r in res["rows"]}
    assert by["beam:num_beams=2"]["sequences_per_prompt"] == 2
    assert by["diverse_beam:num_beam_groups=2,num_beams=4"]["sequences_per_prompt"] == 4
    assert by["beam:num_beams=2"]["distinct_across_2"] is not None and by["mirostat:tau=3"]["distinct_across_2"] is None
    for r in res["rows"]:
        assert r["surprise_bits"] == pytest.approx(math.log2(r["quality"]))
        assert all(0 < r[f"distinct_{n}"] <= 1 for n in (1, 2, 3)) and 0 <= r["repetition_4"] < 1
    md = report.markdown(res)
    assert "Text quality of greedy and of the rows whose output may differ from it:" in md
    assert "| " + " | ".join(report.TEXT_COLUMNS) + " |" in md
    lines = md.splitlines()
    text = lines[lines.index("| " + " | ".join(report.TEXT_COLUMNS) + " |"):]  # the text-quality table on
    line = next(x for x in text if x.startswith("| diverse_beam:"))
    assert line.split("|")[6].strip().endswith("(4)")  # across k = 4 sequences
    written = {p.name for p in report.render(res, tmp_path)}
    assert {"quality.png", "speedup.png"} <= written and (tmp_path / "quality.png").stat().st_size > 0


def test_no_text_table_without_rows_that_may_differ():
    rows = [{"row": "greedy", "claims_greedy_equality": False, "peer": False},
            {"row": "sps", "claims_greedy_equality": True, "peer": False},
            {"row": "hf:greedy", "claims_greedy_equality": True, "peer": True}]
    assert report.text_section(rows) == []
    assert [r["row"] for r in report.text_rows(rows, also_greedy=True)] == ["greedy"]  # other cells have some
    assert [r["row"] for r in report.text_rows(rows + [{"row": "sample", "claims_greedy_equality": False}])] == [
        "greedy", "sample"]
