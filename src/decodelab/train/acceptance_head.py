"""SpecDec++ acceptance head: model, training data, training and held-out evaluation.

Huang et al. 2024, "SpecDec++: Boosting Speculative Decoding via Adaptive Candidate Lengths",
arXiv 2405.19715. The head reads the frozen draft's last hidden state at a draft token and
predicts P(that token is accepted by the target): `blocks` residual blocks x + SiLU(Linear(x)),
then Linear(h, 2) (class 1 = accept).

Training data (the paper's recipe, as the method card states it):
1. prompts cut from the zoo corpus's TRAIN split; the target generates a continuation Y by
   sampling (temperature 1), so the head sees the target's own text;
2. teacher-forced on prompt + Y, target p_t and draft q_t at every response position; the draft
   samples X_t ~ q_t and the soft label is y_t = min(1, p_t(X_t) / q_t(X_t)) (the probability that
   speculative sampling accepts X_t);
3. the draft reads the mixed sequence Z: Z_t = X_t, except that with prob. 0.15 Z_t = Y_t and the
   position's loss is ignored; the head reads the draft's hidden state at Z_t;
4. loss: cross-entropy with soft labels, weight 6 on the reject class.
Reading chosen where the paper is loose: p_t, q_t and X_t are computed on the target prefix
Y_<t, while the head's hidden state has seen the mixed prefix Z_<t (one forward for the labels,
one for the features, as in the reference's offline data building).
Option (not in the paper): `labels="greedy"` builds labels for greedy decoding instead
(X_t = argmax q_t, y_t = 1 when argmax p_t = X_t), for heads used with greedy verification.
Held-out evaluation uses prompts from the held-out split and reports the Brier score and AUC of
the head's P(accept) against REALISED acceptance (a Bernoulli(y_t) draw), and Brier against y_t.
"""
from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from ..errors import DecodeLabError

HEADS_DIR = Path(__file__).resolve().parent.parent / "zoo" / "heads"


def head_dir(path: str | Path, what: str, train: str) -> Path:
    """The directory of a trained head: `path` itself, or the name of one bundled under zoo/heads.
    Refuses one without config.json and model.safetensors, naming `what` and the `train` command."""
    p = Path(path)
    if not p.is_dir():
        p = HEADS_DIR / str(path)
    if not (p / "config.json").is_file() or not (p / "model.safetensors").is_file():
        raise DecodeLabError(f"no {what} at '{path}' (expected config.json and model.safetensors); train one with "
                             f"`{train}`")
    return p
ACCEPT = 1


class AcceptanceHead(nn.Module):
    def __init__(self, hidden: int, blocks: int = 3):
        super().__init__()
        self.hidden, self.n_blocks = hidden, blocks
        self.blocks = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(blocks))
        self.out = nn.Linear(hidden, 2)
        for b in self.blocks:  # start each residual block as the identity
            nn.init.zeros_(b.weight)
            nn.init.zeros_(b.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:  # [..., H] -> logits [..., 2]
        for b in self.blocks:
            h = h + nn.functional.silu(b(h))
        return self.out(h)

    @torch.no_grad()
    def p_accept(self, h: torch.Tensor) -> torch.Tensor:  # [..., H] -> [...]
        return torch.softmax(self.forward(h.float()), dim=-1)[..., ACCEPT]

    def save(self, out_dir: str | Path, meta: dict) -> Path:
        from safetensors.torch import save_file

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, out / "model.safetensors")
        (out / "config.json").write_text(json.dumps({"hidden": self.hidden, "blocks": self.n_blocks, **meta},
                                                    indent=2) + "\n")
        return out


def load_head(path: str | Path) -> tuple[AcceptanceHead, dict]:
    """A saved head and its config (training figures included). `path`: a head directory or the
    name of a bundled head under zoo/heads."""
    from safetensors.torch import load_file

    p = head_dir(path, "acceptance head", "decodelab train acceptance-head")
    try:
        cfg = json.loads((p / "config.json").read_text())
        head = AcceptanceHead(cfg["hidden"], cfg["blocks"])
        head.load_state_dict(load_file(p / "model.safetensors"))
    except Exception as e:  # noqa: BLE001  (corrupt file, wrong shapes)
        raise DecodeLabError(f"the acceptance head at '{p}' is corrupt: {e}") from None
    return head.eval(), cfg


