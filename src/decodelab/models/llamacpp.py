"""Adapter for GGUF models on llama.cpp, through llama-cpp-python's low-level API (`llama_decode`
on a batch this adapter owns, `llama_memory_seq_*` for the cache). Install: pip install
"decodelab[llamacpp]".

Cache layout. llama.cpp's KV cache is a set of cells, each with a position and the sequence ids it
belongs to. Sequence 0 holds the committed tokens. A tree forward gives every leaf its own
sequence 1..K and adds each node once, at its explicit position (base + depth), with the sequence
ids of the leaves below it, so a node attends to the committed prefix and to its ancestors only:
one `llama_decode` scores the whole tree. For that every leaf sequence must hold the committed
prefix, and it keeps holding it: the committed cells belong to sequences 0..T, T the most leaves
a tree forward of this generation had (`seq_cp` of the prefix when T grows, which only tags the
cells: the cache is unified), and a chain forward (no tree mask, or a mask that is a chain) adds
its tokens to all of 0..T. `commit(path)` tags the path's cells with sequence 0 (`seq_cp` from the
sequence of a leaf below the path's last node), removes the tree's leaf sequences from its cells
(`seq_rm` from its base position: the rejected nodes' cells are freed) and tags the path's cells
with 1..T. A chain commit, `truncate` or a tree not committed removes every sequence's cells past
the committed length (`seq_rm` of all sequences). The cache's sequence 0 then equals the one
sequential decoding builds. (Copying the prefix into the leaf sequences before each tree forward
and dropping them after it, `seq_keep`, cost 0.17 ms a step at 256 tokens of context and 8
leaves, 0.48 ms at 700: as much as a 1-token forward of zoo:code-target. A commit now costs
0.03-0.11 ms for 4-16 leaves at any context.)

Exactness. The context uses an f32 KV cache and no flash attention (with llama.cpp's defaults,
f16 cache and flash attention, logits differ from transformers' by 2-3e-3 on the zoo model), a
unified KV cache (`kv_unified`, which a tree forward needs: the leaf sequences share the prefix
cells) and room for `max_leaves + 1` sequences. Logits are computed only for the rows asked for:
every row of a forward (verification reads them all), the last one in `forward_last` (prefill and
draft sync). `forward_one(token, position)` is the loops' one-token step with ints in and a numpy
array out.

What it cannot serve is declared missing, so the registry refuses those methods up front: hidden
states (the "hidden_states" capability: SpecDec++'s head), batched rows ("batch": beam search and
the sampling searches), input embeddings ("embeds": superposed).

Generations. `fresh()` gives another llama.cpp context (KV cache and batch) over the same loaded
weights, so generations are independent; `fresh(needs)` without "tree_mask" (decodelab.generate
passes the method's needs) gives a one-sequence, non-unified context without tree room, whose
steps cost less (about 7% of greedy's time on zoo:code-target); contexts of adapters that are gone wait in a small pool
for the next fresh() (making one costs a compute-graph reservation). The longest sequence served is
the model's trained context, capped at DEFAULT_CTX unless `n_ctx` says otherwise. Threads: the `threads` argument, else the environment
variable DECODELAB_NUM_THREADS, else torch's intra-op thread count when the context is made (the
bench's --threads sets it).
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import sys
import threading
import weakref
from pathlib import Path

import numpy as np
import torch

from ..errors import DecodeLabError
from .base import Counter, Step

DEFAULT_CTX = 4096  # the longest sequence served unless n_ctx says otherwise (the f32 KV cache grows with it)
TREE_ROOM = 256  # cache cells beyond max_length for the uncommitted nodes of a tree forward
MAX_LEAVES = 127  # leaves of one tree forward (llama.cpp allows 256 sequences in all)


_ERROR, _CONT = 4, 5  # ggml_log_level: NONE, DEBUG, INFO, WARN, ERROR, CONT
_log = {"callback": None, "error": False}


def _lib():
    try:
        import llama_cpp
    except ModuleNotFoundError:
        raise DecodeLabError('the llama.cpp backend needs llama-cpp-python: pip install "decodelab[llamacpp]" '
                             "(it compiles llama.cpp from source, about 20 minutes on 2 cores)") from None
    if _log["callback"] is None:
        llama_cpp.llama_backend_init()
        _log["callback"] = llama_cpp.llama_log_callback(_errors_only)  # kept: llama.cpp holds the pointer
        llama_cpp.llama_log_set(_log["callback"], ctypes.c_void_p(0))
    return llama_cpp


@functools.cache
def build() -> str:
    """The llama.cpp build this process runs: llama-cpp-python's version and a digest of the shared
    libraries beside the one it loaded (names, sizes, times). A forward's cost depends on the build,
    not only on the weights and the CPU: another version, or the same one compiled with other flags,
    has another cost curve, so a curve cached under one build is not read under another
    (models/costs.py)."""
    import llama_cpp

    # the directory of the library loaded, which LLAMA_CPP_LIB_PATH may move out of the package
    loaded = getattr(getattr(llama_cpp.llama_cpp, "_lib", None), "_name", None)
    lib = Path(loaded).parent if loaded else Path(llama_cpp.__file__).parent / "lib"
    files = sorted(f for f in lib.glob("*") if f.is_file()) if lib.is_dir() else []
    text = "|".join(f"{f.name}:{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in files)
    return f"llama-cpp-python {llama_cpp.__version__} {hashlib.sha256(text.encode()).hexdigest()[:12]}"


def _errors_only(level: int, text: bytes, user_data) -> None:
    """llama.cpp's log, errors only (its loading chatter and warnings would bury our output)."""
    if level != _CONT:
        _log["error"] = level == _ERROR
    if _log["error"]:
        print(text.decode("utf-8", errors="replace"), end="", file=sys.stderr, flush=True)


