import pytest
import torch

from decodelab.core.tree import TokenTree

#        0(10)
#       /     \
#    1(11)   2(12)
#     |      /   \
#   3(13) 4(14) 5(15)
TREE = TokenTree.from_lists([10, 11, 12, 13, 14, 15], [-1, 0, 0, 1, 2, 2])


def test_depths_positions_children():
    assert TREE.depths.tolist() == [0, 1, 1, 2, 2, 2]
    assert TREE.positions(7).tolist() == [7, 8, 8, 9, 9, 9]
    assert TREE.children == [[1, 2], [3], [4, 5], [], [], []]
    assert not TREE.is_chain


def test_attention_mask_is_ancestors_or_self():
    m = TREE.attention_mask
    expected = {0: {0}, 1: {0, 1}, 2: {0, 2}, 3: {0, 1, 3}, 4: {0, 2, 4}, 5: {0, 2, 5}}
    for i, allowed in expected.items():
        assert set(m[i].nonzero().flatten().tolist()) == allowed


def test_paths_root_to_leaf():
    assert TREE.paths() == [[0, 1, 3], [0, 2, 4], [0, 2, 5]]
    assert TREE.path_to(5) == [0, 2, 5]


def test_chain():
    c = TokenTree.chain([4, 5, 6])
    assert c.is_chain and c.parents.tolist() == [-1, 0, 1]
    assert torch.equal(c.attention_mask, torch.tril(torch.ones(3, 3, dtype=torch.bool)))
    assert c.paths() == [[0, 1, 2]]


@pytest.mark.parametrize("parents", [[0, 0], [-1, 1], [-1, -1], [-1, 0, 3]])
def test_invalid_parents_refused(parents):
    with pytest.raises(ValueError):
        TokenTree.from_lists(list(range(len(parents))), parents)


def test_with_tokens_keeps_the_shape_and_shares_its_structure():
    other = TREE.with_tokens(torch.tensor([20, 21, 22, 23, 24, 25]))
    assert other.tokens.tolist() == [20, 21, 22, 23, 24, 25] and TREE.tokens.tolist()[0] == 10
    assert other.parents is TREE.parents and other.attention_mask is TREE.attention_mask
    assert other.children == TREE.children and other.depths.tolist() == TREE.depths.tolist()
    assert other.paths() == TREE.paths() and other.root == 20 and len(other) == 6
    with pytest.raises(ValueError, match="6 tokens"):
        TREE.with_tokens(torch.tensor([1, 2, 3]))
