"""The Python example in docs/sampling.md runs as printed and does what its comments say; the
chain table lists the processors in the order the code runs them."""
import math
import re
from pathlib import Path

import numpy as np

from decodelab.core.processors import LLAMA_CPP_SAMPLERS
from decodelab.zoo import corpus
from decodelab.zoo.ngrams import NGrams
from methods.spec_helpers import one_thread  # noqa: F401

DOC = Path(__file__).resolve().parents[2] / "docs" / "sampling.md"


def test_the_sampling_example_runs_as_printed(monkeypatch, one_thread):
    import decodelab.zoo.ngrams as ngrams

    def small_ngrams(tokenizer, vocab_size):  # a slice of the corpus: the full tables take ~30 s to build
        ids = [t for f in corpus.code_files("train")[:40] for t in tokenizer(corpus.read_code(f))["input_ids"]]
        return NGrams.build(np.array(ids), vocab_size)

    monkeypatch.setattr(ngrams, "for_tokenizer", small_ngrams)
    code = re.search(r"```python\n(.*?)```", DOC.read_text(), re.S).group(1)
    scope: dict = {}
    exec(compile(code, str(DOC), "exec"), scope)
    assert scope["plain"].tokens and scope["fast"].tokens
    assert abs(scope["surprise"] - 3.0) < 1.0  # 96 tokens: near tau already
    assert len({tuple(s) for s in scope["beams"].sequences}) == 6
    assert len({tuple(s) for s in scope["sup"].sequences}) == 3
    assert math.isfinite(scope["surprise"])


def test_the_chain_table_is_in_the_order_the_code_runs():
    rows = re.findall(r"^\| (\d) \| `(\w+)` \|", DOC.read_text(), re.M)
    assert [name for _, name in rows] == list(LLAMA_CPP_SAMPLERS)
