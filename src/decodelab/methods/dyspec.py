"""DySpec: dynamic token tree (Xiong et al. 2024, "DySpec: Faster Speculative Decoding with Dynamic
Token Tree Structure", arXiv 2410.11744).

Notation: p = target, q = draft (processed by the same SamplingConfig), v(n) = value of tree node n
= product of q along its root path (v(root) = 1), the estimate of the probability that n is
accepted. The tree grows greedily at run time: a max-heap holds one candidate per node, "the next
child of n"; pop the best, add that child, push its next sibling and (once the draft has scored the
new node) its own first child; stop at `budget` draft tokens. The whole tree is verified in one
target forward with a tree attention mask: greedy tree verification (greedy), recursive rejection
sampling (sampling, core.verify.rejection_verify). Lossless for greedy and sampling.

The paper's value rule and sibling sampling are not published in detail; the reading chosen:
- Greedy: the children of n are q's tokens in descending order; candidate value v(n) q_n(x).
- Sampling: children are drawn lazily WITHOUT replacement from q_n (each popped candidate draws
  one token from q_n with the earlier siblings removed), so siblings are in draw order as
  recursive rejection sampling needs. A candidate's value must not depend on the token it will
  become (that would bias which draws enter the tree and break losslessness), so it is
  v(n) E_{x ~ q_res}[q_n(x)], q_res = q_n without the drawn siblings, renormalised. Once drawn,
  a node's value is v(n) q_n(x), as in greedy.
Deviation, for speed: up to `expand` candidates are popped per round and the draft scores all new
nodes in ONE tree forward (the paper expands one node per draft call). A round ends early when the
best candidate would be the first child of a node popped in this round (not scored yet), whose
value is estimated as v(node) times a running mean of the first child's share (max q when greedy,
sum q^2 when sampling); so rounds batch competing siblings and a confident draft grows a chain,
one draft forward per depth. `expand=1` is the exact greedy growth. Each round re-forwards the tree
so far (our adapters' tree masks cover one forward only). The round rule looks only at values of
tokens already drawn, never at the token a candidate will become, so sampling stays exact.

Tree size. `budget="auto"` (the default; the paper fixes the budget, as a fixed `budget` still
does) stops the growth where one more node would lower the expected tokens per second. A tree of n
nodes is expected to commit E = 1 + rho * (sum of its values) tokens in a step costing
T = h + c(n + 1) + the draft's forwards, c the target's measured forward cost curve at this
context (models/costs.py), the draft's forwards from its own curve, h the step's cost outside the
forwards (the Python of growing and verifying the tree, measured by the clock: the median of the
recent steps' time beyond the model, kept for the process like AutoLength's), rho the calibration
of the values (accepted tokens over summed values in this generation's verified steps, prior 1
worth 2 tokens). The next candidate, of value v, is added while rho v / (c(n + 2) - c(n + 1)) >
E / T; another draft round is paid for while the best child it would score is worth its forward
too. The rule reads values of tokens already drawn and the next candidate's value before it is
drawn, as the round rule does, so sampling stays exact. On zoo:code-target (torch, 1 thread,
benchmarks/dyspec.toml, HumanEval / held-out code) auto ran 1.06 / 0.91x greedy, the best fixed
budget (4) 1.12 / 1.01x and the card's 24 0.71 / 0.76x: GPU-shaped on this CPU. At most
MAX_AUTO nodes. And when, at the measured costs, no tree could beat plain decoding even if every
node were accepted (the best chain of n <= MAX_AUTO nodes, one draft round per depth, against a
plain step's time, measured while resting, before that the curve's 1-token forward), the
generation rests, as core.costs.AutoLength.rest has sps do: the speculative loop takes PROBE_MAX
plain steps without the drafter, then one drafted step measures the costs again; the draft catches
up on the rested tokens in one forward. The generation also rests when the tree it last grew,
at the acceptance measured since (rho), was expected to commit fewer tokens per second than plain
steps: PROBE_EVERY steps, twice as many after each probe that does not pay either (up to
PROBE_MAX), back to PROBE_EVERY after one that does. (The growth rule compares each node with the
tree without it, never with a plain step, which skips drafting's fixed costs: on this host's
zoo:code-target on llama.cpp, where a step's Python alone costs more than a 1-token forward, the
auto trees ran at 0.57-0.83x greedy; resting, 0.93x: a plain step in a tree-capable context
costs more, and so do the probes.) What the clock measured (the time beyond the model, a plain
step's time), the probe wait and the steps of a rest that a generation had no room for are kept
for the process per model pair: a generation starts from what the last one measured and rests
through those steps first (counted in steps, not time: in the bench other rows' generations run
in between, and a rest kept by wall time ended within one or two of this row's generations, each
then opening with a probe and the draft's prefill of the prompt), then probes.
"""
from __future__ import annotations

