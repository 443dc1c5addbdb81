"""Hugging Face checkpoint -> GGUF for llama.cpp, written with the `gguf` package (GGUFWriter) in
llama.cpp's own tensor names and metadata keys.

Architectures: LlamaForCausalLM and MistralForCausalLM (llama.cpp's `llama`), Qwen2ForCausalLM
(`qwen2`), with plain RoPE (no scaling) and no sliding window that could bite (llama.cpp's llama
and qwen2 graphs attend to the whole context; a window smaller than the context is refused rather
than silently widened). Anything else is refused with one message.

Weights. llama.cpp's `llama` graph applies RoPE to adjacent pairs (x[2i], x[2i+1]) where
transformers' Llama rotates halves (x[i], x[i + d/2]), so the rows of q_proj and k_proj (and their
biases) are re-ordered per head: index h * d/2 + i -> 2i + h. Qwen2 runs NeoX-style RoPE (halves)
in llama.cpp too, so its rows are kept. Tied embeddings write no output.weight (llama.cpp falls
back to token_embd). dtype f32 is exact; f16 keeps 1-D tensors (norms, biases) in f32 as llama.cpp
does; q8_0 (2-D tensors whose rows are multiples of 32) is lossy.

Tokenizer. A byte-level BPE from tokenizer.json: tokens in id order (padded with unused tokens up
to the embedding rows), types (special added tokens are control tokens), merges, and llama.cpp's
name for the pre-tokenizer, recognised from its structure: Digits(individual) + ByteLevel (the
zoo tokenizer) is llama.cpp's `starcoder` (\\p{N} first, then GPT-2's regex), ByteLevel alone is
`gpt-2`, and the Split regexes of Qwen2 and Llama 3 are `qwen2` and `llama-bpe`. Other tokenizers
are refused (a model without tokenizer files gets llama.cpp's `none` vocabulary: ids only).
`decodelab.eos_token_ids` keeps every end-of-sequence id of the generation config.

Output is written to a temporary file next to OUT and renamed when complete.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np

from ..errors import DecodeLabError

DTYPES = {"f32": "exact", "f16": "rounds weights to float16", "q8_0": "lossy: 8-bit blocks (llama.cpp Q8_0)"}
ARCHS = {"LlamaForCausalLM": "llama", "MistralForCausalLM": "llama", "Qwen2ForCausalLM": "qwen2"}
EOS_KEY = "decodelab.eos_token_ids"

# Split regexes of tokenizers whose llama.cpp pre-tokenizer name is known (tokenizer.json's
# Split pattern -> tokenizer.ggml.pre)
_QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
                r"|\s+(?!\S)|\s+")
_LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+")
_SPLITS = {_QWEN2_SPLIT: "qwen2", _LLAMA3_SPLIT: "llama-bpe"}


def convert_to_gguf(src: str | os.PathLike, out: str | os.PathLike, *, dtype: str = "f32",
                    force: bool = False) -> Path:
    """Write the checkpoint at `src` (a model directory or zoo:NAME) to `out` as GGUF. Refuses an
    existing `out` unless force. Returns the path written."""
    import gguf

    src_dir, out = _source_dir(src), Path(out)
    if dtype not in DTYPES:
        raise DecodeLabError(f"unknown GGUF dtype {dtype!r}; choose one of {', '.join(DTYPES)} "
                             f"(f32 exact, f16 rounded, q8_0 lossy)")
    if out.exists() and not force:
        raise DecodeLabError(f"{out} already exists; pass --force to overwrite it")
    if out.exists() and out.is_dir():
        raise DecodeLabError(f"{out} is a directory; give a file name such as model.gguf")
    config = _config(src_dir)
    arch = _arch(config)
    weights = _read_weights(src_dir)
    tok = _tokenizer(src_dir, config, weights["model.embed_tokens.weight"].shape[0])

    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent)
    os.close(fd)
    try:
        writer = gguf.GGUFWriter(tmp, arch)
        _write_hparams(writer, config, src_dir, dtype)
        _write_tokenizer(writer, tok)
        for name, data, raw in _tensors(weights, config, arch, dtype):
            writer.add_tensor(name, data, raw_dtype=raw)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


# -- source --------------------------------------------------------------------------------------
def _source_dir(src) -> Path:
    text = str(src)
    if text.startswith("zoo:"):
        from .. import zoo

        return zoo.resolve(text[4:])
    path = Path(text).expanduser()
    if not path.is_dir() or not (path / "config.json").is_file():
        raise DecodeLabError(f"'{text}' is not a model directory (no config.json); give a directory or zoo:NAME")
    return path


def _config(src_dir: Path):
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(str(src_dir))
    except Exception as e:  # noqa: BLE001  (any parse error means "not a model")
        raise DecodeLabError(f"could not read {src_dir / 'config.json'}: {str(e).splitlines()[0]}") from None


def _arch(config) -> str:
    names = list(getattr(config, "architectures", None) or [])
    arch = next((ARCHS[n] for n in names if n in ARCHS), None)
    if arch is None:
        raise DecodeLabError(f"GGUF conversion supports {', '.join(ARCHS)}; this model is "
                             f"{', '.join(names) or config.model_type}")
    rope = dict(getattr(config, "rope_parameters", None) or {})
    kind = rope.get("rope_type", "default")
    if kind != "default":
        raise DecodeLabError(f"GGUF conversion supports plain RoPE only; this model uses rope_type '{kind}'")
    window = getattr(config, "sliding_window", None)
    if config.model_type == "qwen2" and not getattr(config, "use_sliding_window", False):
        window = None
    if window is not None and window < config.max_position_embeddings:
        raise DecodeLabError(f"this model attends within a sliding window of {window} tokens, which llama.cpp's "
                             f"{arch} graph does not apply; it would decode differently there")
    if getattr(config, "mlp_bias", False):
        raise DecodeLabError("GGUF conversion does not support MLP biases (mlp_bias=true)")
    return arch


def _read_weights(src_dir: Path) -> dict[str, "np.ndarray"]:
    """name -> float32 array, from model.safetensors or its shards."""
    from safetensors import safe_open

    index = src_dir / "model.safetensors.index.json"
    if index.is_file():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    elif (src_dir / "model.safetensors").is_file():
        files = ["model.safetensors"]
    else:
        raise DecodeLabError(f"no safetensors weights in {src_dir}")
    out = {}
    for f in files:
        with safe_open(str(src_dir / f), framework="pt") as st:
            for k in st.keys():
                out[k] = st.get_tensor(k).float().numpy()
    if "model.embed_tokens.weight" not in out:
        raise DecodeLabError(f"{src_dir}: no model.embed_tokens.weight; not a Llama-family checkpoint")
    return out


# -- hyper-parameters ----------------------------------------------------------------------------
def _write_hparams(writer, config, src_dir: Path, dtype: str) -> None:
    import gguf

    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    writer.add_name(src_dir.name)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(heads)
    writer.add_head_count_kv(getattr(config, "num_key_value_heads", None) or heads)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(float(dict(config.rope_parameters).get("rope_theta", 10000.0)))
    writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
    writer.add_vocab_size(config.vocab_size)
    ftype = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
             "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[dtype]
    writer.add_file_type(int(ftype))


# -- tensors -------------------------------------------------------------------------------------
def _tensors(weights: dict, config, arch: str, dtype: str):
    """(gguf name, array, raw quantisation type or None) for every tensor, in checkpoint order."""
    import gguf

    model_arch = {"llama": gguf.MODEL_ARCH.LLAMA, "qwen2": gguf.MODEL_ARCH.QWEN2}[arch]
    names = gguf.get_tensor_name_map(model_arch, config.num_hidden_layers)
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    tied = getattr(config, "tie_word_embeddings", False)
    for key, data in weights.items():
        if key.endswith("rotary_emb.inv_freq") or (tied and key == "lm_head.weight"):
            continue
        name = names.get_name(key, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise DecodeLabError(f"no llama.cpp tensor for '{key}' in a {arch} model; cannot convert it")
        if arch == "llama" and (".q_proj." in key or ".k_proj." in key):
            data = _pairs_from_halves(data, heads if ".q_proj." in key else kv_heads)
        yield (name, *_cast(data, dtype))


def _pairs_from_halves(w: np.ndarray, n_head: int) -> np.ndarray:
    """Per head, rows (h, i) of the rotate-half layout to row 2i + h of the adjacent-pairs one.
    w: [n_head * d, ...] (a weight matrix or a bias)."""
    d = w.shape[0] // n_head
    return w.reshape(n_head, 2, d // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _cast(data: np.ndarray, dtype: str):
    import gguf

    data = np.ascontiguousarray(data, dtype=np.float32)
    if dtype == "f32" or data.ndim == 1:
        return data, None
    if dtype == "q8_0" and data.shape[-1] % 32 == 0:
        return gguf.quants.quantize(data, gguf.GGMLQuantizationType.Q8_0), gguf.GGMLQuantizationType.Q8_0
    return data.astype(np.float16), None


# -- tokenizer -----------------------------------------------------------------------------------
def _tokenizer(src_dir: Path, config, n_rows: int) -> dict | None:
    """The tokenizer's GGUF fields, or None for a model without tokenizer files (ids only)."""
    from transformers import AutoTokenizer

    if not any((src_dir / f).is_file() for f in ("tokenizer.json", "vocab.json", "tokenizer.model")):
        return {"model": "none", "eos": _eos_ids(src_dir, config, None)}
    try:
        hf = AutoTokenizer.from_pretrained(str(src_dir))
        spec = json.loads(hf.backend_tokenizer.to_str())
    except Exception as e:  # noqa: BLE001
        raise DecodeLabError(f"could not read the tokenizer in {src_dir}: {str(e).splitlines()[0]}") from None
    model = spec.get("model") or {}
    if model.get("type") != "BPE" or spec.get("normalizer") is not None or model.get("byte_fallback"):
        raise DecodeLabError("GGUF conversion supports byte-level BPE tokenizers without a normalizer; this one is "
                             f"{model.get('type')} (the model can still run on the torch backend)")
    pre = _pre_tokenizer(spec.get("pre_tokenizer"))
    vocab = dict(model["vocab"])
    added = {t["id"]: t for t in spec.get("added_tokens", [])}
    for i, t in added.items():
        vocab[t["content"]] = i
    by_id = {i: s for s, i in vocab.items()}
    size = max(n_rows, max(by_id) + 1)
    tokens, types = [], []
    for i in range(size):
        if i not in by_id:
            tokens.append(f"[PAD{i}]")
            types.append(5)  # unused
        else:
            tokens.append(by_id[i])
            types.append((3 if added[i].get("special") else 4) if i in added else 1)  # control, user-defined, normal
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    adds_bos = hf.bos_token_id is not None and hf("a")["input_ids"][:1] == [hf.bos_token_id]
    bos = hf.bos_token_id if hf.bos_token_id is not None else getattr(config, "bos_token_id", None)
    return {"model": "gpt2", "pre": pre, "tokens": tokens, "types": types, "merges": merges, "bos": bos,
            "eos": _eos_ids(src_dir, config, hf), "pad": hf.pad_token_id, "adds_bos": adds_bos,
            "chat_template": hf.chat_template if isinstance(hf.chat_template, str) else None}


