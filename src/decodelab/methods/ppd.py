"""PPD: Parallel Prompt Decoding (Chen et al. 2024, "Hardware-Aware Parallel Prompt Decoding for
Memory-Efficient Acceleration of LLM Inference", arXiv 2405.18628).

m trained prompt embeddings (default m = 3; train/ppd.py, `decodelab train ppd`) stand for "the
token i + 2 positions ahead" (i = 0..m-1). Every node of the draft tree carries its own chain of
prompt tokens P_1..P_p after it, at positions node + 1 .. node + p, seeing the node, its
ancestors and the earlier prompt tokens of the node; they are forwarded with the tree as input
embeddings in the same target forward (the speculative loop's extra nodes: never verified,
accepted or committed to the KV cache). When node a is the last accepted one, the target's token
after a is the bonus b, and P_d's logits at a predict the token d positions after b: their top-k
are the next step's guesses at depth d. The candidate tree is a sparse tree of rank paths (node at
depth d = the rank-r guess of depth d, whatever its parent), chosen OFFLINE from the held-out
per-depth top-k accuracy acc[d][r] the recipe measured: for each prompt count p <= m, the
(budget // (p + 1) - 1) rank paths of depth <= p with the highest products of accuracies (best
first, which maximises the expected accepted length sum_path prod acc), keeping the p with the
largest expected length. `budget` = the most tokens one target forward scores: root, candidates
and every node's p prompt tokens. The recipe stores the trees for a list of budgets with the
embeddings; other budgets are built from the stored table the same way. budget = "auto" (the
default) takes, once per generation, the tree whose expected tokens per step (1 + its expected
accepted length) over the target's measured forward cost for its tokens (models/costs.py, at the
prompt's length) is highest: the paper's hardware-aware choice, made on this machine's measured
curve; or plain steps, with no prompt tokens forwarded, when no tree is expected to beat a plain
step. Its trees are sized for a GPU, where extra tokens are almost free; on a CPU, where a
forward's cost grows with its tokens, they lose (zoo:code-target on torch: budgets 4 / 8 / 12 / 16
ran at 0.94 / 1.09 / 1.00 / 1.06x greedy on HumanEval in one run; 12 was the default). On an AMD
EPYC host (2026-12-05) budget 8 ran at 0.82-0.87x greedy on zoo:code-target and budgets 4 to 16 at
0.73-0.84x on zoo:code-target-l with its own prompts; the auto, which took a tree there, now rests.
Verification: greedy (the output equals the target's greedy output) or exact recursive rejection
sampling with the guesses as deterministic drafts (q = None): lossless in both modes.

Deviations: (1) the reference's typical acceptance (lossy) is not offered; sampling uses exact
verification. (2) One prompt embedding per prompt token (the paper's best setting uses ensembles
of virtual tokens per prompt; its m = 3 and the 0.8^i-weighted distillation loss are kept). (3)
Every tree node carries the same number p of prompt tokens (the paper's tree can give prompt tokens
to some candidates only); p is the tree's depth, so no prompt token is forwarded whose guess
cannot be used. (4) The first step (no guesses yet) and budgets below 4 forward the root and its
prompt tokens only. (5) `embeddings="init"`: untrained prompts (the recipe's initialisation, the
embeddings of "Next {i+2} word") and a generic accuracy table, for models no embeddings were trained
for (tests); still lossless.
"""
from __future__ import annotations

import heapq
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from ..core.templates import TreeTemplate
from ..core.tree import Draft, ExtraNodes, TokenTree
from ..errors import DecodeLabError
from ..loops import autoregressive, speculative
from ..models import costs
from ..options import Options, option
from ..registry import register

KIND = "ppd-prompts"
INIT_TEXT = "Next {} word"  # prompt i is initialised from the embeddings of INIT_TEXT.format(i + 2)
# a generic per-depth accuracy table for untrained prompts: rank r of depth d right with GENERIC[r] * 0.6^d
_GENERIC = [0.3, 0.1, 0.05, 0.03, 0.02, 0.01, 0.01, 0.01]
TOPK = 8  # guesses kept per depth (ranks a tree may use)


@dataclass(frozen=True, kw_only=True)
class PPDConfig(Options):
    budget: int | None = option(None, "most tokens per target forward: root, candidates and their prompt tokens "
                                      "(a node carries p prompt tokens, the tree's depth); auto: the tree with the "
                                      "most expected tokens per second on the target's measured forward costs",
                                lo=2, hi=512, auto=True)
    embeddings: str = option("auto", "prompt embeddings: 'auto' (the ones trained for the target's zoo name, "
                                     "zoo/heads/<model>-ppd), a directory or bundled name, or 'init' (untrained)")


# -- the sparse tree -------------------------------------------------------------------------------

