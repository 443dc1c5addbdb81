"""Checkpoint conversion for other engines: `decodelab convert --to gguf MODEL OUT` (llama.cpp).

`to_gguf.convert_to_gguf` writes a GGUF file; `cached_gguf` converts a model once to float32 GGUF
under $DECODELAB_CACHE (default ~/.cache/decodelab)/gguf/, for `load(..., backend="llamacpp")`.
The `gguf` package comes with the llamacpp extra: pip install "decodelab[llamacpp]".
"""
from __future__ import annotations

import hashlib
import os
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


def cache_dir() -> Path:
    return Path(os.environ.get("DECODELAB_CACHE", Path.home() / ".cache" / "decodelab")) / "gguf"


def cached_gguf(src: str, *, quiet: bool = False) -> Path:
    """An f32 GGUF of the model at `src` (a directory or zoo:NAME), converted on first use and
    cached, keyed by the checkpoint's files (names, sizes, modification times)."""
    from .to_gguf import _source_dir

    src_dir = _source_dir(src).resolve()
    h = hashlib.sha256(f"{_VERSION}|{src_dir}".encode())
    for f in sorted(src_dir.iterdir()):
        if f.is_file() and (f.suffix in (".json", ".safetensors", ".model", ".txt")):
            st = f.stat()
            h.update(f"|{f.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    out = cache_dir() / f"{src_dir.name}-{h.hexdigest()[:12]}-f32.gguf"
    if out.is_file():
        return out
    if not quiet:
        print(f"decodelab: converting {src} to GGUF (f32) for llama.cpp, once: {out}", file=sys.stderr)
    return convert(str(src_dir), str(out), dtype="f32", force=True)
