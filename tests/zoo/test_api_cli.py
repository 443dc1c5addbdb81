import json

import pytest

from decodelab import zoo
from decodelab.cli import main
from decodelab.errors import DecodeLabError


def test_models_and_unknown_name():
    assert set(zoo.MODELS) == {"code-target", "code-draft", "code-target-l", "code-mdlm", "tasks-ar", "tasks-draft", "tasks-mdlm",
                               "tasks-mdlm-llama"}
    with pytest.raises(DecodeLabError, match="known models: code-target"):
        zoo.resolve("gpt-5")
    with pytest.raises(DecodeLabError, match="unknown zoo model"):
        zoo.info("gpt-5")


def test_known_but_not_bundled(tmp_path, monkeypatch):
    monkeypatch.setattr(zoo, "CHECKPOINTS_DIR", tmp_path)
    with pytest.raises(DecodeLabError, match="not bundled"):
        zoo.resolve("code-target")
    assert zoo.info("code-target")["bundled"] is False


def test_train_refuses_bad_arguments(tmp_path):
    for kw, msg in [
        (dict(tokens=0), "tokens"),
        (dict(tokens=-5), "tokens"),
        (dict(max_steps=0), "max_steps"),
        (dict(seed=-1), "seed"),
        (dict(device="tpu"), "device"),
    ]:
        with pytest.raises(DecodeLabError, match=msg):
            zoo.train("tasks-ar", out_dir=tmp_path, **kw)
    with pytest.raises(DecodeLabError, match="unknown zoo model"):
        zoo.train("nope", out_dir=tmp_path)


def test_cli_list_and_info(capsys):
    assert main(["zoo", "list"]) == 0
    out = capsys.readouterr().out
    for n in zoo.MODELS:
        assert n in out
    assert main(["zoo", "list", "--json"]) == 0
    assert {r["name"] for r in json.loads(capsys.readouterr().out)} == set(zoo.MODELS) | set(zoo.DERIVED)
    assert main(["zoo", "info", "tasks-ar"]) == 0
    assert json.loads(capsys.readouterr().out)["name"] == "tasks-ar"


@pytest.mark.parametrize(
    "argv, msg",
    [
        (["zoo", "train", "nope"], "unknown zoo model 'nope'"),
        (["zoo", "info", "nope"], "unknown zoo model 'nope'"),
        (["zoo", "train", "tasks-ar", "--tokens", "0"], "positive integer"),
        (["zoo", "train", "tasks-ar", "--tokens", "lots"], "positive integer"),
        (["zoo", "train", "tasks-ar", "--max-steps", "-3"], "positive integer"),
        (["zoo", "train", "tasks-ar", "--init-from", "/nonexistent/ckpt"], "not a checkpoint directory"),
        (["zoo", "train", "code-draft", "--stage", "context"], "needs --init-from"),
        (["zoo", "train", "tasks-ar", "--stage", "context", "--init-from", str(zoo.CHECKPOINTS_DIR / "tasks-ar")],
         "has no context stage"),
        (["zoo", "train", "tasks-ar", "--seed", "-1"], "seed"),
        (["zoo", "train", "tasks-ar", "--device", "tpu"], "device"),
        (["zoo", "train", "tasks-ar", "--precision", "fp16"], "precision"),
    ],
)
def test_cli_train_refuses(argv, msg, capsys, tmp_path):
    assert main(argv + ["--out", str(tmp_path)] if argv[1] == "train" else argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("decodelab: ") and msg in err


def test_cli_train_refuses_cuda_without_cuda(capsys, tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["zoo", "train", "tasks-ar", "--device", "cuda", "--out", str(tmp_path)]) == 2
    assert "no CUDA device" in capsys.readouterr().err
