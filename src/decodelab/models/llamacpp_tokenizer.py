"""The tokenizer of a GGUF file, through llama.cpp's own tokenizer, with the part of the
transformers tokenizer interface decodelab uses: calling it on text, encode, decode, batch_decode,
get_vocab, len and the special token ids.

Encoding parses special tokens in the text (as transformers' fast tokenizers match added tokens)
and adds the BOS token when the GGUF says the model wants it (tokenizer.ggml.add_bos_token) and
the caller asks for special tokens. Decoding joins the tokens' bytes (special tokens rendered as
their text, as transformers does without skip_special_tokens) and decodes UTF-8 with replacement
characters for incomplete sequences, as a byte-level BPE decoder does. get_vocab() maps each
token's stored text (for byte-level BPE the same strings as tokenizer.json) to its id, so a GGUF
target and a transformers draft of one tokenizer compare equal. There is no chat template support
yet (chat_template is None): chat prompts need the torch backend.
"""
from __future__ import annotations

import ctypes

from ..errors import DecodeLabError


class GGUFTokenizer:
    chat_template = None
    mask_token_id = None
    mask_token = None

    def __init__(self, weights):
        from .llamacpp import _lib

        lib = _lib()
        self._lib, self._weights, self._vocab = lib, weights, weights.vocab
        n = weights.n_vocab
        self._n = n
        buf = ctypes.create_string_buffer(256)
        pieces = []
        for i in range(n):
            k = lib.llama_token_to_piece(self._vocab, i, buf, len(buf), 0, True)
            if k < 0:  # a longer piece than the buffer
                big = ctypes.create_string_buffer(-k)
                k = lib.llama_token_to_piece(self._vocab, i, big, len(big), 0, True)
                pieces.append(big.raw[:k])
            else:
                pieces.append(buf.raw[:k])
        self._pieces = pieces
        self._adds_bos = bool(lib.llama_vocab_get_add_bos(self._vocab))
        self.bos_token_id = self._special(lib.llama_vocab_bos(self._vocab))
        self.eos_token_id = self._special(lib.llama_vocab_eos(self._vocab))
        self.pad_token_id = self._special(lib.llama_vocab_pad(self._vocab))
        self.name_or_path = str(weights.path)
        self._vocab_map = None

    def _special(self, i: int) -> int | None:
        return i if 0 <= i < self._n else None

    def _text(self, i: int) -> str:
        return self._lib.llama_vocab_get_text(self._vocab, i).decode("utf-8", errors="replace")

    @property
    def bos_token(self) -> str | None:
        return None if self.bos_token_id is None else self._text(self.bos_token_id)

    @property
    def eos_token(self) -> str | None:
        return None if self.eos_token_id is None else self._text(self.eos_token_id)

    @property
    def pad_token(self) -> str | None:
        return None if self.pad_token_id is None else self._text(self.pad_token_id)

    def __len__(self) -> int:
        return self._n

    # -- encode --------------------------------------------------------------------------------
    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        if not isinstance(text, str):
            raise DecodeLabError(f"the tokenizer encodes text, got {type(text).__name__}")
        data = text.encode("utf-8")
        cap = len(data) + 8
        while True:
            out = (self._lib.llama_token * cap)()
            n = self._lib.llama_tokenize(self._vocab, data, len(data), out, cap, add_special_tokens, True)
            if n >= 0:
                return list(out[:n])
            cap = -n

    def __call__(self, text, add_special_tokens: bool = True, **_):
        if isinstance(text, (list, tuple)):
            return {"input_ids": [self.encode(t, add_special_tokens) for t in text]}
        return {"input_ids": self.encode(text, add_special_tokens)}

    # -- decode --------------------------------------------------------------------------------
    def decode(self, ids, skip_special_tokens: bool = False, **_) -> str:
        ids = ids.tolist() if hasattr(ids, "tolist") else ids
        if isinstance(ids, int):
            ids = [ids]
        skip = {self.bos_token_id, self.eos_token_id, self.pad_token_id} if skip_special_tokens else set()
        data = b"".join(self._pieces[i] for i in ids if i not in skip)
        return data.decode("utf-8", errors="replace")

    def batch_decode(self, rows, skip_special_tokens: bool = False, **_) -> list[str]:
        return [self.decode(r, skip_special_tokens) for r in rows]

    def convert_ids_to_tokens(self, ids):
        if isinstance(ids, int):
            return self._text(ids)
        return [self._text(i) for i in ids]

    def get_vocab(self) -> dict[str, int]:
        if self._vocab_map is None:
            self._vocab_map = {self._text(i): i for i in range(self._n)}
        return dict(self._vocab_map)
