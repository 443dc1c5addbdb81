"""credit_decoding: trace credits fused into the logits, step by step on hand-built logits (which
positions unmask at which step, against the paper's formulas written out here), its limits
(alpha = 0 is fast_dllm), blocks and caches, the zoo model, and its refusals."""
import math

import pytest
import torch

import decodelab
from decodelab.errors import DecodeLabError
from decodelab.methods.credit_decoding import fuse_credit
from methods.diffusion_helpers import ScriptedLM, commits, peaked, tiny_lm, zoo_task_run

# position 0 is sure (0.99); 1, 2 and 3 keep predicting the same token at 0.8, below the 0.9
# threshold (identical rows: exact ties, leftmost first): Fast-dLLM unmasks them one per step,
# credits carry 2 and 3 over it at step 3
STATIC = ScriptedLM(lambda n, region: peaked([2, 3, 3, 3], [0.99, 0.8, 0.8, 0.8]), 4)


def _fused_p(p: float, steps: int, beta=0.8, gamma=0.2, alpha=0.7, vocab=8) -> float:
    """softmax of the fused logits at a position that predicted the same token at p for `steps` steps."""
    credit = sum(beta ** i for i in range(steps)) * p ** gamma
    boosted = p * (1 + credit) ** alpha
    return boosted / (boosted + (1 - p))


def test_credits_carry_repeated_predictions_over_the_threshold():
    assert _fused_p(0.8, 1) < 0.9 and _fused_p(0.8, 2) < 0.9 <= _fused_p(0.8, 3)  # the hand-checked premise
    assert commits(STATIC, [6], "fast_dllm", 4) == [[0], [1], [2], [3]]
    assert commits(STATIC, [6], "credit_decoding", 4) == [[0], [1], [2, 3]]
    assert commits(STATIC, [6], "credit_decoding", 4, alpha=0.0) == commits(STATIC, [6], "fast_dllm", 4)


def test_fused_confidence_and_decay_step_by_step():
    """Replays a run on changing logits with the formulas of the paper and checks every step's
    commits and tokens; a prediction that changes loses its credit to the decay."""
    gen = torch.Generator().manual_seed(3)
    script = [torch.randn(6, 8, generator=gen) * 3 for _ in range(6)]
    for s in script:
        s[:, 0] = -1e4
    lm = ScriptedLM(lambda n, region: script[n], 6)
    credit, region = torch.zeros(6, 8, dtype=torch.float64), [0] * 6
    for n, chunk in enumerate(decodelab.stream(lm, [6], "credit_decoding", max_new_tokens=6, ignore_eos=True,
                                               threshold=0.5)):
        p = torch.softmax(script[n].double(), -1)
        masked = torch.tensor(region) == 0
        credit = credit * (0.8 if n else 1.0)
        for i in range(6):
            if masked[i]:
                credit[i, int(p[i].argmax())] += float(p[i].max()) ** 0.2
        fused = torch.softmax(script[n].double() + 0.7 * torch.log1p(credit), -1)
        conf, x0 = fused.max(-1)
        conf = conf.masked_fill(~masked, -math.inf)
        want = sorted({int(conf.argmax())} | {i for i in range(6) if conf[i] >= 0.5})
        assert sorted(chunk.positions) == want and chunk.tokens == x0[chunk.positions].tolist()
        for q, t in zip(chunk.positions, chunk.tokens):
            region[q] = t


def test_fuse_credit_does_not_modify_its_inputs():
    logits, credit = torch.randn(3, 8), torch.rand(3, 8, dtype=torch.float64)
    l0, c0 = logits.clone(), credit.clone()
    fuse_credit(credit, logits, torch.tensor([True, False, True]), 0.8, 0.2, 0.7)
    assert torch.equal(logits, l0) and torch.equal(credit, c0)


def test_credit_starts_afresh_in_each_block():
    """With blocks of 2, position 2's credit starts at block 1's first step."""
    lm = ScriptedLM(lambda n, region: peaked([2, 3, 3, 3], [0.99, 0.8, 0.8, 0.8]), 4)
    assert commits(lm, [6], "credit_decoding", 4, block_length=2) == [[0], [1], [2], [3]]


def test_on_the_zoo_model():
    for block in (None, 8):
        acc, nfe = zoo_task_run("credit_decoding", block)
        assert acc >= 0.75 and nfe < 8, (block, acc, nfe)


def test_caches_forward_fewer_tokens_and_keep_the_first_step():
    lm = tiny_lm("llama")
    runs = {c: list(decodelab.stream(lm, [5, 17, 300, 42], "credit_decoding", max_new_tokens=24, ignore_eos=True,
                                     block_length=8, cache=c, threshold=1.0, stats=(st := decodelab.DecodeStats())))
            and st for c in ("none", "prefix", "dual")}
    fwd = {c: st.forwarded_tokens for c, st in runs.items()}
    assert fwd["dual"] < fwd["prefix"] < fwd["none"]
    firsts = {c: next(iter(decodelab.stream(lm, [5, 17, 300, 42], "credit_decoding", max_new_tokens=24,
                                            ignore_eos=True, block_length=8, cache=c))).positions for c in runs}
    assert firsts["none"] == firsts["prefix"] == firsts["dual"]


@pytest.mark.parametrize("kw, match", [
    (dict(threshold=1.5), "threshold must be a number in \\[0, 1\\]"),
    (dict(decay=2.0), "decay"),
    (dict(alpha=-1.0), "alpha"),
    (dict(cache="dual"), "needs a model with a KV cache"),
    (dict(block_length=3), "block_length \\(3\\) must divide max_new_tokens \\(4\\)"),
])
def test_bad_options_are_refused(kw, match):
    with pytest.raises(DecodeLabError, match=match):
        decodelab.generate(STATIC, [6], "credit_decoding", max_new_tokens=4, **kw)
