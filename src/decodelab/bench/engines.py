"""CPU engines as bench rows, on the same prompt ids and the same weights as ours.

- `llamacpp:greedy`: llama-cpp-python's `Llama.generate` with temperature 0 (llama.cpp's greedy
  sampler), on the f32 GGUF of the unit's model (converted once, cached) with the context settings
  of decodelab's llama.cpp backend (f32 KV cache, flash attention off), so a speed ratio between
  the two is a ratio between drivers of the same llama.cpp forward.
- `llamacpp:prompt-lookup`: the same with llama-cpp-python's `LlamaPromptLookupDecoding` draft
  model (`num_pred_tokens` 10 and `max_ngram_size` 2, its defaults).
- `ct2:greedy`: CTranslate2's `Generator.generate_batch` with `sampling_topk=1` on a float32
  conversion of the model (CTranslate2's own TransformersConverter, cached); `compute_type`
  quantizes at load time: int8, int8_float32, int16 and bfloat16 are lossy and the row says so.

Each generation starts cold (no KV cache reuse between prompts), as ours do. With ignore_eos the
engines run to max_new_tokens as every row does; otherwise they stop after an end-of-sequence
token, which is kept in the output, as ours keep it. Counts: llama.cpp's forwards and tokens from
its `eval` calls (a subclass of `Llama` that counts them); CTranslate2 reports none (one forward
per token is booked, which is what greedy does).
"""
from __future__ import annotations

import torch

from ..errors import DecodeLabError
from .rows import Row, peer_kwargs

class Engines:
    """The engine objects of one bench unit, made on first use and kept for its rows."""

    def __init__(self, model: str, target, threads: int | None):
        self.model, self.target = model, target
        self.threads = threads or torch.get_num_threads()
        self._made: dict[tuple, object] = {}

    def llama(self, row: Row):
        kw = peer_kwargs(row)
        key = ("llamacpp", kw.get("num_pred_tokens"), kw.get("max_ngram_size"))
        if key not in self._made:
            self._made[key] = _counting_llama(self._gguf(), self.target.max_length or 4096, self.threads,
                                              kw if row.method == "llamacpp:prompt-lookup" else None)
        return self._made[key]

    def ct2(self, row: Row):
        compute_type = peer_kwargs(row)["compute_type"]
        key = ("ct2", compute_type)
        if key not in self._made:
            from ..convert import cached_ct2

            path = cached_ct2(self._source())  # a clear message when ctranslate2 is missing
            import ctranslate2

            self._made[key] = ctranslate2.Generator(str(path), device="cpu", compute_type=compute_type,
                                                    intra_threads=self.threads)
        return self._made[key]

    def _source(self) -> str:
        weights = getattr(self.target, "weights", None)
        if weights is not None:  # the unit's target runs on llama.cpp already
            raise DecodeLabError(f"ct2 rows need a transformers model, not the GGUF '{weights.path}'")
        return self.model

    def _gguf(self) -> str:
        weights = getattr(self.target, "weights", None)
        if weights is not None:
            return str(weights.path)
        from ..convert import cached_gguf, need_gguf

        need_gguf()
        return str(cached_gguf(self.model))


def generate(row: Row, engines: Engines, ids: list[int], max_new_tokens: int, ignore_eos: bool):
    """Run an engine row on one prompt: (generated ids, counts as in DecodeStats)."""
    stops = set() if ignore_eos else set(engines.target.eos_token_ids)
    if row.method.startswith("llamacpp:"):
        llm = engines.llama(row)
        llm.reset()
        llm.forwards = llm.tokens = 0
        tokens = []
        for t in llm.generate(ids, top_k=1, temp=0.0, repeat_penalty=1.0, reset=True):
            tokens.append(int(t))
            if len(tokens) >= max_new_tokens or int(t) in stops:
                break
        # booked as ours and the transformers peers book it: prompt[:-1] is the prefill, the
        # prompt's last token the first decode token
        forwards, scored = llm.forwards, llm.tokens - (len(ids) - 1)
    else:
        gen = engines.ct2(row)
        toks = engines.target.tokenizer.convert_ids_to_tokens(ids)
        res = gen.generate_batch([toks], max_length=max_new_tokens, sampling_topk=1, include_prompt_in_result=False,
                                 end_token=[] if ignore_eos else sorted(stops), return_end_token=True)
        tokens = list(res[0].sequences_ids[0])
        forwards = scored = len(tokens)
    stats = {"new_tokens": len(tokens), "prompt_tokens": len(ids), "target_forwards": forwards,
             "target_tokens_scored": scored, "draft_forwards": 0, "draft_tokens_scored": 0,
             "committed_total": len(tokens), "committed_steps": forwards}
    return tokens, stats


def _counting_llama(path: str, n_ctx: int, threads: int, lookup: dict | None):
    """A llama_cpp.Llama that counts its eval calls and the tokens they forward."""
    try:
        import llama_cpp
    except ModuleNotFoundError:
        raise DecodeLabError('llamacpp rows need llama-cpp-python: pip install "decodelab[llamacpp]"') from None

    class CountingLlama(llama_cpp.Llama):
        forwards = tokens = 0

        def eval(self, tokens):
            self.forwards += 1
            self.tokens += len(tokens)
            return super().eval(tokens)

    draft = None
    if lookup is not None:
        from llama_cpp.llama_speculative import LlamaPromptLookupDecoding

        draft = LlamaPromptLookupDecoding(num_pred_tokens=lookup["num_pred_tokens"],
                                          max_ngram_size=lookup["max_ngram_size"])
    return CountingLlama(path, n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads,
                         type_k=llama_cpp.GGML_TYPE_F32, type_v=llama_cpp.GGML_TYPE_F32,
                         flash_attn=False, draft_model=draft, verbose=False)
