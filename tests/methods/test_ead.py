"""EAD (methods/ead.py): the switching rule on hand-made entropies (window, dwell); tau = +inf is the
small model's own decoding and tau = -inf the large one's, exactly, greedy and sampling, on tiny
random pairs and on the zoo pair; with switches forced every few tokens the output equals a
reference that re-scores the whole context from scratch for every token (so both caches catch up
correctly, one forward per turn); the large model's token count; the CLI; refusals."""
import math

import pytest
import torch

import decodelab
from decodelab.cli import main
from decodelab.errors import DecodeLabError
from decodelab.methods.ead import LARGE, SMALL, EADConfig, Switch, entropy_bits, next_model
from decodelab.models import ToyLM

INF = math.inf
PROMPT = [3, 17, 5, 9, 3]


def test_entropy_bits():
    assert entropy_bits(torch.zeros(8)) == pytest.approx(3.0)  # uniform over 8 ids: 3 bits
    assert entropy_bits(torch.tensor([0.0, -INF, -INF])) == pytest.approx(0.0)  # one-hot: 0 log 0 = 0, no NaN
    assert entropy_bits(torch.tensor([0.0, 0.0, -1e4, -1e4])) == pytest.approx(1.0)


def test_next_model_reads_the_mean_of_the_last_w_entropies():
    cfg = EADConfig(threshold=2.0, window=3, dwell=1)
    assert next_model(SMALL, [9.0, 1.0, 2.0, 2.5], 4, cfg) == SMALL  # (1 + 2 + 2.5) / 3 <= 2: the 9 left the window
    assert next_model(SMALL, [9.0, 1.0, 2.0, 2.5], 4, EADConfig(threshold=2.0, window=4, dwell=1)) == LARGE
    assert next_model(LARGE, [2.0, 2.0, 2.0], 3, cfg) == SMALL  # a mean equal to tau goes to the small model
    assert next_model(SMALL, [3.0], 1, cfg) == LARGE  # fewer than w entropies: their mean
    assert next_model(LARGE, [], 9, cfg) == LARGE  # nothing to read: stay


def test_next_model_waits_for_the_dwell():
    cfg = EADConfig(threshold=2.0, window=2, dwell=3)
    assert next_model(SMALL, [9.0, 9.0], 2, cfg) == SMALL  # c = 2 < d_min
    assert next_model(SMALL, [9.0, 9.0, 9.0], 3, cfg) == LARGE
    assert next_model(LARGE, [0.0, 0.0], 2, cfg) == LARGE
    assert next_model(LARGE, [0.0, 0.0, 0.0], 3, cfg) == SMALL


def test_infinite_thresholds_never_switch():
    for h in ([0.0] * 5, [50.0] * 5):
        assert next_model(LARGE, h, 9, EADConfig(threshold=INF)) == SMALL
        assert next_model(SMALL, h, 9, EADConfig(threshold=-INF)) == LARGE


def test_switch_sequence_with_window_and_dwell():
    sw, after = Switch(EADConfig(threshold=2.0, window=2, dwell=3), SMALL), []
    for h in [5, 5, 5, 0, 0, 0, 5, 5, 0, 0]:
        sw.record(float(h))
        after.append(sw.model)
    S, L = SMALL, LARGE
    # 3 small tokens (dwell) then up (mean 5); 3 large then down (mean 0); 3 small, mean (5 + 0) / 2 > 2: up
    assert after == [S, S, L, L, L, S, S, S, L, L]


def reference(small, large, prompt, n, cfg):
    """EAD greedy without caches: every token's logits from a fresh forward of the whole context."""
    def logits(model, ctx):
        return model.fresh().forward(torch.tensor(ctx), torch.arange(len(ctx))).logits[-1]

    ctx = list(prompt)
    sw = Switch(cfg, next_model(SMALL, [entropy_bits(logits(small, ctx))], cfg.dwell, cfg))
    who = []
    for _ in range(n):
        lg = logits((small, large)[sw.model], ctx)
        who.append(sw.model)
        ctx.append(int(lg.argmax()))
        sw.record(entropy_bits(lg))
    return ctx[len(prompt):], who


def test_infinite_thresholds_are_each_models_greedy(tiny_pair):
    _, target, draft = tiny_pair
    for tau, model, share in ((INF, draft, 0), (-INF, target, 40)):
        out = decodelab.generate(target, PROMPT, "ead", draft=draft, threshold=tau, max_new_tokens=40,
                                 ignore_eos=True)
        want = decodelab.generate(model, PROMPT, "greedy", max_new_tokens=40, ignore_eos=True)
        assert out.tokens == want.tokens and len(out.tokens) == 40
        assert out.stats.target_emitted == share
    assert out.stats.target_forwards == 40 and out.stats.draft_forwards == 2  # -inf: prefill and the probe


