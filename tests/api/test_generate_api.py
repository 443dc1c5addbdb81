"""What users expect from generate(): batches, stop strings, log-probabilities, chat templates,
BOS, padded draft vocabularies, typed arguments and clear refusals."""
import warnings

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, models, processors
from transformers import PreTrainedTokenizerFast

import decodelab
from decodelab.errors import DecodeLabError
from decodelab.models import ToyLM
from methods.spec_helpers import check_converges, one_thread  # noqa: F401

PROMPT = "def add(a, b):\n"


@pytest.fixture(scope="module")
def zoo_pair():
    return decodelab.load("zoo:code-target"), decodelab.load("zoo:code-draft")


def word_tokenizer(n: int, bos: bool = False, chat: str | None = None) -> PreTrainedTokenizerFast:
    """A word-level tokenizer over w0..w{n-1} (split on spaces); with `bos`, `<s>` (id n-1) is
    prepended as Llama's tokenizer does."""
    vocab = {f"w{i}": i for i in range(n - 1)} | {"<s>": n - 1}
    t = Tokenizer(models.WordLevel(vocab, unk_token="w0"))
    from tokenizers import pre_tokenizers

    t.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    if bos:
        t.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", n - 1)])
    tok = PreTrainedTokenizerFast(tokenizer_object=t, bos_token="<s>")
    if chat is not None:
        tok.chat_template = chat
    return tok


# -- batches, stop strings, logprobs ---------------------------------------------------------------

def test_a_batch_of_prompts_returns_one_output_per_prompt(zoo_pair):
    target, draft = zoo_pair
    prompts = ["def add(a, b):\n", "import os\n", "class A:\n"]
    for batch in (prompts, [target.tokenizer(p)["input_ids"] for p in prompts]):
        outs = decodelab.generate(target, batch, "sps", draft=draft, max_new_tokens=12)
        assert isinstance(outs, list) and len(outs) == 3
        assert [o.tokens for o in outs] == [decodelab.generate(target, p, max_new_tokens=12).tokens for p in prompts]
    with pytest.raises(DecodeLabError, match="stream\\(\\) decodes one prompt"):
        decodelab.stream(target, prompts)


@pytest.mark.parametrize("method", ["greedy", "sps", "pld"])
def test_stop_strings_end_at_the_token_that_completes_one(zoo_pair, method):
    target, draft = zoo_pair
    kw = dict(draft=draft) if method == "sps" else {}
    free = decodelab.generate(target, PROMPT, max_new_tokens=60, ignore_eos=True)
    stop = free.text[len(target.tokenizer.decode(free.tokens[:6])):][:3]  # text that first occurs mid-run
    assert stop in free.text and stop not in target.tokenizer.decode(free.tokens[:5])
    out = decodelab.generate(target, PROMPT, method, max_new_tokens=60, ignore_eos=True, stop=[stop, "@@never"],
                             logprobs=True, trace=True, **kw)
    n = len(out.tokens)
    assert out.tokens == free.tokens[:n]  # a prefix of the free run...
    assert stop in out.text and stop not in target.tokenizer.decode(out.tokens[:-1])  # ...cut just after the stop
    assert out.stats.new_tokens == n == sum(out.stats.committed) == len(out.logprobs) < 60
    assert [t for step in out.trace for t in step.tokens] == out.tokens


def test_stop_string_refusals(zoo_pair, tiny_dirs):
    target, _ = zoo_pair
    with pytest.raises(DecodeLabError, match="stop must be a non-empty string"):
        decodelab.generate(target, PROMPT, stop=[""])
    with pytest.raises(DecodeLabError, match="stop strings need a model with a tokenizer"):
        decodelab.generate(decodelab.load(tiny_dirs["llama"][0]), [1, 2], stop="x")


def test_logprobs_are_the_targets_log_softmax_of_each_token(zoo_pair):
    target, _ = zoo_pair
    out = decodelab.generate(target, PROMPT, max_new_tokens=16, logprobs=True)
    ids = target.tokenizer(PROMPT)["input_ids"]
    with torch.no_grad():
        logits = target.model(torch.tensor([ids + out.tokens])).logits[0, len(ids) - 1:-1]  # [n, V]
    want = torch.log_softmax(logits, -1)[torch.arange(len(out.tokens)), torch.tensor(out.tokens)]
    assert torch.allclose(torch.tensor(out.logprobs), want, atol=1e-4)
    beam = decodelab.generate(target, PROMPT, "beam", max_new_tokens=16, logprobs=True)
    assert len(beam.logprobs) == len(beam.tokens) and all(lp <= 0 for lp in beam.logprobs)
    assert decodelab.generate(target, PROMPT, max_new_tokens=4).logprobs is None


