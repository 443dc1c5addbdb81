"""The two training objectives (next-token and MDLM) behind one signature, and their
token-weighted mean over a stack of windows (held-out and train-sample figures).

Logits are computed only at the positions a loss is on: the 4k-vocabulary head
dominates a tiny model's cost.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from decodelab.errors import DecodeLabError
from decodelab.zoo.batches import full_batch
from decodelab.zoo.recipes import T_SAMPLERS

MIN_T = 1e-3  # masking rate floor for the MDLM objective (avoids 1/t blow-up)


class Loss(NamedTuple):
    loss: torch.Tensor  # the objective, a mean over `tokens` tokens (differentiable)
    tokens: int  # tokens the loss averages over (the targets; for MDLM every eligible token)
    ce: torch.Tensor  # plain mean cross-entropy over the `ce_tokens` scored tokens
    ce_tokens: int  # tokens scored (the targets; for MDLM the masked ones)


def _hidden(model, ids, att, device):
    """(last hidden states [B, T, H] of the model run on ``ids``, its LM head)."""
    from decodelab.models.hf_diffusion import split_head

    body, head = split_head(model)
    return body(ids.to(device), att.to(device) if att is not None else None), head


def causal_loss(model, batch, device) -> Loss:
    """Mean next-token cross-entropy over the positions ``loss_mask`` marks."""
    x = batch["input_ids"].to(device)
    h, head = _hidden(model, x, batch.get("attention_mask"), device)
    m = batch["loss_mask"][:, 1:].to(device)  # position i predicts token i + 1
    loss = F.cross_entropy(head(h[:, :-1][m]).float(), x[:, 1:][m])
    k = int(m.sum())
    return Loss(loss, k, loss, k)


def sample_t(n: int, gen: torch.Generator, sampler: str = "uniform") -> torch.Tensor:
    """n masking rates, each U(0,1): i.i.d. ("uniform") or stratified, one per interval
    [i/n, (i+1)/n) in a random rotation ("stratified", MDLM's low-discrepancy sampler)."""
    if sampler == "uniform":
        return torch.rand(n, generator=gen)
    if sampler == "stratified":
        return (torch.rand(1, generator=gen) + torch.arange(n) / n) % 1.0
    raise DecodeLabError(f"t_sampler must be one of {list(T_SAMPLERS)}, got {sampler!r}")


def mdlm_loss(model, batch, device, mask_id: int, gen: torch.Generator, t: torch.Tensor | None = None,
              t_sampler: str = "uniform") -> Loss:
    """MDLM / LLaDA objective. t ~ U(0,1) per sequence, each eligible token masked with
    probability t, cross-entropy on masked tokens weighted 1/t, averaged over eligible
    tokens (an upper bound on the per-token NLL); ``ce`` is the plain mean CE on masked tokens.

    ``t_sampler="stratified"`` is MDLM's low-discrepancy sampler (Sahoo et al. 2024): one
    uniform offset u and t_i = (u + i/B) mod 1, so every batch covers (0, 1) evenly; each
    t_i is still U(0,1), the objective is unchanged and its variance lower."""
    x, elig = batch["input_ids"], batch["loss_mask"]  # [B, L]
    B, L = x.shape
    if t is None:
        t = sample_t(B, gen, t_sampler)
    t = t.clamp(min=MIN_T)
    masked = (torch.rand(B, L, generator=gen) < t[:, None]) & elig
    xin = torch.where(masked, torch.full_like(x, mask_id), x)
    h, head = _hidden(model, xin, batch.get("attention_mask"), device)
    masked = masked.to(device)
    n_masked = int(masked.sum())
    if n_masked == 0:  # nothing to score: a zero loss that still reaches the graph
        zero = h.sum() * 0.0
        return Loss(zero, int(elig.sum()), zero.detach(), 0)
    logits = head(h[masked]).float()
    ce = F.cross_entropy(logits, x.to(device)[masked], reduction="none")
    w = (1.0 / t.to(device))[:, None].expand(B, L)[masked]
    weighted = (ce * w).sum() / elig.sum().clamp(min=1).to(device)
    return Loss(weighted, int(elig.sum()), ce.mean(), n_masked)


def objective(model, kind: str, batch, device, mask_id: int, gen: torch.Generator, t_sampler: str = "uniform") -> Loss:
    """The training loss of a ``kind`` ("causal" or "mdlm") model on ``batch``."""
    if kind == "causal":
        return causal_loss(model, batch, device)
    return mdlm_loss(model, batch, device, mask_id, gen, t_sampler=t_sampler)


@torch.no_grad()
def windows_loss(model, kind: str, windows: torch.Tensor, batch_size: int, device, mask_id: int,
                 seed: int = 1234) -> tuple[float, float]:
    """(objective, plain masked CE) over ``windows`` [N, T], each a token-weighted mean over
    batches of ``batch_size`` windows; MDLM's t and masks come from a generator seeded ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    tot, count, tot_ce, count_ce = 0.0, 0, 0.0, 0
    for x in windows.split(batch_size):
        r = objective(model, kind, full_batch(x), device, mask_id, gen)
        tot += float(r.loss) * r.tokens
        count += r.tokens
        tot_ce += float(r.ce) * r.ce_tokens
        count_ce += r.ce_tokens
    return tot / count, tot_ce / max(count_ce, 1)
