import torch

from decodelab.core.sampling import gumbel_top_k
from decodelab.core.tree import TokenTree
from decodelab.core.verify import greedy_verify, rejection_verify

V = 5


def _onehot_logits(best: list[int]) -> torch.Tensor:
    logits = torch.zeros(len(best), V)
    logits[torch.arange(len(best)), torch.tensor(best)] = 5.0
    return logits


def test_greedy_chain_accepts_prefix_then_bonus():
    tree = TokenTree.chain([0, 1, 2, 3])
    # target argmax after root=1 (match), after node1=2 (match), after node2=4 (draft said 3)
    path, bonus = greedy_verify(tree, _onehot_logits([1, 2, 4, 0]))
    assert path == [0, 1, 2] and bonus == 4


def test_greedy_chain_all_accepted_gives_bonus_from_last():
    path, bonus = greedy_verify(TokenTree.chain([0, 1, 2]), _onehot_logits([1, 2, 3]))
    assert path == [0, 1, 2] and bonus == 3


def test_greedy_tree_follows_the_matching_branch():
    tree = TokenTree.from_lists([0, 1, 2, 3, 4, 1], [-1, 0, 0, 1, 2, 2])
    path, bonus = greedy_verify(tree, _onehot_logits([2, 0, 1, 0, 0, 4]))
    assert path == [0, 2, 5] and bonus == 4


def _tv(a: torch.Tensor, b: torch.Tensor) -> float:
    return 0.5 * float((a - b).abs().sum())


def _rrs_first_token(p, q, k, n, seed):
    """Empirical distribution of the first token RRS commits at a root with k siblings drawn
    without replacement from q."""
    g = torch.Generator().manual_seed(seed)
    counts = torch.zeros(V)
    pp, qq = p.expand(1 + k, V), q.expand(1 + k, V)
    for _ in range(n):
        sib = gumbel_top_k(q.log(), k, g).tolist()
        tree = TokenTree.from_lists([0] + sib, [-1] + [0] * len(sib))
        path, bonus = rejection_verify(tree, pp, qq, g)
        counts[tree.tokens[path[1]] if len(path) > 1 else bonus] += 1
    return counts / n


def test_recursive_rejection_sampling_preserves_p_for_several_sibling_counts():
    p = torch.tensor([0.05, 0.4, 0.3, 0.15, 0.1])
    q = torch.tensor([0.4, 0.1, 0.1, 0.2, 0.2])
    for k in (1, 2, 3, 5):
        small = _tv(_rrs_first_token(p, q, k, 1000, seed=k), p)
        large = _tv(_rrs_first_token(p, q, k, 8000, seed=100 + k), p)
        assert large < 0.025, (k, large)
        assert large < small, (k, small, large)


def test_rrs_with_deterministic_guesses_preserves_p():
    p = torch.tensor([0.05, 0.4, 0.3, 0.15, 0.1])
    tree = TokenTree.from_lists([0, 1, 4, 3], [-1, 0, 0, 0])  # three fixed guesses, q = None
    g = torch.Generator().manual_seed(3)
    counts = torch.zeros(V)
    n = 16000
    for _ in range(n):
        path, bonus = rejection_verify(tree, p.expand(4, V), None, g)
        counts[tree.tokens[path[1]] if len(path) > 1 else bonus] += 1
    assert _tv(counts / n, p) < 0.02


def test_rrs_descends_and_returns_a_valid_path():
    tree = TokenTree.from_lists([0, 1, 2, 3], [-1, 0, 1, 0])
    p = torch.full((4, V), 1.0 / V)
    q = torch.full((4, V), 1.0 / V)
    path, bonus = rejection_verify(tree, p, q, torch.Generator().manual_seed(0))
    assert path[0] == 0 and all(tree.parent_list[b] == a for a, b in zip(path, path[1:]))
    assert 0 <= bonus < V