# -- chat templates, BOS -------------------------------------------------------------------------

CHAT = "{% for m in messages %}w1 {{ m['content'] }} w2 {% endfor %}{% if add_generation_prompt %}w3{% endif %}"


def test_messages_go_through_the_chat_template(tiny_dirs):
    model = decodelab.load(tiny_dirs["llama"][0])
    model.tokenizer = word_tokenizer(96, chat=CHAT)
    msgs = [{"role": "user", "content": "w7 w8"}]
    out = decodelab.generate(model, messages=msgs, max_new_tokens=6)
    assert out.stats.prompt_tokens == 5  # w1 w7 w8 w2 w3
    assert out.tokens == decodelab.generate(model, [1, 7, 8, 2, 3], max_new_tokens=6).tokens
    both = decodelab.generate(model, messages=[msgs, msgs], max_new_tokens=6)
    assert [o.tokens for o in both] == [out.tokens, out.tokens]
    with pytest.raises(DecodeLabError, match="not both"):
        decodelab.generate(model, "w1", messages=msgs)
    with pytest.raises(DecodeLabError, match="list of \\{'role'"):
        decodelab.generate(model, messages=["hello"])
    model.tokenizer = word_tokenizer(96)
    with pytest.raises(DecodeLabError, match="has no chat template"):
        decodelab.generate(model, messages=msgs)


def test_bos_is_added_when_the_tokenizer_adds_one(tiny_dirs):
    model = decodelab.load(tiny_dirs["llama"][0])
    model.tokenizer = word_tokenizer(96, bos=True)
    out = decodelab.generate(model, "w4 w5", max_new_tokens=6)
    assert out.stats.prompt_tokens == 3
    assert out.tokens == decodelab.generate(model, [95, 4, 5], max_new_tokens=6).tokens
    model.tokenizer = word_tokenizer(96, bos=False)
    assert decodelab.generate(model, "w4 w5", max_new_tokens=6).stats.prompt_tokens == 2


# -- padded draft vocabularies ------------------------------------------------------------------

def _padded(model_dir, rows: int, tmp_path, name, scale: float):
    """The model at model_dir with its embedding and output matrices padded to `rows` rows (random
    output rows of std `scale`: large ones make the padding ids likely), saved under tmp_path/name."""
    m = decodelab.load(model_dir).model
    m.resize_token_embeddings(rows, mean_resizing=False)
    with torch.no_grad():
        m.get_output_embeddings().weight[96:] = torch.randn(rows - 96, m.config.hidden_size) * scale
    m.save_pretrained(tmp_path / name)
    return str(tmp_path / name)


@pytest.mark.parametrize("method", ["sps", "dyspec", "rsd_c", "rsd_s", "specdecpp"])
def test_a_draft_with_a_padded_embedding_matrix_serves_the_target(tiny_dirs, tmp_path, method):
    tok = word_tokenizer(96)
    # rsd with the paper's trees, as before their auto default: the draft must propose for the check to bite
    kw = {"specdecpp": {"head": "none"}, "rsd_c": {"branches": "3x2x2x1"},
          "rsd_s": {"width": 4, "depth": 4}}.get(method, {})
    prompt = [3, 17, 5, 9]
    # a draft padded beyond the target (its padding ids likely under q), and a target padded beyond
    # the draft whose padding ids are unlikely (its greedy output never uses them: checked)
    small_target = decodelab.load(tiny_dirs["llama"][0])
    big_target = decodelab.load(_padded(tiny_dirs["llama"][0], 120, tmp_path, "t120", scale=0.01))
    for t, rows in ((small_target, 128), (big_target, 112)):
        draft = decodelab.load(_padded(tiny_dirs["llama"][1], rows, tmp_path, f"d{rows}", scale=3.0))
        t.tokenizer, draft.tokenizer = tok, tok
        ref = decodelab.generate(t, prompt, max_new_tokens=24)
        assert max(ref.tokens) < 96
        out = decodelab.generate(t, prompt, method, draft=draft, max_new_tokens=24, **kw)
        assert out.tokens == ref.tokens
        # sampling: the draft never proposes an id the target cannot score (an embedding lookup past
        # the target's matrix would raise)
        sampled = decodelab.generate(small_target, prompt, method, draft=draft, max_new_tokens=24, do_sample=True,
                                     seed=0, **kw) if t is small_target else None
        assert sampled is None or len(sampled.tokens) == 24


