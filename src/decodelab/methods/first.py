"""FiRST: router-selected layer skipping; routers read the prompt, the decode skips the layers they
drop (lossy).

Paper: Jain, Sharma, Mukherjee, Pal 2024, "FiRST: Finetuning Router-Selective Transformers for
Input-Adaptive Latency Reduction", arXiv 2410.12513 (Findings of EMNLP 2025).

Notation: L decoder layers f_1 .. f_L; x_{i,t} = the input of layer i at token t; router i gives a
gate g_{i,t} = sigmoid(w_i . x_{i,t} / rms(x_{i,t}) + b_i) in (0, 1); the prompt's gate for layer i
is G_i = the mean of g_{i,t} over the prompt's P tokens; tau = `threshold`. The routers are
trained on the frozen model by `decodelab train first` (train/first.py) with soft gating
y = x + G (f(x) - x) and loss = LM loss + lambda * mean_i G_i (lambda = the sparsity weight).

Decoding: every prompt token runs every layer (so every layer's KV cache holds the prompt), and the
routers read the prompt's layer inputs on the way; the first new token comes from that full
forward. From then on every generated token bypasses the layers with G_i < tau (the residual stream
passes them unchanged; the adapter's "layer_skip" capability). The choice is fixed for the whole
decode, which keeps the KV cache consistent: a skipped layer gains no cache entries, and no later
token ever queries it. Greedy (argmax) and sampling (the request's sampler chain) both run through
the autoregressive loop; the target seen by the loop is `Routed`, which runs the prompt's forwards
in full and the later ones with the skip set.

Lossy: with skipped layers the output is not the base model's; the bench reads its quality against
greedy. Every gate >= tau (e.g. threshold=0, routers='init' or skip='') equals the base model
exactly.

Deviations and readings (where the text we could read does not say, the simplest faithful
reading): (1) a router is one linear layer on the RMS-normalised layer input (parameter-free
normalisation: the residual stream's scale grows with depth), and the prompt's decision is the
mean of its per-token gates; (2) no LoRA adapters (the paper's optional fine-tuning of the model
itself): the model stays frozen, only the routers train; (3) the whole prompt runs every layer,
the last prompt token included, so the first generated token is the base model's; (4) `skip`
overrides the routers (tests and ablations); (5) untrained routers ('init') start at
g = sigmoid(3) = 0.95, keeping every layer, as the recipe's initialisation does; (6) routers='auto'
finds the bundled head of the target's zoo name, trained with lambda 2 (code-target) or, where the
LM loss is much smaller, the lambda of AUTO_SPARSITY (tasks-ar: 0.01, from routers trained on task
examples cut at their prompt/answer split).
"""
from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import DecodeLabError
from ..loops import autoregressive
from ..options import Options, option
from ..registry import register
from ..models.base import Step

KIND = "first-routers"
INIT_BIAS = 3.0  # sigmoid(3) = 0.95: untrained routers keep every layer
DEFAULT_SPARSITY = 2.0  # the recipe's default lambda; routers='auto' picks the head trained with it
# routers='auto' for these zoo models picks the head trained with this lambda instead: task answers are
# near-deterministic (held-out LM loss 0.09 nats/token against code's ~3), so lambda 2 there skips every
# layer on every prompt; 0.01 skips layer 1 on 12% of held-out task prompts (tasks-ar-first-* cards)
AUTO_SPARSITY = {"tasks-ar": 0.01}


@dataclass(frozen=True, kw_only=True)
class FiRSTConfig(Options):
    routers: str = option("auto", "trained routers: a directory or a bundled name under zoo/heads "
                                  "(code-target-first-LAMBDA, tasks-ar-first-LAMBDA), 'auto' (<target's zoo "
                                  f"name>-first-{DEFAULT_SPARSITY:g}, or the lambda of AUTO_SPARSITY: "
                                  f"tasks-ar-first-{AUTO_SPARSITY['tasks-ar']:g}), or 'init' (untrained: every "
                                  "layer kept)")
    threshold: float = option(0.5, "tau: keep layer i when the mean of its router's gates over the prompt is "
                                   ">= tau (0 keeps every layer)", lo=0, hi=1)
    skip: str | None = option(None, "decoder layers to skip for generated tokens, instead of the routers' "
                                    "choice: '1,2' or '1+2' (bench rows); '' skips none")

    def validate(self) -> None:
        if self.skip is not None:
            parse_layers(self.skip)


def parse_layers(text: str) -> frozenset[int]:
    try:
        layers = frozenset(int(s) for s in re.split(r"[,+\s]+", text) if s)
    except ValueError:
        layers = frozenset({-1})
    if any(i < 0 for i in layers):
        raise DecodeLabError(f"skip must be layer indices >= 0 separated by ',' or '+', got '{text}'")
    return layers


class Routers(torch.nn.Module):
    """One linear router per decoder layer: g = sigmoid(w_i . x / rms(x) + b_i)."""

    def __init__(self, layers: int, hidden: int):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(layers, hidden))  # [L, H]
        self.bias = torch.nn.Parameter(torch.full((layers,), INIT_BIAS))  # [L]

    def gate(self, x: torch.Tensor, i: int) -> torch.Tensor:
        """Gates of layer i for its inputs x [..., N, H] -> [..., N]."""
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)
        return torch.sigmoid(x @ self.weight[i] + self.bias[i])

    def gates(self, layers: torch.Tensor) -> torch.Tensor:
        """Every layer's gates for Step.layers [L, N, H] -> [L, N]."""
        return torch.stack([self.gate(layers[i], i) for i in range(len(self.bias))])


