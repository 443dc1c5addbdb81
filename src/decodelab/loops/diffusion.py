"""Masked diffusion decoding, LLaDA-style baseline (low-confidence remasking).

Canvas = prompt + ``gen_length`` mask tokens. Each step runs one forward over the whole
canvas, takes x0 = argmax of the logits at every masked position with confidence
p(x0) (the mask token itself excluded), and commits the ``tokens_per_step`` most confident masked positions; the rest stay
masked. Decoding ends when no mask is left. The answer is the generated region cut at the
first end-of-text. Later methods (other unmasking rules, semi-autoregressive blocks,
remasking) plug in on top of this loop.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from decodelab.errors import DecodeLabError


@dataclass
class DiffusionResult:
    ids: list[int]  # generated tokens up to (not including) the first end-of-text
    canvas: list[int]  # the full decoded generation region (gen_length tokens)
    steps: int  # forward passes used
    order: list[int]  # generation-region offsets in the order they were committed


def decode(model, prompt_ids, gen_length: int, tokens_per_step: int = 1) -> DiffusionResult:
    """Decode one prompt; see :func:`decode_batch`."""
    return decode_batch(model, [list(prompt_ids)], gen_length, tokens_per_step)[0]


@torch.inference_mode()
def decode_batch(model, prompts: list[list[int]], gen_length: int, tokens_per_step: int = 1) -> list[DiffusionResult]:
    """Decode several prompts at once (rows right-padded; the result equals one-at-a-time).

    ``model`` is an :class:`decodelab.models.hf_diffusion.HFDiffusionLM` (anything with
    ``mask_id``, ``eos_id`` and ``logits_batch(canvases, attention_mask, positions)``).
    """
    if gen_length <= 0:
        raise DecodeLabError("gen_length must be positive")
    if tokens_per_step <= 0:
        raise DecodeLabError("tokens_per_step must be positive")
    if not prompts:
        return []
    mask_id = model.mask_id
    B = len(prompts)
    lens = [len(p) for p in prompts]
    width = max(lens) + gen_length
    pad = model.eos_id if model.eos_id is not None else mask_id
    canvas = torch.full((B, width), pad, dtype=torch.long)
    att = torch.zeros((B, width), dtype=torch.long)
    gen_pos = torch.zeros((B, gen_length), dtype=torch.long)
    for b, p in enumerate(prompts):
        canvas[b, : lens[b]] = torch.tensor(p, dtype=torch.long)
        canvas[b, lens[b] : lens[b] + gen_length] = mask_id
        att[b, : lens[b] + gen_length] = 1
        gen_pos[b] = torch.arange(lens[b], lens[b] + gen_length)
    orders: list[list[int]] = [[] for _ in range(B)]
    steps = 0
    while True:
        region = canvas.gather(1, gen_pos)  # [B, G]
        masked = region == mask_id
        if not masked.any():
            break
        lg = model.logits_batch(canvas, att, positions=gen_pos).cpu()  # [B, G, V]
        lg[..., mask_id] = float("-inf")  # never "decode" a mask: every step commits real tokens
        steps += 1
        probs = torch.softmax(lg, dim=-1)
        conf, x0 = probs.max(dim=-1)  # [B, G]
        conf = torch.where(masked, conf, torch.full_like(conf, -1.0))
        for b in range(B):
            k = min(tokens_per_step, int(masked[b].sum()))
            if k == 0:
                continue
            pick = torch.topk(conf[b], k).indices
            canvas[b, gen_pos[b, pick]] = x0[b, pick]
            orders[b].extend(pick.tolist())
    out = []
    eos = model.eos_id
    for b in range(B):
        region = canvas[b, gen_pos[b]].tolist()
        ids = region[: region.index(eos)] if eos is not None and eos in region else region
        out.append(DiffusionResult(ids=ids, canvas=region, steps=steps, order=orders[b]))
    return out