import heapq
import math
import statistics
import time
from collections import deque
from dataclasses import dataclass

import torch

from ..core.costs import PROBE_EVERY, PROBE_MAX
from ..core.sampling import sample
from ..core.tree import Draft, TokenTree
from ..loops import speculative
from ..loops.drafting import DraftModelDrafter, stack_q
from ..models import costs
from ..options import Options, option
from ..registry import register


@dataclass(frozen=True, kw_only=True)
class DySpecConfig(Options):
    budget: int | None = option(None, "draft tokens per step (tree nodes below the root); auto: grown while a "
                                      "node adds more expected tokens than its measured cost", lo=1, hi=256, auto=True)
    expand: int = option(8, "candidates popped per draft forward (1: the paper's one node per call)", lo=1, hi=256)


class _Node:
    """An expanded node: its depth, log value, q and the state of its sibling draws."""

    def __init__(self, depth: int, logv: float, q: torch.Tensor, greedy: bool, most: int):
        self.depth, self.logv, self.q = depth, logv, q  # q: [V]
        # greedy: the `most` (= budget) likeliest tokens, in descending order
        self.order = torch.topk(q, min(most, q.shape[-1])).indices.tolist() if greedy else None
        self.residual = None if greedy else q.clone()  # q without the drawn children (sampling)
        self.drawn = 0

    def has_next(self) -> bool:
        if self.order is not None:
            return self.drawn < len(self.order)
        return bool(self.residual.sum() > 0)

    def next_value(self) -> float:
        """log value of the next child, computed before it is drawn."""
        if self.order is not None:
            return self.logv + float(self.q[self.order[self.drawn]].log())
        r = self.residual / self.residual.sum()
        return self.logv + float((r * self.q).sum().log())

    def draw(self, rng: torch.Generator | None) -> int:
        if self.order is not None:
            x = self.order[self.drawn]
        else:
            x = int(sample(self.residual / self.residual.sum(), rng))
            self.residual[x] = 0.0
        self.drawn += 1
        return x


MAX_AUTO = 64  # most nodes an auto tree grows to
RECENT = 9  # step times kept for the clock's median
RECURVE = 16  # context tokens between re-reads of the cost curves


def _extended(curve: list[float], n: int) -> float:
    """curve[n], extended past its end along its last four points' slope."""
    if n < len(curve):
        return curve[n]
    last = len(curve) - 1
    back = max(1, last - 4)
    return curve[last] + (n - last) * max(curve[last] - curve[back], 0.0) / (last - back)


