"""ToyLM: an exact, known next-token table behind the CausalLM protocol, for distribution tests.

The next-token logits depend only on the last `order` (1 or 2) tokens of the context:
logits = table[prev] (order 1) or table[prev2, prev] (order 2). With order 2 and a context of one
token, prev2 is token 0. Tree forwards are exact: a node's context is the cache plus its
ancestors under the tree mask.

Input embeddings ("embeds"): a token's embedding is its one-hot row [V], and a row e of `embeds`
scores e @ table[prev2] (order 2; e @ table for order 1), so one-hot rows give the table exactly
and any other vector a fixed mixture of rows (PPD's prompt tokens in the distribution tests).
"""
from __future__ import annotations

import torch

from .base import CachedIds, Counter, Step


class ToyLM(CachedIds):
    capabilities = frozenset({"tree_mask", "batch", "rewind", "embeds"})
    tokenizer = None
    max_length = None

    def __init__(self, table: torch.Tensor, eos_token_id: int | None = None):
        if table.ndim not in (2, 3) or any(s != table.shape[-1] for s in table.shape):
            raise ValueError("table must be [V, V] (order 1) or [V, V, V] (order 2)")
        self.table = table.float()
        self.order = table.ndim - 1
        self.vocab_size = table.shape[-1]
        self._eos = eos_token_id
        self.counter = Counter()
        self.costs: dict = {}  # forward cost curves (models/costs.py), shared with fresh() copies
        self.reset()

    @classmethod
    def random(cls, vocab_size: int, order: int = 1, seed: int = 0, scale: float = 2.0,
               eos_token_id: int | None = None) -> "ToyLM":
        g = torch.Generator().manual_seed(seed)
        shape = (vocab_size,) * (order + 1)
        return cls(torch.randn(shape, generator=g) * scale, eos_token_id=eos_token_id)

    def fresh(self, needs: frozenset[str] | None = None) -> "ToyLM":
        """The same table (and tokenizer, when one was attached), an empty cache of its own."""
        other = type(self)(self.table, eos_token_id=self._eos)
        other.tokenizer, other.costs = self.tokenizer, self.costs
        return other

    def reset(self) -> None:
        self._ids = torch.empty(1, 0, dtype=torch.long)
        self._base = 0

    @property
    def eos_token_ids(self) -> list[int]:
        return [] if self._eos is None else [self._eos]

    def next_logits(self, context: list[int]) -> torch.Tensor:
        """Exact logits after `context` (a non-empty list of ids). [V]"""
        if self.order == 1:
            return self.table[context[-1]]
        prev2 = context[-2] if len(context) > 1 else 0
        return self.table[prev2, context[-1]]

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """One-hot input embeddings of ids [...] -> [..., V] float32."""
        return torch.nn.functional.one_hot(ids.long(), self.vocab_size).float()

    def forward(self, ids, positions, tree_mask=None, hidden=False, embeds=None) -> Step:
        if hidden:
            raise NotImplementedError("ToyLM has no hidden states")
        batched = ids.ndim == 2
        ids2 = ids if batched else ids[None]  # [B, N]
        n = ids2.shape[1]
        if embeds is not None:
            emb = (embeds if batched else embeds[None]).float()  # [B, N, V]
            if self.order == 1:
                logits = emb @ self.table
            else:
                logits = torch.einsum("bnv,bnvw->bnw", emb, self.table[self._prev2(ids2, tree_mask)])
        elif self.order == 1:
            logits = self.table[ids2]  # [B, N, V]: the context ends with the node's own token
        else:
            logits = self.table[self._prev2(ids2, tree_mask), ids2]
        self._base = self.cache_len
        self._ids = torch.cat([self._ids, ids2], dim=1)
        self.counter.count(ids2.numel())
        return Step(logits=logits if batched else logits[0])

    def _prev2(self, ids2: torch.Tensor, tree_mask) -> torch.Tensor:
        """[B, N] the token before each node: its nearest ancestor, else the last cached token."""
        n = ids2.shape[1]
        mask = tree_mask if tree_mask is not None else torch.tril(torch.ones(n, n, dtype=torch.bool))
        idx = torch.arange(n)
        strict = mask & (idx[None, :] < idx[:, None])  # [N, N] proper ancestors
        parent = (strict * idx).argmax(dim=1)  # nearest ancestor (largest index)
        before = self._ids[:, -1] if self.cache_len else torch.zeros(ids2.shape[0], dtype=torch.long)
        return torch.where(strict.any(dim=1)[None, :], ids2[:, parent], before[:, None])  # [B, N]

    def truncate(self, n: int) -> None:
        self._ids = self._ids[:, :n]
        self._base = min(self._base, n)

    def commit(self, keep) -> None:
        keep = torch.as_tensor(keep, dtype=torch.long)
        self._ids = torch.cat([self._ids[:, : self._base], self._ids[:, self._base + keep]], dim=1)
        self._base = self.cache_len

    def select(self, rows: torch.Tensor) -> None:
        self._ids = self._ids[rows]
