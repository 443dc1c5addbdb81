"""Checkpoint conversion for other engines: `decodelab convert --to gguf MODEL OUT` (llama.cpp).

`to_gguf.convert_to_gguf` writes a GGUF file; `cached_gguf` converts a model once to float32 GGUF
under $DECODELAB_CACHE (default ~/.cache/decodelab)/gguf/, for `load(..., backend="llamacpp")`;
`cached_ct2` converts one to a float32 CTranslate2 model under .../ct2/ for the bench's ct2 rows.
The `gguf` package comes with the llamacpp extra: pip install "decodelab[llamacpp]".
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

from ..errors import DecodeLabError

FORMATS = ("gguf",)
_VERSION = 1  # bump when the converter's output changes, so cached files are rebuilt


def need_gguf() -> None:
    try:
        import gguf  # noqa: F401
    except ModuleNotFoundError:
        raise DecodeLabError('GGUF conversion needs the gguf package: pip install "decodelab[llamacpp]"') from None


def convert(src: str, out: str, *, to: str = "gguf", dtype: str = "f32", force: bool = False) -> Path:
    if to not in FORMATS:
        raise DecodeLabError(f"unknown target format {to!r}; known: {', '.join(FORMATS)}")
    need_gguf()
    from .to_gguf import convert_to_gguf

    return convert_to_gguf(src, out, dtype=dtype, force=force)


def cache_dir(kind: str = "gguf") -> Path:
    return Path(os.environ.get("DECODELAB_CACHE", Path.home() / ".cache" / "decodelab")) / kind


def _source_key(src: str) -> tuple[Path, str]:
    """The checkpoint directory of `src` (a directory or zoo:NAME) and a key of its files (names,
    sizes, modification times), so that a retrained checkpoint is converted again."""
    from .to_gguf import _source_dir

    src_dir = _source_dir(src).resolve()
    h = hashlib.sha256(f"{_VERSION}|{src_dir}".encode())
    for f in sorted(src_dir.iterdir()):
        if f.is_file() and (f.suffix in (".json", ".safetensors", ".model", ".txt")):
            st = f.stat()
            h.update(f"|{f.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return src_dir, h.hexdigest()[:12]


def cached_gguf(src: str, *, quiet: bool = False) -> Path:
    """An f32 GGUF of the model at `src` (a directory or zoo:NAME), converted on first use and
    cached, keyed by the checkpoint's files."""
    src_dir, key = _source_key(src)
    out = cache_dir() / f"{src_dir.name}-{key}-f32.gguf"
    if out.is_file():
        return out
    if not quiet:
        print(f"decodelab: converting {src} to GGUF (f32) for llama.cpp, once: {out}", file=sys.stderr)
    return convert(str(src_dir), str(out), dtype="f32", force=True)


def cached_ct2(src: str, *, quiet: bool = False) -> Path:
    """A float32 CTranslate2 model directory of the transformers model at `src`, converted on first
    use with CTranslate2's own TransformersConverter and cached like cached_gguf. CTranslate2
    quantizes at load time (Generator(compute_type=...)), so one float32 copy serves every type."""
    try:
        import ctranslate2
    except ModuleNotFoundError:
        raise DecodeLabError('CTranslate2 rows need the ctranslate2 package: pip install "decodelab[ct2]"') from None
    src_dir, key = _source_key(src)
    out = cache_dir("ct2") / f"{src_dir.name}-{key}"
    if (out / "model.bin").is_file():
        return out
    if not quiet:
        print(f"decodelab: converting {src} to CTranslate2 (float32), once: {out}", file=sys.stderr)
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    try:
        ctranslate2.converters.TransformersConverter(str(src_dir)).convert(str(tmp), force=True)
    except Exception as e:  # noqa: BLE001  (the converter raises many kinds for an unsupported model)
        shutil.rmtree(tmp, ignore_errors=True)
        raise DecodeLabError(f"CTranslate2 could not convert '{src}': {e}") from None
    cfg_path = tmp / "config.json"
    cfg = json.loads(cfg_path.read_text())
    if cfg.get("bos_token") is None:  # CTranslate2 refuses a null BOS; prompts come as ids here, BOS unused
        cfg["bos_token"] = cfg.get("eos_token") or cfg.get("unk_token")
        cfg_path.write_text(json.dumps(cfg, indent=2))
    os.replace(tmp, out)  # whole or not at all
    return out