class AutoSize:
    """budget="auto": the marginal-rate stop rule of the module doc. One per generation; `start`
    at every propose, `worth` before each node, `worth_round` before each draft round, `observe`
    after verification."""

    def __init__(self, req, clock=time.perf_counter):
        self.target, self.draft, self.clock = req.target, req.draft, clock
        self.new, self.end = req.max_new_tokens, len(req.prompt) + req.max_new_tokens  # the generation's length, end
        memo = costs.clock(req.target, "dyspec", req.draft)  # shared by the generations of this pair
        self.memo = memo
        self.seen: deque = memo.setdefault("beyond", deque(maxlen=RECENT))
        self.accepted, self.valued = 2.0, 2.0  # rho = accepted / valued, prior 1 worth 2 tokens
        self._context = None  # the context length the curves were read at
        self._at: int | None = None  # the context length at the last step's start
        self._t0, self._model, self._first = None, 0.0, True
        self._resting: tuple[float, int] | None = None  # (clock, steps) of the rest under way
        self._hopeless: tuple | None = None  # ((plain step, context), the h from which no tree pays)
        self._tree: tuple[float, float] | None = None  # the last verified tree's (summed values, modelled cost)

    def start(self, context: int) -> None:
        """A step begins: the previous one's time beyond the model is kept, the curves read."""
        now = self.clock()
        if self._resting is not None:  # the rest's plain steps, timed together
            t, k = self._resting
            step, plain = (now - t) / k, self.memo.get("plain")
            self.memo["plain"] = step if plain is None else 0.5 * (plain + step)
            self._resting, self._t0 = None, None  # the draft catches up now: this step is not timed
        if self._t0 is not None and not self._first:  # the first step pays the draft's prefill
            self.seen.append(now - self._t0 - self._model)
        self._first = self._t0 is None
        self._t0, self._at = now, context
        self._curves(context)
        h = self._beyond()
        self.rho = self.accepted / self.valued
        self.n, self.value = 0, 0.0
        self.cost = h + self.c[1] + self.d[1]  # the root step and the draft's catching up
        self._model = self.cost - h

    def pause(self) -> None:
        """A step without a draft (nothing left to draft): neither timed nor calibrated."""
        self._t0, self.n, self.value = None, 0, 0.0

    @property
    def rate(self) -> float:
        return (1.0 + self.rho * self.value) / self.cost

    def _pays(self, v: float, more: float) -> bool:
        """Would value v for `more` seconds raise the expected tokens per second?"""
        return self.n < MAX_AUTO and (1.0 + self.rho * (self.value + v)) / (self.cost + more) > self.rate

    def _node(self) -> float:
        """The target's extra cost for one more tree node."""
        return _extended(self.c, self.n + 2) - _extended(self.c, self.n + 1)

    def worth(self, v: float) -> bool:
        """Add the next candidate (value v)? Books it when so."""
        step = self._node()
        if not self._pays(v, step):
            return False
        self.n, self.value, self.cost, self._model = self.n + 1, self.value + v, self.cost + step, self._model + step
        return True

    def worth_round(self, v: float, nodes: int) -> bool:
        """Pay a draft forward of `nodes` tree nodes to score children whose best is worth v? Books
        the forward when so."""
        fwd = _extended(self.d, nodes)
        if not self._pays(v, self._node() + fwd):
            return False
        self.cost, self._model = self.cost + fwd, self._model + fwd
        return True

    def observe(self, accepted: int) -> None:
        self.accepted += accepted
        self.valued += self.value
        self._tree = (self.value, self.cost)

    def _curves(self, context: int) -> None:
        if self._context is None or abs(context - self._context) >= RECURVE:
            self._context = context
            self.c, self.d = costs.curve(self.target, context=context), costs.curve(self.draft, context=context)

    def _beyond(self) -> float:
        return max(statistics.median(self.seen), 0.0) if self.seen else 0.0

    def rest(self) -> int:
        """Plain steps to take next: PROBE_MAX when no tree could pay at the measured costs; the probe
        wait when the last tree, at the acceptance measured since, was expected to commit fewer
        tokens per second than plain steps (the wait doubles from PROBE_EVERY to PROBE_MAX while the
        probes after it do not pay either); else 0. A rest outlives its generation (kept for the
        process like the step times): the steps it had no room for are the next generations' first
        ones (counted by their max_new_tokens; one that ends early at EOS counts in full), and then a
        generation's first step probes."""
        tree, self._tree = self._tree, None
        if not self.seen or self._resting is not None:
            return 0
        if self._at is None:  # the steps of a rest that the last generations began and did not finish
            left = self.memo.pop("resting", 0)
            if left <= 0:
                return 0  # none: this generation probes at its first step
            if left > self.new:
                self.memo["resting"] = left - self.new  # it outlasts this generation too
            self._resting = (self.clock(), left)
            return left
        key = (self.memo.get("plain") or self.c[1], self._context)  # start() has read the curves
        if self._hopeless is None or self._hopeless[0] != key:
            # a chain of n always-accepted nodes loses to plain steps when (1 + n) plain <= h + c(n + 1)
            # + its draft rounds; no n wins once h reaches the largest gap, computed once per key
            # (h moves with nearly every step)
            plain, rounds, gap = key[0], self.d[1], -math.inf  # the root's draft step, then a round per depth
            for n in range(1, MAX_AUTO + 1):
                gap = max(gap, (1 + n) * plain - _extended(self.c, n + 1) - rounds)
                rounds += _extended(self.d, n)
            self._hopeless = (key, gap)
        steps = PROBE_MAX
        if self._beyond() < self._hopeless[1]:  # some tree could pay: did this generation's last one?
            if tree is None:
                return 0
            value, cost = tree
            wait = self.memo.get("wait", PROBE_EVERY)
            if (1.0 + self.accepted / self.valued * value) * key[0] >= cost:
                self.memo["wait"] = PROBE_EVERY
                return 0
            self.memo["wait"], steps = min(2 * wait, PROBE_MAX), wait
        self._resting, self._t0 = (self.clock(), steps), None
        beyond = steps - (self.end - self._at)  # the steps this generation has no room for
        if beyond > 0:
            self.memo["resting"] = beyond
        else:
            self.memo.pop("resting", None)
        return steps


