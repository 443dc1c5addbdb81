import decodelab
from decodelab.models import ToyLM
from methods.search_helpers import recorded  # noqa: F401


def test_one_sample_is_plain_sampling():
    lm = ToyLM.random(6, order=2, seed=2, eos_token_id=0)
    for seed in range(3):
        ref = decodelab.generate(lm, [1, 2], "sample", max_new_tokens=20, do_sample=True, seed=seed).tokens
        assert decodelab.generate(lm, [1, 2], "best_of_n", n=1, max_new_tokens=20, seed=seed).tokens == ref


def test_returns_the_best_scoring_sample_ties_to_the_likelier(recorded):
    lm = ToyLM.random(6, order=2, seed=2, eos_token_id=0)
    count_fours = lambda prompt, text: text.split().count("4") / 10  # noqa: E731
    for seed in range(4):
        recorded.clear()
        out = decodelab.generate(lm, [1, 2], "best_of_n", n=8, max_new_tokens=20, seed=seed, reward=count_fours)
        (_, trials), = recorded
        assert len(trials) == 8
        best = max(trials, key=lambda t: (min(1.0, t.tokens.count(4) / 10), t.mean_logp))
        assert out.tokens == best.tokens
    recorded.clear()
    out = decodelab.generate(lm, [1, 2], "best_of_n", n=8, max_new_tokens=20, seed=0)
    assert out.tokens == max(recorded[0][1], key=lambda t: t.mean_logp).tokens
