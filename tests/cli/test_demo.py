"""`decodelab demo` (what `make demo` runs) on the bundled zoo models."""
import pytest
import torch

from decodelab.cli import main


@pytest.fixture(autouse=True)
def _keep_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def test_demo_decodes_with_greedy_and_sps_and_they_agree(capsys):
    assert main(["demo", "--max-new-tokens", "12"]) == 0
    out = capsys.readouterr().out
    assert "HumanEval/0" in out and "== greedy: 12 tokens" in out and "== sps: 12 tokens" in out
    assert "sps output equals greedy token for token" in out


@pytest.mark.parametrize("argv, msg", [(["--max-new-tokens", "0"], "max_new_tokens"), (["--threads", "0"], "threads")])
def test_demo_refuses_bad_input(argv, msg, capsys):
    assert main(["demo", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("decodelab: ") and msg in err and "Traceback" not in err