class DySpecDrafter(DraftModelDrafter):
    def __init__(self, req, budget: int | None, expand: int, auto: AutoSize | None = None):
        super().__init__(req)
        self.auto = None if budget is not None else auto or AutoSize(req)
        self.budget, self.expand = budget if budget is not None else MAX_AUTO, expand
        self._first_child = 0.5  # running mean of the value share of a node's first child

    def propose(self, ctx: torch.Tensor, max_depth: int) -> Draft:
        tokens, parents = [int(ctx[-1])], [-1]
        if max_depth == 0:
            if self.auto is not None:
                self.auto.pause()
            return Draft(TokenTree.chain(tokens))
        greedy, auto = not self.sampling.do_sample, self.auto
        if auto is not None:
            auto.start(len(ctx))
        nodes = {0: _Node(0, 0.0, self.q(self.root_logits(ctx)), greedy, self.budget)}
        heap: list[tuple[float, int]] = []  # (-log value of its next child, node)
        self._push(heap, nodes, 0)
        done = False
        while heap and len(tokens) - 1 < self.budget and not done:
            fresh = []  # new nodes whose children the draft must score
            pending = -math.inf  # estimated log value of the best child of a fresh node
            while heap and len(fresh) < self.expand and len(tokens) - 1 < self.budget:
                if -heap[0][0] < pending:  # a fresh node's child would come next: score first
                    break
                if auto is not None and not auto.worth(math.exp(-heap[0][0])):
                    done = True
                    break
                _, n = heapq.heappop(heap)
                parent = nodes[n]
                x = parent.draw(self.rng)
                tokens.append(x)
                parents.append(n)
                self._push(heap, nodes, n)
                if parent.depth + 1 < max_depth:
                    logv = parent.logv + float(parent.q[x].log())
                    fresh.append((len(tokens) - 1, logv))
                    pending = max(pending, logv + math.log(self._first_child))
            if len(tokens) - 1 >= self.budget or done:
                break
            if not fresh:  # every new node is at the depth limit: keep widening
                continue
            if auto is not None and not auto.worth_round(math.exp(max(pending, -heap[0][0] if heap else -math.inf)),
                                                         len(tokens) - 1):
                break
            qs = self.q(self.score_tree(len(ctx), tokens, parents)[[i - 1 for i, _ in fresh]])  # [F, V]
            for (i, logv), q in zip(fresh, qs):
                nodes[i] = _Node(nodes[parents[i]].depth + 1, logv, q, greedy, self.budget)
                self._push(heap, nodes, i)
            factor = (qs.max(-1).values if greedy else (qs * qs).sum(-1)).mean()  # first child's share
            self._first_child = 0.7 * self._first_child + 0.3 * float(factor.clamp(1e-6, 1.0))
        tree = TokenTree.from_lists(tokens, parents)
        if greedy:
            return Draft(tree)
        rows = {i: nd.q for i, nd in nodes.items() if nd.drawn}
        return Draft(tree, stack_q(rows, len(tree), nodes[0].q.shape[-1]))

    def observe(self, draft: Draft, path: list[int], logits: torch.Tensor) -> None:
        super().observe(draft, path, logits)
        if self.auto is not None:
            self.auto.observe(len(path) - 1)

    def rest(self) -> int:
        return self.auto.rest() if self.auto is not None else 0

    @staticmethod
    def _push(heap, nodes, n: int) -> None:
        if nodes[n].has_next():
            heapq.heappush(heap, (-nodes[n].next_value(), n))


@register("dyspec", family="speculative", config=DySpecConfig, lossless="sampling", needs=("tree_mask",),
          draft=True, budget="budget")
def run(req, config: DySpecConfig):
    return speculative.decode(req, DySpecDrafter(req, config.budget, config.expand))