def test_a_target_emitting_ids_past_the_drafts_matrix_is_refused_clearly(tiny_dirs, tmp_path):
    tok = word_tokenizer(96)
    target = decodelab.load(_padded(tiny_dirs["llama"][0], 120, tmp_path, "t120", scale=5.0))
    draft = decodelab.load(tiny_dirs["llama"][1])
    target.tokenizer, draft.tokenizer = tok, tok
    assert max(decodelab.generate(target, [3, 17, 5, 9], max_new_tokens=24).tokens) >= 96  # the scenario
    with pytest.raises(DecodeLabError, match="past the draft's vocabulary of 96 rows"):
        # a fixed gamma: the auto one may rest through the whole generation on a machine where
        # drafting cannot pay, and a draft model never asked has nothing to refuse
        decodelab.generate(target, [3, 17, 5, 9], "sps", draft=draft, max_new_tokens=24, gamma=2)


def test_padded_draft_sampling_stays_exact(one_thread):
    """The draft's padding rows carry large logits: a drafter that did not keep to the shared ids
    would propose ids the target cannot score (ToyLM would fail on them)."""
    g = torch.Generator().manual_seed(3)
    target = ToyLM(torch.randn(6, 6, 6, generator=g) * 1.5)
    table = torch.randn(8, 8, 8, generator=g) * 1.5
    table[..., 6:] += 4.0  # the draft likes its padding ids
    draft = ToyLM(table)
    tok = word_tokenizer(6)
    target.tokenizer = draft.tokenizer = tok
    check_converges("sps", target, draft, sizes=(150, 1200), exact_draft=ToyLM(table[:6, :6, :6]), gamma=3)


def test_tokenizers_are_compared_not_matrix_sizes(tiny_dirs):
    target, draft = (decodelab.load(d) for d in tiny_dirs["llama"])
    draft.vocab_size = 100  # as if padded; no tokenizers to compare: refused
    with pytest.raises(DecodeLabError, match="no tokenizers to compare"):
        decodelab.generate(target, [1, 2], "sps", draft=draft, max_new_tokens=4)


# -- typed arguments, warnings, load errors -------------------------------------------------------

def test_numpy_and_torch_integers_are_accepted(zoo_pair):
    target, draft = zoo_pair
    want = decodelab.generate(target, PROMPT, max_new_tokens=5).tokens
    out = decodelab.generate(target, PROMPT, "sps", draft=draft, max_new_tokens=np.int64(5), gamma=np.int32(2))
    assert out.tokens == want
    assert decodelab.generate(target, PROMPT, max_new_tokens=torch.tensor(5)).tokens == want
    ids = target.tokenizer(PROMPT)["input_ids"]
    assert decodelab.generate(target, np.array(ids), max_new_tokens=5).tokens == want
    s = decodelab.generate(target, PROMPT, "sample", max_new_tokens=5, top_k=np.int64(3), seed=np.uint8(4),
                           temperature=np.float32(0.5))
    assert len(s.tokens) == 5


@pytest.mark.parametrize("kw, message", [
    (dict(temperature="hot"), "temperature must be a number > 0, got 'hot'"),
    (dict(top_k=2.5), "top_k must be an integer >= 0, got 2.5"),
    (dict(seed="abc"), "seed must be an integer"),
    (dict(do_sample="no"), "do_sample must be true or false, got 'no'"),
    (dict(gamma=2.5), "sps: gamma must be an integer in [1, 128] or 'auto', got 2.5"),
    (dict(gamma=True), "sps: gamma must be an integer in [1, 128] or 'auto', got True"),
    (dict(gamma=10**6), "sps: gamma must be an integer in [1, 128]"),
    (dict(max_new_tokens=True), "max_new_tokens must be a positive integer, got True"),
    (dict(max_new_tokens=5.0), "max_new_tokens must be a positive integer, got 5.0"),
    (dict(schedule="fast"), "schedule must be one of 'constant', 'heuristic', got 'fast'"),
])
def test_wrong_types_and_values_are_refused_with_one_message(zoo_pair, kw, message):
    target, draft = zoo_pair
    with pytest.raises(DecodeLabError) as e:
        decodelab.generate(target, PROMPT, "sps", draft=draft, **{"max_new_tokens": 4, **kw})
    assert message in str(e.value)


