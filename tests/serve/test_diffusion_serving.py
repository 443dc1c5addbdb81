"""Masked diffusion LMs through the same server and the same decodelab.stream() path: output equal
to decodelab.generate, and each streamed step carrying the positions it unmasked."""
from __future__ import annotations

import pytest

import decodelab
from serve.serve_helpers import openai_client, start

PROMPT = "reverse: Ann, Bob, Cid, Dan, Eve =>"


@pytest.fixture(scope="module")
def mdlm():
    if "llada" not in decodelab.methods():
        pytest.skip("the diffusion family (llada) is not in this checkout")
    lm = decodelab.load("zoo:tasks-mdlm")
    bg = start(lm, name="zoo:tasks-mdlm", max_tokens=64)
    yield bg.url, lm
    bg.stop()


def test_diffusion_completion_equals_generate(mdlm):
    url, lm = mdlm
    client = openai_client(url)
    ref = decodelab.generate(lm, PROMPT, "llada", max_new_tokens=16, steps=8)
    resp = client.completions.create(model="zoo:tasks-mdlm", prompt=PROMPT, max_tokens=16,
                                     extra_body={"decoding": {"method": "llada", "steps": 8}})
    d = resp.to_dict()
    assert d["choices"][0]["token_ids"] == ref.tokens
    assert resp.choices[0].text == lm.tokenizer.decode(ref.tokens, skip_special_tokens=True)
    assert d["decodelab"]["stats"]["nfe"] == ref.stats.nfe and d["decodelab"]["stats"]["unmasked"] == ref.stats.unmasked
    # no method given: the model's default (diffusion) method
    assert client.completions.create(model="zoo:tasks-mdlm", prompt=PROMPT, max_tokens=16).to_dict()[
        "decodelab"]["method"] == "llada"


def test_diffusion_stream_carries_the_unmasking_order(mdlm):
    url, lm = mdlm
    chunks = [c.to_dict() for c in openai_client(url).completions.create(
        model="zoo:tasks-mdlm", prompt=PROMPT, max_tokens=16, stream=True,
        extra_body={"decoding": {"method": "llada", "steps": 8}})]
    steps = [c["decodelab"]["unmasked"] for c in chunks[:-1]]
    positions = [p for s in steps for p in s["positions"]]
    assert len(positions) == len(set(positions)) and all(0 <= p < 16 for p in positions)
    assert [len(s["positions"]) for s in steps] == chunks[-1]["decodelab"]["stats"]["unmasked"]
    ids = [t for c in chunks[:-1] for t in c["decodelab"]["tokens"]]
    assert ids == decodelab.generate(lm, PROMPT, "llada", max_new_tokens=16, steps=8).tokens


def test_causal_methods_are_refused_on_a_diffusion_model(mdlm):
    import httpx2 as httpx

    r = httpx.post(mdlm[0] + "/v1/completions", json={"prompt": PROMPT, "decoding": {"method": "sps"}})
    assert r.status_code == 400 and "masked diffusion LM" in r.json()["error"]["message"]
