"""Token ids to streamed text, with OpenAI's stop-string rule.

decodelab ends a generation at the token that completes a stop string (that token is emitted);
OpenAI's API returns the text *before* the stop string. So the text of a response is cut at the
first stop string, and while streaming, a tail of the text that could still grow into a stop
string is held back until the next step shows whether it does (as vLLM does). A tail ending in
U+FFFD (a character whose bytes are split across tokens) is held back too.
"""
from __future__ import annotations


class TextStream:
    def __init__(self, tokenizer, stops: list[str] | None = None):
        self.tok = tokenizer
        self.stops = list(stops or [])
        self.ids: list[int] = []
        self.sent = ""  # text already streamed: always a prefix of the final text
        self.stopped = False  # the text reached a stop string

    def text(self) -> str:
        """The text of every token so far (special tokens such as end-of-text left out), cut at
        the first stop string."""
        if self.tok is None:
            return ""
        text = self.tok.decode(self.ids, skip_special_tokens=True)
        cut = min((i for i in (text.find(s) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            return text[:cut]
        return text

    def feed(self, ids: list[int]) -> str:
        """Add one step's tokens; return the text that can be streamed now."""
        self.ids.extend(ids)
        text = self.text()
        if self.stopped:
            return self._advance(text)
        hold = 1 if text.endswith("\ufffd") else 0
        for s in self.stops:  # the longest tail that is a proper prefix of a stop string
            hold = max(hold, next((k for k in range(min(len(s) - 1, len(text)), 0, -1) if text.endswith(s[:k])), 0))
        return self._advance(text[:len(text) - hold])

    def finish(self) -> str:
        """The rest of the text, once the generation has ended."""
        return self._advance(self.text())

    def _advance(self, text: str) -> str:
        if not text.startswith(self.sent):  # decoding more tokens changed earlier text: wait
            return ""
        delta, self.sent = text[len(self.sent):], text
        return delta

    def piece(self, token: int) -> str:
        """One token's own text, for logprobs and the playground (special tokens included)."""
        return self.tok.decode([token]) if self.tok is not None else str(token)
