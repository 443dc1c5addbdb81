"""The server through the official openai client: completions, chat, streaming, per-request
methods, and exact equality with decodelab.generate (the server decodes through it, nothing else)."""
from __future__ import annotations

import pytest

import decodelab

PROMPTS = ["def add(a, b):\n", "import os\n\ndef main():\n", "class Stack:\n    def push(self, x):\n"]
MODEL = "zoo:code-target"


def _ext(resp) -> dict:
    return resp.to_dict()["decodelab"]


def _ids(resp) -> list[int]:
    return resp.to_dict()["choices"][0]["token_ids"]


def test_models_lists_the_served_model(client):
    ids = [m.id for m in client.models.list().data]
    assert ids == [MODEL]
    assert client.models.retrieve(MODEL).id == MODEL


@pytest.mark.parametrize("prompt", PROMPTS)
def test_greedy_completion_equals_generate(client, server, prompt):
    _, target, _ = server
    ref = decodelab.generate(target, prompt, max_new_tokens=24)
    resp = client.completions.create(model=MODEL, prompt=prompt, max_tokens=24, temperature=0)
    assert _ids(resp) == ref.tokens
    assert resp.choices[0].text == target.tokenizer.decode(ref.tokens, skip_special_tokens=True)
    assert resp.usage.completion_tokens == len(ref.tokens) and resp.usage.prompt_tokens == ref.stats.prompt_tokens
    stats = _ext(resp)["stats"]
    assert stats["target_forwards"] == ref.stats.target_forwards and stats["nfe"] == ref.stats.nfe


# fixed draft sizes: "auto" reads the clock, so two runs may draft differently (same tokens, other steps)
@pytest.mark.parametrize("method, options", [("sps", {"gamma": 4}), ("pld", {"num_tokens": 6}),
                                             ("token_recycling", {"template": "top4"})])
def test_per_request_method_is_lossless_and_reports_its_stats(client, server, method, options):
    _, target, draft = server
    prompt = PROMPTS[2]
    ref = decodelab.generate(target, prompt, method, draft=draft if method == "sps" else None, max_new_tokens=32,
                             **options)
    resp = client.completions.create(model=MODEL, prompt=prompt, max_tokens=32,
                                     extra_body={"decoding": {"method": method, **options}})
    ext = _ext(resp)
    assert _ids(resp) == ref.tokens == decodelab.generate(target, prompt, max_new_tokens=32).tokens
    assert ext["method"] == method and ext["options"] == options
    assert ext["stats"]["tau"] == round(ref.stats.tau, 4) and ext["stats"]["committed"] == ref.stats.committed
    if method == "sps":
        assert ext["stats"]["draft_forwards"] > 0 and ext["stats"]["tau"] > 1
    traced = _ext(client.completions.create(model=MODEL, prompt=prompt, max_tokens=32,
                                            extra_body={"decoding": {"method": method, "trace": True, **options}}))
    assert [len(s["tokens"]) for s in traced["trace"]] == ref.stats.committed
    assert [s["accepted"] for s in traced["trace"]] == [s.accepted for s in
                                                       decodelab.generate(target, prompt, method, trace=True,
                                                                          draft=draft if method == "sps" else None,
                                                                          max_new_tokens=32, **options).trace]


def test_chat_uses_the_chat_template_and_equals_generate(client, server):
    _, target, _ = server
    messages = [{"role": "system", "content": "You write Python."}, {"role": "user", "content": "def fib(n):"}]
    ref = decodelab.generate(target, messages=messages, max_new_tokens=20)
    resp = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=20, temperature=0)
    assert _ids(resp) == ref.tokens
    assert resp.choices[0].message.role == "assistant"
    assert resp.choices[0].message.content == target.tokenizer.decode(ref.tokens, skip_special_tokens=True)
    assert resp.object == "chat.completion" and resp.usage.total_tokens == ref.stats.prompt_tokens + len(ref.tokens)


def test_streaming_completion_concatenates_to_the_whole_response(client, server):
    _, target, _ = server
    whole = client.completions.create(model=MODEL, prompt=PROMPTS[0], max_tokens=30,
                                      extra_body={"decoding": {"method": "sps", "gamma": 3}})
    chunks = list(client.completions.create(model=MODEL, prompt=PROMPTS[0], max_tokens=30, stream=True,
                                            extra_body={"decoding": {"method": "sps", "gamma": 3}}))
    assert "".join(c.choices[0].text for c in chunks) == whole.choices[0].text
    ids = [t for c in chunks[:-1] for t in c.to_dict()["decodelab"]["tokens"]]
    assert ids == _ids(whole)
    last = chunks[-1]
    assert last.choices[0].finish_reason == "length" and last.usage.completion_tokens == 30
    assert last.to_dict()["decodelab"]["stats"]["committed"] == [len(c.to_dict()["decodelab"]["tokens"])
                                                                 for c in chunks[:-1]]


