"""exact-extract equals the brute force (every span scored by its own forward) on tiny models, and
costs a handful of forwards instead of one per span."""
import random

import pytest
import torch

import decodelab
from decodelab import DecodeLabError
from decodelab.extraction import extract_brute_force, span_scores
from decodelab.models import ToyLM
from decodelab.zoo import tasks


def _cases():
    rng = random.Random(0)
    for i in range(6):
        ctx = [rng.randrange(1, 90) for _ in range(rng.randint(1, 14))]
        question = [rng.randrange(1, 90) for _ in range(rng.randint(0, 3))] or None
        yield ctx, question, rng.choice([1, 3, 15]), rng.choice([None, [5], [5, 7]])


@pytest.mark.parametrize("case", list(_cases()))
def test_exact_extract_equals_brute_force(tiny_pair, case):
    _, model, _ = tiny_pair
    ctx, question, max_len, end = case
    end = end or [0]  # the tiny models have no end-of-sequence token
    got = decodelab.extract(model, ctx, question, max_answer_len=max_len, end=end, top_k=200, batch_tokens=16)
    ref, forwards, _ = extract_brute_force(model, ctx, question, max_answer_len=max_len, end=end)
    finite = torch.isfinite(ref)
    assert got.spans == int(finite.sum()) == forwards  # every valid span scored, once each by the brute force
    ours = span_scores(model.fresh(), ctx + (question or []), ctx, end, max_len, 16)
    assert torch.equal(torch.isfinite(ours), finite)
    assert torch.allclose(ours[finite], ref[finite], atol=1e-4)
    i, j = divmod(int(ref.flatten().argmax()), ref.shape[1])
    assert (got.best.start, got.best.end) == (i, i + j + 1) and got.best.tokens == ctx[i:i + j + 1]
    assert got.best.logprob == pytest.approx(float(ref.max()), abs=1e-4)
    assert [s.logprob for s in got.top] == sorted((s.logprob for s in got.top), reverse=True)
    rows = max(1, 16 // min(max_len, len(ctx)))  # starts per forward at batch_tokens=16
    assert got.forwards == 1 + -(-len(ctx) // rows)  # the prompt, then every start in batches


def test_toy_model_scores_match_a_hand_computation():
    lm = ToyLM.random(6, order=2, seed=1, eos_token_id=0)
    prompt, ctx = [1, 2, 3, 4], [1, 2, 3, 4]
    got = decodelab.extract(lm, ctx, max_answer_len=2, top_k=100)
    logp = lambda c: torch.log_softmax(lm.next_logits(c), -1)  # noqa: E731
    for s in got.top:
        want, seen = 0.0, list(prompt)
        for t in s.tokens:
            want += float(logp(seen)[t])
            seen.append(t)
        want += float(logp(seen)[0])
        assert s.logprob == pytest.approx(want, abs=1e-5)
    assert got.spans == 4 + 3


def test_extracts_the_copy_answer_on_the_task_model():
    model = decodelab.load("zoo:tasks-ar")
    for ex in tasks.examples("copy", "test", 3, seed=0):
        got = decodelab.extract(model, ex.prompt, end="\n", max_answer_len=20)
        assert got.text == ex.target.rstrip("\n"), (ex.prompt, got.text)


def test_bad_input():
    lm = ToyLM.random(6, eos_token_id=0)
    for kw in (dict(context=[]), dict(context=[9]), dict(context=[1], max_answer_len=0), dict(context=[1], top_k=0),
               dict(context="text"), dict(context=[1], end=[])):
        with pytest.raises(DecodeLabError):
            decodelab.extract(lm, **kw)
    with pytest.raises(DecodeLabError, match="end-of-sequence"):
        decodelab.extract(ToyLM.random(6), [1, 2])
    with pytest.raises(DecodeLabError, match="one token"):
        decodelab.extract(decodelab.load("zoo:tasks-ar"), "copy: Ann =>", end=" answer")
