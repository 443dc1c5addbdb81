"""Layer skipping in the transformers adapter ("layer_skip", FiRST): a prompt forwarded through
every layer, then later tokens that bypass a set of layers, equal one cache-free forward of the
whole sequence in which those layers pass the later tokens' rows through unchanged; on every
architecture of conftest that lays its decoder out as `base_model.layers`."""
import pytest
import torch

from decodelab.errors import DecodeLabError
from decodelab.models import HFCausalLM

from conftest import ALL_ARCHS, make_tiny

SKIPPING = tuple(a for a in ALL_ARCHS if "layer_skip" in HFCausalLM(make_tiny(a)).capabilities)


def reference_logits(model, ids: list[int], start: int, skip) -> torch.Tensor:
    """Logits [T, V] of one forward over ids without a cache, layers in `skip` bypassed for the
    rows from `start` on (forward hooks: this is the test's reference, not the adapter's code)."""

    def bypass(module, args, kwargs, out):
        x = args[0] if args else kwargs["hidden_states"]
        y = out[0] if isinstance(out, tuple) else out
        y = torch.cat([y[:, :start], x[:, start:]], dim=1)
        return (y, *out[1:]) if isinstance(out, tuple) else y

    hooks = [model.base_model.layers[i].register_forward_hook(bypass, with_kwargs=True) for i in skip]
    try:
        with torch.inference_mode():
            return model(input_ids=torch.tensor([ids])).logits[0].float()
    finally:
        for h in hooks:
            h.remove()


def test_every_decoder_layout_but_gpt2_can_skip():
    assert set(ALL_ARCHS) - set(SKIPPING) == {"gpt2"}


@pytest.mark.parametrize("arch", SKIPPING)
@pytest.mark.parametrize("skip", [{0}, {1}])
def test_skipping_equals_the_cache_free_reference(arch, skip):
    """Prompt of 6 through every layer (its layer inputs returned), then 5 one-token steps and one
    3-token chain skipping `skip`: every row's logits equal the reference's; windows of 8 slide."""
    model = make_tiny(arch, 2)
    lm = HFCausalLM(model)
    ids = [(7 * i + 3) % 90 for i in range(14)]
    ref = reference_logits(model, ids, 6, skip)
    seen = []
    hook = model.base_model.layers[1].register_forward_pre_hook(
        lambda m, args, kwargs: seen.append((args[0] if args else kwargs["hidden_states"])[0].clone()), with_kwargs=True)
    try:
        step = lm.forward(torch.tensor(ids[:6]), torch.arange(6), layers=True)
    finally:
        hook.remove()
    assert step.layers.shape == (2, 6, model.config.hidden_size) and torch.equal(step.layers[1], seen[0])
    rows = [step.logits]
    for t in range(6, 11):
        rows.append(lm.forward(torch.tensor([ids[t]]), torch.tensor([t]), skip=skip).logits)
    rows.append(lm.forward(torch.tensor(ids[11:14]), torch.arange(11, 14), skip=skip).logits)
    got = torch.cat(rows)
    assert torch.allclose(got, ref, atol=1e-4), (got - ref).abs().max()
    # the bypass is real: running every layer gives other logits
    assert not torch.allclose(reference_logits(model, ids, 14, ()), ref, atol=1e-2)


def test_an_empty_skip_set_is_the_plain_forward():
    model = make_tiny("llama", 2)
    a, b = HFCausalLM(model), HFCausalLM(model)
    x = torch.tensor([5, 9, 11, 2])
    assert torch.equal(a.forward(x, torch.arange(4), skip=()).logits, b.forward(x, torch.arange(4)).logits)


def test_refusals_and_rewinding_a_skipped_layer():
    model = make_tiny("qwen2", 2)
    lm = HFCausalLM(model)
    lm.forward(torch.tensor([1, 2, 3]), torch.arange(3))
    lm.forward(torch.tensor([4]), torch.tensor([3]), skip={1})
    with pytest.raises(DecodeLabError, match="layer 1 was skipped for cached tokens 3..3"):
        lm.forward(torch.tensor([5]), torch.tensor([4]))
    with pytest.raises(DecodeLabError, match="has 2 decoder layers"):
        lm.forward(torch.tensor([5]), torch.tensor([4]), skip={2})
    with pytest.raises(DecodeLabError, match="layers=True"):
        lm.forward(torch.tensor([5]), torch.tensor([4]), skip={1}, layers=True)
    lm.truncate(3)  # back to what layer 1 holds: it may run again, and equals a fresh run
    again = lm.forward(torch.tensor([4]), torch.tensor([3])).logits
    fresh = HFCausalLM(model)
    assert torch.allclose(again, fresh.forward(torch.tensor([1, 2, 3, 4]), torch.arange(4)).logits[-1:], atol=1e-5)
    assert "layer_skip" not in HFCausalLM(make_tiny("gpt2", 2)).capabilities
    with pytest.raises(DecodeLabError, match="capability layer_skip"):
        HFCausalLM(make_tiny("gpt2", 2)).forward(torch.tensor([1]), torch.tensor([0]), skip={0})


def test_the_users_model_is_not_changed():
    model = make_tiny("gemma2-sw8", 2)
    layers, types = list(model.base_model.layers), list(model.config.layer_types)
    lm = HFCausalLM(model)
    lm.forward(torch.tensor([1, 2, 3]), torch.arange(3))
    lm.forward(torch.tensor([4]), torch.tensor([3]), skip={0})
    assert list(model.base_model.layers) == layers and list(model.config.layer_types) == types
