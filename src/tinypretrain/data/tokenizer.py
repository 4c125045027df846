"""Tokenizers: load one with a pad token set, or train a byte-level BPE offline."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from datasets import Dataset
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from ..utils.hub import looks_local, require_hub
from ..utils.io import atomic_dir, check_replaceable
from .load import load_text_dataset

SPECIAL_TOKENS = {"unk_token": "<unk>", "bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>"}


def load_tokenizer(
    name_or_path: str | Path, *, padding_side: str = "right", trust_remote_code: bool = False, **kwargs: Any
) -> PreTrainedTokenizerBase:
    """Load a tokenizer from the hub or a directory, ready for training and generation.

    If it has no pad token, EOS doubles as pad (the seed's choice); our collator pads by attention mask, so real
    EOS tokens keep their labels anyway. Training pads on the right (``padding_side="right"``); batched
    generation must pad on the left so every prompt ends where generation starts (``generate()`` switches
    temporarily). Raises ``ValueError`` if the tokenizer has no EOS token, since models could never learn to stop.
    """
    folder = Path(name_or_path).expanduser()
    if not folder.exists():
        if looks_local(str(name_or_path)):
            raise ValueError(f"Tokenizer folder {name_or_path} does not exist; pass an existing folder or a hub name.")
        require_hub(str(name_or_path), "tokenizer", "model")
    elif not any((folder / name).exists() for name in ("tokenizer.json", "tokenizer_config.json")):
        raise ValueError(f"{name_or_path} holds no tokenizer (no tokenizer.json or tokenizer_config.json); pass a "
                         "folder saved with save_pretrained, a run folder, or a hub name.")
    tokenizer = AutoTokenizer.from_pretrained(str(name_or_path), trust_remote_code=trust_remote_code, **kwargs)
    if tokenizer.eos_token_id is None:
        raise ValueError(
            f"Tokenizer {name_or_path} has no EOS token; set tokenizer.eos_token before training so stories can end."
        )
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = padding_side
    return tokenizer


def _iter_texts(source: Iterable[str] | Dataset | str | Path, text_column: str) -> Iterator[str]:
    if isinstance(source, Dataset):
        yield from source[text_column]
    elif isinstance(source, (str, Path)):

        # a path: read it the way training will
        yield from load_text_dataset(source, "train", text_column=text_column)[text_column]
    else:
        for text in source:
            if not isinstance(text, str):
                raise ValueError(f"train_tokenizer needs strings, got {type(text).__name__}: {text!r:.60}.")
            yield text


def train_tokenizer(
    texts_or_files: Iterable[str] | Dataset | str | Path,
    vocab_size: int = 4096,
    *,
    save_dir: str | Path | None = None,
    min_frequency: int = 2,
    model_max_length: int = 2048,
    text_column: str = "text",
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer (no unknown characters, lossless decode) on texts or a corpus path.

    Offline users and tests get a real tokenizer this way. ``texts_or_files`` is an iterable of strings, a
    ``Dataset`` (its ``text_column``) or a path ``load_text_dataset`` reads (its train split). Special tokens are
    ``<unk>``=0, ``<s>``=1, ``</s>``=2, ``<pad>``=3 (Llama-2's bos/eos ids). With ``save_dir`` it is saved in HF
    format so ``AutoTokenizer`` loads it.
    """
    if vocab_size < 256 + len(SPECIAL_TOKENS):
        raise ValueError(f"vocab_size must be at least {256 + len(SPECIAL_TOKENS)} (bytes + special tokens).")
    if save_dir is not None:
        check_replaceable(save_dir)  # before the training, not after it
    bpe = Tokenizer(models.BPE(unk_token=SPECIAL_TOKENS["unk_token"]))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(_iter_texts(texts_or_files, text_column), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, model_max_length=model_max_length, padding_side="right", **SPECIAL_TOKENS
    )
    if save_dir is not None:
        with atomic_dir(save_dir) as tmp:
            tokenizer.save_pretrained(tmp)
    return tokenizer
