"""Metric arithmetic on hand-made timings and counts: no model, no clock."""
import math

import pytest

from decodelab.bench import metrics
from decodelab.bench.rows import Row


def rec(row, prompt, seconds, new=10, tf=10, ts=10, df=0, ds=0, ct=None, cs=None, repeat=0, mem=100.0, cpu=None):
    return {"row": row, "prompt": prompt, "repeat": repeat, "seconds": seconds, "new_tokens": new,
            "cpu_seconds": seconds if cpu is None else cpu,
            "target_forwards": tf, "target_tokens_scored": ts, "draft_forwards": df, "draft_tokens_scored": ds,
            "committed_total": new if ct is None else ct, "committed_steps": tf if cs is None else cs,
            "peak_mem_mb": mem}


def test_quantile_matches_linear_interpolation():
    xs = [4.0, 1.0, 3.0, 2.0]
    assert metrics.quantile(xs, 0.0) == 1.0 and metrics.quantile(xs, 1.0) == 4.0
    assert metrics.quantile(xs, 0.25) == pytest.approx(1.75)
    assert metrics.quantile(xs, 0.5) == pytest.approx(2.5)
    assert metrics.spread(xs) == {"median": 2.5, "q25": pytest.approx(1.75), "q75": pytest.approx(3.25), "n": 4,
                                  "min": 1.0, "max": 4.0}
    assert metrics.spread([]) is None


def test_tokens_per_second_uses_median_over_repeats():
    records = [rec("a", 0, 1.0, repeat=0), rec("a", 0, 3.0, repeat=1), rec("a", 0, 2.0, repeat=2),
               rec("a", 1, 0.5, new=20)]
    tps = metrics.per_prompt_tps(records, "a")
    assert tps == {0: pytest.approx(10 / 2.0), 1: pytest.approx(40.0)}


def test_speedup_is_a_per_prompt_ratio_over_shared_prompts():
    records = [rec("greedy", 0, 2.0), rec("greedy", 1, 4.0), rec("greedy", 2, 1.0),
               rec("fast", 0, 1.0), rec("fast", 1, 1.0)]  # prompt 2 missing for "fast"
    assert metrics.speedups(records, "fast", "greedy") == [pytest.approx(2.0), pytest.approx(4.0)]


def test_pooled_speedup_weighs_prompts_by_their_time():
    """The pooled ratio is total tokens over total time, row over ref, on the shared prompts: a row
    twice as fast on two prompts and four times slower on a third has a median ratio of 2 and a
    pooled one below 1."""
    records = [rec("greedy", p, 1.0) for p in range(4)]  # prompt 3: the row never finished it
    records += [rec("lopsided", 0, 0.5), rec("lopsided", 1, 0.5), rec("lopsided", 2, 4.0, repeat=0),
                rec("lopsided", 2, 2.0, repeat=1), rec("lopsided", 2, 6.0, repeat=2)]
    assert sorted(metrics.speedups(records, "lopsided", "greedy")) == pytest.approx([0.25, 2.0, 2.0])
    assert metrics.pooled_speedup(records, "lopsided", "greedy") == pytest.approx(3.0 / 5.0)
    assert metrics.pooled_speedup(records, "lopsided", "absent") is None


def unit_result(records, outputs, quality=None, kind="perplexity", errors=None, partial=False):
    rows = [Row("greedy", "greedy"), Row("sps", "sps"), Row("hf:greedy", "hf:greedy"), Row("sample", "sample")]
    return {"unit": {"uid": 0, "model": "m", "draft": "d", "workload": "w", "rows": [r.to_dict() for r in rows],
                     "main": [r.label for r in rows]},
            "records": records, "outputs": outputs, "quality": quality or {}, "quality_kind": kind,
            "errors": errors or {}, "partial": partial}


def test_row_summary_figures():
    records = [rec("greedy", p, 2.0) for p in range(4)] + [rec("hf:greedy", p, 4.0) for p in range(4)]
    # sps: 10 tokens from 4 target forwards of 5 tokens each (tau 2.5), 12 draft forwards, twice as fast
    records += [rec("sps", p, 1.0, tf=4, ts=20, df=12, ds=12, ct=10, cs=4, cpu=0.5) for p in range(4)]
    outputs = {"greedy": [[1, 2]] * 4, "hf:greedy": [[1, 2]] * 4, "sps": [[1, 2]] * 4}
    res = unit_result(records, outputs)
    s = metrics.row_summary(res, Row("sps", "sps"))
    assert s["tokens_per_s"]["median"] == pytest.approx(10.0)
    assert s["speedup_vs_greedy"]["median"] == pytest.approx(2.0)
    assert s["speedup_vs_hf_greedy"]["median"] == pytest.approx(4.0)
    assert s["cpu_speedup_vs_greedy"]["median"] == pytest.approx(4.0)  # 2.0 s of greedy CPU vs 0.5 s
    assert s["pooled_speedup_vs_greedy"] == pytest.approx(2.0)
    assert s["tau"] == pytest.approx(2.5)
    assert s["efficiency"] == pytest.approx(2.0 / 2.5)
    assert s["target_forwards_per_token"] == pytest.approx(0.4)
    assert s["draft_forwards_per_token"] == pytest.approx(1.2)
    assert s["tokens_per_target_forward"] == pytest.approx(5.0)
    assert s["peak_mem_mb"] == 100.0
    assert s["exact_match"]["rate"] == 1.0 and s["status"] == "ok"
    g = metrics.row_summary(res, Row("greedy", "greedy"))
    assert g["speedup_vs_greedy"]["median"] == 1.0 and g["exact_match"] is None and g["tau"] == 1.0


