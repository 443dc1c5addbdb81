"""FiRST: every router keeping equals the base model exactly (greedy and sampling); a skip set
equals a cache-free reference in which the generated tokens bypass those layers; the routers read
the prompt (two prompts, two skip sets); refusals."""
import pytest
import torch

import decodelab
from decodelab.errors import DecodeLabError
from decodelab.methods.first import Routed, Routers, save_routers
from decodelab.models import HFCausalLM

from conftest import make_tiny
from methods.spec_helpers import equal_to_greedy
from models.test_layer_skip import reference_logits

ARCHS = ("llama", "qwen2")
PROMPT = [5, 17, 3, 42, 8, 11]


def skip_reference(model, prompt: list[int], n: int, skip) -> list[int]:
    """Greedy tokens when the tokens after the prompt bypass `skip`, one cache-free forward each."""
    ids = list(prompt)
    for _ in range(n):
        ids.append(int(reference_logits(model, ids, len(prompt), skip)[-1].argmax()))
    return ids[len(prompt):]


@pytest.fixture(scope="module")
def zoo():
    return decodelab.load("zoo:code-target")


def zoo_prompt(zoo, text="def add(a, b):\n"):
    return zoo.tokenizer(text, add_special_tokens=False)["input_ids"]


@pytest.mark.parametrize("arch", ARCHS)
def test_every_router_keeping_equals_greedy(arch, tiny_dirs):
    target = decodelab.load(tiny_dirs[arch][0])
    for kw in (dict(routers="init"), dict(routers="init", skip=""), dict(routers="init", threshold=0.0)):
        equal_to_greedy("first", target, PROMPT, 24, **kw)


def test_every_router_keeping_equals_greedy_and_sampling_on_the_zoo_target(zoo):
    prompt = zoo_prompt(zoo)
    equal_to_greedy("first", zoo, prompt, 32, routers="init")
    equal_to_greedy("first", zoo, prompt, 32, routers="code-target-first-4", threshold=0.0)
    kw = dict(max_new_tokens=32, ignore_eos=True, do_sample=True, temperature=0.8, top_k=50, seed=3)
    want = decodelab.generate(zoo, prompt, "sample", **kw).tokens
    assert decodelab.generate(zoo, prompt, "first", routers="init", **kw).tokens == want
    assert len(decodelab.generate(zoo, prompt, "first", max_new_tokens=4).tokens) == 4  # auto: code-target-first-2


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("skip", ["0", "1", "0+1"])
def test_a_skip_set_equals_the_cache_free_reference(arch, skip, tiny_dirs):
    target = decodelab.load(tiny_dirs[arch][0])
    out = decodelab.generate(target, PROMPT, "first", routers="init", skip=skip, max_new_tokens=16, ignore_eos=True)
    want = skip_reference(target.model, PROMPT, 16, {int(i) for i in skip.split("+")})
    assert out.tokens == want and len(out.tokens) == 16
    assert want != decodelab.generate(target, PROMPT, "greedy", max_new_tokens=16, ignore_eos=True).tokens


def test_the_zoo_routers_skip_and_match_the_reference(zoo):
    """The bundled routers trained with the largest sparsity weight skip layers on this prompt, and
    their output is the reference's with that skip set."""
    from decodelab.methods.first import load_routers

    prompt = zoo_prompt(zoo)
    routers, _ = load_routers("code-target-first-4")
    routed = Routed(zoo.fresh(), routers, 0.5, len(prompt))
    routed.forward(torch.tensor(prompt), torch.arange(len(prompt)))
    routed.forward(torch.tensor([1]), torch.tensor([len(prompt)]))
    assert routed.skip and routed.skip == {i for i, g in enumerate(routed.gates.tolist()) if g < 0.5}
    out = decodelab.generate(zoo, prompt, "first", routers="code-target-first-4", max_new_tokens=12, ignore_eos=True)
    assert out.tokens == skip_reference(zoo.model, prompt, 12, routed.skip)


def test_the_routers_read_the_prompt(tiny_dirs, tmp_path):
    """Router 0 fires on token a's embedding and not on b's: a prompt of a's keeps layer 0 (greedy),
    a prompt of b's skips it (the reference with {0}); router 1 keeps always."""
    target = decodelab.load(tiny_dirs["llama"][0])
    emb = target.model.get_input_embeddings().weight.detach()  # [V, H]
    xn = emb / emb.pow(2).mean(-1, keepdim=True).sqrt()
    a, b = 7, int((xn @ xn[7]).argmin())  # b: the token least like a
    routers = Routers(2, emb.shape[1])
    with torch.no_grad():
        routers.weight[0] = 20 * xn[a] / xn.shape[1]  # w . xn_a = 20, w . xn_b < 0
        routers.bias[0] = -10.0
    save_routers(tmp_path, routers, {"model": "tiny"})
    pa, pb = [a] * 5, [b] * 5
    kw = dict(routers=str(tmp_path), max_new_tokens=12, ignore_eos=True)
    assert decodelab.generate(target, pa, "first", **kw).tokens == \
        decodelab.generate(target, pa, "greedy", max_new_tokens=12, ignore_eos=True).tokens
    assert decodelab.generate(target, pb, "first", **kw).tokens == skip_reference(target.model, pb, 12, {0})
    # a mixed prompt: the decision is the mean gate over its tokens (3 a's of 5: kept; 2 of 5: skipped)
    keep = Routed(target.fresh(), routers, 0.5, 5)
    keep.forward(torch.tensor([a, b, a, b, a]), torch.arange(5))
    drop = Routed(target.fresh(), routers, 0.5, 5)
    drop.forward(torch.tensor([b, a, b, a, b]), torch.arange(5))
    assert keep.gates[0] > 0.5 > drop.gates[0] and keep.gates[1] > 0.9


@pytest.mark.parametrize("kw, match", [
    (dict(routers="init", skip="1,x"), "skip must be layer indices >= 0"),
    (dict(routers="init", skip="-1"), "skip must be layer indices >= 0"),
    (dict(routers="init", skip="2"), "cannot skip layer 2: the target has 2 decoder layers"),
    (dict(routers="init", threshold=1.5), "threshold"),
    (dict(routers="no-such-routers"), "no FiRST routers at 'no-such-routers'"),
    (dict(routers="code-target-first-4"), "are for 4 layers of width 192, the target has 2 of width 32"),
    (dict(), "no FiRST routers at .llama-target-first-2."),  # auto: <model name>-first-<default lambda>
])
def test_bad_options_are_refused(kw, match, tiny_dirs):
    target = decodelab.load(tiny_dirs["llama"][0])
    with pytest.raises(DecodeLabError, match=match):
        decodelab.generate(target, PROMPT, "first", max_new_tokens=4, **kw)


def test_models_without_layer_skipping_are_refused(tiny_dirs):
    with pytest.raises(DecodeLabError, match="needs model capability layer_skip"):
        decodelab.generate(decodelab.load(tiny_dirs["gpt2"][0]), PROMPT, "first", routers="init", max_new_tokens=4)
    from decodelab.models.llamacpp import LlamaCppLM

    assert "layer_skip" not in LlamaCppLM.capabilities  # the registry refuses first there the same way
    assert "layer_skip" in HFCausalLM(make_tiny("llama")).capabilities