def test_forced_switches_equal_a_from_scratch_reference(tiny_pair):
    """window 1, dwell 2 and tau at the median entropy: the models take turns every few tokens, and
    each catches up on the other's tokens from its cache; the tokens, the producer of each token and
    the counts equal a reference without caches."""
    _, target, draft = tiny_pair
    n = 40
    hs = [entropy_bits(target.fresh().forward(torch.tensor(PROMPT + [t]), torch.arange(6)).logits[-1])
          for t in range(20)] + [entropy_bits(draft.fresh().forward(torch.tensor(PROMPT + [t]), torch.arange(6))
                                              .logits[-1]) for t in range(20)]
    cfg = EADConfig(threshold=sorted(hs)[len(hs) // 2], window=1, dwell=2)
    want, who = reference(draft, target, PROMPT, n, cfg)
    turns = sum(a != b for a, b in zip(who, who[1:]))
    assert turns >= 4, who  # the test really switches
    lps = []
    out = decodelab.generate(target, PROMPT, "ead", draft=draft, threshold=cfg.threshold, window=1, dwell=2,
                             max_new_tokens=n, ignore_eos=True, logprobs=True)
    assert out.tokens == want
    st = out.stats
    assert st.target_emitted == who.count(LARGE)
    assert st.target_forwards == who.count(LARGE)  # one target forward per large token: catch-up included
    last = max(i for i, w in enumerate(who) if w == LARGE)
    assert st.target_tokens_scored == last + 1  # every token up to its last turn forwarded exactly once
    assert st.draft_forwards == 2 + who.count(SMALL) - (who[0] == SMALL)  # prefill, probe (reused when it starts)
    # log-probabilities are the producing model's, on the whole context
    ctx = PROMPT + want
    for i in (0, who.index(LARGE), who.index(SMALL), n - 1):
        model = (draft, target)[who[i]].fresh()
        lg = model.forward(torch.tensor(ctx[:len(PROMPT) + i]), torch.arange(len(PROMPT) + i)).logits[-1]
        assert out.logprobs[i] == pytest.approx(float(torch.log_softmax(lg, -1)[want[i]]), abs=1e-4)


def test_sampling_at_infinite_thresholds_is_each_models_sampling(tiny_pair):
    _, target, draft = tiny_pair
    for tau, model in ((INF, draft), (-INF, target)):
        for seed in (1, 2):
            kw = dict(max_new_tokens=16, ignore_eos=True, do_sample=True, temperature=0.8, top_k=20, seed=seed)
            out = decodelab.generate(target, PROMPT, "ead", draft=draft, threshold=tau, **kw)
            assert out.tokens == decodelab.generate(model, PROMPT, "sample", **kw).tokens


def test_zoo_pair_infinite_thresholds_and_a_mix():
    target, draft = decodelab.load("zoo:code-target"), decodelab.load("zoo:code-draft")
    prompt = "def add(a, b):\n    return"
    for tau, model in ((INF, draft), (-INF, target)):
        out = decodelab.generate(target, prompt, "ead", draft=draft, threshold=tau, max_new_tokens=24,
                                 ignore_eos=True)
        assert out.tokens == decodelab.generate(model, prompt, "greedy", max_new_tokens=24, ignore_eos=True).tokens
    mixed = decodelab.generate(target, prompt, "ead", draft=draft, threshold=5.0, max_new_tokens=24,
                               ignore_eos=True).stats
    assert 0 < mixed.target_emitted < 24 and mixed.target_forwards > 0 and mixed.draft_forwards > 2


def test_cli_runs_ead(capsys, tiny_dirs):
    import json

    target, draft = tiny_dirs["llama"]
    argv = ["generate", "--model", target, "--ids", "--max-new-tokens", "6", "--json", "3,4,5"]
    assert main(argv) == 0
    greedy = json.loads(capsys.readouterr().out)
    assert main(argv + ["--method", "ead", "--draft", draft, "--threshold=-inf"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["tokens"] == greedy["tokens"] and out["stats"]["target_emitted"] == 6


def test_refusals():
    target, other = ToyLM.random(6), ToyLM.random(7)
    with pytest.raises(DecodeLabError, match="needs a draft model"):
        decodelab.generate(target, [0, 1], "ead")
    with pytest.raises(DecodeLabError, match="different vocabularies"):
        decodelab.generate(target, [0, 1], "ead", draft=other)
    for bad, match in ((dict(window=0), "window must be"), (dict(dwell=0), "dwell must be"),
                       (dict(threshold=math.nan), "threshold must be"), (dict(threshold="high"), "threshold must be")):
        with pytest.raises(DecodeLabError, match=match):
            decodelab.generate(target, [0, 1], "ead", draft=ToyLM.random(6, seed=1), **bad)
    assert EADConfig(threshold=-INF).threshold == -INF  # infinities are accepted


def test_bench_target_share_pools_the_counted_records():
    from decodelab.bench import metrics, report

    recs = [{"new_tokens": 10, "target_emitted": 4}, {"new_tokens": 30, "target_emitted": 6}]
    assert metrics.target_share(recs) == pytest.approx(10 / 40)
    assert metrics.target_share([{"new_tokens": 10, "target_emitted": None}]) is None  # not counted
    assert metrics.target_share([{"new_tokens": 10}]) is None  # peers' records carry no count
    assert report._share({"row": "ead:threshold=4", "target_share": 0.25}) == "25%"
    assert report._share({"row": "greedy", "target_share": None}) == "100%"
    assert report._share({"row": "lud", "target_share": None, "claims_greedy_equality": False}) == "-"
