"""The Python example in docs/search.md runs as printed and does what its comments say."""
import re
from pathlib import Path

from decodelab import rewards

DOC = Path(__file__).resolve().parents[2] / "docs" / "search.md"


def test_the_search_example_runs_as_printed():
    code = re.search(r"```python\n(.*?)```", DOC.read_text(), re.S).group(1)
    scope: dict = {}
    exec(compile(code, str(DOC), "exec"), scope)
    assert rewards.Arithmetic().score("calc: 10+56-25 =>", scope["solved"].text, True) == 1.0
    assert scope["rule"].score("", scope["aligned"].text, True) == 1.0
    assert "return" in scope["first"].text
    assert scope["span"].text == " Ann, Bob, Cid"
