"""CLI behaviour and every bad input of the foundation issue: one clear message, exit code 2,
no traceback."""
import json

import pytest

from decodelab.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_methods_lists_registry(capsys):
    code, out, _ = run(capsys, "methods", "--json")
    table = json.loads(out)
    assert code == 0 and table["sps"]["lossless"] == "sampling" and table["greedy"]["family"] == "autoregressive"


def test_generate_json_and_stream(capsys, tiny_dirs):
    target, draft = tiny_dirs["llama"]
    code, out, _ = run(capsys, "generate", "--model", target, "--ids", "--max-new-tokens", "6", "--json", "3,4,5")
    greedy = json.loads(out)
    assert code == 0 and len(greedy["tokens"]) == 6 and greedy["stats"]["target_forwards"] == 6
    code, out, _ = run(capsys, "generate", "--model", target, "--draft", draft, "--method", "sps", "--gamma", "3",
                       "--ids", "--max-new-tokens", "6", "--json", "3,4,5")
    sps = json.loads(out)
    assert code == 0 and sps["tokens"] == greedy["tokens"] and sps["stats"]["draft_forwards"] > 0
    code, out, _ = run(capsys, "generate", "--model", target, "--ids", "--max-new-tokens", "6", "--stream", "3,4,5")
    assert code == 0 and [int(t) for t in out.split()] == greedy["tokens"]


@pytest.mark.parametrize("argv, message", [
    (["--method", "nope"], "unknown method 'nope'; known methods: "),
    (["--method", "sps"], "needs a draft model"),
    (["--max-new-tokens", "0"], "max_new_tokens must be a positive integer"),
    (["--max-new-tokens", "-3"], "max_new_tokens must be a positive integer"),
    (["--max-new-tokens", "600"], "exceeds the model's context of 512 tokens"),
    (["--method", "sps", "--draft", "{other}"], "different vocabularies"),
    (["--temperature", "0", "--method", "sample"], "temperature must be a number > 0, got 0.0"),
    (["--do-sample"], "does not support sampling"),
])
def test_bad_generate_inputs(capsys, tiny_dirs, tmp_path, argv, message):
    from transformers import LlamaConfig, LlamaForCausalLM

    other = tmp_path / "other"
    LlamaForCausalLM(LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                 num_attention_heads=2)).save_pretrained(other)
    argv = [a.replace("{other}", str(other)) for a in argv]
    code, out, err = run(capsys, "generate", "--model", tiny_dirs["llama"][0], "--ids", *argv, "1,2,3")
    assert code == 2 and message in err.splitlines()[-1] and "Traceback" not in err and out == ""


def test_bad_prompts_and_paths(capsys, tiny_dirs, tmp_path):
    target = tiny_dirs["llama"][0]
    cases = [
        (["--model", target, "--ids", ""], "the prompt is empty"),
        (["--model", target, "hello"], "no tokenizer: give the prompt as token ids"),
        (["--model", target, "--ids", "1,x"], "--ids expects comma-separated integers"),
        (["--model", target, "--ids", "1,999"], "outside the vocabulary"),
        (["--model", str(tmp_path), "--ids", "1"], "is not a model directory"),
        (["--model", str(tmp_path / "missing"), "--ids", "1"], "does not exist (no such model directory)"),
        (["--model", target, "--ids", " ".join(["1"] * 510), "--max-new-tokens", "8"], "exceeds the model's context"),
    ]
    for argv, message in cases:
        code, out, err = run(capsys, "generate", *argv)
        assert code == 2 and message in err and "Traceback" not in err, (argv, err)


def test_tokenizer_mismatch_is_refused(tiny_dirs):
    import decodelab
    from decodelab.errors import DecodeLabError
    from transformers import PreTrainedTokenizerFast
    from tokenizers import Tokenizer, models

    def tok(words):
        t = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(
            {w: i for i, w in enumerate(words)}, unk_token=words[0])))
        return t

    vocab = [f"w{i}" for i in range(96)]
    target, draft = (decodelab.load(d) for d in tiny_dirs["llama"])
    target.tokenizer, draft.tokenizer = tok(vocab), tok(vocab[::-1])
    with pytest.raises(DecodeLabError, match="tokenizers differ"):
        decodelab.generate(target, [1, 2], "sps", draft=draft, max_new_tokens=4)


def test_unknown_method_option_is_refused(tiny_dirs):
    import decodelab
    from decodelab.errors import DecodeLabError

    model = decodelab.load(tiny_dirs["llama"][0])
    with pytest.raises(DecodeLabError, match="has no option"):
        decodelab.generate(model, [1, 2], "greedy", gamma=3, max_new_tokens=4)


def test_cli_subprocess_exit_code_and_no_traceback(tiny_dirs):
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "decodelab.cli", "generate", "--model", tiny_dirs["llama"][0],
                        "--method", "nope", "--ids", "1"], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.strip().startswith("decodelab: unknown method") and "Traceback" not in r.stderr


def test_methods_table_and_method_page(capsys):
    code, out, _ = run(capsys, "methods")
    lines = out.splitlines()
    header, row = lines[0], next(line for line in lines if line.startswith("token_recycling "))
    # every column starts at the header's column: nothing runs into its neighbour
    for col in ("family", "lossless", "needs", "summary"):
        start = header.index(col)
        assert row[start - 2:start] == "  " and row[start] != " ", (col, row)
    code, out, _ = run(capsys, "methods", "sps")
    assert code == 0 and "--gamma" in out and "draft tokens per step" in out and "an integer in [1, 128]" in out
    code, _, err = run(capsys, "methods", "nope")
    assert code == 2 and "unknown method 'nope'" in err


def test_generate_help_describes_every_option(capsys):
    with pytest.raises(SystemExit):
        main(["generate", "--method", "dyspec", "--help"])
    out = capsys.readouterr().out
    assert "candidates popped per draft forward" in out and "keep the k likeliest tokens" in out


def test_stop_dtype_logprobs_and_chat_flags(capsys, tiny_dirs):
    model = "zoo:code-target"
    code, out, _ = run(capsys, "generate", "--model", model, "--max-new-tokens", "30", "--json", "--logprobs",
                       "--dtype", "bfloat16", "def f(x):")
    res = json.loads(out)
    assert code == 0 and len(res["logprobs"]) == len(res["tokens"]) == 30
    stop = res["text"][len(res["text"]) // 2:][:2]
    code, out, _ = run(capsys, "generate", "--model", model, "--max-new-tokens", "30", "--json", "--dtype",
                       "bfloat16", "--stop", stop, "def f(x):")
    cut = json.loads(out)
    assert code == 0 and cut["tokens"] == res["tokens"][:len(cut["tokens"])] and len(cut["tokens"]) < 30
    assert stop in cut["text"]
    for argv, message in [(["--logprobs"], "--logprobs needs --json"),
                          (["--chat"], "has no chat template"),
                          (["--chat", "--ids"], "--chat takes a text prompt")]:
        code, out, err = run(capsys, "generate", "--model", model, *argv, "1")
        assert code == 2 and message in err and out == "", (argv, err)


def test_sampling_flag_without_do_sample_warns_on_one_line(capsys, tiny_dirs):
    code, out, err = run(capsys, "generate", "--model", tiny_dirs["llama"][0], "--ids", "--temperature", "0.7",
                         "--max-new-tokens", "3", "1,2")
    assert code == 0 and err.strip() == ("decodelab: warning: do_sample is False, so temperature=0.7 is ignored "
                                         "(greedy decoding); pass do_sample=True to sample")
