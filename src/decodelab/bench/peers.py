"""transformers `generate()` as bench rows, on the same model objects and prompt ids as ours.

The peers: plain greedy, assisted generation with the draft model (`assistant_model`) and prompt
lookup decoding (`prompt_lookup_num_tokens`). Forwards are counted with forward pre-hooks on the
target and draft modules, attached only while a peer generates. transformers' first forward
scores the whole prompt; it is booked the way our loops book it (prompt[:-1] as prefill, the last
prompt token as the first decode token), so target forwards, tau and tokens per target forward
read the same for every row.
"""
from __future__ import annotations

import contextlib
import copy

import torch

from .rows import Row, peer_kwargs


class _Hook:
    """Counts forward calls and input tokens of a module while attached."""

    def __init__(self, module):
        self.forwards, self.tokens = 0, 0
        self.handle = module.register_forward_pre_hook(self, with_kwargs=True)

    def __call__(self, module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        self.forwards += 1
        self.tokens += int(ids.shape[-1]) if ids is not None else 0


def generate(row: Row, target, draft, ids: list[int], max_new_tokens: int, ignore_eos: bool) -> tuple[list[int], dict]:
    """Run a peer row on one prompt: (generated ids, counts as in DecodeStats)."""
    model = target.model
    cfg = copy.deepcopy(model.generation_config)
    cfg.do_sample, cfg.num_beams = False, 1
    cfg.max_new_tokens, cfg.min_new_tokens, cfg.max_length = max_new_tokens, None, None
    eos = target.eos_token_ids
    cfg.eos_token_id = None if ignore_eos else eos
    if cfg.pad_token_id is None:
        cfg.pad_token_id = eos[0] if eos else 0
    for name in ("temperature", "top_p", "top_k"):  # keep transformers from warning about unused flags
        setattr(cfg, name, None)
    kw = peer_kwargs(row)
    assistant = {}
    for k in ("num_assistant_tokens", "num_assistant_tokens_schedule", "assistant_confidence_threshold"):
        if k in kw:
            assistant[k] = kw.pop(k)
    for k, v in kw.items():
        setattr(cfg, k, v)
    input_ids = torch.tensor([ids], dtype=torch.long, device=target.device)  # [1, T]
    hooks = [_Hook(model)] + ([_Hook(draft.model)] if row.method == "hf:assisted" else [])
    try:
        with _assistant_settings(draft.model if row.method == "hf:assisted" else None, assistant):
            extra = {"assistant_model": draft.model} if row.method == "hf:assisted" else {}
            out = model.generate(input_ids, attention_mask=torch.ones_like(input_ids), generation_config=cfg,
                                 **extra)
    finally:
        for h in hooks:
            h.handle.remove()
    tokens = out[0, len(ids):].tolist()
    t = hooks[0]
    stats = {"new_tokens": len(tokens), "prompt_tokens": len(ids), "target_forwards": t.forwards,
             "target_tokens_scored": t.tokens - (len(ids) - 1) if t.forwards else 0,
             "draft_forwards": hooks[1].forwards if len(hooks) > 1 else 0,
             "draft_tokens_scored": hooks[1].tokens if len(hooks) > 1 else 0,
             "committed_total": len(tokens), "committed_steps": t.forwards}
    return tokens, stats


@contextlib.contextmanager
def _assistant_settings(assistant, settings: dict):
    """transformers reads the assisted-generation knobs from the assistant's generation_config:
    set them for one call and put the old values back."""
    if assistant is None or not settings:
        yield
        return
    cfg = assistant.generation_config
    old = {k: getattr(cfg, k, None) for k in settings}
    try:
        for k, v in settings.items():
            setattr(cfg, k, v)
        yield
    finally:
        for k, v in old.items():
            setattr(cfg, k, v)
