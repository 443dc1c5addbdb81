"""Row specs: NAME[:k=v,...] parsing, the budget axis, suite files, bad input."""
import pytest

from decodelab.bench import rows
from decodelab.registry import all_methods, get
from decodelab.errors import DecodeLabError


def test_parse_method_with_options():
    r = rows.parse_row("sps:gamma=4,schedule=heuristic")
    assert r.method == "sps" and r.kwargs == {"gamma": 4, "schedule": "heuristic"} and not r.peer
    assert r.label == "sps:gamma=4,schedule=heuristic" and r.needs_draft
    assert rows.parse_row("greedy").label == "greedy"
    s = rows.parse_row("sample:temperature=0.7,top_k=20")
    assert s.kwargs == {"temperature": 0.7, "top_k": 20} and s.sampling and not s.claims_greedy_equality()
    assert rows.parse_row("sps:do_sample=true").sampling


def test_parse_peers():
    assert rows.parse_row("hf:greedy").peer
    a = rows.parse_row("hf:assisted:num_assistant_tokens=5")
    assert a.method == "hf:assisted" and a.kwargs == {"num_assistant_tokens": 5} and a.needs_draft
    assert rows.peer_kwargs(rows.parse_row("hf:prompt-lookup")) == {"prompt_lookup_num_tokens": 10}


@pytest.mark.parametrize("text,match", [
    ("nosuchmethod", "unknown method 'nosuchmethod'; known methods:"),
    ("sps:gamma=0", r"gamma must be an integer in \[1, 128\], got 0"),
    ("sps:nope=1", "has no option"),
    ("sps:gamma", "bad method option"),
    ("hf:nope", "unknown transformers peer"),
    ("hf:greedy:fixed_budget=3", "takes no fixed_budget"),
    ("greedy:fixed_budget=4", "cannot run at a fixed budget"),
    ("sps:fixed_budget=1", "fixed_budget must be an integer >= 2"),
    ("sps:fixed_budget=4,gamma=2", "either fixed_budget or gamma"),
])
def test_bad_rows(text, match):
    with pytest.raises(DecodeLabError, match=match):
        rows.parse_row(text)


def test_fixed_budget_maps_to_draft_size():
    assert rows.method_kwargs(get("sps"), {"fixed_budget": 5}) == {"gamma": 4}
    for method, field in (("dyspec", "budget"), ("pld", "num_tokens")):  # tree nodes / lookup length
        if method in all_methods():
            assert rows.method_kwargs(get(method), {"fixed_budget": 5}) == {field: 4}
    assert rows.peer_kwargs(rows.parse_row("hf:assisted:fixed_budget=5")) == {
        "num_assistant_tokens": 4, "num_assistant_tokens_schedule": "constant", "assistant_confidence_threshold": 0.0}
    assert rows.peer_kwargs(rows.parse_row("hf:prompt-lookup:fixed_budget=3")) == {"prompt_lookup_num_tokens": 2}


def test_suite_file(tmp_path):
    p = tmp_path / "suite.toml"
    p.write_text('[bench]\nworkloads = ["synthetic"]\nlimit = 2\n\n[[method]]\nname = "sps"\ngamma = 3\n\n'
                 '[[method]]\nname = "greedy"\n')
    got, opts = rows.load_suite(str(p))
    assert [r.label for r in got] == ["sps:gamma=3", "greedy"] and opts == {"workloads": ["synthetic"], "limit": 2}
    bad = tmp_path / "bad.toml"
    bad.write_text("[[method]]\ngamma = 3\n")
    with pytest.raises(DecodeLabError, match="needs a name"):
        rows.load_suite(str(bad))
    with pytest.raises(DecodeLabError, match="not found"):
        rows.load_suite(str(tmp_path / "missing.toml"))
