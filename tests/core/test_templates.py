import pytest
import torch

from decodelab.core.templates import TreeTemplate


def test_from_paths_orders_by_level_and_links_parents():
    t = TreeTemplate.from_paths([[0, 0], [1], [0], [0, 1], [0, 0, 0]])
    assert t.parents == (-1, 0, 0, 1, 1, 3)
    assert t.ranks == (-1, 0, 1, 0, 1, 0)
    assert t.level_counts() == [2, 2, 1] and t.depth == 3 and t.max_rank == 1


def test_from_paths_refuses_orphans():
    with pytest.raises(ValueError, match="no parent"):
        TreeTemplate.from_paths([[0], [1, 0]])


def test_fill_gathers_candidates_per_level_and_keeps_input():
    t = TreeTemplate.from_paths([[0], [1], [0, 0], [1, 0], [0, 0, 1]])
    cand = torch.tensor([[1, 2], [3, 4], [5, 0], [2, 2], [0, 1], [4, 3]])  # [V=6, k=2]
    before = cand.clone()
    tree = t.fill(0, cand)
    # root 0 -> children 1 (rank 0), 2 (rank 1); 1 -> 3; 2 -> 5; 3 -> 2 (rank 1)
    assert tree.tokens.tolist() == [0, 1, 2, 3, 5, 2]
    assert tree.parents.tolist() == [-1, 0, 0, 1, 2, 3]
    assert torch.equal(cand, before)
    # the shared structure equals what TokenTree computes on its own
    from decodelab.core.tree import TokenTree
    fresh = TokenTree(tree.tokens.clone(), tree.parents.clone())
    assert torch.equal(tree.attention_mask, fresh.attention_mask)
    assert torch.equal(tree.depths, fresh.depths) and tree.children == fresh.children


def test_truncate_keeps_shallow_nodes():
    t = TreeTemplate.from_paths([[0], [1], [0, 0], [0, 0, 0]])
    assert len(t.truncate(0)) == 1
    assert t.truncate(1).level_counts() == [2]
    assert t.truncate(2).level_counts() == [2, 1]
    assert t.truncate(5) is t


def test_best_first_picks_likeliest_paths():
    t = TreeTemplate.best_first(4, [0.6, 0.3, 0.1], max_depth=3)
    # 0.6 [0], 0.36 [0,0], 0.3 [1], 0.216 [0,0,0]
    assert len(t) == 5 and t.level_counts() == [2, 1, 1]
    assert TreeTemplate.best_first(10, [0.9, 0.05], max_depth=2).depth == 2
