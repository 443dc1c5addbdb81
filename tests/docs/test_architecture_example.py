"""The worked example in docs/architecture.md runs as printed: the method it defines registers,
equals greedy, runs at a fixed budget and samples exactly, as the doc promises."""
import re
import sys
import types
from pathlib import Path

import pytest

import decodelab
from decodelab import registry
from decodelab.bench.rows import method_kwargs
from methods.spec_helpers import check_converges, equal_to_greedy, one_thread  # noqa: F401

DOC = Path(__file__).resolve().parents[2] / "docs" / "architecture.md"


@pytest.fixture
def bigram():
    code = re.search(r"```python\n(.*?)```", DOC.read_text(), re.S).group(1)
    module = types.ModuleType("decodelab_doc_bigram")
    sys.modules[module.__name__] = module
    try:
        exec(compile(code, str(DOC), "exec"), module.__dict__)
        yield registry.get("bigram")
    finally:
        registry._METHODS.pop("bigram", None)
        sys.modules.pop(module.__name__, None)


def test_the_worked_example_is_a_working_method(bigram, tiny_dirs, toy_pair, one_thread):
    target = decodelab.load(tiny_dirs["llama"][0])
    assert "Bigram cache drafting" in decodelab.methods()["bigram"]["summary"]
    prompt = [3, 17, 5, 9] * 4
    out = equal_to_greedy("bigram", target, prompt, 40, length=6)
    assert out.stats.tau > 1.0  # the repetitive prompt gets drafts accepted
    kw = method_kwargs(bigram, {"fixed_budget": 3})
    assert kw == {"length": 2}
    assert max(decodelab.generate(target, prompt, "bigram", max_new_tokens=20, **kw).stats.committed) <= 3
    check_converges("bigram", toy_pair[0], None, sizes=(150, 1200), prompt=(1, 2, 1, 2, 1), exact_draft=toy_pair[1])
