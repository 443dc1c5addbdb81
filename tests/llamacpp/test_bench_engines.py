"""CPU engines as bench rows (bench/engines.py) and rows on the llama.cpp backend, on zoo:code-target:
every exact row's output equals our greedy, counts are booked as ours are, and CTranslate2's int8 row
runs (lossy, so not compared). Skips without llama-cpp-python; the CTranslate2 rows without ctranslate2."""
import importlib.util
import types

import pytest

pytest.importorskip("llama_cpp")

from decodelab.bench import engines, rows  # noqa: E402
from decodelab.bench.runner import Settings, Unit, run_unit, with_references  # noqa: E402

HAVE_CT2 = importlib.util.find_spec("ctranslate2") is not None


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DECODELAB_CACHE", str(tmp_path))
    return tmp_path


def test_engine_rows_equal_greedy(cache):
    labels = ["pld:backend=llamacpp", "llamacpp:prompt-lookup"]
    labels += ["ct2:greedy", "ct2:greedy:compute_type=int8"] if HAVE_CT2 else []
    unit_rows = with_references([rows.parse_row(t) for t in labels], peers_on=False)
    settings = Settings(repeats=1, warmup=0, limit=2, max_new_tokens=24, threads=1)
    unit = Unit(0, "zoo:code-target", None, "humaneval", tuple(unit_rows), tuple(r.label for r in unit_rows), settings)
    res = run_unit(unit)
    assert not res["errors"], res["errors"]
    outs = res["outputs"]
    assert set(outs) == {"greedy", rows.LLAMACPP_GREEDY, "llamacpp:greedy", *labels}
    for label in outs:
        if label != "ct2:greedy:compute_type=int8":
            assert outs[label] == outs["greedy"], label
    assert all(len(o) == 24 for o in outs["ct2:greedy:compute_type=int8"])
    recs = {(r["row"], r["prompt"]): r for r in res["records"]}
    g = recs[("llamacpp:greedy", 0)]
    assert g["new_tokens"] == 24 and g["target_forwards"] == 24 and g["target_tokens_scored"] == 24
    lookup = recs[("llamacpp:prompt-lookup", 0)]  # drafts scored with every forward after the prompt's
    assert lookup["committed_total"] == 24 and lookup["target_tokens_scored"] > lookup["target_forwards"]
    assert (cache / "gguf").is_dir() and (not HAVE_CT2 or any((cache / "ct2").iterdir()))


@pytest.mark.parametrize("label", ["llamacpp:greedy"] + (["ct2:greedy"] if HAVE_CT2 else []))
def test_engines_stop_after_an_end_token(cache, zoo_models, label):
    """Without ignore_eos an engine row stops after a stop token and keeps it, as our loops do:
    the model's 5th greedy token is made the stop token here."""
    torch_lm = zoo_models[0]
    ids = torch_lm.tokenizer("def add(a, b):\n")["input_ids"]
    eng = engines.Engines("zoo:code-target", torch_lm, threads=1)
    full, _ = engines.generate(rows.parse_row(label), eng, ids, 12, ignore_eos=True)
    stop = full[4]
    fake = types.SimpleNamespace(eos_token_ids=[stop], tokenizer=torch_lm.tokenizer, max_length=torch_lm.max_length)
    eng.target = fake
    cut, stats = engines.generate(rows.parse_row(label), eng, ids, 12, ignore_eos=False)
    assert cut == full[: full.index(stop) + 1] and stats["new_tokens"] == len(cut)


def test_ct2_refuses_a_gguf_target(cache, zoo_models):
    from decodelab.errors import DecodeLabError

    eng = engines.Engines("x.gguf", zoo_models[1], threads=1)  # a llama.cpp adapter
    with pytest.raises(DecodeLabError, match="ct2 rows need a transformers model"):
        eng.ct2(rows.parse_row("ct2:greedy"))