@dataclass(frozen=True, kw_only=True)
class HeadRecipe:
    prompts: int = 384  # training prompts
    heldout_prompts: int = 64
    prompt_tokens: int = 48
    response_tokens: int = 64
    replace_prob: float = 0.15  # draft token -> target token, loss ignored
    reject_weight: float = 6.0
    blocks: int = 3
    epochs: int = 30
    lr: float = 1e-3
    batch_size: int = 512
    seed: int = 0
    labels: str = "soft"  # "soft": X ~ q, y = min(1, p/q); "greedy": X = argmax q, y = [argmax p == X]

    def __post_init__(self):
        if self.labels not in ("soft", "greedy"):
            raise DecodeLabError(f"labels must be 'soft' or 'greedy', got '{self.labels}'")
        if min(self.prompts, self.heldout_prompts, self.prompt_tokens, self.response_tokens, self.epochs) < 1:
            raise DecodeLabError("acceptance-head recipe: counts must be positive")
        if not 0.0 <= self.replace_prob < 1.0:
            raise DecodeLabError(f"replace_prob must be in [0, 1), got {self.replace_prob}")


def train_prompts(tokenizer, n: int, prompt_tokens: int, seed: int) -> list[list[int]]:
    """n prompts of prompt_tokens tokens from random line starts of random TRAIN-split files."""
    from ..zoo import corpus

    rng, files, out = random.Random(seed), corpus.code_files("train"), []
    while len(out) < n:
        lines = corpus.read_code(rng.choice(files)).splitlines(keepends=True)
        if len(lines) < 4:
            continue
        ids = tokenizer("".join(lines[rng.randrange(len(lines)):][:200]), add_special_tokens=False)["input_ids"]
        if len(ids) >= prompt_tokens:
            out.append(ids[:prompt_tokens])
    return out


def heldout_prompts(tokenizer, n: int, prompt_tokens: int, seed: int) -> list[list[int]]:
    from ..zoo.corpus import heldout_prefixes

    texts = heldout_prefixes(n, prompt_tokens, seed=seed, tokenizer=tokenizer)
    ids = [tokenizer(t, add_special_tokens=False)["input_ids"][:prompt_tokens] for t in texts]
    return [x for x in ids if len(x) == prompt_tokens]


