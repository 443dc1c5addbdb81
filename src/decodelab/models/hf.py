"""Adapter for any transformers AutoModelForCausalLM, batch 1 with an explicit-position KV cache.

Tree forwards pass a 4D additive mask of shape [1, 1, N, cache + N]: cached tokens are visible to
every new token, new tokens see each other through `tree_mask`. transformers uses a 4D mask as
given, for eager and sdpa attention alike. `commit` keeps the cache entries of the accepted path
and drops the rest, so the cache then equals the one a sequential decode would have built.
"""
from __future__ import annotations

import inspect

import torch
from transformers import DynamicCache, PreTrainedModel

from .base import CachedIds, Counter, Step


class HFCausalLM(CachedIds):
    capabilities = frozenset({"tree_mask", "hidden_states", "batch"})

    def __init__(self, model: PreTrainedModel, tokenizer=None):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.config = model.config
        self.device = next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype
        self.vocab_size = model.get_output_embeddings().weight.shape[0]
        self.max_length = _context_length(model.config)
        self.counter = Counter()
        # transformers renamed `past_key_values` to `cache` within v5; use whichever this one takes
        params = inspect.signature(model.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"
        self.reset()

    def fresh(self) -> "HFCausalLM":
        """Another adapter over the same weights with its own cache and counter (a model may
        draft for itself)."""
        return HFCausalLM(self.model, self.tokenizer)

    # -- cache ---------------------------------------------------------------------------------
    def reset(self) -> None:
        self._cache = DynamicCache(config=self.config)
        self._ids = torch.empty(1, 0, dtype=torch.long, device=self.device)  # [B, L]
        self._base = 0  # cache length before the last forward

    def _index_cache(self, idx: torch.Tensor, dim: int) -> None:
        for layer in self._cache.layers:
            if getattr(layer, "keys", None) is not None and layer.keys.numel():
                layer.keys = layer.keys.index_select(dim, idx)
                layer.values = layer.values.index_select(dim, idx)

    def truncate(self, n: int) -> None:
        if n < self.cache_len:
            self._index_cache(torch.arange(n, device=self.device), dim=-2)
            self._ids = self._ids[:, :n]
        self._base = min(self._base, n)

    @torch.inference_mode()  # the cache holds inference tensors, updated in place below
    def commit(self, keep) -> None:
        keep_list = keep.tolist() if torch.is_tensor(keep) else list(keep)
        end = self._base + len(keep_list)
        if keep_list == list(range(len(keep_list))):  # a prefix of the last forward (chains): cut
            for layer in self._cache.layers:
                if getattr(layer, "keys", None) is not None and layer.keys.numel():
                    layer.keys, layer.values = layer.keys[..., :end, :], layer.values[..., :end, :]
            self._ids = self._ids[:, :end]
            self._base = end
            return
        src = self._base + torch.tensor(keep_list, dtype=torch.long, device=self.device)
        # move only the kept rows of the last forward into place and drop the rest: O(kept), not
        # O(cache) (the gather on the right copies first, so overlapping rows are safe)
        for layer in self._cache.layers:
            if getattr(layer, "keys", None) is not None and layer.keys.numel():
                layer.keys[..., self._base:end, :] = layer.keys[..., src, :]
                layer.values[..., self._base:end, :] = layer.values[..., src, :]
                layer.keys, layer.values = layer.keys[..., :end, :], layer.values[..., :end, :]
        self._ids = torch.cat([self._ids[:, : self._base], self._ids[:, src]], dim=1)
        self._base = self.cache_len

    def select(self, rows: torch.Tensor) -> None:
        """Keep, reorder or repeat batch rows of the cache (rows [0, 0, 0] turns batch 1 into 3)."""
        rows = rows.to(self.device)
        self._index_cache(rows, dim=0)
        self._ids = self._ids[rows]

    # -- forward -------------------------------------------------------------------------------
    @torch.inference_mode()
    def forward(self, ids, positions, tree_mask=None, hidden=False) -> Step:
        batched = ids.ndim == 2
        ids2 = (ids if batched else ids[None]).to(self.device)  # [B, N]
        pos2 = (positions if batched else positions[None]).to(self.device)  # [B, N]
        n = ids2.shape[1]
        mask = None if tree_mask is None else self._mask4d(tree_mask.to(self.device))
        self._base = self.cache_len
        out = self.model(input_ids=ids2, position_ids=pos2, attention_mask=mask, use_cache=True,
                         output_hidden_states=hidden, **{self._cache_kw: self._cache})
        self._ids = torch.cat([self._ids, ids2], dim=1)
        self.counter.count(ids2.numel())
        logits = out.logits.float()  # [B, N, V]
        h = out.hidden_states[-1] if hidden else None
        if not batched:
            logits, h = logits[0], (h[0] if h is not None else None)
        assert logits.shape[-2] == n
        return Step(logits=logits, hidden=h)

    def _mask4d(self, tree_mask: torch.Tensor) -> torch.Tensor:
        n, cached = tree_mask.shape[0], self.cache_len
        visible = torch.ones(n, cached + n, dtype=torch.bool, device=self.device)
        visible[:, cached:] = tree_mask
        mask = torch.zeros(1, 1, n, cached + n, dtype=self.dtype, device=self.device)
        return mask.masked_fill_(~visible, torch.finfo(self.dtype).min)

    # -- metadata ------------------------------------------------------------------------------
    @property
    def eos_token_ids(self) -> list[int]:
        ids = getattr(self.model.generation_config, "eos_token_id", None)
        if ids is None:
            ids = self.config.eos_token_id
        if ids is None and self.tokenizer is not None:
            ids = self.tokenizer.eos_token_id
        if ids is None:
            return []
        return [int(i) for i in (ids if isinstance(ids, (list, tuple)) else [ids])]


def _context_length(config) -> int | None:
    for name in ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None