def best_paths(acc: list[list[float]], n: int) -> tuple[list[list[int]], float]:
    """The n rank paths (depth <= len(acc)) with the highest products of per-depth accuracies, best
    first (a prefix-closed set: a path's product never exceeds its parent's), and their summed
    products: the expected accepted length when depth d's rank-r guess is right with acc[d][r]."""
    heap = [(-acc[0][r], (r,)) for r in range(len(acc[0]))]
    heapq.heapify(heap)
    chosen, value = [], 0.0
    while heap and len(chosen) < n:
        neg, path = heapq.heappop(heap)
        chosen.append(list(path))
        value -= neg
        if len(path) < len(acc):
            for r, a in enumerate(acc[len(path)]):
                heapq.heappush(heap, (neg * a, path + (r,)))
    return chosen, value


def build_tree(acc: list[list[float]], budget: int) -> dict:
    """The sparse tree for a node budget: {"paths": rank paths, "prompts": p, "expected": expected
    accepted length, "tokens": tokens per forward}. acc[d][r]: P(depth d + 1's rank-r guess is the
    target's token), d < m. A tree with n candidates of depth <= p costs (n + 1)(p + 1) tokens."""
    if budget < 2 or not acc:
        raise DecodeLabError(f"ppd needs a budget of at least 2 tokens and an accuracy table, got {budget}")
    best = {"paths": [], "prompts": 1, "expected": 0.0, "tokens": 2}
    for p in range(1, len(acc) + 1):
        n = budget // (p + 1) - 1
        if n < 1:
            break
        paths, value = best_paths(acc[:p], n)
        depth = max(len(x) for x in paths)
        if value > best["expected"] + 1e-12:
            best = {"paths": paths, "prompts": depth, "expected": round(value, 6),
                    "tokens": (len(paths) + 1) * (depth + 1)}
    return best


def generic_accuracy(m: int, k: int = TOPK) -> list[list[float]]:
    return [[a * 0.6 ** d for a in _GENERIC[:k]] for d in range(m)]


# -- the prompts ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Prompts:
    embeds: torch.Tensor  # [m, H]
    accuracy: list[list[float]]  # [m][k]
    trees: dict  # str(budget) -> build_tree's dict (stored with trained embeddings)

    @property
    def m(self) -> int:
        return self.embeds.shape[0]

    def tree(self, budget: int) -> dict:
        return self.trees.get(str(budget)) or build_tree(self.accuracy, budget)


def init_embeddings(target, m: int) -> torch.Tensor:
    """[m, H] the recipe's initialisation: prompt i = the mean input embedding of the text
    "Next {i+2} word" (token i + 2 when the model has no tokenizer)."""
    tok = getattr(target, "tokenizer", None)
    rows = []
    for i in range(m):
        if tok is not None:
            ids = tok(INIT_TEXT.format(i + 2), add_special_tokens=False)["input_ids"]
        else:
            ids = [(i + 2) % target.vocab_size]
        rows.append(target.embed(torch.tensor(ids)).float().mean(0))
    return torch.stack(rows).detach().clone()


