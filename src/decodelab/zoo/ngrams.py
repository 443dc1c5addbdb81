"""n-gram models of the zoo's code corpus, for Superposed Decoding's n-gram interpolation.

`NGrams.build(stream, vocab_size, orders)` counts every n-gram of a token stream; `prob(contexts,
candidates)` gives, per context, the maximum-likelihood P(candidate | the last n - 1 tokens) for
each order (0 where the context was never seen, as the reference's `prob() < 0` skip).

Storage, per order n (context length c = n - 1): the distinct contexts as sorted int64 keys
(the c ids packed base V: exact while V^c < 2^63, e.g. c <= 5 for the zoo's 4096 tokens; beyond
that a polynomial hash mod 2^61 - 1, where two contexts may rarely share a key), each context's
total count, and the distinct (context, next) pairs as sorted keys context_index * V + next with
their counts. A lookup is two binary searches (numpy searchsorted), vectorised over drafts and
candidates.

`for_tokenizer(tokenizer, vocab_size)` builds the tables from the corpus's TRAIN split (the
Python standard library, zoo.corpus) tokenized with that tokenizer, once per machine: the arrays
are cached as .npy files under $DECODELAB_CACHE (default ~/.cache/decodelab)/ngrams/<key>/, keyed
by the tokenizer, the Python version and the orders, and memory-mapped on later loads. Building
for the zoo tokenizer takes about half a minute (a progress bar shows it) and ~110 MB of disk.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np

ORDERS = (2, 3, 4, 5, 6)  # Superposed Decoding's bigram .. six-gram
_FORMAT = 1
_MOD = (1 << 61) - 1


class NGrams:
    def __init__(self, vocab_size: int, tables: dict[int, dict[str, np.ndarray]]):
        self.vocab_size, self.tables = vocab_size, tables  # order -> {ctx_keys, ctx_total, pair_keys, pair_count}

    @property
    def orders(self) -> tuple[int, ...]:
        return tuple(sorted(self.tables))

    @classmethod
    def build(cls, stream, vocab_size: int, orders=ORDERS, progress=None) -> "NGrams":
        """Count the n-grams of a 1-D token stream."""
        ids = np.asarray(stream, dtype=np.int64)
        tables = {}
        for n in orders:
            c = n - 1
            if len(ids) <= c:
                tables[n] = _empty()
                continue
            keys = _pack(np.lib.stride_tricks.sliding_window_view(ids[:-1], c), vocab_size)  # [N - c]
            nxt = ids[c:]
            ctx_keys, ctx_index, ctx_total = np.unique(keys, return_inverse=True, return_counts=True)
            pair_keys, pair_count = np.unique(ctx_index.astype(np.int64) * vocab_size + nxt, return_counts=True)
            tables[n] = {"ctx_keys": ctx_keys, "ctx_total": ctx_total.astype(np.int64), "pair_keys": pair_keys,
                         "pair_count": pair_count.astype(np.int64)}
            if progress is not None:
                progress.update(1)
        return cls(vocab_size, tables)

    def prob(self, n: int, contexts: list[list[int]], candidates: np.ndarray) -> np.ndarray:
        """P_n(candidates[d, j] | the last n - 1 tokens of contexts[d]) [D, C] float64; 0 where the
        context is shorter than n - 1 or was never seen."""
        t, c = self.tables[n], n - 1
        cand = np.asarray(candidates, dtype=np.int64)
        out = np.zeros(cand.shape, dtype=np.float64)
        usable = [d for d, ctx in enumerate(contexts) if len(ctx) >= c]
        if not usable or not len(t["ctx_keys"]):
            return out
        keys = _pack(np.array([contexts[d][len(contexts[d]) - c:] for d in usable], dtype=np.int64), self.vocab_size)
        idx = np.searchsorted(t["ctx_keys"], keys)
        idx_ok = np.minimum(idx, len(t["ctx_keys"]) - 1)
        seen = t["ctx_keys"][idx_ok] == keys
        rows = np.array(usable)[seen]
        ci = idx_ok[seen]
        if not len(rows):
            return out
        q = ci[:, None] * self.vocab_size + cand[rows]  # [S, C]
        pos = np.minimum(np.searchsorted(t["pair_keys"], q), len(t["pair_keys"]) - 1)
        hit = t["pair_keys"][pos] == q
        out[rows] = np.where(hit, t["pair_count"][pos], 0) / t["ctx_total"][ci][:, None]
        return out

    def mix(self, contexts: list[list[int]], candidates: np.ndarray, weights: dict[int, float]) -> np.ndarray:
        """sum_n weights[n] P_n(candidate | context) [D, C]: the reference's interpolated n-gram score."""
        return sum(w * self.prob(n, contexts, candidates) for n, w in weights.items())

    def save(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        for n, t in self.tables.items():
            for name, arr in t.items():
                np.save(path / f"{n}-{name}.npy", arr)
        (path / "meta.json").write_text(json.dumps({"vocab_size": self.vocab_size, "orders": list(self.tables),
                                                    "format": _FORMAT}))

    @classmethod
    def load(cls, path: Path) -> "NGrams":
        meta = json.loads((path / "meta.json").read_text())
        tables = {n: {name: np.load(path / f"{n}-{name}.npy", mmap_mode="r")
                      for name in ("ctx_keys", "ctx_total", "pair_keys", "pair_count")} for n in meta["orders"]}
        return cls(meta["vocab_size"], tables)


def _empty() -> dict[str, np.ndarray]:
    z = np.zeros(0, dtype=np.int64)
    return {"ctx_keys": z, "ctx_total": z, "pair_keys": z, "pair_count": z}


def _pack(windows: np.ndarray, vocab_size: int) -> np.ndarray:
    """[N, c] ids -> [N] int64 keys: base-V digits when V^c < 2^63, else a hash mod 2^61 - 1."""
    c = windows.shape[-1]
    exact = vocab_size ** c < 2 ** 63
    key = np.zeros(windows.shape[:-1], dtype=np.int64)
    for j in range(c):
        if exact:
            key = key * vocab_size + windows[..., j]
        else:  # Python ints would be exact but slow; uint64 arithmetic mod 2^61 - 1 in two halves
            key = ((key.astype(object) * (vocab_size + 1) + windows[..., j] + 1) % _MOD).astype(np.int64)
    return key


def cache_dir() -> Path:
    return Path(os.environ.get("DECODELAB_CACHE", Path.home() / ".cache" / "decodelab")) / "ngrams"


def _tokenizer_key(tokenizer, vocab_size: int, orders) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    text = backend.to_str() if backend is not None else json.dumps(sorted(tokenizer.get_vocab().items()))
    h = hashlib.sha256(f"{_FORMAT}|{vocab_size}|{list(orders)}|{sys.version_info[:3]}|".encode() + text.encode())
    return h.hexdigest()[:16]


@functools.lru_cache(maxsize=4)
def for_tokenizer(tokenizer, vocab_size: int, orders=ORDERS, progress: bool = True) -> NGrams:
    """The corpus n-grams for `tokenizer`: loaded from the cache, or built (with a progress bar) and
    cached. Read-only and memory-mapped, so one copy serves every generation."""
    path = cache_dir() / _tokenizer_key(tokenizer, vocab_size, orders)
    if (path / "meta.json").is_file():
        return NGrams.load(path)
    from tqdm import tqdm

    from .corpus import code_files, read_code

    files = code_files("train")
    eos = getattr(tokenizer, "eos_token_id", None)
    ids: list[int] = []
    with tqdm(total=len(files) + len(orders), desc="building n-grams of the zoo corpus", unit="step",
              disable=not progress) as bar:
        for f in files:
            ids.extend(tokenizer(read_code(f), add_special_tokens=False)["input_ids"])
            if eos is not None:
                ids.append(eos)
            bar.update(1)
        grams = NGrams.build(np.array(ids, dtype=np.int64), vocab_size, orders, progress=bar)
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    grams.save(tmp)
    try:
        os.replace(tmp, path)  # whole or not at all
    except OSError:  # another process cached it first
        shutil.rmtree(tmp, ignore_errors=True)
    return NGrams.load(path)