@torch.no_grad()
def build_examples(target, draft, prompts: list[list[int]], recipe: HeadRecipe, gen: torch.Generator,
                   batch: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """(features [M, H], soft labels [M]) for the kept (not replaced) response positions.

    target, draft: transformers causal LMs sharing a tokenizer."""
    feats, labels = [], []
    for i in range(0, len(prompts), batch):
        x = torch.tensor(prompts[i:i + batch])  # [B, P]
        torch.manual_seed(int(torch.randint(0, 2**31 - 1, (), generator=gen)))  # generate() draws globally
        seq = target.generate(x, attention_mask=torch.ones_like(x), do_sample=True, top_k=0, top_p=1.0,
                              temperature=1.0, max_new_tokens=recipe.response_tokens,
                              min_new_tokens=recipe.response_tokens)  # [B, P + R]
        n_p, n_r = x.shape[1], seq.shape[1] - x.shape[1]
        p = torch.softmax(target(seq).logits[:, n_p - 1:-1].float(), -1)  # [B, R, V] for Y_t given Y_<t
        q = torch.softmax(draft(seq).logits[:, n_p - 1:-1].float(), -1)  # [B, R, V]
        if recipe.labels == "greedy":  # what greedy verification accepts
            xs = q.argmax(-1)  # [B, R]
            y = (p.argmax(-1) == xs).float()
        else:
            xs = torch.multinomial(q.reshape(-1, q.shape[-1]), 1, generator=gen).reshape(q.shape[:2])  # [B, R]
            px, qx = p.gather(-1, xs[..., None])[..., 0], q.gather(-1, xs[..., None])[..., 0]
            y = torch.clamp(px / qx, max=1.0)  # [B, R]
        keep = torch.rand(xs.shape, generator=gen) >= recipe.replace_prob  # [B, R]
        z = torch.where(keep, xs, seq[:, n_p:])
        h = draft(torch.cat([x, z], 1), output_hidden_states=True).hidden_states[-1][:, n_p:]  # [B, R, H]
        feats.append(h[keep].float())
        labels.append(y[keep])
        assert n_r == recipe.response_tokens
    return torch.cat(feats), torch.cat(labels)


def weighted_soft_ce(logits: torch.Tensor, y: torch.Tensor, reject_weight: float) -> torch.Tensor:
    """-(y log P(accept) + w (1 - y) log P(reject)), averaged. logits [M, 2], y [M]."""
    logp = torch.log_softmax(logits, -1)
    return -(y * logp[:, ACCEPT] + reject_weight * (1 - y) * logp[:, 1 - ACCEPT]).mean()


def fit(feats: torch.Tensor, y: torch.Tensor, recipe: HeadRecipe, gen: torch.Generator) -> AcceptanceHead:
    torch.manual_seed(recipe.seed)
    head = AcceptanceHead(feats.shape[-1], recipe.blocks)
    opt = torch.optim.AdamW(head.parameters(), lr=recipe.lr, weight_decay=0.01)
    for _ in range(recipe.epochs):
        order = torch.randperm(len(y), generator=gen)
        for j in range(0, len(y), recipe.batch_size):
            idx = order[j:j + recipe.batch_size]
            loss = weighted_soft_ce(head(feats[idx]), y[idx], recipe.reject_weight)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return head.eval()


def auc(scores: torch.Tensor, outcome: torch.Tensor) -> float:
    """Area under the ROC curve (Mann-Whitney U, ties counted half). scores, outcome: [M]."""
    pos, neg = scores[outcome.bool()], scores[~outcome.bool()]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    ranks = torch.empty(len(scores), dtype=torch.float64)
    s, order = torch.sort(scores.double())
    ranks[order] = torch.arange(1, len(scores) + 1, dtype=torch.float64)
    for v in torch.unique(s[1:][s[1:] == s[:-1]]):  # average ranks over ties
        tie = scores.double() == v
        ranks[tie] = ranks[tie].mean()
    u = ranks[outcome.bool()].sum() - len(pos) * (len(pos) + 1) / 2
    return float(u / (len(pos) * len(neg)))


def evaluate(head: AcceptanceHead, feats: torch.Tensor, y: torch.Tensor, gen: torch.Generator,
             reject_weight: float = 1.0) -> dict:
    """Brier and AUC against realised acceptance. The reject weight w biases P(accept) down on purpose
    (the weighted loss is minimised at P = y / (y + w (1 - y))); `brier_realised_unweighted` scores
    the inverse map w P / (1 - P + w P), the head's calibrated estimate of y."""
    pred = head.p_accept(feats)
    calibrated = reject_weight * pred / (1 - pred + reject_weight * pred)
    realised = (torch.rand(y.shape, generator=gen) < y).float()  # what speculative sampling would do
    base = realised.mean()
    return {"examples": len(y), "acceptance_rate": round(float(realised.mean()), 4),
            "brier_realised": round(float(((pred - realised) ** 2).mean()), 4),
            "brier_constant_baseline": round(float(((base - realised) ** 2).mean()), 4),
            "brier_realised_unweighted": round(float(((calibrated - realised) ** 2).mean()), 4),
            "brier_soft_label": round(float(((pred - y) ** 2).mean()), 4),
            "auc_realised": round(auc(pred, realised), 4),
            "mean_pred": round(float(pred.mean()), 4)}


def train_head(target, draft, tokenizer, recipe: HeadRecipe, log=print) -> tuple[AcceptanceHead, dict]:
    """Build data with the frozen pair, fit the head, evaluate on held-out prompts.
    target, draft: transformers models. Returns (head, metrics)."""
    gen = torch.Generator().manual_seed(recipe.seed)
    log(f"building training data: {recipe.prompts} prompts x {recipe.response_tokens} target tokens")
    tr_x, tr_y = build_examples(target, draft, train_prompts(tokenizer, recipe.prompts, recipe.prompt_tokens,
                                                             recipe.seed), recipe, gen)
    log(f"building held-out data: {recipe.heldout_prompts} prompts")
    ho_x, ho_y = build_examples(target, draft, heldout_prompts(tokenizer, recipe.heldout_prompts,
                                                               recipe.prompt_tokens, recipe.seed + 1), recipe, gen)
    log(f"fitting the head on {len(tr_y)} examples ({recipe.epochs} epochs)")
    head = fit(tr_x, tr_y, recipe, gen)
    w = recipe.reject_weight
    metrics = {"train": evaluate(head, tr_x, tr_y, gen, w), "heldout": evaluate(head, ho_x, ho_y, gen, w),
               "recipe": asdict(recipe)}
    log(json.dumps(metrics["heldout"]))
    return head, metrics