def test_streaming_chat(client, server):
    _, target, _ = server
    messages = [{"role": "user", "content": "def mean(xs):"}]
    ref = decodelab.generate(target, messages=messages, max_new_tokens=16)
    chunks = list(client.chat.completions.create(model=MODEL, messages=messages, max_tokens=16, stream=True,
                                                 temperature=0))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == target.tokenizer.decode(ref.tokens, skip_special_tokens=True)
    assert chunks[-1].object == "chat.completion.chunk" and chunks[-1].usage.completion_tokens == len(ref.tokens)


def test_sampling_with_a_seed_equals_generate(client, server):
    _, target, draft = server
    kw = dict(do_sample=True, temperature=0.8, top_p=0.9, seed=7, max_new_tokens=20)
    ref = decodelab.generate(target, PROMPTS[1], "sps", draft=draft, gamma=3, **kw)
    resp = client.completions.create(model=MODEL, prompt=PROMPTS[1], max_tokens=20, temperature=0.8, top_p=0.9,
                                     seed=7, extra_body={"decoding": {"method": "sps", "gamma": 3}})
    assert _ids(resp) == ref.tokens


def test_stop_string_is_cut_from_the_text_as_openai_does(client, server):
    _, target, _ = server
    full = client.completions.create(model=MODEL, prompt=PROMPTS[0], max_tokens=40).choices[0].text
    stop = full[5:9]
    assert stop and full.index(stop) == 5
    resp = client.completions.create(model=MODEL, prompt=PROMPTS[0], max_tokens=40, stop=[stop])
    assert resp.choices[0].text == full[:5] and resp.choices[0].finish_reason == "stop"
    streamed = client.completions.create(model=MODEL, prompt=PROMPTS[0], max_tokens=40, stop=stop, stream=True)
    assert "".join(c.choices[0].text for c in streamed) == full[:5]


def test_logprobs_are_the_targets(client, server):
    _, target, draft = server
    ref = decodelab.generate(target, PROMPTS[0], "sps", draft=draft, max_new_tokens=12, logprobs=True, gamma=4)
    resp = client.completions.create(model=MODEL, prompt=PROMPTS[0], max_tokens=12, logprobs=0,
                                     extra_body={"decoding": {"method": "sps", "gamma": 4}})
    lp = resp.choices[0].logprobs
    assert lp.token_logprobs == pytest.approx(ref.logprobs, abs=1e-6)
    assert "".join(lp.tokens) == target.tokenizer.decode(ref.tokens)
    chat = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x = 1"}], max_tokens=5,
                                          logprobs=True)
    assert len(chat.choices[0].logprobs.content) == 5


def test_sessions_carry_state_only_for_their_own_requests(client, server):
    _, target, _ = server
    st = decodelab.State()
    # a fixed tree: the auto size reads the clock-measured cost curve, and the check needs drafts
    refs = [decodelab.generate(target, p, "token_recycling", state=st, max_new_tokens=24, template="top8")
            for p in PROMPTS[:2]]
    cold = decodelab.generate(target, PROMPTS[1], "token_recycling", max_new_tokens=24, template="top8")
    assert refs[1].stats.committed != cold.stats.committed  # the learnt state changes the drafts
    session = {"method": "token_recycling", "template": "top8", "session": "test-session-1"}
    got = [_ext(client.completions.create(model=MODEL, prompt=p, max_tokens=24, extra_body={"decoding": session}))
           for p in PROMPTS[:2]]
    assert [g["stats"]["committed"] for g in got] == [r.stats.committed for r in refs]
    alone = _ext(client.completions.create(model=MODEL, prompt=PROMPTS[1], max_tokens=24,
                                           extra_body={"decoding": {"method": "token_recycling", "template": "top8"}}))
    assert alone["stats"]["committed"] == cold.stats.committed  # no session: cold, nothing shared


def test_token_id_prompt_on_a_model_without_tokenizer(tiny_dirs):
    from serve.serve_helpers import openai_client, start

    target = decodelab.load(tiny_dirs["llama"][0])
    bg = start(target, name="tiny")
    try:
        client = openai_client(bg.url)
        resp = client.completions.create(model="tiny", prompt=[5, 6, 7], max_tokens=10)
        assert _ids(resp) == decodelab.generate(target, [5, 6, 7], max_new_tokens=10).tokens
        assert resp.choices[0].text == ""
    finally:
        bg.stop()