class _Weights:
    """A loaded GGUF model (weights and vocabulary), shared by every adapter made from it; freed
    when the last one goes."""

    def __init__(self, path: Path):
        lib = _lib()
        params = lib.llama_model_default_params()
        params.n_gpu_layers = 0
        self.ptr = lib.llama_model_load_from_file(str(path).encode(), params)
        if not self.ptr:
            raise DecodeLabError(f"llama.cpp could not load '{path}' (see its message above)")
        self.pool: list[_Context] = []  # idle contexts, reused by fresh() (making one costs a graph reservation)
        # fresh() and adapters' finalizers run in the server's worker threads; re-entrant, since a finalizer
        # (give_back) may run inside context() when a garbage collection happens there
        self._pool_lock = threading.RLock()
        weakref.finalize(self, _free_model, lib, self.ptr, self.pool)
        self.path = path
        self.vocab = lib.llama_model_get_vocab(self.ptr)
        self.n_vocab = lib.llama_vocab_n_tokens(self.vocab)
        self.n_ctx_train = lib.llama_model_n_ctx_train(self.ptr)
        self.costs: dict = {}  # forward cost curves (models/costs.py) of every adapter on these weights
        st = path.stat()
        # the file as loaded and the llama.cpp build that runs it, for on-disk caches (cost curves)
        self.key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{build()}"

    def context(self, cells: int, threads: int, trees: bool) -> "_Context":
        """An idle context of `cells` cells (with tree room or not) from the pool, or a new one (the
        adapter that takes it resets its cache)."""
        lib = _lib()
        with self._pool_lock:  # a context found idle is taken by one thread only
            c = next((c for c in self.pool if c.cells == cells and c.trees == trees), None)
            if c is not None:
                self.pool.remove(c)
        if c is None:
            return _Context(self, cells, threads, trees)
        lib.llama_set_n_threads(c.ptr, threads, threads)
        return c

    def give_back(self, context: "_Context") -> None:
        with self._pool_lock:
            if len(self.pool) < 4:
                self.pool.append(context)
                return
        context.free()

    def meta(self, key: str) -> str | None:
        lib, buf = _lib(), ctypes.create_string_buffer(1 << 16)
        n = lib.llama_model_meta_val_str(self.ptr, key.encode(), buf, len(buf))
        return buf.value.decode("utf-8", errors="replace") if n >= 0 else None