def _pre_tokenizer(pre: dict | None) -> str:
    def byte_level(p, regex: bool) -> bool:
        return p.get("type") == "ByteLevel" and not p.get("add_prefix_space") and p.get("use_regex", True) == regex

    parts = (pre or {}).get("pretokenizers", [pre]) if (pre or {}).get("type") == "Sequence" else [pre]
    if len(parts) == 1 and parts[0] and byte_level(parts[0], True):
        return "gpt-2"
    if len(parts) == 2 and parts[0] and parts[1]:
        first, second = parts
        if first.get("type") == "Digits" and first.get("individual_digits") and byte_level(second, True):
            return "starcoder"  # \p{N} split first, then GPT-2's regex
        pattern = (first.get("pattern") or {}).get("Regex")
        if first.get("type") == "Split" and pattern in _SPLITS and byte_level(second, False):
            return _SPLITS[pattern]
    raise DecodeLabError(f"the tokenizer's pre-tokenizer {json.dumps(pre)[:200]} has no known llama.cpp "
                         "equivalent; GGUF conversion would tokenize differently")


def _eos_ids(src_dir: Path, config, hf) -> list[int]:
    """Every end-of-sequence id the torch backend stops at (generation config first, as HFCausalLM)."""
    ids = None
    gen = src_dir / "generation_config.json"
    if gen.is_file():
        ids = json.loads(gen.read_text()).get("eos_token_id")
    if ids is None:
        ids = getattr(config, "eos_token_id", None)
    if ids is None and hf is not None:
        ids = hf.eos_token_id
    if ids is None:
        return []
    return [int(i) for i in (ids if isinstance(ids, (list, tuple)) else [ids])]


def _write_tokenizer(writer, tok: dict) -> None:
    writer.add_tokenizer_model(tok["model"])
    if tok["eos"]:
        writer.add_array(EOS_KEY, tok["eos"])
    if tok["model"] == "none":
        return
    writer.add_tokenizer_pre(tok["pre"])
    writer.add_token_list(tok["tokens"])
    writer.add_token_types(tok["types"])
    writer.add_token_merges(tok["merges"])
    if tok["bos"] is not None:
        writer.add_bos_token_id(tok["bos"])
    if tok["eos"]:
        writer.add_eos_token_id(tok["eos"][0])
    if tok["pad"] is not None:
        writer.add_pad_token_id(tok["pad"])
    writer.add_add_bos_token(tok["adds_bos"])
    writer.add_add_eos_token(False)
    if tok["chat_template"]:
        writer.add_chat_template(tok["chat_template"])
