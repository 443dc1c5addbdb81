"""decodelab.rewards: the programmatic rewards on hand-written outputs, the arithmetic step checker
on the zoo task's own targets, specs, and the model-based rewards against a direct computation."""
import math

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification

from decodelab import DecodeLabError, rewards
from decodelab.rewards import Arithmetic, Classifier, Function, Keywords, Length, Likelihood, Regex, parse
from decodelab.zoo import tasks
from decodelab.zoo.tokenizer import load_tokenizer


def test_keywords_count_whole_words_present_and_absent():
    r = Keywords(["return", "yield"], ["print"])
    assert r.score("", "def f():\n    return 1", True) == pytest.approx(2 / 3)  # return; no print
    assert r.score("", "x = returned; yield; print(x)", True) == pytest.approx(1 / 3)  # 'returned' is not 'return'
    assert r.score("", "return (yield)", False) == 1.0
    with pytest.raises(DecodeLabError):
        Keywords()


def test_length_window_partial_and_done():
    r = Length(2, 4, "words")
    assert [r.score("", t, True) for t in ("one", "one two", "a b c d", "a b c d e")] == [0, 1, 1, 0]
    assert r.score("", "one", False) == 1.0  # may still grow into the window
    assert r.score("", "a b c d e", False) == 0.0  # too long already
    assert Length(0, 1, "lines").score("", "a\nb", True) == 0.0
    assert Length(0, 3, "chars").score("", "abc", True) == 1.0
    for bad in (dict(lo=3, hi=2), dict(lo=-1, hi=2), dict(lo=0, hi=2, unit="tokens")):
        with pytest.raises(DecodeLabError):
            Length(**bad)


def test_arithmetic_accepts_the_task_targets_and_rejects_each_kind_of_error():
    r = Arithmetic()
    exs = tasks.examples("arithmetic", "test", 30, seed=0)
    for ex in exs:
        assert r.score(ex.prompt, ex.target, True) == 1.0, ex
        steps = ex.target.split(",")
        n = len(steps)
        assert r.score(ex.prompt, "", False) == pytest.approx(1 / (n + 1))  # nothing written, nothing wrong
        for i in range(1, n):  # each proper prefix of complete pieces: progress, nothing wrong yet
            assert r.score(ex.prompt, ",".join(steps[:i]) + ",", False) == pytest.approx((i + 1) / (n + 1))
            assert r.score(ex.prompt, ",".join(steps[:i]) + ",", True) == 0.0  # stopped before the answer
    p = "calc: 23+45-12 =>"
    assert r.score(p, " 23+45=68, 68-12=56, answer 56\n", True) == 1.0
    assert r.score(p, " 23+45=68, 68-1", False) == pytest.approx(2 / 4)  # an unfinished piece is not judged
    for wrong in (" 23+45=69,", " 23+46=69,", " 23-45=0,", " 24+45=69,",  # bad sum, operand, operator
                  " 23+45=68, 68-12=56, answer 57\n", " 23+45=68, answer 68\n",  # wrong or early answer
                  " 23+45=68, 68-12=56, answer 56, 1\n", " hello,"):
        assert r.score(p, wrong, False) == 0.0, wrong
    # without the prompt's expression every written step must still be true arithmetic
    assert r.score("", " 2+2=4, 4+3=7, answer 7\n", True) == 1.0
    assert r.score("", " 2+2=5,", False) == 0.0
    assert r.score("", " 2+2=4,", False) == 1.0 and r.score("", " 2+2=4,", True) == 0.0  # done without answer
    assert r.delimiters == ",\n"


def test_regex_function_and_all():
    assert Regex(r"\breturn\b").score("", "  return x", True) == 1.0
    assert Regex(r"^\d+$").score("", "12a", True) == 0.0
    f = Function(lambda prompt, text: len(text) / 10)
    assert f.score("", "abcde", False) == 0.5 and f.score("", "x" * 30, True) == 1.0  # clipped to [0, 1]
    with pytest.raises(DecodeLabError):
        Function(lambda p, t: "yes").score("", "", True)
    both = Keywords(["a"]) & Regex("z$")
    assert both.batch("", ["a z", "a", "b"], [True] * 3) == [1.0, 0.5, 0.0]


def test_specs_parse_to_the_rewards_they_name():
    assert isinstance(parse("arithmetic"), Arithmetic)
    kw = parse("keywords:return|yield,!print")
    assert (kw.present, kw.absent) == (["return", "yield"], ["print"])
    ln = parse("length:1,40,lines")
    assert (ln.lo, ln.hi, ln.unit) == (1, 40, "lines")
    assert parse("length:0|5").unit == "words"
    both = parse("keywords:return&length:0,3&regex:a&b")  # everything after regex: is the pattern
    assert [type(p) for p in both.parts] == [Keywords, Length, Regex] and both.parts[2].pattern.pattern == "a&b"
    assert parse("likelihood:zoo:tasks-ar", load=False) is None  # checked, not loaded
    for bad in ("", "nope", "arithmetic:1", "length:1", "length:a,b", "keywords:", "regex:(", "classifier:"):
        with pytest.raises(DecodeLabError):
            parse(bad)
    assert rewards.resolve(None) is None
    assert isinstance(rewards.resolve(lambda p, t: 1.0), Function)
    with pytest.raises(DecodeLabError):
        rewards.resolve(3)


def _tiny_llama(cls, **kw):
    torch.manual_seed(0)
    return cls(LlamaConfig(vocab_size=4096, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                           num_attention_heads=2, max_position_embeddings=64, pad_token_id=1, **kw)).eval()


def test_classifier_scores_each_text_as_alone():
    tok = load_tokenizer()
    model = _tiny_llama(LlamaForSequenceClassification, num_labels=3)
    r = Classifier(model, tok, label=2)
    texts = ["def f(x):", "return x + 1 if x else None", "a"]
    got = r.batch("", texts, [True] * 3)
    with torch.no_grad():
        want = [float(torch.softmax(model(torch.tensor([tok(t)["input_ids"]])).logits[0], -1)[2]) for t in texts]
    assert got == pytest.approx(want, abs=1e-5)


def test_likelihood_is_the_geometric_mean_token_probability():
    tok = load_tokenizer()
    model = _tiny_llama(LlamaForCausalLM)
    r = Likelihood(model, tok)
    prompt, texts = "calc: 1+2 =>", [" 1+2=3", " 9", ""]
    got = r.batch(prompt, texts, [True] * 3)
    ctx = tok(prompt)["input_ids"]
    for text, g in zip(texts, got):
        out = tok(text)["input_ids"]
        if not out:
            assert g == 1.0
            continue
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([ctx + out])).logits[0].float(), -1)
        lp = [float(logp[len(ctx) - 1 + i, x]) for i, x in enumerate(out)]
        assert g == pytest.approx(math.exp(sum(lp) / len(lp)), rel=1e-4)



def test_task_is_a_bench_placeholder_only():
    assert parse("task", load=False) is None  # a bench row may name it
    with pytest.raises(DecodeLabError, match="bench"):
        parse("task")
