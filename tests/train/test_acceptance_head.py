"""The acceptance-head recipe: loss, AUC, data building on a tiny pair, fitting a learnable signal,
save/load round trip."""
import pytest
import torch

import decodelab
from decodelab.train.acceptance_head import (AcceptanceHead, HeadRecipe, auc, build_examples, evaluate, fit,
                                             load_head, weighted_soft_ce)


def test_weighted_soft_ce_weights_the_reject_class():
    logits = torch.log(torch.tensor([[0.25, 0.75], [0.5, 0.5]]))  # [reject, accept]
    y = torch.tensor([1.0, 0.0])
    want = -(torch.log(torch.tensor(0.75)) + 6 * torch.log(torch.tensor(0.5))) / 2
    assert float(weighted_soft_ce(logits, y, 6.0)) == pytest.approx(float(want), rel=1e-6)
    assert float(weighted_soft_ce(logits, torch.tensor([0.5, 0.5]), 1.0)) > 0


def test_auc():
    s = torch.tensor([0.1, 0.4, 0.35, 0.8])
    assert auc(s, torch.tensor([0, 0, 1, 1])) == pytest.approx(0.75)
    assert auc(s, torch.tensor([0, 0, 0, 1])) == 1.0
    assert auc(torch.tensor([0.5, 0.5]), torch.tensor([0, 1])) == 0.5
    assert auc(s, torch.tensor([1, 1, 1, 1])) != auc(s, torch.tensor([1, 1, 1, 1]))  # nan: one class


def test_fit_learns_a_signal():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4000, 8, generator=g)
    y = torch.sigmoid(3 * x[:, 0])  # acceptance depends on one feature
    recipe = HeadRecipe(epochs=15, batch_size=256, reject_weight=1.0)
    head = fit(x[:3000], y[:3000], recipe, g)
    m = evaluate(head, x[3000:], y[3000:], g)
    assert m["auc_realised"] > 0.75 and m["brier_realised"] < m["brier_constant_baseline"]


def test_build_examples_on_a_tiny_pair(tiny_dirs):
    target, draft = decodelab.load(tiny_dirs["gpt2"][0]).model, decodelab.load(tiny_dirs["gpt2"][1]).model
    recipe = HeadRecipe(response_tokens=12)
    prompts = [[1, 2, 3, 4], [5, 6, 7, 8], [9, 9, 9, 9]]
    x, y = build_examples(target, draft, prompts, recipe, torch.Generator().manual_seed(0), batch=2)
    assert x.shape[1] == draft.config.n_embd and x.shape[0] == y.shape[0]
    assert 0.6 * 36 < len(y) <= 36  # about 15% of the 36 positions replaced and dropped
    assert bool(((y >= 0) & (y <= 1)).all())
    xg, yg = build_examples(target, draft, prompts, HeadRecipe(response_tokens=12, labels="greedy"),
                            torch.Generator().manual_seed(0), batch=2)
    assert set(yg.unique().tolist()) <= {0.0, 1.0} and xg.shape[0] == yg.shape[0]


def test_save_load_round_trip(tmp_path):
    head = AcceptanceHead(6, blocks=2)
    with torch.no_grad():
        for p in head.parameters():
            p.normal_()
    head.save(tmp_path / "h", {"metrics": {"auc": 0.7}})
    back, cfg = load_head(tmp_path / "h")
    h = torch.randn(3, 6)
    assert torch.equal(back.p_accept(h), head.p_accept(h)) and cfg["blocks"] == 2 and cfg["metrics"]["auc"] == 0.7