@pytest.mark.parametrize("method, kw", [("dyspec", dict(budget=10**6)), ("rsd_c", dict(branches="9x9x9")),
                                        ("rsd_s", dict(width=64, depth=64)), ("aded", dict(budget=10**4)),
                                        ("token_recycling", dict(template="top100000")), ("beam", dict(num_beams=10**3)),
                                        ("pld", dict(num_tokens=10**5)), ("specdecpp", dict(max_len=10**4))])
def test_every_size_option_is_bounded(method, kw):
    with pytest.raises(DecodeLabError, match="at most|in \\[|<= 256"):
        decodelab.registry.get(method).make_config(**kw)


def test_sampling_flags_without_do_sample_warn(zoo_pair):
    target, _ = zoo_pair
    with pytest.warns(UserWarning, match="do_sample is False, so temperature=0.7 is ignored"):
        out = decodelab.generate(target, PROMPT, max_new_tokens=4, temperature=0.7)
    assert out.tokens == decodelab.generate(target, PROMPT, max_new_tokens=4).tokens
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        decodelab.generate(target, PROMPT, "sample", max_new_tokens=4, temperature=0.7, seed=0)


def test_missing_paths_and_unreachable_hub_names_fail_fast(tmp_path, monkeypatch):
    with pytest.raises(DecodeLabError, match="does not exist \\(no such model directory\\)"):
        decodelab.load(str(tmp_path / "nope"))
    with pytest.raises(DecodeLabError, match="does not exist"):
        decodelab.load("./models/nope")

    def no_network(*a, **k):
        raise OSError("network unreachable")

    def must_not_load(*a, **k):
        raise AssertionError("transformers must not be asked for an unreachable hub name")

    import socket

    from transformers import AutoConfig

    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(AutoConfig, "from_pretrained", must_not_load)
    with pytest.raises(DecodeLabError, match="hub cannot be reached"):
        decodelab.load("someorg/some-model")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DecodeLabError, match="hub cannot be reached"):
        decodelab.load("gpt2")


def test_dtype_names(tiny_dirs):
    assert decodelab.load(tiny_dirs["llama"][0], dtype="bfloat16").model.dtype == torch.bfloat16
    with pytest.raises(DecodeLabError, match="dtype must be one of"):
        decodelab.load(tiny_dirs["llama"][0], dtype="int3")


def test_methods_package_and_listing():
    import decodelab.methods as pkg

    assert pkg.__name__ == "decodelab.methods" and hasattr(pkg, "sps")
    listing = decodelab.methods()
    assert listing["sps"]["peer"] == "hf:assisted" and listing["sps"]["fixed_budget"]
    assert {o["name"] for o in listing["sps"]["options"]} == {"gamma", "schedule"}
    assert all(o["help"] for m in listing.values() for o in m["options"])  # every option is described


def test_a_state_belongs_to_one_model(zoo_pair, tiny_dirs):
    target, _ = zoo_pair
    st = decodelab.State()
    decodelab.generate(target, PROMPT, "token_recycling", max_new_tokens=8, state=st)
    assert len(st) == 1
    other = decodelab.load(tiny_dirs["llama"][0])
    with pytest.raises(DecodeLabError, match="another model"):
        decodelab.generate(other, [1, 2], "token_recycling", max_new_tokens=8, state=st)
    with pytest.raises(DecodeLabError, match="state must be a decodelab.State"):
        decodelab.generate(target, PROMPT, "token_recycling", max_new_tokens=8, state={})


@pytest.mark.parametrize("method, kw, prompt", [
    ("greedy", {}, [3]), ("sample", dict(do_sample=True, seed=0), [3]),
    ("pld", dict(num_tokens=3), [3, 1, 2, 3]),  # a verify step: the 3 before drafts "1 2"
    ("pld", dict(num_tokens=3), [0, 1, 2, 3]),  # a plain step: nothing to look up
])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nan_or_inf_logits_are_refused_by_every_step_kind(method, kw, prompt, bad):
    """Token 3's next-token row holds a NaN (or +inf): the autoregressive step, a speculative
    verify step and a plain step each refuse it with one message."""
    table = ToyLM.random(6, seed=0).table.clone()
    table[3, 4] = bad
    with pytest.raises(DecodeLabError, match="NaN or inf"):
        decodelab.generate(ToyLM(table), prompt, method, max_new_tokens=8, **kw)
