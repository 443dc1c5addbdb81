"""Fixtures of the llama.cpp backend tests: zoo and tiny models converted to f32 GGUF once per
session, next to the torch adapters of the same weights. Each test module skips itself when
llama-cpp-python (the llamacpp extra) is not installed."""
from __future__ import annotations

import pytest

import decodelab


@pytest.fixture(scope="session")
def gguf_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("gguf")


def _convert(src: str, out) -> str:
    from decodelab.convert import convert

    if not out.exists():
        convert(src, str(out), dtype="f32")
    return str(out)


@pytest.fixture(scope="session")
def zoo_gguf(gguf_dir) -> dict[str, str]:
    """zoo name -> its f32 GGUF path (code-target and code-draft)."""
    return {name: _convert(f"zoo:{name}", gguf_dir / f"{name}.gguf") for name in ("code-target", "code-draft")}


@pytest.fixture(scope="session")
def zoo_models(zoo_gguf):
    """(torch code-target, llama.cpp code-target, llama.cpp code-draft), one load per session."""
    from decodelab.models.llamacpp import LlamaCppLM

    return (decodelab.load("zoo:code-target"), LlamaCppLM(zoo_gguf["code-target"]),
            LlamaCppLM(zoo_gguf["code-draft"]))


@pytest.fixture(scope="session")
def tiny_gguf(tiny_dirs, gguf_dir) -> dict[str, tuple[str, str]]:
    """arch -> (torch target dir, its f32 GGUF) for the tiny random llama and qwen2 (no tokenizer)."""
    return {arch: (tiny_dirs[arch][0], _convert(tiny_dirs[arch][0], gguf_dir / f"tiny-{arch}.gguf"))
            for arch in ("llama", "qwen2")}