class LlamaCppLM:
    capabilities = frozenset({"tree_mask", "rewind"})
    kv_pad = 256  # a forward attends over the cache's cells in blocks of this many (models/costs.py)

    def __init__(self, path: str | os.PathLike, *, n_ctx: int | None = None, threads: int | None = None,
                 tokenizer="auto", trees: bool = True, _weights: _Weights | None = None):
        """path: a .gguf file. n_ctx: the longest sequence (prompt + new tokens) to serve, at most the
        model's trained context (default: that, up to DEFAULT_CTX). threads: llama.cpp threads (see
        the module doc). trees: room for tree forwards (False: a one-sequence context, chains only)."""
        path = Path(path).expanduser()
        if _weights is None and not path.is_file():
            raise DecodeLabError(f"'{path}' does not exist (no such GGUF file)")
        self.weights = _weights or _Weights(path)
        w = self.weights
        self.vocab_size = w.n_vocab
        train = w.n_ctx_train or DEFAULT_CTX
        if n_ctx is not None and not 0 < n_ctx:
            raise DecodeLabError(f"n_ctx must be a positive integer, got {n_ctx!r}")
        self.max_length = min(train, n_ctx or DEFAULT_CTX)
        self._threads_arg, self.trees = threads, trees
        if tokenizer == "auto":
            from .llamacpp_tokenizer import GGUFTokenizer

            tokenizer = GGUFTokenizer(w) if w.meta("tokenizer.ggml.model") not in (None, "none", "no_vocab") else None
        self.tokenizer = tokenizer
        self._eos = _eos_ids(w)
        self.counter = Counter()
        self.costs = w.costs
        self._open()

    # -- context -------------------------------------------------------------------------------
    def _threads(self) -> int:
        if self._threads_arg:
            return int(self._threads_arg)
        env = os.environ.get("DECODELAB_NUM_THREADS")
        return int(env) if env else torch.get_num_threads()

    def _open(self) -> None:
        """A llama.cpp context of our own (KV cache, logits, batch buffers), returned to the weights'
        pool when this adapter goes."""
        c = self.weights.context(self.max_length + (TREE_ROOM if self.trees else 0), self._threads(), self.trees)
        weakref.finalize(self, self.weights.give_back, c)
        self._c, self.ctx, self._mem, self._lib = c, c.ptr, c.mem, _lib()
        self._tok, self._pos, self._nseq, self._out, self._seq = c.tok, c.pos, c.nseq, c.out, c.seq
        self._batch, self._dirty = c.batch, c.seq.shape[0]  # rows whose sequence ids must be reset to 0, 1, ...
        self.reset()

    def fresh(self, needs: frozenset[str] | None = None) -> "LlamaCppLM":
        """Same weights, own context (KV cache, batch) and counter: an independent generation.
        needs: the capabilities the generation will use; without "tree_mask" it gets a one-sequence
        context, whose 1-token step costs about 5-10% less (None: the same kind as this one)."""
        trees = self.trees if needs is None else "tree_mask" in needs
        return LlamaCppLM(self.weights.path, n_ctx=self.max_length, threads=self._threads_arg,
                          tokenizer=self.tokenizer, trees=trees, _weights=self.weights)

    @property
    def cache_key(self) -> str:
        """What identifies these weights in on-disk caches (models/costs.py)."""
        return self.weights.key

    # -- cache ---------------------------------------------------------------------------------
    def reset(self) -> None:
        # metadata only: emptied cells are masked out of attention, and clearing the data too would
        # memset the whole f32 KV cache (6 MB for zoo:code-target: ~0.2 ms a generation)
        self._lib.llama_memory_clear(self._mem, False)
        self._ids = np.zeros(self.max_length + TREE_ROOM, np.int64)
        self._len = 0  # committed tokens (sequence 0)
        self._base = 0  # cache length before the last forward
        self._tree = None  # the last forward's tree while uncommitted: (parents, leaf sequence per node, leaves)
        self._tags = 0  # T: the committed cells belong to sequences 0..T

    @property
    def cache_len(self) -> int:
        return self._len

    @property
    def cached_ids(self) -> torch.Tensor:
        return torch.from_numpy(self._ids[: self._len].copy())

    def truncate(self, n: int) -> None:
        if self._tree is not None:
            if n > self._base:  # keep the first nodes of the tree: only a chain from its first node
                parents = self._tree[0][: n - self._base]
                if not all(p == i - 1 for i, p in enumerate(parents)):
                    raise DecodeLabError("truncate() may keep tree nodes only along a path; commit(path) instead")
                self.commit(list(range(n - self._base)))
                return
            self._drop_tree()
        if n < self._len:
            self._lib.llama_memory_seq_rm(self._mem, -1, n, -1)
            self._len = n
        self._base = min(self._base, self._len)

    def commit(self, keep) -> None:
        keep = keep.tolist() if torch.is_tensor(keep) else list(keep)
        base, k = self._base, len(keep)
        if self._tree is None:  # a chain in sequence 0: keep a prefix of it
            if keep != list(range(k)):
                raise DecodeLabError(f"commit({keep}) after a chain forward: only a prefix can be kept")
            self.truncate(base + k)
            self._base = self._len
            return
        parents, leaf_seq, leaves = self._tree
        if k and (parents[keep[0]] != -1 or any(parents[b] != a for a, b in zip(keep, keep[1:]))):
            raise DecodeLabError(f"commit({keep}): not a path from a top node of the last tree forward")
        lib, mem = self._lib, self._mem
        if k:
            lib.llama_memory_seq_cp(mem, int(leaf_seq[keep[-1]]), 0, base, base + k)
            self._ids[base:base + k] = self._pending[keep]
        for s in range(1, leaves + 1):  # the tree's cells leave its leaf sequences; the rejected ones are freed
            lib.llama_memory_seq_rm(mem, s, base, -1)
        if k:
            for s in range(1, self._tags + 1):  # the path joins the prefix of every leaf sequence
                lib.llama_memory_seq_cp(mem, 0, s, base, base + k)
        self._tree, self._len, self._base = None, base + k, base + k

    def _drop_tree(self) -> None:
        self._lib.llama_memory_seq_rm(self._mem, -1, self._len, -1)
        self._tree = None

    # -- forward -------------------------------------------------------------------------------
    def forward(self, ids, positions, tree_mask=None, hidden=False) -> Step:
        if hidden:
            raise DecodeLabError("the llama.cpp backend returns no hidden states (no 'hidden_states' capability)")
        return Step(logits=self._decode(ids, positions, tree_mask, last_only=False))

    def forward_last(self, ids, positions) -> Step:
        """A chain forward that computes the logits of its last row only: [1, V]."""
        return Step(logits=self._decode(ids, positions, None, last_only=True))

    def forward_one(self, token: int, position: int) -> np.ndarray:
        """The autoregressive step, forward(tensor([token]), tensor([position])) with ints in and
        a numpy array [1, V] out (a fresh copy): no tensor is built per token (the loops use it
        when an adapter has it; about 5% of greedy's time on zoo:code-target)."""
        if self._tree is not None:
            self._drop_tree()
        base = self._len
        if base + 1 > len(self._ids):
            raise DecodeLabError(f"{base + 1} tokens exceed the llama.cpp context of {len(self._ids)} cells")
        self._tok[0], self._pos[0], self._out[0] = token, position, 1
        self._run(1, position, position, chain=True)
        x = self._logits(1)
        self._base, self._ids[base], self._len = base, token, base + 1
        return x

    def _decode(self, ids, positions, tree_mask, last_only: bool) -> torch.Tensor:
        if ids.ndim != 1:
            raise DecodeLabError("the llama.cpp backend decodes one sequence (no 'batch' capability)")
        n = int(ids.shape[0])
        if n == 1 and tree_mask is None:
            return torch.from_numpy(self.forward_one(int(ids), int(positions)))
        if self._tree is not None:
            self._drop_tree()
        base = self._len
        if n == 0:
            return torch.empty(0, self.vocab_size)
        if base + n > len(self._ids):
            raise DecodeLabError(f"{base + n} tokens exceed the llama.cpp context of {len(self._ids)} cells")
        ids_np = ids.numpy() if ids.dtype == torch.long else ids.long().numpy()
        tree = None if tree_mask is None else _tree_layout(tree_mask.numpy())
        self._tok[:n] = ids_np
        self._pos[:n] = positions.numpy()
        self._out[:n] = 0 if last_only else 1
        self._out[n - 1] = 1
        if tree is not None:
            parents, members, leaf_seq = tree
            if not self.trees:
                raise DecodeLabError("this llama.cpp context has no room for tree forwards (made by "
                                     "fresh(needs) without 'tree_mask')")
            if n > TREE_ROOM or members.shape[1] > MAX_LEAVES:
                raise DecodeLabError(f"a tree forward of {n} nodes and {members.shape[1]} leaves exceeds the llama.cpp "
                                     f"backend's {TREE_ROOM} nodes and {MAX_LEAVES} leaves")
            k = members.shape[1]
            for s in range(self._tags + 1, k + 1):  # leaf sequences that do not hold the committed prefix yet
                self._lib.llama_memory_seq_cp(self._mem, 0, s, -1, -1)
            self._tags = max(self._tags, k)
            counts = members.sum(1)
            seqs = np.where(members, np.arange(1, k + 1, dtype=np.int32), np.int32(1 << 30))
            seqs.sort(axis=1)  # each node's sequence ids first
            self._seq[:n, :k] = seqs
            self._nseq[:n] = counts
            self._dirty = max(self._dirty, n)
        self._run(n, int(positions[0]), int(positions[-1]), chain=tree is None)
        logits = torch.from_numpy(self._logits(1 if last_only else n))
        self._base = base
        if tree is None:
            self._ids[base:base + n] = ids_np
            self._len = base + n
        else:
            self._tree, self._pending = (tree[0], tree[2], k), ids_np.copy()
        return logits

    def _run(self, n: int, first: int, last: int, chain: bool) -> None:
        """llama_decode the batch's first n rows (positions first..last, for the error message).
        A chain's rows belong to sequences 0..T (rows a tree forward gave other ids are reset first)."""
        if chain:
            if self._dirty:
                self._seq[: self._dirty] = self._c.order
                self._dirty = 0
            self._nseq[:n] = self._tags + 1
        self._batch.n_tokens = n
        rc = self._lib.llama_decode(self.ctx, self._batch)
        if rc != 0:
            if not chain:
                self._drop_tree()
            raise DecodeLabError(f"llama_decode failed (code {rc}) on {n} tokens at positions "
                                 f"{first}..{last} (see llama.cpp's message above)")
        self.counter.count(n)

    def _logits(self, rows: int) -> np.ndarray:
        """The last forward's logits [rows, V]: one copy out of llama.cpp's buffer."""
        x = np.empty((rows, self.vocab_size), np.float32)
        ctypes.memmove(x.ctypes.data, self._lib.llama_get_logits(self.ctx), x.nbytes)
        return x

    # -- metadata ------------------------------------------------------------------------------
    @property
    def eos_token_ids(self) -> list[int]:
        return list(self._eos)

    def perf(self) -> dict:
        """llama.cpp's own timer for this context: {'eval_ms', 'evals', 'prompt_ms', 'prompt_evals'}."""
        d = self._lib.llama_perf_context(self.ctx)
        return {"eval_ms": d.t_eval_ms, "evals": d.n_eval, "prompt_ms": d.t_p_eval_ms, "prompt_evals": d.n_p_eval}

    def perf_reset(self) -> None:
        self._lib.llama_perf_context_reset(self.ctx)


