"""Measured figures for the model cards.

- ``task_accuracy``: greedy decoding (causal) or one-token-per-step masked diffusion
  decoding (mdlm; the `llada` method, low-confidence remasking) on the test split, scored
  with :func:`decodelab.zoo.tasks.score`.
- ``draft_agreement``: greedy top-1 agreement of a draft with its target along the
  target's greedy path on held-out code prefixes (what speculative acceptance rides on).
- ``mdlm_sample``: a code-mdlm completion of a held-out prefix.

``python -m decodelab.zoo.evaluate`` recomputes the cross-model figures of the bundled
checkpoints (agreement, code-mdlm sample) and rewrites their cards.
"""

from __future__ import annotations

import torch

from decodelab.zoo import tasks as T


@torch.inference_mode()
def ar_generate(model, tok, prompts: list[str], max_new_tokens: int = 48, batch_size: int = 100) -> list[str]:
    """Greedy continuations (text, stopped at end-of-text) of ``prompts``."""
    outs: list[str] = []
    for i in range(0, len(prompts), batch_size):
        chunk = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts[i : i + batch_size]]
        width = max(len(c) for c in chunk)
        ids = torch.full((len(chunk), width), tok.pad_token_id, dtype=torch.long)
        att = torch.zeros_like(ids)
        for j, c in enumerate(chunk):  # left padding
            ids[j, width - len(c) :] = torch.tensor(c)
            att[j, width - len(c) :] = 1
        dev = next(model.parameters()).device  # also called on a model training on a GPU
        gen = model.generate(
            input_ids=ids.to(dev),
            attention_mask=att.to(dev),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
        )
        for row in gen[:, width:].cpu().tolist():
            if tok.eos_token_id in row:
                row = row[: row.index(tok.eos_token_id)]
            outs.append(tok.decode([t for t in row if t != tok.pad_token_id]))
    return outs


def mdlm_generate(model, tok, prompts: list[str], gen_length: int = 24) -> list[str]:
    """One-token-per-step masked diffusion continuations (`llada`, low-confidence remasking; text,
    cut at the first end-of-text) of ``prompts``."""
    import decodelab
    from decodelab.models.hf_diffusion import HFDiffusionLM

    adapter = HFDiffusionLM(model, tok)
    outs: list[str] = []
    for p in prompts:
        out = decodelab.generate(adapter, tok(p, add_special_tokens=False)["input_ids"], "llada",
                                 max_new_tokens=gen_length)
        ids = out.tokens[:-1] if out.tokens and out.tokens[-1] == tok.eos_token_id else out.tokens
        outs.append(tok.decode(ids))
    return outs


HEADLINE_TASKS = ("copy", "reverse", "sort", "arithmetic")


def task_accuracy(model, tok, kind: str, n: int = 200, task_names=None, seed: int = 0, gen_length: int = 24,
                  n_other: int | None = 100) -> dict:
    """Fraction right per task on ``n`` test-split examples each (``n_other`` for the tasks
    outside ``HEADLINE_TASKS``, to bound CPU time; None: ``n`` for all)."""
    model.eval()
    if task_names is None:
        task_names = T.TASKS if kind == "causal" else T.LIST_TASKS
    acc = {}
    for task in task_names:
        k = n if n_other is None or task in HEADLINE_TASKS else min(n, n_other)
        exs = T.examples(task, "test", k, seed)
        prompts = [e.prompt for e in exs]
        outs = ar_generate(model, tok, prompts) if kind == "causal" else mdlm_generate(model, tok, prompts, gen_length)
        acc[task] = round(sum(T.score(e, o) for e, o in zip(exs, outs)) / len(exs), 4)
    return acc


@torch.inference_mode()
def draft_agreement(draft, target, tok, n_prefixes: int = 64, prefix_tokens: int = 64, gen_tokens: int = 64, seed: int = 0) -> dict:
    """Greedy top-1 agreement of ``draft`` with ``target`` along the target's greedy path."""
    from decodelab.zoo.corpus import heldout_prefixes

    prefixes = heldout_prefixes(n_prefixes, prefix_tokens, seed, tokenizer=tok)
    agree = total = 0
    for text in prefixes:
        ids = torch.tensor([tok(text, add_special_tokens=False)["input_ids"]])
        path = target.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=gen_tokens,
                               do_sample=False, eos_token_id=None, pad_token_id=tok.pad_token_id)
        p = ids.shape[1]
        d = draft(input_ids=path).logits[0, p - 1 : -1].argmax(-1)
        agree += int((d == path[0, p:]).sum())
        total += path.shape[1] - p
    return {"agreement": round(agree / total, 4), "prefixes": n_prefixes, "prefix_tokens": prefix_tokens,
            "gen_tokens": gen_tokens, "positions": total}


def mdlm_sample(model, tok, prefix_tokens: int = 48, gen_length: int = 48, seed: int = 3) -> str:
    import decodelab
    from decodelab.models.hf_diffusion import HFDiffusionLM
    from decodelab.zoo.corpus import heldout_prefixes

    prefix = heldout_prefixes(1, prefix_tokens, seed, tokenizer=tok)[0]
    out = decodelab.generate(HFDiffusionLM(model, tok), tok(prefix, add_special_tokens=False)["input_ids"], "llada",
                             max_new_tokens=gen_length, ignore_eos=True)  # the whole canvas, one token per step
    return prefix + tok.decode(out.tokens).replace(tok.eos_token, "\n")


def main() -> None:
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM

    from decodelab.zoo import resolve
    from decodelab.zoo.card import read_card, write_card
    from decodelab.zoo.tokenizer import load_tokenizer

    tok = load_tokenizer()
    for target_name in ("code-target", "code-target-l"):  # code-draft drafts for both
        try:
            t_dir, d_dir = resolve(target_name), resolve("code-draft")
        except Exception as e:  # noqa: BLE001
            print("skip agreement:", e)
            continue
        target = AutoModelForCausalLM.from_pretrained(str(t_dir), dtype=torch.float32).eval()
        draft = AutoModelForCausalLM.from_pretrained(str(d_dir), dtype=torch.float32).eval()
        ag = draft_agreement(draft, target, tok)
        print(target_name, "agreement", ag)
        cards = [(t_dir, "agreement_of_code_draft")]
        if target_name == "code-target":
            cards.append((d_dir, "agreement_with_code_target"))
        for d, key in cards:
            c = read_card(d)
            c[key] = ag
            write_card(d, c)
    try:
        m_dir = resolve("code-mdlm")
    except Exception as e:  # noqa: BLE001
        print("skip mdlm sample:", e)
    else:
        m = AutoModelForMaskedLM.from_pretrained(str(m_dir), dtype=torch.float32).eval()
        s = mdlm_sample(m, tok)
        print(s)
        c = read_card(m_dir)
        c["sample"] = s
        c["sample_how"] = "held-out prefix of 48 tokens (heldout_prefixes seed 3) + 48 masks, one token per step"
        write_card(m_dir, c)


if __name__ == "__main__":
    main()