def save_prompts(out: Path, embeds: torch.Tensor, meta: dict) -> None:
    from safetensors.torch import save_file

    save_file({"prompts": embeds.detach().float().contiguous()}, out / "model.safetensors")
    cfg = {"kind": KIND, "m": embeds.shape[0], "hidden": embeds.shape[1], **meta}
    (out / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")


def load_prompts(path: str | Path) -> tuple[Prompts, dict]:
    """Trained prompts (embeddings, accuracy table, stored trees) from a directory or a name under
    zoo/heads."""
    from safetensors.torch import load_file

    from ..train.acceptance_head import head_dir

    p = head_dir(path, "ppd prompt embeddings", "decodelab train ppd --target MODEL")
    try:
        cfg = json.loads((p / "config.json").read_text())
        if cfg.get("kind") != KIND:
            raise ValueError(f"config.json is not ppd prompts' (kind {cfg.get('kind')!r})")
        embeds = load_file(p / "model.safetensors")["prompts"]
        acc = [[float(a) for a in row] for row in cfg["accuracy"]]
        if embeds.shape != (cfg["m"], cfg["hidden"]) or len(acc) != cfg["m"]:
            raise ValueError(f"prompts {tuple(embeds.shape)} do not match m={cfg['m']}, hidden={cfg['hidden']}")
    except Exception as e:  # noqa: BLE001  (corrupt file, wrong shapes, another head)
        raise DecodeLabError(f"the ppd prompts at '{p}' are unusable: {e}") from None
    return Prompts(embeds, acc, dict(cfg.get("trees", {}))), cfg


def resolve_prompts(config: PPDConfig, target) -> Prompts:
    if config.embeddings == "init":
        return Prompts(init_embeddings(target, 3), generic_accuracy(3), {})
    name = config.embeddings
    if name == "auto":
        from ..train.learn2pd import bundled_head

        name = bundled_head(target, "ppd", "ppd", "embeddings")
    prompts, cfg = load_prompts(name)
    hidden = getattr(getattr(target, "config", None), "hidden_size", None)
    if hidden is not None and hidden != prompts.embeds.shape[1]:
        raise DecodeLabError(f"the ppd prompts '{name}' have hidden size {prompts.embeds.shape[1]}, the target's is "
                             f"{hidden}; train them for this model with `decodelab train ppd --target MODEL`")
    return prompts


def memory_overhead(prompts: torch.Tensor, model) -> float:
    """Parameters of the prompt embeddings / parameters of the model."""
    return prompts.numel() / sum(p.numel() for p in model.parameters())


# -- the drafter ---------------------------------------------------------------------------------

class _Shape:
    """A template with p prompt tokens after every node: the full tree's structure and the prompt
    tokens' embeddings, built once; each step only fills in the tokens."""

    def __init__(self, template: TreeTemplate, p: int, prompts: torch.Tensor):
        self.template, self.p = template, p
        n = len(template)
        parents = list(template.parents)
        for node in range(n):
            for k in range(p):
                parents.append(node if k == 0 else len(parents) - 1)
        self.full = TokenTree(torch.zeros(len(parents), dtype=torch.long), torch.tensor(parents))
        self.owner = torch.arange(n).repeat_interleave(p)  # [n * p] the node each prompt token follows
        self.depth = torch.tensor(template.depth_list[1:]) - 1  # [n - 1] guess depth index of each node
        self.ranks = torch.tensor(template.ranks[1:])
        self.embeds = prompts[:p].repeat(n, 1)  # [n * p, H]: node i's prompt tokens are rows i*p..

    def fill(self, root: int, guesses: torch.Tensor | None) -> Draft:
        """guesses: [>= depth, k] token ids per depth."""
        tokens = torch.empty(len(self.template), dtype=torch.long)
        tokens[0] = root
        if len(tokens) > 1:
            tokens[1:] = guesses[self.depth, self.ranks]
        full_tokens = torch.cat([tokens, tokens[self.owner]])  # prompt tokens named after their node
        return Draft(self.template.shape.with_tokens(tokens), extra=ExtraNodes(self.full.with_tokens(full_tokens), self.embeds))


def tree_for(prompts: Prompts, budget: int, vocab_size: int) -> dict:
    """The stored or built tree for a budget, rebuilt without the ranks a small vocabulary lacks."""
    spec = prompts.tree(budget)
    if any(r >= vocab_size for path in spec["paths"] for r in path):
        spec = build_tree([row[:vocab_size] for row in prompts.accuracy], budget)
    return spec


def auto_budget(prompts: Prompts, vocab_size: int, cost: list[float]) -> int:
    """The budget whose tree commits the most tokens per second: argmax of (1 + expected accepted
    length) / cost[tokens per forward], over the budgets whose trees the curve covers (cost[n]:
    seconds of an n-token forward; the smallest budget on ties), or 1, plain steps (one token in
    cost[1]), when no tree is expected to beat them."""
    best, best_rate = 1, 1.0 / cost[1]
    for budget in range(2, len(cost)):
        spec = tree_for(prompts, budget, vocab_size)
        if spec["tokens"] >= len(cost):
            continue
        rate = (1.0 + spec["expected"]) / cost[spec["tokens"]]
        if rate > best_rate * (1 + 1e-9):
            best, best_rate = budget, rate
    return best


class PromptDrafter:
    """Guesses from the prompt tokens of the last accepted node, verified with the next ones."""

    def __init__(self, prompts: Prompts, budget: int, vocab_size: int):
        spec = tree_for(prompts, budget, vocab_size)
        self.prompts, self.p = prompts.embeds, int(spec["prompts"])
        self.template = TreeTemplate.from_paths(spec["paths"]) if spec["paths"] else TreeTemplate((-1,), (-1,))
        self.k = max(self.template.max_rank + 1, 1)
        self._shapes: dict[int, _Shape] = {}
        self.guesses: torch.Tensor | None = None  # [p, k]

    def propose(self, ctx: torch.Tensor, max_depth: int) -> Draft:
        # keyed by the depth kept, not by max_depth (the tokens left, which changes every step: keyed by
        # it, the shape and its masks were built anew at every step)
        depth = min(max_depth, self.template.depth) if self.guesses is not None else 0
        if depth not in self._shapes:
            self._shapes[depth] = _Shape(self.template.truncate(depth), self.p, self.prompts)
        return self._shapes[depth].fill(int(ctx[-1]), self.guesses)

    def observe(self, draft: Draft, path: list[int], logits: torch.Tensor) -> None:
        n, last = len(draft.tree), path[-1]
        rows = logits[n + last * self.p: n + (last + 1) * self.p]  # [p, V] the accepted node's prompts
        self.guesses = rows.topk(min(self.k, rows.shape[-1]), dim=-1).indices


@register("ppd", family="speculative", config=PPDConfig, lossless="sampling", needs=("tree_mask", "embeds"),
          budget=lambda b, given: {"budget": b})
def run(req, config: PPDConfig):
    prompts = resolve_prompts(config, req.target)
    budget = config.budget
    if budget is None:
        budget = auto_budget(prompts, req.target.vocab_size, costs.curve(req.target, context=len(req.prompt)))
        if budget == 1:
            return autoregressive.plain(req)  # no prompt tokens forwarded: plain steps
    return speculative.decode(req, PromptDrafter(prompts, budget, req.target.vocab_size))
