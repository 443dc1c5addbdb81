"""The zoo tokenizer: byte-level BPE trained with `tokenizers` on the code corpus's train split.

Digits are split one per token before BPE (as in Llama), which keeps arithmetic learnable.
Special tokens: ``<|endoftext|>`` (end of text, also the file separator), ``<|pad|>`` and
``<|mask|>`` (the masked-diffusion mask). Saved with ``save_pretrained`` so that
``transformers.AutoTokenizer.from_pretrained(dir)`` gives a fast tokenizer with eos, pad
and mask set. The trained tokenizer is bundled in ``zoo/data/`` and copied into
every checkpoint directory.
"""

from __future__ import annotations

from pathlib import Path

EOS = "<|endoftext|>"
PAD = "<|pad|>"
MASK = "<|mask|>"
SPECIAL_TOKENS = [EOS, PAD, MASK]
VOCAB_SIZE = 4096
BUNDLED_DIR = Path(__file__).parent / "data"  # tokenizer.json + tokenizer_config.json


def train_tokenizer(out_dir: str | Path = BUNDLED_DIR, vocab_size: int = VOCAB_SIZE) -> Path:
    """Train the BPE on the train split and save it as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from decodelab.zoo.corpus import code_files, read_code

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    files = code_files("train")
    tok.train_from_iterator((read_code(p) for p in files), trainer=trainer, length=len(files))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, pad_token=PAD, mask_token=MASK)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(out)
    return out


def load_tokenizer(path: str | Path = BUNDLED_DIR):
    """The zoo tokenizer (bundled unless ``path`` says otherwise) as a transformers fast tokenizer."""
    from transformers import AutoTokenizer

    from decodelab.errors import DecodeLabError

    path = Path(path)
    if not (path / "tokenizer.json").is_file():
        raise DecodeLabError(f"no zoo tokenizer at {path}; train it with decodelab.zoo.tokenizer.train_tokenizer()")
    return AutoTokenizer.from_pretrained(str(path))