class _Context:
    """A llama.cpp context and the batch it decodes: preallocated arrays; tree rows (< TREE_ROOM)
    have room for every leaf's sequence id, the rest share one row; a chain row holds 0, 1, 2, ...
    and uses the first T + 1 (the adapter's `_tags`)."""

    def __init__(self, weights: _Weights, cells: int, threads: int, trees: bool = True):
        lib = _lib()
        p = lib.llama_context_default_params()
        p.n_ctx = p.n_batch = cells
        p.n_ubatch = min(cells, 512)
        p.n_seq_max = MAX_LEAVES + 1 if trees else 1
        p.n_threads = p.n_threads_batch = threads
        p.type_k = p.type_v = lib.GGML_TYPE_F32
        p.flash_attn_type = lib.LLAMA_FLASH_ATTN_TYPE_DISABLED
        p.kv_unified = trees
        p.embeddings = False
        p.no_perf = False
        self.ptr = lib.llama_init_from_model(weights.ptr, p)
        if not self.ptr:
            raise DecodeLabError(f"llama.cpp could not create a context of {cells} tokens for '{weights.path}'")
        self.cells, self.trees, self.mem = cells, trees, lib.llama_get_memory(self.ptr)
        self.free = weakref.finalize(self, lib.llama_free, self.ptr)
        s = MAX_LEAVES + 1
        self.tok = np.zeros(cells, np.int32)
        self.pos = np.zeros(cells, np.int32)
        self.nseq = np.ones(cells, np.int32)
        self.out = np.zeros(cells, np.int8)
        self.order = np.arange(s, dtype=np.int32)  # a chain row's sequence ids: 0..T of these
        self.seq = np.tile(self.order, (TREE_ROOM + 1, 1))  # the last row: for every chain row past TREE_ROOM
        rows = np.minimum(np.arange(cells), TREE_ROOM)
        self.seq_ptrs = (self.seq.ctypes.data + rows * s * 4).astype(np.uint64)
        b = lib.llama_batch()
        b.token = self.tok.ctypes.data_as(ctypes.POINTER(lib.llama_token))
        b.embd = None
        b.pos = self.pos.ctypes.data_as(ctypes.POINTER(lib.llama_pos))
        b.n_seq_id = self.nseq.ctypes.data_as(ctypes.POINTER(ctypes.c_int32))
        b.seq_id = ctypes.cast(self.seq_ptrs.ctypes.data, ctypes.POINTER(ctypes.POINTER(lib.llama_seq_id)))
        b.logits = self.out.ctypes.data_as(ctypes.POINTER(ctypes.c_int8))
        self.batch = b


