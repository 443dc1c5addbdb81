"""Adapter for a masked diffusion LM: any transformers AutoModelForMaskedLM (bidirectional).

The model scores a whole canvas at once: ``logits(canvas [N]) -> [N, V]`` (or a batch of
canvases, ``logits_batch(canvases [B, N], attention_mask) -> [B, N, V]``). The mask id and
end-of-text id always come from the tokenizer.
"""
from __future__ import annotations

from pathlib import Path

import torch

from decodelab.errors import DecodeLabError

from .base import Counter


class HFDiffusionLM:
    capabilities = frozenset({"batch"})

    def __init__(self, model, tokenizer):
        if tokenizer is None or tokenizer.mask_token_id is None:
            raise DecodeLabError("a masked diffusion model needs a tokenizer with a mask token")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.mask_id: int = tokenizer.mask_token_id
        self.eos_id: int | None = tokenizer.eos_token_id
        self.device = next(model.parameters()).device
        self.vocab_size = model.get_output_embeddings().weight.shape[0]
        self.max_length: int | None = getattr(model.config, "max_position_embeddings", None)
        self.counter = Counter()

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str = "cpu", dtype: torch.dtype = torch.float32):
        from transformers import AutoModelForMaskedLM, AutoTokenizer

        model = AutoModelForMaskedLM.from_pretrained(str(path), dtype=dtype).to(device)
        return cls(model, AutoTokenizer.from_pretrained(str(path)))

    def _check_len(self, n: int) -> None:
        if self.max_length is not None and n > self.max_length:
            raise DecodeLabError(f"canvas of {n} tokens exceeds the model's {self.max_length}-token context")

    @torch.inference_mode()
    def logits(self, canvas: torch.Tensor) -> torch.Tensor:
        """[N] token ids (mask id where undecided) -> [N, V] float32 logits."""
        return self.logits_batch(canvas[None])[0]

    @torch.inference_mode()
    def logits_batch(self, canvases: torch.Tensor, attention_mask: torch.Tensor | None = None,
                     positions: torch.Tensor | None = None) -> torch.Tensor:
        """[B, N] canvases (rows right-padded, ``attention_mask`` marking real tokens) -> [B, N, V].

        With ``positions`` ([B, G] indices), only those positions are scored: -> [B, G, V]
        (the output head is the bulk of a small model's cost; decoding needs only the
        generation region)."""
        self._check_len(canvases.shape[1])
        canvases = canvases.to(self.device)
        if attention_mask is not None:
            attention_mask = attention_mask.to(self.device)
        n = int(attention_mask.sum()) if attention_mask is not None else canvases.numel()
        self.counter.count(n)
        if positions is None:
            return self.model(input_ids=canvases, attention_mask=attention_mask).logits.float()
        positions = positions.to(self.device)
        split = split_head(self.model)
        if split is None:
            out = self.model(input_ids=canvases, attention_mask=attention_mask).logits
            return out.gather(1, positions[..., None].expand(-1, -1, out.shape[-1])).float()
        body, head = split
        h = body(canvases, attention_mask)
        h = h.gather(1, positions[..., None].expand(-1, -1, h.shape[-1]))
        return head(h).float()


def split_head(model):
    """(body, head) of a stock transformers LM such that ``head(body(ids, mask))`` equals its
    logits, for the architectures the zoo uses (Llama-style ``lm_head``, BERT ``cls``,
    ModernBERT ``head`` + ``decoder``); None for others."""
    base = getattr(model, getattr(model, "base_model_prefix", ""), None)
    if base is None:
        return None
    if hasattr(model, "lm_head"):
        head = model.lm_head
    elif hasattr(model, "cls"):
        head = model.cls
    elif hasattr(model, "head") and hasattr(model, "decoder"):
        def head(h):
            return model.decoder(model.head(h))
    else:
        return None

    def body(ids, mask):
        return base(input_ids=ids, attention_mask=mask).last_hidden_state

    return body, head
