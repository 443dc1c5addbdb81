"""The diffusion family through the public API and the CLI: load() gives the diffusion adapter,
generate() and stream() take diffusion methods like any other (batches, stop strings, logprobs,
stats), the family is listed, and a method of one family on a model of the other is refused with
one clear message."""
import json

import pytest

import decodelab
from decodelab.cli import main
from decodelab.errors import DecodeLabError
from decodelab.models.hf_diffusion import HFDiffusionLM

PROMPT = "sort: Cid, Ann, Dan, Bob =>"


@pytest.fixture(scope="module")
def lm():
    return decodelab.load("zoo:tasks-mdlm")


def test_generate_returns_the_region_cut_at_end_of_text(lm):
    assert isinstance(lm, HFDiffusionLM)
    out = decodelab.generate(lm, PROMPT, "llada", max_new_tokens=24, steps=12, block_length=12)
    assert out.text == " Ann, Bob, Cid, Dan\n<|endoftext|>" and out.method == "llada"
    assert out.tokens[-1] == lm.tokenizer.eos_token_id and lm.tokenizer.eos_token_id not in out.tokens[:-1]
    st = out.stats
    assert st.nfe == st.target_forwards <= 12 and st.prompt_tokens == len(lm.tokenizer(PROMPT)["input_ids"])
    assert st.tokens_per_forward == pytest.approx(2.0) and st.forwarded_tokens == st.nfe * (st.prompt_tokens + 24)
    d = st.as_dict()
    assert d["nfe"] == st.nfe and d["unmasked"] == st.unmasked and d["forwarded_tokens"] == st.forwarded_tokens


def test_batches_of_prompts(lm):
    prompts = [PROMPT, "copy: Dan, Ann, Fay =>", lm.tokenizer("reverse: Ann, Bob =>")["input_ids"]]
    outs = decodelab.generate(lm, prompts, "fast_dllm", max_new_tokens=24)
    assert [o.tokens for o in outs] == [decodelab.generate(lm, p, "fast_dllm", max_new_tokens=24).tokens
                                        for p in prompts]
    assert outs[1].text.startswith(" Dan, Ann, Fay\n")


def test_stop_strings_and_logprobs(lm):
    out = decodelab.generate(lm, PROMPT, "freedave", max_new_tokens=24, stop=", Cid", logprobs=True)
    assert out.text == " Ann, Bob, Cid" and len(out.logprobs) == len(out.tokens)


def test_the_family_is_listed():
    listing = decodelab.methods()
    fam = {n for n, m in listing.items() if m["family"] == "diffusion"}
    assert {"llada", "fast_dllm", "freedave", "eoser"} <= fam
    assert listing["freedave"]["lossless"] == "greedy" and listing["freedave"]["modes"] == ["greedy"]
    assert {o["name"] for o in listing["fast_dllm"]["options"]} == {"rule", "threshold", "factor", "cache",
                                                                     "block_length"}
    assert all(m["summary"] for n, m in listing.items() if n in fam)


def test_one_clear_refusal_per_family_mismatch(lm, tiny_dirs):
    causal = decodelab.load(tiny_dirs["llama"][0])
    with pytest.raises(DecodeLabError, match="this is a masked diffusion LM; method 'greedy' \\(autoregressive\\) "
                                             "needs a causal LM; use a diffusion method: ccd, credit_decoding, "
                                             "eoser, fast_dllm"):
        decodelab.generate(lm, PROMPT, "greedy", max_new_tokens=4)
    with pytest.raises(DecodeLabError, match="method 'llada' decodes masked diffusion LMs; this model is a causal LM"):
        decodelab.generate(causal, [1, 2], "llada", max_new_tokens=4)
    with pytest.raises(DecodeLabError, match="takes no draft model"):
        decodelab.generate(lm, PROMPT, "llada", max_new_tokens=4, draft=causal)
    with pytest.raises(DecodeLabError, match="context of 64 tokens"):
        decodelab.generate(lm, PROMPT, "llada", max_new_tokens=60)
    with pytest.raises(DecodeLabError, match="max_new_tokens must be a positive integer"):
        decodelab.generate(lm, PROMPT, "llada", max_new_tokens=0)


def test_cli_methods_generate_and_stream(capsys):
    assert main(["methods"]) == 0
    listing = capsys.readouterr().out
    assert all(f"{n} " in listing for n in ("llada", "fast_dllm", "freedave", "eoser"))
    assert main(["methods", "fast_dllm"]) == 0
    assert "--cache" in capsys.readouterr().out
    args = ["generate", "--model", "zoo:tasks-mdlm", "--method", "llada", "--max-new-tokens", "24", "--steps", "8",
            PROMPT, "--json"]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["text"].startswith(" Ann, Bob, Cid, Dan\n") and out["stats"]["nfe"] <= 8
    assert main(["generate", "--model", "zoo:tasks-mdlm", "--method", "eoser", "--max-new-tokens", "24", PROMPT,
                 "--stream"]) == 0
    assert capsys.readouterr().out.startswith(" Ann, Bob, Cid, Dan\n")
    assert main(["generate", "--model", "zoo:tasks-mdlm", "--method", "fast_dllm", "--cache", "dual", "--max-new-tokens", "24",
                 PROMPT]) == 2
    assert "needs a model with a KV cache" in capsys.readouterr().err
