"""EOSER + ASS: EOS Early Rejection (scale down the confidence of end-of-text proposals in early
steps) with the Ascending Step-Size schedule (step i unmasks 2^i positions), full-diffusion
decoding in about log2(G) steps.

Paper: Yang et al. 2025, "Taming Masked Diffusion Language Models via Consistency Trajectory
Reinforcement Learning with Fewer Decoding Step", arXiv 2509.23924; code
github.com/yjyddq/EOSER-ASS-RL (eval/generate.py: eoser_generate, eoser_ass_generate).

Notation as in loops/diffusion.py; i = the step (0-based), S = the steps. A position whose x0 is
end-of-text has its confidence multiplied by gamma_i before the low-confidence ranking (the
"trap" it avoids: a confident run of end-of-text filling the canvas early):
- `schedule="ascending"` (EOSER + ASS, the default): step i unmasks 2^i positions and the last
  step the rest (G = 2^S: 1, 2, ..., 2^(S-2), 2^(S-1) + 1); gamma_i = g + (1 - g)(2^(i+1) - 1) / 2^S,
  g = `gamma_min` (default 0.01), i.e. end-of-text is held back until most of the canvas is
  decided. `steps` defaults to floor(log2 G), their setting (7 steps for G = 128); one block.
- `schedule="even"` (EOSER alone over LLaDA's schedule): `steps` split evenly (default G: one
  position per step), gamma_i = g + (1 - g) i / (S - 1), g default 0.4; `block_length` as LLaDA.

Deviations: their code sizes G as 2^S and asserts it; here any G works (the last step takes what
is left, at most 2^(S-1) + G - 2^S). With blocks, the even schedule's i and S count the steps of
the current block (their code divides a per-block i by the total steps, which never reaches 1
with more than one block). Confidence in float64 (theirs: the model dtype; see core/unmask.py).
The paper's ASS also splits the canvas into blocks of growing size (block_num); the single-block
form is used here. Not lossless.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..core import unmask
from ..errors import DecodeLabError
from ..loops import diffusion
from ..options import Options, option
from ..registry import register


@dataclass(frozen=True, kw_only=True)
class EOSERConfig(Options):
    schedule: str = option("ascending", "ascending: step i unmasks 2^i positions (EOSER + ASS); even: LLaDA's "
                                        "even split (EOSER alone)", choices=("ascending", "even"))
    steps: int | None = option(None, "steps (None: floor(log2 max_new_tokens) ascending, max_new_tokens even)",
                               lo=1, hi=8192)
    gamma_min: float | None = option(None, "end-of-text confidence factor at the first step (None: 0.01 "
                                           "ascending, 0.4 even)", above=0, hi=1)
    block_length: int | None = option(None, "schedule=even: semi-autoregressive block length (None: one block)",
                                      lo=1, hi=8192)

    def validate(self) -> None:
        if self.schedule == "ascending" and self.block_length is not None:
            raise DecodeLabError("eoser: block_length goes with schedule='even'; the ascending schedule runs one block")


class EOSRejection:
    """Low-confidence ranking with end-of-text proposals scaled by gamma(i, S)."""

    def __init__(self, gamma):
        self.gamma = gamma

    def select(self, view):
        eos = torch.tensor(sorted(view.eos), dtype=view.x0.dtype)
        scale = torch.where(torch.isin(view.x0, eos), self.gamma(view.step, view.steps), 1.0)
        score = (view.conf * scale).masked_fill(~view.masked, -float("inf"))
        return unmask.top_k(score, view.k)


@register("eoser", family="diffusion", config=EOSERConfig, lossless=None)
def run(req, config: EOSERConfig):
    G = req.max_new_tokens
    if config.schedule == "ascending":
        steps = config.steps or max(1, G.bit_length() - 1)  # floor(log2 G)
        unmask.ascending_split(G, steps)  # refuses too many steps now
        g = 0.01 if config.gamma_min is None else config.gamma_min
        policy = EOSRejection(lambda i, s: g + (1 - g) * (2 ** (i + 1) - 1) / 2 ** s)
        return diffusion.decode(req, policy, schedule=lambda size, block: unmask.ascending_split(size, steps))
    g = 0.4 if config.gamma_min is None else config.gamma_min
    policy = EOSRejection(lambda i, s: g + (1 - g) * i / (s - 1) if s > 1 else 1.0)
    schedule = diffusion.even_schedule(G, config.block_length, config.steps)
    return diffusion.decode(req, policy, block_length=config.block_length, schedule=schedule)
