"""bench.compute: quality against compute per problem, from a results document's raw records."""
import pytest

from decodelab.bench import compute


def _unit(kind="accuracy"):
    recs = []
    for row, fwd, scored, new in (("greedy", 10, 10, 10), ("astar", 12, 40, 10), ("cheap", 5, 5, 5),
                                  ("hf:greedy", 10, 10, 10), ("noise", 10, 10.5, 10)):
        for prompt in range(2):
            for rep in range(2):
                recs.append({"row": row, "prompt": prompt, "repeat": rep, "target_forwards": fwd + prompt,
                             "target_tokens_scored": scored + 2 * prompt, "new_tokens": new})
    return {"unit": {"uid": 0, "model": "m", "workload": "tasks:arithmetic",
                     "main": ["greedy", "hf:greedy", "astar", "cheap", "noise"]},
            "quality_kind": kind, "records": recs,
            "quality": {"greedy": [1.0, 0.0], "hf:greedy": [1.0, 0.0], "astar": [1.0, 1.0], "cheap": [0.0, None],
                        "noise": [0.0, 0.0]}}


def test_entries_per_problem_and_gain_over_greedy():
    es = {e["row"]: e for e in compute.entries(_unit())}
    assert set(es) == {"greedy", "astar", "cheap", "noise"}  # peers repeat greedy: left out
    g, a, c = es["greedy"], es["astar"], es["cheap"]
    assert (g["quality"], g["forwards"], g["scored"], g["new"]) == (0.5, 10.5, 11, 10)
    assert (a["quality"], a["scored"], a["delta"]) == (1.0, 41, 0.5)
    assert a["gain_per_100"] == pytest.approx(100 * 0.5 / 30)
    assert c["quality"] == 0.0 and c["gain_per_100"] is None  # cheaper than greedy: no gain per extra token
    assert g["delta"] == 0.0 and g["gain_per_100"] is None
    # half a token more per problem (sampling's length noise) is no compute spent: no gain per token
    assert es["noise"]["delta"] == -0.5 and es["noise"]["gain_per_100"] is None
    assert compute.entries(_unit("perplexity")) == []
    diffusion = _unit()
    diffusion["unit"]["reference"] = "llada"
    assert compute.entries(diffusion) == []


def test_markdown_and_plot(tmp_path):
    results = {"units": [_unit(), _unit("perplexity")]}
    md = "\n".join(compute.markdown(results))
    assert md.count("## Quality against compute") == 1
    assert "| astar | acc 100.0% | +50.0 pts | 41.0 | 12.5 | 10.0 | +166.7 pts |" in md  # 50 points for 30 tokens
    paths = compute.plot(results, tmp_path)
    assert [p.name for p in paths] == ["compute.png"] and paths[0].stat().st_size > 0
    assert compute.markdown({"units": [_unit("perplexity")]}) == [] and compute.plot({"units": []}, tmp_path) == []
