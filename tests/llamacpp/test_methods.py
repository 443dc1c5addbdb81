"""Decoding on the llama.cpp backend: greedy equals our torch greedy on zoo:code-target, and every
greedy-lossless method of the registry (the zoo draft converted too where one is needed) equals the
backend's greedy; loading through decodelab.load, the CLI and the cached conversion."""
import pytest

pytest.importorskip("llama_cpp")

import decodelab  # noqa: E402
from decodelab.bench import workloads  # noqa: E402
from decodelab.cli import main  # noqa: E402
from decodelab.errors import DecodeLabError  # noqa: E402
from decodelab.models.llamacpp import LlamaCppLM  # noqa: E402
from decodelab.registry import all_methods  # noqa: E402
from methods.stream_helpers import interleave  # noqa: E402

NEW = 96
METHODS = sorted(name for name, m in all_methods().items()
                 if m.lossless in ("greedy", "sampling") and "greedy" in m.modes and name != "greedy"
                 and m.family != "diffusion" and "embeds" not in m.needs)  # ppd: refused up front here
OPTIONS = {"specdecpp": {"head": "none"}}  # its acceptance head reads hidden states, which llama.cpp does not give
# the auto sizes decide from this machine's clock, and on zoo:code-target on llama.cpp, where a
# forward costs about linearly in its tokens, they may rightly not draft at all: the first prompt
# runs them, the others a fixed size, so that accepted drafts are seen
PINNED = {"sps": {"gamma": 3}, "pld": {"num_tokens": 4}, "token_recycling": {"template": "top4"},
          "samd": {"num_tokens": 4, "gamma": 3}, "aded": {"budget": 8}, "rsd_c": {"branches": "2x1x1"},
          "rsd_s": {"depth": 3}}


@pytest.fixture(scope="module")
def prompts(zoo_models):
    torch_lm, cpp, _ = zoo_models
    held = workloads.build("code-heldout", cpp, limit=3).prompts
    he = workloads.build("humaneval", cpp, limit=2).prompts
    assert held == workloads.build("code-heldout", torch_lm, limit=3).prompts  # one tokenization
    return [list(p) for p in held + he]


@pytest.fixture(scope="module")
def greedy(zoo_models, prompts):
    """The backend's greedy output for each prompt, checked against torch greedy."""
    torch_lm, cpp, _ = zoo_models
    out = []
    for p in prompts:
        got = decodelab.generate(cpp, p, max_new_tokens=NEW, ignore_eos=True, logprobs=True)
        want = decodelab.generate(torch_lm, p, max_new_tokens=NEW, ignore_eos=True, logprobs=True)
        out.append(got)
        assert got.tokens == want.tokens and len(got.tokens) == NEW
        assert max(abs(a - b) for a, b in zip(got.logprobs, want.logprobs)) < 1e-4
    return out


def test_greedy_equals_torch_greedy(greedy, prompts):
    assert len(greedy) == len(prompts) == 5
    assert all(g.stats.target_forwards == NEW for g in greedy)


@pytest.mark.parametrize("method", METHODS)
def test_lossless_methods_equal_backend_greedy(method, zoo_models, prompts, greedy):
    _, cpp, draft = zoo_models
    spec = all_methods()[method]
    accepted = 0
    for i, (p, want) in enumerate(zip(prompts[:3], greedy[:3])):
        kw = dict(OPTIONS.get(method, {}), **(PINNED.get(method, {}) if i else {}))
        out = decodelab.generate(cpp, p, method, draft=draft if spec.draft else None, max_new_tokens=NEW,
                                 ignore_eos=True, **kw)
        assert out.tokens == want.tokens, (method, p[:8])
        assert out.stats.target_forwards <= want.stats.target_forwards
        accepted += out.stats.new_tokens - out.stats.target_forwards
    assert accepted > 0, method  # drafts were accepted: the check is not vacuous


def test_llamacpp_target_with_torch_draft(zoo_models, prompts, greedy):
    """Mixed backends share the tokenizer check and the draft plumbing. gamma is pinned: with a torch
    draft (~3 ms a token) under a llama.cpp target (~0.4 ms) auto rightly chooses not to draft."""
    _, cpp, _ = zoo_models
    draft = decodelab.load("zoo:code-draft")
    out = decodelab.generate(cpp, prompts[0], "sps", draft=draft, gamma=2, max_new_tokens=NEW, ignore_eos=True)
    assert out.tokens == greedy[0].tokens and out.stats.tau > 1.0


def test_interleaved_streams_are_independent(zoo_models, prompts, greedy):
    _, cpp, draft = zoo_models
    streams = [decodelab.stream(cpp, p, "sps", draft=draft, max_new_tokens=NEW, ignore_eos=True)
               for p in prompts[:2]]
    assert interleave(streams) == [g.tokens for g in greedy[:2]]


def test_load_gguf_backend_option_and_cached_conversion(zoo_gguf, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DECODELAB_CACHE", str(tmp_path))
    assert isinstance(decodelab.load(zoo_gguf["code-draft"]), LlamaCppLM)
    first = decodelab.load("zoo:code-draft", backend="llamacpp")
    assert "converting zoo:code-draft to GGUF" in capsys.readouterr().err
    second = decodelab.load("zoo:code-draft", backend="llamacpp")
    assert capsys.readouterr().err == "" and second.weights.path == first.weights.path
    assert first.weights.path.parent == tmp_path / "gguf"
    with pytest.raises(DecodeLabError, match="runs on the llama.cpp backend"):
        decodelab.load(zoo_gguf["code-draft"], backend="torch")
    with pytest.raises(DecodeLabError, match="unknown backend"):
        decodelab.load("zoo:code-draft", backend="onnx")
    with pytest.raises(DecodeLabError, match="own dtype"):
        decodelab.load("zoo:code-draft", backend="llamacpp", dtype="bfloat16")
    with pytest.raises(DecodeLabError, match="no such GGUF"):
        decodelab.load(str(tmp_path / "missing.gguf"))


def test_threads_follow_the_environment(zoo_gguf, monkeypatch):
    monkeypatch.setenv("DECODELAB_NUM_THREADS", "2")
    assert LlamaCppLM(zoo_gguf["code-draft"])._threads() == 2


def test_cli_generate_on_the_backend_equals_torch(zoo_gguf, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DECODELAB_CACHE", str(tmp_path))
    args = ["generate", "def fibonacci(n):", "--model", "zoo:code-target", "--max-new-tokens", "24", "--ignore-eos"]
    assert main(args) == 0
    want = capsys.readouterr().out
    assert main(args + ["--backend", "llamacpp", "--method", "pld"]) == 0
    got = capsys.readouterr()
    assert got.out == want and "converting zoo:code-target" in got.err
    assert main(["generate", "def f(", "--model", zoo_gguf["code-target"], "--method", "beam"]) == 2
    assert "needs model capability batch" in capsys.readouterr().err