def _free_model(lib, ptr, pool: list) -> None:
    for c in pool:  # contexts before the model they run
        c.free()
    pool.clear()
    lib.llama_model_free(ptr)


def _tree_layout(mask: np.ndarray):
    """From a tree mask [N, N] (mask[i, j]: j is i or an ancestor of i among the forwarded nodes):
    parents [N] (-1 for a top node), or None when the nodes form one chain; members [N, K] (node i
    lies on the path of leaf k) and a leaf sequence per node [N] (1 + a leaf below it)."""
    n = mask.shape[0]
    depth = mask.sum(1) - 1
    if (depth == np.arange(n)).all() and mask[np.tril_indices(n)].all():
        return None  # a chain: decoded in sequence 0
    anc = mask & ~np.eye(n, dtype=bool)
    parents = np.where(anc.any(1), np.argmax(np.where(anc, depth[None, :], -1), axis=1), -1)
    leaves = np.flatnonzero(~anc.any(0))  # nodes nobody descends from
    members = mask[leaves].T  # [N, K]
    leaf_seq = 1 + np.argmax(members, axis=1)  # the first leaf below each node
    return parents, members, leaf_seq


def _eos_ids(w: _Weights) -> list[int]:
    """decodelab's converter records every end-of-sequence id; other GGUFs: llama.cpp's eos and eot."""
    text = w.meta("decodelab.eos_token_ids")
    lib = _lib()
    if text is not None:  # llama.cpp renders an array as "[0, 2]"
        try:
            return [int(t) for t in text.strip("[]").replace(",", " ").split()]
        except ValueError:
            pass
    ids = {lib.llama_vocab_eos(w.vocab), lib.llama_vocab_eot(w.vocab)}
    return sorted(i for i in ids if 0 <= i < w.n_vocab)
