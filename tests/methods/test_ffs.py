import decodelab
from decodelab.models import ToyLM
from methods.search_helpers import recorded  # noqa: F401

PROMPT = [1, 2]


def _toy():
    # token 0 ends the sequence; about one step in six emits it
    return ToyLM.random(6, order=2, seed=2, scale=0.6, eos_token_id=0)


def test_one_sample_is_plain_sampling():
    lm = _toy()
    for seed in range(4):
        ref = decodelab.generate(lm, PROMPT, "sample", max_new_tokens=30, do_sample=True, seed=seed)
        assert decodelab.generate(lm, PROMPT, "ffs", n=1, max_new_tokens=30, seed=seed).tokens == ref.tokens


def test_returns_the_first_sample_to_finish_and_stops_there(recorded):
    lm = _toy()
    for seed in range(6):
        recorded.clear()
        out = decodelab.generate(lm, PROMPT, "ffs", n=6, max_new_tokens=40, seed=seed, logprobs=True)
        (_, trials), = recorded
        finished = [t for t in trials if t.ended]
        first = min(len(t.tokens) for t in finished)
        assert out.tokens == next(t.tokens for t in trials if t.ended and len(t.tokens) == first)
        assert out.tokens[-1] == 0 and len(out.logprobs) == len(out.tokens)
        assert all(len(t.tokens) == first for t in trials)  # nobody decoded past the winner
        assert out.stats.target_tokens_scored == 1 + 6 * (first - 1)  # the prompt's last token, then 6 rows


def test_a_verifier_skips_finished_samples_that_fail(recorded):
    lm = _toy()
    def passes(prompt, text):
        return len(text.split()) % 2 == 0  # token ids as text: an even number of tokens passes
    for seed in range(6):
        recorded.clear()
        out = decodelab.generate(lm, PROMPT, "ffs", n=6, max_new_tokens=40, seed=seed, reward=passes)
        (_, trials), = recorded
        ok = [t for t in trials if t.ended and len(t.tokens) % 2 == 0]
        assert ok, "the test needs a passing sample"
        first = min(len(t.tokens) for t in ok)
        assert out.tokens == next(t.tokens for t in ok if len(t.tokens) == first)


def test_without_a_passing_sample_the_best_scoring_finished_one_is_returned(recorded):
    lm = _toy()
    out = decodelab.generate(lm, PROMPT, "ffs", n=4, max_new_tokens=40, seed=3,
                             reward=lambda p, t: 0.5 / len(t.split()))  # never 1: shorter scores higher
    (_, trials), = recorded
    finished = [t for t in trials if t.ended]
    assert finished and out.tokens == min(finished, key=lambda t: len(t.tokens)).tokens


def test_seeded_runs_repeat():
    lm = _toy()
    runs = [decodelab.generate(lm, PROMPT, "ffs", n=4, max_new_tokens=30, seed=s).tokens for s in (7, 7)]
    assert runs[0] == runs[1]
