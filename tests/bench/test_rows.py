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
    ("sps:gamma=0", r"gamma must be an integer in \[1, 128\] or 'auto', got 0"),
    ("sps:nope=1", "has no option"),
    ("sps:gamma", "bad method option"),
    ("hf:nope", "unknown peer .hf:nope."),
    ("llamacpp:nope", "unknown peer"),
    ("ct2:greedy:compute_type=int4", "compute_type must be one of"),
    ("ct2:greedy:fixed_budget=3", "takes no fixed_budget"),
    ("llamacpp:prompt-lookup:num_pred_tokens=0", "num_pred_tokens must be a positive integer"),
    ("pld:backend=cuda", "backend must be one of torch, llamacpp"),
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


def test_engine_peers_and_backend_rows():
    """llama.cpp and CTranslate2 peers parse like transformers' own; a method row's backend is
    part of its label; each row names the output it must equal."""
    lp = rows.parse_row("llamacpp:prompt-lookup:fixed_budget=4")
    assert lp.peer and lp.method == "llamacpp:prompt-lookup" and not lp.needs_draft
    assert rows.peer_kwargs(lp) == {"num_pred_tokens": 3, "max_ngram_size": 2}
    assert rows.peer_kwargs(rows.parse_row("ct2:greedy")) == {"compute_type": "float32"}
    assert rows.parse_row("ct2:greedy").claims_greedy_equality()
    assert not rows.parse_row("ct2:greedy:compute_type=int8").claims_greedy_equality()  # lossy, labelled so
    assert rows.parse_row("pld:backend=torch").backend == "torch" == rows.parse_row("pld").backend
    on = rows.parse_row("pld:backend=llamacpp,max_ngram=3")
    assert on.backend == "llamacpp" and on.label == "pld:backend=llamacpp,max_ngram=3"
    assert rows.method_kwargs(get("pld"), on.kwargs) == {"max_ngram": 3}  # not a method option
    refs = {label: rows.parse_row(label).exact_ref() for label in (
        "greedy", "hf:greedy", "hf:prompt-lookup", "llamacpp:greedy", "llamacpp:prompt-lookup", "ct2:greedy",
        "pld", rows.LLAMACPP_GREEDY, "pld:backend=llamacpp")}
    assert refs == {"greedy": None, "hf:greedy": "greedy", "hf:prompt-lookup": "hf:greedy",
                    "llamacpp:greedy": "greedy", "llamacpp:prompt-lookup": "llamacpp:greedy", "ct2:greedy": "greedy",
                    "pld": "greedy", rows.LLAMACPP_GREEDY: "greedy", "pld:backend=llamacpp": rows.LLAMACPP_GREEDY}


def test_references_follow_the_rows():
    """A row on llama.cpp brings our greedy there; llama.cpp's prompt lookup brings its greedy."""
    from decodelab.bench.runner import with_references

    labels = [r.label for r in with_references([rows.parse_row("pld:backend=llamacpp"),
                                                rows.parse_row("llamacpp:prompt-lookup")], peers_on=False)]
    assert labels == ["greedy", rows.LLAMACPP_GREEDY, "llamacpp:greedy", "pld:backend=llamacpp",
                      "llamacpp:prompt-lookup"]
    assert [r.label for r in with_references([rows.parse_row("pld")], peers_on=False)] == ["greedy", "pld"]


def test_bench_backend_setting_moves_method_rows():
    """--backend moves our causal rows that name no backend; peers, diffusion rows and rows that
    chose one stay."""
    from decodelab.bench.cli import _on_backend

    moved = _on_backend([rows.parse_row(t) for t in ("pld", "sps:backend=torch", "hf:greedy", "llada")], "llamacpp")
    assert [r.label for r in moved] == ["pld:backend=llamacpp", "sps:backend=torch", "hf:greedy", "llada"]
    with pytest.raises(DecodeLabError, match="backend must be one of"):
        _on_backend([], "cuda")
