"""Shared by the diffusion tests: tiny random masked diffusion LMs of both kinds (an encoder, and
a bidirectional Llama with a KV cache) on the zoo tokenizer, the published LLaDA algorithm as a
reference, and the canvas after every step of one of our runs."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import decodelab
from decodelab.models.hf_diffusion import HFDiffusionLM


def tiny_lm(kind: str, seed: int = 0) -> HFDiffusionLM:
    """A 2-layer random model over the zoo tokenizer: "bert" (BertForMaskedLM, no KV cache) or
    "llama" (a LlamaForCausalLM marked masked_diffusion: bidirectional, KV cache). The large
    initializer_range makes its logits peaked, so its argmax decisions are far from ties."""
    from transformers import BertConfig, BertForMaskedLM, LlamaConfig, LlamaForCausalLM

    from decodelab.zoo.tokenizer import load_tokenizer

    tok = load_tokenizer()
    torch.manual_seed(seed)
    dims = dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=2, max_position_embeddings=64, initializer_range=0.5)
    if kind == "bert":
        model = BertForMaskedLM(BertConfig(**dims, type_vocab_size=1))
    else:
        cfg = LlamaConfig(**dims, num_key_value_heads=2, tie_word_embeddings=True)
        cfg.masked_diffusion = True
        model = LlamaForCausalLM(cfg)
    return HFDiffusionLM(model.eval(), tok)


@pytest.fixture(scope="session", params=["bert", "llama"])
def tiny_dlm(request):
    return tiny_lm(request.param)


def llada_reference(lm, prompt: list[int], gen_length: int, steps: int, block_length: int, temperature: float = 0.0,
                    remasking: str = "low_confidence", generator: torch.Generator | None = None) -> list[list[int]]:
    """LLaDA's published generate() (github.com/ML-GSAI/LLaDA, generate.py), batch 1, written out
    step by step; returns the canvas after every step. Three lines differ, each marked CHANGED:
    the confidence softmax runs in float64 (ties, see core/unmask.py); the mask token is never the
    argmax (decodelab proposes real tokens only; the zoo models never put it there anyway); and the
    random draws (Gumbel noise, random remasking) come from `generator` for the current block's rows
    only, the rows that can be unmasked, so that both implementations consume one random stream."""
    mask_id = lm.mask_id
    x = torch.full((1, len(prompt) + gen_length), mask_id, dtype=torch.long)
    x[0, : len(prompt)] = torch.tensor(prompt)
    assert gen_length % block_length == 0
    num_blocks = gen_length // block_length
    assert steps % num_blocks == 0
    steps = steps // num_blocks
    history = []
    for num_block in range(num_blocks):
        lo, hi = len(prompt) + num_block * block_length, len(prompt) + (num_block + 1) * block_length
        block_mask_index = x[:, lo:hi] == mask_id
        num_transfer_tokens = _num_transfer_tokens(block_mask_index, steps)
        for i in range(steps):
            mask_index = x == mask_id
            logits = lm.logits(x[0])[None].double()  # model(x).logits
            if temperature > 0:  # add_gumbel_noise(logits, temperature)
                noise = torch.ones_like(logits)  # CHANGED: drawn for the block's rows only
                noise[0, lo:hi] = torch.rand(noise[0, lo:hi].shape, generator=generator, dtype=torch.float64)
                logits_with_noise = logits.exp() / (-torch.log(noise)) ** temperature
            else:
                logits_with_noise = logits.clone()  # (a copy: the next line must not touch the confidences)
            logits_with_noise[:, :, mask_id] = -np.inf  # CHANGED: never propose the mask
            x0 = torch.argmax(logits_with_noise, dim=-1)
            if remasking == "low_confidence":
                p = F.softmax(logits.to(torch.float64), dim=-1)  # CHANGED: float64 (LLaDA: model dtype)
                x0_p = torch.squeeze(torch.gather(p, dim=-1, index=torch.unsqueeze(x0, -1)), -1)
            else:
                x0_p = torch.full(x0.shape, -np.inf, dtype=torch.float64)  # CHANGED: block rows, float64
                x0_p[0, lo:hi] = torch.rand(hi - lo, generator=generator, dtype=torch.float64)
            x0_p[:, hi:] = -np.inf
            x0 = torch.where(mask_index, x0, x)
            confidence = torch.where(mask_index, x0_p, -np.inf)
            transfer_index = torch.zeros_like(x0, dtype=torch.bool)
            _, select_index = torch.topk(confidence[0], k=int(num_transfer_tokens[0, i]))
            transfer_index[0, select_index] = True
            x[transfer_index] = x0[transfer_index]
            history.append(x[0, len(prompt):].tolist())
    return history


def _num_transfer_tokens(mask_index, steps):
    mask_num = mask_index.sum(dim=1, keepdim=True)
    base, remainder = mask_num // steps, mask_num % steps
    num = torch.zeros(mask_num.size(0), steps, dtype=torch.int64) + base
    for i in range(mask_num.size(0)):
        num[i, : remainder[i]] += 1
    return num


def canvases(lm, prompt, method: str, max_new_tokens: int, **kw) -> list[list[int]]:
    """The generated region after every step of a decodelab run (from what each step yields:
    the positions it unmasked and their tokens)."""
    region = [lm.mask_id] * max_new_tokens
    out = []
    for chunk in decodelab.stream(lm, list(prompt), method, max_new_tokens=max_new_tokens, ignore_eos=True, **kw):
        for p, t in zip(chunk.positions, chunk.tokens):
            assert region[p] == lm.mask_id, "a position was unmasked twice"
            region[p] = t
        out.append(list(region))
    return out


class ScriptedLM:
    """A masked diffusion "model" for policy tests: forward n returns the logits `script(n, region)`
    ([G, V] for the G region positions; `region` is the current region, masks included), so a
    test states exactly what the policy sees at each step. Token 0 is the mask, 1 end-of-text;
    no tokenizer (prompts are ids)."""

    capabilities = frozenset({"batch"})
    tokenizer = None
    max_length = None

    def __init__(self, script, G: int, vocab: int = 8):
        from decodelab.models.base import Counter

        self.script, self.G, self.vocab_size = script, G, vocab
        self.mask_id, self.counter = 0, Counter()

    @property
    def eos_token_ids(self) -> list[int]:
        return [1]

    def fresh(self, needs=None) -> "ScriptedLM":
        return ScriptedLM(self.script, self.G, self.vocab_size)

    def logits(self, canvas, rows=None, keep=None):
        assert canvas.ndim == 1 and keep is None
        P = len(canvas) - self.G
        full = torch.as_tensor(self.script(self.counter.forwards, canvas[P:].clone()), dtype=torch.float32)
        self.counter.count(len(canvas))
        return full if rows is None else full[rows - P]

    def logits_cached(self, ids, positions, rows=None):
        raise AssertionError("a scripted model has no KV cache")


def peaked(tokens: list[int], probs: list[float], vocab: int = 8) -> torch.Tensor:
    """Logits [len(tokens), vocab] whose softmax puts exactly `probs[i]` on `tokens[i]` and spreads
    the rest evenly over the other real tokens (none on the mask, token 0: logit -1e4)."""
    out = torch.full((len(tokens), vocab), -1e4)
    for i, (t, p) in enumerate(zip(tokens, probs)):
        rest = (1 - p) / (vocab - 2)
        out[i, 1:] = torch.log(torch.tensor(max(rest, 1e-30), dtype=torch.float64)).float()
        out[i, t] = float(torch.log(torch.tensor(p, dtype=torch.float64)))
    return out


def commits(lm, prompt, method: str, G: int, **kw) -> list[list[int]]:
    """The region offsets each step unmasked, sorted, in step order."""
    return [sorted(c.positions) for c in decodelab.stream(lm, list(prompt), method, max_new_tokens=G,
                                                          ignore_eos=True, **kw)]


def zoo_task_run(method: str, block_length: int | None, **kw) -> tuple[float, float]:
    """(accuracy, mean NFE) of `method` on zoo:tasks-mdlm over 3 test examples each of copy,
    reverse, sort and insert_at, a 24-token canvas."""
    from decodelab.zoo import tasks

    lm = decodelab.load("zoo:tasks-mdlm")
    exs = [e for t in ("copy", "reverse", "sort", "insert_at") for e in tasks.examples(t, "test", 3, seed=2)]
    outs = [decodelab.generate(lm, e.prompt, method, max_new_tokens=24, block_length=block_length, **kw) for e in exs]
    acc = sum(tasks.score(e, o.text) for e, o in zip(exs, outs)) / len(exs)
    return acc, sum(o.stats.nfe for o in outs) / len(outs)
