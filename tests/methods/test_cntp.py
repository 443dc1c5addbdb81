import pytest

import decodelab
from decodelab import DecodeLabError
from decodelab.methods.cntp import CNTPConfig, trial_count
from decodelab.models import ToyLM
from decodelab.zoo.tokenizer import load_tokenizer
from methods.search_helpers import recorded  # noqa: F401


def test_trial_count_follows_the_entropy_formula():
    cfg = CNTPConfig()
    assert [trial_count(h, cfg) for h in (0.0, 0.01, 0.755, 1.5, 9.0)] == [1, 1, 5, 10, 10]
    assert trial_count(0.3, CNTPConfig(max_trials=4, entropy_low=0.0, entropy_high=0.6)) == 2
    with pytest.raises(DecodeLabError):
        CNTPConfig(entropy_low=1.0, entropy_high=1.0)


def test_one_trial_per_step_is_plain_sampling(tiny_pair):
    """Below entropy_low every step samples one token, with the same draws as `sample`."""
    _, target, _ = tiny_pair
    kw = dict(max_new_tokens=20, do_sample=True, temperature=0.9, ignore_eos=True, logprobs=True)
    for seed in range(3):
        ref = decodelab.generate(target, [3, 17, 5], "sample", seed=seed, **kw)
        got = decodelab.generate(target, [3, 17, 5], "cntp", seed=seed, entropy_low=1e6, entropy_high=2e6, **kw)
        assert got.tokens == ref.tokens and got.logprobs == pytest.approx(ref.logprobs, abs=1e-5)
        assert got.stats.target_forwards == ref.stats.target_forwards


def _punctuated_toy():
    lm = ToyLM.random(96, order=2, seed=4, scale=1.0, eos_token_id=0)
    lm.tokenizer = load_tokenizer()  # ids < 96: special tokens, punctuation, digits, letters
    return lm


def test_uncertain_steps_keep_the_lowest_perplexity_trial(recorded):
    lm = _punctuated_toy()
    out = decodelab.generate(lm, [40, 41], "cntp", max_new_tokens=30, do_sample=True, seed=1, max_trials=6,
                             entropy_low=0.0, entropy_high=1e-3, logprobs=True)
    assert recorded and all(len(trials) == 6 for _, trials in recorded)  # every step is uncertain here
    chunks = []
    for contexts, trials in recorded:
        best = min(trials, key=lambda t: -t.mean_logp)
        assert all(best.mean_logp >= t.mean_logp for t in trials)
        chunks += best.tokens
        for t in trials:  # each trial stops at its first punctuation or stop token, or the budget
            text = [lm.tokenizer.decode([x]) for x in t.tokens]
            cut = [i for i, (x, s) in enumerate(zip(t.tokens, text)) if x == 0 or any(c in s for c in ".,\n?!:;)]}")]
            assert (cut and len(t.tokens) == cut[0] + 1) or (not cut and len(contexts[0]) + len(t.tokens) == 32)
    assert out.tokens == chunks
    assert len(out.logprobs) == len(out.tokens)
    # one batched forward per trial step (plus one per step to read its entropy), never one per trial
    assert out.stats.target_forwards == sum(max(len(t.tokens) for t in trials) for _, trials in recorded)


def test_seeded_runs_repeat():
    lm = _punctuated_toy()
    runs = [decodelab.generate(lm, [40, 41], "cntp", max_new_tokens=20, do_sample=True, seed=s).tokens
            for s in (5, 5, 6)]
    assert runs[0] == runs[1] != runs[2]
