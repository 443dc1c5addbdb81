import torch

from decodelab.core.tree import TokenTree
from decodelab.models import ToyLM, prefill


def test_toy_logits_follow_the_table_in_chains_and_trees():
    lm = ToyLM.random(5, order=2, seed=0)
    prefill(lm, torch.tensor([1, 2]))
    tree = TokenTree.from_lists([3, 4, 0, 1], [-1, 0, 0, 1])
    out = lm.forward(tree.tokens, tree.positions(2), tree_mask=tree.attention_mask).logits
    assert torch.equal(out[0], lm.table[2, 3])
    assert torch.equal(out[1], lm.table[3, 4])
    assert torch.equal(out[2], lm.table[3, 0])
    assert torch.equal(out[3], lm.table[4, 1])
    lm.commit([0, 1, 3])
    assert lm.cached_ids.tolist() == [1, 2, 3, 4, 1]


def test_toy_order1_first_token_and_fresh_copy():
    lm = ToyLM.random(4, order=1, seed=2)
    out = lm.forward(torch.tensor([3]), torch.tensor([0])).logits
    assert torch.equal(out[0], lm.table[3])
    other = lm.fresh()
    assert other.cache_len == 0 and lm.cache_len == 1 and torch.equal(other.table, lm.table)