def test_efficiency_is_per_prompt_speedup_over_tau():
    """Prompt 0: tau 5, 4x faster (eff 0.8); prompts 1 and 2: tau 1.25, 1x (eff 0.8). The median
    speedup over the pooled tau (1.0 / 2.1) would misstate it; a row never realises more than
    its per-step cost allows."""
    records = [rec("greedy", p, 2.0) for p in range(3)]
    records += [rec("sps", 0, 0.5, tf=2, ct=10, cs=2), rec("sps", 1, 2.0, tf=8, ct=10, cs=8),
                rec("sps", 2, 2.0, tf=8, ct=10, cs=8)]
    s = metrics.row_summary(unit_result(records, {}), Row("sps", "sps"))
    assert s["tau"] == pytest.approx(30 / 18)
    assert s["speedup_vs_greedy"]["median"] == pytest.approx(1.0)
    assert s["efficiency"] == pytest.approx(0.8)


def test_exact_match_below_one_fails_the_row_loudly():
    records = [rec("greedy", p, 1.0) for p in range(4)] + [rec("sps", p, 1.0) for p in range(4)]
    outputs = {"greedy": [[1], [2], [3], [4]], "sps": [[1], [2], [9], [4]]}
    s = metrics.row_summary(unit_result(records, outputs), Row("sps", "sps"))
    assert s["exact_match"] == {"rate": 0.75, "matched": 3, "prompts": 4, "first_mismatch": 2}
    assert s["status"].startswith("FAIL") and "1/4" in s["status"]


def test_output_changing_between_repeats_fails_a_lossless_row():
    res = unit_result([rec("greedy", 0, 1.0), rec("sps", 0, 1.0)], {"greedy": [[1]], "sps": [[1]]})
    res["unstable"] = {"sps": 1}
    assert metrics.row_summary(res, Row("sps", "sps"))["status"].startswith("FAIL: output changed between repeats")


def test_sampling_rows_are_not_held_to_greedy_equality():
    records = [rec("greedy", 0, 1.0), rec("sample", 0, 1.0)]
    outputs = {"greedy": [[1]], "sample": [[7]]}
    s = metrics.row_summary(unit_result(records, outputs), Row("sample", "sample"))
    assert not s["claims_greedy_equality"] and s["status"] == "ok"


def test_quality_perplexity_and_accuracy_deltas():
    records = [rec("greedy", p, 1.0, new=2) for p in range(2)] + [rec("sample", p, 1.0, new=2) for p in range(2)]
    outputs = {"greedy": [[1, 2], [3, 4]], "sample": [[1, 5], [3, 6]]}
    nll = {"greedy": [1.0, 3.0], "sample": [4.0, 4.0]}
    s = metrics.row_summary(unit_result(records, outputs, nll), Row("sample", "sample"))
    assert s["quality"] == pytest.approx(math.exp(8.0 / 4)) and s["quality_kind"] == "perplexity"
    assert s["quality_delta"] == pytest.approx(math.exp(2.0) - math.exp(1.0))
    acc = metrics.row_summary(unit_result(records, outputs, {"greedy": [1.0, 1.0], "sample": [1.0, 0.0]},
                                          kind="accuracy"), Row("sample", "sample"))
    assert acc["quality"] == 0.5 and acc["quality_delta"] == -0.5


def test_error_rows_and_partial_units():
    res = unit_result([rec("greedy", 0, 1.0)], {"greedy": [[1]], "sps": []}, errors={"sps": "RuntimeError: boom"},
                      partial=True)
    s = metrics.row_summary(res, Row("sps", "sps"))
    assert s["status"] == "FAIL: error" and s["error"] == "RuntimeError: boom" and s["tokens_per_s"] is None
    assert metrics.row_summary(res, Row("greedy", "greedy"))["status"] == "partial"


def test_speedup_vs_the_matching_transformers_peer():
    b4 = (("fixed_budget", 4),)
    rows = [Row("greedy", "greedy"), Row("hf:greedy", "hf:greedy"), Row("sps:fixed_budget=4", "sps", b4),
            Row("hf:assisted", "hf:assisted"), Row("hf:assisted:fixed_budget=4", "hf:assisted", b4)]
    labels = {r.label for r in rows}
    assert metrics.peer_label(rows[0], labels) == "hf:greedy"
    assert metrics.peer_label(rows[2], labels) == "hf:assisted:fixed_budget=4"
    assert metrics.peer_label(Row("sps", "sps"), labels) == "hf:assisted"
    assert metrics.peer_label(rows[3], labels) is None
    res = unit_result([rec("greedy", 0, 1.0), rec("hf:greedy", 0, 1.5)], {"greedy": [[1]], "hf:greedy": [[1]]})
    assert metrics.row_summary(res, Row("greedy", "greedy"))["speedup_vs_peer"]["median"] == pytest.approx(1.5)
