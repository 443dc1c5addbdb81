"""The search loop (loops.search): trials sampled side by side in one batch are exactly what the
target gives each sequence alone, rows that end leave the batch, and focus() re-uses the cache."""
import pytest
import torch

from decodelab import DecodeStats, Request, SamplingConfig
from decodelab.loops.search import Searcher, end_mask
from decodelab.models import ToyLM
from decodelab.zoo.tokenizer import load_tokenizer


def _req(target, prompt, max_new_tokens=24, stops=(), **sampling):
    cfg = SamplingConfig(**sampling)
    return Request(target=target.fresh(), prompt=torch.tensor(prompt), max_new_tokens=max_new_tokens, sampling=cfg,
                   stats=DecodeStats(), rng=cfg.generator() if cfg.do_sample else None, stops=frozenset(stops))


def _teacher_forced(model, ids: list[int]) -> torch.Tensor:
    """[T, V] log p of every next token, by one plain forward of the whole sequence."""
    if isinstance(model, ToyLM):
        return torch.stack([torch.log_softmax(model.next_logits(ids[:i + 1]), -1) for i in range(len(ids))])
    with torch.no_grad():
        return torch.log_softmax(model.model(torch.tensor([ids])).logits[0].float(), -1)


def _check_trials(target, prompt, trials, contexts):
    for t in trials:
        ctx = contexts[t.source]
        ref = _teacher_forced(target, ctx + t.tokens)
        want = [float(ref[len(ctx) - 1 + i, x]) for i, x in enumerate(t.tokens)]
        assert t.logps == pytest.approx(want, abs=1e-4)


def test_trials_equal_each_sequence_alone(tiny_pair):
    _, target, _ = tiny_pair
    prompt = [3, 17, 5, 9, 2]
    req = _req(target, prompt, do_sample=True, seed=0, temperature=1.5)
    ends = torch.zeros(target.vocab_size, dtype=torch.bool)
    ends[torch.arange(0, target.vocab_size, 7)] = True  # about one token in seven ends a trial
    s = Searcher(req)
    trials = s.sample(s.focus([prompt]), 6, ends=ends, max_len=9)
    assert len({len(t.tokens) for t in trials}) > 1, "the test needs trials of different lengths"
    for t in trials:  # each ends at its first ending token, or at the cap
        cut = [i for i, x in enumerate(t.tokens) if ends[x]]
        assert t.ended == bool(cut) and len(t.tokens) == (cut[0] + 1 if cut else 9)
    _check_trials(req.target, prompt, trials, [prompt])
    # one batched forward per step: as many forwards as the longest trial needs, not one per trial
    assert req.stats.committed == [0] * (1 + max(len(t.tokens) for t in trials) - 1)

    # the longest trial was alive at the last forward: its row holds all of it but the last token
    a = max(trials, key=lambda t: len(t.tokens))
    a_ctx = prompt + a.tokens
    before = req.target.counter.tokens
    head = s.focus([a_ctx])
    assert req.target.counter.tokens - before == 1
    assert torch.allclose(torch.log_softmax(head[0], -1), _teacher_forced(req.target, a_ctx)[-1], atol=1e-4)
    # two contexts of equal length, one of them never cached whole: both come out exact
    b = min(trials, key=lambda t: len(t.tokens))
    b_ctx = prompt + b.tokens + [7] * (len(a.tokens) - len(b.tokens))
    head = s.focus([a_ctx, b_ctx])
    ref = [_teacher_forced(req.target, c)[-1] for c in (a_ctx, b_ctx)]
    assert torch.allclose(torch.log_softmax(head, -1), torch.stack(ref), atol=1e-4)
    more = s.sample(head, 3, ends=ends, max_len=4)
    _check_trials(req.target, prompt, more, [a_ctx, b_ctx])


def test_forced_first_tokens_and_greedy_pick_follow_each_context():
    lm = ToyLM.random(8, order=2, seed=3)
    prompt = [1, 2, 3]
    req = _req(lm, prompt)
    s = Searcher(req)
    head = s.focus([prompt])
    first = torch.tensor([[5, 0, 7]])
    trials = s.sample(head, 3, ends=torch.zeros(8, dtype=torch.bool), max_len=4, first=first)
    for t, f in zip(trials, [5, 0, 7]):
        ctx = prompt + [f]
        for _ in range(3):
            ctx.append(int(lm.next_logits(ctx).argmax()))
        assert t.tokens == ctx[len(prompt):]


def test_halt_stops_every_trial():
    lm = ToyLM.random(8, order=1, seed=0, scale=0.5)
    req = _req(lm, [1, 2], do_sample=True, seed=1)
    s = Searcher(req)
    ends = torch.zeros(8, dtype=torch.bool)
    ends[3] = True
    seen = []
    trials = s.sample(s.focus([[1, 2]]), 8, ends=ends, max_len=50, halt=lambda done: seen.append(done) or True)
    assert len(seen) == 1 and all(t.ended for t in seen[0])
    stop_len = len(seen[0][0].tokens)
    assert all(len(t.tokens) == stop_len for t in trials)  # nobody went on after the halt
    assert sum(t.ended for t in trials) == len(seen[0])


def test_end_mask_marks_punctuation_and_stops():
    lm = ToyLM.random(96, order=1, seed=0, eos_token_id=0)
    lm.tokenizer = load_tokenizer()
    req = _req(lm, [5, 6], stops=[0])
    mask = end_mask(req, ",\n")
    text = lm.tokenizer.batch_decode([[i] for i in range(96)])
    assert mask.tolist() == [("," in t or "\n" in t or i == 0) for i, t in enumerate(text)]
    assert mask.sum() >= 2
    no_tok = ToyLM.random(6, eos_token_id=2)
    req = _req(no_tok, [1], stops=[2])
    assert end_mask(req, ",").tolist() == [False, False, True, False, False, False]