def save_routers(out: Path, routers: Routers, meta: dict) -> None:
    from safetensors.torch import save_file

    save_file({"weight": routers.weight.detach().contiguous(), "bias": routers.bias.detach().contiguous()},
              out / "model.safetensors")
    layers, hidden = routers.weight.shape
    (out / "config.json").write_text(json.dumps({"kind": KIND, "layers": layers, "hidden": hidden, **meta},
                                                indent=2) + "\n")


def load_routers(path: str | Path) -> tuple[Routers, dict]:
    """Trained routers from a directory or a name under zoo/heads."""
    from safetensors.torch import load_file

    from ..train.acceptance_head import head_dir

    p = head_dir(path, "FiRST routers", "decodelab train first --target MODEL --sparsity LAMBDA")
    try:
        cfg = json.loads((p / "config.json").read_text())
        if cfg.get("kind") != KIND:
            raise ValueError(f"config.json is not FiRST routers' (kind {cfg.get('kind')!r})")
        tensors = load_file(p / "model.safetensors")
        routers = Routers(cfg["layers"], cfg["hidden"])
        routers.load_state_dict(tensors)
    except Exception as e:  # noqa: BLE001  (corrupt file, wrong shapes, another head)
        raise DecodeLabError(f"the FiRST routers at '{p}' are unusable: {e}") from None
    return routers.eval(), cfg


def resolve_routers(config: FiRSTConfig, target) -> Routers:
    cfg = target.config.get_text_config(decoder=True)
    layers, hidden = cfg.num_hidden_layers, cfg.hidden_size
    if config.routers == "init":
        return Routers(layers, hidden).eval()
    name = config.routers
    if name == "auto":
        from ..train.learn2pd import bundled_head, model_name

        lam = AUTO_SPARSITY.get(model_name(target) or "", DEFAULT_SPARSITY)
        name = bundled_head(target, f"first-{lam:g}", "first", "routers")
    routers, _ = load_routers(name)
    if tuple(routers.weight.shape) != (layers, hidden):
        raise DecodeLabError(f"the FiRST routers '{name}' are for {routers.weight.shape[0]} layers of width "
                             f"{routers.weight.shape[1]}, the target has {layers} of width {hidden}; train them for "
                             "it with `decodelab train first --target MODEL`")
    return routers


class Routed:
    """The target as the autoregressive loop sees it: forwards of prompt tokens run every layer and
    the routers read them; the first forward past the prompt fixes the skip set, which every later
    forward bypasses."""

    forward_last = None  # models.base.forward_last: no last-row shortcut, every forward comes here

    def __init__(self, target, routers: Routers, threshold: float, prompt_len: int,
                 forced: frozenset[int] | None = None):
        self.target, self.routers, self.threshold = target, routers, threshold
        self.prompt_len, self.forced = prompt_len, forced
        self.tokenizer, self.vocab_size, self.counter = target.tokenizer, target.vocab_size, target.counter
        self.reset()

    @property
    def cache_len(self) -> int:
        return self.target.cache_len

    def reset(self) -> None:
        self.target.reset()
        self.sums = torch.zeros(len(self.routers.bias))  # [L] summed gates of the prompt tokens seen
        self.seen = 0
        self.skip: frozenset[int] | None = None  # fixed at the first generated token

    @property
    def gates(self) -> torch.Tensor:
        """G: each layer's mean gate over the prompt tokens forwarded so far. [L]"""
        return self.sums / max(self.seen, 1)

    @torch.no_grad()
    def forward(self, ids: torch.Tensor, positions: torch.Tensor, tree_mask=None, hidden=False) -> Step:
        if self.skip is not None:  # fixed: the loop forwards generated tokens only from here on
            return self.target.forward(ids, positions, tree_mask, hidden=hidden, skip=self.skip)
        first, last = int(positions.min()), int(positions.max())
        if last < self.prompt_len:  # the prompt: every layer, read by the routers
            step = self.target.forward(ids, positions, tree_mask, hidden=hidden, layers=True)
            self.sums += self.routers.gates(step.layers).sum(-1)
            self.seen += len(ids)
            return Step(logits=step.logits, hidden=step.hidden)
        if first < self.prompt_len:
            raise DecodeLabError("first: one forward holds prompt tokens and generated ones")
        self.skip = self.forced if self.forced is not None else \
            frozenset(i for i, g in enumerate(self.gates.tolist()) if g < self.threshold)
        return self.target.forward(ids, positions, tree_mask, hidden=hidden, skip=self.skip)


@register("first", family="autoregressive", config=FiRSTConfig, lossless=None, needs=("layer_skip",), history=True)
def run(req, config: FiRSTConfig):
    routers = resolve_routers(config, req.target)
    forced = None if config.skip is None else parse_layers(config.skip)
    if forced and max(forced) >= len(routers.bias):
        raise DecodeLabError(f"first: cannot skip layer {max(forced)}: the target has {len(routers.bias)} decoder layers")
    req = dataclasses.replace(req, target=Routed(req.target, routers, config.threshold, len(req.prompt), forced))
    return autoregressive.plain(req)
